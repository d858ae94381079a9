//! Measures the native failure rate of every corpus program.
//!
//! cargo run -p reprise-testbugs --release --bin native-rates -- --runs 1000
//!   [--budget SECS] [--jobs N] [--timeout SECS] [--only NAME[,NAME]] [--frequent]

use std::process::ExitCode;
use std::time::Duration;

use reprise_testbugs::{
    build_manifest, corpus_dir, default_build_dir, load_manifest, native_rates_with, RateOptions,
    RateTable,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("native-rates: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = RateOptions::default();
    let mut only: Option<Vec<String>> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--runs" => opts.n_runs = val("--runs")?.parse()?,
            "--budget" => opts.budget = Duration::from_secs_f64(val("--budget")?.parse()?),
            "--jobs" => opts.jobs = val("--jobs")?.parse()?,
            "--timeout" => opts.timeout = Duration::from_secs_f64(val("--timeout")?.parse()?),
            "--only" => only = Some(val("--only")?.split(',').map(String::from).collect()),
            "--frequent" => opts.frequent = true,
            "-h" | "--help" => {
                println!("usage: native-rates [--runs N] [--budget SECS] [--jobs N] [--timeout SECS] [--only NAME,..] [--frequent]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut m = load_manifest()?;
    m.validate(&corpus_dir())?;
    if let Some(only) = &only {
        m.bugs.retain(|b| only.contains(&b.name));
    }
    let built = build_manifest(&m, &corpus_dir(), &default_build_dir())?;
    eprintln!(
        "{} programs, up to {} runs / {:.0} s each, {} at a time, hang timeout {:.1} s, {} args",
        m.bugs.len(),
        opts.n_runs,
        opts.budget.as_secs_f64(),
        opts.jobs,
        opts.timeout.as_secs_f64(),
        if opts.frequent { "frequent" } else { "default" }
    );
    let rows = native_rates_with(&m, &built, &corpus_dir(), &opts, |r| {
        eprintln!(
            "  {:<28} {:>5} runs {:>5} failures ({:.2}%) {:>4} matching, {:.1} s{}",
            r.name,
            r.runs,
            r.failures,
            r.rate_percent(),
            r.matching,
            r.elapsed.as_secs_f64(),
            if r.cut_by_budget { " (budget)" } else { "" }
        )
    })?;
    print!("{}", RateTable(&rows));
    Ok(())
}
