//! Whether a run still makes progress: a new event, or a program busy
//! computing; past the hang timeout without either it is stuck (or, past
//! the end of the recording, hung as recorded). A thread the nudge found
//! polling memory burns CPU without progress.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reprise_abi::replay as rp;
use reprise_recorder::outcome;
use reprise_tracee::process::cpu_ticks;

use super::ReplaySession;

/// A poll verdict this recent means the program's CPU time is a poll, not
/// progress (verdicts come at most every `NUDGE_AFTER` while one lasts).
const POLL_RECENT: Duration = Duration::from_millis(300);

impl ReplaySession<'_> {
    /// Every 100 ms: a run that made no progress for too long is stuck
    /// (or, past the end of the recording, hung as recorded).
    pub(super) fn check_progress(&mut self) -> Option<(Option<String>, Option<outcome::Ending>)> {
        let (replay, pid, ctl) = (self.replay, self.pid, &self.ctl);
        let r = ctl.replay();
        let last = &mut self.progress;
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
                    return Some((
                        Some(format!(
                            "process {} exited before its next event ({})",
                            e.process,
                            replay.describe(turn)
                        )),
                        None,
                    ));
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
            self.opts.hang_timeout.min(Duration::from_millis(300))
        } else {
            self.opts.hang_timeout
        };
        // A thread the nudge found polling memory within the last
        // moments, the sketch not moving on: what it waits for does not
        // come (the thread that would write it waits at a later event),
        // and the CPU it burns is no progress.
        let polls = r.polls.load(Ordering::Acquire);
        if polls != self.polls.0 {
            self.polls = (polls, Some(Instant::now()));
        }
        let polling = self
            .polls
            .1
            .is_some_and(|t| t.elapsed() < POLL_RECENT && t > last.2);
        if turn != last.0 || (elapsed >= limit && busy() && !polling) {
            *last = (turn, cpu_ticks(pid), Instant::now());
            return None;
        }
        if elapsed < limit {
            return None;
        }
        if turn >= r.end.load(Ordering::Acquire) {
            // Past the end of the recording, as the recorded run:
            // hung or deadlocked, or stopped somewhere else.
            let blocked = ctl.threads().any(|t| {
                t.state.load(Ordering::Acquire) == 1 && t.waiting_on.load(Ordering::Acquire) != 0
            });
            if blocked {
                return Some((None, Some(outcome::analyse_hang(ctl, pid))));
            }
            return Some((
                Some("the recording ends here, but the program did not: every thread waits at an event it never reached in the recording".to_string()),
                None,
            ));
        }
        let poller = if polling {
            format!(
                ", {} polling memory no other thread changed",
                crate::key_name(r.poller.load(Ordering::Acquire))
            )
        } else {
            String::new()
        };
        Some((
            Some(format!(
                "stuck: the next event ({}) did not come in {:.1} s{poller}",
                replay.describe(turn),
                self.opts.hang_timeout.as_secs_f64()
            )),
            None,
        ))
    }
}
