//! A live, hung program: snapshot every thread with PTRACE_SEIZE, unwind,
//! detach and leave it running.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use reprise_tracee::{backtrace_live, snapshot_and_backtrace, snapshot_threads, Frame, Symbolizer};

const DEADLOCK_C: &str = r#"#include <pthread.h>
#include <stdio.h>

pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t b = PTHREAD_MUTEX_INITIALIZER;
pthread_barrier_t bar;

static void *t1(void *arg) {
    pthread_mutex_lock(&a);
    pthread_barrier_wait(&bar);
    pthread_mutex_lock(&b); /* T1_BLOCKS */
    pthread_mutex_unlock(&b);
    pthread_mutex_unlock(&a);
    return arg;
}

static void *t2(void *arg) {
    pthread_mutex_lock(&b);
    pthread_barrier_wait(&bar);
    pthread_mutex_lock(&a); /* T2_BLOCKS */
    pthread_mutex_unlock(&a);
    pthread_mutex_unlock(&b);
    return arg;
}

int main(void) {
    pthread_t x, y;
    pthread_barrier_init(&bar, 0, 2);
    pthread_create(&x, 0, t1, 0);
    pthread_create(&y, 0, t2, 0);
    printf("ready\n");
    fflush(stdout);
    pthread_join(x, 0); /* MAIN_JOINS */
    pthread_join(y, 0);
    return 0;
}
"#;

/// Waits until every thread of `pid` sits in futex(2).
fn wait_all_in_futex(pid: i32, threads: usize) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let tids: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        let in_futex = tids
            .iter()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("syscall"))
                    .is_ok_and(|s| s.starts_with("202 "))
            })
            .count();
        if tids.len() == threads && in_futex == threads {
            return;
        }
        assert!(Instant::now() < deadline, "threads never blocked");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The thread running `func`: blocked in pthread_mutex_lock, called from
/// `func` at `line`.
fn check_blocked(all: &[(i32, Vec<Frame>)], func: &str, line: u32) {
    let (tid, frames) = all
        .iter()
        .find(|(_, f)| find_fn(f, 0, func).is_some())
        .unwrap_or_else(|| panic!("no thread in {func}: {all:#?}"));
    let i = find_fn(frames, 0, func).unwrap();
    assert_eq!(
        frames[i].line,
        Some(line),
        "thread {tid}:\n{}",
        dump(frames)
    );
    assert_eq!(file_name(&frames[i]), Some("deadlock.c"));
    let lock = frames[..i].iter().position(|f| {
        f.function.as_deref().is_some_and(|n| {
            n.contains("mutex_lock") || n.contains("lll_lock") || n.contains("futex")
        })
    });
    assert!(
        lock.is_some(),
        "thread {tid} not in mutex lock:\n{}",
        dump(frames)
    );
    assert!(
        frames[..i]
            .iter()
            .all(|f| f.module.to_str().unwrap().contains("libc")),
        "thread {tid}: frames inside {func} should be libc's:\n{}",
        dump(frames)
    );
}

fn run(flags: &[&str], separate_debug: bool) {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(dir.path(), "deadlock", DEADLOCK_C, flags);
    let mut child = Command::new(&exe).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as i32;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    wait_all_in_futex(pid, 3);

    let threads = snapshot_threads(pid).unwrap();
    assert_eq!(threads.len(), 3);
    assert_eq!(threads[0].tid, pid);
    let mut sym = Symbolizer::new();
    sym.set_separate_debug_info(separate_debug);
    let all: Vec<(i32, Vec<Frame>)> = threads
        .iter()
        .map(|t| (t.tid, sym.backtrace_live(pid, t).unwrap()))
        .collect();
    for (tid, f) in &all {
        eprintln!(
            "{flags:?} debug={separate_debug} thread {tid}:\n{}",
            dump(f)
        );
    }
    check_blocked(&all, "t1", line_of(DEADLOCK_C, "T1_BLOCKS"));
    check_blocked(&all, "t2", line_of(DEADLOCK_C, "T2_BLOCKS"));
    let main = &all[0].1;
    let m = find_fn(main, 0, "main").unwrap_or_else(|| panic!("{}", dump(main)));
    assert_eq!(main[m].line, Some(line_of(DEADLOCK_C, "MAIN_JOINS")));

    // The free function (fresh symbolizer, which may use libc's debug
    // info where `sym` does not) unwinds to the same pcs.
    let pcs = |f: &[Frame]| {
        let mut v: Vec<_> = f.iter().map(|f| f.pc).collect();
        v.dedup();
        v
    };
    assert_eq!(
        pcs(&backtrace_live(pid, &threads[1]).unwrap()),
        pcs(&all[1].1)
    );
    // Snapshot + unwind while stopped gives the same frames.
    let again = snapshot_and_backtrace(pid, &mut sym).unwrap();
    assert_eq!(again.len(), 3);
    for ((t, f), (tid, frames)) in again.iter().zip(&all) {
        assert_eq!(t.tid, *tid);
        assert_eq!(f, frames);
    }

    // Detached: still alive, not stopped, still deadlocked.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).unwrap(),
        WaitStatus::StillAlive
    );
    for t in &threads {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{}/stat", t.tid)).unwrap();
        let state = stat.rsplit(") ").next().unwrap().chars().next().unwrap();
        assert_eq!(state, 'S', "thread {} in state {state} after detach", t.tid);
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{}/status", t.tid)).unwrap();
        assert!(status.contains("TracerPid:\t0\n"), "still traced: {status}");
    }
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn deadlock_o0() {
    run(&["-g", "-O0"], true);
}

#[test]
fn deadlock_o2_libc_dynsym_only() {
    run(&["-g", "-O2"], false);
}

#[test]
fn no_such_process() {
    let err = snapshot_threads(i32::MAX - 1).unwrap_err();
    assert!(
        matches!(err, reprise_tracee::TraceeError::NoSuchProcess { .. }),
        "{err}"
    );
}
