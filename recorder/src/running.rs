//! The supervisor while the program runs: it drains the ring into the
//! trace, flushes it, and watches for the program's end and for a hang.
//!
//! The drainer runs on a thread of its own at the priority the ring's fill
//! calls for (drain_priority.rs), which ends with the run: its class and
//! nice value die with it, and the caller's thread keeps its own for what
//! it starts next (`reprise eval` records and replays many programs from
//! one thread).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reprise_tracee::process::{cpu_ticks, reap_ended, try_wait};

use crate::control::ControlBlock;
use crate::drain_priority::DrainPriority;
use crate::outcome::{self, Ending};
use crate::session::{kill_all, Drain, DRAIN_BATCH, INTERRUPTS};

const IDLE_SLEEP_MIN: Duration = Duration::from_micros(200);
const IDLE_SLEEP_MAX: Duration = Duration::from_millis(5);
/// How often the hang watch looks at the program's CPU time.
const HANG_CHECK: Duration = Duration::from_millis(100);

/// What the run left: the program's status, and what the drain kept.
pub(crate) struct Ended {
    pub ctl: ControlBlock,
    pub drain: Drain,
    /// The status of the process reprise started.
    pub status: i32,
    /// The hang, if the watch ended the program.
    pub hang: Option<Ending>,
    pub warnings: Vec<String>,
}

/// Drains the ring until the program is gone (or hung and killed).
pub(crate) fn drain_until_exit(
    ctl: ControlBlock,
    drain: Drain,
    pid: i32,
    hang_timeout: Duration,
) -> Ended {
    let run = Running::new(ctl, drain, pid, hang_timeout);
    let r = std::thread::scope(|s| s.spawn(|| drainer(run)).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    Ended {
        ctl: r.ctl,
        drain: r.drain,
        status: r.status.unwrap_or(0),
        hang: r.hang,
        warnings: r.warnings,
    }
}

/// The drainer thread: one step at a time, sleeping between them as the
/// step says, at the priority the ring's fill calls for.
fn drainer(mut run: Running) -> Running {
    let mut priority = DrainPriority::start(DrainPriority::reversible());
    let slots = run.ctl.header().ring_slots;
    loop {
        let step = run.step();
        let pending = run.ctl.head().saturating_sub(run.ctl.tail());
        priority.adjust(pending, slots);
        match step {
            Step::Again => {}
            Step::Sleep(d) => std::thread::sleep(d),
            Step::Ended => return run,
        }
    }
}

/// What to do after a step.
enum Step {
    /// More events wait: step again at once.
    Again,
    /// Little or nothing to drain: sleep this long first.
    Sleep(Duration),
    /// The program is gone (or hung and killed).
    Ended,
}

/// The drain and the watch between steps.
struct Running {
    ctl: ControlBlock,
    drain: Drain,
    pid: i32,
    hang_timeout: Duration,
    warnings: Vec<String>,
    last_flush: Instant,
    /// (ring head, the program's CPU ticks) and when they last moved.
    last_progress: (u64, u64, Instant),
    hang: Option<Ending>,
    idle_sleep: Duration,
    last_check: Instant,
    /// The status of the process reprise started, once it exited.
    status: Option<i32>,
    interrupts_seen: i32,
}

impl Running {
    fn new(ctl: ControlBlock, drain: Drain, pid: i32, hang_timeout: Duration) -> Running {
        let last_progress = (ctl.head(), cpu_ticks(pid), Instant::now());
        Running {
            ctl,
            drain,
            pid,
            hang_timeout,
            warnings: Vec::new(),
            last_flush: Instant::now(),
            last_progress,
            hang: None,
            idle_sleep: IDLE_SLEEP_MIN,
            last_check: Instant::now(),
            status: None,
            interrupts_seen: INTERRUPTS.load(Ordering::Relaxed),
        }
    }

    /// Drains one batch, then looks at the program: its end, the trace's
    /// periodic flush, and (when nothing came) a hang.
    fn step(&mut self) -> Step {
        let (ctl, pid) = (&self.ctl, self.pid);
        let n = self.drain.take(ctl);
        if let Some(warning) = self.drain.stop_on_disk_error() {
            // The agents stop logging; the trace keeps what was written.
            self.warnings.push(warning);
            ctl.header().stopping.store(1, Ordering::Release);
        }
        if self.status.is_none() {
            self.status = try_wait(pid);
        }
        if self.status.is_some() {
            // The process reprise started is gone; the program is not while
            // another of its processes lives on (a daemon, a worker).
            reap_ended(&ctl.pids());
            if self.hang.is_some() || !others_alive(ctl, pid) {
                return Step::Ended;
            }
            end_others_on_interrupt(ctl, pid, &mut self.interrupts_seen);
        }
        if self.last_flush.elapsed() > Duration::from_millis(500) {
            self.drain.flush();
            self.last_flush = Instant::now();
        }
        if n >= DRAIN_BATCH {
            self.idle_sleep = IDLE_SLEEP_MIN;
            return Step::Again;
        }
        if n > 0 {
            // A steady trickle (a server under load): let events collect
            // for a moment rather than spin on a core the program needs.
            // The ring holds far more than arrives meanwhile.
            self.idle_sleep = IDLE_SLEEP_MIN;
            return Step::Sleep(IDLE_SLEEP_MIN);
        }
        // The supervisor shares the cores with the program: when there is
        // nothing to drain it sleeps longer and longer, and reads /proc
        // only every HANG_CHECK.
        let sleep = self.idle_sleep;
        self.idle_sleep = (self.idle_sleep * 2).min(IDLE_SLEEP_MAX);
        if self.last_check.elapsed() >= HANG_CHECK {
            self.last_check = Instant::now();
            self.watch_for_hang();
        }
        Step::Sleep(sleep)
    }

    /// Hang watch: no event and no CPU time, while every thread waits in a
    /// recorded operation. A hung program is killed; the next step ends.
    fn watch_for_hang(&mut self) {
        let (ctl, pid) = (&self.ctl, self.pid);
        let now = (ctl.head(), cpu_ticks(pid));
        if now != (self.last_progress.0, self.last_progress.1) {
            self.last_progress = (now.0, now.1, Instant::now());
        } else if self.hang.is_none()
            && self.last_progress.2.elapsed() >= self.hang_timeout
            && outcome::all_waiting(ctl)
        {
            self.hang = Some(outcome::analyse_hang(ctl, pid));
            kill_all(ctl, pid, true);
        }
    }
}

/// True while a process of the program other than `main` (the one reprise
/// started) has not exited.
fn others_alive(ctl: &ControlBlock, main: i32) -> bool {
    ctl.pids()
        .into_iter()
        .any(|p| p != main && !reprise_tracee::process::exited(p))
}

/// Once the process reprise started has exited, a SIGINT or SIGTERM to
/// reprise (Ctrl-C) ends the processes still running, with SIGTERM.
fn end_others_on_interrupt(ctl: &ControlBlock, main: i32, seen: &mut i32) {
    let now = INTERRUPTS.load(Ordering::Relaxed);
    if now != *seen {
        *seen = now;
        for p in ctl.pids() {
            if p != main {
                // SAFETY: kill(2); a process that is gone gives ESRCH.
                unsafe { libc::kill(p, libc::SIGTERM) };
            }
        }
    }
}
