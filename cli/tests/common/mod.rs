//! Helpers for tests that run the `reprise` binary on real programs.
#![allow(dead_code)]

pub mod corpus;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn reprise() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reprise"))
}

/// Compiles C `source` into `dir/name` with `flags`.
pub fn compile(dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let st = Command::new("gcc")
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .arg("-pthread")
        .status()
        .expect("gcc is needed to build test programs");
    assert!(st.success(), "gcc failed for {name}");
    out
}

/// Builds testbugs program `name` (testbugs/programs/NAME.c) into
/// `dir/NAME` as the manifest builds C programs (`-g -O1 -pthread`).
pub fn compile_testbug(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../testbugs/programs/{name}.c"));
    let source = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    compile(dir, name, &source, &["-g", "-O1"])
}

/// Runs `reprise ARGS` with traces under `root`, killing it after `limit`.
pub fn run_reprise(root: &Path, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
    let mut cmd = Command::new(reprise());
    cmd.args(args)
        .env("REPRISE_TRACE_DIR", root)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run reprise");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut s = child.stdin.take().unwrap();
        s.write_all(input).unwrap();
    }
    wait_with_limit(child, limit)
}

/// `reprise record -o TRACE PROG ARGS...` (the default sketch, `sys`),
/// traces under `root`.
pub fn record(root: &Path, trace: &Path, prog: &Path, args: &[&str]) -> Output {
    record_at(root, "sys", trace, prog, args)
}

/// `reprise record --sketch SKETCH -o TRACE PROG ARGS...`, traces under
/// `root`.
pub fn record_at(root: &Path, sketch: &str, trace: &Path, prog: &Path, args: &[&str]) -> Output {
    let mut a = vec![
        "record",
        "--sketch",
        sketch,
        "-o",
        trace.to_str().unwrap(),
        prog.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    run_reprise(root, &a, None, Duration::from_secs(120))
}

/// Records `prog ARGS` into `trace` until the recorded outcome is one that
/// `done` accepts; false if none was in `tries` recordings.
pub fn record_until(
    root: &Path,
    trace: &Path,
    prog: &Path,
    args: &[&str],
    tries: u32,
    done: impl Fn(&reprise_schema::OutcomeInfo) -> bool,
) -> bool {
    record_until_output(root, trace, prog, args, tries, |_| {
        let r = reprise_schema::TraceReader::open(trace).unwrap();
        r.outcome().is_some_and(&done)
    })
}

/// Records `prog ARGS` into `trace` until `done` accepts a recording (its
/// output; the trace is in `trace`); false if none was in `tries`.
pub fn record_until_output(
    root: &Path,
    trace: &Path,
    prog: &Path,
    args: &[&str],
    tries: u32,
    mut done: impl FnMut(&Output) -> bool,
) -> bool {
    for _ in 0..tries {
        let _ = std::fs::remove_dir_all(trace);
        let o = record(root, trace, prog, args);
        if done(&o) {
            return true;
        }
    }
    false
}

/// Replays `trace` once on its sketch's own schedule (none saved, none
/// read), with `extra` options: it must end as recorded, in attempt 1.
/// Its stdout (the program's output, then reprise's answer).
pub fn replays_as_recorded(root: &Path, trace: &Path, extra: &[&str], limit: Duration) -> String {
    let out = replays_within(root, trace, extra, 1, limit);
    assert!(
        out.contains("reproduced the recorded run in attempt 1"),
        "{out}"
    );
    out
}

/// [`replays_as_recorded`] within `attempts` attempts.
pub fn replays_within(
    root: &Path,
    trace: &Path,
    extra: &[&str],
    attempts: u32,
    limit: Duration,
) -> String {
    let attempts = attempts.to_string();
    let mut args = vec![
        "replay",
        trace.to_str().unwrap(),
        "--jobs",
        "1",
        "--max-attempts",
        &attempts,
        "--no-schedule",
    ];
    args.extend_from_slice(extra);
    let o = run_reprise(root, &args, None, limit);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("reproduced the recorded run in attempt"),
        "{out}"
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits for `child`, reading its pipes meanwhile (a program writing much
/// output would block otherwise); SIGKILLs it after `limit`.
pub fn wait_with_limit(child: std::process::Child, limit: Duration) -> Output {
    let pid = child.id() as i32;
    let start = Instant::now();
    let watchdog = std::thread::spawn(move || {
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        // SAFETY: killing our own child that overstayed.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().unwrap();
    let _ = watchdog;
    out
}

/// A few MB of text that compresses and sorts non-trivially.
pub fn sample(dir: &Path) -> PathBuf {
    let mut s = String::new();
    let mut x: u64 = 12345;
    for i in 0..200_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(&format!(
            "{:08x} line {} {}\n",
            x >> 32,
            i,
            (x >> 20) % 1000
        ));
    }
    let p = dir.join("sample.txt");
    std::fs::write(&p, s).unwrap();
    p
}

/// Three threads taking one mutex k, 2k and 3k times; prints the total and
/// exits 7.
pub const LOCKS: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
long counter;
void *work(void *a) {
    long k = (long)a;
    for (long i = 0; i < k; i++) { pthread_mutex_lock(&m); counter++; pthread_mutex_unlock(&m); }
    return 0;
}
int main(int argc, char **argv) {
    long k = atol(argv[1]);
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], 0, work, (void *)(k * (i + 1)));
    for (int i = 0; i < 3; i++) pthread_join(t[i], 0);
    printf("counter=%ld\n", counter);
    return 7;
}
"#;

/// Busy loops on every core, killed when dropped.
pub struct Hogs(Vec<Child>);

impl Hogs {
    pub fn on_every_core() -> Hogs {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Hogs(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("start a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
