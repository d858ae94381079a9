//! `reprise replay` on the testbugs corpus: for the programs replay can
//! reproduce, a recorded failure reproduces and its saved schedule
//! reproduces it every time; every other program's failing recording
//! replays without an error.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reprise_schema::{OutcomeInfo, OutcomeKind, TraceReader};
use reprise_testbugs::{build_manifest, corpus_dir, load_manifest, Bug};

/// Programs whose recorded failure the feedback strategy reproduces
/// within 10 attempts at their frequent arguments, and then reproduces
/// every time from the saved schedule.
const REPRODUCIBLE: [&str; 17] = [
    "mysql_3596_procinfo",
    "mozilla_nsthread_init",
    "transmission_1818_bandwidth",
    "mysql_791_binlog",
    "mozilla_js_propcache",
    "pbzip2_094_fifo",
    "fsevents_290_lostwakeup",
    "libfabric_928_progress",
    "jubatus_180_mixer",
    "urllib3_204_pool_dispose",
    // Two threads take one element of an unlocked free list: feedback's
    // reads-from moves (feedback/src/moves.rs).
    "uros_377_freestacks",
    // Both feature extractors read a picture's count as zero after their
    // decrements: a release twice.
    "vmaf_1298_picture_unref",
    // A zap between a fault and its retry; the damage found at the end.
    "linux_dirtycow_gup_retry",
    // A pop split across a thread's long stretch (feedback/src/spans.rs,
    // stale updates): one Bigint taken by two conversions.
    "ruby_17612_dtoa_freelist",
    // A commit that skipped its record while the log's file handle was
    // being switched: as many skipped iterations as the sketch is short.
    "wiredtiger_2706_log_switch",
    // C++: the executor's wait_until (pthread_cond_clockwait) releases
    // and retakes its mutex in the sketch; a wake-up object destroyed
    // under the thread that notifies it.
    "cm_executors_5_clock_cv",
    // C++: a new thread reads its handle before the creator stored it
    // (fails often only once a thread per core is busy).
    "trafficserver_2195_thread_tid",
];
/// Programs whose saved schedule is not yet replayed the same way under
/// load: one recording's schedule reproduced 17 and 18 of 20 times next
/// to two busy loops (20 of 20 idle), others 20 of 20; some race it does
/// not hold is still decided by timing there. Half must reproduce.
const SAVED_MOSTLY: [&str; 1] = ["ruby_17612_dtoa_freelist"];
/// Replays of the saved schedule that must all reproduce.
const SAVED_REPLAYS: u32 = 20;
/// How a program that never reproduced within its budget is reported.
const NOT_FOUND: &str = "no failing recording reproduced";
/// One `reprise` command may take this long.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// Runs `reprise ARGS` in the corpus directory, killed after COMMAND_LIMIT.
fn reprise(root: &Path, args: &[&str], stdin: Stdio) -> Output {
    let child = Command::new(common::reprise())
        .args(args)
        .env("REPRISE_TRACE_DIR", root)
        .current_dir(corpus_dir())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run reprise");
    common::wait_with_limit(child, COMMAND_LIMIT)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether a recorded run failed: a crash, assertion, hang, an exit code
/// other than 0, or output without the line the manifest expects.
fn is_failure(bug: &Bug, o: &OutcomeInfo, stdout: &[u8]) -> bool {
    match o.kind {
        OutcomeKind::Exited => {
            o.exit_code != 0
                || bug
                    .expect
                    .output
                    .as_deref()
                    .is_some_and(|w| !String::from_utf8_lossy(stdout).contains(w))
        }
        _ => true,
    }
}

/// Records `bug` at its frequent arguments until a run fails, for at most
/// `tries` runs and `budget`; returns the failing trace's summary and how
/// many runs it took. Every other run is recorded with `--chaos`, as a
/// user does when the failure does not come: on a loaded machine (CI)
/// some programs' threads hardly ever overlap without it (measured next to
/// two busy loops: mysql_791 failed in 0 of 30 recordings, 14 of 30 with
/// `--chaos`).
fn record_failure(
    root: &Path,
    bug: &Bug,
    exe: &Path,
    trace: &Path,
    tries: u32,
    budget: Duration,
) -> Option<(String, u32)> {
    let start = Instant::now();
    for n in 1..=tries {
        if start.elapsed() > budget {
            break;
        }
        let _ = std::fs::remove_dir_all(trace);
        let stdin = match &bug.stdin {
            Some(f) => Stdio::from(std::fs::File::open(corpus_dir().join(f)).unwrap()),
            None => Stdio::null(),
        };
        let mut args = vec!["record", "--hang-timeout", "2"];
        if n % 2 == 0 {
            args.push("--chaos");
        }
        args.extend(["-o", trace.to_str().unwrap(), exe.to_str().unwrap()]);
        args.extend(bug.frequent_args.iter().map(String::as_str));
        let o = reprise(root, &args, stdin);
        let Ok(r) = TraceReader::open(trace) else {
            panic!("{}: no trace: {}", bug.name, text(&o));
        };
        let Some(outcome) = r.outcome() else {
            panic!("{}: the trace has no outcome: {}", bug.name, text(&o));
        };
        if is_failure(bug, outcome, &o.stdout) {
            return Some((outcome.summary.clone(), n));
        }
    }
    None
}

/// `reprise replay TRACE --jobs 1 EXTRA...`.
fn replay(root: &Path, trace: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "replay",
        trace.to_str().unwrap(),
        "--jobs",
        "1",
        "--no-program-output",
    ];
    args.extend_from_slice(extra);
    reprise(root, &args, Stdio::null())
}

/// Runs `f` on each bug, two at a time.
fn for_each_bug<'a, T: Send>(
    bugs: &[&'a Bug],
    f: impl Fn(&'a Bug) -> T + Sync,
) -> Vec<(String, T)> {
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(bug) = bugs.get(i) else { break };
                let r = f(bug);
                results.lock().unwrap().push((bug.name.clone(), r));
            });
        }
    });
    results.into_inner().unwrap()
}

#[test]
fn recorded_failures_replay_and_saved_schedules_reproduce_every_time() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let m = load_manifest().unwrap();
    let built = build_manifest(&m, &corpus_dir(), &tmp.path().join("bin")).unwrap();
    let exe = |name: &str| built.iter().find(|b| b.name == name).unwrap().exe.clone();
    for name in REPRODUCIBLE {
        assert!(
            m.bugs.iter().any(|b| b.name == name),
            "{name} is not in the manifest"
        );
    }
    let root = tmp.path();

    // The reproducible programs: record a failure, replay until it
    // reproduces, then the saved schedule reproduces it every time.
    let reproducible: Vec<&Bug> = m
        .bugs
        .iter()
        .filter(|b| REPRODUCIBLE.contains(&b.name.as_str()))
        .collect();
    let results = for_each_bug(&reproducible, |bug| -> Result<String, String> {
        let trace = root.join(format!("{}-trace", bug.name));
        // Whether a recorded failure reproduces within the budget depends
        // on the recording: up to 6 failing recordings, 10 attempts each.
        let t = Instant::now();
        let mut runs_total = 0;
        let mut found = None;
        let mut last = String::new();
        for recording in 1..=6 {
            if t.elapsed() > Duration::from_secs(60) {
                break;
            }
            let recorded = record_failure(
                root,
                bug,
                &exe(&bug.name),
                &trace,
                60,
                Duration::from_secs(20),
            );
            let Some((summary, runs)) = recorded else {
                last = format!(
                    "no failing run in 60 recordings or 20 s after {runs_total} runs; {last}"
                );
                break;
            };
            runs_total += runs;
            let o = replay(
                root,
                &trace,
                &["--max-attempts", "10", "--hang-timeout", "1"],
            );
            if o.status.code() == Some(0) {
                found = Some((
                    summary,
                    recording,
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                ));
                break;
            }
            last = format!("recorded failure ({summary}) not reproduced:\n{}", text(&o));
        }
        let Some((summary, recordings, out)) = found else {
            return Err(format!("{NOT_FOUND}; the last: {last}"));
        };
        let runs = format!("{runs_total} (failing recording {recordings})");
        let attempts = out
            .split("in attempt ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let search = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut reproduced = 0;
        let mut other = Vec::new();
        for _ in 0..SAVED_REPLAYS {
            let o = replay(
                root,
                &trace,
                &["--max-attempts", "1", "--hang-timeout", "1"],
            );
            if o.status.code() == Some(0) && text(&o).contains("in attempt 1 ") {
                reproduced += 1;
            } else {
                other.push(text(&o));
            }
        }
        let per = t.elapsed().as_secs_f64() / SAVED_REPLAYS as f64;
        let line = format!(
            "recorded in run {runs} ({summary}); reproduced in attempt {attempts} ({search:.1} s); saved schedule {reproduced}/{SAVED_REPLAYS} ({per:.2} s each)"
        );
        let needed = if SAVED_MOSTLY.contains(&bug.name.as_str()) {
            SAVED_REPLAYS / 2
        } else {
            SAVED_REPLAYS
        };
        if reproduced >= needed {
            Ok(line)
        } else {
            // What the missed attempt ended with and its notes first: a
            // CI log keeps the start of a long message.
            let key: Vec<&str> = other[0]
                .lines()
                .filter(|l| l.contains(" x ") || l.contains("note"))
                .collect();
            Err(format!(
                "{line}; the miss: {}\nfirst miss:\n{}",
                key.join(" / "),
                other[0]
            ))
        }
    });
    let mut failures = Vec::new();
    let mut not_found = Vec::new();
    for (name, r) in &results {
        match r {
            Ok(line) => eprintln!("{name}: {line}"),
            // A program whose failing recordings did not come, or did not
            // reproduce within the budget, is reported and counted below.
            Err(e) if e.starts_with(NOT_FOUND) => {
                eprintln!("{name}: {e}");
                not_found.push(name.clone());
            }
            Err(e) => {
                eprintln!("{name}: FAILED: {e}");
                failures.push(name.clone());
            }
        }
    }
    assert!(
        not_found.len() <= 2,
        "only {} of {} programs reproduced: {not_found:?} did not",
        REPRODUCIBLE.len() - not_found.len(),
        REPRODUCIBLE.len()
    );
    eprintln!(
        "reproducible programs: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every other program: a failing recording, if one comes in the budget,
    // replays without an error (reproduced or not).
    let others: Vec<&Bug> = m
        .bugs
        .iter()
        .filter(|b| !REPRODUCIBLE.contains(&b.name.as_str()))
        .collect();
    let second = Instant::now();
    let results = for_each_bug(&others, |bug| -> Result<String, String> {
        let trace = root.join(format!("{}-trace", bug.name));
        let Some((summary, runs)) = record_failure(
            root,
            bug,
            &exe(&bug.name),
            &trace,
            30,
            Duration::from_secs(10),
        ) else {
            return Ok("no failing run recorded in the budget".into());
        };
        let o = replay(
            root,
            &trace,
            &["--max-attempts", "4", "--hang-timeout", "1"],
        );
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        match o.status.code() {
            Some(0) | Some(1) if out.starts_with("reprise: ") => Ok(format!(
                "recorded in run {runs} ({summary}); {}",
                out.lines().next().unwrap_or_default()
            )),
            _ => Err(format!("replay failed ({:?}):\n{}", o.status, text(&o))),
        }
    });
    for (name, r) in &results {
        match r {
            Ok(line) => eprintln!("{name}: {line}"),
            Err(e) => {
                eprintln!("{name}: FAILED: {e}");
                failures.push(name.clone());
            }
        }
    }
    eprintln!(
        "other programs: {:.1} s; total {:.1} s",
        second.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "failed: {failures:?}");
}
