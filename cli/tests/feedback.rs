//! The feedback strategy on a few testbugs programs: a recorded failure
//! whose race the sketch does not order reproduces within 10 attempts, the
//! root-cause report names the racing lines the manifest lists, and the
//! saved schedule (with its flips) reproduces the failure every time.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reprise_schema::{OutcomeKind, TraceReader};
use reprise_testbugs::{build_manifest, corpus_dir, load_manifest, Bug, ExpectKind};
use serde_json::Value;

/// Atomicity violation (crash), use before initialisation (crash), use of
/// a freed cache entry (assertion).
const PROGRAMS: [&str; 3] = [
    "mysql_3596_procinfo",
    "mozilla_nsthread_init",
    "mozilla_js_propcache",
];
const SAVED_REPLAYS: usize = 5;
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

fn reprise(root: &Path, args: &[&str]) -> Output {
    let child = Command::new(common::reprise())
        .args(args)
        .env("REPRISE_TRACE_DIR", root)
        .current_dir(corpus_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run reprise");
    common::wait_with_limit(child, COMMAND_LIMIT)
}

/// Records `bug` at its frequent arguments until the run fails (a crash,
/// assertion, deadlock, a wrong output against `expected`...), at most 80
/// runs.
fn record_failure(
    root: &Path,
    bug: &Bug,
    exe: &Path,
    trace: &Path,
    expected: Option<&Path>,
) -> Option<u32> {
    for n in 1..=80 {
        let _ = std::fs::remove_dir_all(trace);
        let mut args = vec!["record", "--hang-timeout", "2"];
        if let Some(e) = expected {
            args.extend(["--expect-output", e.to_str().unwrap()]);
        }
        args.extend(["-o", trace.to_str().unwrap(), exe.to_str().unwrap()]);
        args.extend(bug.frequent_args.iter().map(String::as_str));
        let o = reprise(root, &args);
        let r = TraceReader::open(trace).unwrap_or_else(|e| {
            panic!("{}: no trace ({e}): {}", bug.name, common::stderr(&o))
        });
        let outcome = r.outcome().expect("the trace has an outcome");
        if !(outcome.kind == OutcomeKind::Exited && outcome.exit_code == 0) {
            return Some(n);
        }
    }
    None
}

fn replay_json(root: &Path, trace: &Path, max_attempts: &str) -> Value {
    let o = reprise(
        root,
        &[
            "replay",
            trace.to_str().unwrap(),
            "--json",
            "--jobs",
            "1",
            "--max-attempts",
            max_attempts,
        ],
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "replay --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            common::stderr(&o)
        )
    })
}

/// "file.c:LINE" of one access of the report.
fn place(access: &Value) -> String {
    format!(
        "{}:{}",
        access["file"].as_str().unwrap_or(""),
        access["line"].as_u64().unwrap_or(0)
    )
}

/// The correct stdout of a wrong-output bug at its frequent arguments:
/// that of a native run that printed the manifest's correct line.
fn correct_output(bug: &Bug, exe: &Path, into: &Path) -> std::path::PathBuf {
    let line = bug.expect.output.as_deref().expect("a wrong-output bug names its correct line");
    for _ in 0..200 {
        let child = Command::new(exe)
            .args(&bug.frequent_args)
            .current_dir(corpus_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the program");
        let o = common::wait_with_limit(child, COMMAND_LIMIT);
        if String::from_utf8_lossy(&o.stdout).lines().any(|l| l == line) {
            let path = into.join(format!("{}.expected", bug.name));
            std::fs::write(&path, &o.stdout).unwrap();
            return path;
        }
    }
    panic!("{}: no native run printed {line:?} in 200 runs", bug.name);
}

#[test]
fn feedback_reproduces_and_names_the_racing_lines() {
    check_feedback(&PROGRAMS);
}

/// Lost updates: the recording printed a wrong total (against the correct
/// output given at record); an attempt that loses updates too prints the
/// same line wrong, whatever the amount lost.
#[test]
fn feedback_reproduces_a_lost_update_by_its_wrong_line() {
    check_feedback(&["aget_bwritten", "radare2_15667_threadlock"]);
}

fn check_feedback(programs: &[&str]) {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut m = load_manifest().unwrap();
    m.bugs.retain(|b| programs.contains(&b.name.as_str()));
    assert_eq!(m.bugs.len(), programs.len(), "programs missing from the manifest");
    let built = build_manifest(&m, &corpus_dir(), &tmp.path().join("bin")).unwrap();
    let root = tmp.path();
    for bug in &m.bugs {
        let exe = &built.iter().find(|b| b.name == bug.name).unwrap().exe;
        let trace = root.join(format!("{}-trace", bug.name));
        let expected = (bug.expect.kind == ExpectKind::WrongOutput)
            .then(|| correct_output(bug, exe, root));
        // Whether a failure reproduces within the budget depends on the
        // failing run recorded: up to three of them.
        let mut tries = Vec::new();
        let (runs, v) = loop {
            let runs = record_failure(root, bug, exe, &trace, expected.as_deref())
                .unwrap_or_else(|| panic!("{}: no failing run in 80 recordings", bug.name));
            let v = replay_json(root, &trace, "10");
            if v["reproduced"] == true {
                break (runs, v);
            }
            tries.push(v);
            assert!(
                tries.len() < 3,
                "{}: not reproduced within 10 attempts from 3 failing recordings: {:#}",
                bug.name,
                tries[2]
            );
        };
        let attempt = v["attempt"].as_u64().unwrap();
        if expected.is_some() {
            let outcome = v["outcome"].as_str().unwrap_or("");
            assert!(outcome.starts_with("wrong output: stdout line"), "{}: {v:#}", bug.name);
        }
        let races = v["root_cause"]["races"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no root cause: {v:#}", bug.name));
        let named = races.iter().any(|r| {
            bug.race_lines.contains(&place(&r["first"]))
                && bug.race_lines.contains(&place(&r["second"]))
        });
        assert!(
            named,
            "{}: the root cause names {:?}, the manifest's racing lines are {:?}",
            bug.name,
            races
                .iter()
                .map(|r| (place(&r["first"]), place(&r["second"])))
                .collect::<Vec<_>>(),
            bug.race_lines
        );
        assert_eq!(v["schedule_saved"], true, "{}: {v:#}", bug.name);

        // The saved schedule, flips included, reproduces every time.
        for i in 0..SAVED_REPLAYS {
            let again = replay_json(root, &trace, "1");
            assert_eq!(
                (again["reproduced"].clone(), again["attempt"].clone()),
                (Value::Bool(true), Value::from(1)),
                "{}: saved schedule, replay {}: {again:#}",
                bug.name,
                i + 1
            );
        }
        eprintln!(
            "{}: recorded in run {runs}, reproduced in attempt {attempt}, root cause {:?}, saved schedule {SAVED_REPLAYS}/{SAVED_REPLAYS}",
            bug.name,
            races
                .iter()
                .map(|r| format!("{} / {}", place(&r["first"]), place(&r["second"])))
                .collect::<Vec<_>>()
        );
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}
