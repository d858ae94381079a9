//! System calls in replay mode: recorded inputs hand back the recorded
//! result and memory, output to stdout/stderr runs and is compared with
//! the recording, file queries go to `files`, the rest runs unordered.

use core::sync::atomic::Ordering;

use reprise_abi::{replay as rp, ControlHeader, EventKind as K};

use super::baton::{advance, arrive_writing, park, yield_baton};
use super::divergence::{self, mismatch, Text};
use super::preempt::Busy;
use super::{copy_data, ctl_ok, data_byte, files, st, Turn};
use crate::raw;

fn is_input(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_read
            | libc::SYS_pread64
            | libc::SYS_readv
            | libc::SYS_preadv
            | libc::SYS_recvfrom
            | libc::SYS_recvmsg
            | libc::SYS_getrandom
            | libc::SYS_clock_gettime
            | libc::SYS_gettimeofday
            | libc::SYS_time
    )
}

/// A file opened for real whose reads are replayed from the trace: its
/// offset moves as the recorded read moved it, so that the program's
/// `lseek(fd, 0, SEEK_CUR)` (stdio's `fseek`, glibc's time-zone reader)
/// sees what it saw then. Not seekable (a pipe, a socket): nothing moves.
fn follow_offset(fd: u64, read: i64) {
    if read > 0 {
        raw::syscall6(
            libc::SYS_lseek,
            [fd, read as u64, libc::SEEK_CUR as u64, 0, 0, 0],
        );
    }
}

/// Scatters the recorded data over an iovec array.
///
/// # Safety
/// `iov` must point to `cnt` iovecs of the program.
unsafe fn scatter(c: &ControlHeader, t: &Turn, iov: u64, cnt: u64) {
    let iov = iov as *const libc::iovec;
    if iov.is_null() {
        return;
    }
    let mut off = 0usize;
    // Only the bytes received: a `recvmsg`'s control data follows them.
    let total = (t.data_len as usize).min(t.result.max(0) as usize);
    for i in 0..cnt as usize {
        if off >= total {
            break;
        }
        let v = &*iov.add(i);
        let k = v.iov_len.min(total - off);
        copy_data(c, t.pos, off, v.iov_base as *mut u8, k);
        off += k;
    }
}

/// True if two byte strings are equal except where the recorded one (`b`)
/// has a number that `is_id` accepts (a recorded pid or tid) and the
/// program's (`a`) has another number.
fn same_but_ids(
    a: &mut impl FnMut(usize) -> u8,
    alen: usize,
    b: impl Fn(usize) -> u8,
    blen: usize,
    is_id: impl Fn(u64) -> bool,
) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < alen && j < blen {
        let (x, y) = (a(i), b(j));
        if x.is_ascii_digit() && y.is_ascii_digit() {
            let (mut u, mut v) = (0u64, 0u64);
            while i < alen && a(i).is_ascii_digit() {
                u = u.saturating_mul(10).saturating_add((a(i) - b'0') as u64);
                i += 1;
            }
            while j < blen && b(j).is_ascii_digit() {
                v = v.saturating_mul(10).saturating_add((b(j) - b'0') as u64);
                j += 1;
            }
            if u != v && !is_id(v) {
                return false;
            }
        } else if x == y {
            i += 1;
            j += 1;
        } else {
            return false;
        }
    }
    i == alen && j == blen
}

/// Compares what the program just wrote with the recorded output.
fn check_output(c: &ControlHeader, t: &Turn, fd: u64, mut next: impl FnMut(usize) -> u8, n: usize) {
    let r = st(c);
    let stream = (fd as usize).clamp(1, 2) - 1;
    let at = r.output_pos[stream].load(Ordering::Relaxed);
    let mut kept = (t.data_len as usize).min(n);
    // The recording's wrong line and what follows it (a wrong-output
    // failure): compared by the supervisor with the expected output at the
    // end, not here.
    let free_from = r.stdout_free_from.load(Ordering::Relaxed);
    let free = stream == 0 && at.saturating_add(n as u64) > free_from;
    if free {
        kept = kept.min(free_from.saturating_sub(at) as usize);
    }
    if !free
        && (0..kept).any(|i| next(i) != data_byte(c, t.pos, i))
        && t.data_len as i64 == t.result
        && same_but_ids(
            &mut next,
            n,
            |j| data_byte(c, t.pos, j),
            t.data_len as usize,
            |v| {
                r.recorded_ids
                    .iter()
                    .any(|id| v != 0 && id.load(Ordering::Relaxed) as u64 == v)
            },
        )
    {
        // A pid or a time printed: not what the sketch orders.
        r.output_numbers.fetch_add(1, Ordering::Relaxed);
        r.output_pos[stream].fetch_add(t.result as u64, Ordering::Relaxed);
        return;
    }
    for i in 0..kept {
        if next(i) != data_byte(c, t.pos, i) {
            let mut m = Text::new();
            m.s(if stream == 0 { b"stdout" } else { b"stderr" })
                .s(b" differs from the recorded output at byte ")
                .d(at + i as u64);
            mismatch(c, t.pos, &m, fd == 2);
            return;
        }
    }
    if !free && t.result >= 0 && n as i64 != t.result {
        let mut m = Text::new();
        m.s(b"write(")
            .d(fd)
            .s(b") wrote ")
            .d(n as u64)
            .s(b" bytes, the recording ")
            .d(t.result as u64)
            .s(b" (at byte ")
            .d(at)
            .s(b")");
        mismatch(c, t.pos, &m, fd == 2);
        return;
    }
    r.output_pos[stream].fetch_add(n as u64, Ordering::Relaxed);
}

/// A trapped or interposed system call in replay mode. Inputs return the
/// recorded result and memory; output to stdout/stderr runs and is
/// compared; everything else runs for real, unordered.
pub fn syscall(nr: i64, a: [u64; 6]) -> i64 {
    let _busy = Busy::enter();
    let c = ctl_ok();
    let output = matches!(nr, libc::SYS_write | libc::SYS_writev) && (1..=2).contains(&a[0]);
    let level_sys = c.level >= reprise_abi::Level::Sys as u32;
    let recorded = st(c).recorded_events.load(Ordering::Relaxed);
    let file = files::is_file_syscall(nr) && recorded & rp::RECORDED_FILES != 0;
    let net = (crate::net::is_net(nr) || crate::net::is_socket_write(nr, a[0]))
        && recorded & rp::RECORDED_NET != 0;
    // Unordered, or from a thread that left the sketch: run for real.
    if !(output || (level_sys && (is_input(nr) || file || net))) || divergence::off_sketch(c) {
        return raw::syscall6(nr, a);
    }
    // A failure's message: see `divergence::leave_sketch`.
    let stderr = output && a[0] == 2;
    let arrived = arrive_writing(c, K::Syscall, nr as u64, stderr);
    if stderr && divergence::off_sketch(c) {
        return raw::syscall6(nr, a);
    }
    let Some(t) = arrived else { park(c) };
    let result;
    // SAFETY: each arm writes only into the buffers the program passed to
    // this syscall, no more bytes than the syscall would have written.
    unsafe {
        match nr {
            _ if crate::net::is_net(nr) || crate::net::is_socket_write(nr, a[0]) => {
                result = super::net::emulate(c, &t, nr, a)
            }
            libc::SYS_write => {
                let r = raw::syscall6(nr, a);
                let n = r.max(0) as usize;
                let buf = a[1] as *const u8;
                check_output(c, &t, a[0], |i| *buf.add(i), n);
                result = r;
            }
            libc::SYS_writev => {
                let r = raw::syscall6(nr, a);
                let n = r.max(0) as usize;
                let iov = a[1] as *const libc::iovec;
                let cnt = a[2] as usize;
                check_output(
                    c,
                    &t,
                    a[0],
                    |i| {
                        let mut off = i;
                        for k in 0..cnt {
                            let v = &*iov.add(k);
                            if off < v.iov_len {
                                return *(v.iov_base as *const u8).add(off);
                            }
                            off -= v.iov_len;
                        }
                        0
                    },
                    n,
                );
                result = r;
            }
            libc::SYS_read | libc::SYS_pread64 | libc::SYS_recvfrom => {
                let n = (t.data_len as usize).min(a[2] as usize);
                copy_data(c, t.pos, 0, a[1] as *mut u8, n);
                result = t.result;
                if nr == libc::SYS_read {
                    follow_offset(a[0], t.result);
                }
            }
            libc::SYS_getrandom => {
                let n = (t.data_len as usize).min(a[1] as usize);
                copy_data(c, t.pos, 0, a[0] as *mut u8, n);
                result = t.result;
            }
            libc::SYS_readv | libc::SYS_preadv => {
                scatter(c, &t, a[1], a[2]);
                result = t.result;
                if nr == libc::SYS_readv {
                    follow_offset(a[0], t.result);
                }
            }
            libc::SYS_recvmsg => {
                let m = a[1] as *mut libc::msghdr;
                if !m.is_null() {
                    scatter(c, &t, (*m).msg_iov as u64, (*m).msg_iovlen as u64);
                    if recorded & rp::RECORDED_NET != 0 {
                        super::net::put_control(c, &t, &mut *m);
                    }
                }
                result = t.result;
            }
            libc::SYS_clock_gettime => {
                let n = (t.data_len as usize).min(core::mem::size_of::<libc::timespec>());
                if a[1] != 0 {
                    copy_data(c, t.pos, 0, a[1] as *mut u8, n);
                }
                result = t.result;
            }
            libc::SYS_gettimeofday => {
                let n = (t.data_len as usize).min(core::mem::size_of::<libc::timeval>());
                if a[0] != 0 {
                    copy_data(c, t.pos, 0, a[0] as *mut u8, n);
                }
                result = t.result;
            }
            libc::SYS_time => {
                if a[0] != 0 {
                    *(a[0] as *mut i64) = t.result;
                }
                result = t.result;
            }
            _ if files::is_file_syscall(nr) => result = files::emulate(c, &t, nr, a),
            _ => result = raw::syscall6(nr, a),
        }
    }
    if stderr && divergence::off_sketch(c) {
        // Stderr differed from the recording's: written, not advanced.
        return result;
    }
    advance(c, &t);
    yield_baton(c);
    result
}
