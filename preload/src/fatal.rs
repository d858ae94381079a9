//! Capturing how the program died: a fatal signal's registers, stack and
//! memory map, and the text of a failed `assert`.
//!
//! The supervisor does not ptrace the program while it records, so the
//! agent writes this into the control block itself before the process dies;
//! the supervisor unwinds and symbolises the stack afterwards.

use core::ffi::{c_char, c_int, c_uint, c_void};
use core::sync::atomic::Ordering;

use reprise_abi::{AssertInfo, CrashInfo, CRASH_MAPS_BYTES};

use crate::ctl;
use crate::raw;
use crate::real::real;

pub const FATAL_SIGNALS: [c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGTRAP,
];

pub fn install() {
    // SAFETY: installs an async-signal-safe handler for signals whose
    // default action would kill the process anyway.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_fatal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        for s in FATAL_SIGNALS {
            crate::signals::real_sigaction(s, &sa, core::ptr::null_mut());
        }
    }
}

extern "C" fn on_fatal(sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    // SAFETY: valid siginfo and ucontext from the kernel; the crash record
    // is written by the one thread that wins the state transition 0 -> 1.
    unsafe {
        if let Some(c) = ctl::control() {
            if c.crash
                .state
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let crash = core::ptr::addr_of_mut!((*ctl::control_ptr()).crash);
                fill_crash(&mut *crash, sig, info, uc as *const libc::ucontext_t);
                (*crash).state.store(2, Ordering::Release);
            }
        }
        // Die of the same signal, as without reprise.
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        crate::signals::real_sigaction(sig, &sa, core::ptr::null_mut());
        if (*info).si_code <= 0 {
            // Sent by kill/raise/abort: send it again; it is delivered
            // (with the default action) when this handler returns.
            raw::syscall3(
                libc::SYS_tgkill,
                raw::getpid() as u64,
                raw::gettid() as u64,
                sig as u64,
            );
        }
        // A hardware fault re-executes the instruction and dies.
    }
}

unsafe fn fill_crash(
    crash: &mut CrashInfo,
    sig: c_int,
    info: *const libc::siginfo_t,
    uc: *const libc::ucontext_t,
) {
    let g = &(*uc).uc_mcontext.gregs;
    let order = [
        libc::REG_RAX,
        libc::REG_RBX,
        libc::REG_RCX,
        libc::REG_RDX,
        libc::REG_RSI,
        libc::REG_RDI,
        libc::REG_RBP,
        libc::REG_RSP,
        libc::REG_R8,
        libc::REG_R9,
        libc::REG_R10,
        libc::REG_R11,
        libc::REG_R12,
        libc::REG_R13,
        libc::REG_R14,
        libc::REG_R15,
        libc::REG_RIP,
        libc::REG_EFL,
    ];
    for (i, r) in order.iter().enumerate() {
        crash.regs[i] = g[*r as usize] as u64;
    }
    crash.signo = sig;
    crash.code = (*info).si_code;
    crash.fault_addr = (*info).si_addr() as u64;
    crash.process = ctl::process();
    crash.thread = ctl::thread();
    crash.tid = raw::gettid();

    // The stack from rsp up, page by page, stopping at the first page that
    // cannot be read (the top of the stack mapping).
    let rsp = crash.regs[reprise_abi::REG_RSP];
    crash.stack_base = rsp;
    let copied = raw::copy_own(rsp, &mut crash.stack);
    crash.stack_len = copied as u64;

    // /proc/self/maps, to know which file each code address belongs to.
    let path = b"/proc/self/maps\0";
    let fd = raw::syscall6(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path.as_ptr() as u64,
            libc::O_RDONLY as u64,
            0,
            0,
            0,
        ],
    );
    let mut len = 0usize;
    if fd >= 0 {
        while len < CRASH_MAPS_BYTES {
            let r = raw::syscall3(
                libc::SYS_read,
                fd as u64,
                crash.maps.as_mut_ptr().add(len) as u64,
                (CRASH_MAPS_BYTES - len) as u64,
            );
            if r <= 0 {
                break;
            }
            len += r as usize;
        }
        raw::syscall3(libc::SYS_close, fd as u64, 0, 0);
    }
    crash.maps_len = len as u64;
}

/// Appends `s` to the assertion buffer.
fn append(info: &mut AssertInfo, s: &[u8]) {
    let at = info.len as usize;
    let n = s.len().min(info.text.len() - at);
    info.text[at..at + n].copy_from_slice(&s[..n]);
    info.len += n as u32;
}

unsafe fn cstr<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        return b"?";
    }
    core::ffi::CStr::from_ptr(p).to_bytes()
}

fn decimal(mut v: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Yields a thread that lost the race to record its assertion makes while
/// the winner writes its message (a few hundred bytes: a yield or two).
const ASSERT_WAIT_YIELDS: u32 = 1000;

/// glibc's `assert` failure path: keep the message, then fail as usual.
#[no_mangle]
pub unsafe extern "C" fn __assert_fail(
    assertion: *const c_char,
    file: *const c_char,
    line: c_uint,
    function: *const c_char,
) -> ! {
    if let Some(c) = ctl::control() {
        if c.assert_info
            .state
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let info = &mut *core::ptr::addr_of_mut!((*ctl::control_ptr()).assert_info);
            info.process = ctl::process();
            info.thread = ctl::thread();
            info.len = 0;
            let mut num = [0u8; 10];
            append(info, cstr(file));
            append(info, b":");
            append(info, decimal(line, &mut num));
            append(info, b": ");
            append(info, cstr(function));
            append(info, b": Assertion `");
            append(info, cstr(assertion));
            append(info, b"' failed.");
            info.state.store(2, Ordering::Release);
        } else {
            // Another thread failed an assertion at the same moment (two
            // threads that found the same damage): let it finish its
            // message before this one aborts the process, or the recorded
            // outcome is a bare SIGABRT. Bounded: its thread may be gone.
            for _ in 0..ASSERT_WAIT_YIELDS {
                if c.assert_info.state.load(Ordering::Acquire) == 2 {
                    break;
                }
                raw::syscall3(libc::SYS_sched_yield, 0, 0, 0);
            }
        }
    }
    let f = real!(__assert_fail: fn(*const c_char, *const c_char, c_uint, *const c_char) -> ());
    f(assertion, file, line, function);
    libc::abort()
}
