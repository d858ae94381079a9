//! The baton: a thread arrives at its next event, waits for its turn,
//! advances `turn` once the event is done and yields; `decide` picks who
//! runs next. Also the waits (futex with revocation of a holder asleep in
//! the kernel), detaching from the schedule and parking past the end.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

use reprise_abi::{replay as rp, slots_for, ControlHeader, EventKind as K, ReplayState};

use super::divergence::{dec, diverge, Text};
use super::preempt::{arm_preemption, PREEMPTING};
use super::{
    bump, futex_wait, has_arrived, live_entries, lock, my_key, owner, set_state, slot_at, st, Turn,
};
use crate::raw;

thread_local! {
    /// Ring position + 1 of the last event this thread performed.
    pub(super) static LAST_EVENT: Cell<u64> = const { Cell::new(0) };
}

pub(super) fn next_random(r: &ReplayState) -> u64 {
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
pub(super) fn decide(c: &ControlHeader) {
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
    if detached || held(o) || (n > 0 && !has_arrived(c, o)) {
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
    let policy = rp::Policy::decode(r.strategy.load(Ordering::Relaxed));
    let odd = r.odd_thread.load(Ordering::Relaxed);
    // A thread made to give the baton away (the supervisor's nudge of a
    // thread that computed too long without an event, most often a loop
    // waiting on memory another thread writes) lets another candidate run,
    // whatever the in-order policy would pick. (`Random` preemptions keep
    // their seeded draw.)
    let me = my_key();
    let nudged = PREEMPTING.with(|p| p.get()) && !matches!(policy, rp::Policy::Random { .. });
    // A thread polls memory while another is held for a flip: what it
    // waits for is most likely the held thread's next write (the others
    // wait at their next events, in the sketch's order, which the poller
    // may own), so the flip cannot happen; the held thread runs on (as
    // when nobody can run, below).
    // (Looked for only when nudged: `decide` runs at every event.)
    if nudged
        && r.threads[..live_entries(c)]
            .iter()
            .any(|t| t.state.load(Ordering::Acquire) == rp::HELD)
    {
        n = 0;
        o = 0;
    }
    if nudged && n > 1 && cands[..n].contains(&me) {
        let at = cands[..n].iter().position(|&k| k == me).unwrap_or(0);
        cands.copy_within(at + 1..n, at);
        n -= 1;
        if o == me {
            o = 0;
        }
    }
    let chosen = match n {
        // Nobody else can run while a thread is held for a flip: the flip
        // cannot happen, the held thread runs on. Of several held threads,
        // the one of the earliest flip: a later flip was planned on a run
        // in which the earlier one could not happen, and is the one being
        // tried.
        0 => match crate::observe::earliest_held()
            .filter(|&k| held(k))
            .or_else(|| {
                r.threads[..live_entries(c)]
                    .iter()
                    .find(|t| t.state.load(Ordering::Acquire) == rp::HELD)
                    .map(|t| t.key.load(Ordering::Relaxed))
            }) {
            Some(k) => {
                crate::observe::flip_infeasible(k);
                k
            }
            None => 0,
        },
        1 => cands[0],
        _ => {
            r.decisions.fetch_add(1, Ordering::Relaxed);
            match policy {
                rp::Policy::Random { switch, .. } => {
                    // The thread that just finished an event keeps running,
                    // except with probability `switch / 65536` (one draw per
                    // choice either way, so a seed gives one schedule).
                    let me = my_key();
                    let x = next_random(r);
                    let preempting = PREEMPTING.with(|p| p.get());
                    let stay =
                        !preempting && cands[..n].contains(&me) && (x >> 48) >= switch as u64;
                    if stay {
                        me
                    } else {
                        cands[((x & 0xffff_ffff) % n as u64) as usize]
                    }
                }
                // The odd thread runs against the policy: late under
                // `Stay`, early under `Owner`.
                rp::Policy::Stay if cands[..n].contains(&my_key()) && my_key() != odd => my_key(),
                rp::Policy::Owner if cands[..n].contains(&my_key()) && my_key() == odd => my_key(),
                // In order: the owner of the next event first.
                _ if o != 0 => o,
                _ => cands[0],
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

/// Reads `/proc/<tid>/<file>` into `buf`: the bytes read, or Err(errno).
fn read_task_file(tid: i32, file: &[u8], buf: &mut [u8]) -> Result<usize, i64> {
    let mut path = [0u8; 48];
    let mut n = 0;
    let mut digits = [0u8; 10];
    let d = dec(tid.max(0) as u64, &mut digits);
    for part in [&b"/proc/"[..], d, b"/", file, b"\0"] {
        if n + part.len() > path.len() {
            return Err(libc::ENAMETOOLONG as i64);
        }
        path[n..n + part.len()].copy_from_slice(part);
        n += part.len();
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
        return Err(-fd);
    }
    let len = raw::syscall3(
        libc::SYS_read,
        fd as u64,
        buf.as_mut_ptr() as u64,
        buf.len() as u64,
    );
    raw::syscall3(libc::SYS_close, fd as u64, 0, 0);
    if len < 0 {
        return Err(-len);
    }
    Ok(len as usize)
}

/// What `/proc/<tid>/stat` says of a thread.
#[derive(PartialEq)]
enum TaskState {
    Running,
    /// Asleep in the kernel (S or D).
    Asleep,
    /// Exited (a zombie, or gone).
    Dead,
}

fn task_state(tid: i32) -> TaskState {
    let mut buf = [0u8; 512];
    let len = match read_task_file(tid, b"stat", &mut buf) {
        Ok(len) => len,
        // Gone: a process that exited while holding the baton.
        Err(e) if e == libc::ENOENT as i64 || e == libc::ESRCH as i64 => return TaskState::Dead,
        Err(_) => return TaskState::Running,
    };
    let b = &buf[..len];
    match b.iter().rposition(|&x| x == b')') {
        Some(i) if i + 2 < b.len() => match b[i + 2] {
            b'S' | b'D' => TaskState::Asleep,
            b'Z' | b'X' | b'x' => TaskState::Dead,
            _ => TaskState::Running,
        },
        _ => TaskState::Running,
    }
}

/// True if thread `tid` sleeps in the kernel (state S or D) or is dead.
fn task_blocked(tid: i32) -> bool {
    task_state(tid) != TaskState::Running
}

/// True if thread `tid` will not give the baton back by itself: it has
/// exited, or it sleeps inside a system call (not in a page fault, where
/// `/proc/<tid>/syscall` says -1, which a loaded machine makes last but
/// which ends by itself).
fn holder_stuck(tid: i32) -> bool {
    match task_state(tid) {
        TaskState::Dead => true,
        TaskState::Running => false,
        TaskState::Asleep => {
            let mut buf = [0u8; 64];
            match read_task_file(tid, b"syscall", &mut buf) {
                Ok(len) => buf[..len].first().is_some_and(|b| b.is_ascii_digit()),
                Err(_) => true,
            }
        }
    }
}

/// Called by a waiter that saw no change for a while: if the baton's
/// holder sleeps in a system call between two events (on a lock the agent
/// does not see, in `sleep`...) while no thread outside the schedule can
/// still wake it (an exiting thread that holds a libc lock), it leaves the
/// schedule and the baton moves on. Counted: from there the run is no
/// longer decided by the schedule alone.
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
    if r.threads[i].state.load(Ordering::Acquire) != rp::RUNNING {
        return;
    }
    let tid = c.threads[i].tid.load(Ordering::Relaxed);
    if !holder_stuck(tid) {
        return;
    }
    // A holder that exited (its process ended after its last event) costs
    // no determinism; one asleep in a syscall does.
    let asleep = task_state(tid) == TaskState::Asleep;
    let outside_runs = (0..n).any(|j| {
        j != i
            && r.threads[j].state.load(Ordering::Acquire) == rp::DETACHED
            && !task_blocked(c.threads[j].tid.load(Ordering::Relaxed))
    });
    if outside_runs {
        return;
    }
    let _g = lock(r);
    if r.baton.load(Ordering::Acquire) == holder
        && r.threads[i].state.load(Ordering::Acquire) == rp::RUNNING
    {
        r.threads[i].state.store(rp::DETACHED, Ordering::Release);
        if asleep && r.revocations.fetch_add(1, Ordering::Relaxed) == 0 {
            let turn = r.turn.0.load(Ordering::Acquire);
            r.first_revocation.store(turn + 1, Ordering::Relaxed);
        }
        decide(c);
    }
}

/// Waits (futex, with a timeout) for the next change; revokes a sleeping
/// holder after `revoke_ms` without change.
fn wait_change(c: &ControlHeader, ep: u32, idle_ms: &mut u64) {
    let r = st(c);
    // The debugger takes a checkpoint: save this thread's context first.
    super::checkpoint::offer(c);
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
            // A replayer that was killed will never pass the baton on.
            crate::ctl::end_if_orphaned(c);
        }
    } else {
        *idle_ms = 0;
    }
}

/// Waits at this thread's next event (`kind` on `object`); returns it,
/// or None past the end of the recording.
pub(super) fn arrive(c: &ControlHeader, kind: K, object: u64) -> Option<Turn> {
    arrive_writing(c, kind, object, false)
}

/// [`arrive`] for an operation that writes to stderr when `stderr`: where
/// the recording did something else, the thread leaves the sketch (see
/// `divergence::leave_sketch`) and the returned turn is not its own.
pub(super) fn arrive_writing(
    c: &ControlHeader,
    kind: K,
    object: u64,
    stderr: bool,
) -> Option<Turn> {
    let r = st(c);
    let me = my_key();
    let mut idle = 0u64;
    let turn = loop {
        let ep;
        let pausing;
        let mut mine_now = false;
        {
            let _g = lock(r);
            set_state(c, rp::WAITING);
            let (o, end) = owner(c);
            if end {
                return None;
            }
            let b = r.baton.load(Ordering::Acquire);
            let turn = r.turn.0.load(Ordering::Acquire);
            if b == me && o == me && turn < r.pause_at.load(Ordering::Acquire) {
                set_state(c, rp::IN_EVENT);
                break turn;
            }
            pausing = b == me && o == me;
            if pausing {
                // The debugger's stop: everyone else already waits for
                // the baton, so the run is still before this event. No
                // decision is made here (a paused run decides as an
                // unpaused one).
                r.paused.store(turn + 1, Ordering::Release);
            } else if (b == me && o != 0) || b == 0 {
                decide(c);
                // Given to this very thread (nobody held it): go on now,
                // no other thread will wake us.
                mine_now = o == me && r.baton.load(Ordering::Acquire) == me;
            }
            ep = r.epoch.load(Ordering::Acquire);
        }
        if mine_now {
            continue;
        }
        if pausing && r.ckpt_request.load(Ordering::Acquire) == 1 {
            super::checkpoint::take(c);
            continue;
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
        extra: s.extra,
        data_len: s.data_len,
    };
    if t.kind == K::Signal as u16
        && kind != K::Signal
        && r.recorded_events.load(Ordering::Relaxed) & rp::RECORDED_NET != 0
    {
        // The recording ran a signal handler in this thread here, before
        // this operation: run it now (the event first, as recorded: what
        // the handler does comes after it), then arrive again.
        // SAFETY: siginfo_t is plain data; all zeros is a valid value.
        let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
        let n = (t.data_len as usize).min(core::mem::size_of::<libc::siginfo_t>());
        super::copy_data(c, t.pos, 0, &mut info as *mut libc::siginfo_t as *mut u8, n);
        advance(c, &t);
        crate::signals::deliver(t.object as i32, t.arg0 as i32, (n > 0).then_some(&info));
        return arrive_writing(c, kind, object, stderr);
    }
    if t.kind != kind as u16 || (kind == K::Syscall && t.object != object) {
        let mut m = Text::new();
        m.s(b"expected ")
            .op(t.kind, t.object)
            .s(b" got ")
            .op(kind as u16, object);
        // Output off the sketch runs on (see `leave_sketch`).
        super::divergence::mismatch(c, turn, &m, stderr);
        return Some(t);
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
pub(super) fn advance(c: &ControlHeader, t: &Turn) {
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
pub(super) fn yield_baton(c: &ControlHeader) {
    let r = st(c);
    {
        let _g = lock(r);
        set_state(c, rp::PENDING);
        decide(c);
    }
    wait_for_baton(c);
}

/// Waits (pending) until the strategy gives this thread the baton.
pub(super) fn wait_for_baton(c: &ControlHeader) {
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
pub(super) fn detach(c: &ControlHeader) {
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
pub(super) fn park(c: &ControlHeader) -> ! {
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
        super::checkpoint::offer(c);
        futex_wait(&r.epoch, ep, 1000);
    }
}
