//! The divergence report: a fixed-size text builder (numbers, syscall and
//! operation names, no allocation) and `diverge`, which records why the
//! replay stopped following the recording and kills the program, or
//! `leave_sketch`, which lets a thread that wrote to stderr off the sketch
//! run on (its message may be the start of the recorded failure).

use core::sync::atomic::Ordering;

use reprise_abi::{replay as rp, ControlHeader, EventKind as K};

use super::{bump, files, st};
use crate::ctl;
use crate::raw;

pub(super) struct Text {
    b: [u8; reprise_abi::DIVERGENCE_TEXT_BYTES],
    n: usize,
}

impl Text {
    pub(super) fn new() -> Text {
        Text {
            b: [0; reprise_abi::DIVERGENCE_TEXT_BYTES],
            n: 0,
        }
    }
    pub(super) fn s(&mut self, s: &[u8]) -> &mut Text {
        let k = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + k].copy_from_slice(&s[..k]);
        self.n += k;
        self
    }
    pub(super) fn d(&mut self, v: u64) -> &mut Text {
        let mut buf = [0u8; 20];
        let n = dec_len(v, &mut buf);
        let start = buf.len() - n;
        self.s(&buf[start..])
    }
    pub(super) fn x(&mut self, v: u64) -> &mut Text {
        const H: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 18];
        let mut i = buf.len();
        let mut v2 = v;
        loop {
            i -= 1;
            buf[i] = H[(v2 & 15) as usize];
            v2 >>= 4;
            if v2 == 0 {
                break;
            }
        }
        i -= 1;
        buf[i] = b'x';
        i -= 1;
        buf[i] = b'0';
        self.s(&buf[i..])
    }
    /// `kind(object)` as a user reads it.
    pub(super) fn op(&mut self, kind: u16, object: u64) -> &mut Text {
        match K::from_u16(kind) {
            Some(K::Syscall) => self.s(syscall_name(object as i64)).s(b"()"),
            Some(
                K::ThreadStart
                | K::ThreadExit
                | K::ProcessStart
                | K::ProcessExit
                | K::ThreadCreate
                | K::Fork,
            ) => self.s(K::from_u16(kind)
                .map(|k| k.name())
                .unwrap_or("?")
                .as_bytes()),
            Some(k) => self.s(k.name().as_bytes()).s(b"(").x(object).s(b")"),
            None => self.s(b"?"),
        }
    }
}

fn dec_len(mut v: u64, buf: &mut [u8; 20]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.len() - i
}

pub(super) fn dec(v: u64, out: &mut [u8; 10]) -> &[u8] {
    let mut buf = [0u8; 20];
    let n = dec_len(v, &mut buf).min(10);
    out[..n].copy_from_slice(&buf[20 - n..]);
    &out[..n]
}

fn syscall_name(nr: i64) -> &'static [u8] {
    match nr {
        libc::SYS_read => b"read",
        libc::SYS_pread64 => b"pread64",
        libc::SYS_readv => b"readv",
        libc::SYS_preadv => b"preadv",
        libc::SYS_recvfrom => b"recvfrom",
        libc::SYS_recvmsg => b"recvmsg",
        libc::SYS_getrandom => b"getrandom",
        libc::SYS_clock_gettime => b"clock_gettime",
        libc::SYS_gettimeofday => b"gettimeofday",
        libc::SYS_time => b"time",
        libc::SYS_write => b"write",
        libc::SYS_writev => b"writev",
        libc::SYS_mmap => b"mmap",
        libc::SYS_exit_group => b"exit_group",
        _ => files::name(nr)
            .or_else(|| super::net::name(nr))
            .unwrap_or(b"syscall"),
    }
}

/// True once this thread left the sketch writing to stderr (see
/// [`leave_sketch`]): it is the one the divergence record names. One load
/// of shared memory while the replay follows the sketch.
pub(super) fn off_sketch(c: &ControlHeader) -> bool {
    let d = &st(c).divergence;
    d.state.load(Ordering::Acquire) == 2
        && d.kind == rp::DIVERGED_STDERR
        && d.process == ctl::process()
        && d.thread == ctl::thread()
}

/// The thread's operation is not the recorded one at `pos`: a write to
/// stderr leaves the sketch ([`leave_sketch`]), anything else diverges.
pub(super) fn mismatch(c: &ControlHeader, pos: u64, t: &Text, stderr: bool) {
    if stderr {
        leave_sketch(c, pos, t);
    } else {
        diverge(c, pos, t)
    }
}

/// Records the divergence as [`rp::DIVERGED_STDERR`] and lets this thread
/// run on unordered (every other thread stops at its next event): a
/// failure's message is written before the process dies, and a failure
/// reached earlier than in the recording (an iteration sooner) is the same
/// failure. The supervisor ends the run after a short grace unless it
/// ends by itself first, and counts it as reproduced only if it failed
/// as recorded. If another thread diverged first, this is [`diverge`].
pub(super) fn leave_sketch(c: &ControlHeader, pos: u64, t: &Text) {
    if !record(c, pos, t, rp::DIVERGED_STDERR) {
        diverge(c, pos, t)
    }
}

/// Writes the divergence record; false if one was written already.
fn record(c: &ControlHeader, pos: u64, t: &Text, kind: u32) -> bool {
    let r = st(c);
    if r.divergence
        .state
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    // SAFETY: the one thread that won the 0 -> 1 transition owns the
    // record until it stores 2.
    unsafe {
        let d = &mut *core::ptr::addr_of_mut!((*ctl::control_ptr()).replay.divergence);
        d.process = ctl::process();
        d.thread = ctl::thread();
        d.pos = pos;
        d.kind = kind;
        d.len = t.n as u32;
        d.text[..t.n].copy_from_slice(&t.b[..t.n]);
    }
    r.divergence.state.store(2, Ordering::Release);
    bump(r);
    true
}

/// Records why the replay stopped following the recording and kills the
/// program (every process of it, this one last).
pub(super) fn diverge(c: &ControlHeader, pos: u64, t: &Text) -> ! {
    diverge_as(c, pos, t, rp::DIVERGED_ORDER)
}

/// [`diverge`], saying why (`rp::DIVERGED_*`).
pub(super) fn diverge_as(c: &ControlHeader, pos: u64, t: &Text, kind: u32) -> ! {
    record(c, pos, t, kind);
    let me = raw::getpid();
    for p in &c.processes {
        let pid = p.pid.load(Ordering::Acquire);
        if pid > 0 && pid != me {
            raw::syscall3(libc::SYS_kill, pid as u64, libc::SIGKILL as u64, 0);
        }
    }
    loop {
        raw::syscall3(libc::SYS_kill, me as u64, libc::SIGKILL as u64, 0);
    }
}
