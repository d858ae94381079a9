//! Replaying a recorded sketch until the recorded failure reproduces.
//!
//! [`Replay::open`] reads a trace and prepares its events for the agent in
//! replay mode (see `reprise_abi::replay`); [`attempt`] runs the program
//! once under the sketch, with one schedule (a strategy and a seed), and
//! tells how it ended: an outcome, built as the recorder builds it
//! ([`reprise_recorder::outcome::conclude`]), or a divergence with its
//! reason. [`matches`] compares an outcome with the recorded one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reprise_abi::{replay as rp, EventKind, Level};
use reprise_schema::{EventRecord, HeaderInfo, OutcomeInfo, OutcomeKind, SketchLevel, TraceReader};

pub mod accesses;
pub mod code_names;
mod created_files;
mod detector;
pub mod observe;
pub mod order;
pub mod schedule;
mod session;
pub mod stack_sharing;
use observe::{Observation, ObservePlan};
pub use schedule::Schedule;
use sha2::{Digest, Sha256};

pub use detector::{is_failure, matches};
pub use session::{attempt, stop_on_interrupt, Checkpoint, ReplaySession, Stop};

/// Why a replay cannot start. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the program changed since it was recorded: {} (its SHA-256 differs from the trace's); rebuild the recorded version, or pass --force", .0.display())]
    ProgramChanged(PathBuf),
    #[error("the recorded program is gone: {}", .0.display())]
    ProgramMissing(PathBuf),
    #[error(transparent)]
    Trace(#[from] reprise_schema::TraceError),
    #[error(transparent)]
    Launch(#[from] reprise_recorder::RecordError),
    #[error("cannot create the shared control block in /dev/shm: {0}")]
    Control(std::io::Error),
    #[error("{0}")]
    Io(String),
    #[error("cannot decode the program's instructions: {0}")]
    Decode(String),
    /// A file the recording opened cannot be opened now: no schedule
    /// can replay the run until it is restored.
    #[error("{0}")]
    MissingFile(String),
    #[error("cannot take or resume a checkpoint: {0}")]
    Checkpoint(String),
    #[error("interrupted: the attempt running was killed; nothing was saved")]
    Interrupted,
    #[error("the trace's saved schedule uses strategy `{0}`, which this version of reprise does not know: replay with --no-schedule")]
    UnknownStrategy(String),
}

/// A trace prepared for replay: the launch and the expected events, laid
/// out at their ring positions.
pub struct Replay {
    pub dir: PathBuf,
    pub header: HeaderInfo,
    /// The recorded outcome (None for a trace cut short).
    pub recorded: Option<OutcomeInfo>,
    level: Level,
    events: Arc<Vec<EventRecord>>,
    /// Indices of the opens the ring marks, see [`created_files`].
    opens_of_created_files: Vec<usize>,
    /// A `func` trace of a program built without `-finstrument-functions`:
    /// the patch of its function entries, as the recording made it.
    func_plan: Option<reprise_recorder::func_patch::FuncPlan>,
    /// Ring position of each event; one more entry: the end.
    positions: Vec<u64>,
    ring_slots: u64,
    /// The executable's access points, decoded on first use.
    points: std::sync::OnceLock<Result<Arc<Vec<reprise_abi::observe::AccessPoint>>, String>>,
    /// The executable, read once: its access points, and the instructions
    /// watchpoints report.
    disasm: std::sync::OnceLock<Result<reprise_tracee::access_points::Disassembler, String>>,
    /// Places on threads' stacks that others reach, learned from observed
    /// attempts for the ones after them.
    stack_sharing: std::sync::Mutex<stack_sharing::StackSharing>,
    /// The program's symbols and lines, loaded when the first divergence of
    /// a func or bb trace is named (each attempt's would load them again).
    code_names: std::sync::Mutex<Option<code_names::CodeNames>>,
}

/// How long the ring may get: 64 MiB; longer traces are streamed.
const MAX_RING_SLOTS: u64 = 1 << 20;

impl Replay {
    /// `text` with each function or block entry address in it named
    /// (`block(0x...)` -> `block(0x... main at file.c:31)`).
    pub fn annotate_code(&self, text: &str) -> String {
        let mut names = self.code_names.lock().unwrap_or_else(|e| e.into_inner());
        names
            .get_or_insert_with(|| code_names::CodeNames::open(&self.header.program_path))
            .annotate(text)
    }

    /// Opens `dir` and checks that the recorded program is unchanged
    /// (unless `force`).
    pub fn open(dir: &Path, force: bool) -> Result<Replay, ReplayError> {
        let reader = TraceReader::open(dir)?;
        let header = reader.header().clone();
        let level = match header.level {
            SketchLevel::Sync => Level::Sync,
            SketchLevel::Sys => Level::Sys,
            SketchLevel::Func => Level::Func,
            SketchLevel::Bb => Level::Bb,
        };
        let path = &header.program_path;
        let bytes = std::fs::read(path).map_err(|_| ReplayError::ProgramMissing(path.clone()))?;
        if !force && Sha256::digest(&bytes).as_slice() != header.program_digest.as_slice() {
            return Err(ReplayError::ProgramChanged(path.clone()));
        }
        let recorded = reader.outcome().cloned();
        let mut events: Vec<EventRecord> = Vec::new();
        // The last syscall event of each thread, to merge its `DataMore`
        // continuations into it.
        let mut last: HashMap<(u16, u32), usize> = HashMap::new();
        for ev in reader.events() {
            let ev = ev?;
            let key = (ev.process, ev.thread);
            match ev.kind {
                EventKind::DataMore => {
                    if let Some(&i) = last.get(&key) {
                        events[i].data.extend_from_slice(&ev.data);
                    }
                    continue;
                }
                EventKind::Syscall if rp::UNORDERED_SYSCALLS.contains(&ev.object) => {
                    last.remove(&key);
                    continue;
                }
                // Recorded signals are delivered in replay (their handler
                // runs at their place) in traces that say so.
                EventKind::Signal
                    if header.recorded_events & reprise_schema::RecordedEvents::NET == 0 =>
                {
                    continue
                }
                EventKind::Exec => continue,
                EventKind::Syscall => {
                    last.insert(key, events.len());
                }
                _ => {
                    last.remove(&key);
                }
            }
            events.push(ev);
        }
        let died = recorded
            .as_ref()
            .filter(|o| o.kind != OutcomeKind::Exited && o.kind != OutcomeKind::WrongOutput)
            .map(|o| o.process);
        let events = without_events_after_exit(events, died);
        let opens_of_created_files = created_files::opens_of_files_created_later(&events);
        let func_plan =
            reprise_recorder::instrumented::func_entry_plan(path, &bytes, header.level)?;
        let mut positions = Vec::with_capacity(events.len() + 1);
        let mut pos = 0u64;
        let mut largest = 1u64;
        for e in &events {
            positions.push(pos);
            let n = reprise_abi::slots_for(e.data.len()) as u64;
            largest = largest.max(n);
            pos += n;
        }
        positions.push(pos);
        let ring_slots = (pos + 1)
            .min(MAX_RING_SLOTS)
            .max(largest * 2)
            .max(4096)
            .next_power_of_two();
        Ok(Replay {
            dir: dir.to_path_buf(),
            header,
            recorded,
            level,
            events: Arc::new(events),
            opens_of_created_files,
            func_plan,
            positions,
            ring_slots,
            points: std::sync::OnceLock::new(),
            disasm: std::sync::OnceLock::new(),
            stack_sharing: Default::default(),
            code_names: std::sync::Mutex::new(None),
        })
    }

    /// The program's memory-access instructions (see
    /// `reprise_tracee::access_points`), decoded once.
    pub fn access_points(
        &self,
    ) -> Result<Arc<Vec<reprise_abi::observe::AccessPoint>>, ReplayError> {
        self.points
            .get_or_init(|| Ok(Arc::new(self.disassembler()?.access_points())))
            .clone()
            .map_err(ReplayError::Decode)
    }

    /// The executable, read on first use.
    fn disassembler(&self) -> Result<&reprise_tracee::access_points::Disassembler, String> {
        self.disasm
            .get_or_init(|| {
                reprise_tracee::access_points::Disassembler::open(&self.header.program_path)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The access table and stack places for the next observed attempt:
    /// the executable's access points with what observed attempts learned
    /// (see [`stack_sharing`]).
    pub fn stack_plan(&self) -> Result<stack_sharing::StackPlan, ReplayError> {
        let base = self.access_points()?;
        let s = self.stack_sharing.lock().unwrap_or_else(|e| e.into_inner());
        Ok(s.plan(&base))
    }

    /// Changes whenever observed attempts found a place on a thread's stack
    /// that others reach, or an instruction of its owner there: the
    /// observations made before miss those accesses.
    pub fn stack_generation(&self) -> u64 {
        let s = self.stack_sharing.lock().unwrap_or_else(|e| e.into_inner());
        s.generation()
    }

    /// What an observed attempt's agents wrote, learned from (for the
    /// attempts after it) and in the form the search reads.
    pub fn observation_of(&self, block: &observe::ObserveBlock) -> Observation {
        let mut o = block.observation();
        let disasm = self.disassembler().ok();
        let mut s = self.stack_sharing.lock().unwrap_or_else(|e| e.into_inner());
        o.accesses = s.learn(std::mem::take(&mut o.accesses), block.stack_plan(), disasm);
        o
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// The events the replay follows, in their recorded order.
    pub fn events(&self) -> &[EventRecord] {
        &self.events
    }

    /// The ring position of each event; one more entry: the end (the
    /// position past the last event).
    pub fn positions(&self) -> &[u64] {
        &self.positions
    }

    /// The recorded outcome: the failure a search reproduces (an error
    /// for a trace cut short, which has none).
    pub fn outcome(&self) -> Result<&OutcomeInfo, ReplayError> {
        self.recorded
            .as_ref()
            .ok_or_else(|| ReplayError::Io("the trace has no outcome".into()))
    }

    /// The ring position past the last event: where the recording ends.
    pub fn end_position(&self) -> u64 {
        *self.positions.last().unwrap_or(&0)
    }

    /// The event at ring position `pos` (or the last before it), with its
    /// index.
    pub fn event_at(&self, pos: u64) -> Option<(usize, &EventRecord)> {
        let i = match self.positions.binary_search(&pos) {
            Ok(i) => i,
            Err(i) => i.checked_sub(1)?,
        };
        self.events.get(i).map(|e| (i, e))
    }

    /// The event at ring position `pos`, for humans: `thread 1, event 5:
    /// thread_exit(0x0)`.
    pub fn describe(&self, pos: u64) -> String {
        match self.event_at(pos) {
            Some((_, e)) => {
                let what = if e.kind == EventKind::Syscall {
                    format!("syscall {}", e.object)
                } else {
                    format!("{}({:#x})", e.kind.name(), e.object)
                };
                format!(
                    "{}, event {}: {}",
                    thread_name(e.process, e.thread),
                    e.seq,
                    what
                )
            }
            None => format!("event at position {pos}"),
        }
    }
}

/// `thread 1`, or `process 1 thread 2` outside the first process: how
/// divergences and reports name a thread.
pub fn thread_name(process: u16, thread: u32) -> String {
    if process == 0 {
        format!("thread {thread}")
    } else {
        format!("process {process} thread {thread}")
    }
}

/// [`thread_name`] of a baton key.
pub fn key_name(key: u32) -> String {
    thread_name(rp::key_process(key) as u16, rp::key_thread(key))
}

/// How the next runner is chosen where the sketch leaves a choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Uniformly among the candidates, with a seeded PRNG.
    Random,
    /// Random, and a running thread is also preempted between two events
    /// after a random time slice, so that races between events can happen.
    /// A seed does not give one schedule: a saved one reproduces often,
    /// not always.
    Preempt,
    /// Deterministic base schedule (a thread runs on to its next event),
    /// with the races of failed attempts flipped (see `reprise_feedback`).
    Feedback,
    /// Feedback's other base: the owner of the next event runs first (a
    /// thread runs its code up to an event as late as it can).
    FeedbackLazy,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Preempt => "preempt",
            Strategy::Feedback => "feedback",
            Strategy::FeedbackLazy => "feedback-lazy",
        }
    }

    /// How the agent picks the next runner under this strategy and seed.
    pub fn policy(self, seed: u64) -> reprise_abi::replay::Policy {
        use reprise_abi::replay::Policy;
        let switch = switch_rate(seed) as u16;
        match self {
            Strategy::Random => Policy::Random {
                switch,
                preempt: false,
            },
            Strategy::Preempt => Policy::Random {
                switch,
                preempt: true,
            },
            Strategy::Feedback => Policy::Stay,
            Strategy::FeedbackLazy => Policy::Owner,
        }
    }

    pub fn from_name(s: &str) -> Option<Strategy> {
        match s {
            "random" => Some(Strategy::Random),
            "preempt" => Some(Strategy::Preempt),
            "feedback" => Some(Strategy::Feedback),
            "feedback-lazy" => Some(Strategy::FeedbackLazy),
            _ => None,
        }
    }
}

/// The random strategy's chance, in 1/65536, that a thread which just
/// finished an event loses the baton: from 1/2 (every choice a coin toss)
/// down to 1/1024 (long stretches of one thread), picked by the seed, so
/// that attempts explore both dense and sparse preemptions.
pub fn switch_rate(seed: u64) -> u32 {
    let mut z = seed.wrapping_add(0x2545_f491_4f6c_dd1d);
    z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    let shift = 1 + (z % 10) as u32;
    (65536u32 >> shift).max(1)
}

/// One attempt's settings.
#[derive(Clone, Debug)]
pub struct AttemptOptions {
    pub strategy: Strategy,
    pub seed: u64,
    /// Baton key of the one thread that runs against the strategy's
    /// policy (late under `feedback`, early under `feedback-lazy`); 0: none.
    pub odd_thread: u32,
    /// The attempt is killed after this long.
    pub timeout: Duration,
    /// No event, no CPU time for this long: the attempt is stuck (or, past
    /// the end of the recording, hung or deadlocked as recorded).
    pub hang_timeout: Duration,
    /// A runner asleep in the kernel between events this long loses the baton.
    pub revoke_ms: u32,
    /// Where the program's stdout and stderr go (`stdout`, `stderr` in
    /// this directory); None: discarded.
    pub output_dir: Option<PathBuf>,
    /// Breakpoints on the executable's accesses: observation, preemption
    /// points, flips. None: none set (the attempt runs at full speed).
    pub observe: Option<ObservePlan>,
    /// The debugger's first stop: the run pauses before this event
    /// (see [`ReplaySession::pause_before`]). None: it runs on.
    pub pause_before: Option<usize>,
}

impl AttemptOptions {
    pub fn new(seed: u64) -> AttemptOptions {
        AttemptOptions {
            strategy: Strategy::Random,
            seed,
            odd_thread: 0,
            timeout: Duration::from_secs(60),
            hang_timeout: Duration::from_secs(2),
            revoke_ms: 30,
            output_dir: None,
            observe: None,
            pause_before: None,
        }
    }
}

/// How an attempt ended.
#[derive(Clone, Debug)]
pub enum AttemptEnd {
    /// The program ran to an end (exit, crash, assertion, deadlock...).
    Outcome(Box<OutcomeInfo>),
    /// It stopped following the recording.
    Divergence { reason: String },
    /// Killed after the attempt's time limit, `at` this point of the sketch.
    Timeout { at: String },
}

#[derive(Clone, Debug)]
pub struct AttemptResult {
    pub end: AttemptEnd,
    pub duration: Duration,
    pub seed: u64,
    /// Events replayed in order.
    pub events_replayed: u64,
    /// Every recorded event was replayed (the run went as far as the
    /// recording).
    pub completed: bool,
    /// Choices the strategy made.
    pub decisions: u64,
    /// Events whose object (address) differed from the recording.
    pub object_mismatches: u64,
    /// The first lock taken from another call site than recorded: its
    /// ring position and thread key (where the thread's path left the
    /// recorded one).
    pub first_path_change: Option<(u64, u32)>,
    /// Writes whose output differed from the recorded only where the
    /// recording printed a pid or tid, accepted.
    pub output_numbers: u64,
    /// Times a thread asleep in a system call outside any event lost the
    /// baton (from there the schedule alone did not decide the run), and
    /// the ring position of the first.
    pub revocations: u64,
    pub first_revocation: Option<u64>,
    /// What the access breakpoints saw (with [`AttemptOptions::observe`]).
    pub observation: Option<Observation>,
    /// Ring position where the attempt stopped: the divergence's event,
    /// else the next expected event at the end.
    pub stopped_at: u64,
    /// The baton key of the thread that diverged.
    pub diverging_thread: Option<u32>,
}

impl AttemptResult {
    pub fn outcome(&self) -> Option<&OutcomeInfo> {
        match &self.end {
            AttemptEnd::Outcome(o) => Some(o),
            _ => None,
        }
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        match &self.end {
            AttemptEnd::Outcome(o) => o.summary.clone(),
            AttemptEnd::Divergence { reason } => format!("diverged: {reason}"),
            AttemptEnd::Timeout { at } => format!("timed out {at}"),
        }
    }
}

/// Drops the events a process's threads logged after its `exit_group`
/// was logged: they raced with the exit in the recording (the kernel
/// killed those threads a moment later), and a replay, which ends the
/// process at its exit event, cannot make them happen after it. The
/// process that `died` in the recording (a crash, an abort, a hang) never
/// completed an exit it logged (another thread's crash came first): its
/// exit event is dropped too, so that the replay parks there instead of
/// exiting before the crash.
fn without_events_after_exit(events: Vec<EventRecord>, died: Option<u16>) -> Vec<EventRecord> {
    let mut exited = std::collections::HashSet::new();
    events
        .into_iter()
        .filter(|e| {
            if exited.contains(&e.process) {
                return false;
            }
            if e.kind == EventKind::ProcessExit {
                exited.insert(e.process);
                return Some(e.process) != died;
            }
            true
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_rates_span_dense_to_sparse() {
        let rates: std::collections::BTreeSet<u32> = (0..200).map(switch_rate).collect();
        assert!(rates.contains(&32768) && rates.contains(&64), "{rates:?}");
        assert!(rates.iter().all(|&r| (64..=32768).contains(&r)));
    }
}
