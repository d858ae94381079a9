//! Hooks for the access breakpoints (`observe`): this thread's key and
//! position, holding a thread for a flip and handing the baton back, and
//! the `random` strategy's preemption points.

use core::sync::atomic::Ordering;

use reprise_abi::replay as rp;
use reprise_abi::ControlHeader;

use super::baton::{decide, next_random, wait_for_baton, LAST_EVENT};
use super::preempt::{Busy, IN_AGENT, PREEMPTING};
use super::{bump, lock, my_entry, my_key, set_state, st};
use crate::ctl;

/// This thread's baton key.
pub fn current_key() -> u32 {
    my_key()
}

/// (`turn`, ring position + 1 of this thread's last event).
pub fn positions() -> (u64, u64) {
    let turn = ctl::control().map_or(0, |c| st(c).turn.0.load(Ordering::Acquire));
    (turn, LAST_EVENT.with(|l| l.get()))
}

/// True if this thread holds the baton outside agent code.
pub(super) fn may_switch(c: &ControlHeader) -> bool {
    IN_AGENT.with(|b| b.get()) == 0
        && st(c).baton.load(Ordering::Acquire) == my_key()
        && my_entry(c).is_some_and(|t| t.state.load(Ordering::Acquire) == rp::RUNNING)
        && st(c).divergence.state.load(Ordering::Acquire) == 0
}

/// Stops this thread before an access (the first half of a flip) until
/// the other half hands the baton back, or nobody else can run.
pub fn hold_for_flip() {
    let Some(c) = ctl::control() else { return };
    if !may_switch(c) {
        if let Some(t) = my_entry(c) {
            crate::observe::flip_infeasible(t.key.load(Ordering::Relaxed));
        }
        return;
    }
    let _busy = Busy::enter();
    {
        let _g = lock(st(c));
        set_state(c, rp::HELD);
        decide(c);
    }
    wait_for_baton(c);
}

/// A preemption point of the `random` strategy: with probability
/// `rate / 65536` (one draw from the seeded generator per point) the
/// strategy picks who runs next. Returns true if it drew a preemption.
pub fn maybe_preempt(rate: u32) -> bool {
    let Some(c) = ctl::control() else {
        return false;
    };
    if !may_switch(c) {
        return false;
    }
    let r = st(c);
    let _busy = Busy::enter();
    {
        let _g = lock(r);
        if (next_random(r) >> 48) >= rate as u64 {
            return false;
        }
        PREEMPTING.with(|p| p.set(true));
        set_state(c, rp::PENDING);
        decide(c);
        PREEMPTING.with(|p| p.set(false));
    }
    wait_for_baton(c);
    true
}

/// The second half of a flip: the held thread `key` runs now; this one
/// waits (pending) for the baton.
pub fn hand_baton_to(key: u32) {
    let Some(c) = ctl::control() else { return };
    let r = st(c);
    let _busy = Busy::enter();
    {
        let _g = lock(r);
        set_state(c, rp::PENDING);
        r.baton.store(key, Ordering::Release);
        bump(r);
    }
    wait_for_baton(c);
}
