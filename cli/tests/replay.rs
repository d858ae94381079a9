//! `reprise replay`: a recorded run is executed again under its sketch,
//! and a recorded failure reproduces.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{compile, run_reprise, stderr};
use reprise_schema::read_schedule;

const LIMIT: Duration = Duration::from_secs(120);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn record(root: &Path, trace: &Path, prog: &Path, args: &[&str]) -> Output {
    let mut a = vec![
        "record",
        "-o",
        trace.to_str().unwrap(),
        prog.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    run_reprise(root, &a, None, LIMIT)
}

fn replay(root: &Path, trace: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["replay", trace.to_str().unwrap(), "--jobs", "1"];
    a.extend_from_slice(extra);
    run_reprise(root, &a, None, LIMIT)
}

#[test]
fn a_deterministic_program_replays_with_the_same_output_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "locks", common::LOCKS, &["-O1", "-g"]);
    for sketch in ["sync", "sys"] {
        let trace = tmp.path().join(format!("trace-{sketch}"));
        let o = common::record_at(tmp.path(), sketch, &trace, &prog, &["500"]);
        assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
        for i in 0..10 {
            let out = tmp.path().join(format!("out-{sketch}-{i}"));
            let o = replay(
                tmp.path(),
                &trace,
                &[
                    "--max-attempts",
                    "1",
                    "--seed",
                    &i.to_string(),
                    "--no-schedule",
                    "--output-dir",
                    out.to_str().unwrap(),
                ],
            );
            assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
            assert!(
                stdout(&o).contains("reproduced: exited with status 7"),
                "{}",
                stdout(&o)
            );
            let got = std::fs::read_to_string(out.join("attempt-1/stdout")).unwrap();
            assert_eq!(got, "counter=3000\n", "replay {i} ({sketch})");
        }
    }
}

/// The assertion fails only if `second` takes the lock before `first`;
/// natively that depends on `first`'s delay, in a replay on the sketch.
const ORDER: &str = r#"
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static int state;
static long delay;
static void *first(void *a) {
    usleep(delay);
    pthread_mutex_lock(&m);
    state = state * 10 + 1;
    pthread_mutex_unlock(&m);
    return 0;
}
static void *second(void *a) {
    pthread_mutex_lock(&m);
    assert(state == 1 && "second ran before first");
    state = state * 10 + 2;
    pthread_mutex_unlock(&m);
    return 0;
}
int main(int argc, char **argv) {
    delay = argc > 1 ? atol(argv[1]) : 0;
    pthread_t a, b;
    pthread_create(&a, 0, first, 0);
    pthread_create(&b, 0, second, 0);
    pthread_join(a, 0);
    pthread_join(b, 0);
    printf("state=%d\n", state);
    return 0;
}
"#;

#[test]
fn a_recorded_assertion_reproduces_and_its_schedule_reproduces_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "order", ORDER, &["-O1", "-g"]);
    let trace = tmp.path().join("trace");
    // Record until the run fails (the delay makes that nearly certain).
    let mut failed = false;
    for _ in 0..20 {
        let _ = std::fs::remove_dir_all(&trace);
        let o = record(tmp.path(), &trace, &prog, &["20000"]);
        if stderr(&o).contains("assertion failed") {
            failed = true;
            break;
        }
    }
    assert!(failed, "no failing recording in 20 runs");
    let o = replay(tmp.path(), &trace, &["--max-attempts", "20"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("reproduced: assertion failed: ")
            && stdout(&o).contains("second ran before first"),
        "{}",
        stdout(&o)
    );
    let saved = read_schedule(&trace).unwrap().expect("schedule saved");
    assert!(saved.strategy.starts_with("feedback"), "{}", saved.strategy);
    for _ in 0..5 {
        let o = replay(tmp.path(), &trace, &["--max-attempts", "1"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("in attempt 1 "),
            "{}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stderr(&o).contains("trying the saved schedule first"));
    }
}

#[test]
fn a_changed_program_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "locks", common::LOCKS, &["-O1", "-g"]);
    let trace = tmp.path().join("trace");
    let o = record(tmp.path(), &trace, &prog, &["10"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    compile(
        tmp.path(),
        "locks",
        &common::LOCKS.replace("counter=%ld", "count=%ld"),
        &["-O1", "-g"],
    );
    let o = replay(tmp.path(), &trace, &["--max-attempts", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("program changed since it was recorded"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // Forced, the changed output is a divergence, with its reason.
    let o = replay(tmp.path(), &trace, &["--max-attempts", "1", "--force"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("stdout differs from the recorded output at byte 5"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn no_trace_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_reprise(
        tmp.path(),
        &["replay", tmp.path().join("nope").to_str().unwrap()],
        None,
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}

/// Takes one of two global locks, as a file says.
const PICK: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static pthread_mutex_t m[2] = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER };
int main(int argc, char **argv) {
    char c = '0';
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0 || read(fd, &c, 1) != 1) return 9;
    close(fd);
    int i = c == '1';
    pthread_mutex_lock(&m[i]);
    printf("took %d\n", i);
    pthread_mutex_unlock(&m[i]);
    return 0;
}
"#;

#[test]
fn inputs_are_replayed_at_sys_and_another_global_lock_is_a_divergence() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "pick", PICK, &["-O1", "-g"]);
    let input = tmp.path().join("input");
    std::fs::write(&input, "0").unwrap();
    for sketch in ["sync", "sys"] {
        let trace = tmp.path().join(format!("trace-{sketch}"));
        let o = common::record_at(
            tmp.path(),
            sketch,
            &trace,
            &prog,
            &[input.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    std::fs::write(&input, "1").unwrap();
    // The sys sketch holds the byte read: the replay takes lock 0 again.
    let out = tmp.path().join("out");
    let o = replay(
        tmp.path(),
        &tmp.path().join("trace-sys"),
        &["--max-attempts", "1", "--output-dir", out.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("attempt-1/stdout")).unwrap(),
        "took 0\n"
    );
    // The sync sketch does not: the program reads "1" and locks the other
    // global mutex.
    let o = replay(
        tmp.path(),
        &tmp.path().join("trace-sync"),
        &["--max-attempts", "1"],
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("thread 0, event ") && s.contains(": expected pthread_mutex_lock(0x"),
        "{s}"
    );
    assert!(s.contains(") got pthread_mutex_lock(0x"), "{s}");
}

/// A program that computes for a second or two between two events, so
/// that an attempt is running when Ctrl-C comes.
const SLOW: &str = r#"
#include <pthread.h>
static void *spin(void *a) { (void)a; for (volatile long i = 0; i < 1500000000L; i++) ; return 0; }
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, spin, 0);
    pthread_join(t, 0);
    return 0;
}
"#;

#[test]
fn ctrl_c_ends_the_replay_in_one_line_and_leaves_nothing_behind() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "slow", SLOW, &["-O1", "-g", "-pthread"]);
    let trace = tmp.path().join("trace");
    let started = Instant::now();
    let o = record(tmp.path(), &trace, &prog, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let recorded = started.elapsed();
    let child = Command::new(common::reprise())
        .args(["replay", trace.to_str().unwrap(), "--jobs", "1"])
        .env("REPRISE_TRACE_DIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Well inside the attempt (as long as the recorded run).
    std::thread::sleep((recorded / 3).max(Duration::from_millis(300)));
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let o = common::wait_with_limit(child, Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(130), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o)
            .lines()
            .last()
            .unwrap_or("")
            .contains("interrupted"),
        "{}",
        stderr(&o)
    );
    // The attempt's program is gone.
    let ps = Command::new("pgrep")
        .args(["-f", prog.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "left behind: {}", stdout(&ps));
}

/// Two functions lock one mutex; which one runs in each round is read
/// from a table, so the variant below changes the path and not the code.
const TWO_SITES: &str = r#"
#include <pthread.h>
#include <stdio.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static long claimed, released;
static const int order[12] = { 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1 };
__attribute__((noinline)) static void claim(void) { pthread_mutex_lock(&m); claimed++; pthread_mutex_unlock(&m); }
__attribute__((noinline)) static void release(void) { pthread_mutex_lock(&m); released++; pthread_mutex_unlock(&m); }
static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < 12; i++) { if (order[i]) release(); else claim(); }
    return NULL;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    printf("%ld %ld\n", claimed, released);
    return 0;
}
"#;

#[test]
fn a_lock_taken_from_another_call_site_is_where_the_path_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(
        tmp.path(),
        "two_sites",
        TWO_SITES,
        &["-O1", "-g", "-pthread"],
    );
    let trace = tmp.path().join("trace");
    let o = record(tmp.path(), &trace, &prog, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Rounds 5 and 6 swapped: the same code, the same number of locks of
    // the same mutex, another path from the fifth round on.
    compile(
        tmp.path(),
        "two_sites",
        &TWO_SITES.replace(
            "0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1",
            "0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1",
        ),
        &["-O1", "-g", "-pthread"],
    );
    let o = replay(tmp.path(), &trace, &["--max-attempts", "1", "--force"]);
    let out = stdout(&o);
    // The same locks of the same mutex: the run replays whole, and the
    // report says where the worker's path left the recorded one — its
    // fifth lock, not its last event.
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let line = out
        .lines()
        .find(|l| l.contains("from another call site"))
        .unwrap_or_else(|| panic!("no path change noted: {out}"));
    let recorded = stdout(&run_reprise(
        tmp.path(),
        &["dump", trace.to_str().unwrap()],
        None,
        LIMIT,
    ));
    let fifth_lock = recorded
        .lines()
        .filter(|l| l.contains(" t1 pthread_mutex_lock("))
        .nth(4)
        .and_then(|l| l.split_whitespace().next())
        .map(|n| n.trim_start_matches('#').to_string())
        .unwrap_or_else(|| panic!("no fifth lock: {recorded}"));
    assert!(
        line.contains(&format!("thread 1 took a lock at event {fifth_lock} ")),
        "{line}\n{recorded}"
    );
}

/// A miss from a `sys` trace whose threads went long without a sketch
/// event says so, names them, and points at the sketches that record
/// where they lost the CPU; a reproduced run gets no hint.
#[test]
fn a_miss_after_long_stretches_points_at_a_richer_sketch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Thread 1 computes for a while without an event; thread 2, started
    // after it, locks a mutex 200 times meanwhile. `MSG` is what main prints.
    let src = |msg: &str| {
        format!(
            r#"
#include <pthread.h>
#include <stdio.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static volatile long sink;
static long n;
static void *compute(void *a) {{
    for (long i = 0; i < 300000000; i++) sink += i;
    return a;
}}
static void *locker(void *a) {{
    for (int i = 0; i < 200; i++) {{ pthread_mutex_lock(&m); n++; pthread_mutex_unlock(&m); }}
    return a;
}}
int main(void) {{
    pthread_t c, l;
    pthread_create(&c, 0, compute, 0);
    pthread_create(&l, 0, locker, 0);
    pthread_join(l, 0);
    pthread_join(c, 0);
    printf("{msg} %ld\n", n);
    return 0;
}}
"#
        )
    };
    let prog = compile(root, "long", &src("done"), &["-g", "-O1"]);
    let trace = root.join("long-trace");
    let rec = common::record(root, &trace, &prog, &[]);
    assert!(rec.status.success(), "{}", stderr(&rec));
    // One attempt of the trace (`--force`: the program may have been
    // rebuilt), with `extra` options: reprise's stdout.
    let replay_once = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            trace.to_str().unwrap(),
            "--max-attempts",
            "1",
            "--no-schedule",
            "--force",
        ];
        args.extend_from_slice(extra);
        let o = run_reprise(root, &args, None, Duration::from_secs(120));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The program changed: what it prints differs from the recording, so
    // the one attempt misses.
    compile(root, "long", &src("DONE"), &["-g", "-O1"]);
    let out = replay_once(&[]);
    assert!(out.contains("not reproduced in 1 attempts"), "{out}");
    let hint = out
        .lines()
        .find(|l| l.trim_start().starts_with("hint:"))
        .unwrap_or_else(|| panic!("no hint: {out}"));
    // The computing thread, or main (whose join waited through the
    // locker's events): which depends on when the kernel started thread 1.
    assert!(
        hint.contains("thread ") && hint.contains(" through "),
        "{hint}"
    );
    assert!(hint.contains("not in a sys sketch"), "{hint}");
    assert!(hint.contains("--sketch bb"), "{hint}");

    // The program as recorded: the run reproduces, with no hint.
    compile(root, "long", &src("done"), &["-g", "-O1"]);
    let v: serde_json::Value = serde_json::from_str(&replay_once(&["--json"])).unwrap();
    assert_eq!(v["reproduced"], true, "{v:#}");
    assert!(v["hint"].is_null(), "{v:#}");
}
