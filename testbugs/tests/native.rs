//! Native runs: with `frequent_args` every program fails with its expected
//! signature within a bounded number of runs; with default args a run that
//! does not fail is recognised as passing. Bounded in time (2 runs at once).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reprise_testbugs::{
    build_manifest, corpus_dir, load_manifest, run_native, Bug, Built, Outcome, RunResult,
};

const MAX_RUNS: usize = 200;
const BUDGET: Duration = Duration::from_secs(20);
const TIMEOUT: Duration = Duration::from_secs(3);

fn built() -> (reprise_testbugs::Manifest, Vec<Built>, std::path::PathBuf) {
    let m = load_manifest().unwrap();
    let out = std::env::temp_dir().join(format!(
        "reprise-testbugs-native-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let b = build_manifest(&m, &corpus_dir(), &out).unwrap();
    (m, b, out)
}

/// Runs `bug` (2 at a time) until `done` says stop, at most MAX_RUNS or BUDGET.
fn run_until(
    bug: &Bug,
    exe: &Built,
    args: &[String],
    done: impl Fn(&RunResult) -> bool + Sync,
) -> (usize, Option<RunResult>) {
    let start = Instant::now();
    let n = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let found = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed)
                    && start.elapsed() < BUDGET
                    && n.fetch_add(1, Ordering::Relaxed) < MAX_RUNS
                {
                    let r = run_native(bug, exe, args, TIMEOUT).unwrap();
                    if done(&r) {
                        stop.store(true, Ordering::Relaxed);
                        found.lock().unwrap().get_or_insert(r);
                    }
                }
            });
        }
    });
    (
        n.load(Ordering::Relaxed).min(MAX_RUNS),
        found.into_inner().unwrap(),
    )
}

#[test]
fn frequent_args_fail_with_expected_signature() {
    let (m, built, out) = built();
    let mut missing = Vec::new();
    for (bug, exe) in m.bugs.iter().zip(&built) {
        let (runs, found) = run_until(bug, exe, &bug.frequent_args, |r| r.matches_expected(bug));
        match found {
            Some(r) => eprintln!(
                "{:<28} failed as expected after <= {runs} runs: {:?}",
                bug.name, r.outcome
            ),
            None => missing.push(format!("{} ({} runs)", bug.name, runs)),
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        missing.is_empty(),
        "no expected failure with frequent_args: {missing:?}"
    );
}

#[test]
fn default_args_passing_run_is_clean() {
    let (m, built, out) = built();
    for (bug, exe) in m.bugs.iter().zip(&built) {
        let (_, found) = run_until(bug, exe, &bug.args, |r| r.passed());
        let r = found.unwrap_or_else(|| panic!("{}: no passing run with default args", bug.name));
        assert_eq!(r.outcome, Outcome::Passed);
        assert!(
            !r.stdout.trim().is_empty(),
            "{}: a passing run prints its result",
            bug.name
        );
        assert!(
            !r.stderr.contains("Assertion"),
            "{}: {}",
            bug.name,
            r.stderr
        );
        if let Some(line) = &bug.expect.output {
            assert!(
                r.stdout.lines().any(|l| l == line),
                "{}: {}",
                bug.name,
                r.stdout
            );
        }
        assert!(
            r.duration < Duration::from_secs(2),
            "{}: took {:?}",
            bug.name,
            r.duration
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
