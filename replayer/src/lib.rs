//! Replaying a recorded sketch until the recorded failure reproduces.
//!
//! [`Replay::open`] reads a trace and prepares its events for the agent in
//! replay mode (see `reprise_abi::replay`); [`attempt`] runs the program
//! once under the sketch, with one schedule (a strategy and a seed), and
//! tells how it ended: an outcome, built as the recorder builds it
//! ([`reprise_recorder::outcome::conclude`]), or a divergence with its
//! reason. [`matches`] compares an outcome with the recorded one.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reprise_abi::{replay as rp, EventKind, Level, Mode};
use reprise_recorder::control::ControlBlock;
use reprise_recorder::expected::OutputCheck;
use reprise_recorder::{launch, outcome};
use reprise_schema::{EventRecord, HeaderInfo, OutcomeInfo, OutcomeKind, SketchLevel, TraceReader};
use reprise_tracee::process::{cpu_ticks, try_wait, wait_blocking};

pub mod accesses;
pub mod observe;
pub mod order;
use observe::{ObserveBlock, ObservePlan, Observation};
use sha2::{Digest, Sha256};

/// Why a replay cannot start. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the program changed since it was recorded: {} (its SHA-256 differs from the trace's); rebuild the recorded version, or pass --force", .0.display())]
    ProgramChanged(PathBuf),
    #[error("the recorded program is gone: {}", .0.display())]
    ProgramMissing(PathBuf),
    #[error("cannot replay a {0} sketch yet: record with --sketch sync or sys")]
    Level(SketchLevel),
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
    #[error("interrupted: the attempt running was killed; nothing was saved")]
    Interrupted,
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Release);
}

/// Makes SIGINT, SIGTERM and SIGHUP end the running attempt (its program
/// killed, the shared files removed) with [`ReplayError::Interrupted`].
pub fn stop_on_interrupt() {
    // SAFETY: a handler that only stores an atomic flag.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
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
    /// Ring position of each event; one more entry: the end.
    positions: Vec<u64>,
    ring_slots: u64,
    /// The executable's access points, decoded on first use.
    points: std::sync::OnceLock<Result<Arc<Vec<reprise_abi::observe::AccessPoint>>, String>>,
}

/// How long the ring may get: 64 MiB; longer traces are streamed.
const MAX_RING_SLOTS: u64 = 1 << 20;

impl Replay {
    /// Opens `dir` and checks that the recorded program is unchanged
    /// (unless `force`).
    pub fn open(dir: &Path, force: bool) -> Result<Replay, ReplayError> {
        let reader = TraceReader::open(dir)?;
        let header = reader.header().clone();
        let level = match header.level {
            SketchLevel::Sync => Level::Sync,
            SketchLevel::Sys => Level::Sys,
            other => return Err(ReplayError::Level(other)),
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
                EventKind::Signal | EventKind::Exec => continue,
                EventKind::Syscall => {
                    last.insert(key, events.len());
                }
                _ => {
                    last.remove(&key);
                }
            }
            events.push(ev);
        }
        let events = without_events_after_exit(events);
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
            positions,
            ring_slots,
            points: std::sync::OnceLock::new(),
        })
    }

    /// The program's memory-access instructions (see
    /// `reprise_tracee::access_points`), decoded once.
    pub fn access_points(
        &self,
    ) -> Result<Arc<Vec<reprise_abi::observe::AccessPoint>>, ReplayError> {
        self.points
            .get_or_init(|| {
                reprise_tracee::access_points::access_points(&self.header.program_path)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(ReplayError::Decode)
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

fn thread_name(process: u16, thread: u32) -> String {
    if process == 0 {
        format!("thread {thread}")
    } else {
        format!("process {process} thread {thread}")
    }
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
}

impl AttemptOptions {
    pub fn new(seed: u64) -> AttemptOptions {
        AttemptOptions {
            strategy: Strategy::Random,
            seed,
            timeout: Duration::from_secs(60),
            hang_timeout: Duration::from_secs(2),
            revoke_ms: 30,
            output_dir: None,
            observe: None,
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
    /// Writes whose output differed from the recorded only where the
    /// recording printed a pid or tid, accepted.
    pub output_numbers: u64,
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

fn kill_all(ctl: &ControlBlock, pid: i32) {
    for p in ctl.pids().into_iter().chain([pid]) {
        // SAFETY: kill(2); a process that is gone gives ESRCH.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

fn split_env(env: &[OsString]) -> Vec<(OsString, OsString)> {
    env.iter()
        .map(|kv| {
            let b = kv.as_bytes();
            match b.iter().position(|&c| c == b'=') {
                Some(i) => (
                    OsString::from_vec(b[..i].to_vec()),
                    OsString::from_vec(b[i + 1..].to_vec()),
                ),
                None => (kv.clone(), OsString::new()),
            }
        })
        .collect()
}

/// Drops the events a process's threads logged after its `exit_group`
/// was logged: they raced with the exit in the recording (the kernel
/// killed those threads a moment later), and a replay, which ends the
/// process at its exit event, cannot make them happen after it.
fn without_events_after_exit(events: Vec<EventRecord>) -> Vec<EventRecord> {
    let mut exited = std::collections::HashSet::new();
    events
        .into_iter()
        .filter(|e| {
            if exited.contains(&e.process) {
                return false;
            }
            if e.kind == EventKind::ProcessExit {
                exited.insert(e.process);
            }
            true
        })
        .collect()
}

/// Runs the program once under the sketch.
pub fn attempt(replay: &Replay, opts: &AttemptOptions) -> Result<AttemptResult, ReplayError> {
    let ctl = ControlBlock::create(Mode::Replay, replay.level, replay.ring_slots)
        .map_err(ReplayError::Control)?;
    let r = ctl.replay();
    r.end.store(u64::MAX, Ordering::Release);
    r.baton.store(rp::key(0, 0), Ordering::Release);
    r.strategy.store(
        match opts.strategy {
            Strategy::Random => rp::STRATEGY_RANDOM | (switch_rate(opts.seed) << 16),
            Strategy::Preempt => {
                rp::STRATEGY_RANDOM | rp::STRATEGY_PREEMPT | (switch_rate(opts.seed) << 16)
            }
            Strategy::Feedback => rp::STRATEGY_STAY,
            // In order: the owner of the next event first.
            Strategy::FeedbackLazy => 0,
        },
        Ordering::Release,
    );
    r.rng.store(opts.seed, Ordering::Release);
    // The recorded pids and tids: printed, they may differ in replay.
    for (slot, id) in r.recorded_ids.iter().zip(replay.events.iter().filter_map(|e| {
        matches!(e.kind, EventKind::ProcessStart | EventKind::ThreadStart).then_some(e.extra as u32)
    })) {
        slot.store(id, Ordering::Release);
    }
    r.revoke_ms.store(opts.revoke_ms, Ordering::Release);
    // A wrong-output recording: its output is compared up to the line it
    // got wrong; from there the attempt's stdout is judged at the end.
    let wrong_output = replay
        .recorded
        .as_ref()
        .filter(|o| o.kind == OutcomeKind::WrongOutput);
    r.stdout_free_from.store(
        wrong_output.map_or(u64::MAX, |o| o.output_line_start),
        Ordering::Release,
    );
    r.first_mismatch.store(u64::MAX, Ordering::Release);
    let recorded = replay.header.recorded_events;
    r.recorded_events.store(
        (recorded & reprise_schema::RecordedEvents::PROCESS_EXIT != 0)
            .then_some(rp::RECORDED_PROCESS_EXIT)
            .unwrap_or(0)
            | (recorded & reprise_schema::RecordedEvents::FILES != 0)
                .then_some(rp::RECORDED_FILES)
                .unwrap_or(0),
        Ordering::Release,
    );

    let events = &replay.events;
    let positions = &replay.positions;
    let total = *positions.last().unwrap_or(&0);
    let mut next = 0usize;
    let fill = |next: &mut usize| {
        let turn = r.turn.0.load(Ordering::Acquire);
        let start = *next;
        while *next < events.len() {
            let pos = positions[*next];
            let end = positions[*next + 1];
            if end > turn + replay.ring_slots {
                break;
            }
            ctl.put_event(pos, &events[*next]);
            *next += 1;
        }
        if *next == events.len() && r.end.load(Ordering::Acquire) == u64::MAX {
            r.end.store(total, Ordering::Release);
            ctl.wake_replay();
        } else if *next != start {
            ctl.wake_replay();
        }
    };
    fill(&mut next);

    let agent = launch::find_agent()?;
    let h = &replay.header;
    let program = &h.program_path;
    let mut env = launch::agent_env(&split_env(&h.env), &agent, ctl.path());
    let observe = match &opts.observe {
        Some(plan) => {
            let points = replay.access_points()?;
            let block = ObserveBlock::create(&points, plan).map_err(ReplayError::Control)?;
            env.push((
                reprise_abi::observe::ENV_OBSERVE.into(),
                block.path().as_os_str().to_os_string(),
            ));
            Some(block)
        }
        None => None,
    };
    let stdio = match &opts.output_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| ReplayError::Io(e.to_string()))?;
            let f = |n: &str| {
                std::fs::File::create(d.join(n))
                    .map(Stdio::from)
                    .map_err(|e| ReplayError::Io(format!("{}: {e}", d.join(n).display())))
            };
            [Stdio::null(), f("stdout")?, f("stderr")?]
        }
        None => [Stdio::null(), Stdio::null(), Stdio::null()],
    };
    // Without an output directory, a wrong-output attempt's stdout goes to
    // an unlinked temporary file, read back at the end.
    let (stdio, stdout_copy) = match (wrong_output, &opts.output_dir) {
        (Some(_), None) => {
            let tmp = |e: std::io::Error| ReplayError::Io(format!("temporary file: {e}"));
            let f = tempfile::tempfile().map_err(tmp)?;
            let [i, _, e] = stdio;
            ([i, Stdio::from(f.try_clone().map_err(tmp)?), e], Some(f))
        }
        _ => (stdio, None),
    };
    let argv = if h.argv.is_empty() {
        vec![program.as_os_str().to_os_string()]
    } else {
        h.argv.clone()
    };
    let started = Instant::now();
    let child = launch::spawn_with(program, &argv, &env, &h.cwd, Some(stdio), replay.level == Level::Sys)?;
    let pid = child.id() as i32;

    // (turn, CPU ticks, when) at the last progress.
    let mut last = (
        r.turn.0.load(Ordering::Acquire),
        cpu_ticks(pid),
        Instant::now(),
    );
    let mut last_cpu_check = Instant::now();
    let mut hang = None;
    let mut stuck: Option<String> = None;
    let mut timed_out = false;
    let status = loop {
        if INTERRUPTED.load(Ordering::Acquire) {
            kill_all(&ctl, pid);
            wait_blocking(pid);
            return Err(ReplayError::Interrupted);
        }
        fill(&mut next);
        if let Some(st) = try_wait(pid) {
            break st;
        }
        if r.divergence.state.load(Ordering::Acquire) == 2 {
            kill_all(&ctl, pid);
            break wait_blocking(pid);
        }
        if started.elapsed() > opts.timeout {
            timed_out = true;
            kill_all(&ctl, pid);
            break wait_blocking(pid);
        }
        if last_cpu_check.elapsed() >= Duration::from_millis(100) {
            last_cpu_check = Instant::now();
            let turn = r.turn.0.load(Ordering::Acquire);
            let elapsed = last.2.elapsed();
            // The next event's process has exited without it: it will
            // never come (a forked child that did not fail this time).
            if turn == last.0 && elapsed >= Duration::from_millis(100) {
                if let Some((_, e)) = replay.event_at(turn) {
                    let owner = ctl
                        .header()
                        .processes
                        .get(e.process as usize)
                        .map_or(0, |p| p.pid.load(Ordering::Acquire));
                    if owner > 0 && reprise_tracee::process::exited(owner) {
                        stuck = Some(format!(
                            "process {} exited before its next event ({})",
                            e.process,
                            replay.describe(turn)
                        ));
                        kill_all(&ctl, pid);
                        break wait_blocking(pid);
                    }
                }
            }
            // Progress is a new event, or a program busy computing (more
            // than a fifth of a CPU; waiting threads poll a little).
            let busy = || {
                let ticks = cpu_ticks(pid).saturating_sub(last.1);
                ticks as f64 / 100.0 > 0.2 * elapsed.as_secs_f64()
            };
            // Past the end of the recording with every thread parked at an
            // event it never reached in the recording (or blocked outside
            // the schedule), nothing more will happen: no need to wait
            // the whole hang timeout.
            let parked = turn >= r.end.load(Ordering::Acquire)
                && r.threads.iter().all(|t| {
                    matches!(
                        t.state.load(Ordering::Acquire),
                        rp::FREE | rp::WAITING | rp::DETACHED
                    )
                });
            let limit = if parked {
                opts.hang_timeout.min(Duration::from_millis(300))
            } else {
                opts.hang_timeout
            };
            if turn != last.0 || (elapsed >= limit && busy()) {
                last = (turn, cpu_ticks(pid), Instant::now());
            } else if elapsed >= limit {
                if turn >= r.end.load(Ordering::Acquire) {
                    // Past the end of the recording, as the recorded run:
                    // hung or deadlocked, or stopped somewhere else.
                    let blocked = ctl.threads().any(|t| {
                        t.state.load(Ordering::Acquire) == 1
                            && t.waiting_on.load(Ordering::Acquire) != 0
                    });
                    if blocked {
                        hang = Some(outcome::analyse_hang(&ctl, pid));
                    } else {
                        stuck = Some(
                            "the recording ends here, but the program did not: every thread waits at an event it never reached in the recording".to_string(),
                        );
                    }
                } else {
                    stuck = Some(format!(
                        "stuck: the next event ({}) did not come in {:.1} s",
                        replay.describe(turn),
                        opts.hang_timeout.as_secs_f64()
                    ));
                }
                kill_all(&ctl, pid);
                break wait_blocking(pid);
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    // Other processes of the program end with it.
    kill_all(&ctl, pid);
    drop(child);
    let duration = started.elapsed();
    let turn = r.turn.0.load(Ordering::Acquire);
    let events_replayed = match replay.positions.binary_search(&turn) {
        Ok(i) | Err(i) => i as u64,
    };
    let d = &r.divergence;
    let end = if d.state.load(Ordering::Acquire) == 2 {
        let text = String::from_utf8_lossy(&d.text[..(d.len as usize).min(d.text.len())]);
        if d.kind == rp::DIVERGED_MISSING_FILE {
            let relative = text.split_once("(\"").is_some_and(|(_, p)| !p.starts_with('/'));
            let mut text = text.into_owned();
            if relative {
                text.push_str(&format!(
                    " (the path is relative to the recorded working directory {})",
                    replay.header.cwd.display()
                ));
            }
            return Err(ReplayError::MissingFile(text));
        }
        let place = match replay.event_at(d.pos) {
            Some((_, e)) => format!("{}, event {}", thread_name(e.process, e.thread), e.seq),
            None => thread_name(d.process as u16, d.thread),
        };
        AttemptEnd::Divergence {
            reason: format!("{place}: {text}"),
        }
    } else if timed_out {
        AttemptEnd::Timeout {
            at: if turn >= total {
                "past the end of the recording".to_string()
            } else {
                format!("waiting for {}", replay.describe(turn))
            },
        }
    } else if let Some(reason) = stuck {
        AttemptEnd::Divergence { reason }
    } else {
        let mut o = outcome::conclude(&ctl, status, hang);
        if let Some(rec) = wrong_output {
            let mut check = OutputCheck::new(rec.expected_output.clone());
            check.feed(&attempt_stdout(stdout_copy, opts.output_dir.as_deref()));
            check.judge(&mut o);
        }
        o.duration_ns = duration.as_nanos() as u64;
        o.event_count = events_replayed;
        o.summary = outcome::summary_line(&o);
        match ended_early(replay, turn, &o) {
            Some(reason) => AttemptEnd::Divergence { reason },
            None => AttemptEnd::Outcome(Box::new(o)),
        }
    };
    Ok(AttemptResult {
        end,
        duration,
        seed: opts.seed,
        events_replayed,
        completed: turn >= total,
        decisions: r.decisions.load(Ordering::Acquire),
        object_mismatches: r.object_mismatches.load(Ordering::Acquire),
        output_numbers: r.output_numbers.load(Ordering::Acquire),
        observation: observe.map(|b| b.observation()),
        stopped_at: if d.state.load(Ordering::Acquire) == 2 {
            d.pos
        } else {
            turn
        },
        diverging_thread: (d.state.load(Ordering::Acquire) == 2)
            .then(|| rp::key(d.process, d.thread)),
    })
}

/// An attempt whose program ended before following the whole sketch,
/// other than with the recorded failure, left the sketch: the reason, with
/// where it ended and how far the recording goes.
fn ended_early(replay: &Replay, turn: u64, got: &OutcomeInfo) -> Option<String> {
    let total = *replay.positions.last()?;
    if turn >= total || replay.recorded.as_ref().is_some_and(|rec| matches(rec, got)) {
        return None;
    }
    let (i, next) = replay.event_at(turn)?;
    let last = replay.events.last()?;
    Some(format!(
        "the program ended at event {} of {} ({} recorded events not replayed; next: {}): {}",
        next.seq,
        last.seq + 1,
        replay.events.len() - i,
        replay.describe(turn),
        got.summary
    ))
}

/// The failing frame of a crash: the first named frame in the program's
/// own code (libc's and the agent's frames above it may differ between
/// runs: the agent emulates some calls), else the first named frame.
fn place(o: &OutcomeInfo) -> Option<&str> {
    let named = |f: &&reprise_schema::Frame| !f.function.is_empty();
    let shared = |f: &reprise_schema::Frame| {
        let m = f.module.to_string_lossy();
        m.ends_with(".so") || m.contains(".so.")
    };
    o.backtrace
        .iter()
        .filter(named)
        .find(|f| !shared(f))
        .or_else(|| o.backtrace.iter().find(named))
        .map(|f| f.function.as_str())
}

/// True if `got` is the recorded failure again: same kind and same place
/// (signal and faulting function or pc; assertion text; the locks of a
/// deadlock's cycle; exit code).
pub fn matches(recorded: &OutcomeInfo, got: &OutcomeInfo) -> bool {
    if recorded.kind != got.kind {
        return false;
    }
    match recorded.kind {
        OutcomeKind::Exited => recorded.exit_code == got.exit_code,
        OutcomeKind::Signaled => {
            recorded.signal == got.signal
                && match (place(recorded), place(got)) {
                    (Some(a), Some(b)) => a == b,
                    _ => recorded.pc == got.pc,
                }
        }
        OutcomeKind::Assertion => recorded.assertion == got.assertion,
        OutcomeKind::Deadlock => {
            let mut a = recorded.cycle.clone();
            let mut b = got.cycle.clone();
            a.sort_unstable();
            b.sort_unstable();
            a == b
        }
        OutcomeKind::Hang | OutcomeKind::Interrupted | OutcomeKind::Unknown => true,
        // The same line wrong (a lost update loses another amount).
        OutcomeKind::WrongOutput => recorded.output_line == got.output_line,
    }
}

/// What an attempt wrote to stdout: from the unlinked copy, or from the
/// output directory's `stdout` file. Unreadable: empty (judged wrong).
fn attempt_stdout(copy: Option<std::fs::File>, dir: Option<&Path>) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    match (copy, dir) {
        (Some(mut f), _) => {
            let _ = f.rewind().and_then(|_| f.read_to_end(&mut bytes));
        }
        (None, Some(d)) => bytes = std::fs::read(d.join("stdout")).unwrap_or_default(),
        (None, None) => {}
    }
    bytes
}

/// True if the recorded run failed (anything but a clean exit).
pub fn is_failure(o: &OutcomeInfo) -> bool {
    !(o.kind == OutcomeKind::Exited && o.exit_code == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reprise_schema::Frame;

    fn frame(function: &str) -> Frame {
        Frame {
            function: function.into(),
            ..Frame::default()
        }
    }

    #[test]
    fn matches_compares_kind_and_place() {
        let exit = |code| OutcomeInfo {
            kind: OutcomeKind::Exited,
            exit_code: code,
            ..OutcomeInfo::default()
        };
        assert!(matches(&exit(2), &exit(2)));
        assert!(!matches(&exit(2), &exit(0)));

        let segv = |f: &str, pc| OutcomeInfo {
            kind: OutcomeKind::Signaled,
            signal: libc::SIGSEGV,
            pc,
            backtrace: vec![frame(""), frame(f)],
            ..OutcomeInfo::default()
        };
        assert!(matches(&segv("a", 1), &segv("a", 2)));
        assert!(!matches(&segv("a", 1), &segv("b", 1)));
        // A libc frame on top does not hide the program's frame.
        let mut libc_top = segv("a", 1);
        libc_top.backtrace.insert(
            0,
            Frame {
                function: "___pthread_mutex_trylock".into(),
                module: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                ..Frame::default()
            },
        );
        assert!(matches(&libc_top, &segv("a", 2)));
        let mut abrt = segv("a", 1);
        abrt.signal = libc::SIGABRT;
        assert!(!matches(&segv("a", 1), &abrt));
        // Without symbols, the pc decides.
        let bare = |pc| OutcomeInfo {
            backtrace: Vec::new(),
            ..segv("", pc)
        };
        assert!(matches(&bare(5), &bare(5)));
        assert!(!matches(&bare(5), &bare(6)));

        let assertion = |t: &str| OutcomeInfo {
            kind: OutcomeKind::Assertion,
            assertion: t.into(),
            ..OutcomeInfo::default()
        };
        assert!(matches(&assertion("x"), &assertion("x")));
        assert!(!matches(&assertion("x"), &assertion("y")));
        assert!(!matches(&assertion("x"), &exit(134)));

        let deadlock = |cycle: Vec<u64>| OutcomeInfo {
            kind: OutcomeKind::Deadlock,
            cycle,
            ..OutcomeInfo::default()
        };
        assert!(matches(&deadlock(vec![1, 2]), &deadlock(vec![2, 1])));
        assert!(!matches(&deadlock(vec![1, 2]), &deadlock(vec![1, 3])));

        // A wrong output is the same line wrong, whatever it printed there.
        let wrong = |line| OutcomeInfo {
            kind: OutcomeKind::WrongOutput,
            output_line: line,
            ..OutcomeInfo::default()
        };
        assert!(matches(&wrong(2), &wrong(2)));
        assert!(!matches(&wrong(2), &wrong(1)));
        assert!(!matches(&wrong(1), &exit(0)));
    }

    #[test]
    fn switch_rates_span_dense_to_sparse() {
        let rates: std::collections::BTreeSet<u32> = (0..200).map(switch_rate).collect();
        assert!(rates.contains(&32768) && rates.contains(&64), "{rates:?}");
        assert!(rates.iter().all(|&r| (64..=32768).contains(&r)));
    }
}
