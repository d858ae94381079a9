//! `reprise replay --strategy solver`: a failure that needs several
//! coordinated flips reproduces within 10 attempts and its saved schedule
//! every time; a program whose races cannot make it fail ends the search
//! with exhaustion, in bounded time; each query is in the attempt log.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{compile, compile_testbug, record_until, run_reprise, stderr};
use reprise_schema::{OutcomeInfo, OutcomeKind};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(180);

/// A monitor reads a worker's `busy` flag twice around some work and
/// fails if it was set the first time and cleared the second: the
/// worker's set and clear must both fall between the monitor's reads
/// (w1 r1 w0 r2), two reads changed together.
const ABA: &str = r#"
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
volatile int busy;
pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static int rounds = 50, work = 2000;
static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }
static void *worker(void *a) {
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&m); pthread_mutex_unlock(&m);
        busy = 1;
        spin(work);
        busy = 0;
    }
    return 0;
}
static void *monitor(void *a) {
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&m); pthread_mutex_unlock(&m);
        int seen = busy;
        spin(work);
        int again = busy;
        assert(!(seen == 1 && again == 0) && "busy flag cleared during a check");
    }
    return 0;
}
int main(int argc, char **argv) {
    if (argc > 1) rounds = atoi(argv[1]);
    if (argc > 2) work = atoi(argv[2]);
    pthread_t t[2];
    pthread_create(&t[0], 0, worker, 0);
    pthread_create(&t[1], 0, monitor, 0);
    pthread_join(t[0], 0);
    pthread_join(t[1], 0);
    puts("ok");
    return 0;
}
"#;

/// Not a clean exit: a crash, an assertion, another status.
fn failed(o: &OutcomeInfo) -> bool {
    !(o.kind == OutcomeKind::Exited && o.exit_code == 0)
}

fn replay_json(root: &Path, trace: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["replay", trace.to_str().unwrap(), "--json", "--jobs", "1"];
    args.extend_from_slice(extra);
    let o = run_reprise(root, &args, None, LIMIT);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        )
    })
}

/// Records `prog args` until a run fails (at most `tries` recordings) and
/// replays it with `--strategy solver` (`extra` options too), from up to
/// `RECORDINGS` failing recordings (the search depends on the run recorded):
/// the JSON of the first that reproduced, and how many did not.
fn solver_reproduces(
    root: &Path,
    trace: &Path,
    prog: &Path,
    args: &[&str],
    tries: u32,
    extra: &[&str],
) -> (Value, usize) {
    // An attempt takes a second or two; one that runs into its limit is
    // stuck, and ten of them at the default 30 s would outlast `LIMIT`
    // (seen once in CI, on fex_3881 in the debug build under load).
    let mut opts = vec![
        "--strategy",
        "solver",
        "--max-attempts",
        "10",
        "--timeout-per-attempt",
        "12",
    ];
    opts.extend_from_slice(extra);
    reproduces_within(root, trace, prog, args, tries, &opts, 10)
}

/// Records `prog` until a run fails and replays it with `opts`, up to
/// `RECORDINGS` recordings, until one reproduces within `attempts` attempts; returns
/// that replay's JSON and how many recordings missed before it.
/// How many failing recordings a test replays before it gives up. Some
/// recordings need a schedule the solver does not find in 10 attempts: 2 of
/// 10 fex_3881 recordings with the debug build and both cores busy (the
/// waiting thread was descheduled in its window for ~200 events, and the
/// failing check needs three threads' stretches reordered). Three misses
/// in a row happened once in CI; five in a row is ~0.03% at that rate.
const RECORDINGS: usize = 5;

fn reproduces_within(
    root: &Path,
    trace: &Path,
    prog: &Path,
    args: &[&str],
    tries: u32,
    opts: &[&str],
    attempts: u64,
) -> (Value, usize) {
    let mut misses = Vec::new();
    loop {
        assert!(
            record_until(root, trace, prog, args, tries, failed),
            "no failing run in {tries} recordings"
        );
        let v = replay_json(root, trace, opts);
        if v["reproduced"] == true {
            assert!(v["attempt"].as_u64().unwrap() <= attempts, "{v:#}");
            return (v, misses.len());
        }
        misses.push(v);
        assert!(
            misses.len() < RECORDINGS,
            "not reproduced from {RECORDINGS} recordings: {:#}",
            misses[RECORDINGS - 1]
        );
    }
}

#[test]
fn solver_reproduces_a_failure_that_needs_coordinated_flips() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "aba", ABA, &["-O1", "-g"]);
    let trace = tmp.path().join("trace");
    let log = tmp.path().join("attempts.log");
    // Many tries: on two cores shared with the supervisor and the other
    // tests, the two threads often run one after the other.
    let (v, missed) = solver_reproduces(
        tmp.path(),
        &trace,
        &prog,
        &["50", "2000"],
        400,
        &["--attempt-log", log.to_str().unwrap()],
    );
    // The saved schedule holds accesses in place (minimised: as many as
    // the recorded run needs, two for most recordings of this program).
    let flips = v["schedule"]["flips"].as_array().map_or(0, Vec::len);
    assert!(flips >= 1, "the schedule holds accesses in place: {v:#}");
    // Each query's size and time are in the attempt log.
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("solver: ") && l.contains(" ms -> ") && l.contains("accesses")),
        "{lines}"
    );
    // The saved schedule reproduces every time.
    for i in 0..5 {
        let again = replay_json(tmp.path(), &trace, &["--max-attempts", "1"]);
        assert_eq!(
            (again["reproduced"].clone(), again["attempt"].clone()),
            (Value::Bool(true), Value::from(1)),
            "saved schedule, replay {}: {again:#}",
            i + 1
        );
    }
    eprintln!(
        "reproduced in attempt {} with {flips} flips ({missed} recordings missed); {:.1} s",
        v["attempt"],
        started.elapsed().as_secs_f64()
    );
}

/// Racy but correct: a worker sets a flag main reads; whatever main
/// reads, it does the same. The recorded failure came from the contents
/// of a mapped file, which no sketch records; replayed after the file
/// changed, no schedule fails, and the solver says so.
const BENIGN: &str = r#"
#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
volatile int ready;
static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }
static void *worker(void *a) { spin(1000); ready = 1; return 0; }
int main(int argc, char **argv) {
    pthread_t t;
    pthread_create(&t, 0, worker, 0);
    spin(30000000);                 /* the worker has started by now (a new
                                       thread may wait a scheduler slice
                                       for a core: a few ms) */
    int seen = ready;
    int fd = open(argv[1], O_RDONLY);
    const char *mode = mmap(0, 1, PROT_READ, MAP_PRIVATE, fd, 0);
    assert(mode[0] != 'f' && "configured to fail");
    pthread_join(t, 0);
    printf("done %d\n", seen >= 0);
    return 0;
}
"#;

/// BENIGN recorded failing (its mapped file said "f"), the file then
/// changed (to "o"): no schedule of the trace fails.
fn benign_trace(root: &Path) -> std::path::PathBuf {
    let prog = compile(root, "benign", BENIGN, &["-O1", "-g"]);
    let mode = root.join("mode.txt");
    std::fs::write(&mode, "f").unwrap();
    let trace = root.join("trace");
    assert!(record_until(
        root,
        &trace,
        &prog,
        &[mode.to_str().unwrap()],
        1,
        failed
    ));
    std::fs::write(&mode, "o").unwrap();
    trace
}

#[test]
fn a_racy_but_correct_program_ends_in_exhaustion() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = benign_trace(tmp.path());
    let started = Instant::now();
    let v = replay_json(
        tmp.path(),
        &trace,
        &["--strategy", "solver", "--max-attempts", "30"],
    );
    assert_eq!(v["reproduced"], false, "{v:#}");
    let c = v["conclusion"].as_str().unwrap_or("");
    assert!(c.starts_with("exhausted: no untried schedule"), "{v:#}");
    // It asked about main's read of the flag: both values were tried.
    let covered: u32 = c
        .split(" reads-from classes covered")
        .next()
        .and_then(|x| x.rsplit('(').next())
        .and_then(|x| x.trim().parse().ok())
        .unwrap_or(0);
    assert!(covered >= 2, "{c}");
    assert!(!c.contains(" 0 focus reads"), "{c}");
    assert!(
        v["attempts"].as_u64().unwrap() < 30,
        "stopped before its budget: {v:#}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "bounded time");
}

/// `--strategy hybrid` on the same program: feedback's five attempts do
/// not fail, then the solver takes over, from what feedback observed, and
/// concludes exhaustion; its proof holds only within what it observed, so
/// feedback's search spends the rest of the budget — without running any
/// schedule a second time (its replanned first attempts are the runs it
/// made before the solver).
#[test]
fn hybrid_hands_the_search_to_the_solver_after_feedback() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = benign_trace(tmp.path());
    let log = tmp.path().join("attempts.log");
    let v = replay_json(
        tmp.path(),
        &trace,
        &[
            "--strategy",
            "hybrid",
            "--max-attempts",
            "30",
            "--attempt-log",
            log.to_str().unwrap(),
        ],
    );
    assert_eq!(v["reproduced"], false, "{v:#}");
    let c = v["conclusion"].as_str().unwrap_or("");
    assert!(c.starts_with("exhausted: no untried schedule"), "{v:#}");
    assert!(
        c.contains("feedback's search in the other"),
        "feedback went on after the solver: {v:#}"
    );
    assert_eq!(
        v["attempts"].as_u64().unwrap(),
        30,
        "the budget spent: {v:#}"
    );
    // Feedback's five attempts first, no query among them (on this program
    // what they observed covers every class: the solver's queries find
    // nothing untried and it runs no attempt of its own).
    let lines = std::fs::read_to_string(&log).unwrap();
    let attempts_logged: Vec<&str> = lines
        .lines()
        .filter(|l| l.starts_with("attempt "))
        .collect();
    assert!(
        attempts_logged[..5]
            .iter()
            .all(|l| !l.contains("(solver: ")),
        "feedback's five attempts first: {lines}"
    );
    // Each schedule ran once: "attempt N <schedule> <time>s events ...".
    let mut schedules = std::collections::HashSet::new();
    for l in &attempts_logged {
        let after_number = l.splitn(3, ' ').nth(2).unwrap_or("");
        let schedule = after_number
            .split_once("s events ")
            .and_then(|(head, _)| head.rsplit_once(' '))
            .map_or(after_number, |(s, _)| s);
        assert!(
            schedules.insert(schedule.to_string()),
            "ran twice: {l}\n{lines}"
        );
    }
}

/// A buffer handed to two threads (testbugs/fex_3881_pooled_buffers,
/// modelled on FEX-Emu PR #3881, written after the solver's object stage):
/// the owner's check of the buffer's user must read the write of the
/// thread the pool handed it to next. Feedback reproduces none of five such
/// recordings in 10 attempts; the solver most (8 of 10 recordings with both
/// cores busy; see `RECORDINGS` and the README).
#[test]
fn solver_reproduces_a_buffer_handed_to_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile_testbug(tmp.path(), "fex_3881_pooled_buffers");
    let trace = tmp.path().join("trace");
    let (v, _) = solver_reproduces(
        tmp.path(),
        &trace,
        &prog,
        &["200", "20000"],
        200,
        &["--no-schedule"],
    );
    // The root cause names the owner's check and the other thread's claim.
    let races = v["root_cause"]["races"].to_string();
    assert!(
        races.contains("fex_3881_pooled_buffers.c"),
        "the races are in the program: {v:#}"
    );
}

/// The default strategy (`auto`) on the same program: feedback's ten
/// attempts, then the solver's turn, which finds the buffer handed to two
/// threads that one flip at a time rarely reaches.
#[test]
fn the_default_strategy_gives_the_solver_a_turn_after_feedback() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile_testbug(tmp.path(), "fex_3881_pooled_buffers");
    let trace = tmp.path().join("trace");
    let log = tmp.path().join("attempts.log");
    let opts = [
        "--max-attempts",
        "30",
        "--no-schedule",
        "--attempt-log",
        log.to_str().unwrap(),
    ];
    let (v, _) = reproduces_within(tmp.path(), &trace, &prog, &["200", "20000"], 200, &opts, 30);
    let lines = std::fs::read_to_string(&log).unwrap();
    // The last recording's attempts: the log appends across replays.
    let last = lines.rsplit("attempt 1 ").next().unwrap_or("");
    let attempts: Vec<&str> = last.lines().filter(|l| l.starts_with("attempt ")).collect();
    assert!(
        attempts.iter().take(9).all(|l| !l.contains("(solver: ")),
        "feedback's turn first: {lines}"
    );
    assert!(
        v["root_cause"]["races"]
            .to_string()
            .contains("fex_3881_pooled_buffers.c"),
        "{v:#}"
    );
}

/// A failure in a forked child (testbugs/python_6721_fork): the child
/// reads a record its parent's logging thread was half-way through writing
/// when main forked. The child's memory is the parent's at the fork, so
/// the solver takes its first reads for reads of the parent's memory at
/// the fork, and a flip holds the writer until the fork.
#[test]
fn solver_reproduces_a_failure_in_a_forked_child() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile_testbug(tmp.path(), "python_6721_fork");
    let trace = tmp.path().join("trace");
    let (v, _) = solver_reproduces(
        tmp.path(),
        &trace,
        &prog,
        &["2", "0"],
        // About 1 recording in 100 fails here (the fork must land in a
        // window of a few instructions); up to three failing ones.
        3000,
        &["--no-schedule"],
    );
    // A flip that reproduced waits for the child's fork.
    let flips = v["schedule"]["flips"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        flips
            .iter()
            .any(|f| f["until_fork"].as_u64().unwrap_or(0) > 0),
        "{v:#}"
    );
    let races = v["root_cause"]["races"].to_string();
    assert!(races.contains("python_6721_fork.c"), "{v:#}");
}
