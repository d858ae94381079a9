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

/// The address bits of a location (the process is in the bits above).
const ADDRESS_BITS: u64 = (1 << 52) - 1;
/// How far from the address a read returned an access may be and still be
/// taken for one through it (a field near the object's start).
const FIELD_SPAN: u64 = 64;
/// Values below this are not taken for addresses (counts, flags).
const LOWEST_ADDRESS: u64 = 0x10000;
/// Other threads' reads an address-determining read may share an object with.
const PARTNERS: usize = 4;
/// Reads of a stretch remembered as possible addresses, per thread.
const RECENT_READS: usize = 16;

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
    /// Focus reads (indices into `accesses`) that must read the write one
    /// of the reads given (also focus reads) reads, while that one still
    /// reads the value observed: an address another thread's read there
    /// returned.
    pub wanted: Vec<(usize, Vec<usize>)>,
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
        self.window_around(focus, &kept)
    }

    /// The window whose focus reads are `reads` (those of them before
    /// the focus that another thread's write could precede), with the
    /// writes each could read: a query about chosen reads, not about the
    /// focus thread's last stretches. With `share`, each must read the
    /// write another thread's address-determining read there reads, and
    /// that read still the address it was observed to (a split
    /// read-modify-write: both threads then hold one object, as in a split
    /// pop or an ABA); those reads join the focus, and a read no other
    /// thread's read could share with is left out.
    pub fn window_for(&self, reads: &[AccessId], share: bool) -> Window {
        let racy = self.racy_locations();
        let kept: Vec<usize> = (0..self.accesses.len())
            .filter(|&i| racy.contains(&self.accesses[i].location))
            .collect();
        let mut focus: Vec<usize> = Vec::new();
        let mut extra: Vec<usize> = Vec::new();
        for &i in &kept {
            let a = &self.accesses[i];
            if a.write || a.after_event > self.focus_pos || !reads.contains(&a.id) {
                continue;
            }
            // Without `share` (reads of an object now shared): another
            // thread's write the sketch orders before the read will do if
            // it can come after the read's thread's own last write there.
            let open = if share {
                self.open_to_others(i, &kept)
            } else {
                let w = self.after_own_write(i, &kept);
                let any = !w.is_empty();
                extra.extend(w);
                any || self.open_to_others(i, &kept)
            };
            if open && focus.len() < self.limits.focus_reads {
                focus.push(i);
            }
        }
        if !share {
            return self.window_with(focus, &kept, extra);
        }
        let used = self.address_determining(&kept);
        let mut pairs: Vec<(usize, Vec<usize>)> = Vec::new();
        for &f in &focus {
            let partners = self.partners(f, &used);
            if !partners.is_empty() {
                pairs.push((f, partners));
            }
        }
        // A read no other thread's read could share an object with is no
        // question here.
        let mut all: Vec<usize> = pairs.iter().map(|(f, _)| *f).collect();
        all.extend(pairs.iter().flat_map(|(_, p)| p.iter().copied()));
        all.sort_unstable();
        all.dedup();
        let mut win = self.window_around(all, &kept);
        // Indices into the window (access ids are unique).
        let find = |i: usize| {
            let id = self.accesses[i].id;
            win.accesses.iter().position(|a| a.id == id)
        };
        let wanted: Vec<(usize, Vec<usize>)> = pairs
            .iter()
            .filter_map(|(f, p)| Some((find(*f)?, p.iter().filter_map(|&q| find(q)).collect())))
            .collect();
        win.wanted = wanted;
        win
    }

    /// Other threads' writes to read `r`'s location that can come between
    /// its thread's last write there before it and the read (the nearest
    /// few before it in the run), with that write: what `r` reads if they
    /// are reordered, though the sketch orders them before `r`.
    fn after_own_write(&self, r: usize, kept: &[usize]) -> Vec<usize> {
        let a = &self.accesses[r];
        let at = kept.partition_point(|&i| i < r);
        let same = |i: usize| self.accesses[i].write && self.accesses[i].location == a.location;
        let Some(&own) = kept[..at]
            .iter()
            .rev()
            .find(|&&i| same(i) && self.accesses[i].id.thread == a.id.thread)
        else {
            return Vec::new();
        };
        let mut out: Vec<usize> = kept[..at]
            .iter()
            .rev()
            .copied()
            .filter(|&i| {
                same(i)
                    && self.accesses[i].id.thread != a.id.thread
                    && !Query::sketch_orders(&self.accesses[i], &self.accesses[own])
                    && !Query::sketch_orders(a, &self.accesses[i])
            })
            .take(2)
            .collect();
        if !out.is_empty() {
            out.push(own);
        }
        out
    }

    /// Other threads' address-determining reads of read `f`'s location, in
    /// stretches the sketch leaves unordered with `f`'s, that returned
    /// another address than `f` did: the nearest few.
    fn partners(&self, f: usize, used: &HashSet<usize>) -> Vec<usize> {
        let r = &self.accesses[f];
        let mut out: Vec<usize> = used
            .iter()
            .copied()
            .filter(|&i| {
                let a = &self.accesses[i];
                a.location == r.location
                    && a.id.thread != r.id.thread
                    && a.value != r.value
                    && !Query::sketch_orders(a, r)
                    && !Query::sketch_orders(r, a)
            })
            .collect();
        out.sort_by_key(|&i| i.abs_diff(f));
        out.truncate(PARTNERS);
        out
    }

    /// True if a write of another thread the sketch leaves unordered with
    /// read `i` is near it at its location.
    fn open_to_others(&self, i: usize, kept: &[usize]) -> bool {
        let a = &self.accesses[i];
        self.writers(i, kept, 2).iter().any(|&w| {
            self.accesses[w].id.thread != a.id.thread && !Query::sketch_orders(&self.accesses[w], a)
        })
    }

    /// Address-determining reads before the focus: reads whose value the
    /// same thread then uses as an address between the same two sketch
    /// events (`s = head; ... s->field`), at a racy location another
    /// thread's write could precede. Changing what such a read reads
    /// changes *which object* the thread's later accesses touch (a split
    /// pop hands one object to two threads), which no query over the
    /// observed addresses can. The focus thread's first (any thread's for
    /// a hang), then the others'; in each, first those whose object the
    /// thread touches again after a later sketch event, the latest first.
    pub fn address_reads(&self) -> Vec<AccessId> {
        let racy = self.racy_locations();
        let kept: Vec<usize> = (0..self.accesses.len())
            .filter(|&i| racy.contains(&self.accesses[i].location))
            .collect();
        let used = self.address_determining(&kept);
        // Each read's object is kept across a sketch event if its thread
        // touches it again in a later stretch before the focus (`s = pop();
        // lock; ...; unlock; check s->owner`): another thread handed the
        // same object then has time to use it. Those first.
        let mut mine = Vec::new();
        let mut others = Vec::new();
        for &i in kept.iter().rev() {
            let a = &self.accesses[i];
            if a.write || a.after_event > self.focus_pos || !used.contains(&i) {
                continue;
            }
            if !self.open_to_others(i, &kept) {
                continue;
            }
            let object = a.value & !7;
            let kept_across = self.accesses[i + 1..]
                .iter()
                .take_while(|b| b.after_event <= self.focus_pos)
                .any(|b| {
                    b.id.thread == a.id.thread
                        && b.after_event != a.after_event
                        && (b.location & ADDRESS_BITS).wrapping_sub(object) < FIELD_SPAN
                });
            let rank = usize::from(!kept_across);
            if self.focus_thread.is_none_or(|t| t == a.id.thread) {
                mine.push((rank, a.id));
            } else {
                others.push((rank, a.id));
            }
        }
        // Stable: the latest first within a rank.
        mine.sort_by_key(|m| m.0);
        others.sort_by_key(|o| o.0);
        mine.into_iter().chain(others).map(|(_, id)| id).collect()
    }

    /// The locations of the object at address `v` (its fields within
    /// reach) that the accesses touch.
    pub fn object_locations(&self, v: u64) -> Vec<u64> {
        let object = v & !7;
        let mut out: Vec<u64> = self
            .accesses
            .iter()
            .filter(|a| (a.location & ADDRESS_BITS).wrapping_sub(object) < FIELD_SPAN)
            .map(|a| a.location)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Indices of the reads (of racy locations) whose value the same thread
    /// then used as an address in the same stretch.
    fn address_determining(&self, kept: &[usize]) -> HashSet<usize> {
        let racy: HashSet<u64> = kept.iter().map(|&i| self.accesses[i].location).collect();
        // Per thread: its current stretch and the racy reads made in it so far
        // (the last few), as (value, index).
        let mut recent: HashMap<u32, (u64, Vec<(u64, usize)>)> = HashMap::new();
        let mut used: HashSet<usize> = HashSet::new();
        for (i, a) in self.accesses.iter().enumerate() {
            let (stretch, reads) = recent
                .entry(a.id.thread)
                .or_insert((a.after_event, Vec::new()));
            if *stretch != a.after_event {
                *stretch = a.after_event;
                reads.clear();
            }
            // The object is the one whose address (a value read) is the
            // nearest below the access: one field of it, not of a neighbour.
            let addr = a.location & ADDRESS_BITS;
            if let Some(&(_, r)) = reads
                .iter()
                .filter(|(v, _)| addr >= v & !7 && addr - (v & !7) < FIELD_SPAN)
                .max_by_key(|(v, _)| v & !7)
            {
                used.insert(r);
            }
            if !a.write
                && a.value >= LOWEST_ADDRESS
                && a.value <= ADDRESS_BITS
                && racy.contains(&a.location)
            {
                if reads.len() >= RECENT_READS {
                    reads.remove(0);
                }
                reads.push((a.value, i));
            }
        }
        used
    }

    /// The window of `focus` (indices of reads): the reads, and the
    /// writes each could read.
    fn window_around(&self, focus: Vec<usize>, kept: &[usize]) -> Window {
        self.window_with(focus, kept, Vec::new())
    }

    /// [`Self::window_around`] with `extra` writes (indices) in it too.
    fn window_with(&self, focus: Vec<usize>, kept: &[usize], extra: Vec<usize>) -> Window {
        let side = (self.limits.window / 8).max(2);
        let mut chosen: Vec<usize> = focus.clone();
        chosen.extend(extra);
        for &f in &focus {
            chosen.extend(self.writers(f, kept, side));
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
        Window {
            accesses,
            focus,
            wanted: Vec::new(),
        }
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
