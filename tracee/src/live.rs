//! Registers of every thread of a live process that reprise is not tracing
//! (a hung program): attach with `PTRACE_SEIZE` + `PTRACE_INTERRUPT`, read,
//! detach.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Result, TraceeError};
use crate::maps::MemoryMap;
use crate::memory::ProcessMemory;
use crate::symbolizer::{Frame, Symbolizer};

/// How long one thread may take to stop after `PTRACE_INTERRUPT`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One thread's registers, in [`reprise_abi::REG_NAMES`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadSnapshot {
    pub tid: i32,
    pub regs: [u64; 18],
}

fn regs_from(r: &libc::user_regs_struct) -> [u64; 18] {
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.eflags,
    ]
}

fn task_ids(pid: i32) -> Result<BTreeSet<i32>> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TraceeError::NoSuchProcess { pid }
        } else {
            TraceeError::io(dir.clone(), e)
        }
    })?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// Threads we have seized; each is detached when this is dropped (also on
/// errors and panics), re-injecting a signal we intercepted.
struct Seized {
    pid: i32,
    threads: Vec<(Pid, Option<Signal>)>,
}

impl Drop for Seized {
    fn drop(&mut self) {
        for &(tid, sig) in &self.threads {
            // ESRCH: the thread exited meanwhile; nothing to undo.
            let _ = ptrace::detach(tid, sig);
        }
    }
}

enum Stop {
    /// Stopped (a signal being delivered is held in `Seized::threads`).
    Stopped,
    Gone,
}

impl Seized {
    /// Seizes and stops one thread.
    fn add(&mut self, tid: i32) -> Result<Stop> {
        let t = Pid::from_raw(tid);
        match ptrace::seize(t, ptrace::Options::empty()) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(Stop::Gone),
            // A thread that exited but is not reaped yet (a thread-group
            // leader that ended before the others) cannot be traced.
            Err(Errno::EPERM) if crate::process::exited(tid) => return Ok(Stop::Gone),
            Err(Errno::EPERM) => {
                return Err(TraceeError::PtracePermission {
                    pid: self.pid,
                    op: "PTRACE_SEIZE",
                })
            }
            Err(source) => {
                return Err(TraceeError::Ptrace {
                    op: "PTRACE_SEIZE",
                    tid,
                    source,
                })
            }
        }
        self.threads.push((t, None));
        let slot = self.threads.len() - 1;
        match ptrace::interrupt(t) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(Stop::Gone),
            Err(source) => {
                return Err(TraceeError::Ptrace {
                    op: "PTRACE_INTERRUPT",
                    tid,
                    source,
                })
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match waitpid(t, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    if Instant::now() > deadline {
                        return Err(TraceeError::StopTimeout {
                            tid,
                            millis: STOP_TIMEOUT.as_millis() as u64,
                        });
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                // The interrupt stop, or a group stop (the process was
                // already stopped by SIGSTOP & co.): leave as found.
                Ok(WaitStatus::PtraceEvent(..)) => return Ok(Stop::Stopped),
                // A signal was being delivered: hold it and re-inject it
                // on detach.
                Ok(WaitStatus::Stopped(_, sig)) => {
                    self.threads[slot].1 = Some(sig);
                    return Ok(Stop::Stopped);
                }
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                    return Ok(Stop::Gone)
                }
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(source) => {
                    return Err(TraceeError::Ptrace {
                        op: "waitpid",
                        tid,
                        source,
                    })
                }
            }
        }
    }
}

/// Stops every thread of `pid`, calls `f` on each thread's registers while
/// all threads are stopped, and detaches again.
fn with_threads_stopped<T>(
    pid: i32,
    mut f: impl FnMut(&ThreadSnapshot) -> T,
) -> Result<Vec<(ThreadSnapshot, T)>> {
    let mut seized = Seized {
        pid,
        threads: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    let mut stopped = Vec::new();
    // Threads may be created until all are stopped: list again until no
    // new thread shows up.
    loop {
        let tids = task_ids(pid)?;
        let new: Vec<i32> = tids.difference(&seen).copied().collect();
        if new.is_empty() {
            break;
        }
        for tid in new {
            seen.insert(tid);
            if let Stop::Stopped = seized.add(tid)? {
                stopped.push(tid);
            }
        }
    }
    let mut out = Vec::new();
    for tid in stopped {
        match ptrace::getregs(Pid::from_raw(tid)) {
            Ok(r) => {
                let snap = ThreadSnapshot {
                    tid,
                    regs: regs_from(&r),
                };
                let t = f(&snap);
                out.push((snap, t));
            }
            Err(Errno::ESRCH) => {} // killed meanwhile
            Err(source) => {
                return Err(TraceeError::Ptrace {
                    op: "PTRACE_GETREGS",
                    tid,
                    source,
                })
            }
        }
    }
    drop(seized);
    Ok(out)
}

/// Registers of every thread of the live process `pid`, which reprise is
/// not tracing. Each thread is attached with `PTRACE_SEIZE`, stopped with
/// `PTRACE_INTERRUPT`, read with `PTRACE_GETREGS` and detached, so the
/// process continues as before (a signal arriving meanwhile is
/// re-injected). Threads come in tid order. A refusal by the kernel is
/// [`TraceeError::PtracePermission`], whose message says how to allow it.
///
/// Ptrace requests are bound to the calling thread; everything happens
/// within this call.
pub fn snapshot_threads(pid: i32) -> Result<Vec<ThreadSnapshot>> {
    Ok(with_threads_stopped(pid, |_| ())?
        .into_iter()
        .map(|(s, ())| s)
        .collect())
}

/// The backtrace of one thread of the live process `pid` from registers
/// taken by [`snapshot_threads`], reading its memory and `/proc/PID/maps`
/// now. A thread that kept running since the snapshot may give a wrong
/// backtrace; [`snapshot_and_backtrace`] unwinds while threads are stopped.
pub fn backtrace_live(pid: i32, thread: &ThreadSnapshot) -> Result<Vec<Frame>> {
    Symbolizer::new().backtrace_live(pid, thread)
}

/// Every thread's registers and backtrace, unwound while all threads are
/// stopped (consistent even for threads that are running, not blocked).
pub fn snapshot_and_backtrace(
    pid: i32,
    symbolizer: &mut Symbolizer,
) -> Result<Vec<(ThreadSnapshot, Vec<Frame>)>> {
    let maps = MemoryMap::for_pid(pid)?;
    let mem = ProcessMemory::new(pid);
    with_threads_stopped(pid, |t| symbolizer.backtrace(&t.regs, &mem, &maps))
}

impl Symbolizer {
    /// [`backtrace_live`] with this symbolizer's cache.
    pub fn backtrace_live(&mut self, pid: i32, thread: &ThreadSnapshot) -> Result<Vec<Frame>> {
        let maps = MemoryMap::for_pid(pid)?;
        let mem = ProcessMemory::new(pid);
        Ok(self.backtrace(&thread.regs, &mem, &maps))
    }
}
