//! What an observed run looks like to the solver: its accesses as query
//! accesses (locations qualified by process; a forked child's first reads
//! taken for reads of its parent's memory at the fork), and an answer's
//! order turned back into the replayer's flips.

use reprise_abi::observe::ACCESS_WRITE;
use reprise_abi::replay as rp;
use reprise_replayer::accesses::{fork_marks, occurrences};
use reprise_replayer::observe::{FlipSpec, Observation};
use reprise_replayer::order::SketchOrder;

use crate::query::{Access, AccessId};

/// Memory is per process: the process in the top bits of a location.
fn location(process: u32, addr: u64) -> u64 {
    ((process as u64) << 52) ^ (addr & !7)
}

/// The accesses an observed run made, as the solver sees them.
///
/// A forked child's first read of a granule (before it wrote there) reads
/// what its parent's memory held when it forked: it is taken for a read of
/// the parent's location, pinned just before the `Fork` event (in a replay
/// the forking thread holds the baton through the copy, so the copy comes
/// at that event's turn) and placed in the log where the parent really
/// forked (see [`fork_reads`]).
pub fn query_accesses(order: &SketchOrder, obs: &Observation) -> Vec<Access> {
    let occ = occurrences(obs);
    let mut out: Vec<Access> = occ
        .iter()
        .map(|o| {
            let a = &o.access;
            Access {
                id: AccessId {
                    thread: a.key,
                    pc: a.pc,
                    n: o.n,
                },
                location: location(rp::key_process(a.key), a.addr),
                write: a.flags & ACCESS_WRITE != 0,
                value: a.after,
                before: a.before,
                after_event: a.last_event.saturating_sub(1),
                before_event: order.next_event(a),
            }
        })
        .collect();
    // Where each child was really forked in this run's log (its marker's
    // place among the accesses).
    for (child, mark) in fork_marks(obs, &occ) {
        let (Some(parent), Some(fork)) = (order.fork_parent(child), order.fork_event(child)) else {
            continue;
        };
        let mut seen: std::collections::HashSet<u64> = Default::default();
        let mut moved = Vec::new();
        for (i, a) in out.iter_mut().enumerate() {
            // The child's first access there; a write first makes its
            // later reads read its own memory.
            if rp::key_process(a.id.thread) != child || !seen.insert(a.location) || a.write {
                continue;
            }
            a.location = location(parent, a.location & ((1 << 52) - 1));
            a.after_event = fork.saturating_sub(1);
            a.before_event = fork;
            moved.push(i);
        }
        // In log order, at the fork: the soft constraints keep each read
        // between the writes observed around it.
        let mut reads: Vec<Access> = Vec::new();
        for &i in moved.iter().rev() {
            reads.push(out.remove(i));
        }
        reads.reverse();
        let at = mark.min(out.len());
        out.splice(at..at, reads);
    }
    out
}

/// The reads [`query_accesses`] moved to their parent's fork: a flip that
/// waits for one waits for the child's fork (`until_fork`).
pub(crate) fn fork_reads(order: &SketchOrder, accesses: &[Access]) -> Vec<(AccessId, u32)> {
    accesses
        .iter()
        .filter(|a| {
            let p = rp::key_process(a.id.thread);
            !a.write
                && (a.location >> 52) as u32 != p
                && order.fork_event(p).is_some_and(|f| a.before_event == f)
        })
        .map(|a| (a.id, rp::key_process(a.id.thread)))
        .collect()
}

/// The flip that holds `held` until `until` has been made; `forked`: the
/// reads a forked child made of its parent's memory. A parent's access to
/// come after such a read waits for the child's fork; a child's read
/// cannot wait for the parent (its memory is copied at the fork): None.
pub(crate) fn flip(
    held: AccessId,
    until: AccessId,
    forked: &[(AccessId, u32)],
) -> Option<FlipSpec> {
    let child = |id: AccessId| forked.iter().find(|(a, _)| *a == id).map(|(_, p)| *p);
    if child(held).is_some() {
        return None;
    }
    Some(FlipSpec {
        held: held.thread,
        held_pc: held.pc,
        held_n: held.n,
        until: until.thread,
        until_pc: until.pc,
        until_n: until.n,
        defer: false,
        until_fork: child(until).map_or(0, |p| p as u64 + 1),
        until_addr: 0,
        standing: false,
        held_anchor: 0,
        held_k: 0,
        until_anchor: 0,
        until_k: 0,
    })
}
