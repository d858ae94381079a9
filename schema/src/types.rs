//! Plain Rust types mirroring `trace.capnp`, so that other crates never touch
//! capnp builders or readers.
//!
//! JSON (`serde::Serialize`, for `reprise dump --json`): paths, argv and
//! environment strings are serialised as (lossy) UTF-8 strings; byte strings
//! (digests, build ids, event data) as lowercase hex; event kinds by their
//! user-visible name (`pthread_mutex_lock`, `syscall`, ...); enums by their
//! lowercase schema names.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use reprise_abi::EventKind;
use serde::Serialize;

/// How much a trace records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SketchLevel {
    /// Synchronisation operations only.
    #[default]
    Sync,
    /// + system calls and their results.
    Sys,
    /// + function entries.
    Func,
    /// + basic blocks.
    Bb,
}

impl SketchLevel {
    pub const ALL: [SketchLevel; 4] = [
        SketchLevel::Sync,
        SketchLevel::Sys,
        SketchLevel::Func,
        SketchLevel::Bb,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SketchLevel::Sync => "sync",
            SketchLevel::Sys => "sys",
            SketchLevel::Func => "func",
            SketchLevel::Bb => "bb",
        }
    }
}

impl fmt::Display for SketchLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for SketchLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sync" => Ok(SketchLevel::Sync),
            "sys" => Ok(SketchLevel::Sys),
            "func" => Ok(SketchLevel::Func),
            "bb" => Ok(SketchLevel::Bb),
            _ => Err(format!(
                "unknown sketch level '{s}': use one of sync, sys, func, bb"
            )),
        }
    }
}

/// What `--sketch` names: a level, and for `bb-N` the block period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sketch {
    pub level: SketchLevel,
    /// `bb-N`: every N-th block of a thread is logged; 1 for `bb`, 0 below
    /// the `bb` level.
    pub block_period: u32,
}

impl Sketch {
    pub fn of(level: SketchLevel) -> Sketch {
        Sketch {
            level,
            block_period: u32::from(level == SketchLevel::Bb),
        }
    }
}

impl fmt::Display for Sketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.level == SketchLevel::Bb && self.block_period > 1 {
            f.pad(&format!("bb-{}", self.block_period))
        } else {
            f.pad(self.level.as_str())
        }
    }
}

impl FromStr for Sketch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        if let Some(n) = t.strip_prefix("bb-") {
            return match n.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(Sketch {
                    level: SketchLevel::Bb,
                    block_period: n,
                }),
                _ => Err(format!(
                    "bad sketch '{s}': bb-N takes a whole number N >= 1 (every N-th block)"
                )),
            };
        }
        t.parse::<SketchLevel>().map(Sketch::of).map_err(|_| {
            format!("unknown sketch level '{s}': use one of sync, sys, func, bb, bb-N")
        })
    }
}

/// The trace header: what was run, where, and how.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct HeaderInfo {
    pub format_version: u32,
    pub reprise_version: String,
    #[serde(serialize_with = "ser::path")]
    pub program_path: PathBuf,
    /// SHA-256 of the executable.
    #[serde(serialize_with = "ser::hex")]
    pub program_digest: Vec<u8>,
    /// ELF NT_GNU_BUILD_ID, empty if none.
    #[serde(serialize_with = "ser::hex")]
    pub build_id: Vec<u8>,
    #[serde(serialize_with = "ser::os_strings")]
    pub argv: Vec<OsString>,
    #[serde(serialize_with = "ser::os_strings")]
    pub env: Vec<OsString>,
    #[serde(serialize_with = "ser::path")]
    pub cwd: PathBuf,
    pub level: SketchLevel,
    /// `uname -m` and host name.
    pub machine: String,
    /// `uname -sr`.
    pub kernel: String,
    pub cpus: u32,
    pub start_time_unix_ns: u64,
    /// What the agent logged beyond what the level says (bits of
    /// [`RecordedEvents`]); 0 in traces of older versions.
    pub recorded_events: u32,
    /// `bb` sketches: every N-th block of a thread is logged (`bb-N`;
    /// 1: every block; 0 in other sketches).
    pub block_period: u32,
    /// Recorded with `record --chaos` (threads paused at random points).
    pub chaos: bool,
}

/// Events an agent version added to the sketch. A replay enforces them
/// only for traces that have them.
pub struct RecordedEvents;

impl RecordedEvents {
    /// The end of each process (`exit_group`) is an event.
    pub const PROCESS_EXIT: u32 = 1;
    /// At `sys`: file-system queries and opens (`open`, `openat`, `stat`
    /// family, `access`, `readlink`) with their results.
    pub const FILES: u32 = 2;
    /// At `sys`: network and event syscalls (`accept`, `connect`,
    /// `epoll_wait`, `poll`, `select`, `send*`...), `uname` and
    /// `sched_getaffinity` with their results; signal handlers run at
    /// their recorded place in replay.
    pub const NET: u32 = 4;
    /// libc's reads of the machine's description (the CPU count, malloc's
    /// settings) are left out: a replay runs them unordered. A trace
    /// without this bit has them as events and replays them so.
    pub const AMBIENT_UNORDERED: u32 = 8;
    /// Everything this version records.
    pub const CURRENT: u32 = Self::PROCESS_EXIT | Self::FILES | Self::NET | Self::AMBIENT_UNORDERED;
}

impl HeaderInfo {
    /// The program's file name (last component of `program_path`), lossy.
    pub fn program_name(&self) -> String {
        self.program_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program_path.to_string_lossy().into_owned())
    }
}

/// One sketch event. See `reprise_abi::EventKind` for what the fields mean
/// for each kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    /// Global sequence number.
    pub seq: u64,
    pub process: u16,
    pub thread: u32,
    #[serde(serialize_with = "ser::event_kind")]
    pub kind: EventKind,
    /// Sync object address, or syscall number.
    pub object: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub result: i64,
    pub extra: u64,
    /// Memory written by a syscall, bytes written to output.
    #[serde(serialize_with = "ser::hex")]
    pub data: Vec<u8>,
}

impl Default for EventRecord {
    fn default() -> Self {
        EventRecord {
            seq: 0,
            process: 0,
            thread: 0,
            kind: EventKind::MutexLock,
            object: 0,
            arg0: 0,
            arg1: 0,
            result: 0,
            extra: 0,
            data: Vec::new(),
        }
    }
}

/// One frame of a symbolised backtrace.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct Frame {
    pub pc: u64,
    /// Demangled where possible, empty if unknown.
    pub function: String,
    /// Source file, empty if unknown.
    #[serde(serialize_with = "ser::path")]
    pub file: PathBuf,
    pub line: u32,
    /// The ELF object holding `pc`.
    #[serde(serialize_with = "ser::path")]
    pub module: PathBuf,
    /// `pc` relative to the module's load address.
    pub offset: u64,
}

/// A thread at the end of a run (hangs and deadlocks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThreadState {
    pub process: u16,
    pub thread: u32,
    pub tid: i32,
    /// 0 if not blocked in a recorded operation.
    pub waiting_on: u64,
    #[serde(serialize_with = "ser::event_kind")]
    pub wait_kind: EventKind,
    /// Locks held.
    pub held: Vec<u64>,
    pub backtrace: Vec<Frame>,
}

impl Default for ThreadState {
    fn default() -> Self {
        ThreadState {
            process: 0,
            thread: 0,
            tid: 0,
            waiting_on: 0,
            wait_kind: EventKind::MutexLock,
            held: Vec::new(),
            backtrace: Vec::new(),
        }
    }
}

/// What the program wrote to one output stream.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct OutputStream {
    pub fd: i32,
    pub length: u64,
    /// FNV-1a 64 of all bytes.
    pub digest: u64,
    /// How many leading bytes the events carry.
    pub kept_bytes: u64,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    Exited,
    Signaled,
    Assertion,
    Deadlock,
    Hang,
    Interrupted,
    #[default]
    Unknown,
    /// Exited, but stdout differs from the expected output given at record.
    #[serde(rename = "wrong-output")]
    WrongOutput,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Exited => "exited",
            OutcomeKind::Signaled => "signaled",
            OutcomeKind::Assertion => "assertion",
            OutcomeKind::Deadlock => "deadlock",
            OutcomeKind::Hang => "hang",
            OutcomeKind::Interrupted => "interrupted",
            OutcomeKind::Unknown => "unknown",
            OutcomeKind::WrongOutput => "wrong-output",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The failure signature of a run (the `outcome` file).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct OutcomeInfo {
    pub kind: OutcomeKind,
    pub exit_code: i32,
    pub signal: i32,
    pub signal_code: i32,
    pub fault_addr: u64,
    pub pc: u64,
    /// rax rbx rcx rdx rsi rdi rbp rsp r8-r15 rip eflags
    /// (`reprise_abi::REG_NAMES`).
    pub registers: Vec<u64>,
    pub process: u16,
    pub thread: u32,
    /// Of the failing thread.
    pub backtrace: Vec<Frame>,
    pub assertion: String,
    /// For hangs and deadlocks.
    pub threads: Vec<ThreadState>,
    /// Deadlock: the locks of the cycle, in wait order.
    pub cycle: Vec<u64>,
    pub output: Vec<OutputStream>,
    pub event_count: u64,
    pub duration_ns: u64,
    pub dropped_events: u64,
    /// One line for humans.
    pub summary: String,
    /// The correct stdout (`record --expect-output`); empty if none given.
    #[serde(skip)]
    pub expected_output: Vec<u8>,
    /// Wrong output: the 1-based line of stdout that first differs from
    /// the expected output (0: none), and the byte offset where it starts.
    pub output_line: u32,
    pub output_line_start: u64,
}

/// One extra ordering decision of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Decision {
    pub before_seq: u64,
    pub process: u16,
    pub thread: u32,
    pub pc: u64,
    pub occurrence: u64,
}

/// A reproducing schedule (the `schedule` file).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct ScheduleInfo {
    pub strategy: String,
    pub seed: u64,
    /// Attempts it took to find.
    pub attempts: u32,
    pub decisions: Vec<Decision>,
    /// Races flipped (the feedback strategy).
    pub flips: Vec<FlipInfo>,
    /// The random strategy's preemption chance at an access, in 1/65536.
    pub preempt_rate: u32,
    /// The one thread (process, thread) that runs against the strategy's
    /// policy: late under `feedback`, early under `feedback-lazy`.
    pub odd_thread: Option<(u16, u32)>,
}

/// One flipped race of a schedule (see `Flip` in trace.capnp).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
pub struct FlipInfo {
    pub held_process: u16,
    pub held_thread: u32,
    pub held_pc: u64,
    pub held_n: u32,
    pub until_process: u16,
    pub until_thread: u32,
    pub until_pc: u64,
    pub until_n: u32,
    /// `held` resumes when `until` gives the baton away, not at once.
    pub defer: bool,
    /// Nonzero: process index + 1; the flip completes when the parent has
    /// really forked that process (the other access is the child's).
    pub until_fork: u64,
    /// Nonzero: the flip completes at the first write by another thread to
    /// the 8 bytes at this address (the held read waits for a new value).
    pub until_addr: u64,
    /// With `until_addr`: every later read of `held` at `held_pc` there
    /// that would see the value the held read would have seen waits again.
    pub standing: bool,
    /// Nonzero: the held access is the `held_k`-th at `held_pc` in its
    /// thread's stretch after the event at ring position `held_anchor - 2`
    /// (1: before its first event), whatever `held_n` says.
    pub held_anchor: u64,
    pub held_k: u32,
    /// The same for the access the flip waits for.
    pub until_anchor: u64,
    pub until_k: u32,
}

/// What `TraceWriter::finish` reports.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct TraceSummary {
    /// Events written (in whole chunks on disk).
    pub events: u64,
    /// Bytes of all trace files written.
    pub bytes: u64,
    #[serde(serialize_with = "ser::path")]
    pub path: PathBuf,
    /// Events lost because the disk was full (also added to the outcome's
    /// `dropped_events`).
    pub dropped_events: u64,
}

pub(crate) mod ser {
    use reprise_abi::EventKind;
    use serde::ser::SerializeSeq;
    use serde::Serializer;
    use std::ffi::OsString;
    use std::path::Path;

    pub fn path<S: Serializer, P: AsRef<Path>>(p: &P, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.as_ref().to_string_lossy())
    }

    pub fn hex<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(b))
    }

    pub fn os_strings<S: Serializer>(v: &[OsString], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&x.to_string_lossy())?;
        }
        seq.end()
    }

    pub fn event_kind<S: Serializer>(k: &EventKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.name())
    }

    pub fn to_hex(b: &[u8]) -> String {
        const H: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(b.len() * 2);
        for &x in b {
            out.push(H[(x >> 4) as usize] as char);
            out.push(H[(x & 15) as usize] as char);
        }
        out
    }
}
