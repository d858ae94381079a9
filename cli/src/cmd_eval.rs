//! `reprise eval`: the testbugs corpus, measured.
//!
//! `--native` runs each program N times natively and reports its failure
//! rate. `--record` also runs it N times under `reprise record` and reports
//! the failure rate there beside the native one: a recorder that disturbs
//! timing makes rare failures vanish, and then they never get recorded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use reprise_testbugs::{
    build_manifest, corpus_dir, default_build_dir, load_manifest, run_native_in, Bug, Built,
    Failure, Outcome, RateRow, RateTable,
};

/// Measure the testbugs corpus: native failure rates, and rates under `record`.
#[derive(Args)]
pub struct EvalArgs {
    /// Measure each program's native failure rate.
    #[arg(long)]
    native: bool,
    /// Also measure its failure rate under `reprise record` (with --sketch).
    #[arg(long)]
    record: bool,
    /// Sketch level for --record.
    #[arg(long, default_value = "sys")]
    sketch: String,
    /// Runs per program.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Seconds at most per program and mode.
    #[arg(long, default_value_t = 60.0)]
    budget: f64,
    /// Only these programs (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Use each program's `frequent_args` (fails often) instead of its defaults.
    #[arg(long)]
    frequent: bool,
    /// Record each program until a run fails (at most --runs recordings;
    /// its frequent arguments if the defaults never fail), then replay the
    /// trace until the failure reproduces, and replay the reproducing
    /// schedule again --repeat times.
    #[arg(long)]
    replay: bool,
    /// Replay attempts at most per program.
    #[arg(long, default_value_t = 100)]
    max_attempts: u32,
    /// Replays of the reproducing schedule that must give the same failure.
    #[arg(long, default_value_t = 5)]
    repeat: u32,
}

/// One program's row of the replay evaluation.
struct ReplayRow {
    name: String,
    kind: &'static str,
    args: &'static str,
    records: usize,
    attempts: Option<u32>,
    time: Duration,
    repeats: (u32, u32),
    note: String,
}

/// Records `bug` until a run fails with a failure (any); returns the trace.
fn record_until_failure(
    bug: &Bug,
    built: &Built,
    args: &[String],
    a: &EvalArgs,
    dir: &std::path::Path,
) -> Result<(usize, Option<PathBuf>)> {
    let corpus = corpus_dir();
    let reprise = Built {
        name: bug.name.clone(),
        exe: std::env::current_exe()?,
    };
    let start = Instant::now();
    let budget = Duration::from_secs_f64(a.budget);
    let mut n = 0;
    while n < a.runs && start.elapsed() < budget {
        n += 1;
        let trace = dir.join(format!("{}-{n}", bug.name));
        let mut full: Vec<String> = ["record", "--sketch", &a.sketch, "--hang-timeout", "2", "-o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        full.push(trace.to_string_lossy().into_owned());
        full.push(built.exe.to_string_lossy().into_owned());
        full.extend(args.iter().cloned());
        let r = run_native_in(bug, &reprise, &full, Duration::from_secs(20), &corpus)?;
        let failed = !r.passed();
        if failed && classify_recorded(r.outcome.clone(), 128 + libc::SIGKILL) != Outcome::Passed {
            // The trace's own outcome is what replay compares against.
            if let Ok(rd) = reprise_schema::TraceReader::open(&trace) {
                if rd.outcome().is_some_and(reprise_replayer::is_failure) {
                    return Ok((n, Some(trace)));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&trace);
    }
    Ok((n, None))
}

fn evaluate_replay(
    bug: &Bug,
    built: &Built,
    a: &EvalArgs,
    dir: &std::path::Path,
) -> Result<ReplayRow> {
    let mut row = ReplayRow {
        name: bug.name.clone(),
        kind: bug.kind.as_str(),
        args: "default",
        records: 0,
        attempts: None,
        time: Duration::ZERO,
        repeats: (0, 0),
        note: String::new(),
    };
    let (mut n, mut trace) = record_until_failure(bug, built, &bug.args, a, dir)?;
    if trace.is_none() {
        row.args = "frequent";
        let (m, t) = record_until_failure(bug, built, &bug.frequent_args, a, dir)?;
        n += m;
        trace = t;
    }
    row.records = n;
    let Some(trace) = trace else {
        row.note = "no failing run recorded".into();
        return Ok(row);
    };
    let replay = reprise_replayer::Replay::open(&trace, false)?;
    let recorded = replay.recorded.clone().context("trace has no outcome")?;
    let start = Instant::now();
    let mut seed_found = None;
    let mut last = String::new();
    for i in 0..a.max_attempts {
        let seed = 0x5eed_0000 + i as u64;
        let mut opts = reprise_replayer::AttemptOptions::new(seed);
        opts.timeout = Duration::from_secs(20);
        let r = reprise_replayer::attempt(&replay, &opts)?;
        if r.outcome()
            .is_some_and(|o| reprise_replayer::matches(&recorded, o))
        {
            seed_found = Some((i + 1, seed));
            break;
        }
        last = r.summary();
    }
    row.time = start.elapsed();
    let Some((attempts, seed)) = seed_found else {
        row.note = format!("last attempt: {last}");
        return Ok(row);
    };
    row.attempts = Some(attempts);
    let mut same = 0;
    for _ in 0..a.repeat {
        let mut opts = reprise_replayer::AttemptOptions::new(seed);
        opts.timeout = Duration::from_secs(20);
        let r = reprise_replayer::attempt(&replay, &opts)?;
        if r.outcome()
            .is_some_and(|o| reprise_replayer::matches(&recorded, o))
        {
            same += 1;
        }
    }
    row.repeats = (same, a.repeat);
    row.note = recorded.summary.clone();
    Ok(row)
}

/// How one run under `reprise record` failed: reprise exits with 128+signal
/// for a program killed by a signal, and kills a hung program.
fn classify_recorded(outcome: Outcome, hang_code: i32) -> Outcome {
    match outcome {
        Outcome::Failed(Failure::ExitCode(c)) if c == hang_code => Outcome::Failed(Failure::Hang),
        Outcome::Failed(Failure::ExitCode(c)) if c > 128 && c < 160 => {
            Outcome::Failed(Failure::Signal(
                nix::sys::signal::Signal::try_from(c - 128)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            ))
        }
        o => o,
    }
}

fn measure(bug: &Bug, built: &Built, args: &EvalArgs, recorded: bool) -> Result<RateRow> {
    let corpus = corpus_dir();
    let argv = if args.frequent {
        &bug.frequent_args
    } else {
        &bug.args
    };
    let traces = tempfile::tempdir().context("cannot create a temporary directory")?;
    let reprise = Built {
        name: bug.name.clone(),
        exe: std::env::current_exe()?,
    };
    let start = Instant::now();
    let budget = Duration::from_secs_f64(args.budget);
    let (mut runs, mut failures, mut matching) = (0, 0, 0);
    while runs < args.runs && start.elapsed() < budget {
        let result = if recorded {
            let dir = traces.path().join(format!("t{runs}"));
            let mut full: Vec<String> = [
                "record",
                "--sketch",
                &args.sketch,
                "--hang-timeout",
                "2",
                "-o",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            full.push(dir.to_string_lossy().into_owned());
            full.push(built.exe.to_string_lossy().into_owned());
            full.extend(argv.iter().cloned());
            let mut r = run_native_in(bug, &reprise, &full, Duration::from_secs(20), &corpus)?;
            r.outcome = classify_recorded(r.outcome, 128 + libc::SIGKILL);
            let _ = std::fs::remove_dir_all(&dir);
            r
        } else {
            run_native_in(bug, built, argv, Duration::from_secs(5), &corpus)?
        };
        runs += 1;
        if !result.passed() {
            failures += 1;
            if result.matches_expected(bug) {
                matching += 1;
            }
        }
    }
    Ok(RateRow {
        name: bug.name.clone(),
        kind: bug.kind,
        expected: bug.expect.to_string(),
        args: argv.clone(),
        runs,
        failures,
        matching,
        cut_by_budget: runs < args.runs,
        elapsed: start.elapsed(),
    })
}

pub fn run(a: EvalArgs) -> Result<u8> {
    if !a.native && !a.record && !a.replay {
        bail!("say what to measure: --native (native failure rates), --record (rates under record), --replay (record until failure, then replay)");
    }
    if a.sketch != "sync" && a.sketch != "sys" {
        bail!("--sketch must be sync or sys");
    }
    let mut m = load_manifest()?;
    m.validate(&corpus_dir())?;
    if !a.only.is_empty() {
        m.bugs.retain(|b| a.only.contains(&b.name));
        if m.bugs.is_empty() {
            bail!("no program in the corpus is named {}", a.only.join(", "));
        }
    }
    let build_dir: PathBuf = default_build_dir();
    eprintln!(
        "building {} programs into {}",
        m.bugs.len(),
        build_dir.display()
    );
    let built = build_manifest(&m, &corpus_dir(), &build_dir)?;
    if a.replay {
        let traces = tempfile::tempdir().context("cannot create a temporary directory")?;
        let mut rows = Vec::new();
        for bug in &m.bugs {
            let b = built
                .iter()
                .find(|b| b.name == bug.name)
                .context("program not built")?;
            let r = evaluate_replay(bug, b, &a, traces.path())?;
            eprintln!(
                "  {:<28} recorded {} runs, replay: {}",
                r.name,
                r.records,
                match r.attempts {
                    Some(n) => format!(
                        "reproduced in attempt {n}, schedule again {}/{}",
                        r.repeats.0, r.repeats.1
                    ),
                    None => format!("not reproduced ({})", r.note),
                }
            );
            rows.push(r);
        }
        println!(
            "| program | kind | args | runs recorded until failure | attempts to reproduce ({} max) | time s | saved schedule reproduces |",
            a.max_attempts
        );
        println!("|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {} | {} | {:.1} | {} |",
                r.name,
                r.kind,
                r.args,
                r.records,
                r.attempts
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "not reproduced".into()),
                r.time.as_secs_f64(),
                if r.attempts.is_some() {
                    format!("{}/{}", r.repeats.0, r.repeats.1)
                } else {
                    "-".into()
                }
            );
        }
        let reproduced = rows.iter().filter(|r| r.attempts.is_some()).count();
        println!(
            "\n{} programs; {} reproduced within {} attempts ({} sketch, random strategy)",
            rows.len(),
            reproduced,
            a.max_attempts,
            a.sketch
        );
        return Ok(0);
    }
    let mut native_rows = Vec::new();
    let mut record_rows = Vec::new();
    for bug in &m.bugs {
        let b = built
            .iter()
            .find(|b| b.name == bug.name)
            .context("program not built")?;
        if a.native {
            let r = measure(bug, b, &a, false)?;
            eprintln!(
                "  {:<28} native   {:>4}/{:<4} failed ({:.2}%)",
                r.name,
                r.failures,
                r.runs,
                r.rate_percent()
            );
            native_rows.push(r);
        }
        if a.record {
            let r = measure(bug, b, &a, true)?;
            eprintln!(
                "  {:<28} recorded {:>4}/{:<4} failed ({:.2}%)",
                r.name,
                r.failures,
                r.runs,
                r.rate_percent()
            );
            record_rows.push(r);
        }
    }
    if a.native && a.record {
        println!("| program | kind | expected | native failures | native % | recorded ({}) failures | recorded % |", a.sketch);
        println!("|---|---|---|---|---|---|---|");
        for (n, r) in native_rows.iter().zip(&record_rows) {
            println!(
                "| {} | {} | {} | {}/{} | {:.2} | {}/{} | {:.2} |",
                n.name,
                n.kind.as_str(),
                n.expected,
                n.failures,
                n.runs,
                n.rate_percent(),
                r.failures,
                r.runs,
                r.rate_percent()
            );
        }
    } else if a.native {
        print!("{}", RateTable(&native_rows));
    } else {
        print!("{}", RateTable(&record_rows));
    }
    Ok(0)
}
