//! Waiting for a child in replay (`wait4`, `waitid`). The recording says
//! which child was reaped and how it ended; the replay gives that back at
//! once, naming the child by the pid the program's own `fork` returned in
//! this run (pids are not replayed: the recorded pid is mapped through the
//! process table; a child the agent did not follow is waited for for
//! real). The real child is reaped too if it has already exited;
//! else it is left to be reaped when the program ends.

use core::sync::atomic::Ordering;

use reprise_abi::ControlHeader;

use super::{copy_data, st, Turn};
use crate::net::{RUSAGE_BYTES, SIGINFO_BYTES};
use crate::raw;

/// Offset of `si_pid` in a `siginfo_t` for SIGCHLD on x86-64.
const SI_PID: usize = 16;

/// The pid, in this run, of the process that had `recorded` as its pid in
/// the recording; None if no process the agent followed had it.
fn real_pid(c: &ControlHeader, recorded: i32) -> Option<i32> {
    let r = st(c);
    for (k, p) in r.recorded_pids.iter().enumerate() {
        if p.load(Ordering::Acquire) == recorded && recorded > 0 {
            let pid = c.processes[k].pid.load(Ordering::Acquire);
            if pid > 0 {
                return Some(pid);
            }
        }
    }
    None
}

/// Reaps `pid` for real if it has already exited (no wait otherwise).
fn reap_if_exited(pid: i32) {
    let flags = (libc::WNOHANG | libc::__WALL) as u64;
    raw::syscall6(libc::SYS_wait4, [pid as u64, 0, flags, 0, 0, 0]);
}

/// `wait4` or `waitid` at its recorded turn `t`.
///
/// # Safety
/// `a` are the program's arguments to the syscall (its buffers).
pub unsafe fn emulate_wait(c: &ControlHeader, t: &Turn, nr: i64, a: [u64; 6]) -> i64 {
    let len = t.data_len as usize;
    if nr == libc::SYS_wait4 {
        if t.result <= 0 {
            return t.result;
        }
        // A child the agent did not follow (spawned without `fork`): the
        // program knows it by its real pid, so it is waited for for real.
        let Some(pid) = real_pid(c, t.result as i32) else {
            return raw::syscall6(nr, a);
        };
        if a[1] != 0 && len >= 4 {
            copy_data(c, t.pos, 0, a[1] as *mut u8, 4);
        }
        if a[3] != 0 && len >= 4 + RUSAGE_BYTES {
            copy_data(c, t.pos, 4, a[3] as *mut u8, RUSAGE_BYTES);
        }
        reap_if_exited(pid);
        return pid as i64;
    }
    if t.result == 0 && len >= SIGINFO_BYTES {
        let mut info = [0u8; SIGINFO_BYTES];
        copy_data(c, t.pos, 0, info.as_mut_ptr(), SIGINFO_BYTES);
        let recorded = i32::from_le_bytes(info[SI_PID..SI_PID + 4].try_into().unwrap_or([0; 4]));
        if recorded > 0 {
            let Some(pid) = real_pid(c, recorded) else {
                return raw::syscall6(nr, a);
            };
            info[SI_PID..SI_PID + 4].copy_from_slice(&pid.to_le_bytes());
            reap_if_exited(pid);
        }
        if a[2] != 0 {
            core::ptr::copy_nonoverlapping(info.as_ptr(), a[2] as *mut u8, SIGINFO_BYTES);
        }
        if a[4] != 0 && len >= SIGINFO_BYTES + RUSAGE_BYTES {
            copy_data(c, t.pos, SIGINFO_BYTES, a[4] as *mut u8, RUSAGE_BYTES);
        }
    }
    t.result
}
