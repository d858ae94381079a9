//! The order the sketch fixes between two accesses: its happens-before.
//!
//! A replay performs the sketch's events one at a time, in their recorded
//! global order (the baton), so every edge of that order holds in every
//! attempt: thread create before the new thread's start, a thread's exit
//! before the join that waits for it, a fork before the child's start, an
//! unlock before the next lock of the same object, and between any two
//! events of two threads, the one recorded first. An access `x` of thread
//! A is ordered before an access `y` of thread B when A's first event
//! after `x` comes, in that order, no later than B's last event before
//! `y` (`x`, A's event, ..., B's event, `y`). Accesses of one thread are
//! ordered by the program.
//!
//! Processes share memory only through the copy at `fork`, which is made
//! after the `Fork` event is logged and before the forking thread's next
//! event. A parent's write is ordered before the child's accesses when its
//! thread reached an event no later than the `Fork` event, and after the
//! copy (unseen by the child, whatever the schedule) when its thread's
//! last event before it comes no earlier than the forking thread's next
//! event; in between, the copy could come before or after it: a race with
//! the child's accesses. A parent's read never sees the child's writes.

use std::collections::HashMap;

use reprise_abi::observe::{Access, ACCESS_FORK, ACCESS_WRITE};
use reprise_abi::replay as rp;
use reprise_abi::EventKind;

use crate::accesses::Occurrence;
use crate::observe::Observation;
use crate::Replay;

/// The sketch's happens-before, from a trace's events.
pub struct SketchOrder {
    /// Ring positions of each thread's events (baton key), in order.
    events: HashMap<u32, Vec<u64>>,
    /// What each of those events is (its kind and object), to tell a
    /// repeating pattern: same index as `events`.
    shapes: HashMap<u32, Vec<(EventKind, u64)>>,
    /// For each forked process: where it was forked.
    forks: HashMap<u32, ForkPoint>,
}

#[derive(Clone, Copy, Debug)]
struct ForkPoint {
    /// The process that forked it.
    parent: u32,
    /// Ring position of the `Fork` event.
    pos: u64,
    /// The forking thread (baton key).
    thread: u32,
}

impl SketchOrder {
    pub fn new(replay: &Replay) -> SketchOrder {
        let mut events: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut shapes: HashMap<u32, Vec<(EventKind, u64)>> = HashMap::new();
        let mut forks: HashMap<u32, ForkPoint> = HashMap::new();
        for (e, &pos) in replay.events.iter().zip(&replay.positions) {
            let key = rp::key(e.process as u32, e.thread);
            events.entry(key).or_default().push(pos);
            shapes.entry(key).or_default().push((e.kind, e.object));
            if e.kind == EventKind::Fork {
                let point = ForkPoint {
                    parent: e.process as u32,
                    pos,
                    thread: rp::key(e.process as u32, e.thread),
                };
                forks.insert(e.arg0 as u32, point);
            }
        }
        SketchOrder {
            events,
            shapes,
            forks,
        }
    }

    /// The order of threads whose events are at these ring positions (by
    /// baton key, ascending), with no fork: for tests of what reads it.
    pub fn from_positions(events: HashMap<u32, Vec<u64>>) -> SketchOrder {
        SketchOrder {
            events,
            shapes: HashMap::new(),
            forks: HashMap::new(),
        }
    }

    /// The same, with what each event is (kind, object): for tests of
    /// what reads the events' pattern.
    pub fn from_shapes(
        events: HashMap<u32, Vec<u64>>,
        shapes: HashMap<u32, Vec<(EventKind, u64)>>,
    ) -> SketchOrder {
        SketchOrder {
            events,
            shapes,
            forks: HashMap::new(),
        }
    }

    /// Ring position of the first event `x`'s thread had not performed yet
    /// when it made `x` (`u64::MAX`: none, the access is past its thread's
    /// last recorded event).
    pub fn next_event(&self, x: &Access) -> u64 {
        self.events
            .get(&x.key)
            .and_then(|v| v.iter().find(|&&p| p >= x.turn).copied())
            .unwrap_or(u64::MAX)
    }

    /// The threads (baton keys) that have recorded events.
    pub fn threads(&self) -> impl Iterator<Item = u32> + '_ {
        self.events.keys().copied()
    }

    /// Ring positions of thread `key`'s recorded events, in order.
    pub fn thread_events(&self, key: u32) -> &[u64] {
        self.events.get(&key).map_or(&[], Vec::as_slice)
    }

    /// What thread `key`'s recorded events are (kind, object), in order
    /// (empty when not known).
    pub fn thread_shapes(&self, key: u32) -> &[(EventKind, u64)] {
        self.shapes.get(&key).map_or(&[], Vec::as_slice)
    }

    /// Ring position of the `Fork` event of process `p`, if it was forked.
    pub fn fork_event(&self, p: u32) -> Option<u64> {
        self.forks.get(&p).map(|f| f.pos)
    }

    /// The process that forked `p`, if it was forked.
    pub fn fork_parent(&self, p: u32) -> Option<u32> {
        self.forks.get(&p).map(|f| f.parent)
    }

    /// True if the sketch orders access `x` before access `y` in every
    /// attempt (whichever came first in the run looked at).
    pub fn orders(&self, x: &Access, y: &Access) -> bool {
        if x.key == y.key {
            return true;
        }
        let (px, py) = (rp::key_process(x.key), rp::key_process(y.key));
        if px == py {
            return y.last_event != 0 && self.next_event(x) < y.last_event;
        }
        // The child's memory is the parent's at the fork.
        match self.forks.get(&py) {
            Some(f) if f.parent == px => self.next_event(x) <= f.pos,
            _ => false,
        }
    }

    /// Where the sketch orders `x` before `y`: the ring positions of the
    /// event after `x` in its thread and of the event before `y` in its
    /// thread (the `Fork` event, for a child's access), the first no later
    /// than the second. None if it does not, or if one thread makes both.
    pub fn ordering(&self, x: &Access, y: &Access) -> Option<(u64, u64)> {
        if x.key == y.key || !self.orders(x, y) {
            return None;
        }
        let next = self.next_event(x);
        if rp::key_process(x.key) == rp::key_process(y.key) {
            Some((next, y.last_event - 1))
        } else {
            Some((next, self.fork_event(rp::key_process(y.key))?))
        }
    }

    /// The order in one observed run (which also knows where each fork
    /// really copied the parent's memory).
    pub fn run<'a>(&'a self, obs: &Observation) -> RunOrder<'a> {
        let copies = obs
            .accesses
            .iter()
            .enumerate()
            .filter(|(_, a)| a.flags & ACCESS_FORK != 0)
            .map(|(i, a)| (a.addr as u32, i))
            .collect();
        RunOrder {
            order: self,
            copies,
        }
    }
}

/// The sketch's order, applied to the accesses of one observed run.
pub struct RunOrder<'a> {
    pub order: &'a SketchOrder,
    /// For each forked process, the log index of the copy.
    copies: HashMap<u32, usize>,
}

impl RunOrder<'_> {
    /// True if `a` and `b` (two accesses of this run, either first) form a
    /// race: two threads touch memory they share, and the sketch does not
    /// order the one that came first before the other — the other could
    /// have come first. Whether they overlap and one writes is the
    /// caller's business.
    pub fn race(&self, a: &Occurrence, b: &Occurrence) -> bool {
        let (x, y) = if a.index <= b.index { (a, b) } else { (b, a) };
        if x.access.key == y.access.key {
            return false;
        }
        let (px, py) = (rp::key_process(x.access.key), rp::key_process(y.access.key));
        if px == py {
            return !self.order.orders(&x.access, &y.access);
        }
        // One in a parent, one in a child it forked (either first in the
        // log): they race through the copy, if the parent's is a write.
        let (parent, pc) = match (self.order.forks.get(&py), self.order.forks.get(&px)) {
            (Some(f), _) if f.parent == px => (x, py),
            (_, Some(f)) if f.parent == py => (y, px),
            _ => return false,
        };
        let (Some(f), Some(&copy)) = (self.order.forks.get(&pc), self.copies.get(&pc)) else {
            return false;
        };
        let p = &parent.access;
        if p.flags & ACCESS_WRITE == 0 {
            return false;
        }
        if parent.index < copy {
            // Seen by the child: unless the sketch orders it before the
            // `Fork` event, the copy could have come first.
            self.order.next_event(p) > f.pos
        } else {
            // Unseen: unless the sketch orders it after the copy (after the
            // forking thread's next event), the copy could have come after.
            let forker_next = self
                .order
                .events
                .get(&f.thread)
                .and_then(|v| v.iter().find(|&&q| q > f.pos).copied())
                .unwrap_or(u64::MAX);
            p.key != f.thread && (p.last_event == 0 || p.last_event - 1 < forker_next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(key: u32, turn: u64, last_event: u64) -> Access {
        Access {
            key,
            flags: 0,
            size: 4,
            _pad: 0,
            pc: 0x1000,
            addr: 0x4000,
            before: 0,
            after: 0,
            turn,
            last_event,
        }
    }

    fn occ(a: Access, index: usize) -> Occurrence {
        Occurrence {
            access: a,
            n: 1,
            k: 1,
            index,
        }
    }

    /// Main (thread 0) creates threads 1 and 2 (events at 0 and 1) and
    /// joins thread 1 (8). Thread 1 starts (2), locks (3), unlocks (4) and
    /// exits (5); thread 2 starts (6) and takes the lock (7).
    fn order() -> SketchOrder {
        let (t0, t1, t2) = (rp::key(0, 0), rp::key(0, 1), rp::key(0, 2));
        SketchOrder {
            events: HashMap::from([
                (t0, vec![0, 1, 8]),
                (t1, vec![2, 3, 4, 5]),
                (t2, vec![6, 7]),
            ]),
            shapes: HashMap::new(),
            forks: HashMap::new(),
        }
    }

    #[test]
    fn join_create_and_locks_order_accesses() {
        let o = order();
        let run = RunOrder {
            order: &o,
            copies: HashMap::new(),
        };
        let (t0, t1, t2) = (rp::key(0, 0), rp::key(0, 1), rp::key(0, 2));
        // Thread 1 writes before its exit; main reads after its join (the
        // last event is stored + 1).
        let w = occ(access(t1, 5, 5), 0);
        let r = occ(access(t0, 9, 9), 1);
        assert!(o.orders(&w.access, &r.access));
        assert_eq!(o.ordering(&w.access, &r.access), Some((5, 8)));
        assert!(!run.race(&w, &r));
        assert!(!run.race(&r, &w));
        // Main writes before creating thread 1; thread 1 reads after its
        // start.
        let setup = occ(access(t0, 0, 0), 0);
        let read = occ(access(t1, 3, 3), 1);
        assert!(!run.race(&setup, &read));
        // Thread 1 inside its critical section (after its lock, before its
        // unlock); thread 2 inside its own, after its lock.
        let a = occ(access(t1, 4, 4), 0);
        let b = occ(access(t2, 8, 8), 1);
        assert!(!run.race(&a, &b));
        // Main between creating thread 2 and the join, thread 2 after its
        // start, before its lock: nothing orders them.
        let c = occ(access(t0, 2, 2), 0);
        let d = occ(access(t2, 7, 7), 1);
        assert!(run.race(&c, &d));
        assert_eq!(o.ordering(&c.access, &d.access), None);
        // Thread 1 before its lock and main before the join, either first.
        let e = occ(access(t1, 3, 3), 0);
        let f = occ(access(t0, 3, 2), 1);
        assert!(run.race(&e, &f));
        assert!(run.race(&occ(f.access, 0), &occ(e.access, 1)));
    }

    fn write(key: u32, turn: u64, last_event: u64, index: usize) -> Occurrence {
        let mut a = access(key, turn, last_event);
        a.flags = ACCESS_WRITE;
        occ(a, index)
    }

    /// The parent's thread 0 forks at 4 (the copy is at log index 3) and
    /// has its next event at 7; its thread 1 has events at 1, 6 and 8.
    #[test]
    fn a_fork_orders_the_parent_before_the_child() {
        let parent = rp::key(0, 0);
        let other = rp::key(0, 1);
        let child = rp::key(1, 0);
        let o = SketchOrder {
            events: HashMap::from([
                (parent, vec![0, 4, 7]),
                (other, vec![1, 6, 8]),
                (child, vec![5]),
            ]),
            shapes: HashMap::new(),
            forks: HashMap::from([(
                1,
                ForkPoint {
                    parent: 0,
                    pos: 4,
                    thread: parent,
                },
            )]),
        };
        let run = RunOrder {
            order: &o,
            copies: HashMap::from([(1, 3)]),
        };
        let in_child = occ(access(child, 6, 6), 9);
        // Before the Fork event: ordered.
        assert!(!run.race(&write(parent, 1, 1, 0), &in_child));
        // Another thread of the parent, after the Fork event but before
        // the copy: the copy could have come first.
        assert!(run.race(&write(other, 5, 2, 2), &in_child));
        assert!(run.race(&in_child, &write(other, 5, 2, 2)));
        // After the copy, unseen by the child, but nothing in the sketch
        // keeps the copy from coming after it.
        assert!(run.race(&write(other, 5, 2, 4), &in_child));
        // After the copy and after an event that follows the forking
        // thread's next one; or the forking thread itself after fork().
        assert!(!run.race(&write(other, 9, 9, 4), &in_child));
        assert!(!run.race(&write(parent, 5, 5, 5), &in_child));
        // A parent's read never sees the child's writes, nor races.
        assert!(!run.race(&occ(access(other, 5, 2), 2), &in_child));
    }
}
