//! The supervisor's side of the control block shared with the agent.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::shm::SharedFile;
use reprise_abi::{
    control_size, ring_offset, run, ControlHeader, EventKind, Level, Mode, Slot, ThreadEntry,
    ABI_VERSION, MAGIC, SLOT_DATA,
};

/// One event as it came out of the ring, data included.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub seq: u64,
    pub kind: EventKind,
    pub process: u16,
    pub thread: u32,
    pub object: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub result: i64,
    pub extra: u64,
    pub data: Vec<u8>,
    /// More than 1: a run of this many events at `seq..`, kinds alternating
    /// `kind` and `alt_kind` (see `reprise_abi::ThreadEntry::run`).
    pub repeat: u64,
    pub alt_kind: EventKind,
}

/// What [`ControlBlock::pass_dead_writer`] did.
#[derive(Debug)]
pub enum DeadWriter {
    /// The run the dead thread was closing, taken from its entry.
    Run(RawEvent),
    /// Sequence numbers the dead thread reserved, skipped: their events
    /// are lost.
    Skipped(u64),
}

/// A run's description in its thread's entry, read before the run is
/// closed (its owner may reuse the fields for its next run after).
#[derive(Clone, Copy)]
struct RunFields {
    kinds: u32,
    object: u64,
    site: u64,
    process: u16,
    thread: u32,
}

impl RunFields {
    fn read(e: &ThreadEntry) -> RunFields {
        RunFields {
            kinds: e.run_kinds.load(Ordering::Acquire),
            object: e.run_object.load(Ordering::Acquire),
            site: e.run_site.load(Ordering::Acquire),
            process: e.process.load(Ordering::Relaxed) as u16,
            thread: e.thread.load(Ordering::Relaxed),
        }
    }
}

/// A control block: a shared file in /dev/shm mapped into the supervisor
/// and, by the agent, into every traced process.
pub struct ControlBlock {
    file: SharedFile,
    /// `file.base()`.
    base: *mut u8,
    /// The next slot to drain; published to the agents as `tail` in
    /// batches, so that the shared cache line does not bounce per event.
    cursor: std::cell::Cell<u64>,
}

// SAFETY: the mapping is process-wide; concurrent access goes through
// atomics or is owned by one side at a time (the ring protocol).
unsafe impl Send for ControlBlock {}

impl ControlBlock {
    /// Creates and maps a fresh control block with `ring_slots` slots (a
    /// power of two).
    pub fn create(mode: Mode, level: Level, ring_slots: u64) -> io::Result<ControlBlock> {
        assert!(ring_slots.is_power_of_two());
        let file = SharedFile::create("control", control_size(ring_slots))?;
        let base = file.base();
        // SAFETY: the file is zero-filled (all-zero is a valid state for
        // every field); the plain fields are set before any agent maps it.
        unsafe {
            let h = base as *mut ControlHeader;
            (*h).magic = MAGIC;
            (*h).abi_version = ABI_VERSION;
            (*h).mode = mode as u32;
            (*h).level = level as u32;
            (*h).ring_slots = ring_slots;
            (*h).ring_offset = ring_offset() as u64;
            (*h).supervisor
                .store(std::process::id() as i32, Ordering::Release);
        }
        Ok(ControlBlock {
            file,
            base,
            cursor: std::cell::Cell::new(0),
        })
    }

    /// `record --chaos`: set before any agent maps the block.
    pub fn set_chaos(&self, on: bool) {
        // SAFETY: a plain field written before the program starts.
        unsafe { (*(self.base as *mut ControlHeader)).chaos = u32::from(on) };
    }

    /// `bb-N` sketches: set before any agent maps the block.
    pub fn set_block_period(&self, n: u32) {
        // SAFETY: a plain field written before the program starts.
        unsafe { (*(self.base as *mut ControlHeader)).block_period = n };
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn header(&self) -> &ControlHeader {
        // SAFETY: `base` maps at least a ControlHeader for our lifetime.
        unsafe { &*(self.base as *const ControlHeader) }
    }

    fn slot(&self, index: u64) -> *const Slot {
        let h = self.header();
        let i = (index & (h.ring_slots - 1)) as usize;
        // SAFETY: `i` is within the ring, which lies inside the mapping.
        unsafe { (self.base.add(h.ring_offset as usize) as *const Slot).add(i) }
    }

    /// Sequence numbers handed out so far.
    pub fn head(&self) -> u64 {
        self.header().head.0.load(Ordering::Acquire)
    }

    /// Everything before this sequence number has been taken.
    pub fn tail(&self) -> u64 {
        self.cursor.get()
    }

    /// Lets the agents reuse the slots taken so far.
    pub fn publish(&self) {
        self.header()
            .tail
            .0
            .store(self.cursor.get(), Ordering::Release);
    }

    /// Takes the next event if it is complete. Does not wait.
    pub fn next_event(&self) -> Option<RawEvent> {
        // Only the slot's commit word says whether the event is there:
        // reading `head` here would pull its cache line away from the
        // program's threads on every event.
        let tail = self.tail();
        let s = self.slot(tail);
        // SAFETY: the slot lies in the ring; its plain fields are read only
        // after `commit` says the agent finished writing them (Acquire).
        unsafe {
            if (*s).commit.load(Ordering::Acquire) != tail + 1 {
                return None;
            }
            let nslots = ((*s).nslots as u64).max(1);
            let len = (*s).data_len as usize;
            let mut data = Vec::with_capacity(len);
            let mut i = 1;
            while data.len() < len {
                let src = self.slot(tail + i) as *const u8;
                let n = (len - data.len()).min(SLOT_DATA);
                data.extend_from_slice(std::slice::from_raw_parts(src, n));
                i += 1;
            }
            let mut ev = RawEvent {
                seq: tail,
                kind: EventKind::from_u16((*s).kind).unwrap_or(EventKind::DataMore),
                process: (*s).process,
                thread: (*s).thread,
                object: (*s).object,
                arg0: (*s).arg0,
                arg1: (*s).arg1,
                result: (*s).result,
                extra: (*s).extra,
                data,
                repeat: 1,
                alt_kind: EventKind::MutexUnlock,
            };
            let mut advance = nslots;
            if (*s).alt_kind != 0 {
                ev.repeat = (*s).arg1.max(1);
                ev.arg1 = 0;
                ev.alt_kind =
                    EventKind::from_u16((*s).alt_kind - 1).unwrap_or(EventKind::MutexUnlock);
                // A lock run spans its events; a run of function or block
                // entries the numbers it reserved (`nslots`).
                if !matches!(ev.kind, EventKind::FuncEntry | EventKind::Block) {
                    advance = ev.repeat;
                }
            }
            self.cursor.set(tail + advance);
            if (tail + advance) / 4096 != tail / 4096 {
                self.publish();
            }
            Some(ev)
        }
    }

    /// Takes the run that a thread has open at the next sequence number,
    /// when the drainer has waited for it long enough: the thread may be
    /// blocked, or dead. Closing it here makes the thread start a new run.
    pub fn take_open_run(&self) -> Option<RawEvent> {
        let tail = self.tail();
        for e in self.threads() {
            let st = e.run.load(Ordering::Acquire);
            if !run::is_open(st) || run::start(st) != tail & run::START_MASK {
                continue;
            }
            // Read the run's description before closing it: once closed,
            // its owner may reuse the fields for its next run.
            let fields = RunFields::read(e);
            if e.run
                .compare_exchange(st, st | run::CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return None; // its owner closed it; the slot comes soon
            }
            return Some(self.run_event(e, st, fields));
        }
        None
    }

    /// The event of run `st` of thread entry `e` (`fields` read before
    /// it was closed), which starts at the next sequence number; the
    /// cursor moves past the numbers the run spans.
    fn run_event(&self, e: &ThreadEntry, st: u64, fields: RunFields) -> RawEvent {
        let tail = self.tail();
        let RunFields {
            kinds,
            object,
            site,
            process,
            thread,
        } = fields;
        let len = run::len(st);
        let kind = EventKind::from_u16(kinds as u16).unwrap_or(EventKind::MutexLock);
        // A lock run spans its events. A run of function or block
        // entries spans the numbers it reserved (`object` holds them:
        // read before the close let its owner reuse the field), and its
        // (address, call site) pairs are copied out before the thread
        // may reuse them.
        // A lock run's events carry its call site (`arg0`).
        let (mut spans, mut object, mut arg0, mut data) = (len, object, site, Vec::new());
        if matches!(kind, EventKind::FuncEntry | EventKind::Block) {
            spans = reprise_abi::code_run_reserved(object);
            let n = (len as usize).min(reprise_abi::CODE_RUN_MAX);
            for i in 0..2 * n {
                data.extend_from_slice(&e.code[i].load(Ordering::Acquire).to_le_bytes());
            }
            object = e.code[0].load(Ordering::Acquire);
            arg0 = e.code[1].load(Ordering::Acquire);
            e.code_read.store(run::start(st) + 1, Ordering::Release);
        }
        self.cursor.set(tail + spans);
        self.publish();
        RawEvent {
            seq: tail,
            kind,
            process,
            thread,
            object,
            arg0,
            arg1: 0,
            result: 0,
            extra: 0,
            data,
            repeat: len,
            alt_kind: EventKind::from_u16((kinds >> 16) as u16).unwrap_or(EventKind::MutexUnlock),
        }
    }

    /// When the next slot stays unwritten during the run: if the thread
    /// that reserved it died before writing it (its process was killed
    /// mid-log), moves past it — returning the run that thread was
    /// closing, or skipping the numbers it reserved (how many: `Skipped`).
    /// `alive(tid)` says whether a thread still exists. Nothing while a
    /// live thread may still write the slot.
    pub fn pass_dead_writer(&self, alive: impl Fn(i32) -> bool) -> Option<DeadWriter> {
        let tail = self.tail();
        let mut dead_reserving = false;
        for e in self.threads() {
            let tid = e.tid.load(Ordering::Acquire);
            // A run that starts at the slot: a live thread's is written when
            // it closes it (or taken open, after RUN_TAKEOVER); a dead
            // thread's that it was closing is taken from its entry.
            let st = e.run.load(Ordering::Acquire);
            if run::len(st) > 0 && run::start(st) == tail & run::START_MASK {
                if alive(tid) || run::is_open(st) {
                    return None;
                }
                let fields = RunFields::read(e);
                return Some(DeadWriter::Run(self.run_event(e, st, fields)));
            }
            let w = e.writing.load(Ordering::Acquire);
            if w == 0 {
                continue;
            }
            if w == reprise_abi::RESERVING {
                // Between taking numbers and recording which: it may own
                // the slot.
                if alive(tid) {
                    return None;
                }
                dead_reserving = true;
                continue;
            }
            let (first, len) = (w - 1, e.writing_len.load(Ordering::Acquire).max(1));
            if (first..first + len).contains(&tail) {
                if alive(tid) {
                    return None;
                }
                self.cursor.set(first + len);
                self.publish();
                return Some(DeadWriter::Skipped(first + len - tail));
            }
        }
        // Nobody alive claims the slot, and a thread died taking numbers.
        if dead_reserving {
            self.cursor.set(tail + 1);
            self.publish();
            return Some(DeadWriter::Skipped(1));
        }
        None
    }

    /// True if the next slot was reserved but never completed, which
    /// happens only when a process died in the middle of logging.
    pub fn stalled(&self) -> bool {
        self.tail() < self.head()
    }

    /// Skips the next slot, reserved by a thread that died (or was
    /// preempted for good) before it wrote its event there: the events
    /// after it are still read. Used only once the program is gone.
    pub fn skip_slot(&self) {
        self.cursor.set(self.tail() + 1);
        self.publish();
    }

    pub fn threads(&self) -> impl Iterator<Item = &ThreadEntry> {
        let h = self.header();
        let n = (h.next_thread_entry.load(Ordering::Acquire) as usize).min(h.threads.len());
        h.threads[..n].iter()
    }

    /// Pids of the processes the agents registered.
    pub fn pids(&self) -> Vec<i32> {
        let h = self.header();
        h.processes
            .iter()
            .map(|p| p.pid.load(Ordering::Acquire))
            .filter(|&p| p > 0)
            .collect()
    }
}

/// Replay mode: the supervisor writes the expected events into the ring.
impl ControlBlock {
    /// The replay state shared with the agents.
    pub fn replay(&self) -> &reprise_abi::ReplayState {
        &self.header().replay
    }

    /// Writes `ev` (data included) at ring position `pos` and commits it;
    /// returns the slots it takes. The caller keeps `pos + slots` within
    /// `turn + ring_slots`.
    pub fn put_event(&self, pos: u64, ev: &reprise_schema::EventRecord) -> u64 {
        let h = self.header();
        let nslots = reprise_abi::slots_for(ev.data.len()) as u64;
        assert!(nslots <= h.ring_slots, "event larger than the ring");
        let mask = h.ring_slots - 1;
        // SAFETY: the slots lie in the ring; the agents read them only
        // after `commit` says they are written (Release below), and never
        // once `turn` has passed them, which is what makes them free here.
        unsafe {
            let ring = self.base.add(h.ring_offset as usize);
            for (i, chunk) in ev.data.chunks(SLOT_DATA).enumerate() {
                let s = ring.add((((pos + 1 + i as u64) & mask) as usize) * SLOT_DATA);
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), s, chunk.len());
            }
            let s = ring.add(((pos & mask) as usize) * SLOT_DATA) as *mut Slot;
            // Fields not set below are zero (the slot may have held data).
            std::ptr::write_bytes((s as *mut u8).add(8), 0, reprise_abi::SLOT_SIZE - 8);
            (*s).kind = ev.kind as u16;
            (*s).nslots = nslots.min(u16::MAX as u64) as u16;
            (*s).process = ev.process;
            (*s).thread = ev.thread;
            (*s).data_len = ev.data.len() as u32;
            (*s).object = ev.object;
            (*s).arg0 = ev.arg0;
            (*s).arg1 = ev.arg1;
            (*s).result = ev.result;
            (*s).extra = ev.extra;
            (*s).commit.store(pos + 1, Ordering::Release);
        }
        nslots
    }

    /// Wakes the agents waiting for a change of the replay state.
    pub fn wake_replay(&self) {
        let r = self.replay();
        r.epoch.fetch_add(1, Ordering::AcqRel);
        // SAFETY: FUTEX_WAKE on a word of the shared mapping.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                r.epoch.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                0usize,
                0usize,
                0usize,
            );
        }
    }
}
