//! `reprise debug`: an interactive debugger over a reproduced run.
//!
//! The run is replayed deterministically under its saved schedule and
//! paused between sketch events; checkpoints let it seek backward and
//! bisect without re-executing from the start.

pub mod search;
pub mod target;
pub mod watchpoints;

pub use target::{Position, Target, ThreadInfo};

/// Why a debugger command cannot be done. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error(transparent)]
    Replay(#[from] reprise_replayer::ReplayError),
    #[error(transparent)]
    Trace(#[from] reprise_schema::TraceError),
    #[error(transparent)]
    Tracee(#[from] reprise_tracee::TraceeError),
    #[error("the program has ended: `run` starts it again, `goto N` goes back to event N")]
    Ended,
    #[error("no run is going on: `run` starts one")]
    NotRunning,
    #[error("{0} has no more sketch events")]
    NoMoreEvents(String),
    #[error("no checkpoint {0} (`info checkpoints` lists them)")]
    NoCheckpoint(usize),
    #[error("no {0} in this run now (`info threads` lists them)")]
    NoThread(String),
    /// `watch` / `bisect` cannot be done (search.rs).
    #[error("{0}")]
    Search(String),
}

pub mod commands;
pub mod dwarf;
pub mod expr;
pub mod repl;
