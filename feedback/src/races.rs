//! Races in an observed attempt: pairs of accesses to the same memory by
//! two threads, at least one a write, that the sketch did not order — so
//! that the second could have come first.
//!
//! The sketch orders whole stretches of code only through its events: an
//! access `x` of thread A between A's events and an access `y` of thread B
//! can be swapped (A held at `x` until B made `y`) exactly when B's event
//! before `y` comes before A's event after `x` in the recorded order.

use std::collections::HashMap;

use reprise_abi::observe::Access;
use reprise_abi::replay as rp;

pub use reprise_replayer::accesses::{find, occurrences, reads_from_digest, Occurrence};
use reprise_replayer::accesses::{fork_marks, is_write, overlap};
use reprise_replayer::observe::{FlipSpec, Observation};
pub use reprise_replayer::order::{RunOrder, SketchOrder};
use reprise_replayer::Replay;

pub use crate::reads_from::{
    first_racy_diff, last_race, last_writers, pinning_flip, reads_from_diff, LastRace, RacyDiff,
    ReadsFromDiff,
};

/// A race: `first` happened before `second`; the flip makes `second` come
/// first.
#[derive(Clone, Copy, Debug)]
pub struct Race {
    pub first: Occurrence,
    pub second: Occurrence,
    /// How far (in ring positions) from the point of interest (the
    /// recorded failure, or where the attempt diverged).
    pub distance: u64,
    /// Rank: smaller is more suspect (see [`races`]).
    pub score: u64,
    /// Nonzero: `second` is in a process (index + 1) forked after `first`:
    /// the flip moves the fork before `first` (it completes when the
    /// parent has forked).
    pub until_fork: u64,
    /// Not a pair: `first` is a read of the failing thread to delay until
    /// another thread writes there (`second` is `first`).
    pub delay: bool,
    /// A delay whose later reads of the old value wait too (see
    /// [`crate::counts`]).
    pub standing: bool,
    /// Flips that go with this one (held, until): together they make a
    /// read of the failing thread see one given write of another thread
    /// (see [`crate::moves`]).
    pub extra: [Option<(Occurrence, Occurrence)>; 3],
    /// Ranked as the split of a long stretch of `first`'s thread (see
    /// [`crate::spans`]), not by its distance from the focus: kept apart
    /// from the same two instructions' instance near the focus.
    pub span: bool,
}

/// Where the races that matter are: a ring position (where the recorded
/// run failed, or where the attempt diverged) and the thread that failed
/// or diverged there.
#[derive(Clone, Copy, Debug)]
pub struct Focus {
    pub pos: u64,
    pub thread: Option<u32>,
}

impl Race {
    /// The flip that reverses this race; `defer`: the second access's
    /// thread also finishes its stretch before the first one resumes.
    pub fn flip(&self, defer: bool) -> FlipSpec {
        // A delay's second access is any write there; a fork's is counted
        // in the child, whose events start anew.
        let (held_anchor, held_k) = if self.delay {
            (0, 0)
        } else {
            anchor(&self.first)
        };
        let (until_anchor, until_k) = if self.delay || self.until_fork != 0 {
            (0, 0)
        } else {
            anchor(&self.second)
        };
        FlipSpec {
            defer,
            held: self.first.access.key,
            held_pc: self.first.access.pc,
            held_n: self.first.n,
            until: self.second.access.key,
            until_pc: self.second.access.pc,
            until_n: self.second.n,
            until_fork: self.until_fork,
            until_addr: if self.delay {
                self.first.access.addr
            } else {
                0
            },
            standing: self.delay && self.standing,
            held_anchor,
            held_k,
            until_anchor,
            until_k,
        }
    }

    /// The flips this race needs: its extra ones first, then its own.
    pub fn flips(&self, defer: bool) -> Vec<FlipSpec> {
        let mut out: Vec<FlipSpec> = self
            .extra
            .iter()
            .flatten()
            .map(|(held, until)| order_flip(until, held))
            .collect();
        out.push(self.flip(defer));
        out
    }

    /// A reads-from move (several flips), not a single race.
    pub fn is_move(&self) -> bool {
        self.extra[0].is_some()
    }

    /// The same two instructions, whatever the instances.
    pub fn static_pair(&self) -> (u64, u64) {
        (self.first.access.pc, self.second.access.pc)
    }

    /// Its extra holds as (held, until) log indices: what the tests of
    /// the races that carry them compare.
    #[cfg(test)]
    pub(crate) fn extra_holds(&self) -> Vec<(usize, usize)> {
        self.extra
            .iter()
            .flatten()
            .map(|(h, u)| (h.index, u.index))
            .collect()
    }
}

/// True if swapping `x` (first) and `y` changes a value read or left in
/// memory: a read would see another value, or the last write would be
/// another value. Swapping two writes of one value, or a read with a
/// write that does not change the value, is no flip at all; nor is a
/// read moved past a write of the very value it read (a flag set again, a
/// freed object's memory given to a new one that writes the same field):
/// the other writes between them put back what the read saw.
fn changes_values(x: &Access, y: &Access) -> bool {
    // A read's value (`before` == `after`) compares with a write's only
    // when both cover the same bytes.
    let same_bytes = x.addr == y.addr && x.size == y.size;
    match (is_write(x), is_write(y)) {
        // x would read y's value instead of the one it read.
        (false, true) => y.after != y.before && !(same_bytes && y.after == x.after),
        // y would read what was there before x instead of what it read.
        (true, false) => x.after != x.before && !(same_bytes && x.before == y.after),
        (true, true) => x.after != y.after,
        (false, false) => false,
    }
}

/// Accesses remembered per granule and thread, and races kept per other
/// thread.
const KEEP_PER_THREAD: usize = 4;
/// Reads of the failing thread tried as delays.
const DELAYS: usize = 4;
/// Accesses looked at before a fork for a child's first access.
const FORK_SCAN: usize = 20_000;
/// Accesses looked at after an access for another thread's later write.
pub(crate) const LATER_WRITE_SCAN: usize = 20_000;
/// The failing thread's last reads looked at for a later write they race
/// with (the root cause without a passing run).
pub(crate) const LATER_READS: usize = 256;
const PER_THREAD: u32 = 2;
/// Rank penalties, in ring positions of distance.
const SCORE_OTHER_READ: u64 = 8;
const SCORE_WRITES: u64 = 16;
const SCORE_DELAY: u64 = 6;

/// The races of an observed attempt that a flip could reverse, the most
/// suspect first: nearest to the focus, and among those, the ones that
/// change what the failing thread reads.
/// The count-matched delay of an observed attempt (see [`crate::counts`]),
/// if the thread at its focus left the sketch by skipping iterations.
pub fn count_delay(replay: &Replay, obs: &Observation, focus: Focus) -> Option<Race> {
    crate::counts::count_delay(&occurrences(obs), focus, &SketchOrder::new(replay))
}

pub fn races(replay: &Replay, obs: &Observation, focus: Focus) -> Vec<Race> {
    let events = SketchOrder::new(replay);
    let occ = occurrences(obs);
    // Per 8-byte granule, the last accesses of each thread (log indices).
    // A race pairs an access with the last two conflicting accesses of
    // every other thread: not only the nearest, which is often hidden
    // behind the thread's own accesses.
    let mut history: HashMap<u64, std::collections::VecDeque<usize>> = HashMap::new();
    let mut out = Vec::new();
    // Where each process is forked: its `Fork` event's ring position, and
    // where in this attempt's log the parent really forked (the copy can
    // come later than the event). After a fork, parent and child do not
    // share memory: an access of the parent races with one of the child
    // only if it came before the copy, and the flip moves the copy (not
    // the child's access) before it.
    let fork_mark: HashMap<u32, usize> = fork_marks(obs, &occ).into_iter().collect();
    // What the flip waits for (0: `y` itself; else the fork of y's process
    // + 1), or None if the sketch orders `x` before `y` (or they share no
    // memory).
    let flip_point = |i: usize, x: &Occurrence, y: &Occurrence| -> Option<u64> {
        let next = events.next_event(&x.access);
        let (px, py) = (rp::key_process(x.access.key), rp::key_process(y.access.key));
        if px == py {
            can_come_before(&y.access, next).then_some(0)
        } else {
            // Before the copy, and the held thread's next event after the
            // Fork event (the parent can fork while it waits).
            let (&mark, event) = (fork_mark.get(&py)?, events.fork_event(py)?);
            (i < mark && next > event).then_some(py as u64 + 1)
        }
    };
    let mut child_granules: std::collections::HashSet<(u32, u64)> = Default::default();
    for (j, y) in occ.iter().enumerate() {
        let a = &y.access;
        let granule = a.addr & !7;
        // A forked child's first access to a granule: what the parent's
        // threads did to it just before the fork (the history has moved
        // on since).
        let py = rp::key_process(a.key);
        let mut before_fork: Vec<usize> = Vec::new();
        if let Some(&end) = fork_mark.get(&py) {
            if child_granules.insert((py, granule)) {
                let mut kept: Vec<(u32, usize)> = Vec::new();
                for i in (end.saturating_sub(FORK_SCAN)..end).rev() {
                    let x = &occ[i].access;
                    if x.addr & !7 != granule || rp::key_process(x.key) == py {
                        continue;
                    }
                    let n = kept.iter().filter(|(k, _)| *k == x.key).count();
                    if n < KEEP_PER_THREAD {
                        kept.push((x.key, i));
                    }
                }
                before_fork = kept.into_iter().map(|(_, i)| i).collect();
                before_fork.sort_unstable();
            }
        }
        let h = history.entry(granule).or_default();
        let mut per_thread: Vec<(u32, u32)> = Vec::new();
        let candidates: Vec<usize> = before_fork
            .iter()
            .copied()
            .chain(h.iter().copied())
            .collect();
        for &i in candidates.iter().rev() {
            let x = &occ[i];
            if x.access.key == a.key
                || !(is_write(a) || is_write(&x.access))
                || !overlap(&x.access, a)
            {
                continue;
            }
            let seen = match per_thread.iter_mut().find(|(k, _)| *k == x.access.key) {
                Some((_, n)) => n,
                None => {
                    per_thread.push((x.access.key, 0));
                    &mut per_thread.last_mut().expect("just pushed").1
                }
            };
            if *seen >= PER_THREAD || !changes_values(&x.access, a) {
                continue;
            }
            let Some(until_fork) = flip_point(i, x, y) else {
                continue;
            };
            *seen += 1;
            let distance = y.access.turn.abs_diff(focus.pos);
            // Flips that change what the failing thread reads come first;
            // then those that change any read; swapping two writes last.
            let reads = |o: &Occurrence| !is_write(&o.access);
            let failing = |o: &Occurrence| focus.thread == Some(o.access.key);
            let penalty = if (reads(x) && failing(x)) || (reads(y) && failing(y)) {
                0
            } else if reads(x) || reads(y) {
                SCORE_OTHER_READ
            } else {
                SCORE_WRITES
            };
            out.push(Race {
                first: *x,
                second: *y,
                distance,
                score: distance + penalty,
                until_fork,
                delay: false,
                standing: false,
                extra: [None; 3],
                span: false,
            });
        }
        // Keep each thread's last accesses only: one busy thread must not
        // push the others' out of the history.
        let mine: Vec<usize> = h
            .iter()
            .copied()
            .filter(|&i| occ[i].access.key == a.key)
            .collect();
        if mine.len() >= KEEP_PER_THREAD {
            let oldest = mine[0];
            h.retain(|&i| i != oldest);
        }
        h.push_back(j);
    }
    let writes = WriteIndex::new(&occ);
    out.extend(delays(&occ, &writes, focus, &events));
    out.extend(split_updates(&occ, &writes, focus, &events));
    out.extend(crate::moves::reads_from_moves(&occ, focus, &events));
    crate::spans::rank_long_spans(&mut out, &events);
    out.extend(crate::spans::stale_updates(&occ, focus, &events));
    // At one rank, a reads-from move first: it changes the element the
    // failing thread took, which a plain flip there leaves alone.
    out.sort_by(|p, q| {
        p.score
            .cmp(&q.score)
            .then(q.is_move().cmp(&p.is_move()))
            .then(q.span.cmp(&p.span))
            .then(q.second.index.cmp(&p.second.index))
    });
    // A polling loop that skipped too many iterations: the one delay that
    // makes its event count match the sketch's comes before everything.
    if let Some(d) = crate::counts::count_delay(&occ, focus, &events) {
        out.insert(0, d);
    }
    out
}

/// Reads to delay: the failing thread's last reads (of different places)
/// before the focus, of memory some other thread writes in this attempt or
/// that nobody has written yet — a check that passed because the other
/// thread's write came too late. Ranked like the nearest races.
fn delays(
    occ: &[Occurrence],
    writes: &WriteIndex,
    focus: Focus,
    events: &SketchOrder,
) -> Vec<Race> {
    let Some(me) = focus.thread else {
        return Vec::new();
    };
    let written: std::collections::HashSet<u64> = occ
        .iter()
        .filter(|o| is_write(&o.access))
        .map(|o| o.access.addr)
        .collect();
    // Memory another thread can still write, or that nobody wrote yet
    // (the write may come only after the attempt stopped).
    let candidate = |o: &Occurrence| {
        let a = &o.access;
        let after = occ.partition_point(|p| p.index <= o.index);
        a.key == me
            && !is_write(a)
            && a.turn <= focus.pos
            && (!written.contains(&a.addr)
                || later_write(occ, writes, after, a, events, |y| y.addr == a.addr))
    };
    let delay = |o: &Occurrence, rank: usize| Race {
        first: *o,
        second: *o,
        distance: o.access.turn.abs_diff(focus.pos),
        score: o.access.turn.abs_diff(focus.pos) + SCORE_DELAY + rank as u64,
        until_fork: 0,
        delay: true,
        standing: false,
        extra: [None; 3],
        span: false,
    };
    let mut out = Vec::new();
    // The last reads of each place before the focus... (a place already
    // taken is skipped before `candidate`, whose scan for a later write is
    // long: a thread that reads a few places in a loop repeats them
    // thousands of times)
    let mut seen = std::collections::HashSet::new();
    for o in occ.iter().rev() {
        if out.len() >= DELAYS {
            break;
        }
        if !seen.contains(&o.access.addr) && candidate(o) {
            seen.insert(o.access.addr);
            out.push(delay(o, out.len()));
        }
    }
    // ...and the first ones of the thread's last stretch: a thread that
    // ran on past where the recording had it stop (a loop that read a flag
    // too early) went astray at its first read there.
    let stretch = occ
        .iter()
        .rev()
        .find(|o| o.access.key == me && o.access.turn <= focus.pos)
        .map(|o| o.access.last_event);
    let mut seen = std::collections::HashSet::new();
    let mut firsts = 0;
    for o in occ.iter().filter(|o| Some(o.access.last_event) == stretch) {
        if firsts >= DELAYS {
            break;
        }
        if seen.contains(&o.access.addr) || !candidate(o) {
            continue;
        }
        seen.insert(o.access.addr);
        let dup = out
            .iter()
            .any(|r: &Race| (r.first.access.pc, r.first.n) == (o.access.pc, o.n));
        if !dup {
            out.push(delay(o, firsts));
            firsts += 1;
        }
    }
    out
}

/// True if the sketch lets access `y` come before the event at ring
/// position `next` (the event before `y` in its thread comes first).
pub(crate) fn can_come_before(y: &Access, next: u64) -> bool {
    y.last_event == 0 || y.last_event - 1 < next
}

/// True if another thread of `x`'s process writes memory that `touches`
/// accepts (a place `x` shares a byte with) among the LATER_WRITE_SCAN
/// accesses of `occ` from `from`, where the sketch lets that write come
/// before `x`'s thread's next event: a hold at `x` can wait for it.
fn later_write(
    occ: &[Occurrence],
    writes: &WriteIndex,
    from: usize,
    x: &Access,
    events: &SketchOrder,
    touches: impl Fn(&Access) -> bool,
) -> bool {
    let next = events.next_event(x);
    let to = from.saturating_add(LATER_WRITE_SCAN).min(occ.len());
    writes.near(x, from, to).any(|i| {
        let y = &occ[i].access;
        y.key != x.key
            && rp::key_process(y.key) == rp::key_process(x.key)
            && touches(y)
            && can_come_before(y, next)
    })
}

/// The log indices of the writes to each 8-byte word, ascending: what
/// [`later_write`] looks at, instead of scanning every access after `x`
/// (a run whose threads read-modify-write in a loop has thousands of
/// candidates, each of which scanned up to LATER_WRITE_SCAN accesses).
struct WriteIndex(HashMap<u64, Vec<usize>>);

impl WriteIndex {
    fn new(occ: &[Occurrence]) -> WriteIndex {
        let mut by_word: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, o) in occ.iter().enumerate() {
            if is_write(&o.access) {
                for w in words(&o.access) {
                    by_word.entry(w).or_default().push(i);
                }
            }
        }
        WriteIndex(by_word)
    }

    /// The writes in `occ[from..to]` to a word `x` touches (a write over
    /// two of them may come twice).
    fn near<'a>(&'a self, x: &Access, from: usize, to: usize) -> impl Iterator<Item = usize> + 'a {
        words(x).flat_map(move |w| {
            let list = self.0.get(&w).map(Vec::as_slice).unwrap_or_default();
            let start = list.partition_point(|&i| i < from);
            list[start..].iter().copied().take_while(move |&i| i < to)
        })
    }
}

/// The 8-byte words an access touches.
fn words(a: &Access) -> std::ops::RangeInclusive<u64> {
    a.addr / 8..=(a.addr + a.size.max(1) as u64 - 1) / 8
}

/// Writes to delay: a thread's write to a place it read earlier in the
/// same stretch (`b = x; ...; x = b + d`, a read-modify-write the sketch
/// does not protect) where another thread writes later in this attempt.
/// Held before its write until the other thread has written there, the
/// thread writes back a stale value: the other update is lost. The last
/// such write of each instruction before the focus, nearest first.
fn split_updates(
    occ: &[Occurrence],
    writes: &WriteIndex,
    focus: Focus,
    events: &SketchOrder,
) -> Vec<Race> {
    // Writes that close a read-modify-write in one stretch (log indices).
    let mut read_in: HashMap<(u32, u64), u64> = HashMap::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (i, o) in occ.iter().enumerate() {
        let a = &o.access;
        if a.turn > focus.pos {
            break;
        }
        let k = (a.key, a.addr);
        if !is_write(a) {
            read_in.insert(k, a.last_event);
        } else if read_in.remove(&k) == Some(a.last_event) {
            candidates.push(i);
        }
    }
    let can_split = |i: usize| {
        let x = &occ[i].access;
        later_write(occ, writes, i + 1, x, events, |y| overlap(x, y))
    };
    let mut picked: Vec<usize> = Vec::new();
    let mut done: std::collections::HashSet<(u32, u64)> = Default::default();
    for &i in candidates.iter().rev() {
        if picked.len() >= DELAYS {
            break;
        }
        let a = &occ[i].access;
        if !done.contains(&(a.key, a.pc)) && can_split(i) {
            done.insert((a.key, a.pc));
            picked.push(i);
        }
    }
    picked
        .into_iter()
        .enumerate()
        .map(|(rank, i)| {
            let o = occ[i];
            let distance = o.access.turn.abs_diff(focus.pos);
            Race {
                first: o,
                second: o,
                distance,
                score: distance + SCORE_DELAY + rank as u64,
                until_fork: 0,
                delay: true,
                standing: false,
                extra: [None; 3],
                span: false,
            }
        })
        .collect()
}

/// The flip that keeps two racing accesses in the order a run made
/// them: `second` is held until `first` has happened.
pub fn order_flip(first: &Occurrence, second: &Occurrence) -> FlipSpec {
    FlipSpec {
        defer: false,
        held: second.access.key,
        held_pc: second.access.pc,
        held_n: second.n,
        until: first.access.key,
        until_pc: first.access.pc,
        until_n: first.n,
        until_fork: 0,
        until_addr: 0,
        standing: false,
        held_anchor: anchor(second).0,
        held_k: second.k,
        until_anchor: anchor(first).0,
        until_k: first.k,
    }
}

/// Where a flip counts `o` from, and its number there: the thread's last
/// event when it was made (see [`FlipSpec::held_anchor`]).
fn anchor(o: &Occurrence) -> (u64, u32) {
    (reprise_abi::observe::anchor_of(o.access.last_event), o.k)
}

#[cfg(test)]
mod tests {
    use reprise_abi::observe::{anchor_of, Access, ACCESS_WRITE};

    use super::*;

    fn occ(key: u32, pc: u64, write: bool, last_event: u64, n: u32, k: u32) -> Occurrence {
        Occurrence {
            access: Access {
                key,
                pc,
                flags: if write { ACCESS_WRITE } else { 0 },
                last_event,
                ..Access::default()
            },
            n,
            k,
            index: n as usize,
        }
    }

    /// A flip names its two accesses both ways: by their occurrence in
    /// the run (what the attempt log and the root cause show) and by their
    /// occurrence since their thread's last event (what the agent counts:
    /// an earlier flip that adds or drops a loop iteration leaves it the
    /// same access).
    #[test]
    fn a_flip_is_anchored_at_each_threads_last_event() {
        let held = occ(2, 0x10, false, 41, 7, 1);
        let until = occ(3, 0x20, true, 0, 2, 2);
        let race = Race {
            first: held,
            second: until,
            distance: 0,
            score: 0,
            until_fork: 0,
            delay: false,
            standing: false,
            extra: [None; 3],
            span: false,
        };
        let f = race.flip(false);
        assert_eq!((f.held_n, f.until_n), (7, 2));
        assert_eq!((f.held_anchor, f.held_k), (anchor_of(41), 1));
        // Before its thread's first event: anchored all the same.
        assert_eq!((f.until_anchor, f.until_k), (anchor_of(0), 2));
        assert_ne!(f.until_anchor, 0);
        // The hold of a reads-from move: the same anchors, held and
        // waited-for the other way round.
        let o = order_flip(&held, &until);
        assert_eq!((o.held_anchor, o.held_k), (anchor_of(0), 2));
        assert_eq!((o.until_anchor, o.until_k), (anchor_of(41), 1));
        // A delay waits for any write there: counted over the run.
        let delay = Race {
            delay: true,
            second: held,
            ..race
        };
        assert_eq!(delay.flip(false).held_anchor, 0);
        assert_eq!(delay.flip(false).until_anchor, 0);
    }

    fn at(addr: u64, write: bool, before: u64, after: u64) -> Access {
        Access {
            addr,
            size: 8,
            flags: if write { ACCESS_WRITE } else { 0 },
            before,
            after,
            ..Access::default()
        }
    }

    /// A flip that would make a read see the value it saw already is no
    /// flip: a freed object's field written again with the same value by
    /// the next object at that address, after the destructor's write.
    #[test]
    fn a_read_moved_past_a_write_of_its_own_value_changes_nothing() {
        let read_alive = at(0x100, false, 0x600d, 0x600d);
        let destructor = at(0x100, true, 0x600d, 0xdead);
        let constructor = at(0x100, true, 0xdead, 0x600d);
        assert!(changes_values(&read_alive, &destructor));
        assert!(!changes_values(&read_alive, &constructor));
        // The other way round: a read moved before a write reads what was
        // there before it.
        let read_dead = at(0x100, false, 0xdead, 0xdead);
        assert!(changes_values(&destructor, &read_dead));
        assert!(!changes_values(
            &constructor,
            &at(0x100, false, 0xdead, 0xdead)
        ));
        // Other bytes: the values do not compare, the write's change decides.
        let narrow = Access {
            size: 4,
            ..at(0x100, false, 0x600d, 0x600d)
        };
        assert!(changes_values(&narrow, &constructor));
        assert!(!changes_values(&narrow, &at(0x100, true, 7, 7)));
    }
}
