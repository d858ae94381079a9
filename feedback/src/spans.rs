//! Long stretches: a thread that made no event while the other threads
//! made many was, in the recorded run, most likely descheduled somewhere
//! inside that stretch of code — the classic way an atomicity violation
//! happens in production (a thread preempted between reading a list head
//! and writing it back, between checking a flag and acting on it).
//!
//! A replay runs a stretch in one go (the baton), so what the thread did
//! after it resumed happened, in the recording, next to what the other
//! threads did near the end of the stretch — where its next event came.
//! A race between an access `x` of such a stretch (not its first racing
//! one) and another thread's access `y` made near that end is a flip that
//! splits the stretch the way the recording did: on the eager base, where
//! the stretch ran early, `x`'s thread held at `x` until `y`; on the lazy
//! base, where it ran late, `y`'s thread held at `y` until `x`. Ranked by
//! distance from the focus alone, those races sit far from a failure that
//! came later (the check that found the damage), behind the races of the
//! check itself, and a node keeps one race per pair of instructions: the
//! instance nearest the focus, often one past the failure.
//!
//! Measured (2026-12-05, `feedback`, 10 attempts, the 92 traces of three
//! evaluations): uros_377 from one trace and hami_269 from
//! two reproduced that missed before, glibc_19329 from one no longer (its
//! flip, found in attempt 9–10 before, comes after this one), five
//! programs one or two attempts sooner, httpd_21287 later (9 instead of 4).

use std::collections::HashMap;

use reprise_abi::replay as rp;
use reprise_replayer::order::SketchOrder;

use crate::races::Race;

/// Other threads' events within a stretch from which it counts as long...
pub const LONG_SPAN: usize = 16;
/// ...when that is also this many times its thread's median stretch: a
/// thread whose every stretch is long (it computes a lot between events)
/// was not descheduled in one of them in particular.
const LONG_VS_MEDIAN: usize = 4;
/// The rank of a race whose second access came right at the end of a long
/// stretch of the first one's thread (plus the ring positions left to it):
/// with the races nearest the focus, and ahead of them at the same rank.
const SCORE_SPAN: u64 = 0;
/// Races ranked this way per long stretch: the one whose second access is
/// the latest, and at one place the one that changes what a thread reads
/// first. (Three per stretch pushed a trace's races at the focus past the
/// attempts the budget leaves: uros_377 kept reproducing only with one.)
const PER_SPAN: usize = 1;

/// Per long stretch (its thread, the ring position of its end): each
/// race's ring positions left before that end, its rank, its index.
type Candidates = Vec<(u64, u64, usize)>;

/// How many events of threads other than `key` the sketch has strictly
/// between ring positions `from` and `to`.
fn others_between(events: &SketchOrder, key: u32, from: u64, to: u64) -> usize {
    events
        .threads()
        .filter(|&k| k != key)
        .map(|k| {
            let v = events.thread_events(k);
            let lo = v.partition_point(|&p| p <= from);
            let hi = v.partition_point(|&p| p < to);
            hi.saturating_sub(lo)
        })
        .sum()
}

/// The other threads' events in each stretch of thread `key` (between
/// two consecutive events of its own), in order.
fn spans_of(events: &SketchOrder, key: u32) -> Vec<usize> {
    events
        .thread_events(key)
        .windows(2)
        .map(|w| others_between(events, key, w[0], w[1]))
        .collect()
}

/// The span from which a stretch of thread `key` counts as long.
fn long_span(events: &SketchOrder, key: u32) -> usize {
    let mut spans = spans_of(events, key);
    if spans.is_empty() {
        return LONG_SPAN;
    }
    spans.sort_unstable();
    LONG_SPAN.max(spans[spans.len() / 2] * LONG_VS_MEDIAN)
}

/// Ranks up to `PER_SPAN` races per long stretch and role of the
/// stretch's access (held, or waited for): those whose other access came
/// last before the stretch's thread's next recorded event. The stretch's
/// first racing access is no split
/// point: holding its thread there runs all the stretch that others can
/// see late, as the in-order base already does.
pub fn rank_long_spans(races: &mut [Race], events: &SketchOrder) {
    // Per (thread, stretch): the log index of its first racing access.
    let mut first_racing: HashMap<(u32, u64), usize> = HashMap::new();
    for o in races.iter().flat_map(|r| [&r.first, &r.second]) {
        let at = first_racing
            .entry((o.access.key, o.access.last_event))
            .or_insert(o.index);
        *at = (*at).min(o.index);
    }
    let mut best: HashMap<(u32, u64, bool), Candidates> = HashMap::new();
    let mut long: HashMap<u32, usize> = HashMap::new();
    for (i, r) in races.iter().enumerate() {
        if r.delay || r.is_move() || r.until_fork != 0 || r.first.access.key == r.second.access.key
        {
            continue;
        }
        // The long stretch's thread made the first access (the flip holds
        // it there until the other thread's access near the stretch's
        // end), or the second (the flip holds the other thread's access,
        // made near the end, until it: into the stretch).
        for long_first in [true, false] {
            let (s, o) = if long_first {
                (&r.first, &r.second)
            } else {
                (&r.second, &r.first)
            };
            let (x, y) = (&s.access, &o.access);
            if first_racing.get(&(x.key, x.last_event)) >= Some(&s.index) {
                continue;
            }
            let next = events.next_event(x);
            if next == u64::MAX || y.turn > next {
                continue;
            }
            let from = x.last_event.saturating_sub(1);
            let threshold = *long
                .entry(x.key)
                .or_insert_with(|| long_span(events, x.key));
            if others_between(events, x.key, from, next) < threshold {
                continue;
            }
            let left = next - y.turn;
            best.entry((x.key, next, long_first))
                .or_default()
                .push((left, r.score, i));
        }
    }
    for (span, mut v) in best {
        v.sort_unstable();
        if std::env::var_os("REPRISE_DEBUG_RACES").is_some() {
            let (thread, end) = (rp::key_thread(span.0), span.1);
            let _ = span.2;
            eprintln!(
                "long stretch of t{thread} ending at {end}: {} race(s)",
                v.len()
            );
        }
        for &(left, _, i) in v.iter().take(PER_SPAN) {
            races[i].score = races[i].score.min(SCORE_SPAN + left);
            races[i].span = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use reprise_abi::observe::{Access, ACCESS_WRITE};

    use super::*;
    use crate::races::Occurrence;

    fn occ(key: u32, write: bool, turn: u64, last_event: u64, index: usize) -> Occurrence {
        Occurrence {
            access: Access {
                key,
                pc: 0x10 + index as u64,
                addr: 0x4000,
                size: 8,
                flags: if write { ACCESS_WRITE } else { 0 },
                turn,
                last_event,
                ..Access::default()
            },
            n: 1,
            index,
        }
    }

    fn race(x: Occurrence, y: Occurrence, score: u64) -> Race {
        Race {
            first: x,
            second: y,
            distance: score,
            score,
            until_fork: 0,
            delay: false,
            standing: false,
            extra: [None; 2],
            span: false,
        }
    }

    /// Thread 2 has events at 0 and `end`, then three in a row; thread 1
    /// one at each position in between.
    fn order(end: u64) -> SketchOrder {
        let mut events = HashMap::new();
        events.insert(2, vec![0, end, end + 1, end + 2, end + 3]);
        events.insert(1, (1..end).collect());
        SketchOrder::from_positions(events)
    }

    #[test]
    fn races_at_the_end_of_a_long_stretch_rank_near_the_focus() {
        let events = order(40);
        // Thread 2 reads a list head, then writes it, right after its
        // event at 0 (last_event 1); thread 1's accesses early and late in
        // the stretch.
        let read = occ(2, false, 1, 1, 0);
        let write = occ(2, true, 1, 1, 1);
        let mut races = vec![race(read, occ(1, true, 2, 2, 7), 50)];
        for (i, (turn, score)) in [(5, 500), (38, 400), (39, 300), (37, 450), (36, 460)]
            .into_iter()
            .enumerate()
        {
            races.push(race(write, occ(1, false, turn, turn, 2 + i), score));
        }
        rank_long_spans(&mut races, &events);
        let scores: Vec<u64> = races.iter().map(|r| r.score).collect();
        // The read (thread 2's first racing access) is not split at; of
        // the write's races, the latest ranks by the positions left before
        // thread 2's next event.
        assert_eq!(scores, [50, 500, 400, 1, 450, 460]);
        let spans: Vec<bool> = races.iter().map(|r| r.span).collect();
        assert_eq!(spans, [false, false, false, true, false, false]);
    }

    #[test]
    fn on_the_lazy_base_the_other_threads_late_access_is_moved_into_the_stretch() {
        let events = order(40);
        // Thread 2's stretch ran late (turn 39): its read, then its write;
        // thread 1's write early and late in the span came before them.
        let read = occ(2, false, 39, 1, 10);
        let write = occ(2, true, 39, 1, 11);
        let mut races = vec![
            race(occ(1, true, 38, 38, 3), read, 40),
            race(occ(1, false, 5, 5, 1), write, 300),
            race(occ(1, false, 37, 37, 2), write, 200),
        ];
        rank_long_spans(&mut races, &events);
        let scores: Vec<u64> = races.iter().map(|r| r.score).collect();
        // Not at the read (thread 2's first racing access); at the write,
        // thread 1's latest access held until it.
        assert_eq!(scores, [40, 300, 3]);
        assert!(races[2].span);
    }

    #[test]
    fn a_thread_whose_every_stretch_is_long_is_not_split() {
        // Thread 2's events every 20 positions, thread 1's in between.
        let mut events = HashMap::new();
        events.insert(2, (0..10).map(|i| i * 20).collect());
        events.insert(1, (0..180).filter(|p| p % 20 != 0).collect());
        let events = SketchOrder::from_positions(events);
        let (read, write) = (occ(2, false, 1, 1, 0), occ(2, true, 1, 1, 1));
        let mut races = vec![
            race(read, occ(1, true, 2, 2, 3), 50),
            race(write, occ(1, false, 19, 19, 2), 300),
        ];
        rank_long_spans(&mut races, &events);
        assert_eq!(races[1].score, 300);
    }

    #[test]
    fn the_first_access_of_a_stretch_and_a_short_stretch_keep_their_ranks() {
        let read = occ(2, false, 1, 1, 0);
        let late = occ(1, true, 39, 39, 1);
        let mut races = vec![race(read, late, 300)];
        rank_long_spans(&mut races, &order(40));
        assert_eq!(races[0].score, 300);
        let (read, write) = (occ(2, false, 1, 1, 0), occ(2, true, 1, 1, 1));
        let mut races = vec![
            race(read, occ(1, true, 2, 2, 3), 50),
            race(write, occ(1, false, 9, 9, 2), 300),
        ];
        rank_long_spans(&mut races, &order(10));
        assert_eq!(races[1].score, 300);
    }
}
