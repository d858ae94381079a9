//! Native failure rates: many runs of each program at its default arguments.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::manifest::{corpus_dir, load_manifest, Bug, BugKind, Manifest};
use crate::run::{build_manifest, run_native_in, Built, Outcome, DEFAULT_TIMEOUT};
use crate::Error;

/// One program's measured native failure rate.
#[derive(Debug, Clone)]
pub struct RateRow {
    pub name: String,
    pub kind: BugKind,
    /// The expected failure, as text ("SIGSEGV", "assert", "hang", ...).
    pub expected: String,
    pub args: Vec<String>,
    pub runs: usize,
    /// Runs that failed in any way.
    pub failures: usize,
    /// Failed runs whose signature matches the manifest.
    pub matching: usize,
    /// True when the time budget ended the measurement before `n_runs`.
    pub cut_by_budget: bool,
    pub elapsed: Duration,
}

impl RateRow {
    /// Failure rate in percent.
    pub fn rate_percent(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            100.0 * self.failures as f64 / self.runs as f64
        }
    }
}

/// Options of a rate measurement.
#[derive(Debug, Clone)]
pub struct RateOptions {
    /// Runs per program (at most).
    pub n_runs: usize,
    /// Wall-clock budget per program; the measurement stops when it is spent.
    pub budget: Duration,
    /// Runs at a time (the machine has 2 cores: 2).
    pub jobs: usize,
    /// The hang timeout of one run.
    pub timeout: Duration,
    /// Use `frequent_args` instead of `args`.
    pub frequent: bool,
}

impl Default for RateOptions {
    fn default() -> Self {
        RateOptions {
            n_runs: 1000,
            budget: Duration::from_secs(120),
            jobs: 2,
            timeout: DEFAULT_TIMEOUT,
            frequent: false,
        }
    }
}

/// Where `native_rates` builds the programs: `$CARGO_TARGET_DIR/testbugs`
/// or the workspace's `target/testbugs`.
pub fn default_build_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("testbugs"),
        None => corpus_dir().join("..").join("target").join("testbugs"),
    }
}

/// Builds every program and measures its native failure rate at its default
/// arguments: up to `n_runs` runs or `budget` per program, `jobs` at a time.
pub fn native_rates(n_runs: usize, budget: Duration, jobs: usize) -> Result<Vec<RateRow>, Error> {
    let m = load_manifest()?;
    let built = build_manifest(&m, &corpus_dir(), &default_build_dir())?;
    let opts = RateOptions {
        n_runs,
        budget,
        jobs,
        ..RateOptions::default()
    };
    native_rates_with(&m, &built, &corpus_dir(), &opts, |_| {})
}

/// The general form: programs already built, a callback after each row.
pub fn native_rates_with(
    manifest: &Manifest,
    built: &[Built],
    corpus: &Path,
    opts: &RateOptions,
    mut on_row: impl FnMut(&RateRow),
) -> Result<Vec<RateRow>, Error> {
    let mut rows = Vec::new();
    for bug in &manifest.bugs {
        let b = built
            .iter()
            .find(|b| b.name == bug.name)
            .ok_or_else(|| Error::NotBuilt(bug.name.clone()))?;
        let row = measure(bug, b, corpus, opts)?;
        on_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// Measures one program.
pub fn measure(
    bug: &Bug,
    built: &Built,
    corpus: &Path,
    opts: &RateOptions,
) -> Result<RateRow, Error> {
    let args = if opts.frequent {
        &bug.frequent_args
    } else {
        &bug.args
    };
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let tally = Mutex::new((0usize, 0usize, 0usize, None::<Error>));
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) || start.elapsed() >= opts.budget {
                    break;
                }
                if next.fetch_add(1, Ordering::Relaxed) >= opts.n_runs {
                    break;
                }
                let r = run_native_in(bug, built, args, opts.timeout, corpus);
                let mut t = tally.lock().unwrap();
                match r {
                    Ok(r) => {
                        t.0 += 1;
                        if let Outcome::Failed(_) = r.outcome {
                            t.1 += 1;
                            if r.matches_expected(bug) {
                                t.2 += 1;
                            }
                        }
                    }
                    Err(e) => {
                        t.3.get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let (runs, failures, matching, err) = tally.into_inner().unwrap();
    if let Some(e) = err {
        return Err(e);
    }
    Ok(RateRow {
        name: bug.name.clone(),
        kind: bug.kind,
        expected: bug.expect.to_string(),
        args: args.clone(),
        runs,
        failures,
        matching,
        cut_by_budget: runs < opts.n_runs,
        elapsed: start.elapsed(),
    })
}

/// A printable table of rate rows.
pub struct RateTable<'a>(pub &'a [RateRow]);

impl fmt::Display for RateTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| {:<28} | {:<21} | {:<12} | {:>5} | {:>8} | {:>8} | {:>7} |",
            "program", "kind", "expected", "runs", "failures", "matching", "rate %"
        )?;
        writeln!(
            f,
            "|{:-<30}|{:-<23}|{:-<14}|{:->7}|{:->10}|{:->10}|{:->9}|",
            "", "", "", "", "", "", ""
        )?;
        for r in self.0 {
            writeln!(
                f,
                "| {:<28} | {:<21} | {:<12} | {:>5} | {:>8} | {:>8} | {:>7.2} |",
                r.name,
                r.kind.as_str(),
                r.expected,
                r.runs,
                r.failures,
                r.matching,
                r.rate_percent()
            )?;
        }
        let under = |p: f64| {
            self.0
                .iter()
                .filter(|r| r.failures > 0 && r.rate_percent() < p)
                .count()
        };
        let never = self.0.iter().filter(|r| r.failures == 0).count();
        writeln!(
            f,
            "\n{} programs; {} fail in (0, 5%) of runs, {} in (0, 1%); {} never failed",
            self.0.len(),
            under(5.0),
            under(1.0),
            never
        )
    }
}
