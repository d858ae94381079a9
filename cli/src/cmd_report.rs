//! `reprise report`: the reproduced interleaving as one self-contained
//! HTML page (see `reprise_report`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use reprise_replayer::{AttemptOptions, Replay};
use reprise_report::Analysis;
use reprise_schema::location;

/// Draw a trace's reproduced interleaving as one HTML file: a lane per
/// thread, the sketch events in their recorded order, the flipped races
/// and the failure. Replays the saved reproducing schedule once to
/// observe its racing accesses.
#[derive(Args)]
pub struct ReportArgs {
    /// The trace: a name from `reprise ls`, a path, or (default) the latest.
    trace: Option<String>,
    /// Where to write the page (default: report.html in the trace).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Seconds after which the replay of the saved schedule is killed.
    #[arg(long, default_value_t = 30.0)]
    timeout_per_attempt: f64,
    /// Replay even if the program changed since it was recorded.
    #[arg(long)]
    force: bool,
}

pub fn run(a: ReportArgs) -> Result<u8> {
    if a.timeout_per_attempt.is_nan() || a.timeout_per_attempt <= 0.0 {
        anyhow::bail!("--timeout-per-attempt must be a positive number of seconds");
    }
    let root = location::trace_root().context("cannot find the trace directory")?;
    let dir = location::resolve_trace(&root, a.trace.as_deref())?;
    let out = a.output.clone().unwrap_or_else(|| dir.join("report.html"));
    // A damaged or foreign directory is one error line, before anything else.
    reprise_schema::TraceReader::open(&dir)?;
    let (replay, analysis) = match reprise_replayer::schedule::read_saved(&dir)? {
        None => {
            let note = "no reproducing schedule saved yet: run `reprise replay` first; drawing the recorded sketch alone";
            eprintln!("reprise: {note}");
            // Only to place accesses, which there are none of: not needed.
            (None, Analysis::sketch_only(note))
        }
        Some((schedule, found_in)) => {
            let replay = Replay::open(&dir, a.force)?;
            let mut base = AttemptOptions::new(schedule.seed);
            base.timeout = Duration::from_secs_f64(a.timeout_per_attempt);
            eprintln!(
                "reprise: replaying the saved schedule once, observed ({} seed {:#x}, {} flip(s))",
                schedule.policy_name(),
                schedule.seed,
                schedule.flips.len()
            );
            reprise_replayer::stop_on_interrupt();
            let analysis = reprise_report::replay_saved(&replay, &schedule, found_in, base)?;
            if let Some(n) = &analysis.note {
                eprintln!("reprise: {n}");
            }
            (Some(replay), analysis)
        }
    };
    reprise_report::write(&dir, replay.as_ref(), &analysis, &out)?;
    eprintln!("reprise: report written to {}", out.display());
    Ok(0)
}
