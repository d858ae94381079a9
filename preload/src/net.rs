//! Recording the syscalls a server lives on: connections (`accept`,
//! `connect`, `bind`, `listen`, socket names and options, `shutdown`), readiness (`epoll_wait`,
//! `poll`, `select`), what it sends (`sendto`, `sendmsg`: compared in
//! replay), and the machine facts that vary (`uname`,
//! `sched_getaffinity`), and the waits for a signal (`sigsuspend`, `pause`,
//! `sigtimedwait`: in replay the recorded handler runs and the wait
//! returns, with no signal sent). Each is logged with its result and the memory the
//! kernel wrote; `replay::net` gives them back.
//!
//! The layouts logged here are the contract with `replay::net`:
//! - socket addresses and `getsockopt` values: the `socklen_t` the kernel
//!   wrote, then that many bytes (at most [`ADDR_MAX`]);
//! - `select`: the read, write and except sets, each [`fd_set_bytes`]
//!   long, zeros for a set not passed.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::ctl::{self, Ev};
use crate::real::real;

/// Syscalls recorded at `sys` with their results (see the module doc).
/// The descriptor-creating ones (`socket`, `epoll_create1`, `eventfd2`,
/// `pipe2`, `timerfd_create`, `socketpair`) are logged so that a replay
/// gives the program the same descriptor numbers: an event loop keys its
/// handlers by them.
pub const NET: [i64; 41] = [
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_rt_sigsuspend,
    libc::SYS_pause,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_sendfile,
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
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_flock,
];

/// The `fcntl` commands on record locks, recorded (the other commands are
/// not trapped): a lock a thread or process got or was refused decides
/// what it does next, as a mutex would, and in replay it is answered from
/// the recording at its place in the order.
pub const LOCK_COMMANDS: [i32; 6] = [
    libc::F_GETLK,
    libc::F_SETLK,
    libc::F_SETLKW,
    libc::F_OFD_GETLK,
    libc::F_OFD_SETLK,
    libc::F_OFD_SETLKW,
];

/// `struct rusage` on x86-64.
pub const RUSAGE_BYTES: usize = 144;
/// `siginfo_t`.
pub const SIGINFO_BYTES: usize = 128;

/// Longest socket address logged.
pub const ADDR_MAX: usize = 128;
/// `struct epoll_event` on x86-64 (packed).
pub const EPOLL_EVENT_BYTES: usize = 12;
/// `struct pollfd`.
pub const POLLFD_BYTES: usize = 8;
/// Most `pollfd`s logged.
pub const POLL_MAX: usize = 65536;

/// A syscall this module records (`fcntl`: the filter traps only its
/// lock commands).
pub fn is_net(nr: i64) -> bool {
    NET.contains(&nr) || nr == libc::SYS_fcntl
}

/// The descriptors that are sockets (accepted, created, connected), below
/// 4096: what the program `write`s to them is recorded (and compared in
/// replay) like `send`; writes to files are not.
static SOCKETS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
/// The sockets of a `socketpair`: the program (or its processes) talking
/// to itself. What it sends there is not compared in replay (it carries
/// pids, which differ), it is sent for real.
static INTERNAL: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

fn set_bit(map: &[AtomicU64; 64], fd: i64, on: bool) {
    if !(0..4096).contains(&fd) {
        return;
    }
    let (w, b) = (fd as usize / 64, 1u64 << (fd % 64));
    if on {
        map[w].fetch_or(b, Ordering::Relaxed);
    } else {
        map[w].fetch_and(!b, Ordering::Relaxed);
    }
}

fn bit(map: &[AtomicU64; 64], fd: i64) -> bool {
    (0..4096).contains(&fd)
        && map[fd as usize / 64].load(Ordering::Relaxed) & (1u64 << (fd % 64)) != 0
}

/// Forgets descriptor `fd` (closed: its number may come back as a file).
pub fn forget(fd: i64) {
    set_bit(&SOCKETS, fd, false);
    set_bit(&INTERNAL, fd, false);
}

pub fn is_socket(fd: i64) -> bool {
    bit(&SOCKETS, fd)
}

pub fn is_internal(fd: i64) -> bool {
    bit(&INTERNAL, fd)
}

/// After a syscall that may have made sockets: remember them (in the
/// recording and, with the recorded results, in a replay).
///
/// # Safety
/// `a` are the syscall's arguments; for a pair, `fds` holds two ints.
pub unsafe fn note_sockets(nr: i64, a: [u64; 6], r: i64) {
    match nr {
        libc::SYS_accept | libc::SYS_accept4 | libc::SYS_socket if r >= 0 => {
            set_bit(&SOCKETS, r, true)
        }
        libc::SYS_socketpair if r == 0 && a[3] != 0 => {
            let fds = a[3] as *const i32;
            for k in 0..2 {
                set_bit(&SOCKETS, *fds.add(k) as i64, true);
                set_bit(&INTERNAL, *fds.add(k) as i64, true);
            }
        }
        _ => {}
    }
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
    note_sockets(nr, a, r);
    let mut buf = [0u8; 4 + ADDR_MAX];
    match nr {
        // The option's length, then its value.
        libc::SYS_getsockopt if r == 0 && a[3] != 0 && a[4] != 0 => {
            let len = *(a[4] as *const u32);
            let n = (len as usize).min(ADDR_MAX);
            buf[..4].copy_from_slice(&len.to_le_bytes());
            core::ptr::copy_nonoverlapping(a[3] as *const u8, buf[4..].as_mut_ptr(), n);
            ctl::log(ev, &buf[..4 + n]);
        }
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
        // Interrupted: the time left.
        libc::SYS_nanosleep if r < 0 && a[1] != 0 => {
            ctl::log(ev, bytes(a[1], core::mem::size_of::<libc::timespec>()));
        }
        libc::SYS_clock_nanosleep if r != 0 && a[3] != 0 => {
            ctl::log(ev, bytes(a[3], core::mem::size_of::<libc::timespec>()));
        }
        libc::SYS_rt_sigtimedwait if r > 0 && a[1] != 0 => {
            ctl::log(ev, bytes(a[1], core::mem::size_of::<libc::siginfo_t>()));
        }
        // A child reaped: its status (4 bytes), then its rusage, zeros
        // for a pointer not passed. The result is the child's pid.
        libc::SYS_wait4 if r > 0 => {
            let mut b = [0u8; 4 + RUSAGE_BYTES];
            if a[1] != 0 {
                core::ptr::copy_nonoverlapping(a[1] as *const u8, b.as_mut_ptr(), 4);
            }
            if a[3] != 0 {
                core::ptr::copy_nonoverlapping(
                    a[3] as *const u8,
                    b[4..].as_mut_ptr(),
                    RUSAGE_BYTES,
                );
            }
            ctl::log(ev, &b);
        }
        // Its siginfo (the child's pid at `si_pid`), then its rusage.
        libc::SYS_waitid if r == 0 => {
            let mut b = [0u8; SIGINFO_BYTES + RUSAGE_BYTES];
            if a[2] != 0 {
                core::ptr::copy_nonoverlapping(a[2] as *const u8, b.as_mut_ptr(), SIGINFO_BYTES);
            }
            if a[4] != 0 {
                core::ptr::copy_nonoverlapping(
                    a[4] as *const u8,
                    b[SIGINFO_BYTES..].as_mut_ptr(),
                    RUSAGE_BYTES,
                );
            }
            ctl::log(ev, &b);
        }
        // The lock that is in the way (or F_UNLCK): a `struct flock`.
        libc::SYS_fcntl
            if r == 0 && a[2] != 0 && matches!(a[1] as i32, libc::F_GETLK | libc::F_OFD_GETLK) =>
        {
            ctl::log(ev, bytes(a[2], core::mem::size_of::<libc::flock>()));
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

/// `write` on a socket is sent data: recorded (and compared in replay);
/// other descriptors go to the sys module's own `write`.
pub fn is_socket_write(nr: i64, fd: u64) -> bool {
    matches!(nr, libc::SYS_write | libc::SYS_writev) && is_socket(fd as i64)
}

/// `close` forgets a socket (its number may come back as a file).
#[no_mangle]
pub unsafe extern "C" fn close(fd: core::ffi::c_int) -> core::ffi::c_int {
    forget(fd as i64);
    let f = real!(close: fn(core::ffi::c_int) -> core::ffi::c_int);
    f(fd)
}

/// `writev` on a socket is recorded at `sys` (see [`is_socket_write`]).
#[no_mangle]
pub unsafe extern "C" fn writev(
    fd: core::ffi::c_int,
    iov: *const libc::iovec,
    cnt: core::ffi::c_int,
) -> isize {
    if ctl::level() >= reprise_abi::Level::Sys && ctl::active() && is_socket(fd as i64) {
        let a = [fd as u64, iov as u64, cnt as u64, 0, 0, 0];
        return crate::raw::to_libc(crate::sys::record_syscall(libc::SYS_writev, a)) as isize;
    }
    let f = real!(writev: fn(core::ffi::c_int, *const libc::iovec, core::ffi::c_int) -> isize);
    f(fd, iov, cnt)
}

/// After a `recvmsg`'s data: its control messages (passed descriptors,
/// credentials) as one more piece of the event's data: the length the
/// kernel wrote, `msg_flags`, then the control bytes (at most
/// [`CONTROL_MAX`]).
///
/// # Safety
/// `m` is the program's `msghdr` the kernel just filled.
pub unsafe fn log_control(ev: Ev, m: &libc::msghdr) {
    let mut out = [0u8; 8 + CONTROL_MAX];
    let len = if m.msg_control.is_null() {
        0
    } else {
        m.msg_controllen.min(CONTROL_MAX)
    };
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&(m.msg_flags as u32).to_le_bytes());
    if len > 0 {
        core::ptr::copy_nonoverlapping(m.msg_control as *const u8, out[8..].as_mut_ptr(), len);
    }
    ctl::log(
        Ev::new(reprise_abi::EventKind::DataMore, ev.object),
        &out[..8 + len],
    );
}

/// Longest control data of a `recvmsg` logged.
pub const CONTROL_MAX: usize = 256;

/// The libc calls of the syscalls above that servers make per request,
/// interposed: recorded by a function call, not a SIGSYS trap (~3 µs
/// each here), which a server at 100k requests per second feels. Calls
/// that bypass libc are still trapped.
mod calls {
    use core::ffi::{c_int, c_void};

    use crate::raw;
    use crate::real::real;
    use crate::sys::record_syscall;

    fn on() -> bool {
        crate::ctl::active() && crate::ctl::level() >= reprise_abi::Level::Sys
    }

    fn call(nr: i64, a: [u64; 6]) -> i64 {
        raw::to_libc(record_syscall(nr, a))
    }

    #[no_mangle]
    pub unsafe extern "C" fn epoll_wait(
        ep: c_int,
        ev: *mut libc::epoll_event,
        max: c_int,
        timeout: c_int,
    ) -> c_int {
        if !on() {
            let f = real!(epoll_wait: fn(c_int, *mut libc::epoll_event, c_int, c_int) -> c_int);
            return f(ep, ev, max, timeout);
        }
        let a = [ep as u64, ev as u64, max as u64, timeout as u64, 0, 0];
        call(libc::SYS_epoll_wait, a) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn sendmsg(fd: c_int, m: *const libc::msghdr, flags: c_int) -> isize {
        if !on() {
            let f = real!(sendmsg: fn(c_int, *const libc::msghdr, c_int) -> isize);
            return f(fd, m, flags);
        }
        call(
            libc::SYS_sendmsg,
            [fd as u64, m as u64, flags as u64, 0, 0, 0],
        ) as isize
    }

    #[no_mangle]
    pub unsafe extern "C" fn recvmsg(fd: c_int, m: *mut libc::msghdr, flags: c_int) -> isize {
        if !on() {
            let f = real!(recvmsg: fn(c_int, *mut libc::msghdr, c_int) -> isize);
            return f(fd, m, flags);
        }
        call(
            libc::SYS_recvmsg,
            [fd as u64, m as u64, flags as u64, 0, 0, 0],
        ) as isize
    }

    #[no_mangle]
    pub unsafe extern "C" fn sendto(
        fd: c_int,
        buf: *const c_void,
        len: usize,
        flags: c_int,
        addr: *const libc::sockaddr,
        alen: libc::socklen_t,
    ) -> isize {
        if !on() {
            let f = real!(sendto: fn(c_int, *const c_void, usize, c_int, *const libc::sockaddr, libc::socklen_t) -> isize);
            return f(fd, buf, len, flags, addr, alen);
        }
        let a = [
            fd as u64,
            buf as u64,
            len as u64,
            flags as u64,
            addr as u64,
            alen as u64,
        ];
        call(libc::SYS_sendto, a) as isize
    }

    #[no_mangle]
    pub unsafe extern "C" fn send(
        fd: c_int,
        buf: *const c_void,
        len: usize,
        flags: c_int,
    ) -> isize {
        if !on() {
            let f = real!(send: fn(c_int, *const c_void, usize, c_int) -> isize);
            return f(fd, buf, len, flags);
        }
        call(
            libc::SYS_sendto,
            [fd as u64, buf as u64, len as u64, flags as u64, 0, 0],
        ) as isize
    }

    #[no_mangle]
    pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize {
        if !on() {
            let f = real!(recv: fn(c_int, *mut c_void, usize, c_int) -> isize);
            return f(fd, buf, len, flags);
        }
        call(
            libc::SYS_recvfrom,
            [fd as u64, buf as u64, len as u64, flags as u64, 0, 0],
        ) as isize
    }

    #[no_mangle]
    pub unsafe extern "C" fn recvfrom(
        fd: c_int,
        buf: *mut c_void,
        len: usize,
        flags: c_int,
        addr: *mut libc::sockaddr,
        alen: *mut libc::socklen_t,
    ) -> isize {
        if !on() {
            let f = real!(recvfrom: fn(c_int, *mut c_void, usize, c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> isize);
            return f(fd, buf, len, flags, addr, alen);
        }
        let a = [
            fd as u64,
            buf as u64,
            len as u64,
            flags as u64,
            addr as u64,
            alen as u64,
        ];
        call(libc::SYS_recvfrom, a) as isize
    }
}
