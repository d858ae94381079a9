//! Replay mode: running the program again in the recorded order.
//!
//! The supervisor fills the ring with the trace's events (see
//! `reprise_abi::replay`). At each sketch event a thread *arrives*: it waits
//! until it holds the baton and the event at `turn` is its own, checks that
//! the event is the one it is about to perform, performs it (or, for
//! recorded inputs, hands back the recorded result and memory), advances
//! `turn` and *yields*: it becomes pending (its code up to its next event
//! still has to run) and the strategy picks who runs next among the pending
//! threads and the owner of the next event. So one thread runs at a time,
//! and the choices are the only freedom a replay has.
//!
//! Past the end of the recording, operations that the recording logs after
//! they complete (locks, joins, condition waits) run for real and unordered
//! (the recorded run was blocked in them, or died before logging them);
//! the others park for good.
//!
//! Same rules as the rest of the agent: no allocation, no std locks, no
//! panics; waits are futex waits on the shared epoch word.
//!
//! Layout: this file holds the replay state's primitives in the control
//! block (the lock, the epoch futex, this thread's entry, the ring's slots
//! and data) and re-exports the entry points; `baton` orders the events,
//! `ops` and `syscalls` are what the wrappers call, `preempt` the timer,
//! `flip` the hooks for `observe`, `divergence` the report, `files` the
//! file-system queries.

use core::sync::atomic::{AtomicU32, Ordering};

use reprise_abi::{
    replay as rp, ControlHeader, Mode, ReplayState, ReplayThread, Slot, ThreadEntry, SLOT_DATA,
};

use crate::ctl;
use crate::raw;

mod baton;
pub mod checkpoint;
mod children;
mod divergence;
mod files;
mod flip;
mod net;
mod ops;
mod preempt;
mod syscalls;

pub use flip::{current_key, hand_baton_to, hold_for_flip, maybe_preempt, positions};
pub use ops::{
    acquire, acquire_from, after, before_fork, begin_create, cond_wait, end_create, forked_child,
    process_exit, program_point, release, simple, thread_exit,
};
pub use preempt::program_yielded;
pub use syscalls::syscall;

/// True when this process replays.
#[inline]
pub fn on() -> bool {
    matches!(ctl::control(), Some(c) if c.mode == Mode::Replay as u32)
}

/// The trace being replayed says `flag` (one of `rp::RECORDED_*`,
/// `rp::AMBIENT_UNORDERED`) of what it recorded.
fn trace_says(flag: u32) -> bool {
    ctl::control().is_some_and(|c| {
        st(c)
            .recorded_events
            .load(core::sync::atomic::Ordering::Relaxed)
            & flag
            != 0
    })
}

/// This replay runs the recorded signal handlers at their recorded place
/// (a trace that records them): real signals do not run them.
pub fn delivers_signals() -> bool {
    trace_says(rp::RECORDED_NET)
}

/// The trace leaves libc's reads of the machine's description out of the
/// sketch (see `crate::ambient`).
pub fn ambient_unordered() -> bool {
    trace_says(rp::AMBIENT_UNORDERED)
}

fn ctl_ok() -> &'static ControlHeader {
    match ctl::control() {
        Some(c) => c,
        None => loop {
            // Unreachable: callers check `on()` first.
            raw::syscall3(libc::SYS_exit_group, 70, 0, 0);
        },
    }
}

fn st(c: &ControlHeader) -> &ReplayState {
    &c.replay
}

/// The expected event that a thread is performing, copied out of the ring
/// (the supervisor may reuse the slots once `turn` moves on).
#[derive(Clone, Copy)]
pub struct Turn {
    pub pos: u64,
    pub kind: u16,
    pub object: u64,
    pub arg0: u64,
    pub result: i64,
    /// The recorded syscall's third argument, with the replayer's marks
    /// (see [`rp::OPEN_OF_FILE_CREATED_LATER`]).
    pub extra: u64,
    pub data_len: u32,
}

// ---------------------------------------------------------------------------
// Small helpers: the lock, the futex, this thread's entry.

struct Guard<'a>(&'a AtomicU32);

fn lock(r: &ReplayState) -> Guard<'_> {
    let mut spins = 0u32;
    while r
        .lock
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins < 100 {
            core::hint::spin_loop();
        } else {
            raw::syscall3(libc::SYS_sched_yield, 0, 0, 0);
        }
    }
    Guard(&r.lock)
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

fn futex_wait(word: &AtomicU32, val: u32, ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    raw::syscall6(
        libc::SYS_futex,
        [
            word.as_ptr() as u64,
            libc::FUTEX_WAIT as u64,
            val as u64,
            &ts as *const libc::timespec as u64,
            0,
            0,
        ],
    );
}

/// Publishes a change: bumps the epoch and wakes every waiter.
fn bump(r: &ReplayState) {
    r.epoch.fetch_add(1, Ordering::AcqRel);
    raw::syscall6(
        libc::SYS_futex,
        [
            r.epoch.as_ptr() as u64,
            libc::FUTEX_WAKE as u64,
            i32::MAX as u64,
            0,
            0,
            0,
        ],
    );
}

pub(super) fn my_key() -> u32 {
    rp::key(ctl::process(), ctl::thread())
}

/// This thread's replay entry (same index as its thread entry).
fn my_entry(c: &ControlHeader) -> Option<&ReplayThread> {
    let e = ctl::thread_entry()? as *const ThreadEntry as usize;
    let base = c.threads.as_ptr() as usize;
    let i = (e - base) / core::mem::size_of::<ThreadEntry>();
    let t = c.replay.threads.get(i)?;
    let k = my_key();
    if t.key.load(Ordering::Acquire) != k {
        // The thread's first call: its creator may be waiting for it
        // (`ops::end_create`).
        t.key.store(k, Ordering::Release);
        bump(&c.replay);
    }
    Some(t)
}

/// True once the thread `key` has made its first call into the replay.
fn has_arrived(c: &ControlHeader, key: u32) -> bool {
    c.replay.threads[..live_entries(c)]
        .iter()
        .any(|t| t.key.load(Ordering::Acquire) == key)
}

fn set_state(c: &ControlHeader, s: u32) {
    if let Some(t) = my_entry(c) {
        t.state.store(s, Ordering::Release);
    }
}

fn live_entries(c: &ControlHeader) -> usize {
    (c.next_thread_entry.load(Ordering::Acquire) as usize).min(c.replay.threads.len())
}

fn slot_at(c: &ControlHeader, pos: u64) -> Option<&Slot> {
    let base = ctl::control_ptr()
        .cast::<u8>()
        .wrapping_add(c.ring_offset as usize) as *const Slot;
    // SAFETY: the index is masked into the ring, which lies in the mapping.
    let s = unsafe { &*base.add((pos & (c.ring_slots - 1)) as usize) };
    (s.commit.load(Ordering::Acquire) == pos + 1).then_some(s)
}

/// The owner of the event at `turn`, if it is there (0 past the end or
/// while the supervisor has not written it yet).
fn owner(c: &ControlHeader) -> (u32, bool) {
    let r = st(c);
    let turn = r.turn.0.load(Ordering::Acquire);
    if turn >= r.end.load(Ordering::Acquire) {
        return (0, true);
    }
    match slot_at(c, turn) {
        Some(s) => (rp::key(s.process as u32, s.thread), false),
        None => (0, false),
    }
}

/// Copies `n` bytes of the event at `pos`'s data, from byte `off`, to `dst`.
fn copy_data(c: &ControlHeader, pos: u64, off: usize, dst: *mut u8, n: usize) {
    let base = ctl::control_ptr()
        .cast::<u8>()
        .wrapping_add(c.ring_offset as usize);
    let mask = c.ring_slots - 1;
    let mut done = 0;
    while done < n {
        let at = off + done;
        let slot = pos + 1 + (at / SLOT_DATA) as u64;
        let within = at % SLOT_DATA;
        let k = (SLOT_DATA - within).min(n - done);
        // SAFETY: the slot is inside the ring; `dst` has room for `n` bytes
        // (the program's own buffer, as large as its syscall says).
        unsafe {
            let src = base.add(((slot & mask) as usize) * SLOT_DATA + within);
            core::ptr::copy_nonoverlapping(src, dst.add(done), k);
        }
        done += k;
    }
}

/// Byte `off` of the event at `pos`'s data.
fn data_byte(c: &ControlHeader, pos: u64, off: usize) -> u8 {
    let mut b = 0u8;
    copy_data(c, pos, off, &mut b, 1);
    b
}
