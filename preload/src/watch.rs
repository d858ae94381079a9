//! Hardware watchpoints of the running thread, in replay: a place on a
//! thread's stack that another thread reached is accessed by its owner
//! through the stack pointer, with no access point (see
//! `reprise_abi::observe`). A perf breakpoint on it (the CPU's debug
//! registers) raises SIGTRAP with `si_code` `TRAP_PERF` right after any
//! instruction of this thread that read or wrote it; `observe` logs the
//! hit and the supervisor decodes the instruction.
//!
//! A perf event counts only for the thread that opened it: each thread
//! opens its own at its start. The descriptors are moved above the
//! program's (the replay compares the descriptors it gets with the
//! recorded ones) and closed on exec.

use core::sync::atomic::Ordering;

use reprise_abi::observe::{ObserveHeader, MAX_WATCH};

use crate::raw;

/// `struct perf_event_attr` as of Linux 5.13 (`PERF_ATTR_SIZE_VER7`, the
/// first with `sigtrap`), as 16 words.
const ATTR_SIZE: u32 = 128;
const PERF_TYPE_BREAKPOINT: u32 = 5;
const HW_BREAKPOINT_RW: u32 = 3;
/// Flag bits of the attribute's bitfield word (at byte 40).
const EXCLUDE_KERNEL: u64 = 1 << 5;
const EXCLUDE_HV: u64 = 1 << 6;
const REMOVE_ON_EXEC: u64 = 1 << 36;
const SIGTRAP: u64 = 1 << 37;
const PERF_FLAG_FD_CLOEXEC: u64 = 1 << 3;
/// The watchpoints' descriptors go at or above this number.
const FD_FLOOR: u64 = 900;
/// `si_code` of a perf event's synchronous SIGTRAP.
pub const TRAP_PERF: i32 = 6;

/// Puts a read/write watchpoint on each 8-byte place of `h.watch` for the
/// calling thread. Counts the ones the kernel refused in `watch_failed`.
pub fn arm_thread(h: &ObserveHeader) {
    for &addr in &h.watch[..(h.nwatch as usize).min(MAX_WATCH)] {
        if addr == 0 || !arm_one(addr) {
            h.watch_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn arm_one(addr: u64) -> bool {
    let mut attr = [0u64; 16];
    attr[0] = PERF_TYPE_BREAKPOINT as u64 | (ATTR_SIZE as u64) << 32;
    attr[2] = 1; // sample_period: every hit
    attr[5] = EXCLUDE_KERNEL | EXCLUDE_HV | REMOVE_ON_EXEC | SIGTRAP;
    attr[6] = (HW_BREAKPOINT_RW as u64) << 32; // wakeup_events = 0, bp_type
    attr[7] = addr & !7; // bp_addr
    attr[8] = 8; // bp_len
    let fd = raw::syscall6(
        libc::SYS_perf_event_open,
        [
            attr.as_ptr() as u64,
            0,        // this thread
            u64::MAX, // any CPU (-1)
            u64::MAX, // no group (-1)
            PERF_FLAG_FD_CLOEXEC,
            0,
        ],
    );
    if fd < 0 {
        return false;
    }
    let high = raw::syscall6(
        libc::SYS_fcntl,
        [fd as u64, libc::F_DUPFD_CLOEXEC as u64, FD_FLOOR, 0, 0, 0],
    );
    // Closed either way: a descriptor left among the program's would
    // shift the numbers its next opens get from the recorded ones.
    raw::syscall6(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
    high >= 0
}
