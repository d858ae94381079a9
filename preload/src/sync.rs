//! Interposed pthread synchronisation functions.
//!
//! Each operation is logged at the point its own semantics order it: an
//! acquiring operation after it acquired (so the next releaser's number is
//! higher), a releasing one before it releases. A thread blocked in an
//! acquiring operation advertises the object in its thread entry, so the
//! supervisor can name what a hung thread waits for.

use core::ffi::c_int;

use libc::{
    pthread_barrier_t, pthread_cond_t, pthread_mutex_t, pthread_once_t, pthread_rwlock_t,
    pthread_spinlock_t, sem_t, timespec,
};
use reprise_abi::EventKind as K;

use crate::ctl::{self, Ev};
use crate::raw;
use crate::real::real;
use crate::replay;

/// Runs an acquiring operation `f` on `object` and logs it afterwards.
#[inline(always)]
pub(crate) fn acquire(kind: K, object: u64, holds: bool, f: impl FnOnce() -> c_int) -> c_int {
    acquire_from(kind, object, 0, holds, f)
}

/// [`acquire`] called from `site` in the program (its return address,
/// logged as the event's `arg0`; 0: not known).
#[inline(always)]
fn acquire_from(kind: K, object: u64, site: u64, holds: bool, f: impl FnOnce() -> c_int) -> c_int {
    if !ctl::active() {
        return f();
    }
    if replay::on() {
        return replay::acquire_from(kind, object, site, holds, f);
    }
    crate::chaos::at_event();
    let Some(h) = ctl::here() else { return f() };
    h.set_waiting(object, kind);
    let r = f();
    h.clear_waiting();
    if r == 0 && holds {
        h.held_add(object);
    }
    h.log(
        Ev {
            result: r as i64,
            arg0: site,
            ..Ev::new(kind, object)
        },
        &[],
    );
    r
}

/// Logs a releasing operation on `object`, then runs it.
#[inline(always)]
pub(crate) fn release(kind: K, object: u64, f: impl FnOnce() -> c_int) -> c_int {
    if !ctl::active() {
        return f();
    }
    if replay::on() {
        return replay::release(kind, object, f);
    }
    crate::chaos::at_event();
    if let Some(h) = ctl::here() {
        h.held_remove(object);
        h.log(Ev::new(kind, object), &[]);
    }
    f()
}

/// Logs a non-blocking operation after it ran.
#[inline(always)]
pub(crate) fn after(kind: K, object: u64, holds: bool, f: impl FnOnce() -> c_int) -> c_int {
    if !ctl::active() {
        return f();
    }
    if replay::on() {
        return replay::after(kind, object, holds, f);
    }
    crate::chaos::at_event();
    let r = f();
    let Some(h) = ctl::here() else { return r };
    if r == 0 && holds {
        h.held_add(object);
    }
    h.log(
        Ev {
            result: r as i64,
            ..Ev::new(kind, object)
        },
        &[],
    );
    r
}

/// `pthread_mutex_lock`: passes where the program called it (the return
/// address) to [`mutex_lock_from`] as its second argument; a tail jump
/// keeps the stack as the caller left it. The call site tells two paths
/// through the program apart that lock the same mutex (a claim and a
/// release of one pool), which the sketch would otherwise see as one.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_lock(_m: *mut pthread_mutex_t) -> c_int {
    // SAFETY: at entry [rsp] is the caller's return address and rdi the
    // mutex; rsi is a free argument register of the C ABI. The jump leaves
    // the stack and rdi untouched, so `mutex_lock_from` returns to the
    // program's caller as `pthread_mutex_lock` would.
    core::arch::naked_asm!("mov rsi, [rsp]", "jmp {f}", f = sym mutex_lock_from);
}

unsafe extern "C" fn mutex_lock_from(m: *mut pthread_mutex_t, site: u64) -> c_int {
    let f = real!(pthread_mutex_lock: fn(*mut pthread_mutex_t) -> c_int);
    if ctl::active() && !replay::on() {
        // Uncontended: no need to advertise a wait that cannot hang.
        let t = real!(pthread_mutex_trylock: fn(*mut pthread_mutex_t) -> c_int);
        let r = t(m);
        // EOWNERDEAD: a robust mutex acquired from a dead owner.
        if r == 0 || r == libc::EOWNERDEAD {
            if let Some(h) = ctl::here() {
                h.held_add(m as u64);
                h.log(
                    Ev {
                        result: r as i64,
                        arg0: site,
                        ..Ev::new(K::MutexLock, m as u64)
                    },
                    &[],
                );
            }
            return r;
        }
    }
    acquire_from(K::MutexLock, m as u64, site, true, || unsafe { f(m) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_trylock(m: *mut pthread_mutex_t) -> c_int {
    let f = real!(pthread_mutex_trylock: fn(*mut pthread_mutex_t) -> c_int);
    after(K::MutexTrylock, m as u64, true, || unsafe { f(m) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_timedlock(
    m: *mut pthread_mutex_t,
    t: *const timespec,
) -> c_int {
    let f = real!(pthread_mutex_timedlock: fn(*mut pthread_mutex_t, *const timespec) -> c_int);
    acquire(K::MutexTimedlock, m as u64, true, || unsafe { f(m, t) })
}

/// `std::timed_mutex::try_lock_for` (steady clock).
#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_clocklock(
    m: *mut pthread_mutex_t,
    clock: libc::clockid_t,
    t: *const timespec,
) -> c_int {
    let f = real!(pthread_mutex_clocklock:
        fn(*mut pthread_mutex_t, libc::clockid_t, *const timespec) -> c_int);
    acquire(K::MutexTimedlock, m as u64, true, || unsafe {
        f(m, clock, t)
    })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_mutex_unlock(m: *mut pthread_mutex_t) -> c_int {
    let f = real!(pthread_mutex_unlock: fn(*mut pthread_mutex_t) -> c_int);
    release(K::MutexUnlock, m as u64, || unsafe { f(m) })
}

/// Waiting on a condition variable releases the mutex (logged as
/// `CondWait`, ordered by the mutex) and reacquires it (`CondWake`).
unsafe fn cond_wait_common(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
    wait: impl FnOnce() -> c_int,
) -> c_int {
    if !ctl::active() {
        return wait();
    }
    if replay::on() {
        return replay::cond_wait(c as u64, m, wait);
    }
    ctl::held_remove(m as u64);
    ctl::log(
        Ev {
            arg0: m as u64,
            ..Ev::new(K::CondWait, c as u64)
        },
        &[],
    );
    ctl::set_waiting(c as u64, K::CondWait);
    let r = wait();
    ctl::clear_waiting();
    ctl::held_add(m as u64);
    ctl::log(
        Ev {
            arg0: m as u64,
            result: r as i64,
            ..Ev::new(K::CondWake, c as u64)
        },
        &[],
    );
    r
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_wait(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
) -> c_int {
    let f = real!(pthread_cond_wait @ "GLIBC_2.3.2": fn(*mut pthread_cond_t, *mut pthread_mutex_t) -> c_int);
    cond_wait_common(c, m, || unsafe { f(c, m) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_timedwait(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
    t: *const timespec,
) -> c_int {
    let f = real!(pthread_cond_timedwait @ "GLIBC_2.3.2":
        fn(*mut pthread_cond_t, *mut pthread_mutex_t, *const timespec) -> c_int);
    cond_wait_common(c, m, || unsafe { f(c, m, t) })
}

/// C++'s `condition_variable::wait_for`/`wait_until` on the steady clock
/// (libstdc++ since GCC 10) call this one: without it the wait would
/// release and retake the mutex unseen by the sketch.
#[no_mangle]
pub unsafe extern "C" fn pthread_cond_clockwait(
    c: *mut pthread_cond_t,
    m: *mut pthread_mutex_t,
    clock: libc::clockid_t,
    t: *const timespec,
) -> c_int {
    let f = real!(pthread_cond_clockwait:
        fn(*mut pthread_cond_t, *mut pthread_mutex_t, libc::clockid_t, *const timespec) -> c_int);
    cond_wait_common(c, m, || unsafe { f(c, m, clock, t) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_signal(c: *mut pthread_cond_t) -> c_int {
    let f = real!(pthread_cond_signal @ "GLIBC_2.3.2": fn(*mut pthread_cond_t) -> c_int);
    release(K::CondSignal, c as u64, || unsafe { f(c) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_cond_broadcast(c: *mut pthread_cond_t) -> c_int {
    let f = real!(pthread_cond_broadcast @ "GLIBC_2.3.2": fn(*mut pthread_cond_t) -> c_int);
    release(K::CondBroadcast, c as u64, || unsafe { f(c) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_rdlock(l: *mut pthread_rwlock_t) -> c_int {
    let f = real!(pthread_rwlock_rdlock: fn(*mut pthread_rwlock_t) -> c_int);
    acquire(K::RwRdlock, l as u64, false, || unsafe { f(l) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_wrlock(l: *mut pthread_rwlock_t) -> c_int {
    let f = real!(pthread_rwlock_wrlock: fn(*mut pthread_rwlock_t) -> c_int);
    acquire(K::RwWrlock, l as u64, true, || unsafe { f(l) })
}

// The timed forms are the same events: a timeout is logged as the
// operation's result, and a replay returns it without waiting.
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_timedrdlock(
    l: *mut pthread_rwlock_t,
    t: *const timespec,
) -> c_int {
    let f = real!(pthread_rwlock_timedrdlock: fn(*mut pthread_rwlock_t, *const timespec) -> c_int);
    acquire(K::RwRdlock, l as u64, false, || unsafe { f(l, t) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_timedwrlock(
    l: *mut pthread_rwlock_t,
    t: *const timespec,
) -> c_int {
    let f = real!(pthread_rwlock_timedwrlock: fn(*mut pthread_rwlock_t, *const timespec) -> c_int);
    acquire(K::RwWrlock, l as u64, true, || unsafe { f(l, t) })
}

/// `std::shared_timed_mutex::try_lock_shared_for` (steady clock).
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_clockrdlock(
    l: *mut pthread_rwlock_t,
    clock: libc::clockid_t,
    t: *const timespec,
) -> c_int {
    let f = real!(pthread_rwlock_clockrdlock:
        fn(*mut pthread_rwlock_t, libc::clockid_t, *const timespec) -> c_int);
    acquire(K::RwRdlock, l as u64, false, || unsafe { f(l, clock, t) })
}

/// `std::shared_timed_mutex::try_lock_for` (steady clock).
#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_clockwrlock(
    l: *mut pthread_rwlock_t,
    clock: libc::clockid_t,
    t: *const timespec,
) -> c_int {
    let f = real!(pthread_rwlock_clockwrlock:
        fn(*mut pthread_rwlock_t, libc::clockid_t, *const timespec) -> c_int);
    acquire(K::RwWrlock, l as u64, true, || unsafe { f(l, clock, t) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_tryrdlock(l: *mut pthread_rwlock_t) -> c_int {
    let f = real!(pthread_rwlock_tryrdlock: fn(*mut pthread_rwlock_t) -> c_int);
    after(K::RwTryrdlock, l as u64, false, || unsafe { f(l) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_trywrlock(l: *mut pthread_rwlock_t) -> c_int {
    let f = real!(pthread_rwlock_trywrlock: fn(*mut pthread_rwlock_t) -> c_int);
    after(K::RwTrywrlock, l as u64, true, || unsafe { f(l) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_rwlock_unlock(l: *mut pthread_rwlock_t) -> c_int {
    let f = real!(pthread_rwlock_unlock: fn(*mut pthread_rwlock_t) -> c_int);
    release(K::RwUnlock, l as u64, || unsafe { f(l) })
}

#[no_mangle]
pub unsafe extern "C" fn sem_wait(s: *mut sem_t) -> c_int {
    let f = real!(sem_wait: fn(*mut sem_t) -> c_int);
    acquire(K::SemWait, s as u64, false, || unsafe { f(s) })
}

#[no_mangle]
pub unsafe extern "C" fn sem_timedwait(s: *mut sem_t, t: *const timespec) -> c_int {
    let f = real!(sem_timedwait: fn(*mut sem_t, *const timespec) -> c_int);
    acquire(K::SemWait, s as u64, false, || unsafe { f(s, t) })
}

#[no_mangle]
pub unsafe extern "C" fn sem_clockwait(
    s: *mut sem_t,
    clock: libc::clockid_t,
    t: *const timespec,
) -> c_int {
    let f = real!(sem_clockwait: fn(*mut sem_t, libc::clockid_t, *const timespec) -> c_int);
    acquire(K::SemWait, s as u64, false, || unsafe { f(s, clock, t) })
}

#[no_mangle]
pub unsafe extern "C" fn sem_trywait(s: *mut sem_t) -> c_int {
    let f = real!(sem_trywait: fn(*mut sem_t) -> c_int);
    after(K::SemTrywait, s as u64, false, || unsafe { f(s) })
}

#[no_mangle]
pub unsafe extern "C" fn sem_post(s: *mut sem_t) -> c_int {
    let f = real!(sem_post: fn(*mut sem_t) -> c_int);
    release(K::SemPost, s as u64, || unsafe { f(s) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_barrier_wait(b: *mut pthread_barrier_t) -> c_int {
    let f = real!(pthread_barrier_wait: fn(*mut pthread_barrier_t) -> c_int);
    acquire(K::BarrierWait, b as u64, false, || unsafe { f(b) })
}

/// Not an event; in a replay, a thread that polls with it passes the
/// baton (see [`replay::program_yielded`]).
#[no_mangle]
pub unsafe extern "C" fn sched_yield() -> c_int {
    if replay::on() {
        replay::program_yielded();
    }
    raw::syscall6(libc::SYS_sched_yield, [0; 6]) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn pthread_spin_lock(l: *mut pthread_spinlock_t) -> c_int {
    let f = real!(pthread_spin_lock: fn(*mut pthread_spinlock_t) -> c_int);
    acquire(K::SpinLock, l as u64, true, || unsafe { f(l) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_spin_trylock(l: *mut pthread_spinlock_t) -> c_int {
    let f = real!(pthread_spin_trylock: fn(*mut pthread_spinlock_t) -> c_int);
    after(K::SpinTrylock, l as u64, true, || unsafe { f(l) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_spin_unlock(l: *mut pthread_spinlock_t) -> c_int {
    let f = real!(pthread_spin_unlock: fn(*mut pthread_spinlock_t) -> c_int);
    release(K::SpinUnlock, l as u64, || unsafe { f(l) })
}

#[no_mangle]
pub unsafe extern "C" fn pthread_once(
    o: *mut pthread_once_t,
    init: Option<unsafe extern "C" fn()>,
) -> c_int {
    let f = real!(pthread_once: fn(*mut pthread_once_t, Option<unsafe extern "C" fn()>) -> c_int);
    // The initialiser's entries are not ordered (the once is one event).
    let _off = crate::hooks::Off::enter();
    acquire(K::Once, o as u64, false, || unsafe { f(o, init) })
}
