//! The problem the solver answers, in plain data: the accesses one
//! observed attempt made to shared memory, where each lies between its
//! thread's sketch events, the reads that matter (the focus), and the
//! reads-from classes already run.

use std::collections::{HashMap, HashSet};

/// An access instance, named as a flip names it: the thread (baton key),
/// the instruction, and how many times the thread had made an access at
/// that instruction (itself included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessId {
    pub thread: u32,
    pub pc: u64,
    pub n: u32,
}

/// One observed access.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub id: AccessId,
    /// The memory it touches (an 8-byte granule, qualified by process).
    pub location: u64,
    pub write: bool,
    /// The value read, or written.
    pub value: u64,
    /// For a write: the value it replaced.
    pub before: u64,
    /// Ring positions of the thread's last sketch event before the access
    /// and of its next one (`u64::MAX`: none): every attempt keeps the
    /// access between them, and the sketch's events in their order.
    pub after_event: u64,
    pub before_event: u64,
}

/// What the focus reads read, one value each: a reads-from class, with
/// two writes of one value counted as one.
pub type Class = Vec<(AccessId, u64)>;

/// Limits that keep a query small whatever the run's length.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Accesses to racy locations kept, nearest the focus.
    pub window: usize,
    /// Reads of the focus thread whose value the query may change, and
    /// from how many of its stretches between events (the last ones
    /// before the focus).
    pub focus_reads: usize,
    pub stretches: usize,
    /// Flips a schedule may have.
    pub max_flips: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            window: 256,
            focus_reads: 8,
            stretches: 2,
            max_flips: 8,
        }
    }
}

/// A question for the solver.
#[derive(Clone, Debug)]
pub struct Query {
    /// One attempt's accesses, in the order it made them.
    pub accesses: Vec<Access>,
    /// Where the failure or the divergence is (a ring position) and the
    /// thread it concerns (None: every thread, for a hang or deadlock).
    pub focus_pos: u64,
    pub focus_thread: Option<u32>,
    /// Classes already run or asked for: the answer must differ from
    /// each in the value of at least one focus read they share.
    pub tried: Vec<Class>,
    /// When not empty, the focus reads are any thread's reads of these
    /// locations that another thread's write could still precede, the
    /// latest first (`focus_thread` and the stretches are not used): the
    /// updates that lead to a value the failing thread read, wherever in
    /// the run they raced (a lost update printed at the end).
    pub locations: Vec<u64>,
    pub limits: Limits,
}

/// The part of a query the encoding sees.
#[derive(Debug)]
pub struct Window {
    /// Accesses to racy locations near the focus, in observed order.
    pub accesses: Vec<Access>,
    /// Indices (into `accesses`) of the focus reads.
    pub focus: Vec<usize>,
}

impl Query {
    /// True if the sketch orders `a` before `b` in every attempt: `a`'s
    /// thread reaches its next event no later than `b`'s thread reached
    /// its last one before `b`.
    pub fn sketch_orders(a: &Access, b: &Access) -> bool {
        a.before_event <= b.after_event
    }

    /// Locations two threads touch, one of them writing, in an order the
    /// sketch leaves open for at least one pair.
    fn racy_locations(&self) -> HashSet<u64> {
        let mut by_loc: HashMap<u64, Vec<&Access>> = HashMap::new();
        for a in &self.accesses {
            by_loc.entry(a.location).or_default().push(a);
        }
        by_loc
            .into_iter()
            .filter(|(_, v)| {
                // Writes near each other in the run are the ones that can
                // race: compare each access with the next few of other
                // threads (a full pairwise scan is quadratic).
                v.iter().enumerate().any(|(i, a)| {
                    v[i + 1..].iter().take(64).any(|b| {
                        a.id.thread != b.id.thread
                            && (a.write || b.write)
                            && !Query::sketch_orders(a, b)
                            && !Query::sketch_orders(b, a)
                    })
                })
            })
            .map(|(l, _)| l)
            .collect()
    }

    /// The accesses the encoding looks at. First the focus reads: the
    /// focus thread's reads of racy locations in its last stretch before
    /// the focus (between its last event and the focus), and the stretch
    /// before if that has fewer than two; any thread's for a hang or a
    /// deadlock. Then, for each, the writes it could read: of other
    /// threads, those the sketch leaves unordered with it (the nearest
    /// `window / 8` on each side) and the last one the sketch orders
    /// before it; of its own thread, the one before and the one after.
    pub fn window(&self) -> Window {
        let racy = self.racy_locations();
        let kept: Vec<usize> = (0..self.accesses.len())
            .filter(|&i| racy.contains(&self.accesses[i].location))
            .collect();
        let cut = kept
            .iter()
            .rposition(|&i| self.accesses[i].after_event <= self.focus_pos)
            .map_or(0, |k| k + 1);
        let mut focus: Vec<usize> = Vec::new();
        let mut stretches: Vec<u64> = Vec::new();
        if !self.locations.is_empty() {
            let side = 2;
            for &i in kept[..cut].iter().rev() {
                let a = &self.accesses[i];
                if a.write || !self.locations.contains(&a.location) {
                    continue;
                }
                let open = self.writers(i, &kept, side).iter().any(|&w| {
                    self.accesses[w].id.thread != a.id.thread
                        && !Query::sketch_orders(&self.accesses[w], a)
                });
                if open && focus.len() < self.limits.focus_reads {
                    focus.push(i);
                }
            }
        }
        let by_stretch = if self.locations.is_empty() { cut } else { 0 };
        for &i in kept[..by_stretch].iter().rev() {
            let a = &self.accesses[i];
            if a.write || self.focus_thread.is_some_and(|t| t != a.id.thread) {
                continue;
            }
            if !stretches.contains(&a.after_event) {
                let enough = self.limits.stretches.max(1);
                if stretches.len() >= enough
                    || (stretches.len() + 1 >= enough && focus.len() >= 2 && enough <= 2)
                {
                    break;
                }
                stretches.push(a.after_event);
            }
            if focus.len() < self.limits.focus_reads {
                focus.push(i);
            }
        }
        let side = (self.limits.window / 8).max(2);
        let mut chosen: Vec<usize> = focus.clone();
        for &f in &focus {
            chosen.extend(self.writers(f, &kept, side));
        }
        chosen.sort_unstable();
        chosen.dedup();
        let accesses: Vec<Access> = chosen.iter().map(|&i| self.accesses[i]).collect();
        let focus = focus
            .iter()
            .filter_map(|f| chosen.binary_search(f).ok())
            .collect::<Vec<_>>();
        let mut focus = focus;
        focus.sort_unstable();
        Window { accesses, focus }
    }

    /// The writes read `f` could read (indices into `accesses`).
    fn writers(&self, f: usize, kept: &[usize], side: usize) -> Vec<usize> {
        let r = &self.accesses[f];
        let same = |i: &usize| self.accesses[*i].write && self.accesses[*i].location == r.location;
        let mut out = Vec::new();
        let at = kept.partition_point(|&i| i < f);
        // Other threads' writes the sketch leaves unordered with the read.
        let open = |i: &usize| {
            let w = &self.accesses[*i];
            w.id.thread != r.id.thread && !Query::sketch_orders(w, r) && !Query::sketch_orders(r, w)
        };
        out.extend(
            kept[..at]
                .iter()
                .rev()
                .copied()
                .filter(|i| same(i) && open(i))
                .take(side),
        );
        out.extend(
            kept[at..]
                .iter()
                .copied()
                .filter(|i| same(i) && open(i))
                .take(side),
        );
        // The last write the sketch orders before it (what it reads if
        // none of the others comes between), and its own neighbours.
        if let Some(&i) = kept[..at].iter().rev().find(|i| {
            same(i)
                && (self.accesses[**i].id.thread == r.id.thread
                    || Query::sketch_orders(&self.accesses[**i], r))
        }) {
            out.push(i);
        }
        if let Some(&i) = kept[at..]
            .iter()
            .find(|i| same(i) && self.accesses[**i].id.thread == r.id.thread)
        {
            out.push(i);
        }
        out
    }
}

/// The class an observed run produced: what each read read, by id.
pub fn class_of(accesses: &[Access]) -> Class {
    accesses
        .iter()
        .filter(|a| !a.write)
        .map(|a| (a.id, a.value))
        .collect()
}
