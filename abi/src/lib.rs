//! The shared-memory contract between the reprise supervisor and the agent
//! (`preload/`) that runs inside every traced process.
//!
//! The supervisor creates one shared file, the *control block*, and passes
//! its path to the agent in [`ENV_CONTROL`]. The file starts with a
//! [`ControlHeader`] and is followed by a ring of [`Slot`]s.
//!
//! Recording: each sketch event takes its global sequence number with one
//! `fetch_add` on [`ControlHeader::head`]; the number *is* the ring position,
//! so the global order costs no extra synchronisation. Events that carry
//! bytes (the memory a `read` wrote, output) reserve `1 + n` consecutive
//! slots, the bytes filling the `n` continuation slots. The supervisor drains
//! the ring in sequence order and advances [`ControlHeader::tail`].
//!
//! Everything here is `#[repr(C)]`, fixed-size and free of pointers, because
//! it is shared between processes (and between a 64-bit supervisor and the
//! agent built from the same source).
#![no_std]

use core::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64};

pub mod observe;

/// Environment variable holding the path of the control block.
/// The agent's page of untrapped syscall stubs (`mov`s, `syscall`,
/// `ret`): a thread the agent keeps waiting is stopped in it, one return
/// address below its caller's frame.
pub const SYSCALL_PAGE: u64 = 0x7000_0000;

/// The auxiliary vector type under which the recorder keeps the vDSO's
/// address when it hides the vDSO from the program at `sys` (the type
/// `AT_SYSINFO_EHDR` would have had): the dynamic loader ignores types it
/// does not know, and the agent finds the vDSO's clock functions there.
pub const AT_REPRISE_VDSO: u64 = 0x7270_7276;

pub const ENV_CONTROL: &str = "REPRISE_CONTROL";
/// Environment variable the supervisor sets to the agent's own path, so a
/// program that clears `LD_PRELOAD` can be diagnosed.
pub const ENV_AGENT: &str = "REPRISE_AGENT";

pub const MAGIC: u64 = u64::from_le_bytes(*b"REPRISE1");
/// Bumped whenever a layout below changes.
pub const ABI_VERSION: u32 = 18;

pub const SLOT_SIZE: usize = 64;
/// Bytes of payload in one continuation slot.
pub const SLOT_DATA: usize = SLOT_SIZE;
/// Largest number of bytes one event carries; larger writes are split into
/// [`EventKind::DataMore`] events that follow it.
pub const MAX_EVENT_DATA: usize = 256 * 1024;

pub const MAX_PROCESSES: usize = 64;
pub const MAX_THREADS: usize = 1024;
/// Locks one thread may hold at once and still be tracked for deadlock
/// reports.
pub const MAX_HELD: usize = 8;
pub const CRASH_STACK_BYTES: usize = 128 * 1024;
pub const CRASH_MAPS_BYTES: usize = 64 * 1024;
pub const ASSERT_TEXT_BYTES: usize = 1024;
/// Bytes of each output stream kept verbatim in the trace; the rest is
/// only counted and digested.
pub const OUTPUT_KEEP_BYTES: u64 = 1 << 20;

/// What the agent does in this process.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Record = 1,
    Replay = 2,
}

/// How much is recorded (the trace's sketch level).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Sync = 0,
    Sys = 1,
    /// + the entries of the program's functions (`-finstrument-functions`).
    Func = 2,
    /// + the program's basic blocks (`-fsanitize-coverage=trace-pc`).
    Bb = 3,
}

impl Level {
    pub fn from_u32(v: u32) -> Level {
        match v {
            0 => Level::Sync,
            1 => Level::Sys,
            2 => Level::Func,
            _ => Level::Bb,
        }
    }
}

/// The kind of one sketch event. The numbering is part of the ABI and
/// matches the `EventKind` enum of `schema/trace.capnp`.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    MutexLock = 0,
    MutexTrylock = 1,
    MutexUnlock = 2,
    /// `pthread_cond_wait` / `timedwait` is about to release its mutex.
    CondWait = 3,
    /// ... and has reacquired it (result: 0 or ETIMEDOUT).
    CondWake = 4,
    CondSignal = 5,
    CondBroadcast = 6,
    RwRdlock = 7,
    RwWrlock = 8,
    RwTryrdlock = 9,
    RwTrywrlock = 10,
    RwUnlock = 11,
    SemWait = 12,
    SemTrywait = 13,
    SemPost = 14,
    BarrierWait = 15,
    SpinLock = 16,
    SpinTrylock = 17,
    SpinUnlock = 18,
    Once = 19,
    /// Parent side of `pthread_create`: `arg0` is the new thread's index.
    ThreadCreate = 20,
    /// First event of a new thread; `extra` is its kernel tid.
    ThreadStart = 21,
    ThreadExit = 22,
    /// `arg0` is the joined thread's index.
    ThreadJoin = 23,
    /// Parent side of `fork`: `arg0` is the child's process index.
    Fork = 24,
    /// First event of a process; `extra` is its pid, `arg0` its parent's index.
    ProcessStart = 25,
    /// A successful `execve` is about to happen (logged before the call).
    Exec = 26,
    /// A system call: `object` is its number, `arg0`, `arg1` and `extra` its
    /// first three arguments (for `mmap`, `extra` is `prot << 32 | flags`),
    /// `result` its return value, data the memory it wrote.
    Syscall = 27,
    /// Continuation of the previous event's data.
    DataMore = 28,
    /// A signal delivered to the thread (`object` = signal number).
    Signal = 29,
    /// `exit`/`exit_group` called or `main` returned (`result` = status).
    ProcessExit = 30,
    MutexTimedlock = 31,
    /// A function of the program entered (`func` sketch): `object` is its
    /// address, `arg0` the call site.
    FuncEntry = 32,
    /// A basic block of the program entered (`bb` sketch): `object` is its
    /// address (the instrumentation's call in it); in a `bb-N` sketch,
    /// every N-th block of the thread.
    Block = 33,
}

impl EventKind {
    pub const ALL: [EventKind; 34] = [
        EventKind::MutexLock,
        EventKind::MutexTrylock,
        EventKind::MutexUnlock,
        EventKind::CondWait,
        EventKind::CondWake,
        EventKind::CondSignal,
        EventKind::CondBroadcast,
        EventKind::RwRdlock,
        EventKind::RwWrlock,
        EventKind::RwTryrdlock,
        EventKind::RwTrywrlock,
        EventKind::RwUnlock,
        EventKind::SemWait,
        EventKind::SemTrywait,
        EventKind::SemPost,
        EventKind::BarrierWait,
        EventKind::SpinLock,
        EventKind::SpinTrylock,
        EventKind::SpinUnlock,
        EventKind::Once,
        EventKind::ThreadCreate,
        EventKind::ThreadStart,
        EventKind::ThreadExit,
        EventKind::ThreadJoin,
        EventKind::Fork,
        EventKind::ProcessStart,
        EventKind::Exec,
        EventKind::Syscall,
        EventKind::DataMore,
        EventKind::Signal,
        EventKind::ProcessExit,
        EventKind::MutexTimedlock,
        EventKind::FuncEntry,
        EventKind::Block,
    ];

    pub fn from_u16(v: u16) -> Option<EventKind> {
        EventKind::ALL.get(v as usize).copied()
    }

    /// The name a user sees, as in the pthread API where there is one.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::MutexLock => "pthread_mutex_lock",
            EventKind::MutexTrylock => "pthread_mutex_trylock",
            EventKind::MutexTimedlock => "pthread_mutex_timedlock",
            EventKind::MutexUnlock => "pthread_mutex_unlock",
            EventKind::CondWait => "pthread_cond_wait",
            EventKind::CondWake => "pthread_cond_wait(return)",
            EventKind::CondSignal => "pthread_cond_signal",
            EventKind::CondBroadcast => "pthread_cond_broadcast",
            EventKind::RwRdlock => "pthread_rwlock_rdlock",
            EventKind::RwWrlock => "pthread_rwlock_wrlock",
            EventKind::RwTryrdlock => "pthread_rwlock_tryrdlock",
            EventKind::RwTrywrlock => "pthread_rwlock_trywrlock",
            EventKind::RwUnlock => "pthread_rwlock_unlock",
            EventKind::SemWait => "sem_wait",
            EventKind::SemTrywait => "sem_trywait",
            EventKind::SemPost => "sem_post",
            EventKind::BarrierWait => "pthread_barrier_wait",
            EventKind::SpinLock => "pthread_spin_lock",
            EventKind::SpinTrylock => "pthread_spin_trylock",
            EventKind::SpinUnlock => "pthread_spin_unlock",
            EventKind::Once => "pthread_once",
            EventKind::ThreadCreate => "pthread_create",
            EventKind::ThreadStart => "thread_start",
            EventKind::ThreadExit => "thread_exit",
            EventKind::ThreadJoin => "pthread_join",
            EventKind::Fork => "fork",
            EventKind::ProcessStart => "process_start",
            EventKind::Exec => "execve",
            EventKind::Syscall => "syscall",
            EventKind::DataMore => "data",
            EventKind::Signal => "signal",
            EventKind::ProcessExit => "exit",
            EventKind::FuncEntry => "function_entry",
            EventKind::Block => "block",
        }
    }

    /// Events that order threads against each other (the `sync` sketch).
    pub fn is_sync(self) -> bool {
        !matches!(
            self,
            EventKind::Syscall
                | EventKind::DataMore
                | EventKind::Signal
                | EventKind::FuncEntry
                | EventKind::Block
        )
    }

    /// Of those, the operations on objects the threads share (locks,
    /// condition variables, semaphores, barriers): not a thread's or a
    /// process's lifetime, nor `pthread_once` (libc calls it for itself
    /// in most programs). A program with threads and none of these
    /// synchronises some way the sketch does not see.
    pub fn orders_threads(self) -> bool {
        self.is_sync()
            && !matches!(
                self,
                EventKind::ThreadCreate
                    | EventKind::ThreadStart
                    | EventKind::ThreadExit
                    | EventKind::ThreadJoin
                    | EventKind::Fork
                    | EventKind::ProcessStart
                    | EventKind::Exec
                    | EventKind::ProcessExit
                    | EventKind::Once
            )
    }
}

/// One 64-byte ring slot. A header slot describes an event; the `nslots - 1`
/// slots after it (modulo the ring size) hold its data bytes.
#[repr(C, align(64))]
pub struct Slot {
    /// `seq + 1` once the event (header and data) is fully written.
    pub commit: AtomicU64,
    pub kind: u16,
    /// Header plus continuation slots.
    pub nslots: u16,
    /// Logical process index (0 = the program reprise started).
    pub process: u16,
    /// 0 for one event. Otherwise the slot holds a *run*: `arg1` events at
    /// `seq, seq+1, ...`, all of this thread on `object`, their kinds
    /// alternating `kind` and `alt_kind - 1`, results 0 (uncontended
    /// lock/unlock pairs, see [`ThreadEntry::run`]).
    pub alt_kind: u16,
    /// Logical thread index within the process (0 = main thread).
    pub thread: u32,
    pub data_len: u32,
    /// Synchronisation object address, or syscall number.
    pub object: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub result: i64,
    pub extra: u64,
}

const _: () = assert!(core::mem::size_of::<Slot>() == SLOT_SIZE);

/// One traced process, as registered by its agent.
#[repr(C)]
pub struct ProcessEntry {
    /// 0 when the entry is free.
    pub pid: AtomicI32,
    /// Index of the parent process, or `u32::MAX` for the first.
    pub parent: AtomicU32,
    /// Threads created in this process so far (the next thread index).
    pub next_thread: AtomicU32,
    pub exited: AtomicU32,
}

/// Per-thread state the supervisor reads when the program hangs. Aligned
/// so that two threads' entries never share a cache line: each lock
/// operation writes its own entry.
#[repr(C, align(128))]
pub struct ThreadEntry {
    /// Kernel tid; 0 when free.
    pub tid: AtomicI32,
    pub process: AtomicU32,
    pub thread: AtomicU32,
    /// 1 while the thread is inside the program, 2 once it exited.
    pub state: AtomicU32,
    /// The object the thread is blocked on (0 = none) and how.
    pub waiting_on: AtomicU64,
    pub wait_kind: AtomicU32,
    pub held_count: AtomicU32,
    /// Mutexes, rwlocks (write side) and spinlocks currently held.
    pub held: [AtomicU64; MAX_HELD],
    /// The thread's open run, see [`run`]: consecutive lock/unlock events
    /// of this thread on one object are counted here instead of taking a
    /// ring slot each. Written by the thread; closed by the thread or, when
    /// the drainer waits for it too long, by the supervisor.
    pub run: AtomicU64,
    /// `kind | alt_kind << 16` of the open run.
    pub run_kinds: AtomicU32,
    pub run_object: AtomicU64,
    /// Where the program called the run's acquiring operation (its
    /// return address; every lock of a run has this one), 0 if unknown.
    pub run_site: AtomicU64,
    /// A run of function or block entries (`func`, `bb`) keeps each entry's
    /// (address, call site) here, [`CODE_RUN_MAX`] at most; whoever closes
    /// the run copies them out.
    pub code: [AtomicU64; 2 * CODE_RUN_MAX],
    /// 1 + the first sequence number (its low bits, as [`run::start`]) of
    /// the last code run whose entries were copied out: the thread waits
    /// for it before it reuses `code` after the supervisor closed its run.
    pub code_read: AtomicU64,
    /// The sequence numbers the thread reserved and has not written yet,
    /// so that the drainer can skip them if the thread dies first (a
    /// process killed by SIGKILL mid-log): `first + 1`, or
    /// [`RESERVING`] from just before it asks for numbers until it knows
    /// them; 0: none.
    pub writing: AtomicU64,
    /// How many sequence numbers from `writing - 1` the thread reserved.
    pub writing_len: AtomicU64,
}

/// [`ThreadEntry::writing`] while the thread is taking sequence numbers.
pub const RESERVING: u64 = u64::MAX;

/// Entries at most in one run of function or block entries.
pub const CODE_RUN_MAX: usize = 32;

/// The sequence numbers a run of function or block entries reserved, from
/// its thread's [`ThreadEntry::run_object`] (where such a run keeps it).
pub fn code_run_reserved(run_object: u64) -> u64 {
    run_object.clamp(1, CODE_RUN_MAX as u64)
}

/// The encoding of [`ThreadEntry::run`]: first sequence number, length,
/// and whether it is closed (taken by whoever closed it).
pub mod run {
    pub const LEN_BITS: u32 = 24;
    pub const MAX_LEN: u64 = (1 << LEN_BITS) - 1;
    pub const CLOSED: u64 = 1 << 63;
    /// Runs keep the low 39 bits of their first sequence number.
    pub const START_MASK: u64 = (1 << (63 - LEN_BITS)) - 1;

    pub const fn pack(start: u64, len: u64) -> u64 {
        ((start & START_MASK) << LEN_BITS) | len
    }
    pub const fn start(v: u64) -> u64 {
        (v >> LEN_BITS) & START_MASK
    }
    pub const fn len(v: u64) -> u64 {
        v & MAX_LEN
    }
    /// Open: not closed and not empty.
    pub const fn is_open(v: u64) -> bool {
        v & CLOSED == 0 && len(v) > 0
    }
}

/// Written by the agent of the process that received a fatal signal.
#[repr(C)]
pub struct CrashInfo {
    /// 0 = none, 1 = being written, 2 = complete.
    pub state: AtomicU32,
    pub signo: i32,
    pub code: i32,
    pub process: u32,
    pub thread: u32,
    pub tid: i32,
    pub fault_addr: u64,
    /// rax rbx rcx rdx rsi rdi rbp rsp r8..r15 rip eflags, as in
    /// [`REG_NAMES`].
    pub regs: [u64; 18],
    /// Address of the first byte of `stack` (the signal-time `rsp`).
    pub stack_base: u64,
    pub stack_len: u64,
    pub maps_len: u64,
    pub stack: [u8; CRASH_STACK_BYTES],
    /// `/proc/self/maps` at the time of the crash.
    pub maps: [u8; CRASH_MAPS_BYTES],
}

pub const REG_NAMES: [&str; 18] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "eflags",
];
pub const REG_RSP: usize = 7;
pub const REG_RBP: usize = 6;
pub const REG_RIP: usize = 16;

/// Written by the agent when `assert` fails (`__assert_fail`).
#[repr(C)]
pub struct AssertInfo {
    pub state: AtomicU32,
    pub process: u32,
    pub thread: u32,
    pub len: u32,
    /// [`replay::DIVERGED_ORDER`] or [`replay::DIVERGED_MISSING_FILE`].
    pub kind: u32,
    pub text: [u8; ASSERT_TEXT_BYTES],
}

/// Byte counts and an FNV-1a digest of what the program wrote to its
/// stdout (index 0) and stderr (index 1). The bytes themselves, up to
/// [`OUTPUT_KEEP_BYTES`], travel as `write` syscall events.
#[repr(C)]
pub struct OutputInfo {
    pub len: [AtomicU64; 2],
}

#[repr(C, align(64))]
pub struct CacheLine<T>(pub T);

/// The start of the control block.
#[repr(C)]
pub struct ControlHeader {
    pub magic: u64,
    pub abi_version: u32,
    pub mode: u32,
    pub level: u32,
    /// Set by the supervisor when the agent must stop taking new events
    /// (the trace is being finished).
    pub stopping: AtomicU32,
    /// `bb-N` sketches: a thread logs every N-th block (1: every block).
    pub block_period: u32,
    /// `record --chaos`: nonzero when each thread pauses at random
    /// points of its computation (the agent's chaos.rs).
    pub chaos: u32,
    /// Number of slots in the ring; a power of two.
    pub ring_slots: u64,
    /// Byte offset of the ring from the start of the control block.
    pub ring_offset: u64,
    /// Next sequence number to hand out.
    pub head: CacheLine<AtomicU64>,
    /// Everything below this sequence number has been drained.
    pub tail: CacheLine<AtomicU64>,
    /// Events the agent had to drop (ring overflow while stopping).
    pub dropped: AtomicU64,
    pub next_process: AtomicU32,
    pub next_thread_entry: AtomicU32,
    /// The supervisor's pid: a process of the program that finds it gone
    /// (reprise was killed) ends itself instead of waiting for a drain.
    pub supervisor: AtomicI32,
    pub processes: [ProcessEntry; MAX_PROCESSES],
    pub threads: [ThreadEntry; MAX_THREADS],
    pub output: OutputInfo,
    pub assert_info: AssertInfo,
    pub crash: CrashInfo,
    /// Replay mode only: the baton and the expected order (see [`replay`]).
    pub replay: ReplayState,
}

/// Total size of a control block with `ring_slots` slots.
pub const fn control_size(ring_slots: u64) -> usize {
    ring_offset() + ring_slots as usize * SLOT_SIZE
}

/// The ring starts on the first page boundary after the header.
pub const fn ring_offset() -> usize {
    let h = core::mem::size_of::<ControlHeader>();
    (h + 4095) & !4095
}

/// Number of slots an event carrying `data_len` bytes occupies.
pub const fn slots_for(data_len: usize) -> usize {
    1 + data_len.div_ceil(SLOT_DATA)
}

/// Replay mode: the supervisor writes the trace's events into the ring (at
/// positions of its own, each event's data in the slots after it, data of
/// `DataMore` continuations merged into their event) and the agents take
/// them in order. [`ReplayState::turn`] is the ring position of the next
/// expected event. One thread at a time holds the baton
/// ([`ReplayState::baton`], a [`replay::key`]); a thread reaching a sketch
/// event waits until it holds the baton and the event at `turn` is its own.
pub mod replay {
    /// Thread states in [`super::ReplayThread::state`].
    pub const FREE: u32 = 0;
    /// Holds the baton, running its code between two events.
    pub const RUNNING: u32 = 1;
    /// Finished an event; waits for the baton to run on to its next one.
    pub const PENDING: u32 = 2;
    /// Waits at its next event.
    pub const WAITING: u32 = 3;
    /// Performing its event (holds the baton, `turn` is its event).
    pub const IN_EVENT: u32 = 4;
    /// Left the schedule: exited, or blocked in an operation that is not
    /// ordered (a barrier, past the end of the recording).
    pub const DETACHED: u32 = 5;
    /// Stopped before an access until another thread's access (a flip).
    pub const HELD: u32 = 6;

    /// The agent's preemption signal is `SIGRTMAX - this`: its timer's
    /// under `Policy::Random { preempt: true }`, and the supervisor's nudge
    /// of a thread that computes too long without an event.
    pub const PREEMPT_SIGNAL_FROM_MAX: i32 = 3;

    /// No checkpoint is being taken.
    pub const CKPT_IDLE: u32 = 0;
    /// The paused thread gathers the other threads' contexts.
    pub const CKPT_GATHER: u32 = 1;
    /// Why a checkpoint failed: a thread is blocked outside the schedule.
    pub const CKPT_THREAD_OUTSIDE: u32 = 100_000;

    /// How the agent picks the next thread to run among those ready: one
    /// word in [`super::ReplayState::strategy`], written with
    /// [`Policy::encode`] by the supervisor, read with [`Policy::decode`]
    /// by the agent (the only two places that know its bits).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Policy {
        /// The owner of the next recorded event first (a thread runs its
        /// code up to an event as late as it can).
        Owner,
        /// The thread that just finished an event runs on to its next one
        /// if it can, else the owner of the next event.
        Stay,
        /// Seeded random: the thread that just finished an event keeps
        /// running except with probability `switch / 65536`; `preempt`
        /// also preempts a running thread between two events after a
        /// random time slice (a timer signal; not deterministic).
        Random { switch: u16, preempt: bool },
    }

    const POLICY_RANDOM: u32 = 1;
    const POLICY_STAY: u32 = 2;
    const POLICY_PREEMPT: u32 = 0x8000;

    impl Policy {
        pub const fn encode(self) -> u32 {
            match self {
                Policy::Owner => 0,
                Policy::Stay => POLICY_STAY,
                Policy::Random { switch, preempt } => {
                    POLICY_RANDOM
                        | if preempt { POLICY_PREEMPT } else { 0 }
                        | ((switch as u32) << 16)
                }
            }
        }

        pub const fn decode(word: u32) -> Policy {
            match word & 0x7fff {
                POLICY_RANDOM => Policy::Random {
                    switch: (word >> 16) as u16,
                    preempt: word & POLICY_PREEMPT != 0,
                },
                POLICY_STAY => Policy::Stay,
                _ => Policy::Owner,
            }
        }
    }

    /// Syscall numbers (x86-64) whose recorded events are not replayed in
    /// order: they run for real (mmap, pid queries).
    pub const UNORDERED_SYSCALLS: [u64; 4] = [9, 39, 110, 186];

    /// Set by the replayer in the ring copy of an `open`/`openat` event's
    /// `extra` (its mode or flags, 32 bits): the file it opened may have
    /// been created by another thread's `O_CREAT` open that the trace logs
    /// after it. Events are logged when their syscall returns, so a create
    /// still in the kernel can be seen by an open logged first; in replay,
    /// where the creator runs at its logged turn, the file is not there yet.
    pub const OPEN_OF_FILE_CREATED_LATER: u64 = 1 << 63;

    /// [`DivergenceInfo::kind`]: the program did something else than the
    /// recording at this point (another operation, other output).
    pub const DIVERGED_ORDER: u32 = 0;
    /// [`DivergenceInfo::kind`]: a file the recording opened is missing at
    /// replay time: no schedule can help, the user must restore it.
    pub const DIVERGED_MISSING_FILE: u32 = 1;
    /// [`DivergenceInfo::kind`]: a thread wrote to stderr where the
    /// recording did something else (often a failure's message: an
    /// `assert`, glibc's heap checks). The thread runs on, unordered, for a
    /// short grace; the divergence stands unless the program then fails as
    /// recorded. (Other stdout is another result: a divergence at once.)
    pub const DIVERGED_STDERR: u32 = 2;

    /// [`ReplayState::recorded_events`]: process exits are events.
    pub const RECORDED_PROCESS_EXIT: u32 = 1;
    /// [`ReplayState::recorded_events`]: file opens and queries are events.
    pub const RECORDED_FILES: u32 = 2;
    /// [`ReplayState::recorded_events`]: network and event syscalls are
    /// events, and recorded signals are delivered.
    pub const RECORDED_NET: u32 = 4;
    /// [`ReplayState::recorded_events`]: libc's reads of the machine's
    /// description are not events (the agent's `ambient` module).
    pub const AMBIENT_UNORDERED: u32 = 8;

    /// The baton's name for thread `thread` of process `process`; 0 is
    /// nobody.
    pub const fn key(process: u32, thread: u32) -> u32 {
        ((process & 0x7ff) << 20 | (thread & 0xf_ffff)) + 1
    }
    pub const fn key_process(key: u32) -> u32 {
        (key - 1) >> 20
    }
    pub const fn key_thread(key: u32) -> u32 {
        (key - 1) & 0xf_ffff
    }
}

pub const DIVERGENCE_TEXT_BYTES: usize = 512;
pub const MAX_RECORDED_IDS: usize = 256;

/// One thread in a replay, indexed like [`ControlHeader::threads`].
#[repr(C)]
pub struct ReplayThread {
    pub key: AtomicU32,
    pub state: AtomicU32,
}

/// Why a replay attempt stopped following the recording; written by the
/// agent that noticed, which then kills the program.
#[repr(C)]
pub struct DivergenceInfo {
    /// 0 = none, 1 = being written, 2 = complete.
    pub state: AtomicU32,
    pub process: u32,
    pub thread: u32,
    pub len: u32,
    /// [`replay::DIVERGED_ORDER`], [`replay::DIVERGED_MISSING_FILE`] or
    /// [`replay::DIVERGED_STDERR`].
    pub kind: u32,
    /// Ring position of the expected event.
    pub pos: u64,
    pub text: [u8; DIVERGENCE_TEXT_BYTES],
}

/// The replay's shared state (see [`replay`]).
#[repr(C)]
pub struct ReplayState {
    /// Ring position of the next expected event.
    pub turn: CacheLine<AtomicU64>,
    /// A short spin lock taken around every change of the baton, `turn`
    /// and the thread states (never held while waiting).
    pub lock: AtomicU32,
    /// Futex word: bumped (and waiters woken) at every change of `turn`,
    /// `baton` or a thread's state.
    pub epoch: AtomicU32,
    /// Key of the thread allowed to run; 0 = nobody yet.
    pub baton: AtomicU32,
    /// Ring position after the last expected event; `u64::MAX` while the
    /// supervisor is still filling the ring.
    pub end: AtomicU64,
    /// How the next runner is chosen ([`replay::Policy`], encoded).
    pub strategy: AtomicU32,
    /// Key of the one thread that runs against the policy (0: none): under
    /// `Stay` it runs its code as late as it can, under `Owner` as early.
    pub odd_thread: AtomicU32,
    /// Milliseconds a runner may sleep in the kernel, outside any event,
    /// before the baton is taken from it.
    pub revoke_ms: AtomicU32,
    /// PRNG state (splitmix64) of the strategy.
    pub rng: AtomicU64,
    /// Choices made so far (with more than one candidate).
    pub decisions: AtomicU64,
    /// Output bytes compared so far, per stream (stdout, stderr).
    pub output_pos: [AtomicU64; 2],
    /// Events whose object differed from the recorded one (heap addresses
    /// may move; reported, not a divergence), and the first one's position.
    pub object_mismatches: AtomicU64,
    pub first_mismatch: AtomicU64,
    /// The first lock taken from another call site than recorded (its
    /// ring position; `u64::MAX`: none) and its thread's key: where the
    /// thread's path left the recorded one, often long before it diverges.
    pub first_site_mismatch: AtomicU64,
    pub first_site_thread: AtomicU32,
    pub divergence: DivergenceInfo,
    /// Writes whose bytes differed from the recorded output only where
    /// the recording printed one of the recorded pids or tids: accepted,
    /// counted.
    pub output_numbers: AtomicU64,
    /// The pids and tids of the recorded run (0: unused), set by the
    /// supervisor: a number the recording printed that is one of these
    /// may differ in replay (pids are not replayed).
    pub recorded_ids: [AtomicU32; MAX_RECORDED_IDS],
    /// stdout from this byte on is not compared with the recorded output:
    /// the recording printed a wrong line there (a wrong-output failure),
    /// which an attempt may print differently. `u64::MAX`: compare all.
    pub stdout_free_from: AtomicU64,
    /// What the trace recorded beyond its level (the schema's
    /// `RecordedEvents` bits): a trace of an older version has no exit
    /// or file events, and the agent must not wait for them.
    pub recorded_events: AtomicU32,
    /// The debugger's stop: the thread about to perform the event at this
    /// ring position (or later) waits there instead, with every other
    /// thread waiting for the baton. `u64::MAX`: never (attempts).
    pub pause_at: AtomicU64,
    /// Ring position + 1 of the event a thread is paused before (0: none
    /// paused), written by that thread once it waits.
    pub paused: AtomicU64,
    /// The debugger asks the paused thread for a checkpoint (1).
    pub ckpt_request: AtomicU32,
    /// [`replay::CKPT_IDLE`] or [`replay::CKPT_GATHER`] (every waiting
    /// thread saves its context).
    pub ckpt_phase: AtomicU32,
    /// Threads that saved their context so far, and how many must.
    pub ckpt_saved: AtomicU32,
    pub ckpt_others: AtomicU32,
    /// Bumped at every checkpoint: a thread's saved context counts only
    /// if it was saved for the current one.
    pub ckpt_generation: AtomicU32,
    /// The zygote's pid, or minus a [`replay::CKPT_THREAD_OUTSIDE`]-style
    /// reason; 0 until the checkpoint is taken.
    pub ckpt_result: AtomicI64,
    /// Where the zygote's mailbox is (the same address in every copy).
    pub ckpt_mailbox: AtomicU64,
    /// Written last by a copy resumed from a checkpoint: its pid.
    pub restored_pid: AtomicI32,
    /// Set by a new zygote once its copies of the shared blocks are
    /// private: until then the paused thread must not let the run go on.
    pub ckpt_zygote_ready: AtomicU32,
    /// Times a thread holding the baton lost it while asleep in a system
    /// call outside any event (the run from there is not fully decided by
    /// the schedule), and the ring position + 1 of the first (0: none).
    pub revocations: AtomicU64,
    pub first_revocation: AtomicU64,
    /// Each process's pid in the recording, by process index (0: none):
    /// a recorded `wait4` names its child by it, and the replay gives the
    /// program the pid its own `fork` returned for that child.
    pub recorded_pids: [AtomicI32; MAX_PROCESSES],
    /// Verdicts of the nudge's handler that the baton holder polls memory
    /// (it gave the baton away), and the key of the last such thread: a
    /// run whose only activity for a while is a poll is stuck.
    pub polls: AtomicU64,
    pub poller: AtomicU32,
    pub threads: [ReplayThread; MAX_THREADS],
}

#[cfg(test)]
mod kind_tests {
    use super::EventKind;

    /// The operations on shared objects: 20 kinds, every one a lock,
    /// condition variable, semaphore, barrier or spinlock operation.
    #[test]
    fn the_kinds_that_order_threads_are_the_shared_object_operations() {
        let ordering = || EventKind::ALL.iter().filter(|k| k.orders_threads());
        assert_eq!(ordering().count(), 20);
        for k in ordering() {
            let n = k.name();
            let shared = [
                "pthread_mutex",
                "pthread_cond",
                "pthread_rwlock",
                "pthread_spin",
                "pthread_barrier",
                "sem_",
            ];
            assert!(shared.iter().any(|p| n.starts_with(p)), "{n}");
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use super::replay::Policy;

    #[test]
    fn every_policy_decodes_to_itself() {
        for p in [
            Policy::Owner,
            Policy::Stay,
            Policy::Random {
                switch: 64,
                preempt: false,
            },
            Policy::Random {
                switch: 32768,
                preempt: true,
            },
        ] {
            assert_eq!(Policy::decode(p.encode()), p);
        }
    }
}

/// The `func` sketch of a program built without `-finstrument-functions`:
/// the supervisor plans a patch of each of the executable's function
/// entries (a jump to a stub that calls the agent, then runs the entry's
/// displaced instructions and jumps back), and the agent applies it at
/// start-up, before the program's own code runs. The plan is a file named
/// by [`func_plan::ENV`]: a [`func_plan::Header`], the patches, then the
/// stubs' code, to be mapped at `Header::area`.
pub mod func_plan {
    pub const MAGIC: u64 = u64::from_le_bytes(*b"funcplan");
    /// The environment variable that names the plan file.
    pub const ENV: &str = "REPRISE_FUNC_PLAN";
    /// Longest run of displaced instructions at an entry.
    pub const MAX_PATCH: usize = 24;
    /// The area's first 8 bytes: where the agent writes the address of its
    /// entry hook, which every stub jumps to through it.
    pub const HOOK_SLOT: u64 = 0;

    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct Header {
        pub magic: u64,
        /// The program's entry point as loaded (`AT_ENTRY`): the plan is
        /// for this executable only (an `exec`'d one leaves it alone).
        pub entry_point: u64,
        /// Where the stubs' area is mapped, and its length.
        pub area: u64,
        pub area_len: u64,
        /// File offset of the area's bytes.
        pub area_offset: u64,
        /// Number of patched functions, and the file offset of their
        /// [`Patch`]es (indexed by the number each stub pushes).
        pub count: u64,
        pub patches_offset: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct Patch {
        /// The function's entry address.
        pub entry: u64,
        /// Where its displaced instructions run (then jump back).
        pub cont: u64,
        /// Bytes patched at `entry`.
        pub len: u32,
        pub _pad: u32,
        /// The bytes there before (checked before patching) and after.
        pub original: [u8; MAX_PATCH],
        pub patched: [u8; MAX_PATCH],
    }
}
