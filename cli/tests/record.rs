//! `reprise record` on real programs: what the trace holds must match what
//! the program did, and failures must carry their signature.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{compile, run_reprise, stderr};
use reprise_abi::EventKind;
use reprise_schema::{EventRecord, OutcomeKind, TraceReader};

const LIMIT: Duration = Duration::from_secs(60);

fn events(dir: &Path) -> (TraceReader, Vec<EventRecord>) {
    let r = TraceReader::open(dir).expect("trace opens");
    assert!(r.is_complete(), "trace {} is complete", dir.display());
    let evs: Vec<EventRecord> = r.events().map(|e| e.expect("event reads")).collect();
    (r, evs)
}

#[test]
fn lock_acquisitions_per_thread_match_the_program() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "locks", common::LOCKS, &["-O1", "-g"]);
    for sketch in ["sync", "sys"] {
        let out_dir = tmp.path().join(format!("trace-{sketch}"));
        let o = run_reprise(
            tmp.path(),
            &[
                "record",
                "--sketch",
                sketch,
                "-o",
                out_dir.to_str().unwrap(),
                prog.to_str().unwrap(),
                "1000",
            ],
            None,
            LIMIT,
        );
        // reprise exits with the program's status, and passes its output through.
        assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "counter=6000\n");
        assert!(
            stderr(&o).contains("exited with status 7"),
            "{}",
            stderr(&o)
        );
        let (r, evs) = events(&out_dir);
        let mut locks: HashMap<u32, usize> = HashMap::new();
        let mut unlocks: HashMap<u32, usize> = HashMap::new();
        for e in &evs {
            match e.kind {
                EventKind::MutexLock => *locks.entry(e.thread).or_default() += 1,
                EventKind::MutexUnlock => *unlocks.entry(e.thread).or_default() += 1,
                _ => {}
            }
        }
        // Threads 1, 2, 3 took the lock 1000, 2000, 3000 times.
        for t in 1..=3u32 {
            assert_eq!(
                locks.get(&t),
                Some(&(1000 * t as usize)),
                "locks of thread {t} ({sketch})"
            );
            assert_eq!(
                unlocks.get(&t),
                Some(&(1000 * t as usize)),
                "unlocks of thread {t} ({sketch})"
            );
        }
        // Sequence numbers are strictly increasing and a lock's holder
        // releases it before anyone else acquires it.
        let mut holder: Option<u32> = None;
        for w in evs.windows(2) {
            assert!(w[0].seq < w[1].seq);
        }
        for e in &evs {
            match e.kind {
                EventKind::MutexLock => {
                    assert_eq!(holder, None, "lock #{} taken while held", e.seq);
                    holder = Some(e.thread);
                }
                EventKind::MutexUnlock => {
                    assert_eq!(holder, Some(e.thread), "unlock #{} by a non-holder", e.seq);
                    holder = None;
                }
                _ => {}
            }
        }
        let creates = evs
            .iter()
            .filter(|e| e.kind == EventKind::ThreadCreate)
            .count();
        let joins = evs
            .iter()
            .filter(|e| e.kind == EventKind::ThreadJoin)
            .count();
        assert_eq!((creates, joins), (3, 3));
        let outcome = r.outcome().unwrap();
        assert_eq!(outcome.kind, OutcomeKind::Exited);
        assert_eq!(outcome.exit_code, 7);
        if sketch == "sys" {
            assert_eq!(outcome.output[0].length, 13, "stdout bytes counted");
            let written: Vec<u8> = evs
                .iter()
                .filter(|e| {
                    e.kind == EventKind::Syscall
                        && e.object == libc::SYS_write as u64
                        && e.arg0 == 1
                })
                .flat_map(|e| e.data.clone())
                .collect();
            assert_eq!(written, b"counter=6000\n");
        }
    }
}

const READER: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <time.h>
int main(int argc, char **argv) {
    char buf[100];
    int fd = open(argv[1], O_RDONLY);
    long total = 0; int n;
    while ((n = read(fd, buf, sizeof buf)) > 0) total += n;
    char line[64];
    FILE *f = fopen(argv[1], "r");              /* stdio reads go through libc's internal read */
    fgets(line, sizeof line, f);
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
    printf("%ld %s", total, line);
    return 0;
}
"#;

#[test]
fn sys_sketch_records_the_bytes_read_and_the_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "reader", READER, &["-O1", "-g"]);
    let input: Vec<u8> = (0..250u32)
        .map(|i| b'a' + (i % 26) as u8)
        .chain(*b"\nsecond line\n")
        .collect();
    let file = tmp.path().join("input.txt");
    std::fs::write(&file, &input).unwrap();
    let out_dir = tmp.path().join("trace");
    let o = run_reprise(
        tmp.path(),
        &[
            "record",
            "-o",
            out_dir.to_str().unwrap(),
            prog.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        None,
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (_, evs) = events(&out_dir);
    let reads: Vec<&EventRecord> = evs
        .iter()
        .filter(|e| e.kind == EventKind::Syscall && e.object == libc::SYS_read as u64)
        .collect();
    // The read() loop through the PLT: 100-byte reads of the whole file, then 0.
    let plt: Vec<u8> = reads
        .iter()
        .filter(|e| e.arg0 == 3)
        .flat_map(|e| e.data.clone())
        .collect();
    assert_eq!(plt, input, "the bytes read() returned are in the trace");
    // fgets reads through libc's internal read (caught by the seccomp trap).
    let stdio = reads
        .iter()
        .find(|e| e.arg0 == 4)
        .expect("the stdio read is recorded");
    assert!(input.starts_with(&stdio.data) && !stdio.data.is_empty());
    let clock = evs
        .iter()
        .find(|e| e.kind == EventKind::Syscall && e.object == libc::SYS_clock_gettime as u64)
        .expect("clock_gettime (answered by the vDSO) is recorded");
    assert_eq!(clock.data.len(), 16);
    // The agent asks the vDSO itself (hidden from glibc at `sys`): what it
    // logged is the time it returned.
    let secs = i64::from_le_bytes(clock.data[..8].try_into().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - secs).abs() < 600,
        "recorded CLOCK_REALTIME {secs} s, now {now} s"
    );
}

const CRASH: &str = r#"
#include <pthread.h>
#include <stdio.h>
struct node { int value; struct node *next; };
struct node *shared;
__attribute__((noinline)) int leaf(struct node *n) {
    return n->next->value;   /* CRASH_LINE */
}
__attribute__((noinline)) int middle(struct node *n) { return leaf(n) + 1; }
void *worker(void *a) { return (void *)(long)middle(shared); }
int main() {
    static struct node n = { 1, 0 };
    shared = &n;
    pthread_t t; pthread_create(&t, 0, worker, 0); pthread_join(t, 0);
    return 0;
}
"#;

fn line_of(src: &str, marker: &str) -> u32 {
    src.lines().position(|l| l.contains(marker)).unwrap() as u32 + 1
}

#[test]
fn sigsegv_is_recorded_with_pc_and_symbolised_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "crash", CRASH, &["-O0", "-g"]);
    let out_dir = tmp.path().join("trace");
    let o = run_reprise(
        tmp.path(),
        &[
            "record",
            "-o",
            out_dir.to_str().unwrap(),
            prog.to_str().unwrap(),
        ],
        None,
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(128 + libc::SIGSEGV), "{}", stderr(&o));
    let r = TraceReader::open(&out_dir).unwrap();
    let oc = r.outcome().unwrap();
    assert_eq!(oc.kind, OutcomeKind::Signaled);
    assert_eq!(oc.signal, libc::SIGSEGV);
    assert_eq!(
        oc.fault_addr, 0,
        "n->next is NULL and ->value is at offset 0"
    );
    assert_eq!(oc.thread, 1, "the worker thread crashed");
    assert_eq!(oc.pc, oc.backtrace[0].pc);
    let names: Vec<&str> = oc.backtrace.iter().map(|f| f.function.as_str()).collect();
    assert_eq!(&names[..3], &["leaf", "middle", "worker"], "{names:?}");
    assert_eq!(oc.backtrace[0].line, line_of(CRASH, "CRASH_LINE"));
    assert!(oc.backtrace[0].file.ends_with("crash.c"));
    assert!(stderr(&o).contains("killed by SIGSEGV"), "{}", stderr(&o));
}

const ASSERT: &str = r#"
#include <assert.h>
#include <pthread.h>
int balance = 10;
void *withdraw(void *a) { balance -= 20; assert(balance >= 0 && "balance went negative"); return 0; }
int main() { pthread_t t; pthread_create(&t, 0, withdraw, 0); pthread_join(t, 0); return 0; }
"#;

#[test]
fn assertion_failure_keeps_its_text() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "assert", ASSERT, &["-O0", "-g"]);
    let out_dir = tmp.path().join("trace");
    let o = run_reprise(
        tmp.path(),
        &[
            "record",
            "-o",
            out_dir.to_str().unwrap(),
            prog.to_str().unwrap(),
        ],
        None,
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(128 + libc::SIGABRT));
    // The program's own message still reaches stderr.
    assert!(
        stderr(&o).contains("Assertion `balance >= 0 && \"balance went negative\"' failed"),
        "{}",
        stderr(&o)
    );
    let r = TraceReader::open(&out_dir).unwrap();
    let oc = r.outcome().unwrap();
    assert_eq!(oc.kind, OutcomeKind::Assertion);
    assert!(
        oc.assertion.contains("withdraw: Assertion `balance >= 0"),
        "{}",
        oc.assertion
    );
    assert_eq!(oc.signal, libc::SIGABRT);
    assert!(
        oc.backtrace.iter().any(|f| f.function == "withdraw"),
        "{:?}",
        oc.backtrace
    );
}

const DEADLOCK: &str = r#"
#include <pthread.h>
pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER, b = PTHREAD_MUTEX_INITIALIZER;
pthread_barrier_t bar;
void *one(void *x) { pthread_mutex_lock(&a); pthread_barrier_wait(&bar); pthread_mutex_lock(&b); return 0; }
void *two(void *x) { pthread_mutex_lock(&b); pthread_barrier_wait(&bar); pthread_mutex_lock(&a); return 0; }
int main() {
    pthread_t x, y; pthread_barrier_init(&bar, 0, 2);
    pthread_create(&x, 0, one, 0); pthread_create(&y, 0, two, 0);
    pthread_join(x, 0); pthread_join(y, 0); return 0;
}
"#;

#[test]
fn deadlock_is_detected_with_its_cycle_and_stacks() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "deadlock", DEADLOCK, &["-O0", "-g"]);
    let out_dir = tmp.path().join("trace");
    let o = run_reprise(
        tmp.path(),
        &[
            "record",
            "--hang-timeout",
            "1",
            "-o",
            out_dir.to_str().unwrap(),
            prog.to_str().unwrap(),
        ],
        None,
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(128 + libc::SIGKILL), "{}", stderr(&o));
    let r = TraceReader::open(&out_dir).unwrap();
    let oc = r.outcome().unwrap();
    assert_eq!(oc.kind, OutcomeKind::Deadlock, "{}", oc.summary);
    assert_eq!(oc.cycle.len(), 2);
    let waiting: Vec<_> = oc
        .threads
        .iter()
        .filter(|t| t.wait_kind == EventKind::MutexLock && t.waiting_on != 0)
        .collect();
    assert_eq!(waiting.len(), 2);
    for t in waiting {
        assert!(oc.cycle.contains(&t.waiting_on));
        assert_eq!(t.held.len(), 1);
        let f = if t.thread == 1 { "one" } else { "two" };
        assert!(
            t.backtrace.iter().any(|fr| fr.function == f),
            "thread {} stack: {:?}",
            t.thread,
            t.backtrace
        );
    }
}

#[test]
fn clear_errors_for_bad_programs() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_reprise(tmp.path(), &["record", "/no/such/program"], None, LIMIT);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(e.contains("program not found: /no/such/program"), "{e}");

    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let o = run_reprise(tmp.path(), &["record", text.to_str().unwrap()], None, LIMIT);
    assert!(
        stderr(&o).contains("is not an executable file"),
        "{}",
        stderr(&o)
    );

    // A static program ignores LD_PRELOAD: say so instead of recording nothing.
    let static_src = "int main(){return 0;}";
    let src = tmp.path().join("static.c");
    std::fs::write(&src, static_src).unwrap();
    let bin = tmp.path().join("static");
    let built = std::process::Command::new("gcc")
        .arg("-static")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .status()
        .unwrap();
    if built.success() {
        let o = run_reprise(tmp.path(), &["record", bin.to_str().unwrap()], None, LIMIT);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("statically linked"), "{}", stderr(&o));
    }
    // Nothing was left behind for the failed recordings.
    let listed = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("static-"))
        .count();
    assert_eq!(listed, 0);
}

#[test]
fn stdin_passes_through_and_traces_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_reprise(
        tmp.path(),
        &["record", "cat"],
        Some(b"through the pipe\n"),
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, b"through the pipe\n");
    let ls = run_reprise(tmp.path(), &["ls"], None, LIMIT);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(text.contains("cat-0"), "{text}");
    let dump = run_reprise(tmp.path(), &["dump"], None, LIMIT);
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("read(fd=0"), "{text}");
    assert!(text.contains("through the pipe"), "{text}");
}

const SIGNALS_EXEC: &str = r#"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
volatile sig_atomic_t got;
void on_usr(int s) { got++; }
int main(int argc, char **argv) {
    if (argc > 2) {            /* the exec'd image: copy a file to stdout */
        char buf[64];
        int fd = open(argv[2], O_RDONLY);
        int n = read(fd, buf, sizeof buf);
        write(1, buf, n);
        return 0;
    }
    signal(SIGUSR1, on_usr);
    raise(SIGUSR1);
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_usr;
    sigaction(SIGUSR2, &sa, 0);
    kill(getpid(), SIGUSR2);
    sigaction(SIGUSR1, 0, &old);                 /* the program sees its own handler */
    printf("got=%d same=%d\n", got, old.sa_handler == on_usr);
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        execl("/proc/self/exe", "child", "exec", argv[1], (char *)0);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
    return WEXITSTATUS(st);
}
"#;

#[test]
fn signals_forks_and_execs_are_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "sigexec", SIGNALS_EXEC, &["-O1", "-g"]);
    let file = tmp.path().join("note.txt");
    std::fs::write(&file, "read by the exec'd image\n").unwrap();
    let out_dir = tmp.path().join("trace");
    let o = run_reprise(
        tmp.path(),
        &[
            "record",
            "-o",
            out_dir.to_str().unwrap(),
            prog.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        None,
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "got=2 same=1\nread by the exec'd image\n"
    );
    let (_, evs) = events(&out_dir);
    let signals: Vec<u64> = evs
        .iter()
        .filter(|e| e.kind == EventKind::Signal)
        .map(|e| e.object)
        .collect();
    assert_eq!(
        signals,
        vec![libc::SIGUSR1 as u64, libc::SIGUSR2 as u64],
        "both deliveries are recorded"
    );
    let fork = evs
        .iter()
        .find(|e| e.kind == EventKind::Fork)
        .expect("fork recorded");
    let child = fork.arg0 as u16;
    let starts = evs
        .iter()
        .filter(|e| e.kind == EventKind::ProcessStart && e.process == child)
        .count();
    assert_eq!(
        starts, 2,
        "the child starts once after fork and once more after exec"
    );
    let read: Vec<u8> = evs
        .iter()
        .filter(|e| {
            e.process == child && e.kind == EventKind::Syscall && e.object == libc::SYS_read as u64
        })
        .flat_map(|e| e.data.clone())
        .collect();
    assert_eq!(
        read, b"read by the exec'd image\n",
        "the exec'd image's input is recorded"
    );
}

const TOTAL: &str = r#"
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    printf("items=3\n");
    printf("total=%d\n", n);
    printf("done\n");
    return 0;
}
"#;

/// `--expect-output`: a run that exits 0 but prints another line than the
/// correct output is a wrong-output failure placed at that line; replay
/// reproduces it; a correct run is a clean exit; a missing file is one
/// clear line.
#[test]
fn wrong_output_against_the_expected_output() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "total", TOTAL, &["-O1", "-g"]);
    let expected = tmp.path().join("expected");
    std::fs::write(&expected, "items=3\ntotal=42\ndone\n").unwrap();
    let record = |arg: &str, name: &str, expect: &Path| {
        let dir = tmp.path().join(name);
        let o = run_reprise(
            tmp.path(),
            &[
                "record",
                "--expect-output",
                expect.to_str().unwrap(),
                "-o",
                dir.to_str().unwrap(),
                prog.to_str().unwrap(),
                arg,
            ],
            None,
            LIMIT,
        );
        (dir, o)
    };

    let (wrong, o) = record("41", "wrong", &expected);
    // The program's own exit status, like any recording.
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            r#"wrong output: stdout line 2 differs from the expected output (exit status 0) (got "total=41", expected "total=42")"#
        ),
        "{}",
        stderr(&o)
    );
    let oc = TraceReader::open(&wrong)
        .unwrap()
        .outcome()
        .unwrap()
        .clone();
    assert_eq!(
        (oc.kind, oc.output_line, oc.output_line_start),
        (OutcomeKind::WrongOutput, 2, 8)
    );
    assert_eq!(oc.expected_output, b"items=3\ntotal=42\ndone\n");

    let (right, o) = record("42", "right", &expected);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let oc = TraceReader::open(&right)
        .unwrap()
        .outcome()
        .unwrap()
        .clone();
    assert_eq!(oc.kind, OutcomeKind::Exited, "{}", oc.summary);

    // Replay reproduces the wrong line (the program is deterministic).
    let o = run_reprise(
        tmp.path(),
        &[
            "replay",
            wrong.to_str().unwrap(),
            "--max-attempts",
            "3",
            "--jobs",
            "1",
        ],
        None,
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        all.contains("reproduced the recorded failure in attempt 1"),
        "{all}"
    );

    let (_, o) = record("42", "missing", &tmp.path().join("no-such-file"));
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("cannot read the expected output") && err.trim().lines().count() == 1,
        "{err}"
    );
}

/// Everything from the program on is the program's: `--version` and
/// `--help` after it are not reprise's options.
#[test]
fn options_after_the_program_are_the_programs() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t");
    let o = run_reprise(
        tmp.path(),
        &[
            "record",
            "-o",
            trace.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "echo \"$@\"",
            "sh",
            "--version",
            "--help",
        ],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "--version --help\n");
    assert!(trace.join("header").exists());
}

/// Whether the trace holds a `write` of `bytes` to `fd`.
fn wrote(evs: &[EventRecord], fd: u64, bytes: &[u8]) -> bool {
    evs.iter().any(|e| {
        e.kind == EventKind::Syscall
            && e.object == libc::SYS_write as u64
            && e.arg0 == fd
            && e.data == bytes
    })
}

/// Sixteen threads read /dev/zero (every read an event with data, in its
/// own ring slots) while main writes its last words and aborts: threads
/// that reserved slots (preempted, or waiting for ring space) die with
/// them unwritten.
const LAST_WORDS: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static void *worker(void *arg) {
    int fd = open("/dev/zero", O_RDONLY);
    char buf[64];
    for (;;) read(fd, buf, sizeof buf);
    return arg;
}
int main(void) {
    pthread_t t[16];
    for (int i = 0; i < 16; i++) pthread_create(&t[i], 0, worker, 0);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, 0);
    const char *msg = "last words before the crash\n";
    write(2, msg, strlen(msg));
    abort();
}
"#;

#[test]
fn a_crash_while_other_threads_log_keeps_the_last_words() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "last_words", LAST_WORDS, &["-O1", "-g"]);
    // A slot left unwritten by a killed thread used to cost every event
    // after it, the crashing thread's message among them.
    for run in 0..3 {
        let dir = tmp.path().join(format!("trace-{run}"));
        let o = common::record(tmp.path(), &dir, &prog, &[]);
        assert_eq!(o.status.code(), Some(128 + libc::SIGABRT), "{}", stderr(&o));
        let (r, evs) = events(&dir);
        let oc = r.outcome().unwrap();
        assert_eq!(oc.signal, libc::SIGABRT);
        let words = b"last words before the crash\n";
        assert!(
            wrote(&evs, 2, words),
            "run {run}: the crashing thread's write is in the trace\n{}",
            stderr(&o)
        );
    }
}

/// A parent that kills each child with SIGKILL while the child logs reads
/// as fast as it can: some child dies holding a ring slot it never
/// writes.
const KILLED_CHILDREN: &str = r#"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    for (int round = 0; round < 150; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            int fd = open("/dev/zero", O_RDONLY);
            char buf[64];
            for (;;) read(fd, buf, sizeof buf);
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, 0);
        kill(pid, SIGKILL);
        waitpid(pid, 0, 0);
    }
    printf("killed 150 children\n");
    return 0;
}
"#;

#[test]
fn children_killed_mid_log_do_not_stop_the_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(
        tmp.path(),
        "killed_children",
        KILLED_CHILDREN,
        &["-O1", "-g"],
    );
    let dir = tmp.path().join("trace");
    // The drain used to stop at the first slot a killed child left empty;
    // once the ring filled up behind it, the parent waited for space
    // forever (natively this takes under a second).
    let o = common::record(tmp.path(), &dir, &prog, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "killed 150 children\n");
    let (r, evs) = events(&dir);
    assert_eq!(r.outcome().unwrap().kind, OutcomeKind::Exited);
    assert!(
        wrote(&evs, 1, b"killed 150 children\n"),
        "the parent's last write is in the trace"
    );
}
