//! A replay session: the supervisor of one run of the program under one
//! schedule, started, run to its end or to a pause before an event (the
//! debugger), finished. It fills the shared
//! ring with the trace's events as `turn` moves on, launches the program
//! under the agent, waits for it, detects a hang (or a run stuck before
//! an event that will never come), reads the agent's divergence and tells
//! how the run ended.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reprise_abi::{replay as rp, EventKind, Level, Mode};
use reprise_recorder::control::ControlBlock;
use reprise_recorder::expected::OutputCheck;
use reprise_recorder::{launch, outcome};
use reprise_schema::{OutcomeInfo, OutcomeKind};
use reprise_tracee::process::{become_subreaper, cpu_ticks, reap_ended, try_wait, wait_blocking};

mod checkpoint;
mod nudge;
mod progress;

pub use checkpoint::Checkpoint;

use crate::detector::{is_failure, matches};
use crate::observe::ObserveBlock;
use crate::{thread_name, AttemptEnd, AttemptOptions, AttemptResult, Replay, ReplayError};

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

/// Runs the program once under the sketch, to its end.
pub fn attempt(replay: &Replay, opts: &AttemptOptions) -> Result<AttemptResult, ReplayError> {
    let mut session = ReplaySession::start(replay, opts)?;
    session.run()?;
    session.finish()
}

/// Where a running [`ReplaySession`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Before event `event` (its index in [`Replay::events`]): the thread
    /// that performs it waits there, every other thread waits for the
    /// baton or at its own next event.
    Paused { event: usize },
    /// The program ended, or was ended (a divergence, a hang, the
    /// timeout); [`ReplaySession::finish`] tells how.
    Ended,
}

/// How the program's run ended, as the supervisor saw it.
struct Ending {
    status: i32,
    hang: Option<outcome::Ending>,
    stuck: Option<String>,
    timed_out: bool,
    /// Killed for the agent's divergence record (stderr off the sketch:
    /// once its grace ended, see [`STDERR_GRACE`]).
    killed_diverged: bool,
}

/// How long a thread that left the sketch writing to stderr (see
/// `rp::DIVERGED_STDERR`) may run on: a failing `assert` or glibc's heap
/// check writes its message and dies within a millisecond or two.
const STDERR_GRACE: Duration = Duration::from_millis(300);

/// No new event for this long while the program computes: the baton
/// holder is nudged to let another thread run (see `session/nudge.rs`).
const NUDGE_AFTER: Duration = Duration::from_millis(20);

/// One replay of the program under one schedule, supervised: started,
/// run (to its end, or to a pause before a chosen event), finished.
pub struct ReplaySession<'r> {
    replay: &'r Replay,
    opts: AttemptOptions,
    ctl: ControlBlock,
    /// The program as launched; None for a copy resumed from a
    /// checkpoint (a child of ours too, waited for by pid).
    child: Option<std::process::Child>,
    pid: i32,
    observe: Option<ObserveBlock>,
    /// A wrong-output attempt's stdout, when no output directory keeps it.
    stdout_copy: Option<std::fs::File>,
    /// The next event to put into the ring.
    next: usize,
    started: Instant,
    /// The agent's count of poll verdicts at the last look, and when it
    /// last grew (see [`Self::check_progress`]).
    polls: (u64, Option<Instant>),
    /// (turn, CPU ticks, when) at the last progress.
    progress: (u64, u64, Instant),
    last_cpu_check: Instant,
    /// (turn, CPU ticks, when) at the last look for a thread to nudge.
    nudge: (u64, u64, Instant),
    ending: Option<Ending>,
    /// When the supervisor first saw the agent's divergence record.
    off_sketch_since: Option<Instant>,
    /// The wait status of the process the replay started, once it ended.
    main_status: Option<i32>,
}

impl<'r> ReplaySession<'r> {
    /// Creates the control block, fills the ring's first events and
    /// launches the program under the agent.
    pub fn start(replay: &'r Replay, opts: &AttemptOptions) -> Result<Self, ReplayError> {
        let ctl = replay_control(replay, replay.ring_slots)?;
        init_control(&ctl, replay, opts);
        let mut next = 0;
        fill_ring(&ctl, replay, &mut next);

        let agent = launch::find_agent()?;
        let h = &replay.header;
        let program = &h.program_path;
        let mut env = launch::agent_env(&split_env(&h.env), &agent, ctl.path());
        if let Some(p) = &replay.func_plan {
            env.push((
                reprise_abi::func_plan::ENV.into(),
                p.file.path().as_os_str().to_os_string(),
            ));
        }
        let observe = match &opts.observe {
            Some(plan) => {
                let block = ObserveBlock::create(replay.stack_plan()?, plan)
                    .map_err(ReplayError::Control)?;
                env.push((
                    reprise_abi::observe::ENV_OBSERVE.into(),
                    block.path().as_os_str().to_os_string(),
                ));
                Some(block)
            }
            None => None,
        };
        let (stdio, stdout_copy) = program_stdio(opts, wrong_output(replay).is_some())?;
        let argv = if h.argv.is_empty() {
            vec![program.as_os_str().to_os_string()]
        } else {
            h.argv.clone()
        };
        // A daemon's process outlives the one the replay starts: it stays
        // ours, to follow and reap.
        become_subreaper();
        let started = Instant::now();
        let child = launch::spawn_with(
            program,
            &argv,
            &env,
            &h.cwd,
            Some(stdio),
            replay.level >= Level::Sys,
        )?;
        let pid = child.id() as i32;
        let turn = ctl.replay().turn.0.load(Ordering::Acquire);
        Ok(ReplaySession {
            replay,
            opts: opts.clone(),
            progress: (turn, cpu_ticks(pid), Instant::now()),
            polls: (0, None),
            ctl,
            child: Some(child),
            pid,
            observe,
            stdout_copy,
            next,
            started,
            last_cpu_check: Instant::now(),
            nudge: (u64::MAX, 0, Instant::now()),
            ending: None,
            off_sketch_since: None,
            main_status: None,
        })
    }

    /// The program's first process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The shared control block (thread table, turn, the agent's state).
    pub fn control(&self) -> &ControlBlock {
        &self.ctl
    }

    pub fn replay(&self) -> &'r Replay {
        self.replay
    }

    /// The index of the next event to happen (the number of events
    /// replayed so far).
    pub fn next_event(&self) -> usize {
        let turn = self.ctl.replay().turn.0.load(Ordering::Acquire);
        match self.replay.positions.binary_search(&turn) {
            Ok(i) | Err(i) => i,
        }
    }

    /// Makes the run pause before event `event` (None: run to the end).
    /// Takes effect at the next [`ReplaySession::run`].
    pub fn pause_before(&mut self, event: Option<usize>) {
        let r = self.ctl.replay();
        let pos = event.map_or(u64::MAX, |i| {
            self.replay.positions[i.min(self.replay.positions.len() - 1)]
        });
        r.paused.store(0, Ordering::Release);
        r.pause_at.store(pos, Ordering::Release);
        self.ctl.wake_replay();
    }

    /// For a caller that watches the program itself (ptrace): puts more
    /// events into the ring and tells whether the run is paused, without
    /// waiting for the process (which would take the tracer's stops).
    pub fn fill_and_check_pause(&mut self) -> bool {
        fill_ring(&self.ctl, self.replay, &mut self.next);
        let r = self.ctl.replay();
        let paused = r.paused.load(Ordering::Acquire);
        paused != 0 && paused > r.pause_at.load(Ordering::Acquire)
    }

    /// Runs until the pause set by [`ReplaySession::pause_before`] or the
    /// end of the program.
    pub fn run(&mut self) -> Result<Stop, ReplayError> {
        if self.ending.is_some() {
            return Ok(Stop::Ended);
        }
        let turn = self.ctl.replay().turn.0.load(Ordering::Acquire);
        self.progress = (turn, cpu_ticks(self.pid), Instant::now());
        loop {
            if let Some(stop) = self.poll()? {
                return Ok(stop);
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// One look at the run: None while it goes on.
    fn poll(&mut self) -> Result<Option<Stop>, ReplayError> {
        let (replay, pid) = (self.replay, self.pid);
        let r = self.ctl.replay();
        if INTERRUPTED.load(Ordering::Acquire) {
            kill_all(&self.ctl, pid);
            wait_blocking(pid);
            return Err(ReplayError::Interrupted);
        }
        fill_ring(&self.ctl, replay, &mut self.next);
        let paused = r.paused.load(Ordering::Acquire);
        if paused != 0 && paused > r.pause_at.load(Ordering::Acquire) {
            if let Some((event, _)) = replay.event_at(paused - 1) {
                return Ok(Some(Stop::Paused { event }));
            }
        }
        let ending = |status: i32, stuck: Option<String>, timed_out: bool, hang| Ending {
            status,
            hang,
            stuck,
            timed_out,
            killed_diverged: false,
        };
        if self.main_status.is_none() {
            self.main_status = try_wait(pid);
        }
        let main_status = self.main_status;
        // The process the replay started, once it and every other process
        // of the program (a daemon's, a worker) have ended.
        let reap = || main_status.unwrap_or_else(|| wait_blocking(pid));
        let ended = if let Some(st) = main_status.filter(|_| !self.others_running()) {
            ending(st, None, false, None)
        } else if r.divergence.state.load(Ordering::Acquire) == 2 {
            let since = *self.off_sketch_since.get_or_insert_with(Instant::now);
            if r.divergence.kind == rp::DIVERGED_STDERR && since.elapsed() < STDERR_GRACE {
                // Its message written, the thread may be about to fail.
                return Ok(None);
            }
            kill_all(&self.ctl, pid);
            Ending {
                killed_diverged: true,
                ..ending(reap(), None, false, None)
            }
        } else if self.started.elapsed() > self.opts.timeout {
            kill_all(&self.ctl, pid);
            ending(reap(), None, true, None)
        } else if self.last_cpu_check.elapsed() < Duration::from_millis(100) {
            self.maybe_nudge();
            return Ok(None);
        } else {
            self.last_cpu_check = Instant::now();
            let Some((stuck, hang)) = self.check_progress() else {
                return Ok(None);
            };
            kill_all(&self.ctl, pid);
            ending(reap(), stuck, false, hang)
        };
        self.ending = Some(ended);
        Ok(Some(Stop::Ended))
    }

    /// Every NUDGE_AFTER: a run busy without a new event since the last
    /// look, another thread waiting for the baton, gets its baton holder
    /// nudged (the holder may be polling memory that thread would write).
    fn maybe_nudge(&mut self) {
        if self.nudge.2.elapsed() < NUDGE_AFTER {
            return;
        }
        let turn = self.ctl.replay().turn.0.load(Ordering::Acquire);
        let ticks = cpu_ticks(self.pid);
        let (last_turn, last_ticks, _) = self.nudge;
        if turn == last_turn
            && ticks > last_ticks
            && turn < self.ctl.replay().end.load(Ordering::Acquire)
        {
            nudge::nudge_baton_holder(&self.ctl);
        }
        self.nudge = (turn, ticks, Instant::now());
    }

    /// True while a process of the program other than the one the replay
    /// started runs on (a daemon's, a worker). Only for a run the replay
    /// launched: a debugger checkpoint's copies are not followed.
    fn others_running(&self) -> bool {
        if self.child.is_none() {
            return false;
        }
        let pids = self.ctl.pids();
        reap_ended(&pids);
        pids.into_iter()
            .any(|p| p != self.pid && !reprise_tracee::process::exited(p))
    }

    /// Ends the run (killing what is left of the program) and tells how
    /// it ended.
    pub fn finish(mut self) -> Result<AttemptResult, ReplayError> {
        if self.ending.is_none() {
            kill_all(&self.ctl, self.pid);
            let status = wait_blocking(self.pid);
            self.ending = Some(Ending {
                status,
                hang: None,
                stuck: Some("the debugger ended the run".to_string()),
                timed_out: false,
                killed_diverged: false,
            });
        }
        let ReplaySession {
            replay,
            opts,
            ctl,
            child,
            pid,
            observe,
            stdout_copy,
            started,
            ending,
            ..
        } = self;
        let Some(Ending {
            status,
            hang,
            stuck,
            timed_out,
            killed_diverged,
        }) = ending
        else {
            unreachable!("set above");
        };
        // Other processes of the program end with it.
        kill_all(&ctl, pid);
        drop(child);
        let r = ctl.replay();
        let total = *replay.positions.last().unwrap_or(&0);
        let duration = started.elapsed();
        let turn = r.turn.0.load(Ordering::Acquire);
        let events_replayed = match replay.positions.binary_search(&turn) {
            Ok(i) | Err(i) => i as u64,
        };
        let d = &r.divergence;
        let diverged = d.state.load(Ordering::Acquire) == 2;
        // Stderr off the sketch, and the program ended by itself.
        let off_sketch = diverged
            && d.kind == rp::DIVERGED_STDERR
            && !killed_diverged
            && !timed_out
            && stuck.is_none();
        let end = if diverged && !off_sketch {
            divergence_end(replay, d)?
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
            if let Some(rec) = wrong_output(replay) {
                let mut check = OutputCheck::new(rec.expected_output.clone());
                check.feed(&attempt_stdout(stdout_copy, opts.output_dir.as_deref()));
                check.judge(&mut o);
            }
            o.duration_ns = duration.as_nanos() as u64;
            o.event_count = events_replayed;
            o.summary = outcome::summary_line(&o);
            if off_sketch {
                off_sketch_end(replay, d, o)?
            } else {
                match ended_early(replay, turn, &o) {
                    Some(reason) => AttemptEnd::Divergence { reason },
                    None => AttemptEnd::Outcome(Box::new(o)),
                }
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
            first_path_change: match r.first_site_mismatch.load(Ordering::Acquire) {
                u64::MAX => None,
                pos => Some((pos, r.first_site_thread.load(Ordering::Acquire))),
            },
            output_numbers: r.output_numbers.load(Ordering::Acquire),
            revocations: r.revocations.load(Ordering::Acquire),
            first_revocation: r.first_revocation.load(Ordering::Acquire).checked_sub(1),
            observation: observe.map(|b| replay.observation_of(&b)),
            stopped_at: if d.state.load(Ordering::Acquire) == 2 {
                d.pos
            } else {
                turn
            },
            diverging_thread: (d.state.load(Ordering::Acquire) == 2)
                .then(|| rp::key(d.process, d.thread)),
        })
    }
}

/// A wrong-output recording: its output is compared up to the line it
/// got wrong; from there the attempt's stdout is judged at the end.
fn wrong_output(replay: &Replay) -> Option<&OutcomeInfo> {
    replay
        .recorded
        .as_ref()
        .filter(|o| o.kind == OutcomeKind::WrongOutput)
}

/// The schedule and the recorded facts the agent needs, before launch.
/// A control block for replaying `replay`, with a ring of `ring_slots`.
fn replay_control(replay: &Replay, ring_slots: u64) -> Result<ControlBlock, ReplayError> {
    let ctl = ControlBlock::create(Mode::Replay, replay.level, ring_slots)
        .map_err(ReplayError::Control)?;
    ctl.set_block_period(replay.header.block_period);
    Ok(ctl)
}

fn init_control(ctl: &ControlBlock, replay: &Replay, opts: &AttemptOptions) {
    let r = ctl.replay();
    r.end.store(u64::MAX, Ordering::Release);
    r.pause_at.store(
        opts.pause_before.map_or(u64::MAX, |i| {
            replay.positions[i.min(replay.positions.len() - 1)]
        }),
        Ordering::Release,
    );
    r.baton.store(rp::key(0, 0), Ordering::Release);
    r.strategy
        .store(opts.strategy.policy(opts.seed).encode(), Ordering::Release);
    r.odd_thread.store(opts.odd_thread, Ordering::Release);
    r.rng.store(opts.seed, Ordering::Release);
    // The recorded pids and tids: printed, they may differ in replay.
    for (slot, id) in r
        .recorded_ids
        .iter()
        .zip(replay.events.iter().filter_map(|e| {
            matches!(e.kind, EventKind::ProcessStart | EventKind::ThreadStart)
                .then_some(e.extra as u32)
        }))
    {
        slot.store(id, Ordering::Release);
    }
    for e in replay.events.iter() {
        if let (EventKind::ProcessStart, Some(slot)) =
            (e.kind, r.recorded_pids.get(e.process as usize))
        {
            slot.store(e.extra as i32, Ordering::Release);
        }
    }
    r.revoke_ms.store(opts.revoke_ms, Ordering::Release);
    r.stdout_free_from.store(
        wrong_output(replay).map_or(u64::MAX, |o| o.output_line_start),
        Ordering::Release,
    );
    r.first_mismatch.store(u64::MAX, Ordering::Release);
    r.first_site_mismatch.store(u64::MAX, Ordering::Release);
    let recorded = replay.header.recorded_events;
    let mut recorded_events = 0;
    if recorded & reprise_schema::RecordedEvents::PROCESS_EXIT != 0 {
        recorded_events |= rp::RECORDED_PROCESS_EXIT;
    }
    if recorded & reprise_schema::RecordedEvents::FILES != 0 {
        recorded_events |= rp::RECORDED_FILES;
    }
    if recorded & reprise_schema::RecordedEvents::NET != 0 {
        recorded_events |= rp::RECORDED_NET;
    }
    if recorded & reprise_schema::RecordedEvents::AMBIENT_UNORDERED != 0 {
        recorded_events |= rp::AMBIENT_UNORDERED;
    }
    r.recorded_events.store(recorded_events, Ordering::Release);
}

/// Puts the next events into the ring, as far as `turn` lets it; marks
/// the end once every event is in.
fn fill_ring(ctl: &ControlBlock, replay: &Replay, next: &mut usize) {
    let r = ctl.replay();
    let (events, positions) = (&replay.events, &replay.positions);
    let total = *positions.last().unwrap_or(&0);
    let turn = r.turn.0.load(Ordering::Acquire);
    let start = *next;
    while *next < events.len() {
        let pos = positions[*next];
        let end = positions[*next + 1];
        if end > turn + replay.ring_slots {
            break;
        }
        let ev =
            crate::created_files::ring_copy(*next, &events[*next], &replay.opens_of_created_files);
        ctl.put_event(pos, &ev);
        *next += 1;
    }
    if *next == events.len() && r.end.load(Ordering::Acquire) == u64::MAX {
        r.end.store(total, Ordering::Release);
        ctl.wake_replay();
    } else if *next != start {
        ctl.wake_replay();
    }
}

/// Where the program's stdin, stdout and stderr go; a wrong-output
/// attempt without an output directory keeps its stdout in an unlinked
/// temporary file, read back at the end.
fn program_stdio(
    opts: &AttemptOptions,
    keep_stdout: bool,
) -> Result<([Stdio; 3], Option<std::fs::File>), ReplayError> {
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
    if keep_stdout && opts.output_dir.is_none() {
        let tmp = |e: std::io::Error| ReplayError::Io(format!("temporary file: {e}"));
        let f = tempfile::tempfile().map_err(tmp)?;
        let [i, _, e] = stdio;
        return Ok(([i, Stdio::from(f.try_clone().map_err(tmp)?), e], Some(f)));
    }
    Ok((stdio, None))
}

/// The divergence the agent reported, as an attempt's end (a missing
/// file is an error: no schedule can replay the run).
fn divergence_end(
    replay: &Replay,
    d: &reprise_abi::DivergenceInfo,
) -> Result<AttemptEnd, ReplayError> {
    let text = String::from_utf8_lossy(&d.text[..(d.len as usize).min(d.text.len())]);
    if d.kind == rp::DIVERGED_MISSING_FILE {
        let relative = text
            .split_once("(\"")
            .is_some_and(|(_, p)| !p.starts_with('/'));
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
    // Function and block entries are named where they are in the source.
    let text = if replay.level >= Level::Func {
        replay.annotate_code(&text)
    } else {
        text.into_owned()
    };
    Ok(AttemptEnd::Divergence {
        reason: format!("{place}: {text}"),
    })
}

/// A run in which a thread left the sketch writing to stderr and the program
/// then ended by itself: the recorded failure if it failed as recorded
/// (reached sooner than in the recording), else the divergence. A run
/// recorded without failing must follow its whole sketch.
fn off_sketch_end(
    replay: &Replay,
    d: &reprise_abi::DivergenceInfo,
    o: OutcomeInfo,
) -> Result<AttemptEnd, ReplayError> {
    let failed_as_recorded = replay
        .recorded
        .as_ref()
        .is_some_and(|rec| is_failure(rec) && matches(rec, &o));
    if failed_as_recorded {
        return Ok(AttemptEnd::Outcome(Box::new(o)));
    }
    Ok(match divergence_end(replay, d)? {
        AttemptEnd::Divergence { reason } => AttemptEnd::Divergence {
            reason: format!("{reason}; the program then ended: {}", o.summary),
        },
        other => other,
    })
}

/// An attempt whose program ended before following the whole sketch,
/// other than with the recorded failure, left the sketch: the reason, with
/// where it ended and how far the recording goes.
fn ended_early(replay: &Replay, turn: u64, got: &OutcomeInfo) -> Option<String> {
    let total = *replay.positions.last()?;
    if turn >= total
        || replay
            .recorded
            .as_ref()
            .is_some_and(|rec| matches(rec, got))
    {
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
