//! `reprise bench record` and `reprise bench replay`: how much recording and
//! replaying slow programs down (see `reprise_harness::bench`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use reprise_harness::bench::{self, BenchOptions, What};

/// Measure recording overhead: native vs `reprise record` wall time and trace
/// size on compressors and microbenchmarks.
#[derive(Args)]
pub struct BenchArgs {
    /// What to benchmark: `record` (recording overhead), `replay`
    /// (replay time of a recorded non-failing `pigz -p 2` run) or `solver`
    /// (one solver query's time on runs of 1k, 10k and 100k accesses) or
    /// `debug` (`bisect` and `goto` on a reproduced run of 1M events).
    #[arg(value_parser = ["record", "replay", "solver", "debug"])]
    what: String,
    /// Timed rounds per workload; each round runs it natively and recorded
    /// at each sketch level, in alternating order [default: 5, 2 with --quick].
    #[arg(long)]
    rounds: Option<u32>,
    /// Size in MB of the generated file the compressors compress
    /// [default: 100 for record, 20 for replay; 2 with --quick].
    #[arg(long)]
    size_mb: Option<u64>,
    /// Smoke test: small inputs and 2 rounds (the goals are not meaningful).
    #[arg(long)]
    quick: bool,
    /// Run only these workloads (comma-separated: pigz, pbzip2, xz, locks, reads;
    /// memcached, nginx and redis, servers under a client's load, run only when named).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the generated input and the built microbenchmarks are kept
    /// [default: $XDG_CACHE_HOME/reprise-bench or ~/.cache/reprise-bench].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Seconds after which a single run is killed and the benchmark fails.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// No effect, kept for old scripts: the benchmark never installs
    /// packages (scripts/setup.sh does); a missing tool is an error.
    #[arg(long, hide = true)]
    no_install: bool,
    /// Exit with status 1 if a goal is not met.
    #[arg(long)]
    check: bool,
    /// `record`: the sketches to measure (comma-separated: sync, sys, func,
    /// bb, bb-N) [default: sync,sys]. func and bb run the cpu, locks and
    /// reads microbenchmarks built with -finstrument-functions or
    /// -fsanitize-coverage=trace-pc, against the same build natively.
    #[arg(long = "sketch", value_delimiter = ',')]
    sketches: Vec<String>,
}

pub fn run(a: BenchArgs) -> Result<u8> {
    let _ = a.no_install;
    let reprise = std::env::current_exe().context("cannot find the reprise executable")?;
    bench::run(&BenchOptions {
        what: match a.what.as_str() {
            "replay" => What::Replay,
            "solver" => What::Solver,
            "debug" => What::Debug,
            _ => What::Record,
        },
        rounds: a.rounds,
        size_mb: a.size_mb,
        quick: a.quick,
        only: a.only,
        cache_dir: a.cache_dir,
        timeout: a.timeout,
        check: a.check,
        sketches: a.sketches,
        reprise,
    })
}
