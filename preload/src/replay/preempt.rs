//! Preemption between events (`Policy::Random { preempt: true }`): a per-thread
//! one-shot timer whose signal makes the running thread give the baton
//! away, and `Busy`/`IN_AGENT`, which mark agent code (never preempted).

use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::Ordering;

use reprise_abi::{replay as rp, ControlHeader};

use super::baton::{decide, next_random, wait_for_baton};
use super::{lock, my_entry, my_key, set_state, st};
use crate::ctl;
use crate::raw;

thread_local! {
    /// Nonzero while this thread runs agent code (never preempted there).
    pub(super) static IN_AGENT: Cell<u32> = const { Cell::new(0) };
    /// This thread's kernel timer, -1 until created.
    static TIMER: Cell<i32> = const { Cell::new(-1) };
    /// Set while a preempted thread gives the baton away: the choice is
    /// uniform (the thread does not keep running by preference).
    pub(super) static PREEMPTING: Cell<bool> = const { Cell::new(false) };
}

/// Marks agent code for the preemption signal's handler.
pub(super) struct Busy;

impl Busy {
    pub(super) fn enter() -> Busy {
        IN_AGENT.with(|b| b.set(b.get() + 1));
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        IN_AGENT.with(|b| b.set(b.get().saturating_sub(1)));
    }
}

fn preempt_signal() -> c_int {
    libc::SIGRTMAX() - 3
}

/// Arms this thread's one-shot timer for a random slice (10 us .. 1.3 ms
/// of wall time, the thread running alone). Called under the lock, when
/// the thread takes the baton.
pub(super) fn arm_preemption(c: &ControlHeader) {
    let r = st(c);
    let policy = rp::Policy::decode(r.strategy.load(Ordering::Relaxed));
    if !matches!(policy, rp::Policy::Random { preempt: true, .. }) {
        return;
    }
    let mut id = TIMER.with(|t| t.get());
    if id < 0 {
        // SAFETY: a handler that only touches this thread's state and the
        // shared block; a timer that signals this thread only.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = on_preempt as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            crate::signals::real_sigaction(preempt_signal(), &sa, core::ptr::null_mut());
            let mut sev: libc::sigevent = core::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = preempt_signal();
            sev.sigev_notify_thread_id = raw::gettid();
            let mut kid: c_int = -1;
            let rc = raw::syscall6(
                libc::SYS_timer_create,
                [
                    libc::CLOCK_MONOTONIC as u64,
                    &sev as *const libc::sigevent as u64,
                    &mut kid as *mut c_int as u64,
                    0,
                    0,
                    0,
                ],
            );
            if rc != 0 {
                return;
            }
            id = kid;
        }
        TIMER.with(|t| t.set(id));
    }
    let us = 10u64 << (next_random(r) % 8);
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: (us * 1000) as libc::c_long,
        },
    };
    raw::syscall6(
        libc::SYS_timer_settime,
        [
            id as u64,
            0,
            &spec as *const libc::itimerspec as u64,
            0,
            0,
            0,
        ],
    );
}

extern "C" fn on_preempt(_sig: c_int, _info: *mut libc::siginfo_t, _uc: *mut c_void) {
    if IN_AGENT.with(|b| b.get()) != 0 {
        return;
    }
    let Some(c) = ctl::control() else { return };
    let r = st(c);
    let Some(t) = my_entry(c) else { return };
    if t.state.load(Ordering::Acquire) != rp::RUNNING
        || r.baton.load(Ordering::Acquire) != my_key()
        || r.divergence.state.load(Ordering::Acquire) != 0
    {
        return;
    }
    let saved = raw::errno();
    let _busy = Busy::enter();
    // Between two events: let the strategy pick who runs now.
    PREEMPTING.with(|p| p.set(true));
    {
        let _g = lock(r);
        set_state(c, rp::PENDING);
        decide(c);
    }
    PREEMPTING.with(|p| p.set(false));
    wait_for_baton(c);
    raw::set_errno(saved);
}
