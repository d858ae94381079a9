//! Recording system calls whose results are inputs to the program.
//!
//! A seccomp filter makes the recorded syscalls raise SIGSYS in the thread
//! that made them (unless they come from the agent's own syscall page); the
//! handler performs the call for real through that page, logs the result
//! and the memory it wrote, and returns the result in `rax`. This costs an
//! in-process signal (~3 µs here) instead of two ptrace stops (~80 µs).
//! Time functions answered by the vDSO make no syscall, so their libc
//! symbols are interposed as well.

use core::ffi::{c_int, c_void};

use reprise_abi::EventKind as K;

use crate::ctl::{self, Ev};
use crate::raw;
use crate::real::real;

/// Syscalls whose results are recorded whatever their arguments.
pub const RECORDED: [i64; 13] = [
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_readv,
    libc::SYS_preadv,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_time,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
];

/// Syscalls on paths and file metadata, recorded with their results at
/// `sys`: what the file system told the program (see `replay::files`).
pub const FILES: [i64; 13] = [
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getcwd,
];

/// Syscalls recorded only when they write to stdout or stderr: the output
/// the replayer compares.
pub const OUTPUT: [i64; 2] = [libc::SYS_write, libc::SYS_writev];

/// Installs the SIGSYS handler and the filter: output writes at every
/// level, the input syscalls at `sys`. Returns false on failure (the
/// program then runs with the interposed functions only).
pub fn install(sys: bool) -> bool {
    // SAFETY: installs a handler whose code is async-signal-safe, then a
    // filter program that lives on the stack only during the call (the
    // kernel copies it).
    unsafe {
        // SA_NODEFER: a program's signal handler that runs while this
        // thread is inside a trapped syscall (a SIGTERM during `epoll_wait`)
        // may make trapped syscalls itself; with SIGSYS blocked there the
        // kernel would kill the process.
        let flags = (libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_NODEFER) as u64;
        if !raw::install_handler(libc::SIGSYS, on_sigsys as *const () as usize, flags) {
            return false;
        }
        let (filter, len) = crate::filter::build(sys);
        let filter = &filter[..len];
        let prog = libc::sock_fprog {
            len: len as u16,
            filter: filter.as_ptr() as *mut _,
        };
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return false;
        }
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        ) == 0
    }
}

/// `si_syscall` of a SIGSYS siginfo (not exposed by the libc crate).
unsafe fn si_syscall(info: *const libc::siginfo_t) -> i64 {
    // SAFETY: for SIGSYS the union after the three leading ints and padding
    // holds `void *_call_addr; int _syscall; unsigned _arch`.
    *((info as *const u8).add(24) as *const c_int) as i64
}

extern "C" fn on_sigsys(_sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext; the
    // registers are read and `rax` written back as the syscall's result.
    unsafe {
        let uc = uc as *mut libc::ucontext_t;
        let g = &mut (*uc).uc_mcontext.gregs;
        let nr = si_syscall(info);
        let a = [
            g[libc::REG_RDI as usize] as u64,
            g[libc::REG_RSI as usize] as u64,
            g[libc::REG_RDX as usize] as u64,
            g[libc::REG_R10 as usize] as u64,
            g[libc::REG_R8 as usize] as u64,
            g[libc::REG_R9 as usize] as u64,
        ];
        let saved = raw::errno();
        g[libc::REG_RAX as usize] = match nr {
            libc::SYS_rt_sigprocmask => sigprocmask_keeping_sigsys(&mut *uc, a),
            // The agent keeps SIGSYS: the program's handler is not installed.
            libc::SYS_rt_sigaction => {
                if a[2] != 0 {
                    core::ptr::write_bytes(a[2] as *mut u8, 0, a[3].min(256) as usize + 24);
                }
                0
            }
            libc::SYS_exit_group => crate::threads::exit_group(a[0]),
            _ => record_syscall(nr, a),
        };
        raw::set_errno(saved);
    }
}

/// `rt_sigprocmask(how, set, oldset, size)` applied to the mask the thread
/// returns to from the SIGSYS handler (a real call would be undone by the
/// handler's return), never blocking SIGSYS.
unsafe fn sigprocmask_keeping_sigsys(uc: &mut libc::ucontext_t, a: [u64; 6]) -> i64 {
    if a[3] != 8 {
        return -(libc::EINVAL as i64);
    }
    let mask = &mut uc.uc_sigmask as *mut libc::sigset_t as *mut u64;
    let cur = *mask;
    if a[2] != 0 {
        *(a[2] as *mut u64) = cur;
    }
    if a[1] != 0 {
        let set = *(a[1] as *const u64);
        let new = match a[0] as i32 {
            libc::SIG_BLOCK => cur | set,
            libc::SIG_UNBLOCK => cur & !set,
            libc::SIG_SETMASK => set,
            _ => return -(libc::EINVAL as i64),
        };
        // SIGTRAP: the replay's access breakpoints (a blocked synchronous
        // trap kills the process).
        let never = [libc::SIGSYS, libc::SIGTRAP, libc::SIGKILL, libc::SIGSTOP];
        let mut new = never.iter().fold(new, |m, s| m & !(1u64 << (s - 1)));
        // `record --chaos`: its pauses come whatever the program blocks.
        if crate::chaos::on() {
            new &= !(1u64 << (crate::chaos::signal() - 1));
        }
        *mask = new;
    }
    0
}

/// Bytes at `addr..addr+len` of our own memory.
///
/// # Safety
/// The range must have just been written by the kernel for this syscall.
unsafe fn bytes<'a>(addr: u64, len: i64) -> &'a [u8] {
    if addr == 0 || len <= 0 {
        return &[];
    }
    core::slice::from_raw_parts(addr as *const u8, len as usize)
}

const STAT_BYTES: i64 = core::mem::size_of::<libc::stat>() as i64;
const STATX_BYTES: i64 = 256;

/// The bytes of the NUL-terminated string at `addr` (a path), at most 4 KiB.
///
/// # Safety
/// `addr` is 0 or a string the program passed to a syscall that succeeded
/// in reading it, or failed with EFAULT (then it is not read here either:
/// the caller logs only what the kernel could read).
unsafe fn c_str<'a>(addr: u64) -> &'a [u8] {
    if addr == 0 {
        return &[];
    }
    let p = addr as *const u8;
    let mut n = 0;
    while n < 4096 && *p.add(n) != 0 {
        n += 1;
    }
    core::slice::from_raw_parts(p, n)
}

/// Logs the `done` bytes scattered over an iovec array: the first piece
/// with the event, the rest as `DataMore`.
pub unsafe fn log_iov(ev: Ev, iov: u64, cnt: u64, done: i64) {
    let iov = iov as *const libc::iovec;
    let mut left = done.max(0) as usize;
    let mut first = true;
    for i in 0..cnt as usize {
        if iov.is_null() {
            break;
        }
        let v = &*iov.add(i);
        let n = v.iov_len.min(left);
        let piece = core::slice::from_raw_parts(v.iov_base as *const u8, n);
        if first {
            ctl::log(ev, piece);
            first = false;
        } else if n > 0 {
            ctl::log(Ev::new(K::DataMore, ev.object), piece);
        }
        left -= n;
        if left == 0 {
            break;
        }
    }
    if first {
        ctl::log(ev, &[]);
    }
}

/// Performs syscall `nr` for real and logs it. Returns the kernel's value.
pub fn record_syscall(nr: i64, a: [u64; 6]) -> i64 {
    // libc reading the machine's description: neither logged nor ordered.
    if let Some(r) = crate::ambient::run_outside_sketch(nr, &a) {
        return r;
    }
    if crate::replay::on() {
        return crate::replay::syscall(nr, a);
    }
    let r = raw::syscall6(nr, a);
    if ctl::active() {
        log_syscall(nr, a, r);
    }
    r
}

/// Logs syscall `nr` with arguments `a` that returned `r`, with the memory
/// it wrote. Shared by the SIGSYS path and the interposed libc symbols
/// (whose calls the vDSO may answer without a syscall).
fn log_syscall(nr: i64, a: [u64; 6], r: i64) {
    let ev = Ev {
        arg0: a[0],
        arg1: a[1],
        result: r,
        extra: a[2],
        ..Ev::new(K::Syscall, nr as u64)
    };
    // A path the kernel could not read is not read here either.
    let path = |addr: u64| if r == -(libc::EFAULT as i64) { 0 } else { addr };
    // SAFETY: each arm reads only the memory the kernel just wrote for this
    // syscall, as its result says, or a path the kernel read.
    unsafe {
        match nr {
            libc::SYS_read | libc::SYS_pread64 | libc::SYS_recvfrom => {
                ctl::log(ev, bytes(a[1], r));
            }
            libc::SYS_getrandom => {
                ctl::log(ev, bytes(a[0], r));
            }
            libc::SYS_write => {
                ctl::log(ev, bytes(a[1], r));
            }
            libc::SYS_readv | libc::SYS_preadv | libc::SYS_writev => log_iov(ev, a[1], a[2], r),
            libc::SYS_recvmsg => {
                let m = a[1] as *const libc::msghdr;
                if r > 0 && !m.is_null() {
                    log_iov(ev, (*m).msg_iov as u64, (*m).msg_iovlen as u64, r);
                } else {
                    ctl::log(ev, &[]);
                }
                if r >= 0 && !m.is_null() {
                    crate::net::log_control(ev, &*m);
                }
            }
            libc::SYS_clock_gettime => {
                let n = if r == 0 {
                    core::mem::size_of::<libc::timespec>() as i64
                } else {
                    0
                };
                ctl::log(ev, bytes(a[1], n));
            }
            libc::SYS_gettimeofday => {
                let n = if r == 0 {
                    core::mem::size_of::<libc::timeval>() as i64
                } else {
                    0
                };
                ctl::log(ev, bytes(a[0], n));
            }
            libc::SYS_time => {
                ctl::log(ev, bytes(a[0], 8));
            }
            libc::SYS_open | libc::SYS_access => {
                ctl::log(ev, c_str(path(a[0])));
            }
            libc::SYS_openat | libc::SYS_faccessat | libc::SYS_faccessat2 => {
                ctl::log(ev, c_str(path(a[1])));
            }
            libc::SYS_stat | libc::SYS_lstat | libc::SYS_fstat => {
                ctl::log(ev, bytes(a[1], if r == 0 { STAT_BYTES } else { 0 }));
            }
            libc::SYS_newfstatat => {
                ctl::log(ev, bytes(a[2], if r == 0 { STAT_BYTES } else { 0 }));
            }
            libc::SYS_statx => {
                ctl::log(ev, bytes(a[4], if r == 0 { STATX_BYTES } else { 0 }));
            }
            libc::SYS_readlink => {
                ctl::log(ev, bytes(a[1], r));
            }
            libc::SYS_getcwd => {
                ctl::log(ev, bytes(a[0], r));
            }
            libc::SYS_readlinkat => {
                ctl::log(ev, bytes(a[2], r));
            }
            _ if crate::net::is_net(nr) => crate::net::log(ev, nr, a, r),
            libc::SYS_mmap => {
                // Where the kernel put the mapping, with length, prot and flags.
                let e = Ev {
                    extra: (a[2] << 32) | (a[3] & 0xffff_ffff),
                    ..ev
                };
                ctl::log(e, &[]);
            }
            _ => {
                ctl::log(ev, &[]);
            }
        };
    }
}

fn recording_sys() -> bool {
    ctl::active() && ctl::level() >= reprise_abi::Level::Sys
}

#[no_mangle]
pub unsafe extern "C" fn clock_gettime(clk: libc::clockid_t, ts: *mut libc::timespec) -> c_int {
    if crate::replay::on() && recording_sys() {
        let a = [clk as u64, ts as u64, 0, 0, 0, 0];
        return raw::to_libc(crate::replay::syscall(libc::SYS_clock_gettime, a)) as c_int;
    }
    if recording_sys() {
        // The vDSO is hidden from glibc at `sys` (see
        // reprise_recorder::launch); the agent calls it itself, or else
        // makes the syscall untrapped, and logs the result.
        let r = crate::vdso::clock_gettime(clk, ts).unwrap_or_else(|| {
            raw::syscall6(libc::SYS_clock_gettime, [clk as u64, ts as u64, 0, 0, 0, 0])
        });
        log_syscall(
            libc::SYS_clock_gettime,
            [clk as u64, ts as u64, 0, 0, 0, 0],
            r,
        );
        return raw::to_libc(r) as c_int;
    }
    let f = real!(clock_gettime: fn(libc::clockid_t, *mut libc::timespec) -> c_int);
    f(clk, ts)
}

#[no_mangle]
pub unsafe extern "C" fn gettimeofday(tv: *mut libc::timeval, tz: *mut c_void) -> c_int {
    if crate::replay::on() && recording_sys() {
        let a = [tv as u64, tz as u64, 0, 0, 0, 0];
        return raw::to_libc(crate::replay::syscall(libc::SYS_gettimeofday, a)) as c_int;
    }
    if recording_sys() {
        let a = [tv as u64, tz as u64, 0, 0, 0, 0];
        let r = crate::vdso::gettimeofday(tv, tz)
            .unwrap_or_else(|| raw::syscall6(libc::SYS_gettimeofday, a));
        log_syscall(libc::SYS_gettimeofday, a, r);
        return raw::to_libc(r) as c_int;
    }
    let f = real!(gettimeofday: fn(*mut libc::timeval, *mut c_void) -> c_int);
    f(tv, tz)
}

#[no_mangle]
pub unsafe extern "C" fn time(t: *mut libc::time_t) -> libc::time_t {
    if crate::replay::on() && recording_sys() {
        let a = [t as u64, 0, 0, 0, 0, 0];
        return crate::replay::syscall(libc::SYS_time, a) as libc::time_t;
    }
    if !recording_sys() {
        let f = real!(time: fn(*mut libc::time_t) -> libc::time_t);
        return f(t);
    }
    // The vDSO, or an untrapped syscall (glibc's own would trap: the vDSO
    // is hidden from it at `sys`).
    let r = crate::vdso::time(t).unwrap_or_else(|| raw::syscall3(libc::SYS_time, t as u64, 0, 0));
    {
        let ev = Ev {
            arg0: t as u64,
            result: r as i64,
            ..Ev::new(K::Syscall, libc::SYS_time as u64)
        };
        ctl::log(ev, &[]);
    }
    r
}

/// `read` is the most common input syscall: interposing the libc symbol
/// saves the SIGSYS round trip for calls that go through the PLT.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize {
    if !recording_sys() {
        let f = real!(read: fn(c_int, *mut c_void, usize) -> isize);
        return f(fd, buf, count);
    }
    raw::to_libc(record_syscall(
        libc::SYS_read,
        [fd as u64, buf as u64, count as u64, 0, 0, 0],
    )) as isize
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: usize) -> isize {
    let socket = recording_sys() && crate::net::is_socket(fd as i64);
    if !ctl::active() || !((1..=2).contains(&fd) || socket) {
        let f = real!(write: fn(c_int, *const c_void, usize) -> isize);
        return f(fd, buf, count);
    }
    raw::to_libc(record_syscall(
        libc::SYS_write,
        [fd as u64, buf as u64, count as u64, 0, 0, 0],
    )) as isize
}

/// Mappings the program asks for through libc's `mmap` are recorded
/// (where the kernel put them). `mmap` is not in the seccomp filter: libc
/// maps memory (for malloc) while a freshly exec'd image is still being
/// loaded, before its agent can handle a trap; mappings made inside libc
/// (malloc's arenas) are therefore not recorded.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    let f = real!(mmap: fn(*mut c_void, usize, c_int, c_int, c_int, libc::off_t) -> *mut c_void);
    let r = f(addr, len, prot, flags, fd, off);
    if recording_sys() && !crate::replay::on() {
        let ev = Ev {
            arg0: addr as u64,
            arg1: len as u64,
            extra: (prot as u64) << 32 | (flags as u32 as u64),
            result: if r == libc::MAP_FAILED {
                -(raw::errno() as i64)
            } else {
                r as i64
            },
            ..Ev::new(K::Syscall, libc::SYS_mmap as u64)
        };
        ctl::log(ev, &[]);
    }
    r
}
