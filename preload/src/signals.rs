//! Recording signal deliveries.
//!
//! The program's signal handlers are installed behind an agent trampoline
//! that logs a `Signal` event (signal number, `si_code`) in the receiving
//! thread before it calls the handler. Signals whose action is the default
//! or ignore leave no event: they either kill the process (the outcome says
//! so) or do nothing.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use reprise_abi::EventKind;

use crate::ctl::{self, Ev};
use crate::real::real;
use crate::replay;

const NSIG: usize = 65;

/// The program's handler for each signal (0: none of ours installed).
static HANDLERS: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
/// Its `sa_flags` (whether it takes `siginfo_t`).
static FLAGS: [AtomicU32; NSIG] = [const { AtomicU32::new(0) }; NSIG];

/// libc's own `sigaction`, for the agent's handlers (the exported one
/// below would wrap them).
pub fn real_sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    let f = real!(sigaction: fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int);
    // SAFETY: the caller's pointers are passed through unchanged.
    unsafe { f(sig, act, old) }
}

extern "C" fn trampoline(sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    let i = sig as usize;
    if i >= NSIG {
        return;
    }
    if ctl::active() && !replay::on() {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        let code = if info.is_null() {
            0
        } else {
            unsafe { (*info).si_code }
        };
        // The siginfo too: a replay hands the handler what it got (who
        // sent the signal, the fault address).
        let bytes: &[u8] = if info.is_null() {
            &[]
        } else {
            // SAFETY: the kernel's siginfo, valid for the handler's call.
            unsafe {
                core::slice::from_raw_parts(
                    info as *const u8,
                    core::mem::size_of::<libc::siginfo_t>(),
                )
            }
        };
        ctl::log(
            Ev {
                arg0: code as u64,
                ..Ev::new(EventKind::Signal, sig as u64)
            },
            bytes,
        );
    }
    if replay::on() && replay::delivers_signals() {
        // A replay runs the handlers where the recording ran them; a real
        // signal now (a child's SIGCHLD, a kill between the program's
        // processes) is that recorded one arriving again, or one the
        // recording did not have.
        return;
    }
    let h = HANDLERS[i].load(Ordering::Acquire);
    if h == 0 || h == libc::SIG_DFL || h == libc::SIG_IGN {
        return;
    }
    // A handler's entries are not ordered: it runs where the signal came.
    let _off = crate::hooks::Off::enter();
    // SAFETY: `h` is the handler the program installed for `sig`, called
    // with the signature its flags declare.
    unsafe {
        if FLAGS[i].load(Ordering::Relaxed) as c_int & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                core::mem::transmute(h);
            f(sig, info, uc)
        } else {
            let f: extern "C" fn(c_int) = core::mem::transmute(h);
            f(sig)
        }
    }
}

/// Runs the program's handler for a signal the recording delivered here
/// (a replay: the signal itself does not come again). A handler that is
/// gone (the default action, ignore) is not run.
pub fn deliver(sig: c_int, code: c_int, recorded: Option<&libc::siginfo_t>) {
    let i = sig as usize;
    if i >= NSIG {
        return;
    }
    let h = HANDLERS[i].load(Ordering::Acquire);
    if h == 0 || h == libc::SIG_DFL || h == libc::SIG_IGN {
        return;
    }
    let _off = crate::hooks::Off::enter();
    // SAFETY: `h` is the handler the program installed for `sig`, called
    // with the signature its flags declare, with a siginfo that carries
    // the recorded signal number and code (no context: the handler was
    // not entered from a real interruption).
    unsafe {
        let mut info: libc::siginfo_t = match recorded {
            Some(i) => *i,
            None => core::mem::zeroed(),
        };
        info.si_signo = sig;
        info.si_code = code;
        if FLAGS[i].load(Ordering::Relaxed) as c_int & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                core::mem::transmute(h);
            f(sig, &mut info, core::ptr::null_mut())
        } else {
            let f: extern "C" fn(c_int) = core::mem::transmute(h);
            f(sig)
        }
    }
}

/// Reports the program's own handler where the kernel holds the trampoline.
unsafe fn unwrap_old(sig: usize, old: *mut libc::sigaction, prev_handler: usize, prev_flags: u32) {
    if !old.is_null() && (*old).sa_sigaction == trampoline as *const () as usize {
        (*old).sa_sigaction = prev_handler;
        (*old).sa_flags = prev_flags as c_int;
    }
    let _ = sig;
}

#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let i = sig as usize;
    if !ctl::active() || !(1..NSIG).contains(&i) || sig == libc::SIGSYS {
        return real_sigaction(sig, act, old);
    }
    let (prev_handler, prev_flags) = (
        HANDLERS[i].load(Ordering::Acquire),
        FLAGS[i].load(Ordering::Relaxed),
    );
    if act.is_null() {
        let r = real_sigaction(sig, act, old);
        unwrap_old(i, old, prev_handler, prev_flags);
        return r;
    }
    let mut a = *act;
    let h = a.sa_sigaction;
    let r = if h == libc::SIG_DFL || h == libc::SIG_IGN {
        HANDLERS[i].store(0, Ordering::Release);
        real_sigaction(sig, &a, old)
    } else {
        FLAGS[i].store(a.sa_flags as u32, Ordering::Relaxed);
        HANDLERS[i].store(h, Ordering::Release);
        a.sa_sigaction = trampoline as *const () as usize;
        a.sa_flags |= libc::SA_SIGINFO;
        // The handler may make trapped syscalls (and hit a replay's
        // access breakpoints): SIGSYS and SIGTRAP stay deliverable in it.
        libc::sigdelset(&mut a.sa_mask, libc::SIGSYS);
        libc::sigdelset(&mut a.sa_mask, libc::SIGTRAP);
        real_sigaction(sig, &a, old)
    };
    unwrap_old(i, old, prev_handler, prev_flags);
    r
}

/// `signal(2)` as glibc does it (BSD semantics: SA_RESTART), through the
/// interposed `sigaction` so that the handler is wrapped.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    let mut a: libc::sigaction = core::mem::zeroed();
    a.sa_sigaction = handler;
    a.sa_flags = libc::SA_RESTART;
    libc::sigemptyset(&mut a.sa_mask);
    libc::sigaddset(&mut a.sa_mask, sig);
    let mut old: libc::sigaction = core::mem::zeroed();
    if sigaction(sig, &a, &mut old) < 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}
