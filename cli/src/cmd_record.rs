//! `reprise record`: run a program and record a sketch of its run.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use reprise_recorder::{record, RecordOptions};
use reprise_schema::location;
use reprise_schema::{OutcomeKind, Sketch};

/// Run PROGRAM and record a sketch of its run into a new trace.
#[derive(Args)]
pub struct RecordArgs {
    /// How much to record: `sync` (synchronisation order), `sys` (+ system
    /// calls and their results, mmaps, output), `func` (+ the entries of
    /// the program's own functions: patched at start-up, or through
    /// -finstrument-functions if it was built with it), `bb`
    /// (+ its basic blocks; built with -fsanitize-coverage=trace-pc and
    /// -lreprise_cov) or `bb-N` (every N-th block of a thread).
    #[arg(long, default_value = "sys", value_parser = parse_sketch)]
    sketch: Sketch,
    /// The trace directory to create (default: a new one under the trace root).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Seconds without progress, while a thread waits in a lock or
    /// condition variable, after which the run is declared hung (or
    /// deadlocked) and killed.
    #[arg(long, default_value_t = 10.0)]
    hang_timeout: f64,
    /// A file holding the program's correct stdout: a run that exits
    /// normally but prints something else is recorded as a wrong-output
    /// failure, placed at the first line that differs.
    #[arg(long, value_name = "FILE")]
    expect_output: Option<PathBuf>,
    /// Pause each thread for a random while (10 µs to 2.6 ms) after
    /// random slices of its CPU time (20 µs to 1.3 ms), as rr's chaos mode
    /// does: a failure that needs an unlucky interleaving comes in fewer
    /// runs, at the cost of a slower run. The trace is an ordinary one.
    #[arg(long)]
    chaos: bool,
    /// Record up to RUNS runs, one after the other, until one fails (a
    /// crash, an assertion, a hang or deadlock, an exit status other than
    /// 0, or wrong output with --expect-output): that trace is kept, each
    /// passing run's is deleted. reprise exits with the failing run's
    /// status, or 0 if none failed (the last run's trace is then kept).
    #[arg(long, value_name = "RUNS")]
    until_failure: Option<u32>,
    /// The program to run, then its arguments: everything from the
    /// program on is the program's (`--version`, `--help` included).
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM"
    )]
    command: Vec<OsString>,
}

fn parse_sketch(s: &str) -> Result<Sketch, String> {
    s.parse()
}

pub fn run(a: RecordArgs) -> Result<u8> {
    let program = a.command[0].clone();
    let args = a.command[1..].to_vec();
    if !(a.hang_timeout > 0.0) {
        anyhow::bail!("--hang-timeout must be a positive number of seconds");
    }
    let expect_output = match &a.expect_output {
        Some(f) => Some(std::fs::read(f).with_context(|| {
            format!(
                "cannot read the expected output {}: give a readable file",
                f.display()
            )
        })?),
        None => None,
    };
    let name = std::path::Path::new(&program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "program".into());
    let (dir, root) = match &a.output {
        Some(d) => (d.clone(), None),
        None => {
            let root = location::trace_root().context("cannot find the trace directory")?;
            location::ensure_root(&root)?;
            (location::new_trace_dir(&root, &name)?, Some(root))
        }
    };
    let mut opts = RecordOptions::new(program.clone(), args.clone(), dir.clone());
    opts.level = a.sketch.level;
    opts.block_period = a.sketch.block_period;
    opts.hang_timeout = Duration::from_secs_f64(a.hang_timeout);
    opts.expect_output = expect_output;
    opts.chaos = a.chaos;
    let runs = a.until_failure.unwrap_or(1);
    if runs == 0 {
        anyhow::bail!("--until-failure needs at least 1 run");
    }
    let mut run = 0;
    let result = loop {
        run += 1;
        let result = match record(&opts) {
            Ok(r) => r,
            Err(e) => {
                // Nothing was recorded: do not leave an empty trace behind.
                if a.output.is_none() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e.into());
            }
        };
        // Ctrl-C ends the series: that run's trace is kept, as recorded.
        let kind = result.outcome.kind;
        if run == runs || failed(&result) || kind == OutcomeKind::Interrupted {
            break result;
        }
        eprintln!(
            "reprise: run {run} of {runs} passed ({}); recording again",
            result.outcome.summary
        );
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the passing run's trace {}", dir.display()))?;
    };
    if let Some(root) = root {
        location::set_latest(&root, &dir)?;
    }
    for w in &result.warnings {
        eprintln!("reprise: warning: {w}");
    }
    eprintln!(
        "reprise: recorded {} ({} sketch, {} events, {}): {}",
        result.summary.path.display(),
        a.sketch,
        result.summary.events,
        reprise_schema::listing::human_size(result.summary.bytes),
        result.outcome.summary
    );
    if a.until_failure.is_some() {
        if failed(&result) {
            eprintln!("reprise: run {run} of {runs} failed; its trace is kept");
        } else if result.outcome.kind != OutcomeKind::Interrupted {
            eprintln!(
                "reprise: no run failed in {runs} recordings (the last one's trace is kept): record more runs, or with --chaos"
            );
        }
    }
    Ok(result.exit_status.clamp(0, 255) as u8)
}

/// Whether a recorded run failed as replay counts failures, an
/// interruption aside (Ctrl-C: the user's, not the program's).
fn failed(r: &reprise_recorder::RecordResult) -> bool {
    r.outcome.kind != OutcomeKind::Interrupted && reprise_replayer::is_failure(&r.outcome)
}
