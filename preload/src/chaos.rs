//! `reprise record --chaos`: random pauses in the middle of each thread's
//! computation, so that a failure that needs an unlucky interleaving shows
//! up in fewer runs (the idea of rr's chaos mode and of PCT's random
//! priority changes, without a scheduler of our own).
//!
//! A recording leaves threads to the kernel, and a race window of a few
//! instructions is crossed by another thread only when the kernel happens
//! to preempt inside it, or both run at that instant on two cores: on a
//! loaded machine, almost never. Here each thread has a timer on its own
//! CPU-time clock that fires after a random slice of computation (20 µs ..
//! 1.3 ms); its handler sleeps a random while (10 µs .. 2.6 ms, most
//! short, some long), in whatever the thread was doing, then arms the next
//! slice. The other threads run meanwhile. One synchronisation operation
//! in eight pauses too, before it takes effect: a pause before an unlock
//! lines the lock's waiters up, and they then run together (measured next
//! to busy loops on both cores, the pauses at operations are what brought
//! the corpus's failures back). The pauses change only timing: the run and
//! its sketch are an ordinary run of the program.
//!
//! The timer counts CPU time, so it fires while the thread computes, not
//! while it blocks in a syscall; the signal is never blocked (sys.rs keeps
//! it out of the thread's mask, like SIGSYS) so that a program's
//! `sigwait` or `signalfd` never receives it. Everything here is
//! async-signal-safe: raw syscalls and this thread's own cells.

use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::ctl;
use crate::raw;

/// The pause signal: the number a replay uses for preemption (a recording
/// never sends that one).
pub fn signal() -> c_int {
    libc::SIGRTMAX() - reprise_abi::replay::PREEMPT_SIGNAL_FROM_MAX
}

/// Whether this recording asked for chaos.
pub fn on() -> bool {
    ctl::control().is_some_and(|c| c.chaos != 0) && !crate::replay::on()
}

/// Set once [`on`] was true (a plain load on the synchronisation paths).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The handler is installed (once per image; a forked child inherits it).
static HANDLER: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's CPU-time timer, -1 until created.
    static TIMER: Cell<i32> = const { Cell::new(-1) };
    /// This thread's random state (xorshift64), 0 until seeded.
    static RANDOM: Cell<u64> = const { Cell::new(0) };
}

/// When this process started (CLOCK_MONOTONIC, ns).
static STARTED: AtomicU64 = AtomicU64::new(0);
/// How long its threads have paused so far, all together (ns).
static PAUSED: AtomicU64 = AtomicU64::new(0);

/// The threads' pauses together may take up to a quarter of the
/// process's lifetime, plus this. A pause that holds a lock stalls the
/// others too, so the budget is the process's: measured on four threads
/// that take one mutex 400,000 times, a budget per thread let the run take
/// 19 times as long, this one 4 times.
const PAUSE_ALLOWANCE_NS: u64 = 2_000_000;

fn monotonic_ns() -> u64 {
    raw::clock_ns(libc::CLOCK_MONOTONIC)
}

fn next_random() -> u64 {
    RANDOM.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // Seeded from the clock and the thread: runs differ.
            x = monotonic_ns() ^ ((raw::gettid() as u64) << 32) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

/// Installs the handler (once per process; a forked child inherits it)
/// and starts the calling thread's timer. Called by the main thread at
/// start-up and by a forked child (timers are not inherited) with
/// `new_process`, by each new thread first thing.
pub fn start_thread(new_process: bool) {
    if !on() {
        return;
    }
    ENABLED.store(true, Ordering::Relaxed);
    if !HANDLER.swap(true, Ordering::AcqRel) {
        let flags = (libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK) as u64;
        raw::install_handler(signal(), on_pause as *const () as usize, flags);
    }
    TIMER.with(|t| t.set(-1));
    RANDOM.with(|r| r.set(0));
    if new_process {
        STARTED.store(monotonic_ns(), Ordering::Relaxed);
        PAUSED.store(0, Ordering::Relaxed);
    }
    let Some(id) = raw::thread_timer(libc::CLOCK_THREAD_CPUTIME_ID, signal()) else {
        return;
    };
    TIMER.with(|t| t.set(id));
    arm(next_random());
}

/// Deletes the calling thread's timer (its thread is ending).
pub fn end_thread() {
    let id = TIMER.with(|t| t.replace(-1));
    if id >= 0 {
        raw::syscall3(libc::SYS_timer_delete, id as u64, 0, 0);
    }
}

/// Arms the timer for the next slice: 20 µs << (0..7) of CPU time.
fn arm(r: u64) {
    let id = TIMER.with(|t| t.get());
    if id < 0 {
        return;
    }
    raw::arm_timer_once(id, 20_000u64 << (r % 7));
}

/// Sleeps 10 µs << (r % 9), if the process's pause budget has room.
fn pause(r: u64) {
    let ns = 10_000u64 << (r % 9);
    let lived = monotonic_ns().saturating_sub(STARTED.load(Ordering::Relaxed));
    let paused = PAUSED.fetch_add(ns, Ordering::Relaxed) + ns;
    if paused > lived / 4 + PAUSE_ALLOWANCE_NS {
        PAUSED.fetch_sub(ns, Ordering::Relaxed);
        return;
    }
    raw::sleep_ns(ns);
}

/// At a synchronisation operation, before it takes effect: one time in
/// eight, a pause.
#[inline(always)]
pub fn at_event() {
    maybe_pause(8);
}

/// In the creator, once `pthread_create` returned: one time in two, a
/// pause, so that the new thread often runs first (a creator that fills
/// in what its thread reads only after the create: use before init).
pub fn after_create() {
    maybe_pause(2);
}

/// A pause one time in `one_in`.
#[inline(always)]
fn maybe_pause(one_in: u64) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let r = next_random();
    if r % one_in == 0 {
        let saved = raw::errno();
        pause(r >> 4);
        raw::set_errno(saved);
    }
}

/// The timer's signal: a pause, then the next slice.
extern "C" fn on_pause(_sig: c_int, _info: *mut libc::siginfo_t, _uc: *mut c_void) {
    let saved = raw::errno();
    let r = next_random();
    pause(r >> 8);
    arm(r >> 16);
    raw::set_errno(saved);
}
