//! C11 threads (`<threads.h>`): glibc implements `mtx_lock`, `cnd_wait`,
//! `thrd_create` and the rest on top of its pthread functions, but calls
//! them inside libc, where the agent's `pthread_*` cannot interpose: a
//! program written with C11 threads made no sketch event at all. Each is
//! interposed here as the agent's pthread counterpart, whose result is
//! mapped to C11's as glibc maps it.
//!
//! The types are glibc's pthread objects under other names (`mtx_t` is a
//! `pthread_mutex_t`, `cnd_t` a `pthread_cond_t`, `thrd_t` a `pthread_t`,
//! `once_flag` a `pthread_once_t`), so the trace holds pthread events with
//! pthread results (a timeout is `ETIMEDOUT`, a refused trylock `EBUSY`).

use core::ffi::{c_int, c_void};

use libc::{pthread_cond_t, pthread_mutex_t, pthread_once_t, pthread_t, timespec};

use crate::{sync, threads};

const THRD_SUCCESS: c_int = 0;
const THRD_BUSY: c_int = 1;
const THRD_ERROR: c_int = 2;
const THRD_NOMEM: c_int = 3;
const THRD_TIMEDOUT: c_int = 4;

/// C11's result for a pthread error number, as glibc maps it.
fn from_errno(e: c_int) -> c_int {
    match e {
        0 => THRD_SUCCESS,
        libc::ENOMEM => THRD_NOMEM,
        libc::ETIMEDOUT => THRD_TIMEDOUT,
        libc::EBUSY => THRD_BUSY,
        _ => THRD_ERROR,
    }
}

type ThrdStart = unsafe extern "C" fn(*mut c_void) -> c_int;

#[no_mangle]
pub unsafe extern "C" fn thrd_create(thr: *mut pthread_t, f: ThrdStart, arg: *mut c_void) -> c_int {
    // SAFETY: glibc starts a C11 thread the same way: the function
    // returns an int in the return register, which `thrd_join` below
    // reads back as the low 32 bits of the thread's pointer-sized result.
    let start =
        unsafe { core::mem::transmute::<ThrdStart, extern "C" fn(*mut c_void) -> *mut c_void>(f) };
    // SAFETY: the caller's arguments, as pthread_create takes them.
    from_errno(unsafe { threads::pthread_create(thr, core::ptr::null(), start, arg) })
}

#[no_mangle]
pub unsafe extern "C" fn thrd_join(thr: pthread_t, res: *mut c_int) -> c_int {
    let mut ret: *mut c_void = core::ptr::null_mut();
    // SAFETY: joining the caller's thread into a local.
    let r = unsafe { threads::pthread_join(thr, &mut ret) };
    if r == 0 && !res.is_null() {
        // SAFETY: `res` is the caller's int, checked non-null.
        unsafe { *res = ret as usize as u32 as c_int };
    }
    from_errno(r)
}

#[no_mangle]
pub unsafe extern "C" fn thrd_exit(res: c_int) -> ! {
    // SAFETY: ends the calling thread, as thrd_exit does.
    unsafe { threads::pthread_exit(res as isize as *mut c_void) }
}

#[no_mangle]
pub unsafe extern "C" fn thrd_yield() {
    // SAFETY: the agent's sched_yield (a replay passes the baton there).
    unsafe { sync::sched_yield() };
}

#[no_mangle]
pub unsafe extern "C" fn mtx_lock(m: *mut pthread_mutex_t) -> c_int {
    // SAFETY: an mtx_t is a pthread mutex (here and below).
    from_errno(unsafe { sync::pthread_mutex_lock(m) })
}

#[no_mangle]
pub unsafe extern "C" fn mtx_timedlock(m: *mut pthread_mutex_t, t: *const timespec) -> c_int {
    from_errno(unsafe { sync::pthread_mutex_timedlock(m, t) })
}

#[no_mangle]
pub unsafe extern "C" fn mtx_trylock(m: *mut pthread_mutex_t) -> c_int {
    from_errno(unsafe { sync::pthread_mutex_trylock(m) })
}

#[no_mangle]
pub unsafe extern "C" fn mtx_unlock(m: *mut pthread_mutex_t) -> c_int {
    from_errno(unsafe { sync::pthread_mutex_unlock(m) })
}

#[no_mangle]
pub unsafe extern "C" fn cnd_wait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t) -> c_int {
    // SAFETY: a cnd_t is a pthread condition variable (here and below).
    from_errno(unsafe { sync::pthread_cond_wait(c, m) })
}

#[no_mangle]
pub unsafe extern "C" fn cnd_timedwait(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
    t: *const timespec,
) -> c_int {
    from_errno(unsafe { sync::pthread_cond_timedwait(c, m, t) })
}

#[no_mangle]
pub unsafe extern "C" fn cnd_signal(c: *mut pthread_cond_t) -> c_int {
    from_errno(unsafe { sync::pthread_cond_signal(c) })
}

#[no_mangle]
pub unsafe extern "C" fn cnd_broadcast(c: *mut pthread_cond_t) -> c_int {
    from_errno(unsafe { sync::pthread_cond_broadcast(c) })
}

#[no_mangle]
pub unsafe extern "C" fn call_once(
    flag: *mut pthread_once_t,
    init: Option<unsafe extern "C" fn()>,
) {
    // SAFETY: `once_flag` is glibc's pthread_once_t; pthread_once runs
    // `init` once, as call_once does.
    unsafe { sync::pthread_once(flag, init) };
}
