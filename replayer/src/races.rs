//! Races in an observed attempt: pairs of accesses to the same memory by
//! two threads, at least one a write, that the sketch did not order — so
//! that the second could have come first.
//!
//! The sketch orders whole stretches of code only through its events: an
//! access `x` of thread A between A's events and an access `y` of thread B
//! can be swapped (A held at `x` until B made `y`) exactly when B's event
//! before `y` comes before A's event after `x` in the recorded order.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use reprise_abi::observe::{Access, ACCESS_WRITE};
use reprise_abi::replay as rp;

use crate::observe::{FlipSpec, Observation};
use crate::Replay;

/// One access of an observed attempt, with its occurrence number (how many
/// times its thread had made an access at this instruction, itself
/// included).
#[derive(Clone, Copy, Debug)]
pub struct Occurrence {
    pub access: Access,
    pub n: u32,
    /// Index in the attempt's log.
    pub index: usize,
}

/// A race: `first` happened before `second`; the flip makes `second` come
/// first.
#[derive(Clone, Copy, Debug)]
pub struct Race {
    pub first: Occurrence,
    pub second: Occurrence,
    /// How far (in ring positions) from the point of interest (the
    /// recorded failure, or where the attempt diverged).
    pub distance: u64,
}

impl Race {
    /// The flip that reverses this race.
    pub fn flip(&self) -> FlipSpec {
        FlipSpec {
            held: self.first.access.key,
            held_pc: self.first.access.pc,
            held_n: self.first.n,
            until: self.second.access.key,
            until_pc: self.second.access.pc,
            until_n: self.second.n,
        }
    }

    /// The same two instructions, whatever the instances.
    pub fn static_pair(&self) -> (u64, u64) {
        (self.first.access.pc, self.second.access.pc)
    }
}

fn is_write(a: &Access) -> bool {
    a.flags & ACCESS_WRITE != 0
}

/// Every access of the log with its occurrence number.
pub fn occurrences(obs: &Observation) -> Vec<Occurrence> {
    let mut count: HashMap<(u32, u64), u32> = HashMap::new();
    obs.accesses
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let n = count.entry((a.key, a.pc)).or_insert(0);
            *n += 1;
            Occurrence {
                access: *a,
                n: *n,
                index,
            }
        })
        .collect()
}

/// Ring positions of each thread's events, in order.
fn event_positions(replay: &Replay) -> HashMap<u32, Vec<u64>> {
    let mut m: HashMap<u32, Vec<u64>> = HashMap::new();
    for (e, &pos) in replay.events.iter().zip(&replay.positions) {
        m.entry(rp::key(e.process as u32, e.thread))
            .or_default()
            .push(pos);
    }
    m
}

/// The races of an observed attempt that a flip could reverse, nearest to
/// ring position `focus` first. One race per pair of instances of the same
/// memory granule (8 bytes) and threads: the nearest earlier access of the
/// other thread.
pub fn races(replay: &Replay, obs: &Observation, focus: u64) -> Vec<Race> {
    let events = event_positions(replay);
    let occ = occurrences(obs);
    // Per granule: the last write, and the last read of each thread since.
    #[derive(Default)]
    struct Cell {
        write: Option<usize>,
        reads: Vec<usize>,
    }
    let mut cells: HashMap<u64, Cell> = HashMap::new();
    let mut out = Vec::new();
    let feasible = |x: &Occurrence, y: &Occurrence| -> bool {
        // The held thread's next event: its first not yet performed.
        let next = events
            .get(&x.access.key)
            .and_then(|v| v.iter().find(|&&p| p >= x.access.turn).copied())
            .unwrap_or(u64::MAX);
        y.access.last_event == 0 || y.access.last_event - 1 < next
    };
    for (j, y) in occ.iter().enumerate() {
        let a = &y.access;
        let granule = a.addr & !7;
        let cell = cells.entry(granule).or_default();
        let mut firsts: Vec<usize> = Vec::new();
        if let Some(w) = cell.write {
            if occ[w].access.key != a.key {
                firsts.push(w);
            }
        }
        if is_write(a) {
            firsts.extend(
                cell.reads
                    .iter()
                    .copied()
                    .filter(|&r| occ[r].access.key != a.key),
            );
            cell.write = Some(j);
            cell.reads.clear();
        } else {
            cell.reads.retain(|&r| occ[r].access.key != a.key);
            cell.reads.push(j);
        }
        for i in firsts {
            let x = &occ[i];
            if !feasible(x, y) {
                continue;
            }
            out.push(Race {
                first: *x,
                second: *y,
                distance: y.access.turn.abs_diff(focus),
            });
        }
    }
    out.sort_by(|p, q| {
        p.distance
            .cmp(&q.distance)
            .then(q.second.index.cmp(&p.second.index))
    });
    out
}

/// A digest of the attempt's reads-from relation: which write (thread,
/// instruction, occurrence) each read saw. Two attempts with the same
/// digest are the same execution as far as shared memory goes.
pub fn reads_from_digest(obs: &Observation) -> u64 {
    let occ = occurrences(obs);
    let mut last_write: HashMap<u64, usize> = HashMap::new();
    let mut pairs: Vec<(u32, u64, u32, u32, u64, u32)> = Vec::new();
    for (j, o) in occ.iter().enumerate() {
        let a = &o.access;
        let granule = a.addr & !7;
        if !is_write(a) {
            let w = last_write.get(&granule).map(|&w| &occ[w]);
            pairs.push((
                a.key,
                a.pc,
                o.n,
                w.map_or(0, |w| w.access.key),
                w.map_or(0, |w| w.access.pc),
                w.map_or(0, |w| w.n),
            ));
        } else {
            last_write.insert(granule, j);
        }
    }
    pairs.sort_unstable();
    let mut h = DefaultHasher::new();
    pairs.hash(&mut h);
    h.finish()
}

/// The log entry of `key`'s `n`-th access at `pc`, if the attempt made it.
pub fn find(obs: &Observation, key: u32, pc: u64, n: u32) -> Option<Occurrence> {
    occurrences(obs)
        .into_iter()
        .find(|o| o.access.key == key && o.access.pc == pc && o.n == n)
}
