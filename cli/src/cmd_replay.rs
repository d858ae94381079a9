//! `reprise replay`: run a recorded program again under its sketch until
//! the recorded failure reproduces.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reprise_replayer::{
    attempt, is_failure, matches, AttemptOptions, AttemptResult, Replay, Strategy,
};
use reprise_schema::{location, read_schedule, write_schedule, ScheduleInfo};

/// Re-execute a recorded program under its sketch until the recorded
/// failure reproduces; save the reproducing schedule into the trace.
#[derive(Args)]
pub struct ReplayArgs {
    /// The trace: a name from `reprise ls`, a path, or (default) the latest.
    trace: Option<String>,
    /// Give up after this many attempts.
    #[arg(long, default_value_t = 100)]
    max_attempts: u32,
    /// Attempts run at once (default: the number of CPUs).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// How the schedule is explored: `random` (a seeded choice wherever the
    /// sketch leaves one; a seed is one schedule) or `preempt` (random, and
    /// threads are also preempted between events, after random time
    /// slices: finds races between two events, but is not deterministic).
    #[arg(long, default_value = "random", value_parser = ["random", "preempt"])]
    strategy: String,
    /// The first attempt's seed (the next ones take the following seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds after which an attempt is killed.
    #[arg(long, default_value_t = 30.0)]
    timeout_per_attempt: f64,
    /// Seconds without any event or CPU time after which an attempt is
    /// stuck (or, past the end of the recording, hung as recorded).
    #[arg(long, default_value_t = 2.0)]
    hang_timeout: f64,
    /// Append one line per attempt to this file.
    #[arg(long)]
    attempt_log: Option<PathBuf>,
    /// Keep each attempt's stdout and stderr in DIR/attempt-N/.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Replay even if the program changed since it was recorded.
    #[arg(long)]
    force: bool,
    /// Ignore a saved schedule; do not save one.
    #[arg(long)]
    no_schedule: bool,
}

/// `println!` that ignores a closed stdout (`| head`).
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn secs(v: f64, what: &str) -> Result<Duration> {
    if v.is_nan() || v <= 0.0 {
        anyhow::bail!("{what} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

fn default_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((std::process::id() as u64) << 32)
}

pub fn run(a: ReplayArgs) -> Result<u8> {
    let timeout = secs(a.timeout_per_attempt, "--timeout-per-attempt")?;
    let hang_timeout = secs(a.hang_timeout, "--hang-timeout")?;
    if a.max_attempts == 0 {
        anyhow::bail!("--max-attempts must be at least 1");
    }
    let strategy = Strategy::from_name(&a.strategy).unwrap_or(Strategy::Random);
    let root = location::trace_root().context("cannot find the trace directory")?;
    let dir = location::resolve_trace(&root, a.trace.as_deref())?;
    let replay = Replay::open(&dir, a.force)?;
    let Some(recorded) = replay.recorded.clone() else {
        anyhow::bail!(
            "{} has no outcome (the recording was cut short): there is no failure to reproduce",
            dir.display()
        );
    };
    let saved = if a.no_schedule {
        None
    } else {
        read_schedule(&dir)?
    };
    let base = a.seed.unwrap_or_else(default_seed);
    let seed_of = |i: u32| -> u64 {
        match &saved {
            Some(s) if i == 0 => s.seed,
            Some(_) => base.wrapping_add(i as u64 - 1),
            None => base.wrapping_add(i as u64),
        }
    };
    let strategy_of = |i: u32| -> Strategy {
        match &saved {
            Some(s) if i == 0 => Strategy::from_name(&s.strategy).unwrap_or(strategy),
            _ => strategy,
        }
    };
    let jobs = a
        .jobs
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .clamp(1, 64)
        .min(a.max_attempts as usize);
    let mut log = match &a.attempt_log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))?,
        ),
        None => None,
    };

    eprintln!(
        "reprise: replaying {} ({} sketch, {} events); recorded: {}",
        dir.display(),
        replay.header.level,
        replay.event_count(),
        recorded.summary
    );
    if let Some(s) = &saved {
        eprintln!(
            "reprise: trying the saved schedule first ({} seed {:#x})",
            s.strategy, s.seed
        );
    }
    let bar = ProgressBar::new(a.max_attempts as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} attempt {pos}/{len} {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }

    let started = Instant::now();
    let next = AtomicU32::new(0);
    let done = AtomicBool::new(false);
    // (attempt number, result) of every finished attempt.
    let results: Mutex<Vec<(u32, AttemptResult)>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                if done.load(Ordering::Acquire) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::AcqRel);
                if i >= a.max_attempts {
                    return;
                }
                let mut opts = AttemptOptions::new(seed_of(i));
                opts.strategy = strategy_of(i);
                opts.timeout = timeout;
                opts.hang_timeout = hang_timeout;
                opts.output_dir = a
                    .output_dir
                    .as_ref()
                    .map(|d| d.join(format!("attempt-{}", i + 1)));
                match attempt(&replay, &opts) {
                    Ok(r) => {
                        let ok = r.outcome().is_some_and(|o| matches(&recorded, o));
                        bar.inc(1);
                        bar.set_message(r.summary());
                        if ok {
                            done.store(true, Ordering::Release);
                        }
                        results
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((i, r));
                    }
                    Err(e) => {
                        errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(e.to_string());
                        done.store(true, Ordering::Release);
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = errors.into_inner().unwrap_or_default().into_iter().next() {
        anyhow::bail!("{e}");
    }
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    if let Some(f) = log.as_mut() {
        for (i, r) in &results {
            writeln!(
                f,
                "attempt {} seed {:#x} {:.3}s events {} decisions {}: {}",
                i + 1,
                r.seed,
                r.duration.as_secs_f64(),
                r.events_replayed,
                r.decisions,
                r.summary()
            )?;
        }
    }
    let found = results
        .iter()
        .find(|(_, r)| r.outcome().is_some_and(|o| matches(&recorded, o)));
    let diverged = results
        .iter()
        .filter(|(_, r)| r.outcome().is_none())
        .count();
    let elapsed = started.elapsed().as_secs_f64();
    match found {
        Some((i, r)) => {
            let what = if is_failure(&recorded) {
                "reproduced the recorded failure"
            } else {
                "reproduced the recorded run"
            };
            out!(
                "reprise: {what} in attempt {} ({} attempts run, {} diverged, {:.2} s)",
                i + 1,
                results.len(),
                diverged,
                elapsed
            );
            out!("  recorded:   {}", recorded.summary);
            out!("  reproduced: {}", r.summary());
            out!(
                "  replayed {} of {} recorded events{}",
                r.events_replayed,
                replay.event_count(),
                if r.completed {
                    String::new()
                } else {
                    format!(
                        " (the run ended {} events before the recording did)",
                        replay.event_count() as u64 - r.events_replayed
                    )
                }
            );
            if r.object_mismatches > 0 {
                out!(
                    "  note: {} events had another object address than recorded",
                    r.object_mismatches
                );
            }
            let already = saved.as_ref().is_some_and(|s| s.seed == r.seed);
            if !a.no_schedule && !already {
                let sched = ScheduleInfo {
                    strategy: strategy_of(*i).name().to_string(),
                    seed: r.seed,
                    attempts: i + 1,
                    decisions: Vec::new(),
                };
                write_schedule(&dir, &sched)?;
                out!(
                    "  schedule saved ({} seed {:#x}): the next `reprise replay` starts with it",
                    sched.strategy,
                    sched.seed
                );
            }
            Ok(0)
        }
        None => {
            out!(
                "reprise: not reproduced in {} attempts ({} diverged, {:.2} s)",
                results.len(),
                diverged,
                elapsed
            );
            out!("  recorded: {}", recorded.summary);
            // The most common endings, to say what happened instead.
            let mut seen: Vec<(String, usize)> = Vec::new();
            for (_, r) in &results {
                let s = r.summary();
                match seen.iter_mut().find(|(k, _)| *k == s) {
                    Some((_, n)) => *n += 1,
                    None => seen.push((s, 1)),
                }
            }
            seen.sort_by_key(|x| std::cmp::Reverse(x.1));
            for (s, n) in seen.iter().take(3) {
                out!("  {n} x {s}");
            }
            Ok(1)
        }
    }
}
