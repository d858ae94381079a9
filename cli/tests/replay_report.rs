//! What `reprise replay` tells its user: the root cause never names two
//! accesses the sketch orders (thread create, join, a lock) as a race and
//! says when the failure needs no race; the attempt counts of `--json`
//! agree with each other; the reproducing attempt's stdout and stderr are
//! shown (or kept out with --no-program-output); and `reprise eval
//! --replay` says of each miss whether the attempts diverged or followed
//! the whole sketch.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{compile, record_until, run_reprise, stderr};
use reprise_schema::read_schedule;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// A value another thread wrote, read where the sketch orders the write
/// before the read; the program exits 3 when it reads 42, every run.
/// `join`: a worker writes, main joins it and reads. `lock`: the worker
/// writes inside a critical section, main reads inside its own, taken
/// after the worker's (main waits first). `create`: main writes, then
/// creates a worker that reads. Prints a line to stdout first, and a
/// line with a byte that is not UTF-8 to stderr before it exits 3.
const ORDERED: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static int value;
static void *writer(void *a) { value = 42; return 0; } /* W join */
static void *locked_writer(void *a) {
    pthread_mutex_lock(&m);
    value = 42; /* W lock */
    pthread_mutex_unlock(&m);
    return 0;
}
static void *reader(void *a) {
    if (value == 42) { /* R create */
        fprintf(stderr, "worker read %d \xff\n", value);
        exit(3);
    }
    return 0;
}
int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "join";
    pthread_t t;
    printf("mode %s\n", mode);
    fflush(stdout);
    if (!strcmp(mode, "create")) {
        value = 42; /* W create */
        pthread_create(&t, 0, reader, 0);
        pthread_join(t, 0);
        return 0;
    }
    int v;
    if (!strcmp(mode, "lock")) {
        pthread_create(&t, 0, locked_writer, 0);
        usleep(100000);
        pthread_mutex_lock(&m);
        v = value; /* R lock */
        pthread_mutex_unlock(&m);
        pthread_join(t, 0);
    } else {
        pthread_create(&t, 0, writer, 0);
        pthread_join(t, 0);
        v = value; /* R join */
    }
    if (v == 42) {
        fprintf(stderr, "main read %d \xff\n", v);
        exit(3);
    }
    return 0;
}
"#;

/// A real race, as a control: main reads a flag right after creating a
/// worker that sets it after a little work; main exits 3 when it read the
/// flag before the worker set it (nearly every native run). Nothing in
/// the sketch orders the read and the write.
const RACY: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
static int flag;
static void *worker(void *a) {
    for (volatile long i = 0; i < 2000000; i++) {}
    flag = 1; /* W */
    return 0;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, worker, 0);
    int v = flag; /* R */
    pthread_join(t, 0);
    if (v == 0) {
        fprintf(stderr, "read the flag before it was set\n");
        exit(3);
    }
    return 0;
}
"#;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o))
}

/// Records `prog ARGS` into `trace` until the run exits 3 (at most 20
/// runs).
fn record_exit3(root: &Path, trace: &Path, prog: &Path, args: &[&str]) {
    let exit3 = |o: &reprise_schema::OutcomeInfo| {
        o.kind == reprise_schema::OutcomeKind::Exited && o.exit_code == 3
    };
    assert!(
        record_until(root, trace, prog, args, 20, exit3),
        "{}: no run exited 3 in 20 recordings",
        prog.display()
    );
}

fn replay(root: &Path, trace: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["replay", trace.to_str().unwrap()];
    a.extend_from_slice(extra);
    run_reprise(root, &a, None, LIMIT)
}

fn replay_json(root: &Path, trace: &Path, extra: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(extra);
    let o = replay(root, trace, &a);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("replay --json printed no JSON ({e}): {}", text(&o)))
}

/// The line of `src` that holds `marker`, 1-based.
fn line_of(src: &str, marker: &str) -> u64 {
    src.lines()
        .position(|l| l.contains(marker))
        .expect("marker in the source") as u64
        + 1
}

fn setup(name: &str, source: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), name, source, &["-g", "-O1"]);
    (tmp, prog)
}

#[test]
fn accesses_ordered_by_join_create_or_a_lock_are_no_race() {
    let (tmp, prog) = setup("ordered", ORDERED);
    for mode in ["join", "lock", "create"] {
        let trace = tmp.path().join(format!("trace-{mode}"));
        record_exit3(tmp.path(), &trace, &prog, &[mode]);
        let v = replay_json(
            tmp.path(),
            &trace,
            &["--jobs", "1", "--max-attempts", "10", "--no-schedule"],
        );
        assert_eq!(v["reproduced"], true, "{mode}: {v:#}");
        let rc = &v["root_cause"];
        assert_eq!(
            rc["how"], "no-race",
            "{mode}: the report names a race the sketch orders: {v:#}"
        );
        assert_eq!(
            rc["races"].as_array().map(Vec::len),
            Some(0),
            "{mode}: {v:#}"
        );
        // What it names instead: the write, the read, and the events that
        // order them.
        let o = &rc["ordered"];
        let (w, r) = (
            line_of(ORDERED, &format!("/* W {mode} */")),
            line_of(ORDERED, &format!("/* R {mode} */")),
        );
        assert_eq!(
            (
                o["write"]["line"].as_u64(),
                o["read"]["line"].as_u64(),
                o["variable"].as_str()
            ),
            (Some(w), Some(r), Some("value")),
            "{mode}: {v:#}"
        );
        let events = format!("{} / {}", o["after"], o["before"]);
        let expected = match mode {
            "join" => ["thread_exit", "pthread_join"],
            "lock" => ["pthread_mutex_unlock", "pthread_mutex_lock"],
            _ => ["pthread_create", "thread_start"],
        };
        assert!(
            events.contains(expected[0]) && events.contains(expected[1]),
            "{mode}: ordered by {events}"
        );

        // In words: no race, and none named.
        let o = replay(
            tmp.path(),
            &trace,
            &[
                "--jobs",
                "1",
                "--max-attempts",
                "10",
                "--no-schedule",
                "--no-program-output",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{mode}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(
                "root cause: no race: the sketch's recorded order alone decides this failure"
            ),
            "{mode}: {out}"
        );
        assert!(
            !out.contains("race 1 on") && out.contains("ordered by: "),
            "{mode}: {out}"
        );
    }
}

#[test]
fn a_real_race_is_still_named() {
    let (tmp, prog) = setup("racy", RACY);
    let trace = tmp.path().join("trace");
    record_exit3(tmp.path(), &trace, &prog, &[]);
    let v = replay_json(
        tmp.path(),
        &trace,
        &["--jobs", "1", "--max-attempts", "10", "--no-schedule"],
    );
    assert_eq!(v["reproduced"], true, "{v:#}");
    let races = v["root_cause"]["races"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (w, r) = (line_of(RACY, "/* W */"), line_of(RACY, "/* R */"));
    let named = races.iter().any(|x| {
        let mut lines = [x["first"]["line"].as_u64(), x["second"]["line"].as_u64()];
        lines.sort();
        lines == [Some(w.min(r)), Some(w.max(r))]
    });
    assert!(named, "the race on lines {w} and {r} is not named: {v:#}");
}

#[test]
fn attempt_and_attempts_agree_with_parallel_jobs() {
    let (tmp, prog) = setup("ordered", ORDERED);
    let trace = tmp.path().join("trace");
    record_exit3(tmp.path(), &trace, &prog, &["join"]);
    // Two attempts at once: the second may still run when the first
    // reproduces; it counts as run, after the reproducing one.
    let v = replay_json(
        tmp.path(),
        &trace,
        &[
            "--strategy",
            "random",
            "--jobs",
            "2",
            "--max-attempts",
            "10",
        ],
    );
    assert_eq!(v["reproduced"], true, "{v:#}");
    let attempt = v["attempt"].as_u64().unwrap();
    let attempts = v["attempts"].as_u64().unwrap();
    let after = v["attempts_after"].as_u64().unwrap();
    assert_eq!(attempt, 1, "the failure is deterministic: {v:#}");
    assert_eq!(attempt + after, attempts, "{v:#}");
    assert!(attempts <= 2, "{v:#}");
    // Random preemptions set breakpoints but observe nothing.
    assert_eq!(v["observed_runs"], 0, "{v:#}");
    // The schedule saved says how many attempts it took: the reproducing
    // one's number.
    let saved = read_schedule(&trace).unwrap().expect("schedule saved");
    assert_eq!(saved.attempts as u64, attempt);
    assert_eq!(v["schedule"]["attempts"].as_u64(), Some(attempt), "{v:#}");

    // One at a time, nothing runs after it.
    let v = replay_json(
        tmp.path(),
        &trace,
        &[
            "--strategy",
            "random",
            "--jobs",
            "1",
            "--max-attempts",
            "10",
            "--no-schedule",
        ],
    );
    assert_eq!(
        (
            v["attempt"].as_u64(),
            v["attempts"].as_u64(),
            v["attempts_after"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{v:#}"
    );

    // The text says the same.
    let o = replay(
        tmp.path(),
        &trace,
        &[
            "--strategy",
            "random",
            "--jobs",
            "2",
            "--max-attempts",
            "10",
            "--no-schedule",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = out
        .lines()
        .find(|l| l.starts_with("reprise: reproduced"))
        .unwrap_or_else(|| panic!("{}", text(&o)));
    assert!(
        line.contains("in attempt 1 (1 attempt, ")
            || line.contains("in attempt 1 (2 attempts run, 1 of them in parallel after it, "),
        "{line}"
    );
    // The saved schedule: one attempt, whatever --jobs.
    let v = replay_json(tmp.path(), &trace, &["--max-attempts", "1"]);
    assert_eq!(
        (v["attempt"].as_u64(), v["attempts"].as_u64()),
        (Some(1), Some(1)),
        "{v:#}"
    );
}

#[test]
fn the_reproducing_attempts_output_is_shown() {
    let (tmp, prog) = setup("ordered", ORDERED);
    let trace = tmp.path().join("trace");
    record_exit3(tmp.path(), &trace, &prog, &["join"]);
    let args = ["--jobs", "1", "--max-attempts", "10", "--no-schedule"];

    // Text: the program's stdout before reprise's report, its stderr on
    // reprise's stderr.
    let o = replay(tmp.path(), &trace, &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("mode join\nreprise: reproduced the recorded failure in attempt 1 "),
        "{out}"
    );
    assert!(
        o.stderr.windows(15).any(|w| w == b"main read 42 \xff\n"),
        "{}",
        stderr(&o)
    );

    // Kept out.
    let mut quiet = args.to_vec();
    quiet.push("--no-program-output");
    let o = replay(tmp.path(), &trace, &quiet);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("reprise: reproduced"),
        "{}",
        text(&o)
    );
    assert!(!stderr(&o).contains("main read"), "{}", stderr(&o));

    // With --output-dir too: the files are kept and the output shown.
    let dir = tmp.path().join("out");
    let mut kept = args.to_vec();
    kept.extend(["--output-dir", dir.to_str().unwrap()]);
    let o = replay(tmp.path(), &trace, &kept);
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("mode join\n"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(dir.join("attempt-1/stdout")).unwrap(),
        b"mode join\n"
    );

    // JSON: in the object (lossy UTF-8), nothing printed raw.
    let v = replay_json(tmp.path(), &trace, &args);
    assert_eq!(v["stdout"], "mode join\n", "{v:#}");
    assert_eq!(v["stderr"], "main read 42 \u{fffd}\n", "{v:#}");
    let mut quiet = args.to_vec();
    quiet.push("--no-program-output");
    let v = replay_json(tmp.path(), &trace, &quiet);
    assert_eq!(
        (&v["stdout"], &v["stderr"]),
        (&Value::Null, &Value::Null),
        "{v:#}"
    );
}

/// `reprise eval --replay` on one quick program with one attempt: every
/// miss is classified, its counts add up, and the summary counts misses.
#[test]
fn eval_replay_classifies_each_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(common::reprise())
        .args([
            "eval",
            "--replay",
            "--only",
            "aget_bwritten",
            "--runs",
            "20",
            "--budget",
            "20",
            "--max-attempts",
            "1",
            "--sketches",
            "sys",
            "--strategies",
            "random,feedback",
            "--json",
        ])
        // The corpus is built there.
        .env("CARGO_TARGET_DIR", tmp.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run reprise eval");
    let o = common::wait_with_limit(child, LIMIT);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let mut misses = 0;
    for cell in v["rows"][0]["replays"].as_array().unwrap() {
        let missed =
            cell["reproduced_in_attempt"].is_null() && !cell["recorded_failure_expected"].is_null();
        let m = &cell["miss"];
        if !missed {
            assert!(m.is_null(), "{cell:#}");
            continue;
        }
        misses += 1;
        let kind = m["kind"].as_str().unwrap_or("");
        let (n, d, f) = (
            m["attempts"].as_u64(),
            m["diverged"].as_u64(),
            m["followed_whole_sketch"].as_u64(),
        );
        assert_eq!(n, cell["attempts"].as_u64(), "{cell:#}");
        assert_eq!(n, Some(d.unwrap() + f.unwrap()), "{cell:#}");
        let expected = match (d, f) {
            (_, Some(0)) => "fidelity",
            (Some(0), _) => "search",
            _ => "both",
        };
        assert_eq!(kind, expected, "{cell:#}");
        let note = cell["note"].as_str().unwrap();
        assert!(
            note.contains(&format!(
                "{}: ",
                if kind == "both" {
                    "fidelity and search"
                } else {
                    kind
                }
            )),
            "{note}"
        );
    }
    let summary: Vec<&str> = v["summary"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let counted = summary.iter().any(|l| l.contains(" missed (fidelity "));
    assert_eq!(counted, misses > 0, "{summary:#?}");
}
