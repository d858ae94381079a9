//! `reprise eval`: the testbugs corpus, measured.
//!
//! `--native` runs each program N times natively and reports its failure
//! rate. `--record` also runs it N times under `reprise record` and reports
//! the failure rate there beside the native one: a recorder that disturbs
//! timing makes rare failures vanish, and then they never get recorded.
//!
//! `--replay` is the strategy × sketch evaluation: each program is recorded
//! under each sketch until a run fails, and each failing trace is replayed
//! with each search strategy; the table says how many recordings the
//! failure took, in which attempt each strategy reproduced it, whether the
//! failure is the one the manifest expects, and whether the feedback
//! search's root cause names the manifest's racing lines.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reprise_testbugs::{
    build_manifest, corpus_dir, default_build_dir, load_manifest, run_native_in, Bug, Built,
    Failure, Outcome, RateRow, RateTable,
};

mod miss;
mod replay;
mod report;

/// Settings of an evaluation (see the `reprise eval` arguments).
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Measure each program's native failure rate.
    pub native: bool,
    /// Also measure its failure rate under `reprise record` (at `sketch`).
    pub record: bool,
    /// Sketch level for `record`: sync or sys.
    pub sketch: String,
    /// With `record`: also measure the rate under `record --chaos`; with
    /// `replay`: record the failing runs with `--chaos`.
    pub chaos: bool,
    /// Runs per program (`replay`: recordings per program and sketch, and
    /// native runs for its failure rate).
    pub runs: usize,
    /// Seconds at most per program and mode (`replay`: per program and
    /// sketch for recording, per argument set).
    pub budget: f64,
    /// Only these programs; empty: all.
    pub only: Vec<String>,
    /// Use each program's `frequent_args` (fails often) instead of its defaults.
    pub frequent: bool,
    /// The strategy × sketch evaluation: record each program under each of
    /// `sketches` until a run fails (at most `runs` recordings; its
    /// frequent arguments if the defaults never fail), then replay each
    /// failing trace with each of `strategies`.
    pub replay: bool,
    /// Sketch levels to record for `replay` (sync, sys).
    pub sketches: Vec<String>,
    /// Search strategies to replay with for `replay` (random, feedback,
    /// preempt).
    pub strategies: Vec<String>,
    /// Replay attempts at most per program, sketch and strategy.
    pub max_attempts: u32,
    /// `replay`: print the rows as JSON instead of the markdown table.
    pub json: bool,
    /// `replay`: keep the failing traces in this directory (one per
    /// program and sketch) instead of a temporary one, to replay them
    /// again (another build, another strategy) on the same recordings.
    pub keep_traces: Option<PathBuf>,
    /// The `reprise` executable that records.
    pub reprise: PathBuf,
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

/// How a rate is measured: the program alone, or under `reprise record`
/// with or without `--chaos`.
#[derive(Clone, Copy, PartialEq)]
enum RunUnder {
    Native,
    Record,
    RecordChaos,
}

impl RunUnder {
    /// How the progress lines name the mode.
    fn label(self) -> &'static str {
        match self {
            RunUnder::Native => "native",
            RunUnder::Record => "recorded",
            RunUnder::RecordChaos => "chaos",
        }
    }
}

fn measure(
    bug: &Bug,
    built: &Built,
    args: &EvalOptions,
    argv: &[String],
    under: RunUnder,
) -> Result<RateRow> {
    let corpus = corpus_dir();
    let traces = tempfile::tempdir().context("cannot create a temporary directory")?;
    let reprise = Built {
        name: bug.name.clone(),
        exe: args.reprise.clone(),
    };
    let start = Instant::now();
    let budget = Duration::from_secs_f64(args.budget);
    let (mut runs, mut failures, mut matching) = (0, 0, 0);
    while runs < args.runs && start.elapsed() < budget {
        let result = if under != RunUnder::Native {
            let dir = traces.path().join(format!("t{runs}"));
            let mut full: Vec<String> = ["record", "--sketch", &args.sketch, "--hang-timeout", "2"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if under == RunUnder::RecordChaos {
                full.push("--chaos".into());
            }
            full.push("-o".into());
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
        args: argv.to_vec(),
        runs,
        failures,
        matching,
        cut_by_budget: runs < args.runs,
        elapsed: start.elapsed(),
    })
}

/// Runs the evaluation; prints its table on stdout, its progress on
/// stderr.
pub fn run(a: &EvalOptions) -> Result<u8> {
    if !a.native && !a.record && !a.replay {
        bail!("say what to measure: --native (native failure rates), --record (rates under record), --replay (record each sketch until failure, replay with each strategy)");
    }
    if a.chaos && !a.record && !a.replay {
        bail!("--chaos goes with --record (rates side by side) or --replay (failing runs recorded with --chaos)");
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
        return replay::run_replay(a, &m.bugs, &built);
    }
    let mut native_rows = Vec::new();
    let mut record_rows = Vec::new();
    let mut chaos_rows = Vec::new();
    for bug in &m.bugs {
        let b = built
            .iter()
            .find(|b| b.name == bug.name)
            .context("program not built")?;
        let argv = if a.frequent {
            &bug.frequent_args
        } else {
            &bug.args
        };
        // Each mode asked for, measured and its rate shown as it comes.
        let modes = [
            (a.native, RunUnder::Native, &mut native_rows),
            (a.record, RunUnder::Record, &mut record_rows),
            (a.chaos, RunUnder::RecordChaos, &mut chaos_rows),
        ];
        for (wanted, under, rows) in modes {
            if !wanted {
                continue;
            }
            let r = measure(bug, b, a, argv, under)?;
            eprintln!(
                "  {:<28} {:<8} {:>4}/{:<4} failed ({:.2}%)",
                r.name,
                under.label(),
                r.failures,
                r.runs,
                r.rate_percent()
            );
            rows.push(r);
        }
    }
    if a.chaos {
        print!(
            "{}",
            chaos_table(&native_rows, &record_rows, &chaos_rows, &a.sketch)
        );
        return Ok(0);
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

/// The rates under `record` and `record --chaos` side by side (and the
/// native one when measured).
fn chaos_table(
    native: &[RateRow],
    recorded: &[RateRow],
    chaos: &[RateRow],
    sketch: &str,
) -> String {
    let mut t = String::new();
    let native_cols = if native.is_empty() { "" } else { " native % |" };
    t.push_str(&format!(
        "| program | kind |{native_cols} recorded ({sketch}) failures | recorded % | --chaos failures | --chaos % | --chaos s/run vs plain |\n"
    ));
    t.push_str(if native.is_empty() {
        "|---|---|---|---|---|---|---|\n"
    } else {
        "|---|---|---|---|---|---|---|---|\n"
    });
    for (i, (r, c)) in recorded.iter().zip(chaos).enumerate() {
        let n = native
            .get(i)
            .map(|n| format!(" {:.2} |", n.rate_percent()))
            .unwrap_or_default();
        let per = |x: &RateRow| x.elapsed.as_secs_f64() / x.runs.max(1) as f64;
        t.push_str(&format!(
            "| {} | {} |{n} {}/{} | {:.2} | {}/{} | {:.2} | {:.2}x |\n",
            r.name,
            r.kind.as_str(),
            r.failures,
            r.runs,
            r.rate_percent(),
            c.failures,
            c.runs,
            c.rate_percent(),
            per(c) / per(r).max(1e-9)
        ));
    }
    t
}
