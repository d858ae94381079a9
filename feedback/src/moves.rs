//! Reads-from moves: two or three flips that together make one read of
//! the failing thread see one given write of another thread.
//!
//! A flip reverses one race. Some failures need a read to see a value that
//! no single reversal gives it: two threads taking the same element off an
//! unlocked free list need the second thread's read of the head to see
//! the first thread's push — after its own push (earlier in its program),
//! and before the first thread's pop (later in that thread's program). A
//! flip that moves the read after the push lets the pop slip in too; one
//! that moves the pop after the read leaves the read seeing its own push.
//! The solver (solver/) finds such schedules by reasoning over the whole
//! run; this is the local form of it, from one observed run:
//!
//! to make read `r` of thread T see write `w` of thread U, the new order
//! is `t < w < r < u`, where `t` is T's last write to the place before `r`
//! and `u` is U's first write there after `w`: U held at `w` until T made
//! `t`, T held at `r` until U made `w` (when `w` came after `r`), U held
//! at `u` until T made `r`; and when T writes the place later in `r`'s
//! stretch (it unlinks what it read) and U reads it between `w` and `u`,
//! T's write waits for U's read: both threads then take `w`'s value, the
//! order no serial run gives (without it T, let go at `r`, unlinks first
//! and U takes the next element). A hold that the run already satisfies
//! costs nothing ("came first anyway"); a write of a third thread in
//! between, or a hold the sketch does not allow, and there is no such move.
//!
//! The reads tried are the failing thread's *address-determining* reads
//! near the point of interest: those whose value is a pointer to memory the
//! thread accessed after them (`s = head; ... s->owner`) — which element a
//! thread took decides what it finds there.

use reprise_abi::replay as rp;
use reprise_replayer::accesses::is_write;

use crate::races::{can_come_before, Focus, Occurrence, Race, SketchOrder};

/// Address-determining reads of the failing thread tried, and its
/// accesses looked at (back from the focus) for them.
const MOVE_READS: usize = 4;
const MOVE_LOOKBACK: usize = 64;
/// Writes of other threads each read is moved to, nearest first.
const MOVE_WRITES: usize = 2;
/// Writes to the read's place looked at on each side of it.
const MOVE_SCAN: usize = 64;
/// The failing thread's accesses after a read looked at for one that the
/// read's value points to, and how far past the pointer they may be (a
/// field of the structure it points to).
const POINTED_SCAN: usize = 64;
const POINTED_SPAN: u64 = 64;
/// The first move's rank, in ring positions of distance: with the nearest
/// plain flips, and before them (see `races`' sort): a read that took
/// another element than recorded decided everything the thread did with
/// it, the accesses near the focus included.
const SCORE_MOVE: u64 = 0;

/// The reads-from moves of an observed run (`occ`, in log order) for the
/// failing thread's address-determining reads before the focus. First the
/// reads that point into the thread's last stretch (where it went another
/// way than recorded), the one that points to its earliest access first;
/// then the others, newest first.
pub fn reads_from_moves(occ: &[Occurrence], focus: Focus, events: &SketchOrder) -> Vec<Race> {
    let Some(me) = focus.thread else {
        return Vec::new();
    };
    let mine: Vec<usize> = (0..occ.len())
        .filter(|&i| occ[i].access.key == me && occ[i].access.turn <= focus.pos)
        .collect();
    let Some(&last) = mine.last() else {
        return Vec::new();
    };
    let stretch = occ[last].access.last_event;
    // (read, the access it points to), log indices.
    let mut reads: Vec<(usize, usize)> = Vec::new();
    for (k, &i) in mine.iter().enumerate().rev().take(MOVE_LOOKBACK) {
        let a = &occ[i].access;
        if is_write(a) {
            continue;
        }
        // The newest read of a pointer only: an older read of the same
        // value (an element reused) did not decide that access.
        if let Some(p) = pointed(occ, &mine[k + 1..], a.after, stretch) {
            if reads.iter().all(|&(_, q)| q != p) {
                reads.push((i, p));
            }
        }
    }
    reads.sort_by_key(|&(i, p)| {
        if occ[p].access.last_event == stretch {
            (0, p as i64)
        } else {
            (1, -(i as i64))
        }
    });
    let mut out = Vec::new();
    for &(i, p) in reads.iter().take(MOVE_READS) {
        for w in other_writes(occ, i) {
            if let Some(mut m) = one_move(occ, i, w, events) {
                // Ranked by the order above, not by distance: the access a
                // read points to is near the focus by construction, and
                // the stretch where it lies depends on the base (an early
                // base runs the check one event earlier than a late one).
                m.distance = occ[p].access.turn.abs_diff(focus.pos);
                m.score = SCORE_MOVE + out.len() as u64;
                out.push(m);
            }
        }
    }
    out
}

/// The first of the thread's later accesses (`later`, log indices) that
/// `value` points at (or just before) — in the last stretch (`stretch`)
/// if one there is —, if it is a pointer to one.
fn pointed(occ: &[Occurrence], later: &[usize], value: u64, stretch: u64) -> Option<usize> {
    let hits = || {
        later
            .iter()
            .take(POINTED_SCAN)
            .copied()
            .filter(move |&j| points_at(value, occ[j].access.addr))
    };
    hits()
        .find(|&j| occ[j].access.last_event == stretch)
        .or_else(|| hits().next())
}

/// True if `o` writes exactly the place read `r` reads.
fn writes_place(o: &Occurrence, r: &Occurrence) -> bool {
    is_write(&o.access) && o.access.addr == r.access.addr && o.access.size == r.access.size
}

/// The writes of other threads (of the read's process) to read `occ[ri]`'s
/// place that wrote another value than it read, on either side of it.
fn other_writes(occ: &[Occurrence], ri: usize) -> Vec<usize> {
    let r = &occ[ri];
    let other = |j: &usize| {
        let w = &occ[*j];
        writes_place(w, r)
            && w.access.key != r.access.key
            && rp::key_process(w.access.key) == rp::key_process(r.access.key)
            && w.access.after != r.access.after
    };
    let before = (0..ri)
        .rev()
        .filter(|j| writes_place(&occ[*j], r))
        .take(MOVE_SCAN);
    let after = (ri + 1..occ.len())
        .filter(|j| writes_place(&occ[*j], r))
        .take(MOVE_SCAN);
    let mut found: Vec<usize> = before.chain(after).filter(other).collect();
    // A value its writer then uses as a pointer first (the element it
    // took, which the read would take too), then the nearest.
    found.sort_by_key(|&j| (!writer_uses(occ, j), j.abs_diff(ri)));
    found.truncate(MOVE_WRITES);
    found
}

/// True if the thread that made write `occ[wi]` accesses memory its value
/// points to afterwards.
fn writer_uses(occ: &[Occurrence], wi: usize) -> bool {
    let w = &occ[wi].access;
    occ[wi + 1..]
        .iter()
        .filter(|o| o.access.key == w.key)
        .take(POINTED_SCAN)
        .any(|o| points_at(w.after, o.access.addr))
}

/// True if `value` is a pointer to `addr` or just before it (a field of
/// the structure it points to); small values are no pointers.
pub(crate) fn points_at(value: u64, addr: u64) -> bool {
    value >= 4096 && (value..value.saturating_add(POINTED_SPAN)).contains(&addr)
}

/// The move that makes read `occ[ri]` see write `occ[wi]` (see the
/// module's comment), if the sketch allows its holds.
fn one_move(occ: &[Occurrence], ri: usize, wi: usize, events: &SketchOrder) -> Option<Race> {
    let (r, w) = (occ[ri], occ[wi]);
    let (me, them) = (r.access.key, w.access.key);
    let place = |j: &usize| writes_place(&occ[*j], &r);
    // T's last write to the place before r; U's first after w.
    let t = (0..ri).rev().find(|j| place(j) && occ[*j].access.key == me);
    let u = (wi + 1..occ.len()).find(|j| place(j) && occ[*j].access.key == them);
    // A third thread's write between w and r stays between them.
    if wi < ri && (wi + 1..ri).any(|j| place(&j) && ![me, them].contains(&occ[j].access.key)) {
        return None;
    }
    // Each hold: (held, until), legal if the sketch lets `until` come
    // before the held thread's next event.
    let hold = |held: Occurrence, until: Occurrence| {
        can_come_before(&until.access, events.next_event(&held.access)).then_some((held, until))
    };
    let after_t = match t {
        Some(t) => Some(hold(w, occ[t])?),
        None => None,
    };
    let before_u = match u {
        Some(u) => Some(hold(occ[u], r)?),
        None => None,
    };
    let wait_w = if wi > ri { Some(hold(r, w)?) } else { None };
    // U's own read of w before u keeps seeing w: T's next write in r's
    // stretch waits for it. Else T, let go at r, runs on to its write
    // first, U's read sees that, and the two threads take the place's
    // value one after the other (an order a plain flip gives) instead of
    // both taking w's (`s = head; ...; head = s->next` run by two threads
    // at once hands one element to both).
    let keep_u_read = match u {
        Some(u) => {
            let v = (wi + 1..u).rev().find(|&j| {
                let o = &occ[j].access;
                o.key == them && !is_write(o) && o.addr == r.access.addr
            });
            // (T's accesses after r, as long as they are in r's stretch.)
            let t_next = (ri + 1..occ.len())
                .filter(|&j| occ[j].access.key == me)
                .take_while(|&j| occ[j].access.last_event == r.access.last_event)
                .find(|j| place(j));
            match (v, t_next) {
                (Some(v), Some(t_next)) => Some(hold(occ[t_next], occ[v])?),
                _ => None,
            }
        }
        None => None,
    };
    // The hold that defines the move is the read's own (it waits for w),
    // else the one that keeps U's next write after the read.
    let (first, second) = wait_w.or(before_u)?;
    let extra: Vec<(Occurrence, Occurrence)> = [after_t, before_u, wait_w, keep_u_read]
        .into_iter()
        .flatten()
        .filter(|&(h, u)| (h.index, u.index) != (first.index, second.index))
        .collect();
    // One hold alone is a plain flip or a delay: `races` has it.
    if extra.is_empty() {
        return None;
    }
    Some(Race {
        first,
        second,
        distance: 0,
        score: 0,
        until_fork: 0,
        delay: false,
        standing: false,
        extra: [
            extra.first().copied(),
            extra.get(1).copied(),
            extra.get(2).copied(),
        ],
        span: false,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use reprise_abi::observe::{Access, ACCESS_READ, ACCESS_WRITE};

    use super::*;

    const T: u32 = 1;
    const U: u32 = 2;
    const HEAD: u64 = 0x1000;
    const A: u64 = 0x5000;
    const B: u64 = 0x6000;

    /// One logged access: thread, write or read, address, value after,
    /// the next event's ring position, the last event's + 1.
    fn acc(key: u32, write: bool, addr: u64, after: u64, turn: u64, last: u64) -> Access {
        Access {
            key,
            flags: if write { ACCESS_WRITE } else { ACCESS_READ },
            size: 8,
            pc: 0x100 + addr % 0x100 + if write { 1 } else { 0 },
            addr,
            after,
            turn,
            last_event: last,
            ..Access::default()
        }
    }

    fn occurrences(log: &[Access]) -> Vec<Occurrence> {
        log.iter()
            .enumerate()
            .map(|(index, a)| Occurrence {
                access: *a,
                n: index as u32 + 1,
                k: 1,
                index,
            })
            .collect()
    }

    /// T pushes A and reads the head back (A), then, in its last stretch,
    /// uses what it took; U then pushes B, takes B (uses it) and unlinks it.
    /// For T's read to see U's push, T must wait for it, and U must not
    /// unlink before T read (and T's own push must come before U's).
    fn free_list(u_last: u64) -> Vec<Occurrence> {
        occurrences(&[
            acc(T, true, HEAD, A, 10, 9),        // 0: t
            acc(T, false, HEAD, A, 10, 9),       // 1: r
            acc(T, false, A + 8, 0, 12, 11),     // 2: what r points to
            acc(U, true, HEAD, B, 13, u_last),   // 3: w
            acc(U, false, HEAD, B, 13, u_last),  // 4
            acc(U, false, B + 8, 0, 13, u_last), // 5: U uses B
            acc(U, true, HEAD, A, 13, u_last),   // 6: u
        ])
    }

    fn order() -> SketchOrder {
        SketchOrder::from_positions(HashMap::from([(T, vec![8, 10, 11]), (U, vec![4, 13])]))
    }

    fn focus() -> Focus {
        Focus {
            pos: 12,
            thread: Some(T),
        }
    }

    #[test]
    fn a_read_is_moved_to_another_threads_write_with_three_holds() {
        let occ = free_list(5);
        let moves = reads_from_moves(&occ, focus(), &order());
        let m = moves.first().expect("a move");
        // The read waits for U's push...
        assert_eq!((m.first.index, m.second.index), (1, 3));
        // ...which waits for T's own push, and U's unlink waits for the read.
        assert_eq!(m.extra_holds(), vec![(3, 0), (6, 1)]);
        assert_eq!(m.flips(false).len(), 3);
    }

    /// T reads the head (A) and unlinks it in one stretch; U pushes B,
    /// reads it back and unlinks it. For both to take B, T's unlink must
    /// also wait until U has read the head: a fourth hold.
    #[test]
    fn the_readers_own_unlink_waits_for_the_other_threads_read() {
        let occ = occurrences(&[
            acc(T, true, HEAD, A, 10, 9),  // 0: t
            acc(T, false, HEAD, A, 10, 9), // 1: r
            acc(T, false, A + 8, 0, 10, 9),
            acc(T, true, HEAD, 0, 10, 9),  // 3: T unlinks what it read
            acc(U, true, HEAD, B, 13, 5),  // 4: w
            acc(U, false, HEAD, B, 13, 5), // 5: U reads its push back
            acc(U, false, B + 8, 0, 13, 5),
            acc(U, true, HEAD, A, 13, 5), // 7: u
        ]);
        let moves = reads_from_moves(&occ, focus(), &order());
        let m = moves.first().expect("a move");
        assert_eq!((m.first.index, m.second.index), (1, 4));
        assert_eq!(m.extra_holds(), vec![(4, 0), (7, 1), (3, 5)]);
        assert_eq!(m.flips(false).len(), 4);
    }

    #[test]
    fn no_move_when_the_sketch_orders_the_write_after_the_read() {
        // U's push comes after an event of U that the sketch orders after
        // T's next event: T cannot wait for it.
        let occ = free_list(12);
        assert!(reads_from_moves(&occ, focus(), &order()).is_empty());
    }

    #[test]
    fn no_move_for_a_read_that_is_no_pointer_the_thread_follows() {
        let mut occ = free_list(5);
        occ[2].access.addr = 0x9000;
        assert!(reads_from_moves(&occ, focus(), &order()).is_empty());
    }
}
