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

use reprise_abi::observe::Access;
use reprise_replayer::accesses::{is_write, overlap};

use crate::moves::points_at;
use crate::races::{can_come_before, Focus, Occurrence, Race};

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
/// Split read-modify-writes tried per long stretch (see [`stale_updates`]).
const STALE_PER_SPAN: usize = 2;
/// ...and in all, nearest the focus first.
const STALE_MAX: usize = 2;
/// The thread's accesses between a read and its write looked at for one
/// that the read's value points to.
const POINTED_SCAN: usize = 64;
/// A thread with at most this many events is measured against
/// `LONG_SPAN` alone by [`stale_updates`].
const FEW_STRETCHES: usize = 3;

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

/// Each thread's longest stretch, if it counts as long (see
/// [`long_span`]): the thread and the other threads' events in it, the
/// longest first. What a `sync` or `sys` sketch leaves unsaid is where
/// inside such a stretch its thread lost the CPU.
pub fn longest_stretches(events: &SketchOrder) -> Vec<(u32, usize)> {
    let mut out: Vec<(u32, usize)> = events
        .threads()
        .filter_map(|k| {
            let longest = spans_of(events, k).into_iter().max()?;
            (longest >= stretch_threshold(events, k)).then_some((k, longest))
        })
        .collect();
    out.sort_by_key(|&(k, n)| (std::cmp::Reverse(n), k));
    out
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

/// Read-modify-writes split across a long stretch: a thread that read a
/// place early in the stretch, was descheduled, and wrote it back late
/// wrote a value computed from a stale read. Two threads popping one free
/// list (`s = head; ...; head = s->next`) take the same element when the
/// descheduled one read the head the other then popped, and wrote it back
/// after that pop. The replay runs the stretch in one go, early or late;
/// these races split it at the other thread's last read-modify-write of
/// the place before the stretch's recorded end (its read `yr`, its write
/// `yw`): the stretch's read `r` waits for the write `yr` read (so both
/// read one value), `yw` waits for `r`, and the stretch's write `x` for
/// `yw`. Found here and not among the races, which keep only swaps that
/// change a value: a pop that wrote back what the other pop wrote leaves
/// the head as it was, the damage being who holds what both reads
/// returned. Only reads of a pointer the thread follows (the element
/// taken); up to `STALE_PER_SPAN` per stretch, `STALE_MAX` in all.
pub fn stale_updates(occ: &[Occurrence], focus: Focus, events: &SketchOrder) -> Vec<Race> {
    // The last read of each (thread, place): its stretch and log index.
    let mut read_in: HashMap<(u32, u64), (u64, usize)> = HashMap::new();
    let mut long: HashMap<u32, usize> = HashMap::new();
    // (the stretch's end, the write's log index, its read's).
    let mut candidates: Vec<(u64, usize, usize)> = Vec::new();
    for (i, o) in occ.iter().enumerate() {
        let x = &o.access;
        if !is_write(x) {
            read_in.insert((x.key, x.addr), (x.last_event, i));
            continue;
        }
        let Some((stretch, ri)) = read_in.remove(&(x.key, x.addr)) else {
            continue;
        };
        let next = events.next_event(x);
        if stretch != x.last_event
            || next == u64::MAX
            || next > focus.pos
            || !is_long(events, x, next, &mut long)
        {
            continue;
        }
        // Only a read of a pointer the thread then follows before its
        // write (the element a pop takes): a stale count is a lost
        // update, split elsewhere.
        let follows = occ[ri + 1..i]
            .iter()
            .filter(|o| o.access.key == x.key)
            .take(POINTED_SCAN)
            .any(|o| points_at(occ[ri].access.after, o.access.addr));
        if follows {
            candidates.push((next, i, ri));
        }
    }
    // The stretches that ended nearest the focus first (stable: in
    // program order within one), each split looked up only until
    // `STALE_MAX` are found (a lookup scans the log).
    candidates.sort_by_key(|&(next, _, _)| focus.pos - next);
    let mut per_span: HashMap<(u32, u64), usize> = HashMap::new();
    let mut out = Vec::new();
    for (next, i, ri) in candidates {
        if out.len() >= STALE_MAX {
            break;
        }
        let taken = per_span.entry((occ[i].access.key, next)).or_default();
        if *taken >= STALE_PER_SPAN {
            continue;
        }
        if let Some(race) = split_at_last_update(occ, i, ri, next, events) {
            *taken += 1;
            out.push(race);
        }
    }
    // Ranked with the races at the focus, ahead of them: a long stretch
    // around a read-modify-write that other threads also made is how
    // the recording most likely went.
    for (rank, r) in out.iter_mut().enumerate() {
        r.score = SCORE_SPAN + rank as u64;
    }
    if std::env::var_os("REPRISE_DEBUG_RACES").is_some() {
        for r in &out {
            eprintln!(
                "stale update: t{} {:#x}#{} held until t{} {:#x}#{}, {} more hold(s)",
                rp::key_thread(r.first.access.key),
                r.first.access.pc,
                r.first.n,
                rp::key_thread(r.second.access.key),
                r.second.access.pc,
                r.second.n,
                r.extra.iter().flatten().count()
            );
        }
    }
    out
}

/// True if the stretch of `x` (up to its thread's event at `next`) is a
/// long one. A thread of a few stretches has no habit to measure it
/// against (a late-started thread: one long stretch, then a short one).
fn is_long(events: &SketchOrder, x: &Access, next: u64, cache: &mut HashMap<u32, usize>) -> bool {
    let threshold = *cache
        .entry(x.key)
        .or_insert_with(|| stretch_threshold(events, x.key));
    others_between(events, x.key, x.last_event.saturating_sub(1), next) >= threshold
}

/// The span from which a stretch of thread `key` counts as long for
/// [`stale_updates`] and [`longest_stretches`]: [`long_span`], or
/// `LONG_SPAN` alone for a thread with few events.
fn stretch_threshold(events: &SketchOrder, key: u32) -> usize {
    if events.thread_events(key).len() <= FEW_STRETCHES {
        LONG_SPAN
    } else {
        long_span(events, key)
    }
}

/// The split of the read-modify-write `occ[ri]`..`occ[xi]` (a long
/// stretch ending at `next`) at the other threads' last write `yw` to the
/// place before that end (see [`stale_updates`]), if the sketch allows its
/// holds.
fn split_at_last_update(
    occ: &[Occurrence],
    xi: usize,
    ri: usize,
    next: u64,
    events: &SketchOrder,
) -> Option<Race> {
    let (x, r) = (&occ[xi].access, occ[ri]);
    let others = |a: &Access| {
        a.key != x.key && rp::key_process(a.key) == rp::key_process(x.key) && overlap(a, x)
    };
    let yw = occ.iter().rposition(|y| {
        let a = &y.access;
        others(a) && is_write(a) && events.next_event(a) <= next
    })?;
    let writer = occ[yw].access;
    // Its read in the same stretch, and the write that read saw.
    let yr = (0..yw).rev().find(|&j| {
        let a = &occ[j].access;
        a.key == writer.key && a.last_event == writer.last_event && !is_write(a) && overlap(a, x)
    });
    let seen = yr.and_then(|yr| {
        (0..yr)
            .rev()
            .find(|&j| is_write(&occ[j].access) && overlap(&occ[j].access, x))
    });
    let legal = |held: &Occurrence, until: &Occurrence| {
        can_come_before(&until.access, events.next_event(&held.access))
    };
    let mut extra: Vec<(Occurrence, Occurrence)> = Vec::new();
    // The stretch's read sees what the other thread's read saw...
    if let Some(w0) = seen.filter(|&w0| occ[w0].access.key != x.key) {
        legal(&r, &occ[w0]).then_some(())?;
        extra.push((r, occ[w0]));
    }
    // ...before the other thread writes.
    legal(&occ[yw], &r).then_some(())?;
    extra.push((occ[yw], r));
    legal(&occ[xi], &occ[yw]).then_some(())?;
    // A stretch that ran early, whose read saw the same write anyway and
    // whose write came after `yw` anyway, needs no split.
    if xi > yw && extra.iter().all(|(h, u)| h.index > u.index) {
        return None;
    }
    Some(Race {
        first: occ[xi],
        second: occ[yw],
        distance: next - writer.turn,
        score: SCORE_SPAN + (next - writer.turn),
        until_fork: 0,
        delay: false,
        standing: false,
        extra: [extra.first().copied(), extra.get(1).copied(), None],
        span: true,
    })
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
            k: 1,
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
            extra: [None; 3],
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
    fn the_longest_stretch_of_each_thread_that_counts_as_long() {
        // Thread 2: events at 0, 40, 41, 42, 43 (a stretch of 39 of thread
        // 1's events, then short ones); thread 1: one at each position
        // between, none long.
        let events = order(40);
        assert_eq!(longest_stretches(&events), vec![(2, 39)]);
        let mut few = HashMap::new();
        few.insert(2, vec![0, 5]);
        few.insert(1, vec![1, 2, 3]);
        assert!(longest_stretches(&SketchOrder::from_positions(few)).is_empty());
    }

    fn at_focus(pos: u64) -> Focus {
        Focus {
            pos,
            thread: Some(2),
        }
    }

    /// Thread 2 pops the head early in its long stretch (read, write);
    /// thread 1 pushes an element and pops it back late in that stretch.
    fn pop_and_late_pop() -> Vec<Occurrence> {
        const ELEMENT: u64 = 0x9000;
        let mut r = occ(2, false, 1, 1, 0);
        r.access.after = ELEMENT;
        let mut next = occ(2, false, 1, 1, 1);
        next.access.addr = ELEMENT;
        vec![
            r,                        // r: the head
            next,                     // the element's `next` field
            occ(2, true, 1, 1, 2),    // x
            occ(1, true, 30, 30, 3),  // thread 1's push (what its pop reads)
            occ(1, false, 31, 31, 4), // thread 1's pop: read...
            occ(1, true, 31, 31, 5),  // ...and write (yw)
        ]
    }

    #[test]
    fn a_pop_in_a_long_stretch_is_split_around_the_other_threads_last_pop() {
        let races = stale_updates(&pop_and_late_pop(), at_focus(45), &order(40));
        let r = races.first().expect("a split");
        // Thread 2's write waits for thread 1's pop write...
        assert_eq!((r.first.index, r.second.index), (2, 5));
        assert!(r.span);
        // ...its read for thread 1's push (both pops read one element),
        // and thread 1's pop write for that read.
        assert_eq!(r.extra_holds(), vec![(0, 3), (5, 0)]);
        assert_eq!(r.flips(false).len(), 3);
    }

    #[test]
    fn a_count_read_and_written_back_is_no_pop_to_split() {
        // The head's value is no pointer the thread follows: a counter.
        let mut log = pop_and_late_pop();
        log[0].access.after = 7;
        assert!(stale_updates(&log, at_focus(45), &order(40)).is_empty());
    }

    #[test]
    fn no_split_in_a_short_stretch_or_one_that_ends_after_the_focus() {
        // Thread 2's next event at 10: nine events of thread 1 in between.
        let mut log = pop_and_late_pop();
        for o in log.iter_mut().filter(|o| o.access.key == 1) {
            o.access.turn = 5;
            o.access.last_event = 5;
        }
        assert!(stale_updates(&log, at_focus(45), &order(10)).is_empty());
        // A failure before the stretch ended: the stretch is not its cause.
        assert!(stale_updates(&pop_and_late_pop(), at_focus(20), &order(40)).is_empty());
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
