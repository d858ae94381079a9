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

use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libc::pthread_mutex_t;
use reprise_abi::{
    replay as rp, slots_for, ControlHeader, EventKind as K, Mode, ReplayState, ReplayThread, Slot,
    ThreadEntry, SLOT_DATA,
};

use crate::ctl;
use crate::raw;
use crate::real::real;

mod files;

/// True when this process replays.
#[inline]
pub fn on() -> bool {
    matches!(ctl::control(), Some(c) if c.mode == Mode::Replay as u32)
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

fn my_key() -> u32 {
    rp::key(ctl::process(), ctl::thread())
}

/// This thread's replay entry (same index as its thread entry).
fn my_entry(c: &ControlHeader) -> Option<&ReplayThread> {
    let e = ctl::thread_entry()? as *const ThreadEntry as usize;
    let base = c.threads.as_ptr() as usize;
    let i = (e - base) / core::mem::size_of::<ThreadEntry>();
    let t = c.replay.threads.get(i)?;
    t.key.store(my_key(), Ordering::Relaxed);
    Some(t)
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

fn next_random(r: &ReplayState) -> u64 {
    // splitmix64; only the decider (under the lock) advances it.
    let x = r
        .rng
        .load(Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    r.rng.store(x, Ordering::Relaxed);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Picks the next runner among the pending threads and the owner of the
/// next event. Called with the lock held by whoever gives the baton away.
fn decide(c: &ControlHeader) {
    let r = st(c);
    let mut cands = [0u32; 64];
    let mut n = 0usize;
    for t in &r.threads[..live_entries(c)] {
        if t.state.load(Ordering::Acquire) == rp::PENDING && n < cands.len() {
            let k = t.key.load(Ordering::Relaxed);
            if k != 0 && !cands[..n].contains(&k) {
                cands[n] = k;
                n += 1;
            }
        }
    }
    let (mut o, _) = owner(c);
    // An owner blocked in an unordered operation (a barrier) cannot take
    // the baton; the first thread to arrive while nobody holds it decides
    // again.
    let detached = r.threads[..live_entries(c)].iter().any(|t| {
        t.key.load(Ordering::Relaxed) == o && t.state.load(Ordering::Acquire) == rp::DETACHED
    });
    let held = |k: u32| {
        r.threads[..live_entries(c)].iter().any(|t| {
            t.key.load(Ordering::Relaxed) == k && t.state.load(Ordering::Acquire) == rp::HELD
        })
    };
    // An owner that does not exist yet is waited for (a thread just
    // created arrives soon), unless someone else can run: a child not yet
    // forked needs its parent, pending between its `Fork` event and the
    // copy, to run.
    let exists = |k: u32| {
        r.threads[..live_entries(c)]
            .iter()
            .any(|t| t.key.load(Ordering::Relaxed) == k)
    };
    if detached || held(o) || (n > 0 && !exists(o)) {
        o = 0;
    }
    if o != 0 && !cands[..n].contains(&o) && n < cands.len() {
        cands[n] = o;
        n += 1;
    }
    // A fixed order, whatever the entry order.
    for i in 1..n {
        let mut j = i;
        while j > 0 && cands[j - 1] > cands[j] {
            cands.swap(j - 1, j);
            j -= 1;
        }
    }
    let strategy = r.strategy.load(Ordering::Relaxed);
    let chosen = match n {
        // Nobody else can run while a thread is held for a flip: the flip
        // cannot happen, the held thread runs on.
        0 => match r.threads[..live_entries(c)]
            .iter()
            .find(|t| t.state.load(Ordering::Acquire) == rp::HELD)
        {
            Some(t) => {
                let k = t.key.load(Ordering::Relaxed);
                crate::observe::flip_infeasible(k);
                k
            }
            None => 0,
        },
        1 => cands[0],
        _ => {
            r.decisions.fetch_add(1, Ordering::Relaxed);
            if strategy & 0x7fff == rp::STRATEGY_RANDOM {
                // The thread that just finished an event keeps running,
                // except with probability `switch / 65536` (one draw per
                // choice either way, so a seed gives one schedule).
                let me = my_key();
                let x = next_random(r);
                let switch = (strategy >> 16) as u64;
                let preempting = PREEMPTING.with(|p| p.get());
                let stay = !preempting && cands[..n].contains(&me) && (x >> 48) >= switch;
                if stay {
                    me
                } else {
                    cands[((x & 0xffff_ffff) % n as u64) as usize]
                }
            } else if strategy & 0x7fff == rp::STRATEGY_STAY && cands[..n].contains(&my_key()) {
                my_key()
            } else {
                // In order: the owner of the next event first.
                if o != 0 {
                    o
                } else {
                    cands[0]
                }
            }
        }
    };
    // A deferred flip: the held thread runs as soon as the other one
    // gives the baton away.
    let chosen = match crate::observe::deferred_release() {
        Some(k) => k,
        None => chosen,
    };
    if r.baton.swap(chosen, Ordering::AcqRel) != chosen {
        bump(r);
    }
}

/// True if thread `tid` sleeps in the kernel (state S or D) or is dead.
fn task_blocked(tid: i32) -> bool {
    let mut path = [0u8; 32];
    let mut n = 0;
    for &b in b"/proc/" {
        path[n] = b;
        n += 1;
    }
    let mut digits = [0u8; 10];
    let d = dec(tid.max(0) as u64, &mut digits);
    path[n..n + d.len()].copy_from_slice(d);
    n += d.len();
    for &b in b"/stat\0" {
        path[n] = b;
        n += 1;
    }
    let fd = raw::syscall6(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path.as_ptr() as u64,
            (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    );
    if fd < 0 {
        // Gone: a process that exited while holding the baton.
        return fd == -(libc::ENOENT as i64) || fd == -(libc::ESRCH as i64);
    }
    let mut buf = [0u8; 512];
    let len = raw::syscall3(libc::SYS_read, fd as u64, buf.as_mut_ptr() as u64, 512);
    raw::syscall3(libc::SYS_close, fd as u64, 0, 0);
    if len <= 0 {
        return false;
    }
    let b = &buf[..len as usize];
    match b.iter().rposition(|&x| x == b')') {
        Some(i) if i + 2 < b.len() => matches!(b[i + 2], b'S' | b'D' | b'Z' | b'X' | b'x'),
        _ => false,
    }
}

/// Called by a waiter that saw no change for a while: if the baton's
/// holder sleeps in the kernel between two events (on a lock the agent
/// does not see, in `sleep`...), it leaves the schedule and the baton moves on.
fn maybe_revoke(c: &ControlHeader) {
    let r = st(c);
    let holder = r.baton.load(Ordering::Acquire);
    if holder == 0 {
        return;
    }
    let n = live_entries(c);
    let Some(i) = r.threads[..n]
        .iter()
        .position(|t| t.key.load(Ordering::Relaxed) == holder)
    else {
        return;
    };
    if r.threads[i].state.load(Ordering::Acquire) != rp::RUNNING
        || !task_blocked(c.threads[i].tid.load(Ordering::Relaxed))
    {
        return;
    }
    let _g = lock(r);
    if r.baton.load(Ordering::Acquire) == holder
        && r.threads[i].state.load(Ordering::Acquire) == rp::RUNNING
    {
        r.threads[i].state.store(rp::DETACHED, Ordering::Release);
        decide(c);
    }
}

/// Waits (futex, with a timeout) for the next change; revokes a sleeping
/// holder after `revoke_ms` without change.
fn wait_change(c: &ControlHeader, ep: u32, idle_ms: &mut u64) {
    let r = st(c);
    if r.divergence.state.load(Ordering::Acquire) != 0 {
        // Being killed.
        futex_wait(&r.epoch, ep, 1000);
        return;
    }
    futex_wait(&r.epoch, ep, 10);
    if r.epoch.load(Ordering::Acquire) == ep {
        *idle_ms += 10;
        let limit = r.revoke_ms.load(Ordering::Relaxed).max(10) as u64;
        if *idle_ms >= limit {
            *idle_ms = 0;
            maybe_revoke(c);
        }
    } else {
        *idle_ms = 0;
    }
}

// ---------------------------------------------------------------------------
// Divergence.

struct Text {
    b: [u8; reprise_abi::DIVERGENCE_TEXT_BYTES],
    n: usize,
}

impl Text {
    fn new() -> Text {
        Text {
            b: [0; reprise_abi::DIVERGENCE_TEXT_BYTES],
            n: 0,
        }
    }
    fn s(&mut self, s: &[u8]) -> &mut Text {
        let k = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + k].copy_from_slice(&s[..k]);
        self.n += k;
        self
    }
    fn d(&mut self, v: u64) -> &mut Text {
        let mut buf = [0u8; 20];
        let n = dec_len(v, &mut buf);
        let start = buf.len() - n;
        self.s(&buf[start..])
    }
    fn x(&mut self, v: u64) -> &mut Text {
        const H: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 18];
        let mut i = buf.len();
        let mut v2 = v;
        loop {
            i -= 1;
            buf[i] = H[(v2 & 15) as usize];
            v2 >>= 4;
            if v2 == 0 {
                break;
            }
        }
        i -= 1;
        buf[i] = b'x';
        i -= 1;
        buf[i] = b'0';
        self.s(&buf[i..])
    }
    /// `kind(object)` as a user reads it.
    fn op(&mut self, kind: u16, object: u64) -> &mut Text {
        match K::from_u16(kind) {
            Some(K::Syscall) => self.s(syscall_name(object as i64)).s(b"()"),
            Some(
                K::ThreadStart
                | K::ThreadExit
                | K::ProcessStart
                | K::ProcessExit
                | K::ThreadCreate
                | K::Fork,
            ) => {
                self.s(K::from_u16(kind)
                    .map(|k| k.name())
                    .unwrap_or("?")
                    .as_bytes())
            }
            Some(k) => self.s(k.name().as_bytes()).s(b"(").x(object).s(b")"),
            None => self.s(b"?"),
        }
    }
}

fn dec_len(mut v: u64, buf: &mut [u8; 20]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.len() - i
}

fn dec(v: u64, out: &mut [u8; 10]) -> &[u8] {
    let mut buf = [0u8; 20];
    let n = dec_len(v, &mut buf).min(10);
    out[..n].copy_from_slice(&buf[20 - n..]);
    &out[..n]
}

fn syscall_name(nr: i64) -> &'static [u8] {
    match nr {
        libc::SYS_read => b"read",
        libc::SYS_pread64 => b"pread64",
        libc::SYS_readv => b"readv",
        libc::SYS_preadv => b"preadv",
        libc::SYS_recvfrom => b"recvfrom",
        libc::SYS_recvmsg => b"recvmsg",
        libc::SYS_getrandom => b"getrandom",
        libc::SYS_clock_gettime => b"clock_gettime",
        libc::SYS_gettimeofday => b"gettimeofday",
        libc::SYS_time => b"time",
        libc::SYS_write => b"write",
        libc::SYS_writev => b"writev",
        libc::SYS_mmap => b"mmap",
        libc::SYS_exit_group => b"exit_group",
        _ => files::name(nr).unwrap_or(b"syscall"),
    }
}

/// Records why the replay stopped following the recording and kills the
/// program (every process of it, this one last).
fn diverge(c: &ControlHeader, pos: u64, t: &Text) -> ! {
    diverge_as(c, pos, t, rp::DIVERGED_ORDER)
}

/// [`diverge`], saying why (`rp::DIVERGED_*`).
fn diverge_as(c: &ControlHeader, pos: u64, t: &Text, kind: u32) -> ! {
    let r = st(c);
    if r.divergence
        .state
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: the one thread that won the 0 -> 1 transition owns the
        // record until it stores 2.
        unsafe {
            let d = &mut *core::ptr::addr_of_mut!((*ctl::control_ptr()).replay.divergence);
            d.process = ctl::process();
            d.thread = ctl::thread();
            d.pos = pos;
            d.kind = kind;
            d.len = t.n as u32;
            d.text[..t.n].copy_from_slice(&t.b[..t.n]);
        }
        r.divergence.state.store(2, Ordering::Release);
        bump(r);
    }
    let me = raw::getpid();
    for p in &c.processes {
        let pid = p.pid.load(Ordering::Acquire);
        if pid > 0 && pid != me {
            raw::syscall3(libc::SYS_kill, pid as u64, libc::SIGKILL as u64, 0);
        }
    }
    loop {
        raw::syscall3(libc::SYS_kill, me as u64, libc::SIGKILL as u64, 0);
    }
}

// ---------------------------------------------------------------------------
// The baton.

/// Waits at this thread's next event (`kind` on `object`); returns it,
/// or None past the end of the recording.
fn arrive(c: &ControlHeader, kind: K, object: u64) -> Option<Turn> {
    let r = st(c);
    let me = my_key();
    let mut idle = 0u64;
    let turn = loop {
        let ep;
        {
            let _g = lock(r);
            set_state(c, rp::WAITING);
            let (o, end) = owner(c);
            if end {
                return None;
            }
            let b = r.baton.load(Ordering::Acquire);
            if b == me && o == me {
                set_state(c, rp::IN_EVENT);
                break r.turn.0.load(Ordering::Acquire);
            }
            if (b == me && o != 0) || b == 0 {
                decide(c);
            }
            ep = r.epoch.load(Ordering::Acquire);
        }
        wait_change(c, ep, &mut idle);
    };
    let Some(s) = slot_at(c, turn) else {
        // Cannot happen: the owner was read from this slot under the lock.
        return None;
    };
    let t = Turn {
        pos: turn,
        kind: s.kind,
        object: s.object,
        arg0: s.arg0,
        result: s.result,
        data_len: s.data_len,
    };
    if t.kind != kind as u16 || (kind == K::Syscall && t.object != object) {
        let mut m = Text::new();
        m.s(b"expected ")
            .op(t.kind, t.object)
            .s(b" got ")
            .op(kind as u16, object);
        diverge(c, turn, &m);
    }
    if kind != K::Syscall && t.object != object && (is_static(t.object) || is_static(object)) {
        // A global object is at the same address in every run (ASLR is
        // off): another one is another operation.
        let mut m = Text::new();
        m.s(b"expected ")
            .op(t.kind, t.object)
            .s(b" got ")
            .op(kind as u16, object);
        diverge(c, turn, &m);
    }
    if kind != K::Syscall && t.object != object {
        r.object_mismatches.fetch_add(1, Ordering::Relaxed);
        let _ =
            r.first_mismatch
                .compare_exchange(u64::MAX, turn, Ordering::Relaxed, Ordering::Relaxed);
    }
    Some(t)
}

static STATIC_LO: AtomicU64 = AtomicU64::new(0);
static STATIC_HI: AtomicU64 = AtomicU64::new(0);

/// True if `addr` lies in the main executable's own data (its loaded
/// segments), where objects do not move between runs.
fn is_static(addr: u64) -> bool {
    if STATIC_HI.load(Ordering::Relaxed) == 0 {
        let (lo, hi) = executable_range();
        STATIC_LO.store(lo, Ordering::Relaxed);
        STATIC_HI.store(hi.max(1), Ordering::Relaxed);
    }
    addr >= STATIC_LO.load(Ordering::Relaxed) && addr < STATIC_HI.load(Ordering::Relaxed)
}

/// The address range of the main executable's PT_LOAD segments.
fn executable_range() -> (u64, u64) {
    // SAFETY: getauxval is async-signal-safe; AT_PHDR points to AT_PHNUM
    // program headers mapped for the life of the process.
    unsafe {
        let phdr = libc::getauxval(libc::AT_PHDR);
        let n = libc::getauxval(libc::AT_PHNUM) as usize;
        if phdr == 0 || n == 0 {
            return (0, 0);
        }
        let phs = core::slice::from_raw_parts(phdr as *const libc::Elf64_Phdr, n);
        let bias = phs
            .iter()
            .find(|p| p.p_type == libc::PT_PHDR)
            .map(|p| phdr.wrapping_sub(p.p_vaddr))
            .unwrap_or(0);
        let mut lo = u64::MAX;
        let mut hi = 0u64;
        for p in phs.iter().filter(|p| p.p_type == libc::PT_LOAD) {
            lo = lo.min(p.p_vaddr);
            hi = hi.max(p.p_vaddr + p.p_memsz);
        }
        if hi == 0 {
            return (0, 0);
        }
        (lo.wrapping_add(bias), hi.wrapping_add(bias))
    }
}

/// The event is done: the next one may go.
fn advance(c: &ControlHeader, t: &Turn) {
    let r = st(c);
    let _g = lock(r);
    r.turn.0.store(
        t.pos + slots_for(t.data_len as usize) as u64,
        Ordering::Release,
    );
    LAST_EVENT.with(|l| l.set(t.pos + 1));
    set_state(c, rp::RUNNING);
    bump(r);
}

/// Gives the strategy the choice of who runs next, this thread among the
/// candidates, and waits until it is chosen.
fn yield_baton(c: &ControlHeader) {
    let r = st(c);
    {
        let _g = lock(r);
        set_state(c, rp::PENDING);
        decide(c);
    }
    wait_for_baton(c);
}

/// Waits (pending) until the strategy gives this thread the baton.
fn wait_for_baton(c: &ControlHeader) {
    let r = st(c);
    let me = my_key();
    let mut idle = 0u64;
    loop {
        let ep;
        {
            let _g = lock(r);
            if r.baton.load(Ordering::Acquire) == me {
                set_state(c, rp::RUNNING);
                arm_preemption(c);
                return;
            }
            ep = r.epoch.load(Ordering::Acquire);
        }
        wait_change(c, ep, &mut idle);
    }
}

/// Leaves the schedule (to block in an unordered operation, or to exit).
fn detach(c: &ControlHeader) {
    let r = st(c);
    let _g = lock(r);
    set_state(c, rp::DETACHED);
    if r.baton.load(Ordering::Acquire) == my_key() {
        decide(c);
    }
}

/// Past the end of the recording, for an operation the recorded run never
/// reached: wait for good (the run ends elsewhere, or the supervisor
/// declares it stuck).
fn park(c: &ControlHeader) -> ! {
    let r = st(c);
    {
        let _g = lock(r);
        set_state(c, rp::WAITING);
        if r.baton.load(Ordering::Acquire) == my_key() {
            decide(c);
        }
    }
    loop {
        let ep = r.epoch.load(Ordering::Acquire);
        futex_wait(&r.epoch, ep, 1000);
    }
}

// ---------------------------------------------------------------------------
// Entry points for the wrappers.

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

/// After the operation that followed [`begin_create`].
pub fn end_create() {
    let _busy = Busy::enter();
    IN_AGENT.with(|b| b.set(b.get().saturating_sub(1)));
    yield_baton(ctl_ok());
}

/// `thread_exit`: the last event of a thread.
pub fn thread_exit() {
    let _busy = Busy::enter();
    let c = ctl_ok();
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
    if st(c).recorded_events.load(Ordering::Relaxed) & rp::RECORDED_PROCESS_EXIT == 0 {
        return; // a trace of an older version
    }
    match arrive(c, K::ProcessExit, 0) {
        Some(t) => advance(c, &t),
        None => park(c),
    }
}

fn is_timed(kind: K) -> bool {
    matches!(kind, K::MutexTimedlock | K::SemWait)
}

/// A blocking acquiring operation (logged after it completes).
pub fn acquire(kind: K, object: u64, holds: bool, f: impl FnOnce() -> c_int) -> c_int {
    let _busy = Busy::enter();
    let c = ctl_ok();
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

// ---------------------------------------------------------------------------
// System calls.

fn is_input(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_read
            | libc::SYS_pread64
            | libc::SYS_readv
            | libc::SYS_preadv
            | libc::SYS_recvfrom
            | libc::SYS_recvmsg
            | libc::SYS_getrandom
            | libc::SYS_clock_gettime
            | libc::SYS_gettimeofday
            | libc::SYS_time
    )
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

/// Scatters the recorded data over an iovec array.
///
/// # Safety
/// `iov` must point to `cnt` iovecs of the program.
unsafe fn scatter(c: &ControlHeader, t: &Turn, iov: u64, cnt: u64) {
    let iov = iov as *const libc::iovec;
    if iov.is_null() {
        return;
    }
    let mut off = 0usize;
    let total = t.data_len as usize;
    for i in 0..cnt as usize {
        if off >= total {
            break;
        }
        let v = &*iov.add(i);
        let k = v.iov_len.min(total - off);
        copy_data(c, t.pos, off, v.iov_base as *mut u8, k);
        off += k;
    }
}

/// True if two byte strings are equal except where the recorded one (`b`)
/// has a number that `is_id` accepts (a recorded pid or tid) and the
/// program's (`a`) has another number.
fn same_but_ids(
    a: &mut impl FnMut(usize) -> u8,
    alen: usize,
    b: impl Fn(usize) -> u8,
    blen: usize,
    is_id: impl Fn(u64) -> bool,
) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < alen && j < blen {
        let (x, y) = (a(i), b(j));
        if x.is_ascii_digit() && y.is_ascii_digit() {
            let (mut u, mut v) = (0u64, 0u64);
            while i < alen && a(i).is_ascii_digit() {
                u = u.saturating_mul(10).saturating_add((a(i) - b'0') as u64);
                i += 1;
            }
            while j < blen && b(j).is_ascii_digit() {
                v = v.saturating_mul(10).saturating_add((b(j) - b'0') as u64);
                j += 1;
            }
            if u != v && !is_id(v) {
                return false;
            }
        } else if x == y {
            i += 1;
            j += 1;
        } else {
            return false;
        }
    }
    i == alen && j == blen
}

/// Compares what the program just wrote with the recorded output.
fn check_output(c: &ControlHeader, t: &Turn, fd: u64, mut next: impl FnMut(usize) -> u8, n: usize) {
    let r = st(c);
    let stream = (fd as usize).clamp(1, 2) - 1;
    let at = r.output_pos[stream].load(Ordering::Relaxed);
    let mut kept = (t.data_len as usize).min(n);
    // The recording's wrong line and what follows it (a wrong-output
    // failure): compared by the supervisor with the expected output at the
    // end, not here.
    let free_from = r.stdout_free_from.load(Ordering::Relaxed);
    let free = stream == 0 && at.saturating_add(n as u64) > free_from;
    if free {
        kept = kept.min(free_from.saturating_sub(at) as usize);
    }
    if !free
        && (0..kept).any(|i| next(i) != data_byte(c, t.pos, i))
        && t.data_len as i64 == t.result
        && same_but_ids(
            &mut next,
            n,
            |j| data_byte(c, t.pos, j),
            t.data_len as usize,
            |v| r.recorded_ids.iter().any(|id| v != 0 && id.load(Ordering::Relaxed) as u64 == v),
        )
    {
        // A pid or a time printed: not what the sketch orders.
        r.output_numbers.fetch_add(1, Ordering::Relaxed);
        r.output_pos[stream].fetch_add(t.result as u64, Ordering::Relaxed);
        return;
    }
    for i in 0..kept {
        if next(i) != data_byte(c, t.pos, i) {
            let mut m = Text::new();
            m.s(if stream == 0 { b"stdout" } else { b"stderr" })
                .s(b" differs from the recorded output at byte ")
                .d(at + i as u64);
            diverge(c, t.pos, &m);
        }
    }
    if !free && t.result >= 0 && n as i64 != t.result {
        let mut m = Text::new();
        m.s(b"write(")
            .d(fd)
            .s(b") wrote ")
            .d(n as u64)
            .s(b" bytes, the recording ")
            .d(t.result as u64)
            .s(b" (at byte ")
            .d(at)
            .s(b")");
        diverge(c, t.pos, &m);
    }
    r.output_pos[stream].fetch_add(n as u64, Ordering::Relaxed);
}

/// A trapped or interposed system call in replay mode. Inputs return the
/// recorded result and memory; output to stdout/stderr runs and is
/// compared; everything else runs for real, unordered.
pub fn syscall(nr: i64, a: [u64; 6]) -> i64 {
    let _busy = Busy::enter();
    let c = ctl_ok();
    let output = matches!(nr, libc::SYS_write | libc::SYS_writev) && (1..=2).contains(&a[0]);
    let level_sys = c.level >= reprise_abi::Level::Sys as u32;
    let file = files::is_file_syscall(nr)
        && st(c).recorded_events.load(Ordering::Relaxed) & rp::RECORDED_FILES != 0;
    if !(output || (level_sys && (is_input(nr) || file))) {
        return raw::syscall6(nr, a);
    }
    let Some(t) = arrive(c, K::Syscall, nr as u64) else {
        park(c)
    };
    let result;
    // SAFETY: each arm writes only into the buffers the program passed to
    // this syscall, no more bytes than the syscall would have written.
    unsafe {
        match nr {
            libc::SYS_write => {
                let r = raw::syscall6(nr, a);
                let n = r.max(0) as usize;
                let buf = a[1] as *const u8;
                check_output(c, &t, a[0], |i| *buf.add(i), n);
                result = r;
            }
            libc::SYS_writev => {
                let r = raw::syscall6(nr, a);
                let n = r.max(0) as usize;
                let iov = a[1] as *const libc::iovec;
                let cnt = a[2] as usize;
                check_output(
                    c,
                    &t,
                    a[0],
                    |i| {
                        let mut off = i;
                        for k in 0..cnt {
                            let v = &*iov.add(k);
                            if off < v.iov_len {
                                return *(v.iov_base as *const u8).add(off);
                            }
                            off -= v.iov_len;
                        }
                        0
                    },
                    n,
                );
                result = r;
            }
            libc::SYS_read | libc::SYS_pread64 | libc::SYS_recvfrom => {
                let n = (t.data_len as usize).min(a[2] as usize);
                copy_data(c, t.pos, 0, a[1] as *mut u8, n);
                result = t.result;
            }
            libc::SYS_getrandom => {
                let n = (t.data_len as usize).min(a[1] as usize);
                copy_data(c, t.pos, 0, a[0] as *mut u8, n);
                result = t.result;
            }
            libc::SYS_readv | libc::SYS_preadv => {
                scatter(c, &t, a[1], a[2]);
                result = t.result;
            }
            libc::SYS_recvmsg => {
                let m = a[1] as *const libc::msghdr;
                if !m.is_null() {
                    scatter(c, &t, (*m).msg_iov as u64, (*m).msg_iovlen as u64);
                }
                result = t.result;
            }
            libc::SYS_clock_gettime => {
                let n = (t.data_len as usize).min(core::mem::size_of::<libc::timespec>());
                if a[1] != 0 {
                    copy_data(c, t.pos, 0, a[1] as *mut u8, n);
                }
                result = t.result;
            }
            libc::SYS_gettimeofday => {
                let n = (t.data_len as usize).min(core::mem::size_of::<libc::timeval>());
                if a[0] != 0 {
                    copy_data(c, t.pos, 0, a[0] as *mut u8, n);
                }
                result = t.result;
            }
            libc::SYS_time => {
                if a[0] != 0 {
                    *(a[0] as *mut i64) = t.result;
                }
                result = t.result;
            }
            _ if files::is_file_syscall(nr) => result = files::emulate(c, &t, nr, a),
            _ => result = raw::syscall6(nr, a),
        }
    }
    advance(c, &t);
    yield_baton(c);
    result
}

// ---------------------------------------------------------------------------
// Preemption between events (the `STRATEGY_PREEMPT` flag).

thread_local! {
    /// Nonzero while this thread runs agent code (never preempted there).
    static IN_AGENT: Cell<u32> = const { Cell::new(0) };
    /// This thread's kernel timer, -1 until created.
    static TIMER: Cell<i32> = const { Cell::new(-1) };
    /// Set while a preempted thread gives the baton away: the choice is
    /// uniform (the thread does not keep running by preference).
    static PREEMPTING: Cell<bool> = const { Cell::new(false) };
    /// Ring position + 1 of the last event this thread performed.
    static LAST_EVENT: Cell<u64> = const { Cell::new(0) };
}

/// Marks agent code for the preemption signal's handler.
struct Busy;

impl Busy {
    fn enter() -> Busy {
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
fn arm_preemption(c: &ControlHeader) {
    let r = st(c);
    if r.strategy.load(Ordering::Relaxed) & rp::STRATEGY_PREEMPT == 0 {
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

// ---------------------------------------------------------------------------
// Hooks for the access breakpoints (`observe`).

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
fn may_switch(c: &ControlHeader) -> bool {
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
