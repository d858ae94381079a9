//! The accesses of an observed attempt, numbered: each access with its
//! occurrence number (how many times its thread had made an access at this
//! instruction), which names the same access across attempts; lookups, and
//! a digest of the reads-from relation.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use reprise_abi::observe::{Access, ACCESS_FORK, ACCESS_WRITE};

use crate::observe::Observation;

/// One access of an observed attempt, with its occurrence number (how many
/// times its thread had made an access at this instruction, itself
/// included).
#[derive(Clone, Copy, Debug)]
pub struct Occurrence {
    pub access: Access,
    pub n: u32,
    /// Its occurrence number among the thread's accesses at `pc` since
    /// the thread's last event (`access.last_event`): what a flip anchored
    /// at that event counts.
    pub k: u32,
    /// Index in the attempt's log.
    pub index: usize,
}

/// True if the access writes.
pub fn is_write(a: &Access) -> bool {
    a.flags & ACCESS_WRITE != 0
}

/// The two accesses touch a common byte (same granule is not enough: two
/// `int`s side by side do not race).
pub fn overlap(x: &Access, y: &Access) -> bool {
    let end = |a: &Access| a.addr + (a.size.max(1) as u64);
    x.addr < end(y) && y.addr < end(x)
}

/// Every access of the log with its occurrence number.
pub fn occurrences(obs: &Observation) -> Vec<Occurrence> {
    let mut count: HashMap<(u32, u64), u32> = HashMap::new();
    // Per (thread, pc): the stretch counted in, and the count there.
    let mut in_stretch: HashMap<(u32, u64), (u64, u32)> = HashMap::new();
    obs.accesses
        .iter()
        .enumerate()
        .filter(|(_, a)| a.flags & ACCESS_FORK == 0)
        .map(|(index, a)| {
            let n = count.entry((a.key, a.pc)).or_insert(0);
            *n += 1;
            let s = in_stretch.entry((a.key, a.pc)).or_insert((a.last_event, 0));
            if s.0 != a.last_event {
                *s = (a.last_event, 0);
            }
            s.1 += 1;
            Occurrence {
                access: *a,
                n: *n,
                k: s.1,
                index,
            }
        })
        .collect()
}

/// Where each forked child's memory was copied in the log: the child's
/// process and the index into `occ` (its [`occurrences`]) of the first
/// access logged after the copy. The copy can come later than the
/// child's `Fork` event; before it, parent and child share what they read.
pub fn fork_marks(obs: &Observation, occ: &[Occurrence]) -> Vec<(u32, usize)> {
    obs.accesses
        .iter()
        .enumerate()
        .filter(|(_, a)| a.flags & ACCESS_FORK != 0)
        .map(|(i, a)| (a.addr as u32, occ.partition_point(|o| o.index < i)))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(key: u32, pc: u64, last_event: u64) -> Access {
        Access {
            key,
            pc,
            last_event,
            ..Access::default()
        }
    }

    /// A loop of three iterations, an event in each: the instruction's
    /// occurrences count on over the run (`n`) and anew after each event
    /// of its thread (`k`), another thread's accesses in between or not.
    #[test]
    fn occurrences_count_over_the_run_and_within_the_stretch() {
        let log = vec![
            at(1, 0x10, 5),
            at(1, 0x10, 5),
            at(2, 0x10, 6),
            at(1, 0x10, 8),
            at(1, 0x20, 8),
            at(1, 0x10, 8),
            at(1, 0x10, 12),
        ];
        let obs = Observation {
            accesses: log,
            ..Observation::default()
        };
        let occ = occurrences(&obs);
        let nk: Vec<(u32, u32)> = occ.iter().map(|o| (o.n, o.k)).collect();
        assert_eq!(nk, [(1, 1), (2, 2), (1, 1), (3, 1), (1, 1), (4, 2), (5, 1)]);
    }
}
