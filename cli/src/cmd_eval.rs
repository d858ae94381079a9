//! `reprise eval`: the testbugs corpus, measured (see
//! `reprise_harness::eval`).

use anyhow::{Context, Result};
use clap::Args;
use reprise_harness::eval::{self, EvalOptions};

/// Measure the testbugs corpus: native failure rates, rates under `record`,
/// and how each search strategy replays each sketch's failing trace.
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
    /// With --record: also measure the rate under `record --chaos`, side
    /// by side with the plain one (and its cost per run). With --replay:
    /// record the failing runs with `--chaos`.
    #[arg(long)]
    chaos: bool,
    /// Runs per program (--replay: recordings per program and sketch, and
    /// native runs for its failure rate).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Seconds at most per program and mode (--replay: per program and
    /// sketch for recording, per argument set).
    #[arg(long, default_value_t = 60.0)]
    budget: f64,
    /// Only these programs (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Use each program's `frequent_args` (fails often) instead of its defaults.
    #[arg(long)]
    frequent: bool,
    /// The strategy × sketch evaluation: record each program under each of
    /// --sketches until a run fails (at most --runs recordings; its
    /// frequent arguments if the defaults never fail), then replay each
    /// failing trace with each of --strategies.
    #[arg(long)]
    replay: bool,
    /// Sketch levels to record for --replay (comma-separated: sync, sys).
    #[arg(long, value_delimiter = ',', default_value = "sync,sys")]
    sketches: Vec<String>,
    /// Search strategies to replay with for --replay (comma-separated:
    /// random, feedback, preempt, solver, hybrid).
    #[arg(long, value_delimiter = ',', default_value = "random,feedback")]
    strategies: Vec<String>,
    /// Replay attempts at most per program, sketch and strategy.
    #[arg(long, default_value_t = 10)]
    max_attempts: u32,
    /// --replay: print the rows as JSON instead of the markdown table.
    #[arg(long)]
    json: bool,
    /// --replay: keep each failing trace in this directory (created if
    /// missing) instead of a temporary one, to replay the same recordings
    /// again with `reprise replay`.
    #[arg(long, value_name = "DIR")]
    keep_traces: Option<std::path::PathBuf>,
}

pub fn run(a: EvalArgs) -> Result<u8> {
    let reprise = std::env::current_exe().context("cannot find the reprise executable")?;
    eval::run(&EvalOptions {
        native: a.native,
        record: a.record,
        sketch: a.sketch,
        chaos: a.chaos,
        runs: a.runs,
        budget: a.budget,
        only: a.only,
        frequent: a.frequent,
        replay: a.replay,
        sketches: a.sketches,
        strategies: a.strategies,
        max_attempts: a.max_attempts,
        json: a.json,
        keep_traces: a.keep_traces,
        reprise,
    })
}
