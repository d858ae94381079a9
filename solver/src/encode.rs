//! The query as z3 constraints, and the model back as flips.
//!
//! Variables: an integer position `o(a)` per access of the window. The
//! sketch's events keep their recorded positions (scaled), and an access
//! lies strictly between its thread's events around it; accesses of one
//! thread keep their program order. For each read `r` of a location and
//! each write `w` there, `rf(r, w)` says `r` reads `w`: `w` comes before
//! `r` and no other write there comes between; `rf(r, init)`: every write
//! there comes after `r`. Every read reads something. Lock mutual
//! exclusion, create, join and fork edges need no constraint of their
//! own: they are edges of the sketch's order, which the event positions
//! already fix (a critical section is between its lock and unlock
//! events).
//!
//! Asked: the focus reads read values they did not read in any class
//! tried (for each tried class, one focus read differs). Preferred (soft,
//! one each): consecutive conflicting accesses of the focus locations
//! keep the observed order, so the answer changes as little as it can.

use std::collections::HashMap;
use std::time::Instant;

use z3::ast::{Bool, Int};
use z3::{Optimize, Params, SatResult, Solver};

use crate::query::{Access, AccessId, Class, Query};

/// What the solver found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An order with a class not tried yet: the flips that make it (held
    /// access, then the access it waits for), and the class asked for.
    Order {
        flips: Vec<(AccessId, AccessId)>,
        class: Class,
    },
    /// No order of the window's accesses that the sketch allows gives the
    /// focus reads a class not tried: `classes` were covered.
    Exhausted { classes: usize },
    /// z3 gave up (its time limit).
    Unknown,
}

/// The size and cost of one query.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Accesses in the query, and in its window.
    pub accesses: usize,
    pub window: usize,
    pub reads: usize,
    pub writes: usize,
    pub focus_reads: usize,
    /// Reads-from choices (booleans) and soft constraints.
    pub choices: usize,
    pub soft: usize,
    pub millis: u64,
}

/// z3's time limit per query, and for looking for the fewest changes.
const TIMEOUT_MS: u32 = 5_000;
const OPTIMIZE_MS: u32 = 500;

/// One read's possible writers in the window (None: the value before
/// them all).
struct Reads {
    read: usize,
    choices: Vec<(Option<usize>, Bool)>,
}

/// Answers `q`.
pub fn solve(q: &Query) -> (Answer, Stats) {
    let started = Instant::now();
    let win = q.window();
    solve_window(q, win, started)
}

/// Answers `q` about the reads `reads` (see [`Query::window_for`]) instead
/// of the focus thread's last ones: what else they can read (with
/// `share`, an address another thread's read there returned).
pub fn solve_for(q: &Query, reads: &[AccessId], share: bool) -> (Answer, Stats) {
    let started = Instant::now();
    let win = q.window_for(reads, share);
    solve_window(q, win, started)
}

fn solve_window(q: &Query, win: crate::query::Window, started: Instant) -> (Answer, Stats) {
    let acc = &win.accesses;
    let mut stats = Stats {
        accesses: q.accesses.len(),
        window: acc.len(),
        reads: acc.iter().filter(|a| !a.write).count(),
        writes: acc.iter().filter(|a| a.write).count(),
        focus_reads: win.focus.len(),
        ..Stats::default()
    };
    if win.focus.is_empty() {
        stats.millis = started.elapsed().as_millis() as u64;
        return (Answer::Exhausted { classes: 0 }, stats);
    }
    let mut hard: Vec<Bool> = Vec::new();
    let pos = positions(&mut hard, acc);
    let reads = reads_from(&mut hard, acc, &pos, &win.focus);
    stats.choices = reads.iter().map(|r| r.choices.len()).sum();
    let by_read: HashMap<usize, &Reads> = reads.iter().map(|r| (r.read, r)).collect();

    // A class not tried yet, on the focus reads.
    let focus_ids: HashMap<AccessId, usize> = win.focus.iter().map(|&i| (acc[i].id, i)).collect();
    let mut classes = 0;
    for tried in &q.tried {
        let shared: Vec<(usize, u64)> = tried
            .iter()
            .filter_map(|(id, v)| focus_ids.get(id).map(|&i| (i, *v)))
            .collect();
        if shared.is_empty() {
            continue;
        }
        classes += 1;
        let differs: Vec<Bool> = shared
            .iter()
            .filter_map(|&(i, v)| by_read.get(&i).map(|r| reads_other_than(acc, r, v)))
            .collect();
        hard.push(Bool::or(&differs));
    }

    // Reads that must share an object with another thread's read: both
    // read the same write (a split read-modify-write), whose value is the
    // address the other read was observed to read.
    for (i, partners) in &win.wanted {
        let Some(r) = by_read.get(i) else { continue };
        let mut any: Vec<Bool> = Vec::new();
        for p in partners {
            let Some(pr) = by_read.get(p) else { continue };
            let v = acc[*p].value;
            for (c, b) in &r.choices {
                if value_of(acc, r, *c) != v {
                    continue;
                }
                if let Some((_, pb)) = pr.choices.iter().find(|(pc, _)| pc == c) {
                    any.push(Bool::and(&[b.clone(), pb.clone()]));
                }
            }
        }
        hard.push(Bool::or(&any));
    }

    // As few changes as possible: each focus read keeps its place
    // between the writes of other threads observed right before and right
    // after it at its location.
    let mut soft: Vec<Bool> = Vec::new();
    for &f in &win.focus {
        let r = &acc[f];
        let other = |a: &&Access| a.write && a.location == r.location && a.id.thread != r.id.thread;
        let before = acc[..f]
            .iter()
            .enumerate()
            .rev()
            .find(|(_, a)| other(a))
            .map(|(i, _)| i);
        let after = acc[f + 1..]
            .iter()
            .enumerate()
            .find(|(_, a)| other(a))
            .map(|(i, _)| f + 1 + i);
        if let Some(b) = before {
            soft.push(pos[b].lt(&pos[f]));
        }
        if let Some(a) = after {
            soft.push(pos[f].lt(&pos[a]));
        }
    }
    stats.soft = soft.len();

    // Satisfiable at all (a plain solver answers that fastest), then the
    // fewest changes within a shorter limit, else the first model.
    let solver = Solver::new();
    let mut params = Params::new();
    params.set_u32("timeout", TIMEOUT_MS);
    solver.set_params(&params);
    for h in &hard {
        solver.assert(h);
    }
    let answer = match solver.check() {
        SatResult::Unsat => Answer::Exhausted { classes },
        SatResult::Unknown => Answer::Unknown,
        SatResult::Sat => {
            let best = (!soft.is_empty()).then(|| {
                let opt = Optimize::new();
                let mut params = Params::new();
                params.set_u32("timeout", OPTIMIZE_MS);
                opt.set_params(&params);
                for h in &hard {
                    opt.assert(h);
                }
                for s in &soft {
                    opt.assert_soft(s, 1, None);
                }
                match opt.check(&[]) {
                    SatResult::Sat => opt.get_model(),
                    _ => None,
                }
            });
            match best.flatten().or_else(|| solver.get_model()) {
                Some(m) => read_model(q, acc, &win.focus, &pos, &by_read, &m),
                None => Answer::Unknown,
            }
        }
    };
    stats.millis = started.elapsed().as_millis() as u64;
    (answer, stats)
}

/// `o(a)` per access: between its thread's events (scaled positions), in
/// program order within its thread.
fn positions(hard: &mut Vec<Bool>, acc: &[Access]) -> Vec<Int> {
    let scale = acc.len() as i64 + 2;
    // "No next event": just past the last event any access lies after
    // (small constants keep z3's arithmetic cheap).
    let end = acc.iter().map(|a| a.after_event).max().unwrap_or(0).max(
        acc.iter()
            .filter(|a| a.before_event != u64::MAX)
            .map(|a| a.before_event)
            .max()
            .unwrap_or(0),
    ) + 2;
    let scaled = |p: u64| -> i64 { (p.min(end) as i64).saturating_mul(scale) };
    let mut last_of: HashMap<u32, usize> = HashMap::new();
    let mut pos: Vec<Int> = Vec::with_capacity(acc.len());
    for (i, a) in acc.iter().enumerate() {
        let o = Int::new_const(format!("o{i}"));
        hard.push(o.gt(Int::from_i64(scaled(a.after_event))));
        hard.push(o.lt(Int::from_i64(scaled(a.before_event))));
        if let Some(&p) = last_of.get(&a.id.thread) {
            hard.push(pos[p].lt(&o));
        }
        last_of.insert(a.id.thread, i);
        pos.push(o);
    }
    pos
}

/// The reads-from choices of the focus reads (the others' values are not
/// asked about: their choices would only cost time).
fn reads_from(hard: &mut Vec<Bool>, acc: &[Access], pos: &[Int], focus: &[usize]) -> Vec<Reads> {
    let mut writes: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, a) in acc.iter().enumerate() {
        if a.write {
            writes.entry(a.location).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for &r in focus {
        let a = &acc[r];
        let ws = writes.get(&a.location).map(Vec::as_slice).unwrap_or(&[]);
        let mut choices = Vec::with_capacity(ws.len() + 1);
        for &w in ws {
            let b = Bool::new_const(format!("rf{r}_{w}"));
            // w before r, and every other write there outside (w, r).
            let mut cond = vec![pos[w].lt(&pos[r])];
            for &w2 in ws.iter().filter(|&&w2| w2 != w) {
                cond.push(Bool::or(&[pos[w2].lt(&pos[w]), pos[r].lt(&pos[w2])]));
            }
            hard.push(b.implies(Bool::and(&cond)));
            choices.push((Some(w), b));
        }
        let init = Bool::new_const(format!("rf{r}_init"));
        let before_all: Vec<Bool> = ws.iter().map(|&w| pos[r].lt(&pos[w])).collect();
        hard.push(init.implies(Bool::and(&before_all)));
        choices.push((None, init));
        let any: Vec<Bool> = choices.iter().map(|(_, b)| b.clone()).collect();
        hard.push(Bool::or(&any));
        out.push(Reads { read: r, choices });
    }
    out
}

/// The value read `r` reads if it reads `choice`.
fn value_of(acc: &[Access], r: &Reads, choice: Option<usize>) -> u64 {
    match choice {
        Some(w) => acc[w].value,
        // Before every write of the window: what the first of them
        // replaced, or what the read saw if none wrote there.
        None => acc
            .iter()
            .find(|a| a.write && a.location == acc[r.read].location)
            .map_or(acc[r.read].value, |w| w.before),
    }
}

/// `r` reads something else than `v`.
fn reads_other_than(acc: &[Access], r: &Reads, v: u64) -> Bool {
    let not: Vec<Bool> = r
        .choices
        .iter()
        .filter(|(c, _)| value_of(acc, r, *c) == v)
        .map(|(_, b)| b.not())
        .collect();
    Bool::and(&not)
}

fn read_model(
    q: &Query,
    acc: &[Access],
    focus: &[usize],
    pos: &[Int],
    by_read: &HashMap<usize, &Reads>,
    m: &z3::Model,
) -> Answer {
    let at: Vec<i64> = pos
        .iter()
        .map(|o| m.eval(o, true).and_then(|v| v.as_i64()).unwrap_or(0))
        .collect();
    let mut class = Vec::new();
    for &f in focus {
        let Some(r) = by_read.get(&f) else { continue };
        let chosen = r
            .choices
            .iter()
            .find(|(_, b)| m.eval(b, true).and_then(|v| v.as_bool()) == Some(true))
            .map(|(c, _)| *c);
        if let Some(c) = chosen {
            class.push((acc[f].id, value_of(acc, r, c)));
        }
    }
    // The flips: at each focus read's location, the accesses next to it
    // in the model's order (two on each side) keep that order: of two
    // neighbours of different threads, one of them writing, the later
    // waits for the earlier. Enforced together, they give the focus
    // reads the model's values, whatever the base order was.
    let mut flips: Vec<(AccessId, AccessId)> = Vec::new();
    for &f in focus.iter().rev() {
        let loc = acc[f].location;
        let mut line: Vec<usize> = (0..acc.len()).filter(|&j| acc[j].location == loc).collect();
        line.sort_by_key(|&j| at[j]);
        let Some(k) = line.iter().position(|&j| j == f) else {
            continue;
        };
        // Back to the read's own thread's last access there too: what
        // comes between it and the read decides the value.
        let own = line[..k]
            .iter()
            .rposition(|&j| acc[j].id.thread == acc[f].id.thread)
            .unwrap_or(k);
        let lo = k.saturating_sub(2).min(own);
        let hi = (k + 2).min(line.len() - 1);
        for w in line[lo..=hi].windows(2) {
            let (p, n) = (&acc[w[0]], &acc[w[1]]);
            if p.id.thread != n.id.thread && (p.write || n.write) {
                let pair = (n.id, p.id);
                if !flips.contains(&pair) {
                    flips.push(pair);
                }
            }
        }
    }
    flips.truncate(q.limits.max_flips);
    Answer::Order { flips, class }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{class_of, Limits};

    fn access(
        thread: u32,
        pc: u64,
        write: bool,
        value: u64,
        before: u64,
        ev: (u64, u64),
    ) -> Access {
        Access {
            id: AccessId { thread, pc, n: 1 },
            location: 0x1000,
            write,
            value,
            before,
            after_event: ev.0,
            before_event: ev.1,
        }
    }

    /// A query on `accesses` about thread 2's reads before event 30, the
    /// observed run's class tried.
    fn query(accesses: Vec<Access>) -> Query {
        Query {
            tried: vec![class_of(&accesses)],
            locations: Vec::new(),
            accesses,
            focus_pos: 30,
            focus_thread: Some(2),
            limits: Limits::default(),
        }
    }

    /// A lost update: thread 1 reads x=0 and writes 1; thread 2, between
    /// the same events, reads 1 and writes 2. The failing order has thread
    /// 2 read 0: hold thread 1's write until thread 2 has read.
    fn lost_update() -> Query {
        let accesses = vec![
            access(1, 0x10, false, 0, 0, (10, 20)),
            access(1, 0x14, true, 1, 0, (10, 20)),
            access(2, 0x10, false, 1, 0, (12, 30)),
            access(2, 0x14, true, 2, 1, (12, 30)),
        ];
        query(accesses)
    }

    #[test]
    fn a_lost_update_is_found() {
        let q = lost_update();
        let (a, stats) = solve(&q);
        let Answer::Order { flips, class } = a else {
            panic!("{a:?}")
        };
        assert_eq!(
            class,
            vec![(q.accesses[2].id, 0)],
            "thread 2 reads the value before thread 1's write"
        );
        assert!(
            flips.contains(&(q.accesses[1].id, q.accesses[2].id)),
            "thread 1's write waits for thread 2's read: {flips:?}"
        );
        assert_eq!(stats.focus_reads, 1);
        assert!(stats.soft >= 1);
    }

    #[test]
    fn every_class_tried_is_exhaustion() {
        let mut q = lost_update();
        let first = match solve(&q).0 {
            Answer::Order { class, .. } => class,
            a => panic!("{a:?}"),
        };
        q.tried.push(first);
        assert_eq!(solve(&q).0, Answer::Exhausted { classes: 2 });
    }

    #[test]
    fn accesses_the_sketch_orders_are_no_question() {
        // Thread 2's accesses come after an event that follows thread 1's
        // next event: the sketch orders them, there is nothing to choose.
        let accesses = vec![
            access(1, 0x10, false, 0, 0, (10, 20)),
            access(1, 0x14, true, 1, 0, (10, 20)),
            access(2, 0x10, false, 1, 0, (25, 30)),
            access(2, 0x14, true, 2, 1, (25, 30)),
        ];
        let q = query(accesses);
        assert_eq!(solve(&q).0, Answer::Exhausted { classes: 0 });
    }

    /// Two coordinated changes: thread 2 must read a flag thread 1 has not
    /// set yet *and* a pointer thread 1 has already cleared. One flip of
    /// the observed order changes one read; the solver asks for both.
    #[test]
    fn two_reads_change_together() {
        let mut accesses = vec![
            access(1, 0x20, true, 0, 7, (10, 20)),  // ptr = 0 (was 7)
            access(1, 0x24, true, 1, 0, (10, 20)),  // flag = 1
            access(2, 0x30, false, 1, 0, (12, 30)), // reads flag = 1
            access(2, 0x34, false, 0, 0, (12, 30)), // reads ptr = 0
        ];
        accesses[0].location = 0x2000;
        accesses[3].location = 0x2000;
        accesses[1].location = 0x3000;
        accesses[2].location = 0x3000;
        let base = class_of(&accesses);
        // Tried: flag 1 / ptr 0 (observed), flag 0 / ptr 7 (one flip: all of
        // thread 2 first). Left: flag 0 and ptr 0, or flag 1 and ptr 7.
        let one_flip = vec![(accesses[2].id, 0), (accesses[3].id, 7)];
        let q = Query {
            tried: vec![base, one_flip],
            ..query(accesses)
        };
        match solve(&q).0 {
            Answer::Order { class, flips } => {
                assert!(!flips.is_empty());
                let v: Vec<u64> = class.iter().map(|c| c.1).collect();
                assert!(v == vec![0, 0] || v == vec![1, 7], "{class:?}");
            }
            a => panic!("{a:?}"),
        }
    }

    /// A split pop: threads 1 and 2 pop a list head without a lock, thread
    /// 2 after thread 1. Each read of the head is address-determining (its
    /// value is the object the thread then touches); asked to share an
    /// object, thread 2's read reads the write thread 1's read read, before
    /// thread 1's pop writes the head: both then hold object X.
    #[test]
    fn a_split_pop_shares_the_object() {
        const H: u64 = 0x5555_0000;
        const X: u64 = 0x5555_1000;
        const Y: u64 = 0x5555_2000;
        let at = |thread, pc, location, write, value, before, ev: (u64, u64)| Access {
            id: AccessId { thread, pc, n: 1 },
            location,
            write,
            value,
            before,
            after_event: ev.0,
            before_event: ev.1,
        };
        let accesses = vec![
            at(0, 0x01, H, true, X, 0, (0, 5)),        // head = X
            at(1, 0x10, H, false, X, 0, (10, 20)),     // s = head (X)
            at(1, 0x14, X, false, Y, 0, (10, 20)),     // s->next (Y)
            at(1, 0x18, H, true, Y, X, (10, 20)),      // head = Y
            at(1, 0x1c, X + 8, true, 1, 0, (10, 20)),  // s->owner = 1
            at(2, 0x10, H, false, Y, 0, (12, 30)),     // s = head (Y)
            at(2, 0x14, Y, false, 0, 0, (12, 30)),     // s->next (0)
            at(2, 0x18, H, true, 0, Y, (12, 30)),      // head = 0
            at(2, 0x1c, Y + 8, true, 2, 0, (12, 30)),  // s->owner = 2
            at(1, 0x20, X + 8, false, 1, 0, (20, 40)), // check s->owner
        ];
        let q = Query {
            tried: vec![class_of(&accesses)],
            locations: Vec::new(),
            focus_pos: 40,
            focus_thread: Some(1),
            limits: Limits::default(),
            accesses,
        };
        let ids: Vec<AccessId> = q.accesses.iter().map(|a| a.id).collect();
        // Thread 1's read first (its object is touched again after an
        // event), then thread 2's; no read whose value is not an address.
        assert_eq!(q.address_reads(), vec![ids[1], ids[5]]);
        // Thread 1's read cannot read Y (only its own later write has it).
        assert!(matches!(
            solve_for(&q, &[ids[1]], true).0,
            Answer::Exhausted { .. }
        ));
        match solve_for(&q, &[ids[5]], true).0 {
            Answer::Order { class, flips } => {
                assert!(class.contains(&(ids[5], X)), "{class:?}");
                assert!(class.contains(&(ids[1], X)), "{class:?}");
                assert!(
                    flips.contains(&(ids[3], ids[5])) || flips.contains(&(ids[3], ids[7])),
                    "thread 1's pop write waits for thread 2's pop: {flips:?}"
                );
            }
            a => panic!("{a:?}"),
        }
        // The object's fields, as the next base's first query sees them.
        assert_eq!(q.object_locations(X), vec![X, X + 8]);
    }

    /// ABA: thread 1 sets x to 1 and back to 0; thread 2 reads x twice and
    /// fails if it saw 1 then 0. The failing order interleaves both ways
    /// (w1 r1 w0 r2): two reads change, three flips hold them in place.
    #[test]
    fn an_aba_needs_coordinated_flips() {
        let accesses = vec![
            access(1, 0x10, true, 1, 0, (10, 20)),
            access(1, 0x14, true, 0, 1, (10, 20)),
            access(2, 0x20, false, 0, 0, (12, 30)),
            access(2, 0x24, false, 0, 0, (12, 30)),
        ];
        let mut q = query(accesses);
        let ids: Vec<AccessId> = q.accesses.iter().map(|a| a.id).collect();
        for _ in 0..4 {
            match solve(&q).0 {
                Answer::Order { class, flips } => {
                    if class == vec![(ids[2], 1), (ids[3], 0)] {
                        let mut flips = flips;
                        flips.sort();
                        let mut want = vec![(ids[2], ids[0]), (ids[1], ids[2]), (ids[3], ids[1])];
                        want.sort();
                        assert_eq!(flips, want, "r1 after w1, w0 after r1, r2 after w0");
                        return;
                    }
                    q.tried.push(class);
                }
                a => panic!("{a:?}"),
            }
        }
        panic!("the failing class was never proposed");
    }
}
