//! The observation block: breakpoints on the main executable's memory
//! accesses, used in replay to observe races, to preempt between sketch
//! events (the `random` strategy) and to flip races (the `feedback`
//! strategy).
//!
//! The supervisor decodes the executable (iced-x86), writes the table of
//! [`AccessPoint`]s, the flips of the schedule and the options into a
//! second shared file whose path it passes in [`ENV_OBSERVE`]. The agent
//! writes an `int3` over the first byte of every access point. Each hit
//! traps to the agent's SIGTRAP handler (a few µs, no ptrace): it computes
//! the effective address from the saved registers, may hold the thread
//! (a flip) or pass the baton (a preemption), then single-steps the
//! original instruction (the byte restored, TF set) and logs an [`Access`]
//! with the value before and after. Only one thread runs at a time in a
//! replay, so restoring the byte for one step is safe.
//!
//! Accesses near the thread's own stack pointer are its locals: they are
//! neither logged nor counted, the same way in every attempt — unless the
//! supervisor lists the address in [`ObserveHeader::shared_stack`]: another
//! thread reached it (a struct on a thread's stack handed to others). To
//! find the owner's own instructions for such a place (through the stack
//! pointer: no access point), the supervisor names up to [`MAX_WATCH`] of
//! them in [`ObserveHeader::watch`]; each thread puts a hardware watchpoint
//! on them (a perf breakpoint that raises SIGTRAP, `TRAP_PERF`) and logs
//! each hit as an [`ACCESS_WATCH`] entry, from which the supervisor decodes
//! the instruction and adds it to the table of the next attempts.

use core::sync::atomic::{AtomicU32, AtomicU64};

/// Environment variable holding the path of the observation block.
pub const ENV_OBSERVE: &str = "REPRISE_OBSERVE";

pub const MAGIC: u64 = u64::from_le_bytes(*b"REPROBS1");

/// `AccessPoint::base`/`index`: no register.
pub const REG_NONE: u8 = 0xff;
/// `AccessPoint::base`: RIP-relative (the address of the next instruction).
pub const REG_RIP: u8 = 16;

/// `AccessPoint::flags` and `Access::flags`.
pub const ACCESS_READ: u8 = 1;
pub const ACCESS_WRITE: u8 = 2;
/// `Access::flags` of a marker, not an access: the parent forked process
/// `Access::addr` here.
pub const ACCESS_FORK: u8 = 4;
/// `Access::flags` of a hardware watchpoint's hit on `Access::addr`: `pc`
/// is the address (ELF) of the instruction *after* the access, `after` the
/// value then; read or write is the decoded instruction's.
pub const ACCESS_WATCH: u8 = 8;
/// `Access::flags` of a marker: thread `key` started with its stack
/// pointer at `Access::addr` (its stack lies below).
pub const ACCESS_STACK: u8 = 16;

/// Options in [`ObserveHeader::options`].
/// Log accesses into the log.
pub const OPT_LOG: u32 = 1;
/// Preempt at access points with probability `preempt_rate / 65536`.
pub const OPT_PREEMPT: u32 = 2;

/// Accesses within this many bytes above the stack pointer (or in the red
/// zone below it) are locals of the running thread.
pub const STACK_WINDOW: u64 = 256 * 1024;
pub const RED_ZONE: u64 = 128;

pub const MAX_FLIPS: usize = 32;
/// Hardware watchpoints per thread (x86-64 has four debug registers).
pub const MAX_WATCH: usize = 4;
/// Places on threads' stacks that other threads reach, counted as shared.
pub const MAX_SHARED_STACK: usize = 64;

/// One instruction of the executable that accesses memory through a
/// register other than RSP (globals, heap, other threads' objects).
/// Registers are numbered as in `ucontext_t::uc_mcontext.gregs`
/// (R8 = 0 ... R15 = 7, RDI = 8, RSI, RBP, RBX, RDX, RAX, RCX, RSP = 15).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessPoint {
    /// Address in the ELF file's virtual address space (add the load bias).
    pub vaddr: u64,
    /// Displacement; for [`REG_RIP`], relative to the next instruction.
    pub disp: i64,
    /// Instruction length in bytes.
    pub len: u8,
    /// The instruction's first byte in the file (checked before patching).
    pub first_byte: u8,
    pub base: u8,
    pub index: u8,
    /// 1, 2, 4 or 8.
    pub scale: u8,
    /// Bytes accessed (values are logged up to 8 of them).
    pub size: u8,
    /// [`ACCESS_READ`] | [`ACCESS_WRITE`].
    pub flags: u8,
    pub _pad: u8,
}

/// One flip of a race: thread `held` stops before its `held_n`-th logged
/// access at `held_pc` until thread `until` has made its `until_n`-th
/// logged access at `until_pc`; then `held` runs on at once — or, with
/// `defer`, when `until` next gives the baton away (at its next event).
/// Occurrences count from 1, per thread, logged (non-stack) accesses only.
#[repr(C)]
#[derive(Default)]
pub struct Flip {
    pub held: u32,
    pub until: u32,
    pub held_pc: u64,
    pub until_pc: u64,
    pub held_n: u32,
    pub until_n: u32,
    /// Counts of the two accesses so far (agent).
    pub held_seen: AtomicU32,
    pub until_seen: AtomicU32,
    /// [`FLIP_ARMED`], ...
    pub state: AtomicU32,
    /// 1: release `held` when `until` gives the baton away, not at once.
    pub defer: u32,
    /// Nonzero: process index + 1; the flip completes when the parent has
    /// really forked that process (the other access is the child's: it
    /// sees the memory as it was at the fork).
    pub until_fork: u64,
    /// Nonzero: the flip completes at the first write by another thread
    /// that covers this (runtime) address — the held read is delayed
    /// until the value changes.
    pub until_addr: u64,
    /// 1 (with `until_addr`): after the flip, each later read of `held`
    /// at `held_pc` of that address that would see `stale` waits again for
    /// another thread's write there (a polling loop made to wait instead
    /// of skipping).
    pub standing: u32,
    /// The value there when `held` was first held (agent).
    pub stale: AtomicU64,
    /// Nonzero: `held_n` is ignored; `held` stops before its `held_k`-th
    /// access at `held_pc` while its last event is the one at ring
    /// position `held_anchor - 2` (1: it made none yet) — see
    /// [`anchor_of`]. The same for `until`.
    pub held_anchor: u64,
    pub until_anchor: u64,
    pub held_k: u32,
    pub until_k: u32,
}

/// The anchor of an access made when its thread's last event was at ring
/// position `last_event - 1` ([`Access::last_event`]; 0: none yet).
pub const fn anchor_of(last_event: u64) -> u64 {
    last_event + 1
}

impl Flip {
    /// The count of `held`'s accesses at `held_pc` it stops at, for an
    /// access made in the stretch anchored at `anchor`: `held_k` there if
    /// the flip is anchored there, `held_n` if it is not anchored, None
    /// (not counted) in another stretch.
    pub fn held_target(&self, anchor: u64) -> Option<u32> {
        target(self.held_anchor, self.held_k, self.held_n, anchor)
    }

    /// The same for `until`'s access at `until_pc`.
    pub fn until_target(&self, anchor: u64) -> Option<u32> {
        target(self.until_anchor, self.until_k, self.until_n, anchor)
    }
}

const fn target(flip_anchor: u64, k: u32, n: u32, anchor: u64) -> Option<u32> {
    if flip_anchor == 0 {
        Some(n)
    } else if flip_anchor == anchor {
        Some(k)
    } else {
        None
    }
}

pub const FLIP_ARMED: u32 = 0;
/// `held` waits at its access.
pub const FLIP_HOLDING: u32 = 1;
/// `until` made its access while `held` waited: flipped.
pub const FLIP_DONE: u32 = 2;
/// Nobody else could run while `held` waited: released without the flip.
pub const FLIP_INFEASIBLE: u32 = 3;
/// `until` made its access before `held` got there: nothing to do.
pub const FLIP_ALREADY: u32 = 4;
/// `until` made its access; `held` runs when `until` gives the baton away.
pub const FLIP_DEFERRED: u32 = 5;

/// One observed access (written when the instruction has executed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Access {
    /// The thread's baton key ([`crate::replay::key`]).
    pub key: u32,
    pub flags: u8,
    pub size: u8,
    pub _pad: u16,
    /// ELF virtual address of the instruction.
    pub pc: u64,
    /// Effective address (runtime).
    pub addr: u64,
    /// Value at `addr` before and after the instruction (first `size`
    /// bytes, at most 8, little-endian).
    pub before: u64,
    pub after: u64,
    /// Ring position of the next expected event (`turn`) at the access.
    pub turn: u64,
    /// Ring position + 1 of the last event this thread performed; 0 none.
    pub last_event: u64,
}

/// Start of the observation block; the access points follow at
/// `points_offset`, the log at `log_offset`.
#[repr(C)]
pub struct ObserveHeader {
    pub magic: u64,
    pub version: u32,
    pub options: u32,
    pub points_offset: u64,
    pub npoints: u64,
    pub log_offset: u64,
    pub log_capacity: u64,
    /// Accesses logged (may exceed `log_capacity`: the rest was dropped).
    pub log_len: AtomicU64,
    /// Probability (/65536) of a preemption at an access point.
    pub preempt_rate: u32,
    pub nflips: u32,
    pub flips: [Flip; MAX_FLIPS],
    /// Written by the agent: the executable's load bias, breakpoints set,
    /// breakpoint hits, preemptions made.
    pub bias: AtomicU64,
    pub installed: AtomicU64,
    pub hits: AtomicU64,
    pub preemptions: AtomicU64,
    /// Set by the agent when the table did not match the executable.
    pub mismatch: AtomicU32,
    /// Number of `watch` entries in use.
    pub nwatch: u32,
    /// Runtime addresses (8-byte aligned) each thread watches with a
    /// hardware watchpoint, logging [`ACCESS_WATCH`] hits.
    pub watch: [u64; MAX_WATCH],
    /// Number of `shared_stack` entries in use.
    pub nshared_stack: u64,
    /// Runtime addresses (8-byte aligned) on a thread's stack that another
    /// thread reached: an access there is not the running thread's local.
    pub shared_stack: [u64; MAX_SHARED_STACK],
    /// Written by the agent: watchpoints it could not set (no debug
    /// registers, perf_event_open refused).
    pub watch_failed: AtomicU64,
}

impl ObserveHeader {
    /// Whether the 8 bytes holding `addr` were listed as shared though on
    /// a thread's stack.
    pub fn is_shared_stack(&self, addr: u64) -> bool {
        let n = (self.nshared_stack as usize).min(MAX_SHARED_STACK);
        self.shared_stack[..n].contains(&(addr & !7))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unanchored flip counts over the run; an anchored one only in its
    /// stretch, by its count there.
    #[test]
    fn a_flip_counts_where_it_is_anchored() {
        let plain = Flip {
            held_n: 7,
            until_n: 3,
            ..Flip::default()
        };
        assert_eq!(plain.held_target(anchor_of(9)), Some(7));
        assert_eq!(plain.until_target(anchor_of(9)), Some(3));
        let anchored = Flip {
            held_anchor: anchor_of(9),
            held_k: 2,
            held_n: 7,
            until_anchor: anchor_of(0),
            until_k: 1,
            until_n: 3,
            ..Flip::default()
        };
        assert_eq!(anchored.held_target(anchor_of(9)), Some(2));
        assert_eq!(anchored.held_target(anchor_of(10)), None);
        assert_eq!(anchored.until_target(anchor_of(0)), Some(1));
        assert_eq!(anchored.until_target(anchor_of(9)), None);
    }
}
