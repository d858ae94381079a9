//! Replaying the syscalls a server lives on (see `crate::net` for what is
//! logged and how): no network is needed. A connection accepted in the
//! recording gets a stand-in descriptor at the recorded number (a local
//! socket nobody writes to: what it "receives" comes from the trace, as
//! every `read` and `recv` does); readiness (`epoll_wait`, `poll`,
//! `select`) is what the kernel said then; `bind`, `listen`, `connect`,
//! socket options and `shutdown` return their recorded results without
//! touching the network (the stand-in is no TCP socket); what the
//! program sends is compared byte for byte with what it sent then, and a
//! difference stops the attempt with the descriptor and the byte.

use reprise_abi::ControlHeader;

use super::divergence::{diverge, Text};
use super::{copy_data, data_byte, Turn};
use crate::net::{fd_set_bytes, ADDR_MAX, EPOLL_EVENT_BYTES, POLLFD_BYTES, POLL_MAX};
use crate::raw;

pub fn name(nr: i64) -> Option<&'static [u8]> {
    Some(match nr {
        libc::SYS_accept => b"accept",
        libc::SYS_accept4 => b"accept4",
        libc::SYS_connect => b"connect",
        libc::SYS_bind => b"bind",
        libc::SYS_listen => b"listen",
        libc::SYS_getsockname => b"getsockname",
        libc::SYS_getpeername => b"getpeername",
        libc::SYS_epoll_wait => b"epoll_wait",
        libc::SYS_epoll_pwait => b"epoll_pwait",
        libc::SYS_epoll_pwait2 => b"epoll_pwait2",
        libc::SYS_poll => b"poll",
        libc::SYS_ppoll => b"ppoll",
        libc::SYS_select => b"select",
        libc::SYS_pselect6 => b"pselect6",
        libc::SYS_sendto => b"sendto",
        libc::SYS_sendmsg => b"sendmsg",
        libc::SYS_uname => b"uname",
        libc::SYS_sched_getaffinity => b"sched_getaffinity",
        libc::SYS_socketpair => b"socketpair",
        libc::SYS_wait4 => b"wait4",
        libc::SYS_fcntl => b"fcntl",
        libc::SYS_flock => b"flock",
        libc::SYS_waitid => b"waitid",
        libc::SYS_socket => b"socket",
        libc::SYS_epoll_create => b"epoll_create",
        libc::SYS_epoll_create1 => b"epoll_create1",
        libc::SYS_eventfd => b"eventfd",
        libc::SYS_eventfd2 => b"eventfd2",
        libc::SYS_pipe => b"pipe",
        libc::SYS_pipe2 => b"pipe2",
        libc::SYS_timerfd_create => b"timerfd_create",
        libc::SYS_signalfd4 => b"signalfd4",
        libc::SYS_dup => b"dup",
        libc::SYS_sendfile => b"sendfile",
        libc::SYS_setsockopt => b"setsockopt",
        libc::SYS_getsockopt => b"getsockopt",
        libc::SYS_shutdown => b"shutdown",
        libc::SYS_nanosleep => b"nanosleep",
        libc::SYS_clock_nanosleep => b"clock_nanosleep",
        libc::SYS_rt_sigsuspend => b"rt_sigsuspend",
        libc::SYS_pause => b"pause",
        libc::SYS_rt_sigtimedwait => b"rt_sigtimedwait",
        _ => return None,
    })
}

/// Puts a stand-in descriptor at number `fd` (a connection the recording
/// accepted): a local socket, so that `setsockopt`, `fcntl`, `epoll_ctl`
/// and `close` on it behave.
fn stand_in(fd: i64, cloexec: bool) {
    let kind = libc::SOCK_STREAM | if cloexec { libc::SOCK_CLOEXEC } else { 0 };
    let mut pair = [0i32; 2];
    let r = raw::syscall6(
        libc::SYS_socketpair,
        [
            libc::AF_UNIX as u64,
            kind as u64,
            0,
            pair.as_mut_ptr() as u64,
            0,
            0,
        ],
    );
    if r != 0 {
        return;
    }
    for &p in &pair {
        if p as i64 == fd {
            continue;
        }
        if p == pair[0] {
            let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
            raw::syscall6(libc::SYS_dup3, [p as u64, fd as u64, flags as u64, 0, 0, 0]);
        }
        raw::syscall6(libc::SYS_close, [p as u64, 0, 0, 0, 0, 0]);
    }
}

/// Moves descriptor `got` to number `want` (keeping its close-on-exec
/// flag).
fn renumber(got: i64, want: i64) {
    if got == want {
        return;
    }
    let fl = raw::syscall6(
        libc::SYS_fcntl,
        [got as u64, libc::F_GETFD as u64, 0, 0, 0, 0],
    );
    let flags = if fl > 0 && fl & libc::FD_CLOEXEC as i64 != 0 {
        libc::O_CLOEXEC as u64
    } else {
        0
    };
    raw::syscall6(libc::SYS_dup3, [got as u64, want as u64, flags, 0, 0, 0]);
    raw::syscall6(libc::SYS_close, [got as u64, 0, 0, 0, 0, 0]);
}

/// Writes a recorded socket address (length, then bytes) back into the
/// program's `addr`/`addrlen`.
///
/// # Safety
/// `addr` and `addrlen` are the program's arguments to the syscall.
unsafe fn put_address(c: &ControlHeader, t: &Turn, addr: u64, addrlen: u64) {
    if addr == 0 || addrlen == 0 || t.data_len < 4 {
        return;
    }
    let room = *(addrlen as *const u32) as usize;
    let mut len = [0u8; 4];
    copy_data(c, t.pos, 0, len.as_mut_ptr(), 4);
    let n = (t.data_len as usize - 4).min(room).min(ADDR_MAX);
    copy_data(c, t.pos, 4, addr as *mut u8, n);
    *(addrlen as *mut u32) = u32::from_le_bytes(len);
}

/// Compares `n` bytes the program sends on `fd` with the recorded ones.
fn check_sent(c: &ControlHeader, t: &Turn, nr: i64, fd: u64, next: impl Fn(usize) -> u8, n: usize) {
    if crate::net::is_internal(fd as i64) {
        return;
    }
    let kept = (t.data_len as usize).min(n);
    for i in 0..kept {
        if next(i) != data_byte(c, t.pos, i) {
            let mut m = Text::new();
            m.s(name(nr).unwrap_or(b"write"))
                .s(b"(")
                .d(fd)
                .s(b") sends other bytes than the recording did, from byte ")
                .d(i as u64);
            diverge(c, t.pos, &m);
        }
    }
    if t.result > 0 && (n as i64) < t.result {
        let mut m = Text::new();
        m.s(name(nr).unwrap_or(b"write"))
            .s(b"(")
            .d(fd)
            .s(b") sends ")
            .d(n as u64)
            .s(b" bytes, the recording ")
            .d(t.result as u64);
        diverge(c, t.pos, &m);
    }
}

/// The byte at offset `i` of the data an iovec array describes.
///
/// # Safety
/// `iov` points to `cnt` iovecs of the program.
unsafe fn iov_byte(iov: *const libc::iovec, cnt: usize, i: usize) -> u8 {
    let mut off = i;
    for k in 0..cnt {
        let v = &*iov.add(k);
        if off < v.iov_len {
            return *(v.iov_base as *const u8).add(off);
        }
        off -= v.iov_len;
    }
    0
}

/// Total bytes an iovec array describes.
unsafe fn iov_len(iov: *const libc::iovec, cnt: usize) -> usize {
    (0..cnt).map(|k| (*iov.add(k)).iov_len).sum()
}

/// Network syscall `nr` at its recorded turn `t`: the recorded result,
/// with the memory the kernel wrote then.
///
/// # Safety
/// `a` are the program's arguments to the syscall (its buffers).
pub unsafe fn emulate(c: &ControlHeader, t: &Turn, nr: i64, a: [u64; 6]) -> i64 {
    let sends = matches!(
        nr,
        libc::SYS_sendto | libc::SYS_sendmsg | libc::SYS_write | libc::SYS_writev
    );
    if sends && crate::net::is_internal(a[0] as i64) {
        // The program talking to itself: sent for real (the other side
        // may read it for real too), its recorded result returned.
        raw::syscall6(nr, a);
        return t.result;
    }
    match nr {
        libc::SYS_wait4 | libc::SYS_waitid => return super::children::emulate_wait(c, t, nr, a),
        libc::SYS_accept | libc::SYS_accept4 => {
            if t.result >= 0 {
                let cloexec = nr == libc::SYS_accept4 && a[3] & libc::SOCK_CLOEXEC as u64 != 0;
                stand_in(t.result, cloexec);
                put_address(c, t, a[1], a[2]);
            }
        }
        libc::SYS_getsockname | libc::SYS_getpeername if t.result >= 0 => {
            put_address(c, t, a[1], a[2])
        }
        // What the kernel said of the (stand-in) socket's options then.
        libc::SYS_getsockopt if t.result == 0 => put_address(c, t, a[3], a[4]),
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 if t.result > 0 => {
            let n = (t.data_len as usize).min(a[2] as usize * EPOLL_EVENT_BYTES);
            copy_data(c, t.pos, 0, a[1] as *mut u8, n);
        }
        libc::SYS_poll | libc::SYS_ppoll if t.result >= 0 && a[0] != 0 => {
            let n = (t.data_len as usize).min((a[1] as usize).min(POLL_MAX) * POLLFD_BYTES);
            copy_data(c, t.pos, 0, a[0] as *mut u8, n);
        }
        libc::SYS_select | libc::SYS_pselect6 if t.result >= 0 => {
            let n = fd_set_bytes(a[0]);
            for (k, &set) in [a[1], a[2], a[3]].iter().enumerate() {
                if set != 0 && (k + 1) * n <= t.data_len as usize {
                    copy_data(c, t.pos, k * n, set as *mut u8, n);
                }
            }
        }
        libc::SYS_sendto => {
            let buf = a[1] as *const u8;
            check_sent(c, t, nr, a[0], |i| *buf.add(i), a[2] as usize);
        }
        libc::SYS_write => {
            let buf = a[1] as *const u8;
            check_sent(c, t, nr, a[0], |i| *buf.add(i), a[2] as usize);
        }
        libc::SYS_writev => {
            let (iov, cnt) = (a[1] as *const libc::iovec, a[2] as usize);
            let n = iov_len(iov, cnt);
            check_sent(c, t, nr, a[0], |i| iov_byte(iov, cnt, i), n);
        }
        libc::SYS_sendmsg if a[1] != 0 => {
            let m = &*(a[1] as *const libc::msghdr);
            let (iov, cnt) = (m.msg_iov as *const libc::iovec, m.msg_iovlen);
            let n = iov_len(iov, cnt);
            check_sent(c, t, nr, a[0], |i| iov_byte(iov, cnt, i), n);
        }
        // A sleep takes no time in replay; interrupted, the time left.
        libc::SYS_nanosleep if t.result < 0 && a[1] != 0 && t.data_len > 0 => {
            copy_data(c, t.pos, 0, a[1] as *mut u8, t.data_len as usize);
        }
        libc::SYS_clock_nanosleep if t.result != 0 && a[3] != 0 && t.data_len > 0 => {
            copy_data(c, t.pos, 0, a[3] as *mut u8, t.data_len as usize);
        }
        libc::SYS_rt_sigtimedwait if t.result > 0 && a[1] != 0 => {
            let n = (t.data_len as usize).min(core::mem::size_of::<libc::siginfo_t>());
            copy_data(c, t.pos, 0, a[1] as *mut u8, n);
        }
        // A record lock: got or refused as recorded, not taken for real
        // (the order of the events stands for it); F_GETLK, the lock
        // that was in the way.
        libc::SYS_fcntl if t.result == 0 && a[2] != 0 && t.data_len > 0 => {
            let n = (t.data_len as usize).min(core::mem::size_of::<libc::flock>());
            copy_data(c, t.pos, 0, a[2] as *mut u8, n);
        }
        libc::SYS_uname if t.result == 0 && a[0] != 0 => {
            let n = (t.data_len as usize).min(core::mem::size_of::<libc::utsname>());
            copy_data(c, t.pos, 0, a[0] as *mut u8, n);
        }
        libc::SYS_sched_getaffinity if t.result > 0 && a[2] != 0 => {
            let n = (t.data_len as usize).min(a[1] as usize);
            copy_data(c, t.pos, 0, a[2] as *mut u8, n);
        }
        libc::SYS_socket
        | libc::SYS_epoll_create
        | libc::SYS_epoll_create1
        | libc::SYS_eventfd
        | libc::SYS_eventfd2
        | libc::SYS_timerfd_create
        | libc::SYS_signalfd4
        | libc::SYS_dup => {
            // A real descriptor (the program uses it), at the recorded
            // number; a recorded failure is returned as recorded.
            if t.result >= 0 {
                let got = raw::syscall6(nr, a);
                if got >= 0 {
                    renumber(got, t.result);
                }
            }
        }
        libc::SYS_socketpair | libc::SYS_pipe | libc::SYS_pipe2 => {
            // A real pair (the program talks to itself through it), at
            // the recorded numbers.
            let fds_arg = if nr == libc::SYS_socketpair {
                a[3]
            } else {
                a[0]
            };
            if t.result == 0 && fds_arg != 0 && t.data_len >= 8 && raw::syscall6(nr, a) == 0 {
                let fds = fds_arg as *mut i32;
                let mut want = [0i32; 2];
                copy_data(c, t.pos, 0, want.as_mut_ptr() as *mut u8, 8);
                // The first one moved first could land on the second's
                // number: move both out of the way, then in place.
                let (a0, a1) = (*fds, *fds.add(1));
                if (a0, a1) != (want[0], want[1]) {
                    let hi0 = raw::syscall6(
                        libc::SYS_fcntl,
                        [a0 as u64, libc::F_DUPFD_CLOEXEC as u64, 512, 0, 0, 0],
                    );
                    let hi1 = raw::syscall6(
                        libc::SYS_fcntl,
                        [a1 as u64, libc::F_DUPFD_CLOEXEC as u64, 512, 0, 0, 0],
                    );
                    raw::syscall6(libc::SYS_close, [a0 as u64, 0, 0, 0, 0, 0]);
                    raw::syscall6(libc::SYS_close, [a1 as u64, 0, 0, 0, 0, 0]);
                    let cloexec = nr == libc::SYS_pipe2 && a[1] & libc::O_CLOEXEC as u64 != 0
                        || nr == libc::SYS_socketpair && a[1] & libc::SOCK_CLOEXEC as u64 != 0;
                    let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
                    for (hi, w) in [(hi0, want[0]), (hi1, want[1])] {
                        if hi >= 0 {
                            raw::syscall6(libc::SYS_dup3, [hi as u64, w as u64, flags, 0, 0, 0]);
                            raw::syscall6(libc::SYS_close, [hi as u64, 0, 0, 0, 0, 0]);
                        }
                    }
                    *fds = want[0];
                    *fds.add(1) = want[1];
                }
            }
        }
        _ => {}
    }
    crate::net::note_sockets(nr, a, t.result);
    t.result
}

/// The control messages a `recvmsg` got in the recording (logged after
/// its data, see `crate::net::log_control`), back into the program's
/// `msghdr`; a descriptor passed then gets a stand-in at its number.
///
/// # Safety
/// `m` is the program's `msghdr` for this `recvmsg`.
pub unsafe fn put_control(c: &ControlHeader, t: &Turn, m: &mut libc::msghdr) {
    let at = t.result.max(0) as usize;
    if (t.data_len as usize) < at + 8 {
        return;
    }
    let mut head = [0u8; 8];
    copy_data(c, t.pos, at, head.as_mut_ptr(), 8);
    let len = (u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize)
        .min(t.data_len as usize - at - 8);
    m.msg_flags = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as i32;
    if m.msg_control.is_null() || m.msg_controllen == 0 {
        m.msg_controllen = 0;
        return;
    }
    let n = len.min(m.msg_controllen);
    copy_data(c, t.pos, at + 8, m.msg_control as *mut u8, n);
    m.msg_controllen = n;
    // Descriptors passed (SCM_RIGHTS): stand-ins at the recorded numbers.
    let base = m.msg_control as *const u8;
    let mut off = 0usize;
    let hdr = core::mem::size_of::<libc::cmsghdr>();
    while off + hdr <= n {
        let cm = &*(base.add(off) as *const libc::cmsghdr);
        let clen = cm.cmsg_len;
        if clen < hdr || off + clen > n {
            break;
        }
        if cm.cmsg_level == libc::SOL_SOCKET && cm.cmsg_type == libc::SCM_RIGHTS {
            let fds = base.add(off + hdr) as *const i32;
            for k in 0..(clen - hdr) / 4 {
                stand_in(*fds.add(k) as i64, false);
            }
        }
        off += (clen + 7) & !7;
    }
}
