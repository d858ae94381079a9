//! OpenMP (GCC's libgomp): the runtime calls that a program's
//! `#pragma omp critical`, `atomic` (on what the processor cannot update
//! in one instruction), `barrier` and `omp_*_lock` compile to. libgomp
//! builds them on its own futex locks, not on pthreads, so without these
//! an OpenMP program's sketch held only its threads' creation. Each is
//! logged as the pthread event it stands for: a critical section as a
//! mutex (the unnamed one and the atomic lock as objects of the agent's
//! own, a named one as the address of its name's lock pointer), a lock as
//! a mutex, an explicit barrier as a barrier.
//!
//! Not interposed: what libgomp decides inside its calls (which thread
//! runs a `single` block, the chunks of a `dynamic` or `guided` loop, the
//! implicit barriers at the end of a construct, tasks), nested locks (two
//! ABI versions of different layouts).

use core::ffi::{c_int, c_void};

use reprise_abi::EventKind as K;

use crate::real::real;
use crate::sync::{acquire, after, release};

/// Stand-ins for libgomp's internal locks: their addresses are the objects
/// of the events (the same in a replay: the agent loads where it did).
static UNNAMED_CRITICAL: u8 = 0;
static ATOMIC_LOCK: u8 = 0;
static BARRIER: u8 = 0;

fn object(p: &'static u8) -> u64 {
    p as *const u8 as u64
}

#[no_mangle]
pub unsafe extern "C" fn GOMP_critical_start() {
    let f = real!(GOMP_critical_start: fn() -> ());
    acquire(K::MutexLock, object(&UNNAMED_CRITICAL), true, || {
        // SAFETY: libgomp's own entry point, as the program called it.
        unsafe { f() };
        0
    });
}

#[no_mangle]
pub unsafe extern "C" fn GOMP_critical_end() {
    let f = real!(GOMP_critical_end: fn() -> ());
    release(K::MutexUnlock, object(&UNNAMED_CRITICAL), || {
        // SAFETY: as above.
        unsafe { f() };
        0
    });
}

/// A named critical section: `pptr` is the program's pointer to the
/// section's lock (one per name in the whole program).
#[no_mangle]
pub unsafe extern "C" fn GOMP_critical_name_start(pptr: *mut *mut c_void) {
    let f = real!(GOMP_critical_name_start: fn(*mut *mut c_void) -> ());
    acquire(K::MutexLock, pptr as u64, true, || {
        // SAFETY: as above.
        unsafe { f(pptr) };
        0
    });
}

#[no_mangle]
pub unsafe extern "C" fn GOMP_critical_name_end(pptr: *mut *mut c_void) {
    let f = real!(GOMP_critical_name_end: fn(*mut *mut c_void) -> ());
    release(K::MutexUnlock, pptr as u64, || {
        // SAFETY: as above.
        unsafe { f(pptr) };
        0
    });
}

#[no_mangle]
pub unsafe extern "C" fn GOMP_atomic_start() {
    let f = real!(GOMP_atomic_start: fn() -> ());
    acquire(K::MutexLock, object(&ATOMIC_LOCK), true, || {
        // SAFETY: as above.
        unsafe { f() };
        0
    });
}

#[no_mangle]
pub unsafe extern "C" fn GOMP_atomic_end() {
    let f = real!(GOMP_atomic_end: fn() -> ());
    release(K::MutexUnlock, object(&ATOMIC_LOCK), || {
        // SAFETY: as above.
        unsafe { f() };
        0
    });
}

#[no_mangle]
pub unsafe extern "C" fn GOMP_barrier() {
    let f = real!(GOMP_barrier: fn() -> ());
    acquire(K::BarrierWait, object(&BARRIER), false, || {
        // SAFETY: as above.
        unsafe { f() };
        0
    });
}

#[no_mangle]
pub unsafe extern "C" fn omp_set_lock(l: *mut c_void) {
    let f = real!(omp_set_lock: fn(*mut c_void) -> ());
    acquire(K::MutexLock, l as u64, true, || {
        // SAFETY: the program's initialised lock, as it passed it.
        unsafe { f(l) };
        0
    });
}

#[no_mangle]
pub unsafe extern "C" fn omp_unset_lock(l: *mut c_void) {
    let f = real!(omp_unset_lock: fn(*mut c_void) -> ());
    release(K::MutexUnlock, l as u64, || {
        // SAFETY: as above.
        unsafe { f(l) };
        0
    });
}

/// True (1) if it took the lock; logged as a trylock (0, or `EBUSY`).
#[no_mangle]
pub unsafe extern "C" fn omp_test_lock(l: *mut c_void) -> c_int {
    let f = real!(omp_test_lock: fn(*mut c_void) -> c_int);
    let r = after(K::MutexTrylock, l as u64, true, || {
        // SAFETY: as above.
        if unsafe { f(l) } != 0 {
            0
        } else {
            libc::EBUSY
        }
    });
    (r == 0) as c_int
}
