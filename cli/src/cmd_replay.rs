//! `reprise replay`: run a recorded program again under its sketch until
//! the recorded failure reproduces.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reprise_feedback::planner::search_with;
use reprise_feedback::rootcause::{explain, Report};
use reprise_feedback::search::{Role, Run, SearchOptions, SearchResult};
use reprise_replayer::observe::FlipState;
use reprise_replayer::schedule::{read_saved, save as save_schedule};
use reprise_replayer::Schedule;
use reprise_replayer::{is_failure, AttemptOptions, Replay, Strategy};
use reprise_schema::{location, FlipInfo, OutcomeInfo};

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
    /// How the schedule is explored: `feedback` (observe the races of a
    /// failed attempt and flip them, nearest the failure first), `random`
    /// (seeded choices at sketch events and random preemptions at memory
    /// accesses; a seed is one schedule) or `preempt` (random choices, and
    /// threads preempted after random time slices: not deterministic) or
    /// `solver` (z3 chooses each schedule: one in which the failing
    /// thread's last shared reads read values no attempt read yet, with
    /// as few changes as it can; it says when no such schedule is left)
    /// or `hybrid` (feedback for the first 5 attempts, then the solver,
    /// starting from what feedback observed) or `auto`, the default
    /// (feedback for the first 10 attempts, then the solver and feedback
    /// in turns of 10, each going on from what all runs observed).
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(reprise_solver::STRATEGY_NAMES))]
    strategy: String,
    /// Print the result (outcome, attempt counts, schedule, root-cause
    /// report, the reproducing attempt's stdout and stderr) as one JSON
    /// object instead of text.
    #[arg(long)]
    json: bool,
    /// When the failure reproduces, also write the picture of the
    /// reproduced interleaving (`reprise report`) to TRACE/report.html.
    #[arg(long)]
    report: bool,
    /// Do not show the reproducing attempt's stdout and stderr (by default
    /// printed to reprise's stdout and stderr before the report; with
    /// --json, in the object).
    #[arg(long)]
    no_program_output: bool,
    /// The first attempt's seed (the next ones take the following seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds after which an attempt is killed.
    #[arg(long, default_value_t = 30.0)]
    timeout_per_attempt: f64,
    /// Seconds without any event, and without CPU time other than a
    /// thread polling memory, after which an attempt is stuck (or, past
    /// the end of the recording, hung as recorded).
    #[arg(long, default_value_t = 2.0)]
    hang_timeout: f64,
    /// Append one line per attempt to this file.
    #[arg(long)]
    attempt_log: Option<PathBuf>,
    /// Keep each run's stdout and stderr in DIR/attempt-N/ (observation
    /// and minimisation re-runs in DIR/observe-N-STRATEGY/ and
    /// DIR/minimize-K/).
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
    let Some(mut named) = reprise_solver::strategy(&a.strategy) else {
        anyhow::bail!(
            "unknown strategy {}: use one of {}",
            a.strategy,
            reprise_solver::STRATEGY_NAMES.join(", ")
        );
    };
    let strategy = named.base;
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
        read_saved(&dir)?.map(|(s, _)| s)
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
    let log = match &a.attempt_log {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))?,
        )),
        None => None,
    };
    announce(&dir, &replay, &recorded, saved.as_ref());
    let bar = progress_bar(a.max_attempts);
    let mut base = AttemptOptions::new(0);
    base.timeout = timeout;
    base.hang_timeout = hang_timeout;
    // The runs' output is kept to show the reproducing one's: in
    // --output-dir, else in a directory removed at the end.
    let scratch = match (&a.output_dir, a.no_program_output) {
        (None, false) => Some(
            tempfile::Builder::new()
                .prefix("reprise-replay-")
                .tempdir()
                .context("cannot create a temporary directory for the attempts' output")?,
        ),
        _ => None,
    };
    base.output_dir = a
        .output_dir
        .clone()
        .or_else(|| scratch.as_ref().map(|d| d.path().to_path_buf()));
    let opts = SearchOptions {
        strategy,
        max_attempts: a.max_attempts,
        seed: a.seed.unwrap_or_else(default_seed),
        jobs,
        base,
        saved: saved.clone(),
        max_depth: 4,
    };
    let divergences = AtomicU32::new(0);
    let on_run = |r: &Run| {
        // Only the reproducing run's output is shown: the others' go.
        if let (Some(_), Some(d), false) = (&scratch, &r.output_dir, r.reproduced) {
            let _ = std::fs::remove_dir_all(d);
        }
        if r.role == Role::Attempt {
            bar.inc(1);
            if r.result.outcome().is_none() {
                divergences.fetch_add(1, Ordering::Relaxed);
            }
        }
        bar.set_message(format!(
            "{} diverged; last: {}",
            divergences.load(Ordering::Relaxed),
            r.result.summary()
        ));
    };
    reprise_replayer::stop_on_interrupt();
    let result = search_with(&replay, &opts, named.planner.as_mut(), &on_run);
    bar.finish_and_clear();
    if let Err(reprise_replayer::ReplayError::Interrupted) = result {
        eprintln!("reprise: interrupted: the running attempt was killed; nothing was saved");
        return Ok(130);
    }
    let result = result?;
    if let Some(f) = &log {
        let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
        for r in &result.runs {
            writeln!(f, "{}", run_line(r))?;
        }
    }
    let report = result
        .root_cause
        .as_ref()
        .map(|rc| explain(&replay, rc).map_err(|e| e.to_string()));
    // The same schedule found again (the saved one) is not saved again.
    let save = match (&saved, &result.schedule) {
        (_, None) => false,
        (Some(x), Some(y)) => !a.no_schedule && x != y,
        (None, Some(_)) => !a.no_schedule,
    };
    if save {
        if let (Some(s), Some(r)) = (&result.schedule, result.reproducing()) {
            save_schedule(&dir, s, r.attempt)?;
        }
    }
    let output = if a.no_program_output {
        None
    } else {
        result.reproducing().map(ProgramOutput::of)
    };
    drop(scratch);
    let done = Done {
        dir: &dir,
        replay: &replay,
        recorded: &recorded,
        result: &result,
        report: report.as_ref(),
        saved: save,
        output: output.as_ref(),
    };
    if a.json {
        done.print_json()?;
    } else {
        done.print_text();
    }
    if a.report && result.found.is_some() {
        let analysis = reprise_report::Analysis::from_search(&result, report.clone());
        let path = dir.join("report.html");
        reprise_report::write(&dir, Some(&replay), &analysis, &path)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        eprintln!("reprise: report written to {}", path.display());
    }
    Ok(if result.found.is_some() { 0 } else { 1 })
}

/// The first lines, on stderr: what is replayed, and from which schedule.
fn announce(dir: &Path, replay: &Replay, recorded: &OutcomeInfo, saved: Option<&Schedule>) {
    eprintln!(
        "reprise: replaying {} ({} sketch, {} events); recorded: {}",
        dir.display(),
        reprise_schema::Sketch {
            level: replay.header.level,
            block_period: replay.header.block_period,
        },
        replay.event_count(),
        recorded.summary
    );
    if let Some(s) = saved {
        eprintln!(
            "reprise: trying the saved schedule first ({} seed {:#x}{})",
            s.policy_name(),
            s.seed,
            match s.flips.len() {
                0 => String::new(),
                n => format!(", {n} flipped race(s)"),
            }
        );
    }
}

/// The attempts' progress on a terminal (hidden otherwise).
fn progress_bar(max_attempts: u32) -> ProgressBar {
    let bar = ProgressBar::new(max_attempts as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} attempt {pos}/{len} {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// What the reproducing attempt wrote.
struct ProgramOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl ProgramOutput {
    /// The run's output files (empty if it kept none).
    fn of(r: &Run) -> ProgramOutput {
        let read = |name: &str| {
            r.output_dir
                .as_ref()
                .and_then(|d| std::fs::read(d.join(name)).ok())
                .unwrap_or_default()
        };
        ProgramOutput {
            stdout: read("stdout"),
            stderr: read("stderr"),
        }
    }
}

/// A finished search, to print.
struct Done<'a> {
    dir: &'a Path,
    replay: &'a Replay,
    recorded: &'a OutcomeInfo,
    result: &'a SearchResult,
    report: Option<&'a std::result::Result<Report, String>>,
    saved: bool,
    output: Option<&'a ProgramOutput>,
}

impl Done<'_> {
    fn print_json(&self) -> Result<()> {
        let (result, r) = (self.result, self.result.reproducing());
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // What each count counts: see README, `reprise replay`, --json.
        let v = serde_json::json!({
            "trace": self.dir,
            "reproduced": r.is_some(),
            "attempt": r.map(|r| r.attempt),
            "attempts": result.attempts,
            "attempts_after": result.attempts_after(),
            "divergences": result.divergences(),
            "observed_runs": result.observed_runs(),
            "revocation_note": r.and_then(|r| revocation_note(self.replay, &r.result)),
            "seconds": result.elapsed.as_secs_f64(),
            "recorded": self.recorded.summary,
            "outcome": r.map(|r| r.result.summary()),
            "schedule": result
                .schedule
                .as_ref()
                .map(|s| s.to_info(r.map_or(0, |r| r.attempt))),
            "schedule_saved": self.saved,
            "conclusion": result.conclusion,
            "hint": r.is_none().then(|| richer_sketch_hint(self.replay)).flatten(),
            "root_cause": match self.report {
                Some(Ok(rep)) => serde_json::to_value(rep)?,
                Some(Err(e)) => serde_json::json!({ "error": e }),
                None => serde_json::Value::Null,
            },
            "stdout": self.output.map(|o| text(&o.stdout)),
            "stderr": self.output.map(|o| text(&o.stderr)),
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }

    fn print_text(&self) {
        let (result, recorded) = (self.result, self.recorded);
        let elapsed = result.elapsed.as_secs_f64();
        let diverged = result.divergences();
        let Some(r) = result.reproducing() else {
            out!(
                "reprise: not reproduced in {} attempts ({} diverged, {:.2} s)",
                result.attempts,
                diverged,
                elapsed
            );
            out!("  recorded: {}", recorded.summary);
            // The most common endings, to say what happened instead.
            let mut seen: Vec<(String, usize)> = Vec::new();
            for r in result.runs.iter().filter(|r| r.role == Role::Attempt) {
                let s = r.result.summary();
                match seen.iter_mut().find(|(k, _)| *k == s) {
                    Some((_, n)) => *n += 1,
                    None => seen.push((s, 1)),
                }
            }
            seen.sort_by_key(|x| std::cmp::Reverse(x.1));
            for (s, n) in seen.iter().take(3) {
                out!("  {n} x {s}");
            }
            let last = result.runs.iter().rev().find(|r| r.role == Role::Attempt);
            if let Some(note) = last.and_then(|r| revocation_note(self.replay, &r.result)) {
                out!("  note (last attempt): {note}");
            }
            if let Some(c) = &result.conclusion {
                out!("  {c}");
            }
            if let Some(h) = richer_sketch_hint(self.replay) {
                out!("  hint: {h}");
            }
            if let Some(n) = watch_note(result) {
                out!("  note: {n}");
            }
            return;
        };
        // The program's own output first, as `reprise record` shows it.
        if let Some(o) = self.output {
            let _ = std::io::stdout().write_all(&o.stdout);
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().write_all(&o.stderr);
            let _ = std::io::stderr().flush();
        }
        let what = if is_failure(recorded) {
            "reproduced the recorded failure"
        } else {
            "reproduced the recorded run"
        };
        let after = match result.attempts_after() {
            0 => String::new(),
            n => format!(" run, {n} of them in parallel after it"),
        };
        let observed = result.observed_runs();
        out!(
            "reprise: {what} in attempt {} ({} attempt{}{after}, {} diverged, {} observed run{}, {:.2} s)",
            r.attempt,
            result.attempts,
            if result.attempts == 1 { "" } else { "s" },
            diverged,
            observed,
            if observed == 1 { "" } else { "s" },
            elapsed
        );
        out!("  recorded:   {}", recorded.summary);
        out!("  reproduced: {}", r.result.summary());
        let res = &r.result;
        let total = self.replay.event_count();
        out!(
            "  replayed {} of {} recorded events{}",
            res.events_replayed,
            total,
            if res.completed {
                String::new()
            } else {
                format!(
                    " (the run ended {} events before the recording did)",
                    total as u64 - res.events_replayed
                )
            }
        );
        if res.output_numbers > 0 {
            out!(
                "  note: {} writes printed another pid than the recording did, accepted",
                res.output_numbers
            );
        }
        if res.object_mismatches > 0 {
            out!(
                "  note: {} events had another object address than recorded",
                res.object_mismatches
            );
        }
        if let Some((pos, key)) = res.first_path_change {
            // Ring positions are not event numbers: name the event as
            // `reprise dump` does.
            let event = self.replay.event_at(pos).map_or(pos, |(_, e)| e.seq);
            out!(
                "  note: {} took a lock at event {event} from another call site than recorded (its path left the recorded one there)",
                reprise_replayer::key_name(key)
            );
        }
        if let Some(note) = revocation_note(self.replay, res) {
            out!("  note: {note}");
        }
        if let Some(n) = watch_note(result) {
            out!("  note: {n}");
        }
        let random = matches!(r.schedule.strategy, Strategy::Random | Strategy::Preempt);
        match self.report {
            Some(Ok(rep)) => out!("{}", rep.render()),
            Some(Err(e)) => out!("  (no root-cause report: {e})"),
            None if is_failure(recorded) && random => out!(
                "  root cause: not analysed (the {} strategy does not observe accesses; replay with --strategy feedback for a report)",
                r.schedule.strategy.name()
            ),
            None if is_failure(recorded) => out!(
                "  root cause: the sketch's own order decides this failure (no unrecorded race was flipped)"
            ),
            None => {}
        }
        if let (true, Some(sched)) = (self.saved, &result.schedule) {
            out!(
                "  schedule saved ({} seed {:#x}, {} flip(s)): the next `reprise replay` starts with it",
                sched.policy_name(),
                sched.seed,
                sched.flips.len()
            );
        }
    }
}

/// One line of `--attempt-log`.
fn run_line(r: &Run) -> String {
    let role = match r.role {
        Role::Attempt => "attempt",
        Role::Observe => "observe",
        Role::Minimize => "minimize",
    };
    // Each flip: the held access, `<` the access it waits for (`<<` when
    // deferred to the end of that thread's stretch), and in an observed
    // run what became of it when that was not `done`.
    let states = r.result.observation.as_ref().map(|o| &o.flips);
    let flips: String = r
        .schedule
        .flips
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let state = match states.and_then(|s| s.get(i)) {
                Some(FlipState::Done) | None => "",
                Some(FlipState::NotReached) => ": not reached",
                Some(FlipState::Holding) => ": still held",
                Some(FlipState::Infeasible) => ": infeasible",
                Some(FlipState::Already) => ": came first anyway",
                Some(FlipState::Deferred) => ": deferred",
            };
            let f = FlipInfo::from(f);
            if f.until_addr != 0 {
                return format!(
                    " [t{}:{:#x}#{} waits for a write to {:#x}{}{}{state}]",
                    f.held_thread,
                    f.held_pc,
                    f.held_n,
                    f.until_addr,
                    if f.defer {
                        " and the writer's stretch"
                    } else {
                        ""
                    },
                    if f.standing {
                        ", and each later read of the old value"
                    } else {
                        ""
                    }
                );
            }
            format!(
                " [t{}:{:#x}#{} {} t{}:{:#x}#{}{state}]",
                f.held_thread,
                f.held_pc,
                f.held_n,
                if f.defer { "<<" } else { "<" },
                f.until_thread,
                f.until_pc,
                f.until_n
            )
        })
        .collect();
    let note = if r.note.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.note)
    };
    let res = &r.result;
    // Preemptions at shared accesses: their chance at each, 1 in N.
    let preempt = match r.schedule.preempt_rate {
        0 => String::new(),
        p => format!(" preempt 1/{}", 65536 / p),
    };
    format!(
        "{role} {} {} seed {:#x}{preempt}{flips} {:.3}s events {} decisions {}: {}{note}",
        r.attempt,
        r.schedule.policy_name(),
        r.schedule.seed,
        res.duration.as_secs_f64(),
        res.events_replayed,
        res.decisions,
        res.summary()
    )
}

/// Observed runs whose agents could not set the hardware watchpoints that
/// find a thread's own accesses to its stack objects other threads reach.
fn watch_note(result: &SearchResult) -> Option<String> {
    let refused: u64 = result
        .runs
        .iter()
        .filter_map(|r| r.result.observation.as_ref())
        .map(|o| o.watch_failed)
        .sum();
    (refused > 0).then(|| {
        format!(
            "{refused} hardware watchpoint(s) could not be set (perf_event_open refused: \
             a container's seccomp, or kernel.perf_event_paranoid above 2): a thread's own \
             accesses to the objects on its stack that other threads reach are not seen"
        )
    })
}

/// What a user must know when a thread lost the baton asleep in the
/// kernel: the schedule alone no longer decided the run from there.
fn revocation_note(replay: &Replay, res: &reprise_replayer::AttemptResult) -> Option<String> {
    let first = res.first_revocation?;
    Some(format!(
        "{} time(s) a thread slept in a system call outside any event while it held the baton and lost it (first at {}): from there the schedule alone did not decide the run",
        res.revocations,
        replay.describe(first)
    ))
}

/// For a miss from a `sync` or `sys` trace whose threads went long without
/// a sketch event: where inside those stretches they lost the CPU is what
/// the sketch does not say, and a richer one does.
fn richer_sketch_hint(replay: &Replay) -> Option<String> {
    use reprise_schema::SketchLevel;
    let level = replay.header.level;
    if !matches!(level, SketchLevel::Sync | SketchLevel::Sys) {
        return None;
    }
    let order = reprise_replayer::order::SketchOrder::new(replay);
    let long = reprise_feedback::spans::longest_stretches(&order);
    let mut named = long
        .iter()
        .take(2)
        .map(|&(k, n)| format!("{} through {n} of theirs", reprise_replayer::key_name(k)));
    let first = named.next()?;
    let more = named.map(|s| format!(", {s}")).collect::<String>();
    Some(format!(
        "threads made no sketch event while the others made many ({first}{more}); where inside \
         those stretches they lost the CPU is not in a {} sketch. A `bb` sketch records it \
         (rebuild with -fsanitize-coverage=trace-pc, record with --sketch bb), a `func` sketch \
         where the stretch calls functions of its own (see `reprise record --help`)",
        level.as_str()
    ))
}
