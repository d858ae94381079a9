//! Recording the syscalls a server lives on: connections (`accept`,
//! `connect`, `bind`, `listen`, socket names), readiness (`epoll_wait`,
//! `poll`, `select`), what it sends (`sendto`, `sendmsg`: compared in
//! replay), and the machine facts that vary (`uname`,
//! `sched_getaffinity`). Each is logged with its result and the memory the
//! kernel wrote; `replay::net` gives them back.
//!
//! The layouts logged here are the contract with `replay::net`:
//! - socket addresses: the `socklen_t` the kernel wrote, then that many
//!   bytes of the address (at most [`ADDR_MAX`]);
//! - `select`: the read, write and except sets, each [`fd_set_bytes`]
//!   long, zeros for a set not passed.

use crate::ctl::{self, Ev};

/// Syscalls recorded at `sys` with their results (see the module doc).
/// The descriptor-creating ones (`socket`, `epoll_create1`, `eventfd2`,
/// `pipe2`, `timerfd_create`, `socketpair`) are logged so that a replay
/// gives the program the same descriptor numbers: an event loop keys its
/// handlers by them.
pub const NET: [i64; 29] = [
    libc::SYS_socket,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    libc::SYS_eventfd,
    libc::SYS_eventfd2,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    libc::SYS_timerfd_create,
    libc::SYS_signalfd4,
    libc::SYS_dup,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_select,
    libc::SYS_pselect6,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_uname,
    libc::SYS_sched_getaffinity,
    libc::SYS_socketpair,
];

/// Longest socket address logged.
pub const ADDR_MAX: usize = 128;
/// `struct epoll_event` on x86-64 (packed).
pub const EPOLL_EVENT_BYTES: usize = 12;
/// `struct pollfd`.
pub const POLLFD_BYTES: usize = 8;
/// Most `pollfd`s logged.
pub const POLL_MAX: usize = 65536;

pub fn is_net(nr: i64) -> bool {
    NET.contains(&nr)
}

/// Bytes of one `fd_set` for `nfds` descriptors, as `select` reads and
/// writes them (whole 64-bit words).
pub fn fd_set_bytes(nfds: u64) -> usize {
    (nfds.min(libc::FD_SETSIZE as u64) as usize).div_ceil(64) * 8
}

/// Logs network syscall `nr` (arguments `a`, result `r`) with the memory
/// it wrote.
///
/// # Safety
/// Called right after the kernel ran the syscall with these arguments:
/// the buffers it names are the program's, as large as the syscall says.
pub unsafe fn log(ev: Ev, nr: i64, a: [u64; 6], r: i64) {
    let mut buf = [0u8; 4 + ADDR_MAX];
    match nr {
        libc::SYS_accept | libc::SYS_accept4 | libc::SYS_getsockname | libc::SYS_getpeername
            if r >= 0 && a[1] != 0 && a[2] != 0 =>
        {
            let len = *(a[2] as *const u32);
            let n = (len as usize).min(ADDR_MAX);
            buf[..4].copy_from_slice(&len.to_le_bytes());
            core::ptr::copy_nonoverlapping(a[1] as *const u8, buf[4..].as_mut_ptr(), n);
            ctl::log(ev, &buf[..4 + n]);
        }
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 if r > 0 => {
            ctl::log(ev, bytes(a[1], r as usize * EPOLL_EVENT_BYTES));
        }
        libc::SYS_poll | libc::SYS_ppoll if r >= 0 => {
            let n = (a[1] as usize).min(POLL_MAX) * POLLFD_BYTES;
            ctl::log(ev, bytes(a[0], n));
        }
        libc::SYS_select | libc::SYS_pselect6 if r >= 0 => {
            log_sets(ev, a);
        }
        libc::SYS_sendto if r > 0 => {
            ctl::log(ev, bytes(a[1], r as usize));
        }
        libc::SYS_sendmsg if r > 0 && a[1] != 0 => {
            let m = &*(a[1] as *const libc::msghdr);
            crate::sys::log_iov(ev, m.msg_iov as u64, m.msg_iovlen as u64, r);
        }
        libc::SYS_uname if r == 0 => {
            ctl::log(ev, bytes(a[0], core::mem::size_of::<libc::utsname>()));
        }
        libc::SYS_sched_getaffinity if r > 0 => {
            ctl::log(ev, bytes(a[2], r as usize));
        }
        libc::SYS_socketpair if r == 0 && a[3] != 0 => {
            ctl::log(ev, bytes(a[3], 8));
        }
        libc::SYS_pipe | libc::SYS_pipe2 if r == 0 && a[0] != 0 => {
            ctl::log(ev, bytes(a[0], 8));
        }
        _ => {
            ctl::log(ev, &[]);
        }
    }
}

/// The three `fd_set`s of a `select` after it returned, one after the
/// other, zeros for those not passed.
unsafe fn log_sets(ev: Ev, a: [u64; 6]) {
    let n = fd_set_bytes(a[0]);
    let mut out = [0u8; 3 * 128];
    for (k, &set) in [a[1], a[2], a[3]].iter().enumerate() {
        if set != 0 {
            core::ptr::copy_nonoverlapping(set as *const u8, out[k * n..].as_mut_ptr(), n);
        }
    }
    ctl::log(ev, &out[..3 * n]);
}

/// The program's memory `addr..addr+len`, which the kernel just wrote.
unsafe fn bytes<'a>(addr: u64, len: usize) -> &'a [u8] {
    if addr == 0 || len == 0 {
        return &[];
    }
    core::slice::from_raw_parts(addr as *const u8, len)
}
