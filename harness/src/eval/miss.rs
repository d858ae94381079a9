//! Why a replay missed: *fidelity* (its attempts left the sketch, or ended
//! before following all of it: the replay could not follow the recorded
//! run) or *search* (its attempts followed the sketch up to the recorded
//! failure, or to its end, and still did not fail as recorded: the right
//! interleaving between the sketch's events was not found) — or both,
//! some attempts of each.

use reprise_abi::{replay as rp, EventKind};
use reprise_feedback::search::{Role, Run};
use reprise_replayer::{AttemptEnd, Replay};
use reprise_schema::OutcomeKind;
use serde_json::{json, Value};

/// Where the recorded failure begins in the sketch: the failing thread
/// (baton key) and the ring position of the message it wrote to stderr
/// because it failed (an assertion's, glibc's abort message), the last
/// such write among the system calls that end its events. An attempt that
/// diverged there, in that thread (`expected write() got
/// pthread_mutex_lock`: it went on instead of failing), followed the
/// sketch up to the failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FailurePoint {
    pub(super) thread: u32,
    pub(super) pos: u64,
}

/// The failure point of `replay`'s recorded outcome: None for an exit, a
/// hang or a deadlock, or a failing thread that wrote no message as it
/// failed (a crash: nothing marks where it would have gone on).
pub(super) fn failure_point(replay: &Replay) -> Option<FailurePoint> {
    let o = replay.outcome().ok()?;
    if matches!(
        o.kind,
        OutcomeKind::Exited | OutcomeKind::Deadlock | OutcomeKind::Hang
    ) {
        return None;
    }
    let events = replay.events();
    let mine: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].process == o.process && events[i].thread == o.thread)
        .collect();
    // Its trailing system calls, and among them the last write to stderr:
    // the failure's message (a thread's ordinary output before it is not
    // part of the failure).
    let message = mine
        .iter()
        .rev()
        .take_while(|&&i| events[i].kind == EventKind::Syscall)
        .find(|&&i| events[i].object == libc::SYS_write as u64 && events[i].arg0 == 2)?;
    Some(FailurePoint {
        thread: rp::key(o.process as u32, o.thread),
        pos: *replay.positions().get(*message)?,
    })
}

/// True if the attempt diverged at or after the recorded failure, in the
/// failing thread: it followed the sketch there and did not fail.
fn reached_failure(r: &Run, failure: Option<FailurePoint>) -> bool {
    failure.is_some_and(|f| {
        matches!(r.result.end, AttemptEnd::Divergence { .. })
            && r.result.diverging_thread == Some(f.thread)
            && r.result.stopped_at >= f.pos
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MissKind {
    /// Every attempt diverged.
    Fidelity,
    /// Every attempt followed the sketch to the recorded failure or to its
    /// end.
    Search,
    /// Some of each.
    Both,
}

impl MissKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            MissKind::Fidelity => "fidelity",
            MissKind::Search => "search",
            MissKind::Both => "both",
        }
    }
}

/// The attempts of a search that did not reproduce, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Miss {
    pub(super) kind: MissKind,
    pub(super) attempts: usize,
    /// Attempts that left the sketch (a divergence), or ended (exit,
    /// crash, time limit) before every recorded event was replayed.
    pub(super) diverged: usize,
    /// Attempts that replayed every recorded event and ended otherwise
    /// than the recording.
    pub(super) followed: usize,
    /// How the first diverging attempt diverged.
    pub(super) first_divergence: Option<String>,
    /// The most common ending of the attempts that followed the sketch,
    /// and how many ended so.
    pub(super) followed_end: Option<(String, usize)>,
}

/// True if the attempt did not follow the whole sketch: it diverged (also
/// past the end of the recording, where the recorded run had stopped), or
/// ended before its last event.
fn diverged(r: &Run) -> bool {
    !r.result.completed || matches!(r.result.end, AttemptEnd::Divergence { .. })
}

/// How an attempt left the sketch, in words.
fn divergence(r: &Run) -> String {
    let res = &r.result;
    match &res.end {
        AttemptEnd::Divergence { reason } => reason.clone(),
        AttemptEnd::Timeout { at } => format!("timed out {at}"),
        AttemptEnd::Outcome(o) => format!(
            "{} after {} events, before the end of the sketch",
            o.summary, res.events_replayed
        ),
    }
}

/// Classifies the attempts (observation and minimisation runs are not
/// attempts) of a search that did not reproduce; None if none ran. An
/// attempt that diverged at `failure` (see [`failure_point`]) counts as one
/// that followed the sketch.
pub(super) fn classify(runs: &[Run], failure: Option<FailurePoint>) -> Option<Miss> {
    let attempts: Vec<&Run> = runs.iter().filter(|r| r.role == Role::Attempt).collect();
    if attempts.is_empty() {
        return None;
    }
    let (left, followed): (Vec<&Run>, Vec<&Run>) = attempts
        .iter()
        .partition(|r| diverged(r) && !reached_failure(r, failure));
    let mut ends: Vec<(String, usize)> = Vec::new();
    for r in &followed {
        let s = r.result.summary();
        match ends.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => ends.push((s, 1)),
        }
    }
    // The most common; the first seen among equals.
    let followed_end = ends
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, n))| (*n, std::cmp::Reverse(*i)))
        .map(|(_, e)| e.clone());
    let kind = match (left.is_empty(), followed.is_empty()) {
        (false, true) => MissKind::Fidelity,
        (true, false) => MissKind::Search,
        _ => MissKind::Both,
    };
    Some(Miss {
        kind,
        attempts: attempts.len(),
        diverged: left.len(),
        followed: followed.len(),
        first_divergence: left.first().map(|r| divergence(r)),
        followed_end,
    })
}

/// `1 attempt`, `2 attempts`.
fn attempts(n: usize) -> String {
    format!("{n} attempt{}", if n == 1 { "" } else { "s" })
}

impl Miss {
    /// One line: the classification and what the attempts did.
    pub(super) fn text(&self) -> String {
        let fidelity = || {
            format!(
                "{} of {} diverged (first: {})",
                self.diverged,
                attempts(self.attempts),
                self.first_divergence.as_deref().unwrap_or("?")
            )
        };
        let search = |what: String| {
            let end = self
                .followed_end
                .as_ref()
                .map_or(String::new(), |(s, k)| format!(" ({k}× {s})"));
            format!("{what} followed the sketch to the recorded failure or its end without failing{end}")
        };
        match self.kind {
            MissKind::Fidelity => format!("fidelity: {}", fidelity()),
            MissKind::Search => format!("search: {}", search(attempts(self.attempts))),
            MissKind::Both => format!(
                "fidelity and search: {}; {}",
                fidelity(),
                search(self.followed.to_string())
            ),
        }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "kind": self.kind.name(),
            "attempts": self.attempts,
            "diverged": self.diverged,
            "followed_whole_sketch": self.followed,
            "first_divergence": self.first_divergence,
            "most_common_end_after_whole_sketch": self.followed_end.as_ref().map(|(s, _)| s),
        })
    }
}

/// `N missed (fidelity n, search m, both k)` over some misses (empty if
/// none).
pub(super) fn counts<'a>(misses: impl Iterator<Item = &'a Miss>) -> String {
    let mut n = [0usize; 3];
    for m in misses {
        n[m.kind as usize] += 1;
    }
    let total: usize = n.iter().sum();
    if total == 0 {
        return String::new();
    }
    format!(
        "{total} missed (fidelity {}, search {}, both {})",
        n[0], n[1], n[2]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reprise_replayer::AttemptResult;
    use reprise_schema::{OutcomeInfo, OutcomeKind};
    use std::time::Duration;

    fn run(role: Role, end: AttemptEnd, completed: bool) -> Run {
        Run {
            attempt: 1,
            role,
            schedule: reprise_replayer::Schedule::base(reprise_replayer::Strategy::Feedback, 0),
            result: AttemptResult {
                end,
                duration: Duration::ZERO,
                seed: 0,
                events_replayed: if completed { 30 } else { 12 },
                completed,
                decisions: 0,
                object_mismatches: 0,
                first_path_change: None,
                output_numbers: 0,
                revocations: 0,
                first_revocation: None,
                observation: None,
                stopped_at: 0,
                diverging_thread: None,
            },
            reproduced: false,
            note: String::new(),
            observed: false,
            output_dir: None,
        }
    }

    fn diverged_at(event: u32) -> AttemptEnd {
        AttemptEnd::Divergence {
            reason: format!(
                "thread 1, event {event}: expected write() got pthread_mutex_lock(0x5555555580a0)"
            ),
        }
    }

    fn exited(code: i32) -> AttemptEnd {
        AttemptEnd::Outcome(Box::new(OutcomeInfo {
            kind: OutcomeKind::Exited,
            exit_code: code,
            summary: format!("exited with status {code}"),
            ..OutcomeInfo::default()
        }))
    }

    #[test]
    fn a_divergence_at_the_failing_threads_failure_is_search() {
        let failure = Some(FailurePoint {
            thread: rp::key(0, 3),
            pos: 1210,
        });
        let at = |thread: u32, pos: u64| {
            let mut r = run(Role::Attempt, diverged_at(pos as u32), false);
            r.result.diverging_thread = Some(rp::key(0, thread));
            r.result.stopped_at = pos;
            r
        };
        // The failing thread went on where it failed in the recording.
        let runs: Vec<Run> = (0..4).map(|_| at(3, 1210)).collect();
        let m = classify(&runs, failure).unwrap();
        assert_eq!((m.kind, m.diverged, m.followed), (MissKind::Search, 0, 4));
        // Another thread, or the failing one before its failure: fidelity.
        let runs = vec![at(2, 1210), at(3, 1100)];
        let m = classify(&runs, failure).unwrap();
        assert_eq!((m.kind, m.diverged), (MissKind::Fidelity, 2));
        // Without a failure point (an exit, a crash) nothing changes.
        let runs = vec![at(3, 1210)];
        assert_eq!(classify(&runs, None).unwrap().kind, MissKind::Fidelity);
    }

    #[test]
    fn every_attempt_diverged_is_fidelity() {
        let mut runs = vec![run(Role::Attempt, diverged_at(864), false)];
        // An observation re-run is no attempt, whatever it did.
        runs.push(run(Role::Observe, exited(0), true));
        runs.extend((0..9).map(|_| run(Role::Attempt, diverged_at(900), false)));
        let m = classify(&runs, None).unwrap();
        assert_eq!(
            (m.kind, m.attempts, m.diverged, m.followed),
            (MissKind::Fidelity, 10, 10, 0)
        );
        assert_eq!(
            m.text(),
            "fidelity: 10 of 10 attempts diverged (first: thread 1, event 864: expected write() got pthread_mutex_lock(0x5555555580a0))"
        );
        assert_eq!(m.to_json()["kind"], "fidelity");
    }

    #[test]
    fn attempts_that_followed_the_whole_sketch_are_search() {
        let mut runs: Vec<Run> = (0..7)
            .map(|_| run(Role::Attempt, exited(0), true))
            .collect();
        runs.extend((0..3).map(|_| run(Role::Attempt, exited(1), true)));
        let m = classify(&runs, None).unwrap();
        assert_eq!((m.kind, m.diverged, m.followed), (MissKind::Search, 0, 10));
        assert_eq!(
            m.text(),
            "search: 10 attempts followed the sketch to the recorded failure or its end without failing (7× exited with status 0)"
        );
        assert_eq!(m.to_json()["followed_whole_sketch"], 10);
    }

    #[test]
    fn an_early_end_or_a_stop_past_the_recording_is_a_divergence() {
        // Exited before the last event; stuck after it (the recorded run
        // stopped there); a time limit before the end.
        let runs = vec![
            run(Role::Attempt, exited(0), false),
            run(
                Role::Attempt,
                AttemptEnd::Divergence {
                    reason: "the recording ends here, but the program did not".into(),
                },
                true,
            ),
            run(
                Role::Attempt,
                AttemptEnd::Timeout {
                    at: "waiting for thread 2, event 9".into(),
                },
                false,
            ),
            run(
                Role::Attempt,
                AttemptEnd::Timeout {
                    at: "past the end of the recording".into(),
                },
                true,
            ),
        ];
        let m = classify(&runs, None).unwrap();
        assert_eq!((m.kind, m.diverged, m.followed), (MissKind::Both, 3, 1));
        assert_eq!(
            m.first_divergence.as_deref(),
            Some("exited with status 0 after 12 events, before the end of the sketch")
        );
        assert_eq!(
            m.text(),
            "fidelity and search: 3 of 4 attempts diverged (first: exited with status 0 after 12 events, before the end of the sketch); 1 followed the sketch to the recorded failure or its end without failing (1× timed out past the end of the recording)"
        );
    }

    #[test]
    fn no_attempt_no_classification_and_counts() {
        assert_eq!(
            classify(&[run(Role::Minimize, exited(0), true)], None),
            None
        );
        let f = classify(&[run(Role::Attempt, diverged_at(3), false)], None).unwrap();
        let s = classify(&[run(Role::Attempt, exited(0), true)], None).unwrap();
        assert_eq!(counts([].iter()), "");
        assert_eq!(
            counts([f.clone(), f, s].iter()),
            "3 missed (fidelity 2, search 1, both 0)"
        );
    }
}
