//! Turning how a run ended into a failure signature: exit status, fatal
//! signal with a symbolised backtrace, assertion text, hang or deadlock.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use reprise_abi::{EventKind, MAX_HELD, REG_RIP};
use reprise_schema::{Frame, OutcomeInfo, OutcomeKind, ThreadState};
use reprise_tracee::{parse_maps, StackSnapshot, Symbolizer};

use crate::control::ControlBlock;

/// What the hang watch found before it killed the program.
#[derive(Debug, Clone)]
pub struct Ending {
    pub threads: Vec<ThreadState>,
    pub cycle: Vec<u64>,
    /// Set if the thread stacks could not be read (ptrace refused).
    pub note: Option<String>,
}

/// The agent's own frames (its pthread wrappers, the thread trampoline)
/// are noise in the program's backtraces.
fn is_agent_frame(f: &reprise_tracee::Frame) -> bool {
    f.module
        .file_name()
        .is_some_and(|n| n == "libreprise_preload.so")
}

/// The program's frames of a backtrace, as the trace stores them.
pub fn program_frames(frames: &[reprise_tracee::Frame]) -> Vec<Frame> {
    frames
        .iter()
        .filter(|f| !is_agent_frame(f))
        .map(to_trace_frame)
        .collect()
}

/// Converts a tracee frame into the trace's frame.
pub fn to_trace_frame(f: &reprise_tracee::Frame) -> Frame {
    Frame {
        pc: f.pc.addr(),
        function: f.function.clone().unwrap_or_default(),
        file: f.file.clone().unwrap_or_default(),
        line: f.line.unwrap_or(0),
        module: f.module.clone(),
        offset: f.offset,
    }
}

fn is_lock_wait(kind: u32) -> bool {
    matches!(
        EventKind::from_u16(kind as u16),
        Some(
            EventKind::MutexLock
                | EventKind::MutexTimedlock
                | EventKind::RwRdlock
                | EventKind::RwWrlock
                | EventKind::SpinLock
        )
    )
}

/// True if every live thread is blocked in a recorded operation (a lock,
/// a condition variable, a join...). A thread blocked elsewhere (reading
/// a terminal, writing to a full pipe) may be waiting for the outside
/// world, so the run is not called hung.
pub fn all_waiting(ctl: &ControlBlock) -> bool {
    let mut live = ctl
        .threads()
        .filter(|t| t.state.load(Ordering::Acquire) == 1)
        .peekable();
    live.peek().is_some() && live.all(|t| t.waiting_on.load(Ordering::Acquire) != 0)
}

/// The states of the live threads, from the agents' thread entries.
fn thread_states(ctl: &ControlBlock) -> Vec<ThreadState> {
    ctl.threads()
        .filter(|t| t.state.load(Ordering::Acquire) == 1)
        .map(|t| {
            let n = (t.held_count.load(Ordering::Acquire) as usize).min(MAX_HELD);
            ThreadState {
                process: t.process.load(Ordering::Relaxed) as u16,
                thread: t.thread.load(Ordering::Relaxed),
                tid: t.tid.load(Ordering::Relaxed),
                waiting_on: t.waiting_on.load(Ordering::Acquire),
                wait_kind: EventKind::from_u16(t.wait_kind.load(Ordering::Relaxed) as u16)
                    .unwrap_or(EventKind::MutexLock),
                held: t.held[..n]
                    .iter()
                    .map(|h| h.load(Ordering::Relaxed))
                    .collect(),
                backtrace: Vec::new(),
            }
        })
        .collect()
}

/// A cycle of threads each waiting for a lock the next one holds: the
/// locks in wait order, starting from the lowest thread.
pub fn find_cycle(threads: &[ThreadState]) -> Vec<u64> {
    let mut owner: HashMap<u64, usize> = HashMap::new();
    for (i, t) in threads.iter().enumerate() {
        for h in &t.held {
            owner.insert(*h, i);
        }
    }
    for start in 0..threads.len() {
        let mut seen: Vec<usize> = Vec::new();
        let mut locks = Vec::new();
        let mut cur = start;
        loop {
            let t = &threads[cur];
            if t.waiting_on == 0 || !is_lock_wait(t.wait_kind as u32) {
                break;
            }
            let Some(&next) = owner.get(&t.waiting_on) else {
                break;
            };
            seen.push(cur);
            locks.push(t.waiting_on);
            if next == start {
                return locks;
            }
            if seen.contains(&next) {
                break;
            }
            cur = next;
        }
    }
    Vec::new()
}

/// Reads every thread's stack of the hung program `pid` (ptrace, now that
/// it is stuck) and looks for a lock cycle.
pub fn analyse_hang(ctl: &ControlBlock, pid: i32) -> Ending {
    let mut threads = thread_states(ctl);
    let cycle = find_cycle(&threads);
    let mut note = None;
    let mut sym = Symbolizer::new();
    let mut pids: Vec<i32> = ctl.pids();
    if !pids.contains(&pid) {
        pids.push(pid);
    }
    for p in pids {
        match reprise_tracee::snapshot_and_backtrace(p, &mut sym) {
            Ok(stacks) => {
                for (snap, frames) in stacks {
                    if let Some(t) = threads.iter_mut().find(|t| t.tid == snap.tid) {
                        t.backtrace = program_frames(&frames);
                    }
                }
            }
            Err(e) => note = Some(format!("thread stacks unavailable: {e}")),
        }
    }
    Ending {
        threads,
        cycle,
        note,
    }
}

/// Builds the outcome from the wait status and what the agents left in
/// the control block.
pub fn conclude(ctl: &ControlBlock, status: i32, hang: Option<Ending>) -> OutcomeInfo {
    let mut o = OutcomeInfo::default();
    if libc::WIFEXITED(status) {
        o.kind = OutcomeKind::Exited;
        o.exit_code = libc::WEXITSTATUS(status);
    } else if libc::WIFSIGNALED(status) {
        o.kind = OutcomeKind::Signaled;
        o.signal = libc::WTERMSIG(status);
    }
    if let Some(h) = hang {
        o.kind = if h.cycle.is_empty() {
            OutcomeKind::Hang
        } else {
            OutcomeKind::Deadlock
        };
        o.signal = 0;
        o.threads = h.threads;
        o.cycle = h.cycle;
        if let Some(n) = h.note {
            o.summary = n;
        }
        return o;
    }
    // The kind follows the program's own end (its wait status); a forked
    // child that crashed or failed an assertion while the program went on
    // is described in the other fields and the summary.
    let died = o.kind == OutcomeKind::Signaled;
    let h = ctl.header();
    if h.crash.state.load(Ordering::Acquire) == 2 {
        let c = &h.crash;
        o.signal = c.signo;
        o.signal_code = c.code;
        o.fault_addr = c.fault_addr;
        o.pc = c.regs[REG_RIP];
        o.registers = c.regs.to_vec();
        o.process = c.process as u16;
        o.thread = c.thread;
        let maps_text = String::from_utf8_lossy(&c.maps[..(c.maps_len as usize).min(c.maps.len())])
            .into_owned();
        if let Ok(maps) = parse_maps(&maps_text) {
            let stack = StackSnapshot::from_crash(c);
            let mut sym = Symbolizer::new();
            o.backtrace = program_frames(&sym.backtrace(&c.regs, &stack, &maps));
        }
    }
    let a = &h.assert_info;
    if a.state.load(Ordering::Acquire) == 2 {
        if died {
            o.kind = OutcomeKind::Assertion;
        }
        o.assertion =
            String::from_utf8_lossy(&a.text[..(a.len as usize).min(a.text.len())]).into_owned();
        o.process = a.process as u16;
        o.thread = a.thread;
    }
    o
}

pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

fn first_named_frame(o: &OutcomeInfo) -> String {
    // The first frame in the program's own code reads best; libc frames
    // (raise, abort, pthread_mutex_lock) often come first.
    let own =
        |f: &&Frame| !f.file.as_os_str().is_empty() && !f.module.to_string_lossy().contains(".so");
    let f = o
        .backtrace
        .iter()
        .find(own)
        .or_else(|| o.backtrace.iter().find(|f| !f.file.as_os_str().is_empty()))
        .or_else(|| o.backtrace.iter().find(|f| !f.function.is_empty()));
    match f {
        Some(f) if !f.file.as_os_str().is_empty() => {
            format!(" in {} at {}:{}", f.function, f.file.display(), f.line)
        }
        Some(f) => format!(" in {}", f.function),
        None => String::new(),
    }
}

/// One line for humans.
pub fn summary_line(o: &OutcomeInfo) -> String {
    let s = match o.kind {
        OutcomeKind::Exited if !o.assertion.is_empty() => {
            format!(
                "exited with status {} after process {} failed an assertion: {}",
                o.exit_code, o.process, o.assertion
            )
        }
        OutcomeKind::Exited if o.signal != 0 => format!(
            "exited with status {} after process {} was killed by {}{}",
            o.exit_code,
            o.process,
            signal_name(o.signal),
            first_named_frame(o)
        ),
        OutcomeKind::Exited => format!("exited with status {}", o.exit_code),
        OutcomeKind::Signaled => {
            let mut s = format!("killed by {}", signal_name(o.signal));
            if matches!(o.signal, libc::SIGSEGV | libc::SIGBUS) {
                s.push_str(&format!(" (address {:#x})", o.fault_addr));
            }
            if o.process != 0 {
                s.push_str(&format!(" in process {}", o.process));
            }
            s + &first_named_frame(o)
        }
        OutcomeKind::Assertion => format!("assertion failed: {}", o.assertion),
        OutcomeKind::Deadlock => {
            let locks: Vec<String> = o.cycle.iter().map(|l| format!("{l:#x}")).collect();
            format!(
                "deadlock: {} threads wait in a cycle for locks {}",
                o.cycle.len(),
                locks.join(" -> ")
            )
        }
        OutcomeKind::Hang => {
            let waiting: Vec<String> = o
                .threads
                .iter()
                .filter(|t| t.waiting_on != 0)
                .map(|t| {
                    format!(
                        "t{} in {}({:#x})",
                        t.thread,
                        t.wait_kind.name(),
                        t.waiting_on
                    )
                })
                .collect();
            format!("hang: no progress; {}", waiting.join(", "))
        }
        OutcomeKind::Interrupted => "interrupted (SIGINT)".to_string(),
        OutcomeKind::Unknown => "unknown".to_string(),
        OutcomeKind::WrongOutput => format!(
            "wrong output: stdout line {} differs from the expected output (exit status {})",
            o.output_line, o.exit_code
        ),
    };
    if o.summary.is_empty() {
        s
    } else {
        format!("{s} ({})", o.summary)
    }
}

/// What `reprise record` exits with: the program's status, or 128+signal.
pub fn exit_status(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}
