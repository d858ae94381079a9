//! Recording a sketch of a program's run.
//!
//! [`record`] launches the program with the agent preloaded ([`launch`]),
//! drains the events the agents log into the shared control block
//! ([`control`]) into a trace ([`reprise_schema::TraceWriter`]), watches for
//! hangs, and at the end turns how the program died into a failure
//! signature ([`outcome`]). The supervisor does not ptrace the program while
//! it runs: a ptrace stop costs ~40 µs here, and every signal delivered to a
//! ptraced thread (including the agent's own SIGSYS traps) would cost one.
//! ptrace is used only to take a hung program's thread stacks.

mod code_runs;
pub mod control;
mod drain_priority;
pub mod expected;
pub mod func_patch;
pub mod instrumented;
pub mod launch;
pub mod outcome;
mod running;
mod session;
pub mod shm;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use reprise_schema::SketchLevel;
pub use session::{record, RecordOptions, RecordResult};

/// Why a recording could not be made. Each message is one line that says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("program not found: {}: give a path or a command in $PATH", .0.to_string_lossy())]
    ProgramNotFound(OsString),
    #[error("{} is not an executable file: check the path and its permissions (chmod +x)", .0.display())]
    NotExecutable(PathBuf),
    #[error("cannot record {}: {why}", .path.display())]
    Unsupported { path: PathBuf, why: String },
    #[error("reprise's agent library is missing at {}: build the workspace (`cargo build --release`) or set REPRISE_AGENT", .0.display())]
    AgentMissing(PathBuf),
    #[error("cannot start {}: {why}", .path.display())]
    Spawn { path: PathBuf, why: String },
    #[error("cannot create the shared control block in /dev/shm: {0}")]
    Control(std::io::Error),
    #[error("cannot record a {level} sketch of {}: {how}", .path.display())]
    NotInstrumented {
        path: PathBuf,
        level: SketchLevel,
        how: String,
    },
    #[error(transparent)]
    Trace(#[from] reprise_schema::TraceError),
    #[error("{0}")]
    Io(String),
}

/// The default time with no progress, while a thread waits in a recorded
/// synchronisation operation, after which a run counts as hung.
pub const DEFAULT_HANG_TIMEOUT: Duration = Duration::from_secs(10);
