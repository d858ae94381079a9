//! Test support: building C programs and capturing a crash the way the
//! agent would (registers, 128 KiB of stack from rsp, maps), under ptrace.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use reprise_tracee::{Frame, MemoryMap, MemoryReader, ProcessMemory, RemotePtr, StackSnapshot};

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Compiles `src` with gcc into `dir/name` with the given flags.
pub fn compile(dir: &Path, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let exe = dir.join(name);
    let out = Command::new("gcc")
        .args(flags)
        .arg("-pthread")
        .arg("-o")
        .arg(&exe)
        .arg(&c)
        .output()
        .expect("running gcc");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// The 1-based line of the source line containing `marker`.
pub fn line_of(src: &str, marker: &str) -> u32 {
    src.lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("marker {marker} not in source")) as u32
        + 1
}

/// What the agent saves at a fatal signal.
pub struct Crash {
    pub tid: i32,
    pub signal: Signal,
    pub regs: [u64; 18],
    pub stack: StackSnapshot,
    pub maps: MemoryMap,
}

fn regs_of(tid: Pid) -> [u64; 18] {
    let r = ptrace::getregs(tid).unwrap();
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.eflags,
    ]
}

/// Runs `exe` under ptrace (following its threads) until one thread gets a
/// fatal signal (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL); captures that
/// thread's registers, up to 128 KiB of its stack from rsp and the maps
/// text, then kills the program. Only this thread's children are waited
/// for (`__WNOTHREAD`), so tests can run in parallel.
// The child is reaped with waitpid below, not through `Child::wait`.
#[allow(clippy::zombie_processes)]
pub fn run_until_crash(exe: &Path) -> Crash {
    let mut cmd = Command::new(exe);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only
    // makes the ptrace(PTRACE_TRACEME) system call.
    unsafe {
        cmd.pre_exec(|| ptrace::traceme().map_err(std::io::Error::from));
    }
    let child = cmd.spawn().expect("spawning test program");
    let pid = Pid::from_raw(child.id() as i32);
    let flags = WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD;
    // The exec stop.
    match waitpid(pid, Some(flags)).unwrap() {
        WaitStatus::Stopped(_, Signal::SIGTRAP) => {}
        s => panic!("unexpected first stop {s:?}"),
    }
    ptrace::setoptions(
        pid,
        ptrace::Options::PTRACE_O_TRACECLONE | ptrace::Options::PTRACE_O_EXITKILL,
    )
    .unwrap();
    ptrace::cont(pid, None).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let crash = loop {
        let status = match waitpid(None, Some(flags | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() > deadline {
                    let _ = kill(pid, Signal::SIGKILL);
                    panic!("test program did not crash within {TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Ok(s) => s,
            Err(Errno::EINTR) => continue,
            Err(e) => panic!("waitpid: {e}"),
        };
        match status {
            WaitStatus::Stopped(
                tid,
                sig @ (Signal::SIGSEGV
                | Signal::SIGBUS
                | Signal::SIGABRT
                | Signal::SIGFPE
                | Signal::SIGILL),
            ) => {
                let regs = regs_of(tid);
                let rsp = regs[7];
                let mem = ProcessMemory::new(pid.as_raw());
                let mut bytes = vec![0u8; reprise_abi::CRASH_STACK_BYTES];
                let mut got = 0;
                while got < bytes.len() {
                    match mem.read(RemotePtr::new(rsp + got as u64), &mut bytes[got..]) {
                        Ok(n) if n > 0 => got += n,
                        _ => break,
                    }
                }
                bytes.truncate(got);
                let maps = MemoryMap::for_pid(pid.as_raw()).unwrap();
                break Crash {
                    tid: tid.as_raw(),
                    signal: sig,
                    regs,
                    stack: StackSnapshot { base: rsp, bytes },
                    maps,
                };
            }
            WaitStatus::Stopped(tid, Signal::SIGSTOP) | WaitStatus::PtraceEvent(tid, _, _) => {
                let _ = ptrace::cont(tid, None);
            }
            WaitStatus::Stopped(tid, sig) => {
                let _ = ptrace::cont(tid, sig);
            }
            WaitStatus::Exited(p, code) if p == pid => {
                panic!("test program exited with {code} instead of crashing")
            }
            WaitStatus::Signaled(p, sig, _) if p == pid => {
                panic!("test program killed by {sig:?} without a stop")
            }
            _ => {}
        }
    };
    kill(pid, Signal::SIGKILL).unwrap();
    // Reap the process (and its threads' exit notifications).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        // The leader's exit is reported only after its traced threads
        // are reaped, so reap everything of ours.
        match waitpid(None, Some(flags | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _)) if p == pid => break,
            Err(Errno::ECHILD) => break,
            Ok(WaitStatus::StillAlive) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => panic!("killed test program did not exit"),
            Ok(_) => {}
        }
    }
    crash
}

pub fn dump(frames: &[Frame]) -> String {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| format!("#{i:<2} {f}\n"))
        .collect()
}

/// Index of the first frame at or after `from` whose function is `name`.
pub fn find_fn(frames: &[Frame], from: usize, name: &str) -> Option<usize> {
    (from..frames.len()).find(|&i| frames[i].function.as_deref() == Some(name))
}

pub fn file_name(f: &Frame) -> Option<&str> {
    f.file.as_ref()?.file_name()?.to_str()
}
