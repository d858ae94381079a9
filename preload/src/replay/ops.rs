//! The operations the wrappers order: thread and process start and end,
//! creation and fork, acquiring and releasing operations, trylocks and
//! condition waits. Each arrives at its event, runs (or returns the
//! recorded result) and yields the baton.

use core::ffi::c_int;
use core::sync::atomic::Ordering;

use libc::pthread_mutex_t;
use reprise_abi::{replay as rp, EventKind as K, MAX_THREADS};

use super::baton::{advance, arrive, detach, park, yield_baton};
use super::divergence::{diverge, off_sketch, Text};
use super::preempt::{Busy, IN_AGENT};
use super::{ctl_ok, futex_wait, has_arrived, set_state, st};
use crate::ctl;
use crate::raw;
use crate::real::real;

/// An event with no operation of its own to order (process and thread
/// start): arrive, advance, yield.
pub fn simple(kind: K) {
    let _busy = Busy::enter();
    let c = ctl_ok();
    match arrive(c, kind, 0) {
        Some(t) => {
            advance(c, &t);
            yield_baton(c);
        }
        None => park(c),
    }
}

/// A function or block entry of an instrumented program (`object`: its
/// address): waits for its turn; another address is a divergence.
pub fn program_point(kind: K, object: u64) {
    let _busy = Busy::enter();
    let c = ctl_ok();
    match arrive(c, kind, object) {
        Some(t) => {
            advance(c, &t);
            yield_baton(c);
        }
        None => park(c),
    }
}

/// The parent side of `pthread_create` / `fork`: the event comes before
/// the operation. Returns the recorded `arg0` (the new thread's index).
pub fn begin_create(kind: K) -> u64 {
    let _busy = Busy::enter();
    // Not preempted until `end_create`: the new thread's first event may
    // be next, and it cannot come before the creation returns.
    IN_AGENT.with(|b| b.set(b.get() + 1));
    let c = ctl_ok();
    match arrive(c, kind, 0) {
        Some(t) => {
            advance(c, &t);
            t.arg0
        }
        None => park(c),
    }
}

/// Between the `Fork` event and the real fork: the copy may happen later
/// than the event (it did in the recording: other threads ran between
/// the call and the copy), so the strategy may let others run first.
pub fn before_fork() {
    let _busy = Busy::enter();
    yield_baton(ctl_ok());
}

/// A forked child starts outside agent code (the parent was inside
/// [`begin_create`] when its memory was copied).
pub fn forked_child() {
    IN_AGENT.with(|b| b.set(0));
}

/// After the operation that followed [`begin_create`]; `created` is the
/// new thread's key (a forked child's first thread) when it succeeded.
///
/// The new thread is waited for before the strategy picks who runs next:
/// were its first event the next one, a thread that had not arrived yet
/// would be passed over for another candidate (see `decide`), and when
/// it arrives would depend on how fast the kernel starts it, so a saved
/// schedule would not give the same run every time.
pub fn end_create(created: Option<u32>) {
    let _busy = Busy::enter();
    IN_AGENT.with(|b| b.set(b.get().saturating_sub(1)));
    let c = ctl_ok();
    if let Some(key) = created {
        wait_for_arrival(c, key);
    }
    yield_baton(c);
}

/// How long a creator waits for its new thread's first call (a machine
/// loaded enough to take longer gets the old, timing-dependent choice
/// rather than a hang).
const ARRIVAL_LIMIT_MS: u32 = 2000;

/// Waits (holding the baton, not counted as running: a sleeping holder
/// is neither revoked nor nudged meanwhile) until thread `key` arrived.
fn wait_for_arrival(c: &reprise_abi::ControlHeader, key: u32) {
    let r = st(c);
    set_state(c, rp::WAITING);
    for _ in 0..ARRIVAL_LIMIT_MS {
        let ep = r.epoch.load(Ordering::Acquire);
        // A thread past the table's last entry never shows up in it.
        let full = c.next_thread_entry.load(Ordering::Acquire) as usize >= MAX_THREADS;
        if has_arrived(c, key) || full {
            break;
        }
        futex_wait(&r.epoch, ep, 1);
    }
    set_state(c, rp::RUNNING);
}

/// `thread_exit`: the last event of a thread.
pub fn thread_exit() {
    let _busy = Busy::enter();
    let c = ctl_ok();
    if off_sketch(c) {
        return;
    }
    match arrive(c, K::ThreadExit, 0) {
        Some(t) => {
            advance(c, &t);
            detach(c);
        }
        None => park(c),
    }
}

/// `exit_group`: the process ends at its recorded place in the order. A
/// process whose recording ended otherwise (killed by another thread's
/// failure) waits for that end instead.
pub fn process_exit() {
    let _busy = Busy::enter();
    let c = ctl_ok();
    if off_sketch(c) {
        // A thread past its failure's message exits for real: how the
        // program ends is what the supervisor compares.
        return;
    }
    if st(c).recorded_events.load(Ordering::Relaxed) & rp::RECORDED_PROCESS_EXIT == 0 {
        return; // a trace of an older version
    }
    match arrive(c, K::ProcessExit, 0) {
        // The baton moves on when a waiter finds this process dead (a
        // zombie): only then can its parent's `waitpid` see it, as it did
        // in the recording.
        Some(t) => advance(c, &t),
        None => park(c),
    }
}

/// Operations whose recorded failure (a timeout; for a read-write lock
/// also a refusal) acquired nothing: a replay returns it without calling.
fn is_timed(kind: K) -> bool {
    matches!(
        kind,
        K::MutexTimedlock | K::SemWait | K::RwRdlock | K::RwWrlock
    )
}

/// A blocking acquiring operation (logged after it completes).
pub fn acquire(kind: K, object: u64, holds: bool, f: impl FnOnce() -> c_int) -> c_int {
    acquire_from(kind, object, 0, holds, f)
}

/// [`acquire`] called from `site` in the program (0: unknown). A lock the
/// recording took from another call site is another path through the
/// program: noted (the first one), not a divergence — the attempt can
/// still reach the recorded failure by that path (measured: ending such
/// attempts there lost fex_3881 on one trace), but when it diverges
/// later, the search looks for the race where the path changed rather
/// than where one lock more or less of the mutex finally showed.
pub fn acquire_from(
    kind: K,
    object: u64,
    site: u64,
    holds: bool,
    f: impl FnOnce() -> c_int,
) -> c_int {
    let _busy = Busy::enter();
    let c = ctl_ok();
    if off_sketch(c) {
        return f();
    }
    if matches!(kind, K::BarrierWait | K::Once) {
        // Not ordered by the baton: every party of a barrier must be in it
        // before any returns; `pthread_once` runs events of its own.
        detach(c);
        ctl::set_waiting(object, kind);
        let r = f();
        ctl::clear_waiting();
        match arrive(c, kind, object) {
            Some(t) => {
                advance(c, &t);
                yield_baton(c);
            }
            None => park(c),
        }
        return r;
    }
    match arrive(c, kind, object) {
        Some(t) => {
            if t.result != 0 && is_timed(kind) {
                // A timeout: no need to wait for it.
                advance(c, &t);
                yield_baton(c);
                if kind == K::SemWait {
                    raw::set_errno(libc::ETIMEDOUT);
                }
                return t.result as c_int;
            }
            if site != 0 && t.arg0 != 0 && t.arg0 != site && t.kind == kind as u16 {
                let r = st(c);
                if r.first_site_mismatch
                    .compare_exchange(u64::MAX, t.pos, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    r.first_site_thread
                        .store(super::my_key(), Ordering::Release);
                }
            }
            ctl::set_waiting(object, kind);
            let r = f();
            ctl::clear_waiting();
            if r == 0 && holds {
                ctl::held_add(object);
            }
            if r as i64 != t.result {
                let mut m = Text::new();
                m.op(kind as u16, object)
                    .s(b" returned ")
                    .d(r as u32 as u64)
                    .s(b", the recording says ")
                    .d(t.result as u32 as u64);
                diverge(c, t.pos, &m);
            }
            advance(c, &t);
            yield_baton(c);
            r
        }
        None => {
            detach(c);
            ctl::set_waiting(object, kind);
            let r = f();
            ctl::clear_waiting();
            if r == 0 && holds {
                ctl::held_add(object);
            }
            r
        }
    }
}

/// A releasing operation (logged before it runs).
pub fn release(kind: K, object: u64, f: impl FnOnce() -> c_int) -> c_int {
    let _busy = Busy::enter();
    let c = ctl_ok();
    if off_sketch(c) {
        return f();
    }
    match arrive(c, kind, object) {
        Some(t) => {
            ctl::held_remove(object);
            let r = f();
            advance(c, &t);
            yield_baton(c);
            r
        }
        None => park(c),
    }
}

/// A non-blocking operation (trylock): a recorded failure is returned as
/// recorded; a recorded success must succeed again.
pub fn after(kind: K, object: u64, holds: bool, f: impl FnOnce() -> c_int) -> c_int {
    let _busy = Busy::enter();
    let c = ctl_ok();
    if off_sketch(c) {
        return f();
    }
    match arrive(c, kind, object) {
        Some(t) => {
            if t.result != 0 {
                advance(c, &t);
                yield_baton(c);
                if kind == K::SemTrywait {
                    raw::set_errno(libc::EAGAIN);
                }
                return t.result as c_int;
            }
            let r = f();
            if r != 0 {
                let mut m = Text::new();
                m.op(kind as u16, object)
                    .s(b" failed (")
                    .d(r as u32 as u64)
                    .s(b"); it succeeded in the recording");
                diverge(c, t.pos, &m);
            }
            if holds {
                ctl::held_add(object);
            }
            advance(c, &t);
            yield_baton(c);
            r
        }
        None => park(c),
    }
}

/// `pthread_cond_wait`/`timedwait`: release the mutex at the `CondWait`
/// event, reacquire it at the `CondWake` event and return the recorded
/// result; the real condition variable is not waited on (its signals are
/// ordered by the recording instead).
pub fn cond_wait(cond: u64, m: *mut pthread_mutex_t, wait: impl FnOnce() -> c_int) -> c_int {
    let _busy = Busy::enter();
    let c = ctl_ok();
    if off_sketch(c) {
        return wait();
    }
    let unlock = real!(pthread_mutex_unlock: fn(*mut pthread_mutex_t) -> c_int);
    let lockf = real!(pthread_mutex_lock: fn(*mut pthread_mutex_t) -> c_int);
    match arrive(c, K::CondWait, cond) {
        Some(t) => {
            ctl::held_remove(m as u64);
            // SAFETY: the caller holds `m`, as pthread_cond_wait requires.
            unsafe { unlock(m) };
            advance(c, &t);
            yield_baton(c);
        }
        None => park(c),
    }
    match arrive(c, K::CondWake, cond) {
        Some(t) => {
            ctl::set_waiting(m as u64, K::MutexLock);
            // SAFETY: relocking the mutex released above.
            unsafe { lockf(m) };
            ctl::clear_waiting();
            ctl::held_add(m as u64);
            advance(c, &t);
            yield_baton(c);
            t.result as c_int
        }
        None => {
            // The recorded run never woke up: wait for real (a lost wakeup
            // hangs here as it did).
            detach(c);
            // SAFETY: as above.
            unsafe { lockf(m) };
            ctl::set_waiting(cond, K::CondWait);
            let r = wait();
            ctl::clear_waiting();
            ctl::held_add(m as u64);
            r
        }
    }
}
