//! Places on one thread's stack that other threads reach: a struct on the
//! stack of the thread that made it, handed to others by pointer (a
//! thread's argument, a request with its completion, a pool). The other
//! threads' accesses go through a pointer and have access points; the
//! owner's go through its stack pointer and have none, so the races
//! between them are not seen, and no flip can hold the owner.
//!
//! What an observed attempt shows is learned here, for the attempts after
//! it: each thread's start logs its stack pointer ([`ACCESS_STACK`]); an
//! access by one thread to another's stack names a *shared place*. Shared
//! places are then counted as shared even from their owner (the agent's
//! local-variable rule exempts them) and up to [`MAX_WATCH`] at a time get
//! a hardware watchpoint in every thread; each hit ([`ACCESS_WATCH`])
//! names the instruction after the access, which is decoded and added to
//! the access table, so that later attempts log the owner's accesses and
//! flips can hold it there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use reprise_abi::observe::{
    Access, AccessPoint, ACCESS_STACK, ACCESS_WATCH, MAX_SHARED_STACK, MAX_WATCH,
};
use reprise_abi::replay as rp;
use reprise_tracee::access_points::Disassembler;

/// How far below its starting stack pointer a thread's stack may reach
/// (glibc's default thread stack and the usual main-thread limit).
const STACK_SPAN: u64 = 8 << 20;

/// The stack places and instructions learned so far.
#[derive(Default)]
pub struct StackSharing {
    /// 8-byte places (runtime addresses) on a thread's stack that another
    /// thread accessed, in the order found.
    shared: Vec<u64>,
    /// Places already given a watchpoint in an attempt.
    watched: HashSet<u64>,
    /// Instructions through the stack pointer found at shared places, by
    /// ELF address.
    extra: BTreeMap<u64, AccessPoint>,
    /// What each reported address-after resolved to.
    resolved: HashMap<u64, Option<AccessPoint>>,
}

/// What an attempt's observation block gets from what was learned.
#[derive(Clone, Debug, Default)]
pub struct StackPlan {
    /// The executable's access points and the stack instructions found.
    pub points: Arc<Vec<AccessPoint>>,
    pub shared: Vec<u64>,
    pub watch: Vec<u64>,
}

impl StackSharing {
    /// How many places and instructions were found so far (both only
    /// grow): an observation made before sees less than one made after.
    pub fn generation(&self) -> u64 {
        (self.shared.len() + self.extra.len()) as u64
    }

    /// The table and places for the next attempt: `base` (the executable's
    /// access points) with the stack instructions found, every shared
    /// place, and the next places not yet watched.
    pub fn plan(&self, base: &Arc<Vec<AccessPoint>>) -> StackPlan {
        let points = if self.extra.is_empty() {
            base.clone()
        } else {
            let mut all: Vec<AccessPoint> = base.iter().copied().collect();
            all.extend(self.extra.values().copied());
            all.sort_by_key(|p| p.vaddr);
            all.dedup_by_key(|p| p.vaddr);
            Arc::new(all)
        };
        StackPlan {
            points,
            shared: self.shared.clone(),
            watch: self
                .shared
                .iter()
                .copied()
                .filter(|p| !self.watched.contains(p))
                .take(MAX_WATCH)
                .collect(),
        }
    }

    /// Learns from an attempt's log, run with `plan`, and returns the log
    /// as the search reads it: the markers gone, each watchpoint hit at an
    /// instruction the table did not have turned into an access at it.
    pub fn learn(
        &mut self,
        accesses: Vec<Access>,
        plan: &StackPlan,
        disasm: Option<&Disassembler>,
    ) -> Vec<Access> {
        self.watched.extend(plan.watch.iter().copied());
        let tops = stack_tops(&accesses);
        let in_table = |pc: u64| plan.points.binary_search_by_key(&pc, |p| p.vaddr).is_ok();
        let mut out = Vec::with_capacity(accesses.len());
        for a in accesses {
            if a.flags & ACCESS_STACK != 0 {
                continue;
            }
            if a.flags & ACCESS_WATCH != 0 {
                let Some(disasm) = disasm else { continue };
                let point = *self
                    .resolved
                    .entry(a.pc)
                    .or_insert_with(|| disasm.access_point_before(a.pc));
                // Unknown (libc's, the agent's) or already logged by its
                // breakpoint.
                let Some(point) = point.filter(|p| !in_table(p.vaddr)) else {
                    continue;
                };
                self.extra.insert(point.vaddr, point);
                out.push(Access {
                    flags: point.flags,
                    pc: point.vaddr,
                    before: a.after,
                    ..a
                });
                continue;
            }
            if let Some(owner) = stack_owner(&tops, a.addr) {
                let place = a.addr & !7;
                if owner != a.key
                    && same_process(owner, a.key)
                    && self.shared.len() < MAX_SHARED_STACK
                    && !self.shared.contains(&place)
                {
                    self.shared.push(place);
                }
            }
            out.push(a);
        }
        if std::env::var_os("REPRISE_DEBUG_STACKS").is_some() {
            eprintln!(
                "stacks: watched {:x?} tops {:x?} shared {:x?} extra {:x?} out {}",
                plan.watch,
                tops,
                self.shared,
                self.extra.keys().collect::<Vec<_>>(),
                out.len()
            );
        }
        out
    }
}

/// Each thread's starting stack pointer, by key, per process.
fn stack_tops(accesses: &[Access]) -> Vec<(u32, u64)> {
    let mut tops: Vec<(u32, u64)> = accesses
        .iter()
        .filter(|a| a.flags & ACCESS_STACK != 0)
        .map(|a| (a.key, a.addr))
        .collect();
    tops.sort_by_key(|&(_, top)| top);
    tops
}

/// The thread whose stack holds `addr`: the one that started with the
/// lowest stack pointer above it, within [`STACK_SPAN`], of the same
/// process (another process's addresses are its own).
fn stack_owner(tops: &[(u32, u64)], addr: u64) -> Option<u32> {
    let i = tops.partition_point(|&(_, top)| top < addr);
    let &(key, top) = tops.get(i)?;
    (top - addr <= STACK_SPAN).then_some(key)
}

/// Same process: only then do two keys' addresses name the same memory.
fn same_process(a: u32, b: u32) -> bool {
    rp::key_process(a) == rp::key_process(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reprise_abi::observe::{ACCESS_READ, ACCESS_WRITE};

    fn access(key: u32, flags: u8, pc: u64, addr: u64) -> Access {
        Access {
            key,
            flags,
            size: 4,
            pc,
            addr,
            ..Access::default()
        }
    }

    /// Another thread's access to a thread's stack makes the place shared
    /// and watched next; the owner's own access there does not; the
    /// markers leave the log.
    #[test]
    fn another_threads_access_to_a_stack_names_a_shared_place() {
        let main_top = 0x7fff_ffff_e000;
        let worker_top = 0x7fff_f7a0_0000;
        let log = vec![
            access(1, ACCESS_STACK, 0, main_top),
            access(2, ACCESS_STACK, 0, worker_top),
            // The worker reads main's local through a pointer.
            access(2, ACCESS_READ, 0x1200, main_top - 0x44),
            // The worker's own stack: not shared.
            access(2, ACCESS_WRITE, 0x1210, worker_top - 0x100),
            // A global.
            access(1, ACCESS_WRITE, 0x1220, 0x5555_5555_8010),
        ];
        let mut s = StackSharing::default();
        let base = Arc::new(Vec::new());
        let out = s.learn(log, &s.plan(&base), None);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|a| a.flags & ACCESS_STACK == 0));
        let next = s.plan(&base);
        assert_eq!(next.shared, vec![(main_top - 0x44) & !7]);
        assert_eq!(next.watch, next.shared);
        // Watched once: the slot goes to the next place.
        s.learn(Vec::new(), &next, None);
        assert!(s.plan(&base).watch.is_empty());
        assert_eq!(s.plan(&base).shared, next.shared);
    }
}
