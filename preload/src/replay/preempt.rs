//! Preemption between events (`Policy::Random { preempt: true }`): a per-thread
//! one-shot timer whose signal makes the running thread give the baton
//! away, and `Busy`/`IN_AGENT`, which mark agent code (never preempted).

use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, Ordering};

use reprise_abi::{replay as rp, ControlHeader};

use super::baton::{decide, next_random, wait_for_baton};
use super::flip::may_switch;
use super::{lock, my_key, set_state, st};
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

/// The preemption signal (the supervisor's nudge uses the same number:
/// [`reprise_abi::replay::PREEMPT_SIGNAL_FROM_MAX`]).
fn preempt_signal() -> c_int {
    libc::SIGRTMAX() - rp::PREEMPT_SIGNAL_FROM_MAX
}

/// The handler is installed (once per process).
static HANDLER: AtomicBool = AtomicBool::new(false);

/// Registers compared between two nudges: every general-purpose register
/// but the instruction pointer, which may be anywhere in a short loop.
const SAMPLED: [usize; 16] = [
    libc::REG_R8 as usize,
    libc::REG_R9 as usize,
    libc::REG_R10 as usize,
    libc::REG_R11 as usize,
    libc::REG_R12 as usize,
    libc::REG_R13 as usize,
    libc::REG_R14 as usize,
    libc::REG_R15 as usize,
    libc::REG_RDI as usize,
    libc::REG_RSI as usize,
    libc::REG_RBP as usize,
    libc::REG_RBX as usize,
    libc::REG_RDX as usize,
    libc::REG_RAX as usize,
    libc::REG_RCX as usize,
    libc::REG_RSP as usize,
];
/// How far apart (bytes) two instruction pointers of one polling loop can be.
const LOOP_SPAN: i64 = 64;
/// Nudges in a row (20 ms apart) in which one and the same register
/// changed and no other did, after which a loop is taken for a polling
/// loop that counts its iterations rather than for a computation (which
/// moves a pointer and an accumulator, an index and a bound, ...).
const COUNTING_NUDGES: u8 = 4;

/// CPU time (ns) a thread must have run since the last sample for a
/// nudge to judge it: two nudges queued while it was descheduled (a
/// loaded machine) reach the handler back to back with the same
/// registers, and must not pass for a loop that made no progress.
const MIN_SPIN_CPU_NS: u64 = 5_000_000;

/// This thread's registers at the last nudge, and the turn then.
#[derive(Clone, Copy)]
struct Sample {
    turn: u64,
    /// The thread's CPU time then (ns).
    cpu: u64,
    rip: i64,
    regs: [i64; 16],
    /// Nudges in a row, this one included, at which only `counter`
    /// changed (0: the last nudge was no such one).
    counted: u8,
    counter: u8,
}

thread_local! {
    static LAST_NUDGE: Cell<Option<Sample>> = const { Cell::new(None) };
    /// The instruction pointer of the last loop taken for a counted poll:
    /// the same loop in a later turn is let go at its first counted nudge
    /// (a hand-off polled every round waits 40 ms, not 80).
    static COUNTED_LOOP: Cell<Option<i64>> = const { Cell::new(None) };
}

/// The one register (index into `SAMPLED`) that differs between two
/// samples, if exactly one does.
fn only_changed(a: &[i64; 16], b: &[i64; 16]) -> Option<u8> {
    let mut changed = a
        .iter()
        .zip(b.iter())
        .enumerate()
        .filter(|(_, (x, y))| x != y);
    let (i, _) = changed.next()?;
    match changed.next() {
        None => Some(i as u8),
        Some(_) => None,
    }
}

/// True if the thread is not getting anywhere in the same turn since the
/// last nudge: its instruction pointer in the same short loop and its
/// registers the same (it polls memory that does not change while it
/// runs), or, for `COUNTING_NUDGES` nudges in a row, only one and the same
/// register changed (the loop counts its iterations; once, if that loop
/// was taken for a counted poll before). Keeps this nudge's sample for the
/// next one.
/// A nudge that finds the thread has hardly run since the sample before
/// (`MIN_SPIN_CPU_NS`, `cpu` being its CPU time now) judges nothing and
/// keeps that sample.
fn spinning(turn: u64, g: &[i64; 23], cpu: u64) -> bool {
    let mut regs = [0i64; 16];
    for (v, &i) in regs.iter_mut().zip(SAMPLED.iter()) {
        *v = g[i];
    }
    let mut now = Sample {
        turn,
        cpu,
        rip: g[libc::REG_RIP as usize],
        regs,
        counted: 0,
        counter: 0,
    };
    let before = LAST_NUDGE.with(|l| l.get());
    if before.is_some_and(|b| b.turn == turn && cpu.saturating_sub(b.cpu) < MIN_SPIN_CPU_NS) {
        return false;
    }
    let same_loop = before.filter(|b| b.turn == turn && (b.rip - now.rip).abs() <= LOOP_SPAN);
    let verdict = match same_loop {
        None => false,
        Some(b) if b.regs == now.regs => true,
        Some(b) => match only_changed(&b.regs, &now.regs) {
            Some(r) if b.counted == 0 || b.counter == r => {
                now.counted = b.counted.saturating_add(1);
                now.counter = r;
                let known = COUNTED_LOOP
                    .with(|l| l.get())
                    .is_some_and(|rip| (rip - now.rip).abs() <= LOOP_SPAN);
                let counted = known || now.counted >= COUNTING_NUDGES;
                if counted {
                    COUNTED_LOOP.with(|l| l.set(Some(now.rip)));
                }
                counted
            }
            _ => false,
        },
    };
    LAST_NUDGE.with(|l| l.set(Some(now)));
    verdict
}

/// Installs the preemption signal's handler once per process (a forked
/// child inherits it): the timer of `Policy::Random { preempt: true }`
/// sends it, and so does the supervisor to nudge a thread that computes
/// too long without an event under any policy.
fn install_handler() {
    // Called at every baton take: a plain load first, so that only the
    // first call writes the flag's cache line.
    if HANDLER.load(Ordering::Acquire) || HANDLER.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: a handler that only touches this thread's state and the
    // shared block.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_preempt as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        crate::signals::real_sigaction(preempt_signal(), &sa, core::ptr::null_mut());
    }
}

/// Arms this thread's one-shot timer for a random slice (10 us .. 1.3 ms
/// of wall time, the thread running alone). Called under the lock, when
/// the thread takes the baton.
pub(super) fn arm_preemption(c: &ControlHeader) {
    install_handler();
    let r = st(c);
    let policy = rp::Policy::decode(r.strategy.load(Ordering::Relaxed));
    if !matches!(policy, rp::Policy::Random { preempt: true, .. }) {
        return;
    }
    let mut id = TIMER.with(|t| t.get());
    if id < 0 {
        let Some(kid) = raw::thread_timer(libc::CLOCK_MONOTONIC, preempt_signal()) else {
            return;
        };
        id = kid;
        TIMER.with(|t| t.set(id));
    }
    let us = 10u64 << (next_random(r) % 8);
    raw::arm_timer_once(id, us * 1000);
}

extern "C" fn on_preempt(_sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    let Some(c) = ctl::control() else { return };
    if !may_switch(c) {
        return;
    }
    let r = st(c);
    // SAFETY: the kernel passes a valid siginfo and ucontext to an
    // SA_SIGINFO handler.
    let (code, regs) = unsafe {
        (
            (*info).si_code,
            &(*(uc as *const libc::ucontext_t)).uc_mcontext.gregs,
        )
    };
    // The supervisor's nudge (tgkill): only a thread that is not getting
    // anywhere — the same registers as at the nudge before, in the same
    // turn, or one counter alone moving (a loop polling memory; see
    // `spinning`) — gives the baton away, and counts as a poll for the
    // supervisor's progress check; a computation between two events
    // changes its registers and runs on undisturbed.
    if code == libc::SI_TKILL {
        if !spinning(
            r.turn.0.load(Ordering::Acquire),
            regs,
            raw::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID),
        ) {
            return;
        }
        count_poll(c);
    }
    give_baton_away(c);
}

/// This thread polls for another: the supervisor's progress check counts
/// it.
fn count_poll(c: &ControlHeader) {
    let r = st(c);
    r.poller.store(my_key(), Ordering::Release);
    r.polls.fetch_add(1, Ordering::AcqRel);
}

/// Between two events: lets the strategy pick who runs now (another
/// thread than this one, when one can), and waits for the baton back.
/// The program's `errno` is kept.
fn give_baton_away(c: &ControlHeader) {
    let saved = raw::errno();
    let _busy = Busy::enter();
    PREEMPTING.with(|p| p.set(true));
    {
        let _g = lock(st(c));
        set_state(c, rp::PENDING);
        decide(c);
    }
    PREEMPTING.with(|p| p.set(false));
    wait_for_baton(c);
    raw::set_errno(saved);
}

thread_local! {
    /// The turn of this thread's last `sched_yield` outside any event, and
    /// how many it made in that turn.
    static YIELDS: Cell<(u64, u32)> = const { Cell::new((u64::MAX, 0)) };
}

/// The program called `sched_yield` (not an event: the kernel's choice is
/// not recorded). A baton holder that yields twice in one turn is waiting
/// in a loop for another thread, which cannot run while it holds the
/// baton: it gives the baton away at once, as the supervisor's nudge would
/// after 20 ms (a request/reply loop that polls this way would wait 20 ms
/// a request). A single yield lets the thread run on, as before.
pub fn program_yielded() {
    let Some(c) = ctl::control() else { return };
    if !may_switch(c) {
        return;
    }
    let turn = st(c).turn.0.load(Ordering::Acquire);
    let n = YIELDS.with(|y| {
        let (at, n) = y.get();
        let n = if at == turn { n + 1 } else { 1 };
        y.set((turn, n));
        n
    });
    if n < 2 {
        return;
    }
    count_poll(c);
    give_baton_away(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// General-purpose registers as the handler sees them, at `rip`, with
    /// `rax` and `rcx` set.
    fn regs(rip: i64, rax: i64, rcx: i64) -> [i64; 23] {
        let mut g = [7i64; 23];
        g[libc::REG_RIP as usize] = rip;
        g[libc::REG_RAX as usize] = rax;
        g[libc::REG_RCX as usize] = rcx;
        g
    }

    thread_local! {
        static CPU: Cell<u64> = const { Cell::new(0) };
    }

    /// A nudge after the thread ran 20 ms of CPU time.
    fn nudge(turn: u64, g: &[i64; 23]) -> bool {
        let cpu = CPU.with(|c| c.get() + 20_000_000);
        CPU.with(|c| c.set(cpu));
        spinning(turn, g, cpu)
    }

    // Each test runs on a thread of its own: the samples start empty.

    #[test]
    fn nudges_between_which_the_thread_did_not_run_judge_nothing() {
        let g = regs(0x4000, 1, 2);
        assert!(!nudge(7, &g));
        // Queued while it was descheduled: the same registers, no CPU time.
        let cpu = CPU.with(|c| c.get());
        assert!(!spinning(7, &g, cpu));
        assert!(!spinning(7, &g, cpu + 1_000_000));
        // It ran since the first sample and is still there: a poll.
        assert!(nudge(7, &g));
    }

    #[test]
    fn a_loop_whose_registers_stay_the_same_is_a_poll_at_the_second_nudge() {
        assert!(!nudge(5, &regs(0x1000, 1, 2)));
        assert!(nudge(5, &regs(0x1008, 1, 2)));
        // Another turn starts over.
        assert!(!nudge(6, &regs(0x1000, 1, 2)));
    }

    #[test]
    fn one_register_counting_is_a_poll_after_four_nudges_and_then_at_once() {
        let verdicts: Vec<bool> = (0..5)
            .map(|n| nudge(9, &regs(0x2000, n * 1000, 3)))
            .collect();
        assert_eq!(verdicts, [false, false, false, false, true]);
        // The same loop in a later turn: let go at its first counted nudge.
        assert!(!nudge(10, &regs(0x2004, 0, 3)));
        assert!(nudge(10, &regs(0x2004, 500, 3)));
    }

    #[test]
    fn a_computation_is_never_a_poll() {
        // Two registers move (an index and a total).
        for n in 0..8 {
            assert!(!nudge(3, &regs(0x3000, n, n * n)));
        }
        // One register, but the loop moves beyond 64 bytes.
        for n in 0..8 {
            assert!(!nudge(4, &regs(0x3000 + n * 100, n, 0)));
        }
        // Another register each time.
        let mut alternating = Vec::new();
        for n in 0..8 {
            let g = if n % 2 == 0 {
                regs(0x5000, n, 0)
            } else {
                regs(0x5000, 0, n)
            };
            alternating.push(nudge(11, &g));
        }
        assert!(alternating.iter().all(|v| !v), "{alternating:?}");
    }
}
