//! Recording and replaying testbugs programs from tests: record a failing
//! run, replay it with `--json`, the correct output of a wrong-output bug.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reprise_schema::{OutcomeKind, TraceReader};
use reprise_testbugs::{corpus_dir, Bug};
use serde_json::Value;

pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// Runs `reprise ARGS` in the corpus directory (where the manifest's
/// input paths are relative to), traces under `root`.
pub fn reprise(root: &Path, args: &[&str]) -> Output {
    let child = Command::new(super::reprise())
        .args(args)
        .env("REPRISE_TRACE_DIR", root)
        .current_dir(corpus_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run reprise");
    super::wait_with_limit(child, COMMAND_LIMIT)
}

/// Records `bug` at its frequent arguments with `sketch` until the run
/// fails (a crash, assertion, deadlock, a wrong output against
/// `expected`...): at least 80 runs, and more while under 90 s (a loaded
/// machine runs the threads of a race one after the other more often);
/// the number of runs it took.
pub fn record_failure(
    root: &Path,
    bug: &Bug,
    exe: &Path,
    trace: &Path,
    expected: Option<&Path>,
    sketch: &str,
) -> Option<u32> {
    let started = std::time::Instant::now();
    for n in 1.. {
        if n > 80 && started.elapsed() > std::time::Duration::from_secs(90) {
            break;
        }
        let _ = std::fs::remove_dir_all(trace);
        let mut args = vec!["record", "--sketch", sketch, "--hang-timeout", "2"];
        if let Some(e) = expected {
            args.extend(["--expect-output", e.to_str().unwrap()]);
        }
        args.extend(["-o", trace.to_str().unwrap(), exe.to_str().unwrap()]);
        args.extend(bug.frequent_args.iter().map(String::as_str));
        let o = reprise(root, &args);
        let r = TraceReader::open(trace)
            .unwrap_or_else(|e| panic!("{}: no trace ({e}): {}", bug.name, super::stderr(&o)));
        let outcome = r.outcome().expect("the trace has an outcome");
        if !(outcome.kind == OutcomeKind::Exited && outcome.exit_code == 0) {
            return Some(n);
        }
    }
    None
}

/// `reprise replay TRACE --json --jobs 1 --max-attempts N`, parsed.
pub fn replay_json(root: &Path, trace: &Path, max_attempts: &str) -> Value {
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
            super::stderr(&o)
        )
    })
}

/// The correct stdout of a wrong-output bug: that of a native run that
/// printed the manifest's correct line, at its frequent arguments, else at
/// its default ones (whose output differs only in how often it is wrong).
pub fn correct_output(bug: &Bug, exe: &Path, into: &Path) -> PathBuf {
    let line = bug
        .expect
        .output
        .as_deref()
        .expect("a wrong-output bug names its correct line");
    for args in [&bug.frequent_args, &bug.args] {
        for _ in 0..100 {
            let child = Command::new(exe)
                .args(args)
                .current_dir(corpus_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("run the program");
            let o = super::wait_with_limit(child, COMMAND_LIMIT);
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == line)
            {
                let path = into.join(format!("{}.expected", bug.name));
                std::fs::write(&path, &o.stdout).unwrap();
                return path;
            }
        }
    }
    panic!("{}: no native run printed {line:?} in 200 runs", bug.name);
}
