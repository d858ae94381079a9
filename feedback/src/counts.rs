//! Count-matched delays: how many iterations of a polling loop saw a flag
//! in its stale state, read off the sketch.
//!
//! A thread that checks an unprotected flag in every iteration of a loop
//! (`if (log.open) { lock; append; unlock }`) makes sketch events only in
//! the iterations that pass the check. In the recorded run another thread
//! cleared the flag for a while and the loop skipped some iterations: the
//! sketch has that many fewer events of the thread, and nothing more says
//! where. A replay runs the thread's iterations between two events in one
//! stretch; when the other thread is parked with the flag cleared, the
//! loop skips every remaining iteration and the thread leaves the sketch
//! (`expected pthread_mutex_lock, got thread_exit`).
//!
//! The number of iterations to skip follows from the counts: the thread's
//! recorded events from where it left the sketch (`E`), the events one
//! passing iteration makes (`k`, measured on the run's earlier iterations,
//! from a passing read of the flag to the next read; or, when none passed,
//! the period of the thread's recorded events still to come), and the
//! reads of the flag in its last stretch (`n`, every one skipped).
//! Exactly `E / k` of those must pass, the last ones: the read number
//! `n - E / k` of the stretch is delayed until another thread writes the
//! flag (the first, when none may skip: the thread ran on past the other
//! thread's second step, which the sketch put before its next read). A
//! delay at the nearest read, or at the first one of the stretch, skips
//! too many or too few iterations, and the run leaves the sketch at the
//! thread's last event instead.

use std::collections::HashMap;

use reprise_replayer::accesses::is_write;

use crate::races::{Focus, Occurrence, Race, SketchOrder};

/// Earlier passing reads looked at to measure the events an iteration
/// makes.
const PASSING_READS: usize = 8;

/// The count-matched delay of the thread at the focus, if its last
/// stretch is a run of same-valued reads of one instruction that earlier,
/// with another value, let it make a regular number of events each.
pub fn count_delay(occ: &[Occurrence], focus: Focus, events: &SketchOrder) -> Option<Race> {
    let me = focus.thread?;
    let mine = events.thread_events(me);
    let last = occ
        .iter()
        .rev()
        .find(|o| o.access.key == me)?
        .access
        .last_event;
    // The thread's events made before an access (its last_event is the
    // ring position of its last event + 1).
    let done = |o: &Occurrence| mine.partition_point(|&p| p < o.access.last_event);
    // Its recorded events from the one it did not make on.
    let expected = (mine.len() - mine.partition_point(|&p| p < focus.pos)) as u64;
    // The reads of its last stretch, per instruction.
    let mut stretch: HashMap<u64, Vec<&Occurrence>> = HashMap::new();
    for o in occ {
        let a = &o.access;
        if a.key == me && a.last_event == last && !is_write(a) {
            stretch.entry(a.pc).or_default().push(o);
        }
    }
    let mut pcs: Vec<(u64, Vec<&Occurrence>)> = stretch.into_iter().collect();
    pcs.sort_by_key(|(pc, reads)| (std::cmp::Reverse(reads.len()), *pc));
    for (pc, reads) in pcs {
        let n = reads.len() as u64;
        let stale = reads[0].access.after;
        if n < 2 || reads.iter().any(|o| o.access.after != stale) {
            continue;
        }
        let addr = reads[0].access.addr;
        // The events from each of the thread's earlier reads of that flag
        // that saw it otherwise to its next read of it (the first stale
        // one after the last): one iteration's worth, the same each time.
        // A stretch after a single passing iteration measures it too.
        let checks: Vec<&Occurrence> = occ
            .iter()
            .filter(|o| o.access.key == me && o.access.pc == pc)
            .collect();
        let passing: Vec<usize> = checks
            .windows(2)
            .filter(|w| w[0].access.last_event < last && w[0].access.after != stale)
            .map(|w| done(w[1]) - done(w[0]))
            .collect();
        let steps = &passing[passing.len().saturating_sub(PASSING_READS)..];
        let pass = match steps.last() {
            Some(&k) if k == 0 || steps.iter().any(|&s| s != k) => continue,
            Some(&k) => expected / k as u64,
            // No iteration passed before the stretch in this run (the flag
            // was stale from the loop's first read): the recorded events
            // still to come, when they repeat, are the passing iterations.
            None => {
                let from = mine.len() - expected as usize;
                match events.thread_shapes(me).get(from..).and_then(repeats) {
                    Some(n) => n,
                    None => continue,
                }
            }
        };
        if pass == 0 || pass > n {
            continue;
        }
        // Another thread must write the flag for the delay to end: it
        // wrote it in this run (the stale value, when the run stopped
        // while it was held before it could write it back), and the flag
        // had another value in this run (a loop bound read in every
        // iteration, written once before, is no flag).
        let here = |o: &&Occurrence| o.access.addr == addr;
        let rewritten = occ
            .iter()
            .filter(here)
            .any(|o| o.access.key != me && is_write(&o.access))
            && occ.iter().filter(here).any(|o| o.access.after != stale);
        if !rewritten {
            continue;
        }
        let held = *reads[(n - pass) as usize];
        return Some(Race {
            first: held,
            second: held,
            distance: 0,
            score: 0,
            until_fork: 0,
            delay: true,
            standing: true,
            extra: [None; 3],
            span: false,
        });
    }
    None
}

/// Longest period of the events of one passing iteration.
const MAX_PERIOD: usize = 8;

/// How many times the events at the front of `shapes` repeat one pattern
/// (of at most [`MAX_PERIOD`] events, at least twice), all but its last
/// event (how the thread ended): the passing iterations among them. None
/// if they do not.
fn repeats(shapes: &[(reprise_abi::EventKind, u64)]) -> Option<u64> {
    let body = &shapes[..shapes.len().saturating_sub(1)];
    (1..=MAX_PERIOD).find_map(|p| {
        let whole = body.len() / p * p;
        (whole >= 2 * p && (p..whole).all(|i| body[i] == body[i - p])).then_some((whole / p) as u64)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use reprise_abi::observe::{Access, ACCESS_READ, ACCESS_WRITE};

    use super::*;

    const T: u32 = 1;
    const U: u32 = 2;
    const FLAG: u64 = 0x4080;
    const CHECK: u64 = 0x12b3;

    /// T's read of the flag (value `open`) after its event at ring
    /// position `last` (none: 0).
    fn check(open: u64, last: u64) -> Access {
        Access {
            key: T,
            flags: ACCESS_READ,
            size: 4,
            pc: CHECK,
            addr: FLAG,
            after: open,
            before: open,
            turn: last + 1,
            last_event: if last == 0 { 0 } else { last + 1 },
            ..Access::default()
        }
    }

    /// Thread `key`'s write of the flag at `pc`, from `before` to `after`,
    /// its `turn` and `last_event` both `last`.
    fn flag_write(key: u32, pc: u64, before: u64, after: u64, last: u64) -> Access {
        Access {
            key,
            flags: ACCESS_WRITE,
            size: 4,
            pc,
            addr: FLAG,
            before,
            after,
            turn: last,
            last_event: last,
            ..Access::default()
        }
    }

    /// The log's accesses, each numbered among its instruction's.
    fn numbered(log: &[Access]) -> Vec<Occurrence> {
        log.iter()
            .enumerate()
            .map(|(index, a)| Occurrence {
                access: *a,
                n: log[..=index].iter().filter(|b| b.pc == a.pc).count() as u32,
                k: 1,
                index,
            })
            .collect()
    }

    /// A loop that checks the flag in every iteration and, when it is set,
    /// makes two events (lock, unlock: T's events at 10, 11, 12, 13, ...).
    /// Recorded: 4 passing iterations, 3 skipped ones while U had the flag
    /// cleared, then 3 passing ones. The replay ran T's iterations after
    /// its 4th passing one with the flag still cleared: 6 reads of 0.
    fn polling_run() -> (Vec<Occurrence>, SketchOrder) {
        let t_events: Vec<u64> = (0..7).flat_map(|i| [10 + 4 * i, 11 + 4 * i]).collect();
        let mut log = vec![check(1, 0)];
        for i in 0..3 {
            log.push(check(1, t_events[2 * i + 1]));
        }
        let stretch = t_events[7];
        log.extend((0..6).map(|_| check(0, stretch)));
        // U sets the flag again (at its event 30 in the recording).
        log.push(flag_write(U, 0x1246, 0, 1, 31));
        let occ = numbered(&log);
        let order = SketchOrder::from_positions(HashMap::from([(T, t_events), (U, vec![29, 30])]));
        (occ, order)
    }

    #[test]
    fn the_delay_leaves_as_many_passing_iterations_as_the_sketch_has_events() {
        let (occ, order) = polling_run();
        // T left the sketch at its 9th event (ring position 26): 6 events
        // (3 passing iterations) were still to come.
        let focus = Focus {
            pos: 26,
            thread: Some(T),
        };
        let d = count_delay(&occ, focus, &order).expect("a count-matched delay");
        assert!(d.delay);
        // Of the 6 reads of the stretch, the first 3 skip: the 4th (the
        // 8th check of the run) waits for U's write.
        assert_eq!((d.first.access.pc, d.first.n), (CHECK, 8));
    }

    /// The replay ran T's loop from its first iteration with the flag
    /// already cleared by U (U held inside its update, which it did not
    /// finish): one passing iteration, then `stale` reads of 0, and U's
    /// only write there is the clearing one.
    fn skipped_after_one_pass(stale: usize) -> (Vec<Occurrence>, SketchOrder) {
        let t_events: Vec<u64> = (0..7).flat_map(|i| [10 + 4 * i, 11 + 4 * i]).collect();
        let mut log = vec![flag_write(U, 0x1243, 1, 0, 12)];
        log.push(check(1, 0));
        log.extend((0..stale).map(|_| check(0, t_events[1])));
        let occ = numbered(&log);
        let order = SketchOrder::from_positions(HashMap::from([(T, t_events), (U, vec![11, 29])]));
        (occ, order)
    }

    #[test]
    fn one_passing_iteration_measures_the_events_of_an_iteration() {
        let (occ, order) = skipped_after_one_pass(9);
        // T left the sketch at its 3rd event: 12 events (6 passing
        // iterations) were still to come, of 9 reads in its stretch.
        let focus = Focus {
            pos: 14,
            thread: Some(T),
        };
        let d = count_delay(&occ, focus, &order).expect("a count-matched delay");
        assert!(d.delay && d.standing);
        // 3 of the stretch's reads skip: the 4th (the 5th check of the
        // run) waits for U's next write, the one U was held before.
        assert_eq!((d.first.access.pc, d.first.n), (CHECK, 5));
    }

    #[test]
    fn with_no_iteration_left_to_skip_the_first_stale_read_waits() {
        // 6 reads in the stretch, 6 passing iterations still to come: the
        // loop skipped none here (the recorded run lost its statement
        // another way); the first read waits for U's write.
        let (occ, order) = skipped_after_one_pass(6);
        let focus = Focus {
            pos: 14,
            thread: Some(T),
        };
        let d = count_delay(&occ, focus, &order).expect("a count-matched delay");
        assert_eq!((d.first.access.pc, d.first.n), (CHECK, 2));
    }

    #[test]
    fn without_a_passing_iteration_the_sketchs_repeating_events_count_them() {
        use reprise_abi::EventKind::{MutexLock, MutexUnlock, ThreadExit};
        let (mut occ, order) = skipped_after_one_pass(9);
        // No passing check: the flag was stale from the loop's first read.
        occ.retain(|o| o.access.after == 0);
        let t_events = order.thread_events(T).to_vec();
        // T's recorded events: 6 iterations of lock and unlock, then its
        // exit (at positions 10..=22, 34).
        let mut positions: Vec<u64> = t_events[..12].to_vec();
        positions.push(34);
        let mut shapes: Vec<_> = (0..6)
            .flat_map(|_| [(MutexLock, 0x80), (MutexUnlock, 0x80)])
            .collect();
        shapes.push((ThreadExit, 0));
        let order = SketchOrder::from_shapes(
            HashMap::from([(T, positions), (U, vec![11, 29])]),
            HashMap::from([(T, shapes)]),
        );
        // U cleared a flag main had set (the value another write left).
        occ.push(Occurrence {
            access: flag_write(3, 0x1500, 0, 1, 1),
            n: 1,
            k: 1,
            index: occ.len(),
        });
        // T left the sketch at its first event: all 6 iterations pass, of
        // the 9 stale reads: the 4th waits (the 5th check: the passing one
        // dropped kept its number).
        let focus = Focus {
            pos: 10,
            thread: Some(T),
        };
        let d = count_delay(&occ, focus, &order).expect("a count-matched delay");
        assert_eq!((d.first.access.pc, d.first.n), (CHECK, 5));
        // A value read in every iteration that no write ever changed (a
        // loop bound) is not a flag to wait on.
        occ.retain(|o| o.access.key != 3);
        assert!(count_delay(&occ, focus, &order).is_none());
    }

    #[test]
    fn no_delay_when_the_counts_do_not_fit() {
        let (occ, order) = polling_run();
        // All 7 remaining passing iterations would need more reads than
        // the stretch has.
        let focus = Focus {
            pos: 0,
            thread: Some(T),
        };
        assert!(count_delay(&occ, focus, &order).is_none());
        // Without U's write, nothing would end the delay.
        let without: Vec<Occurrence> = occ.iter().filter(|o| o.access.key == T).copied().collect();
        let focus = Focus {
            pos: 26,
            thread: Some(T),
        };
        assert!(count_delay(&without, focus, &order).is_none());
    }
}
