//! Nudging a thread that computes too long without an event.
//!
//! A replay runs one thread at a time between events (the baton). A thread
//! that waits for another by polling memory — a spin-wait, a flag checked
//! in a loop with a pause that is no event — never reaches its next event
//! while it holds the baton: the thread it waits for cannot run. The
//! recorded run ended that wait because both ran at once. When the run
//! made no progress along the sketch for a while, the program is busy, and
//! another thread could take the baton, the supervisor sends the holder the
//! agent's preemption signal: it gives the baton away as a preemption would
//! (another candidate runs, whatever the policy), and gets it back at its
//! turn, when what it waited for has happened.

use std::sync::atomic::Ordering;

use reprise_abi::replay as rp;
use reprise_recorder::control::ControlBlock;

/// Sends the baton holder the preemption signal if it is running between
/// two events while another thread waits for the baton. True if it did.
pub(super) fn nudge_baton_holder(ctl: &ControlBlock) -> bool {
    let r = ctl.replay();
    let holder = r.baton.load(Ordering::Acquire);
    if holder == 0 {
        return false;
    }
    let state = |k: u32| {
        r.threads
            .iter()
            .find(|t| t.key.load(Ordering::Acquire) == k)
            .map(|t| t.state.load(Ordering::Acquire))
    };
    if state(holder) != Some(rp::RUNNING) {
        return false;
    }
    let others_wait = r.threads.iter().any(|t| {
        let k = t.key.load(Ordering::Acquire);
        k != 0
            && k != holder
            && matches!(t.state.load(Ordering::Acquire), rp::PENDING | rp::WAITING)
    });
    if !others_wait {
        return false;
    }
    let Some(entry) = ctl.threads().find(|t| {
        rp::key(
            t.process.load(Ordering::Acquire),
            t.thread.load(Ordering::Acquire),
        ) == holder
    }) else {
        return false;
    };
    let tid = entry.tid.load(Ordering::Acquire);
    let pid = ctl
        .header()
        .processes
        .get(rp::key_process(holder) as usize)
        .map_or(0, |p| p.pid.load(Ordering::Acquire));
    if tid <= 0 || pid <= 0 {
        return false;
    }
    let sig = libc::SIGRTMAX() - rp::PREEMPT_SIGNAL_FROM_MAX;
    reprise_tracee::process::signal_thread(pid, tid, sig)
}
