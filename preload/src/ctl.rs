//! The control block shared with the supervisor, and the event log.
//!
//! Everything here runs on the program's hot paths (every lock, every
//! trapped syscall), possibly inside signal handlers: no allocation, no
//! locks, no panics.

use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use reprise_abi::{
    code_run_reserved, run, slots_for, ControlHeader, EventKind, Level, ProcessEntry, Slot,
    ThreadEntry, ABI_VERSION, CODE_RUN_MAX, MAGIC, MAX_EVENT_DATA, MAX_HELD, MAX_PROCESSES,
    MAX_THREADS, SLOT_DATA,
};

use crate::raw;

static CONTROL: AtomicPtr<ControlHeader> = AtomicPtr::new(core::ptr::null_mut());
/// This process's logical index.
static PROCESS: AtomicU32 = AtomicU32::new(u32::MAX);

thread_local! {
    /// This thread's logical index within the process (`u32::MAX` until known).
    static THREAD: Cell<u32> = const { Cell::new(u32::MAX) };
    /// Index of this thread's `ThreadEntry` in the control block.
    static ENTRY: Cell<u32> = const { Cell::new(u32::MAX) };
    /// The last value of the ring's tail this thread read: while its
    /// reservations stay within `tail + ring_slots` it need not read the
    /// shared tail again (which the supervisor keeps writing).
    static KNOWN_TAIL: Cell<u64> = const { Cell::new(0) };
}

/// Whether the agent's start-up ran: [`NOT_STARTED`], [`STARTING`] or
/// [`STARTED`].
static START: AtomicU32 = AtomicU32::new(NOT_STARTED);
const NOT_STARTED: u32 = 0;
const STARTING: u32 = 1;
const STARTED: u32 = 2;

/// Runs the agent's start-up ([`crate::init`]) once, at the first call
/// into the agent: the constructors of the libraries the program links
/// (an allocator that reads the clock when it sets itself up) run before
/// the agent's own, and what they read must be recorded as well.
#[inline]
fn start() {
    if START.load(Ordering::Acquire) == NOT_STARTED {
        start_slow();
    }
}

#[cold]
fn start_slow() {
    if START
        .compare_exchange(NOT_STARTED, STARTING, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        crate::init();
        START.store(STARTED, Ordering::Release);
    }
}

/// The agent's start-up from its constructor (if no call came first).
pub fn start_from_constructor() {
    start();
}

/// The mapped control block, if this process is traced.
#[inline]
pub fn control() -> Option<&'static ControlHeader> {
    start();
    let p = CONTROL.load(Ordering::Acquire);
    // SAFETY: once set, the pointer refers to a mapping that lives as long
    // as the process (it is never unmapped).
    unsafe { p.as_ref() }
}

#[inline]
pub fn active() -> bool {
    start();
    !CONTROL.load(Ordering::Relaxed).is_null()
}

pub fn level() -> Level {
    match control() {
        Some(c) => Level::from_u32(c.level),
        None => Level::Sync,
    }
}

/// Maps the control block named by the environment. Called once from the
/// constructor, before the program runs.
pub fn attach(path: *const libc::c_char) -> bool {
    // SAFETY: `path` is a NUL-terminated string from the environment; the
    // mapping is checked for the magic and version before it is used.
    unsafe {
        let Some((fd, size)) = raw::open_shared(path) else {
            return false;
        };
        if size < core::mem::size_of::<ControlHeader>() {
            libc::close(fd);
            return false;
        }
        let p = raw::mmap(
            core::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        libc::close(fd);
        if p == libc::MAP_FAILED {
            return false;
        }
        let h = p as *mut ControlHeader;
        if (*h).magic != MAGIC || (*h).abi_version != ABI_VERSION {
            libc::munmap(p, size);
            let msg = b"reprise agent: the agent library and reprise were built from different versions; rebuild both (cargo build --workspace); this run is not recorded\n";
            raw::syscall3(libc::SYS_write, 2, msg.as_ptr() as u64, msg.len() as u64);
            return false;
        }
        CONTROL.store(h, Ordering::Release);
        crate::replay::checkpoint::note_region(0, p as usize, size);
    }
    true
}

/// The control block as a raw pointer, for the parts the agent writes
/// without atomics (ring slots, crash and assertion records), each owned by
/// one writer at a time.
pub fn control_ptr() -> *mut ControlHeader {
    CONTROL.load(Ordering::Acquire)
}

fn ring(c: &ControlHeader) -> *mut Slot {
    control_ptr()
        .cast::<u8>()
        .wrapping_add(c.ring_offset as usize) as *mut Slot
}

pub fn process() -> u32 {
    PROCESS.load(Ordering::Relaxed)
}

pub fn set_process(p: u32) {
    PROCESS.store(p, Ordering::Relaxed);
}

pub fn process_entry(c: &ControlHeader, p: u32) -> Option<&ProcessEntry> {
    c.processes.get(p as usize)
}

/// Finds the process entry registered for `pid` (by a `fork` before an
/// `exec`), or registers a new process.
pub fn register_process(pid: i32, parent: u32) -> Option<u32> {
    let c = control()?;
    for (i, e) in c.processes.iter().enumerate() {
        if e.pid.load(Ordering::Acquire) == pid {
            return Some(i as u32);
        }
    }
    let idx = c.next_process.fetch_add(1, Ordering::AcqRel);
    if idx as usize >= MAX_PROCESSES {
        return None;
    }
    let e = &c.processes[idx as usize];
    e.parent.store(parent, Ordering::Relaxed);
    e.next_thread.store(1, Ordering::Relaxed);
    e.pid.store(pid, Ordering::Release);
    Some(idx)
}

/// Allocates the next thread index of this process.
pub fn next_thread_index() -> u32 {
    match control().and_then(|c| process_entry(c, process())) {
        Some(e) => e.next_thread.fetch_add(1, Ordering::AcqRel),
        None => u32::MAX,
    }
}

/// Makes the calling thread known as `index`, with a thread entry the
/// supervisor can read when the program hangs.
pub fn register_thread(index: u32) {
    THREAD.with(|t| t.set(index));
    let Some(c) = control() else { return };
    let slot = c.next_thread_entry.fetch_add(1, Ordering::AcqRel);
    if slot as usize >= MAX_THREADS {
        return;
    }
    let e = &c.threads[slot as usize];
    e.process.store(process(), Ordering::Relaxed);
    e.thread.store(index, Ordering::Relaxed);
    e.state.store(1, Ordering::Relaxed);
    e.tid.store(raw::gettid(), Ordering::Release);
    ENTRY.with(|x| x.set(slot));
}

/// The calling thread's index; threads the agent did not see being created
/// (raw `clone`) get one on first use.
pub fn thread() -> u32 {
    let t = THREAD.with(|t| t.get());
    if t != u32::MAX {
        return t;
    }
    let t = next_thread_index();
    register_thread(t);
    t
}

pub fn thread_entry() -> Option<&'static ThreadEntry> {
    let c = control()?;
    let slot = ENTRY.with(|x| x.get());
    c.threads.get(slot as usize)
}

/// Forgets the inherited thread identity (in a fork child).
pub fn reset_thread() {
    THREAD.with(|t| t.set(u32::MAX));
    ENTRY.with(|x| x.set(u32::MAX));
}

pub fn set_waiting(object: u64, kind: EventKind) {
    if let Some(h) = here() {
        h.set_waiting(object, kind);
    }
}

pub fn clear_waiting() {
    if let Some(h) = here() {
        h.clear_waiting();
    }
}

pub fn held_add(object: u64) {
    if let Some(h) = here() {
        h.held_add(object);
    }
}

pub fn held_remove(object: u64) {
    if let Some(h) = here() {
        h.held_remove(object);
    }
}

pub fn thread_exited() {
    if let Some(e) = thread_entry() {
        e.state.store(2, Ordering::Release);
    }
}

/// The fields of one event, apart from its sequence number.
#[derive(Clone, Copy)]
pub struct Ev {
    pub kind: EventKind,
    pub object: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub result: i64,
    pub extra: u64,
}

impl Ev {
    pub const fn new(kind: EventKind, object: u64) -> Ev {
        Ev {
            kind,
            object,
            arg0: 0,
            arg1: 0,
            result: 0,
            extra: 0,
        }
    }
}

/// Logs one event and returns its sequence number. `data` is copied into
/// the ring (split into `DataMore` events beyond `MAX_EVENT_DATA`).
pub fn log(ev: Ev, data: &[u8]) -> u64 {
    match here() {
        Some(h) => h.log(ev, data),
        None => 0,
    }
}

/// The control block and the calling thread's entry, looked up once per
/// intercepted call: in a preloaded library each thread-local access is a
/// call to `__tls_get_addr`, and a lock operation needs the entry several
/// times.
#[derive(Clone, Copy)]
pub struct Here {
    pub c: &'static ControlHeader,
    pub e: Option<&'static ThreadEntry>,
}

pub fn here() -> Option<Here> {
    let c = control()?;
    let slot = ENTRY.with(|x| x.get());
    Some(Here {
        c,
        e: c.threads.get(slot as usize),
    })
}

impl Here {
    // The supervisor reads these only after the program made no progress
    // for seconds (a hang), so relaxed stores are enough.
    pub fn set_waiting(self, object: u64, kind: EventKind) {
        if let Some(e) = self.e {
            e.wait_kind.store(kind as u32, Ordering::Relaxed);
            e.waiting_on.store(object, Ordering::Relaxed);
        }
    }

    pub fn clear_waiting(self) {
        if let Some(e) = self.e {
            e.waiting_on.store(0, Ordering::Relaxed);
        }
    }

    pub fn held_add(self, object: u64) {
        if let Some(e) = self.e {
            let n = e.held_count.load(Ordering::Relaxed) as usize;
            if n < MAX_HELD {
                e.held[n].store(object, Ordering::Relaxed);
            }
            e.held_count.store(n as u32 + 1, Ordering::Relaxed);
        }
    }

    pub fn held_remove(self, object: u64) {
        if let Some(e) = self.e {
            let n = (e.held_count.load(Ordering::Relaxed) as usize).min(MAX_HELD);
            for i in (0..n).rev() {
                if e.held[i].load(Ordering::Relaxed) == object {
                    let last = e.held[n - 1].load(Ordering::Relaxed);
                    e.held[i].store(last, Ordering::Relaxed);
                    e.held_count.store(n as u32 - 1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Logs one event, see [`log`].
    pub fn log(self, ev: Ev, data: &[u8]) -> u64 {
        let c = self.c;
        if data.is_empty() && ev.result == 0 {
            if let Some(e) = self.e {
                if is_code(ev.kind) {
                    return log_code(c, e, ev);
                }
                if let Some(kinds) = run_kinds(ev.kind) {
                    return log_in_run(c, e, ev, kinds);
                }
            }
        }
        let first = data.len().min(MAX_EVENT_DATA);
        let seq = log_one(c, self.e, ev, &data[..first]);
        let mut rest = &data[first..];
        while !rest.is_empty() {
            let n = rest.len().min(MAX_EVENT_DATA);
            log_one(
                c,
                self.e,
                Ev::new(EventKind::DataMore, ev.object),
                &rest[..n],
            );
            rest = &rest[n..];
        }
        seq
    }
}

/// The (acquire, release) kinds of the runs an event can belong to.
fn run_kinds(kind: EventKind) -> Option<(EventKind, EventKind)> {
    use EventKind as K;
    match kind {
        K::MutexLock | K::MutexUnlock => Some((K::MutexLock, K::MutexUnlock)),
        K::SpinLock | K::SpinUnlock => Some((K::SpinLock, K::SpinUnlock)),
        K::RwRdlock => Some((K::RwRdlock, K::RwUnlock)),
        K::RwWrlock | K::RwUnlock => Some((K::RwWrlock, K::RwUnlock)),
        _ => None,
    }
}

/// Function and block entries: their runs keep each entry's address.
fn is_code(kind: EventKind) -> bool {
    matches!(kind, EventKind::FuncEntry | EventKind::Block)
}

/// Stores entry `i` of the thread's code run.
fn put_code(e: &ThreadEntry, i: u64, ev: &Ev) {
    e.code[2 * i as usize].store(ev.object, Ordering::Relaxed);
    e.code[2 * i as usize + 1].store(ev.arg0, Ordering::Relaxed);
}

/// Before a thread reuses its `code` entries: waits until the last code
/// run's were copied out (by the supervisor, if it closed that run; the
/// thread closing its own copies them at once).
fn wait_code_copied(c: &ControlHeader, e: &ThreadEntry) {
    let st = e.run.load(Ordering::Acquire);
    let (k0, _) = unpack_kinds(e.run_kinds.load(Ordering::Relaxed));
    if st == 0 || !is_code(k0) {
        return;
    }
    let mut spins = 0u32;
    while e.code_read.load(Ordering::Acquire) != run::start(st) + 1 {
        if c.stopping.load(Ordering::Relaxed) != 0 {
            return;
        }
        spins += 1;
        if spins < 64 {
            core::hint::spin_loop();
        } else {
            // SAFETY: sched_yield has no memory effects.
            unsafe { libc::sched_yield() };
        }
    }
}

/// Marks the thread as taking sequence numbers (see
/// [`ThreadEntry::writing`]); the `fetch_add` after it orders the store
/// before the numbers are taken.
fn reserving(e: &ThreadEntry) {
    e.writing.store(reprise_abi::RESERVING, Ordering::Relaxed);
}

/// The thread holds `len` sequence numbers from `seq` it has not written.
fn holds(e: &ThreadEntry, seq: u64, len: u64) {
    e.writing_len.store(len, Ordering::Relaxed);
    e.writing.store(seq + 1, Ordering::Release);
}

/// The thread's reserved numbers are written (or belong to a run).
fn written(e: &ThreadEntry) {
    e.writing.store(0, Ordering::Release);
}

/// Logs a lock or unlock as part of the thread's run when it continues it
/// (same object, alternating kinds, and no other event took a sequence
/// number in between): then it costs one `fetch_add` and a store to the
/// thread's own cache line, not a ring slot the supervisor must read.
fn log_in_run(c: &ControlHeader, e: &ThreadEntry, ev: Ev, kinds: (EventKind, EventKind)) -> u64 {
    reserving(e);
    let seq = c.head.0.fetch_add(1, Ordering::AcqRel);
    holds(e, seq, 1);
    let st = e.run.load(Ordering::Acquire);
    if run::is_open(st) {
        let len = run::len(st);
        let (k0, k1) = unpack_kinds(e.run_kinds.load(Ordering::Relaxed));
        let expected = if len % 2 == 0 { k0 } else { k1 };
        if run::start(st) + len == (seq & run_start_mask())
            && len < run::MAX_LEN
            && e.run_object.load(Ordering::Relaxed) == ev.object
            && expected as u16 == ev.kind as u16
            // Every acquire of a run comes from one call site.
            && (len % 2 == 1 || e.run_site.load(Ordering::Relaxed) == ev.arg0)
            && e.run
                .compare_exchange(st, st + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            written(e);
            return seq;
        }
        close_run(c, e);
    }
    wait_for_space(c, seq, 1);
    if ev.kind as u16 == kinds.0 as u16 {
        // Open a new run at this event.
        e.run_kinds
            .store(kinds.0 as u32 | (kinds.1 as u32) << 16, Ordering::Relaxed);
        e.run_object.store(ev.object, Ordering::Relaxed);
        e.run_site.store(ev.arg0, Ordering::Relaxed);
        e.run.store(run::pack(seq, 1), Ordering::Release);
    } else {
        write_slot(c, seq, 1, ev, &[], 0, 0);
    }
    written(e);
    seq
}

/// Logs a function or block entry. A thread's entries fill a run of
/// sequence numbers it reserved with one `fetch_add` (its size in
/// `run_object`), in its own cache lines, for as long as no other thread
/// takes a number: a thread running alone pays one shared atomic per run
/// instead of one per entry (the head's cache line bouncing between cores
/// was most of the cost), and the order stays exact up to the entry that
/// notices another thread. The reservation doubles while runs fill it (up
/// to [`CODE_RUN_MAX`]) and halves when another thread cuts one short, so
/// that threads logging at once do not burn ring slots they leave empty.
/// Happens-before is kept: any other event of the thread (a lock, a
/// syscall) closes the run first and takes a number after it.
fn log_code(c: &ControlHeader, e: &ThreadEntry, ev: Ev) -> u64 {
    let st = e.run.load(Ordering::Acquire);
    let (k0, _) = unpack_kinds(e.run_kinds.load(Ordering::Relaxed));
    let code_run = st != 0 && is_code(k0);
    let reserved = if code_run {
        code_run_reserved(e.run_object.load(Ordering::Relaxed))
    } else {
        0
    };
    if run::is_open(st) {
        let len = run::len(st);
        if code_run && k0 as u16 == ev.kind as u16 && len < reserved {
            let start = first_seq_of(c, run::start(st));
            // A plain load: the head's line stays shared while nobody logs.
            if c.head.0.load(Ordering::Relaxed) == start + reserved {
                // Before the run counts it (the closer reads `len` entries).
                put_code(e, len, &ev);
                if e.run
                    .compare_exchange(st, st + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return start + len;
                }
            }
        }
        close_run(c, e);
    }
    let size = match (code_run, run::len(st)) {
        (false, _) => CODE_RUN_MAX as u64 / 4,
        (true, len) if len >= reserved => (reserved * 2).min(CODE_RUN_MAX as u64),
        (true, _) => (reserved / 2).max(1),
    };
    reserving(e);
    let seq = c.head.0.fetch_add(size, Ordering::AcqRel);
    holds(e, seq, size);
    if !wait_for_space(c, seq, size) {
        written(e);
        return seq;
    }
    wait_code_copied(c, e);
    put_code(e, 0, &ev);
    e.run_kinds
        .store(ev.kind as u32 | (ev.kind as u32) << 16, Ordering::Relaxed);
    e.run_object.store(size, Ordering::Relaxed);
    e.run.store(run::pack(seq, 1), Ordering::Release);
    written(e);
    seq
}

fn run_start_mask() -> u64 {
    run::START_MASK
}

fn unpack_kinds(v: u32) -> (EventKind, EventKind) {
    (
        EventKind::from_u16(v as u16).unwrap_or(EventKind::MutexLock),
        EventKind::from_u16((v >> 16) as u16).unwrap_or(EventKind::MutexUnlock),
    )
}

/// Closes the calling thread's open run, if the supervisor has not taken
/// it already, and writes it into the slot of its first event.
pub fn close_run(c: &ControlHeader, e: &ThreadEntry) {
    let st = e.run.load(Ordering::Acquire);
    if !run::is_open(st)
        || e.run
            .compare_exchange(st, st | run::CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    let (k0, k1) = unpack_kinds(e.run_kinds.load(Ordering::Relaxed));
    let start = first_seq_of(c, run::start(st));
    let len = run::len(st);
    if is_code(k0) {
        let reserved = code_run_reserved(e.run_object.load(Ordering::Relaxed));
        close_code_run(c, e, k0, start, len, reserved);
        e.code_read.store(run::start(st) + 1, Ordering::Release);
        return;
    }
    let ev = Ev {
        arg0: e.run_site.load(Ordering::Relaxed),
        ..Ev::new(k0, e.run_object.load(Ordering::Relaxed))
    };
    if len == 1 {
        write_slot(c, start, 1, ev, &[], 0, 0);
    } else {
        write_slot(c, start, 1, ev, &[], k1 as u16 + 1, len);
    }
}

/// Writes a closed run of `len` function or block entries at `start`,
/// over the `reserved` numbers the run took (the drainer skips them all):
/// one event, or a header whose data, in the slots after it, are the
/// entries' (address, call site) pairs (16 bytes each: they fit in the
/// run's own slots).
fn close_code_run(
    c: &ControlHeader,
    e: &ThreadEntry,
    kind: EventKind,
    start: u64,
    len: u64,
    reserved: u64,
) {
    let at = |i: usize| e.code[i].load(Ordering::Relaxed);
    let first = Ev {
        arg0: at(1),
        ..Ev::new(kind, at(0))
    };
    if len <= 1 {
        write_slot(c, start, reserved, first, &[], 0, 0);
        return;
    }
    let mut pairs = [0u8; 16 * CODE_RUN_MAX];
    let n = (len as usize).min(CODE_RUN_MAX);
    for i in 0..2 * n {
        pairs[8 * i..8 * i + 8].copy_from_slice(&at(i).to_le_bytes());
    }
    write_slot(
        c,
        start,
        reserved,
        first,
        &pairs[..16 * n],
        kind as u16 + 1,
        n as u64,
    );
}

/// The full sequence number whose low bits `start` holds (runs keep 39
/// bits; the ring's head is close by).
fn first_seq_of(c: &ControlHeader, start: u64) -> u64 {
    let head = c.head.0.load(Ordering::Relaxed);
    let mask = run_start_mask();
    let mut s = (head & !mask) | start;
    if s > head {
        s = s.wrapping_sub(mask + 1);
    }
    s
}

fn log_one(c: &ControlHeader, e: Option<&ThreadEntry>, ev: Ev, data: &[u8]) -> u64 {
    let nslots = slots_for(data.len()) as u64;
    if let Some(e) = e {
        reserving(e);
    }
    let seq = c.head.0.fetch_add(nslots, Ordering::AcqRel);
    if let Some(e) = e {
        holds(e, seq, nslots);
        close_run(c, e);
    }
    if wait_for_space(c, seq, nslots) {
        write_slot(c, seq, nslots, ev, data, 0, 0);
    }
    if let Some(e) = e {
        written(e);
    }
    seq
}

/// Waits until the supervisor drained enough of the ring for slots
/// `seq..seq+nslots`. False if the trace is being finished and the event
/// must be dropped.
fn wait_for_space(c: &ControlHeader, seq: u64, nslots: u64) -> bool {
    let known = KNOWN_TAIL.with(|k| k.get());
    if seq + nslots - known.min(seq) <= c.ring_slots {
        return true;
    }
    let mut spins = 0u32;
    while seq + nslots - c.tail.0.load(Ordering::Acquire) > c.ring_slots {
        if c.stopping.load(Ordering::Relaxed) != 0 {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        spins += 1;
        if spins < 64 {
            core::hint::spin_loop();
        } else if spins < 128 {
            // SAFETY: sched_yield has no memory effects.
            unsafe { libc::sched_yield() };
        } else {
            // The drainer may be at SCHED_IDLE (recorder/src/drain_priority.rs):
            // yielding hands the core to the program's other threads, never
            // to it; sleeping frees the core.
            raw::sleep_ns(50_000);
        }
        if spins.is_multiple_of(4096) {
            end_if_orphaned(c);
        }
    }
    KNOWN_TAIL.with(|k| k.set(c.tail.0.load(Ordering::Acquire)));
    true
}

/// Ends this process if the supervisor is gone (reprise was killed): no
/// one will drain the ring again.
pub fn end_if_orphaned(c: &ControlHeader) {
    let sup = c.supervisor.load(Ordering::Acquire);
    if sup > 0
        && raw::syscall6(libc::SYS_kill, [sup as u64, 0, 0, 0, 0, 0]) == -(libc::ESRCH as i64)
    {
        let me = raw::getpid();
        raw::syscall6(
            libc::SYS_kill,
            [me as u64, libc::SIGKILL as u64, 0, 0, 0, 0],
        );
    }
}

fn write_slot(
    c: &ControlHeader,
    seq: u64,
    nslots: u64,
    ev: Ev,
    data: &[u8],
    alt_kind: u16,
    count: u64,
) {
    let base = ring(c);
    let mask = c.ring_slots - 1;
    // SAFETY: slots seq..seq+nslots are reserved for this thread by its
    // fetch_add and free (drained) by `wait_for_space`; indices are masked
    // into the ring.
    unsafe {
        for (i, chunk) in data.chunks(SLOT_DATA).enumerate() {
            let s = base.add(((seq + 1 + i as u64) & mask) as usize) as *mut u8;
            core::ptr::copy_nonoverlapping(chunk.as_ptr(), s, chunk.len());
        }
        let s = &mut *base.add((seq & mask) as usize);
        s.kind = ev.kind as u16;
        s.nslots = nslots as u16;
        s.process = process() as u16;
        s.alt_kind = alt_kind;
        s.thread = thread();
        s.data_len = data.len() as u32;
        s.object = ev.object;
        s.arg0 = ev.arg0;
        s.arg1 = if alt_kind != 0 { count } else { ev.arg1 };
        s.result = ev.result;
        s.extra = ev.extra;
        s.commit.store(seq + 1, Ordering::Release);
    }
}
