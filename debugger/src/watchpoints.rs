//! Hardware watchpoints over a live multithreaded process.
//!
//! A [`Watcher`] ptrace-attaches (`PTRACE_SEIZE` with `PTRACE_O_TRACECLONE`)
//! to every thread of a process and arms up to four write watchpoints in the
//! x86 debug registers DR0–DR3 / DR7 of each thread, new threads included
//! (the kernel does not copy ptrace breakpoints to a clone: each new thread
//! is armed at its first stop). A write to a watched location stops the
//! writing thread with a `SIGTRAP` (`si_code` `TRAP_HWBKPT`, the slot's bit
//! set in DR6) *after* the writing instruction; [`Watcher::run`] then stops
//! every other thread too and returns a [`Hit`].
//!
//! Every other stop is passed on: a signal the program gets (its own
//! `SIGSYS` from a seccomp `RET_TRAP`, `SIGTRAP` from its own `int3`, ...)
//! is re-injected, group-stops are kept with `PTRACE_LISTEN`.
//!
//! ptrace requests are bound to the thread that attached: a `Watcher` is
//! neither `Send` nor `Sync`. Thread stops are polled per thread with
//! `waitpid(tid, __WALL | WNOHANG)`, never `waitpid(-1)`, so other children
//! of the caller (replay attempts) are left alone. When the whole process
//! exits while watched, its exit status is collected here
//! ([`WatchError::Exited`]), not by its parent if the parent is the caller.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;
use reprise_tracee::ProcessMemory;

mod write_pc;
use write_pc::writing_instruction;

/// x86 has four address debug registers.
pub const MAX_WATCHES: usize = 4;
/// How long threads may take to stop after `PTRACE_INTERRUPT`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest sleep between two polls of the threads while they run.
const MAX_IDLE: Duration = Duration::from_millis(1);
const MIN_IDLE: Duration = Duration::from_micros(20);
/// `si_code` of a `SIGTRAP` raised by a hardware breakpoint.
const TRAP_HWBKPT: i32 = 4;
const TRAP_TRACE: i32 = 2;

/// One watched location: writes of `len` bytes (1, 2, 4 or 8, `addr`
/// aligned to it) at `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    pub addr: u64,
    pub len: u8,
}

/// A write to a watched location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The thread that wrote.
    pub tid: i32,
    /// The writing instruction: the one that ends at `after_pc`, found by
    /// decoding backwards. When that is ambiguous, `after_pc` and
    /// `pc_exact` is false.
    pub pc: u64,
    pub pc_exact: bool,
    /// Where the thread stopped (the instruction after the write, or the
    /// same `rep` string instruction when iterations remain).
    pub after_pc: u64,
    /// The index of the watch (as given to attach/set_watches) that fired.
    pub slot: usize,
    /// The thread's registers at the stop, in [`reprise_abi::REG_NAMES`]
    /// order (as `reprise_tracee::ThreadSnapshot`).
    pub regs: [u64; 18],
}

/// Why watching failed. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0} watchpoints asked for, but x86 has only 4 debug registers (DR0-DR3)")]
    TooMany(usize),
    #[error("watchpoint at {addr:#x}: length {len} is not 1, 2, 4 or 8")]
    BadLength { addr: u64, len: u8 },
    #[error("watchpoint at {addr:#x}: the address is not aligned to its length {len}")]
    Unaligned { addr: u64, len: u8 },
    #[error("no process {0}")]
    NoSuchProcess(i32),
    #[error(
        "not allowed to ptrace process {0}: run as its parent, or allow it (kernel.yama.ptrace_scope=0)"
    )]
    Permission(i32),
    #[error("{op} on thread {tid}: {source}")]
    Ptrace {
        op: &'static str,
        tid: i32,
        source: Errno,
    },
    #[error("thread {tid} did not stop within {millis} ms")]
    StopTimeout { tid: i32, millis: u64 },
    #[error("process {0} exited while it was watched")]
    Exited(i32),
}

type Result<T> = std::result::Result<T, WatchError>;

fn ptrace_err(op: &'static str, tid: i32) -> impl FnOnce(Errno) -> WatchError {
    move |source| WatchError::Ptrace { op, tid, source }
}

/// What we know about one traced thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Running (or listening in a group-stop).
    Running,
    /// Announced by its creator's clone event; its first stop not seen yet.
    New,
    /// In a ptrace-stop: resumed with `inject` (0: none), or with
    /// `PTRACE_LISTEN` when it is a group-stop.
    Stopped { inject: i32, group: bool },
    /// ptrace said ESRCH: on its way out, exit status not collected yet.
    Exiting,
}

/// The pid of the process tracing thread `tid` (None: not traced, or
/// unknown).
fn tracer_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("TracerPid:"))?;
    let pid: i32 = line["TracerPid:".len()..].trim().parse().ok()?;
    (pid != 0).then_some(pid)
}

/// One `waitpid` result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Nothing,
    /// Exited or killed, or not ours any more (ECHILD).
    Gone,
    /// A signal-delivery-stop.
    Signal(i32),
    /// A `PTRACE_EVENT_*` stop.
    Ptrace {
        event: i32,
        sig: i32,
    },
}

fn wait_nohang(tid: i32) -> Result<Event> {
    let mut status = 0;
    // SAFETY: waitpid only writes the status into our local.
    let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
    if r == 0 {
        return Ok(Event::Nothing);
    }
    if r < 0 {
        return match Errno::last() {
            Errno::EINTR => Ok(Event::Nothing),
            Errno::ECHILD => Ok(Event::Gone),
            e => Err(WatchError::Ptrace {
                op: "waitpid",
                tid,
                source: e,
            }),
        };
    }
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Ok(Event::Gone);
    }
    if !libc::WIFSTOPPED(status) {
        return Ok(Event::Nothing);
    }
    let sig = libc::WSTOPSIG(status);
    match status >> 16 {
        0 => Ok(Event::Signal(sig)),
        event => Ok(Event::Ptrace { event, sig }),
    }
}

/// `PTRACE_CONT` / `PTRACE_LISTEN` / `PTRACE_DETACH` with a raw signal
/// number (real-time signals included, which nix's `Signal` cannot hold).
fn restart(request: libc::c_uint, tid: i32, sig: i32) -> std::result::Result<(), Errno> {
    // SAFETY: these requests take no pointer: addr is ignored and data is
    // the signal number passed by value.
    let r = unsafe { libc::ptrace(request, tid, 0usize, sig as usize) };
    Errno::result(r).map(drop)
}

fn debugreg_offset(i: usize) -> ptrace::AddressType {
    (std::mem::offset_of!(libc::user, u_debugreg) + 8 * i) as ptrace::AddressType
}

fn write_dr(tid: i32, i: usize, value: u64) -> std::result::Result<(), Errno> {
    ptrace::write_user(
        Pid::from_raw(tid),
        debugreg_offset(i),
        value as libc::c_long,
    )
}

fn read_dr(tid: i32, i: usize) -> std::result::Result<u64, Errno> {
    ptrace::read_user(Pid::from_raw(tid), debugreg_offset(i)).map(|v| v as u64)
}

/// DR7 enabling `watches` as local write watchpoints (RW = 01).
fn dr7_for(watches: &[Watch]) -> u64 {
    let mut dr7 = 0u64;
    for (i, w) in watches.iter().enumerate() {
        let len_bits: u64 = match w.len {
            1 => 0b00,
            2 => 0b01,
            8 => 0b10,
            _ => 0b11,
        };
        dr7 |= 1 << (2 * i);
        dr7 |= 0b01 << (16 + 4 * i);
        dr7 |= len_bits << (18 + 4 * i);
    }
    dr7
}

/// Writes the debug registers of one stopped thread.
fn arm(tid: i32, watches: &[Watch]) -> std::result::Result<(), Errno> {
    write_dr(tid, 7, 0)?;
    for (i, w) in watches.iter().enumerate() {
        write_dr(tid, i, w.addr)?;
    }
    write_dr(tid, 6, 0)?;
    write_dr(tid, 7, dr7_for(watches))
}

fn validate(watches: &[Watch]) -> Result<()> {
    if watches.len() > MAX_WATCHES {
        return Err(WatchError::TooMany(watches.len()));
    }
    for w in watches {
        if !matches!(w.len, 1 | 2 | 4 | 8) {
            return Err(WatchError::BadLength {
                addr: w.addr,
                len: w.len,
            });
        }
        if w.addr % u64::from(w.len) != 0 {
            return Err(WatchError::Unaligned {
                addr: w.addr,
                len: w.len,
            });
        }
    }
    Ok(())
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

fn task_ids(pid: i32) -> Result<Vec<i32>> {
    let rd = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| WatchError::NoSuchProcess(pid))?;
    Ok(rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// Whether `tid` has a `SIGTRAP` pending (not yet delivered).
fn sigtrap_pending(pid: i32, tid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTRAP - 1)) != 0)
}

/// Hardware watchpoints over every thread of one process.
pub struct Watcher {
    pid: i32,
    watches: Vec<Watch>,
    threads: BTreeMap<i32, State>,
    /// Hits reported while the threads were being stopped for another one.
    pending: VecDeque<Hit>,
    mem: ProcessMemory,
    detached: bool,
    /// ptrace requests are bound to the attaching thread.
    _not_send: PhantomData<*const ()>,
}

impl Watcher {
    /// Attaches to every thread of `pid` and arms `watches` (at most 4,
    /// write-only). Returns with every thread stopped; [`Watcher::run`]
    /// resumes them.
    pub fn attach(pid: i32, watches: &[Watch]) -> Result<Watcher> {
        validate(watches)?;
        let mut w = Watcher {
            pid,
            watches: watches.to_vec(),
            threads: BTreeMap::new(),
            pending: VecDeque::new(),
            mem: ProcessMemory::new(pid),
            detached: false,
            _not_send: PhantomData,
        };
        // Threads may be created while we seize: list until nothing new
        // shows up (threads cloned by seized ones are followed anyway).
        // (A thread skipped, exited but not reaped, is tried once.)
        let mut tried = std::collections::BTreeSet::new();
        loop {
            let new: Vec<i32> = task_ids(pid)?
                .into_iter()
                .filter(|t| !w.threads.contains_key(t) && !tried.contains(t))
                .collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                tried.insert(tid);
                w.seize(tid)?;
            }
            w.stop_all()?;
        }
        if w.threads.is_empty() {
            return Err(WatchError::NoSuchProcess(pid));
        }
        w.rearm_stopped()?;
        Ok(w)
    }

    fn seize(&mut self, tid: i32) -> Result<()> {
        match ptrace::seize(Pid::from_raw(tid), ptrace::Options::PTRACE_O_TRACECLONE) {
            Ok(()) => {
                self.threads.insert(tid, State::Running);
                Ok(())
            }
            Err(Errno::ESRCH) => Ok(()),
            // Cloned by a thread seized a moment ago: the kernel attached
            // it to us already (PTRACE_O_TRACECLONE); its first stop is
            // on its way.
            // (ptrace binds a tracee to the tracing thread: /proc shows
            // that thread's id.)
            Err(Errno::EPERM) if tracer_of(tid) == Some(nix::unistd::gettid().as_raw()) => {
                self.threads.entry(tid).or_insert(State::New);
                Ok(())
            }
            // Exited, not reaped yet (a leader that ended before the
            // other threads): nothing to watch there.
            Err(Errno::EPERM) if reprise_tracee::process::exited(tid) => Ok(()),
            Err(Errno::EPERM) => Err(WatchError::Permission(self.pid)),
            Err(e) => Err(ptrace_err("PTRACE_SEIZE", tid)(e)),
        }
    }

    /// The process being watched.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The watches armed now.
    pub fn watches(&self) -> &[Watch] {
        &self.watches
    }

    /// The threads being traced (exiting ones included).
    pub fn threads(&self) -> Vec<i32> {
        self.threads.keys().copied().collect()
    }

    /// Resumes every thread and runs until a watchpoint fires or `stop()`
    /// returns true (asked after each ptrace stop and about every
    /// millisecond). On a hit every thread is left in a ptrace-stop (memory
    /// is consistent; call `run` again to go on). On `None` the threads are
    /// left running, still attached and watched; a write meanwhile stops
    /// its thread until the next `run`, which reports it.
    pub fn run(&mut self, stop: &mut dyn FnMut() -> bool) -> Result<Option<Hit>> {
        if let Some(hit) = self.pending.pop_front() {
            return Ok(Some(hit));
        }
        self.resume_all()?;
        let mut idle = MIN_IDLE;
        loop {
            if self.threads.is_empty() {
                return Err(WatchError::Exited(self.pid));
            }
            let mut stops = 0;
            let tids: Vec<i32> = self.threads.keys().copied().collect();
            for tid in tids {
                let ev = wait_nohang(tid)?;
                if ev == Event::Nothing {
                    continue;
                }
                stops += 1;
                if let Some(hit) = self.handle(tid, ev, false)? {
                    self.stop_all()?;
                    return Ok(Some(hit));
                }
            }
            if stop() {
                return Ok(None);
            }
            if stops > 0 {
                idle = MIN_IDLE;
            } else {
                std::thread::sleep(idle);
                idle = (idle * 2).min(MAX_IDLE);
            }
        }
    }

    /// Arms other watches (e.g. after a pointer changed). Stops every
    /// thread first if they run and leaves them stopped: the next
    /// [`Watcher::run`] resumes them. Hits not yet returned are dropped.
    pub fn set_watches(&mut self, watches: &[Watch]) -> Result<()> {
        validate(watches)?;
        self.stop_all()?;
        self.pending.clear();
        self.watches = watches.to_vec();
        self.rearm_stopped()
    }

    /// Clears the debug registers, detaches from every thread and leaves
    /// them running (a signal they were about to get is delivered).
    pub fn detach(mut self) -> Result<()> {
        self.detached = true;
        self.detach_all()
    }

    fn rearm_stopped(&mut self) -> Result<()> {
        let tids: Vec<i32> = self.threads.keys().copied().collect();
        for tid in tids {
            if let Some(State::Stopped { .. }) = self.threads.get(&tid) {
                match arm(tid, &self.watches) {
                    Ok(()) => {}
                    Err(Errno::ESRCH) => {
                        self.threads.insert(tid, State::Exiting);
                    }
                    Err(e) => return Err(ptrace_err("PTRACE_POKEUSER", tid)(e)),
                }
            }
        }
        Ok(())
    }

    fn resume_all(&mut self) -> Result<()> {
        let tids: Vec<i32> = self.threads.keys().copied().collect();
        for tid in tids {
            if let Some(State::Stopped { inject, group }) = self.threads.get(&tid).copied() {
                self.resume(tid, inject, group)?;
            }
        }
        Ok(())
    }

    fn resume(&mut self, tid: i32, inject: i32, group: bool) -> Result<()> {
        let r = if group {
            restart(libc::PTRACE_LISTEN as libc::c_uint, tid, 0)
        } else {
            restart(libc::PTRACE_CONT as libc::c_uint, tid, inject)
        };
        let state = match r {
            Ok(()) => State::Running,
            Err(Errno::ESRCH) => State::Exiting,
            Err(e) => return Err(ptrace_err("PTRACE_CONT", tid)(e)),
        };
        self.threads.insert(tid, state);
        Ok(())
    }

    /// Handles one stop of `tid`. Running (`stopping` false): resumes the
    /// thread unless it is a hit, which is returned. Stopping: leaves the
    /// thread stopped and queues a hit.
    fn handle(&mut self, tid: i32, ev: Event, stopping: bool) -> Result<Option<Hit>> {
        let was = self.threads.get(&tid).copied();
        let (inject, group) = match ev {
            Event::Nothing => return Ok(None),
            Event::Gone => {
                self.threads.remove(&tid);
                return Ok(None);
            }
            Event::Ptrace { event, sig } => {
                if event == libc::PTRACE_EVENT_CLONE {
                    let child = ptrace::getevent(Pid::from_raw(tid))
                        .map_err(ptrace_err("PTRACE_GETEVENTMSG", tid))?;
                    self.threads.entry(child as i32).or_insert(State::New);
                }
                if was == Some(State::New) {
                    match arm(tid, &self.watches) {
                        Ok(()) | Err(Errno::ESRCH) => {}
                        Err(e) => return Err(ptrace_err("PTRACE_POKEUSER", tid)(e)),
                    }
                }
                (0, event == libc::PTRACE_EVENT_STOP && is_stop_signal(sig))
            }
            Event::Signal(sig) => match self.hit_slot_and_code(tid, sig)? {
                Some((slot, code)) => {
                    // The program's own single-step trap still goes to it.
                    let inject = if code == TRAP_TRACE { sig } else { 0 };
                    self.threads.insert(
                        tid,
                        State::Stopped {
                            inject,
                            group: false,
                        },
                    );
                    let hit = self.make_hit(tid, slot)?;
                    if stopping {
                        self.pending.push_back(hit);
                        return Ok(None);
                    }
                    return Ok(Some(hit));
                }
                None if sig == libc::SIGTRAP && self.stale_trap(tid) => (0, false),
                None => (sig, false),
            },
        };
        if stopping {
            self.threads.insert(tid, State::Stopped { inject, group });
        } else {
            self.resume(tid, inject, group)?;
        }
        Ok(None)
    }

    /// The slot whose watchpoint stopped `tid` (in a signal-delivery-stop
    /// of `sig`): a SIGTRAP with si_code TRAP_HWBKPT and a B0-B3 bit in DR6.
    /// Clears DR6.
    fn hit_slot_and_code(&self, tid: i32, sig: i32) -> Result<Option<(usize, i32)>> {
        let code = match ptrace::getsiginfo(Pid::from_raw(tid)) {
            Ok(info) => info.si_code,
            Err(_) => 0,
        };
        Ok(self.hit_slot(tid, sig)?.map(|slot| (slot, code)))
    }

    fn hit_slot(&self, tid: i32, sig: i32) -> Result<Option<usize>> {
        if sig != libc::SIGTRAP {
            return Ok(None);
        }
        let code = match ptrace::getsiginfo(Pid::from_raw(tid)) {
            Ok(info) => info.si_code,
            Err(Errno::ESRCH) => return Ok(None),
            Err(e) => return Err(ptrace_err("PTRACE_GETSIGINFO", tid)(e)),
        };
        let dr6 = match read_dr(tid, 6) {
            Ok(v) => v,
            Err(Errno::ESRCH) => return Ok(None),
            Err(e) => return Err(ptrace_err("PTRACE_PEEKUSER", tid)(e)),
        };
        if dr6 & 0xf != 0 {
            let _ = write_dr(tid, 6, 0);
        }
        // A write that coincides with the program's own single-step (the
        // agent steps over its access breakpoints with TF) is reported
        // as TRAP_TRACE with our DR6 bit set too: ours and the program's.
        let hit = (code == TRAP_HWBKPT || code == TRAP_TRACE) && dr6 & 0xf != 0;
        let slot = dr6.trailing_zeros() as usize;
        Ok((hit && slot < self.watches.len()).then_some(slot))
    }

    /// A hardware-breakpoint SIGTRAP without a DR6 bit of ours: one raised
    /// by a watch armed before the last `set_watches` (or of a slot no
    /// longer used). Only we set this thread's debug registers, so it is
    /// ours and is not passed on (it would kill the program).
    fn stale_trap(&self, tid: i32) -> bool {
        matches!(ptrace::getsiginfo(Pid::from_raw(tid)), Ok(info) if info.si_code == TRAP_HWBKPT)
    }

    fn make_hit(&self, tid: i32, slot: usize) -> Result<Hit> {
        let r = ptrace::getregs(Pid::from_raw(tid)).map_err(ptrace_err("PTRACE_GETREGS", tid))?;
        let regs = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15, r.rip, r.eflags,
        ];
        let (pc, pc_exact) = writing_instruction(&self.mem, &r, &self.watches[slot]);
        Ok(Hit {
            tid,
            pc,
            pc_exact,
            after_pc: r.rip,
            slot,
            regs,
        })
    }

    /// Interrupts every running thread and waits until each is in a
    /// ptrace-stop (or gone).
    fn stop_all(&mut self) -> Result<()> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut interrupted = Vec::new();
        loop {
            let moving: Vec<i32> = self
                .threads
                .iter()
                .filter(|(_, s)| matches!(s, State::Running | State::New))
                .map(|(&t, _)| t)
                .collect();
            let Some(&first) = moving.first() else {
                return Ok(());
            };
            for &tid in &moving {
                if self.threads[&tid] == State::Running && !interrupted.contains(&tid) {
                    interrupted.push(tid);
                    match ptrace::interrupt(Pid::from_raw(tid)) {
                        Ok(()) => {}
                        Err(Errno::ESRCH) => {
                            self.threads.insert(tid, State::Exiting);
                        }
                        Err(e) => return Err(ptrace_err("PTRACE_INTERRUPT", tid)(e)),
                    }
                }
            }
            let mut stops = 0;
            let polled: Vec<i32> = self
                .threads
                .iter()
                .filter(|(_, s)| !matches!(s, State::Stopped { .. }))
                .map(|(&t, _)| t)
                .collect();
            for tid in polled {
                let ev = wait_nohang(tid)?;
                if ev != Event::Nothing {
                    stops += 1;
                    self.handle(tid, ev, true)?;
                }
            }
            if stops == 0 {
                if Instant::now() > deadline {
                    let millis = STOP_TIMEOUT.as_millis() as u64;
                    return Err(WatchError::StopTimeout { tid: first, millis });
                }
                std::thread::sleep(MIN_IDLE);
            }
        }
    }

    /// A thread stopped by an interrupt may still have one of our SIGTRAPs
    /// queued: let it take it (debug registers cleared) and swallow it, so
    /// that it does not reach the program after the detach.
    fn drain_trap(&mut self, tid: i32) -> Result<()> {
        let Some(State::Stopped {
            inject: 0,
            group: false,
        }) = self.threads.get(&tid).copied()
        else {
            return Ok(());
        };
        if !sigtrap_pending(self.pid, tid)
            || restart(libc::PTRACE_CONT as libc::c_uint, tid, 0).is_err()
        {
            return Ok(());
        }
        self.threads.insert(tid, State::Running);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match wait_nohang(tid)? {
                Event::Nothing if Instant::now() < deadline => std::thread::sleep(MIN_IDLE),
                Event::Nothing => return self.stop_all(),
                Event::Signal(libc::SIGTRAP) if self.stale_trap(tid) => {
                    self.threads.insert(
                        tid,
                        State::Stopped {
                            inject: 0,
                            group: false,
                        },
                    );
                    return Ok(());
                }
                ev => {
                    self.handle(tid, ev, true)?;
                    return self.stop_all();
                }
            }
        }
    }

    fn detach_all(&mut self) -> Result<()> {
        self.stop_all()?;
        self.pending.clear();
        self.watches.clear();
        self.rearm_stopped()?;
        let tids: Vec<i32> = self.threads.keys().copied().collect();
        for &tid in &tids {
            self.drain_trap(tid)?;
        }
        for (tid, state) in std::mem::take(&mut self.threads) {
            if let State::Stopped { inject, .. } = state {
                // ESRCH: it died meanwhile; nothing to undo.
                let _ = restart(libc::PTRACE_DETACH as libc::c_uint, tid, inject);
            }
        }
        Ok(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if !self.detached {
            let _ = self.detach_all();
        }
    }
}
