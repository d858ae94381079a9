//! One attempt: the supervisor of a replay run. It fills the shared
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
use reprise_tracee::process::{cpu_ticks, try_wait, wait_blocking};

use crate::detector::matches;
use crate::observe::ObserveBlock;
use crate::{
    switch_rate, thread_name, AttemptEnd, AttemptOptions, AttemptResult, Replay, ReplayError,
    Strategy,
};

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
    let mut recorded_events = 0;
    if recorded & reprise_schema::RecordedEvents::PROCESS_EXIT != 0 {
        recorded_events |= rp::RECORDED_PROCESS_EXIT;
    }
    if recorded & reprise_schema::RecordedEvents::FILES != 0 {
        recorded_events |= rp::RECORDED_FILES;
    }
    r.recorded_events.store(recorded_events, Ordering::Release);

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
