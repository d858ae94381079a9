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

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use reprise_replayer::search::{search, Run, SearchOptions, SearchResult};
use reprise_replayer::{AttemptOptions, Replay, Strategy};
use reprise_schema::{OutcomeInfo, OutcomeKind};
use reprise_testbugs::run::signal_name;
use reprise_testbugs::{
    build_manifest, corpus_dir, default_build_dir, load_manifest, run_native_in, Bug, Built,
    ExpectKind, Failure, Outcome, RateRow, RateTable,
};
use serde_json::{json, Value};

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
    /// random, feedback, preempt).
    #[arg(long, value_delimiter = ',', default_value = "random,feedback")]
    strategies: Vec<String>,
    /// Replay attempts at most per program, sketch and strategy.
    #[arg(long, default_value_t = 10)]
    max_attempts: u32,
    /// --replay: print the rows as JSON instead of the markdown table.
    #[arg(long)]
    json: bool,
}

/// The seed of the first replay attempt (random: the next ones take the
/// next seeds).
const SEARCH_SEED: u64 = 0x5eed_0000;
/// Time limit of one replay run.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// One sketch's recordings of a program: how many it took until one failed.
struct Recording {
    sketch: String,
    /// Recordings made (default arguments and then frequent ones).
    runs: usize,
    /// The last argument set tried was the frequent one (the defaults never
    /// failed).
    frequent: bool,
    /// The failing recording's trace.
    trace: Option<PathBuf>,
    /// The failing recording's standard output.
    stdout: String,
    /// The recorded outcome, one line.
    recorded: String,
}

/// One strategy's replay of one sketch's failing trace.
struct Cell {
    sketch: String,
    strategy: String,
    /// The attempt that reproduced the recorded failure.
    attempt: Option<u32>,
    attempts: u32,
    secs: f64,
    /// The recorded failure is the manifest's expected one (None: no trace).
    expected: Option<bool>,
    /// yes / no / sketch / — (feedback only; empty for other strategies).
    root_cause: &'static str,
    /// The root cause's races, `file:line -> file:line`.
    races: Vec<String>,
    note: String,
}

impl Cell {
    fn text(&self) -> String {
        match self.attempt {
            Some(n) => format!("{n} ({:.1} s)", self.secs),
            None => format!("— ({:.1} s)", self.secs),
        }
    }
}

/// One program's row of the replay evaluation.
struct ReplayRow {
    name: String,
    kind: &'static str,
    expected: String,
    native_args: &'static str,
    native_runs: usize,
    native_failures: usize,
    native_percent: f64,
    recordings: Vec<Recording>,
    cells: Vec<Cell>,
}

impl ReplayRow {
    fn cell(&self, strategy: &str, sketch: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.strategy == strategy && c.sketch == sketch)
    }

    fn to_json(&self, primary: Option<&Cell>) -> Value {
        json!({
            "program": self.name,
            "kind": self.kind,
            "expected": self.expected,
            "native": {
                "args": self.native_args,
                "runs": self.native_runs,
                "failures": self.native_failures,
                "percent": self.native_percent,
            },
            "recordings": self.recordings.iter().map(|r| json!({
                "sketch": r.sketch,
                "runs": r.runs,
                "args": if r.frequent { "frequent" } else { "default" },
                "failed": r.trace.is_some(),
                "recorded": r.recorded,
            })).collect::<Vec<_>>(),
            "replays": self.cells.iter().map(|c| json!({
                "sketch": c.sketch,
                "strategy": c.strategy,
                "reproduced_in_attempt": c.attempt,
                "attempts": c.attempts,
                "seconds": c.secs,
                "recorded_failure_expected": c.expected,
                "root_cause": if c.root_cause.is_empty() { Value::Null } else { json!(c.root_cause) },
                "races": c.races,
                "note": c.note,
            })).collect::<Vec<_>>(),
            "failure_matched": primary.map(matched),
            "root_cause": primary.map(|c| c.root_cause),
        })
    }
}

/// The failure-matched verdict of a cell: the recorded failure is the
/// expected one and the replay reproduced it.
fn matched(c: &Cell) -> bool {
    c.expected == Some(true) && c.attempt.is_some()
}

/// FNV-1a 64, as the recorder digests output streams.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// True if `stdout` lacks the correct line of a wrong-output bug.
fn wrong_output(bug: &Bug, stdout: &str) -> bool {
    bug.expect
        .output
        .as_deref()
        .is_some_and(|line| !stdout.lines().any(|l| l.trim_end() == line))
}

/// True if the recorded outcome `o` is the failure the manifest expects
/// (as `RunResult::matches_expected` judges a native run). A wrong output
/// exits 0: the recording's stdout must lack the correct line, and be the
/// stdout the trace digested (where the sketch keeps output).
fn outcome_matches_expected(bug: &Bug, o: &OutcomeInfo, stdout: &str) -> bool {
    let e = &bug.expect;
    match e.kind {
        ExpectKind::Signal => {
            o.kind == OutcomeKind::Signaled
                && e.signal.as_deref() == Some(signal_name(o.signal).as_str())
        }
        ExpectKind::Assertion => {
            o.kind == OutcomeKind::Assertion
                && e.assertion
                    .as_deref()
                    .is_some_and(|t| o.assertion.contains(t))
        }
        ExpectKind::ExitCode => o.kind == OutcomeKind::Exited && e.exit_code == Some(o.exit_code),
        ExpectKind::Deadlock => o.kind == OutcomeKind::Deadlock,
        ExpectKind::Hang => o.kind == OutcomeKind::Hang,
        ExpectKind::WrongOutput => {
            let same_stream = !o.output.iter().any(|s| {
                s.fd == 1
                    && s.length > 0
                    && (s.length != stdout.len() as u64 || s.digest != fnv1a(stdout.as_bytes()))
            });
            matches!(o.kind, OutcomeKind::Exited | OutcomeKind::WrongOutput)
                && o.exit_code == 0
                && wrong_output(bug, stdout)
                && same_stream
        }
    }
}

/// Records `bug` under `sketch` with `args` until a run fails (at most
/// --runs recordings and --budget seconds). A run fails when the trace's
/// outcome is a failure, or, for a wrong-output bug, when it exits 0 with
/// the wrong output.
fn record_until_failure(
    bug: &Bug,
    built: &Built,
    args: &[String],
    sketch: &str,
    a: &EvalArgs,
    dir: &Path,
) -> Result<(usize, Option<(PathBuf, String)>)> {
    let corpus = corpus_dir();
    let reprise = Built {
        name: bug.name.clone(),
        exe: std::env::current_exe()?,
    };
    let start = Instant::now();
    let budget = Duration::from_secs_f64(a.budget);
    // A wrong-output bug is recorded with the correct output, as a user
    // would: a trace of a run that printed something else then says so.
    let expected = if bug.expect.kind == ExpectKind::WrongOutput {
        Some(correct_output(bug, built, args, dir)?)
    } else {
        None
    };
    let mut n = 0;
    while n < a.runs && start.elapsed() < budget {
        n += 1;
        let trace = dir.join(format!("{}-{sketch}-{n}", bug.name));
        let mut full: Vec<String> = ["record", "--sketch", sketch, "--hang-timeout", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(e) = &expected {
            full.push("--expect-output".into());
            full.push(e.to_string_lossy().into_owned());
        }
        full.push("-o".into());
        full.push(trace.to_string_lossy().into_owned());
        full.push(built.exe.to_string_lossy().into_owned());
        full.extend(args.iter().cloned());
        let r = run_native_in(bug, &reprise, &full, RUN_TIMEOUT, &corpus)?;
        let wrong = bug.expect.kind == ExpectKind::WrongOutput
            && r.outcome == Outcome::Failed(Failure::WrongOutput);
        let failed = wrong
            || (!r.passed()
                && classify_recorded(r.outcome.clone(), 128 + libc::SIGKILL) != Outcome::Passed);
        if failed {
            // The trace's own outcome is what replay compares against.
            if let Ok(rd) = reprise_schema::TraceReader::open(&trace) {
                if rd
                    .outcome()
                    .is_some_and(|o| wrong || reprise_replayer::is_failure(o))
                {
                    return Ok((n, Some((trace, r.stdout))));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&trace);
    }
    Ok((n, None))
}

/// The correct stdout of a wrong-output bug with `args`: that of a native
/// run that printed the manifest's correct line (written into `dir`).
fn correct_output(bug: &Bug, built: &Built, args: &[String], dir: &Path) -> Result<PathBuf> {
    let corpus = corpus_dir();
    for _ in 0..200 {
        let r = run_native_in(bug, built, args, RUN_TIMEOUT, &corpus)?;
        if r.passed() && !wrong_output(bug, &r.stdout) {
            let path = dir.join(format!("{}-{}.expected", bug.name, args.join("-")));
            std::fs::write(&path, r.stdout.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            return Ok(path);
        }
    }
    anyhow::bail!(
        "{}: no native run printed the correct output in 200 runs",
        bug.name
    )
}

/// Records under `sketch`: default arguments first, the frequent ones if
/// the defaults never fail.
fn record_sketch(
    bug: &Bug,
    built: &Built,
    sketch: &str,
    a: &EvalArgs,
    dir: &Path,
) -> Result<Recording> {
    let mut rec = Recording {
        sketch: sketch.to_string(),
        runs: 0,
        frequent: false,
        trace: None,
        stdout: String::new(),
        recorded: String::new(),
    };
    let (n, mut found) = record_until_failure(bug, built, &bug.args, sketch, a, dir)?;
    rec.runs = n;
    if found.is_none() {
        rec.frequent = true;
        let (m, f) = record_until_failure(bug, built, &bug.frequent_args, sketch, a, dir)?;
        rec.runs += m;
        found = f;
    }
    if let Some((trace, stdout)) = found {
        if let Ok(rd) = reprise_schema::TraceReader::open(&trace) {
            rec.recorded = rd.outcome().map(|o| o.summary.clone()).unwrap_or_default();
        }
        rec.trace = Some(trace);
        rec.stdout = stdout;
    }
    Ok(rec)
}

/// The manifest's race lines as (file, line).
fn race_lines(bug: &Bug) -> HashSet<(String, u32)> {
    bug.race_lines
        .iter()
        .filter_map(|rl| {
            let (f, l) = rl.rsplit_once(':')?;
            Some((f.to_string(), l.parse().ok()?))
        })
        .collect()
}

/// Replays `rec`'s trace with `strategy`.
fn replay_cell(
    bug: &Bug,
    rec: &Recording,
    strategy: &str,
    a: &EvalArgs,
    dir: &Path,
) -> Result<Cell> {
    let mut cell = Cell {
        sketch: rec.sketch.clone(),
        strategy: strategy.to_string(),
        attempt: None,
        attempts: 0,
        secs: 0.0,
        expected: None,
        root_cause: "",
        races: Vec::new(),
        note: String::new(),
    };
    let feedback = strategy == "feedback";
    if feedback {
        cell.root_cause = "—";
    }
    let Some(trace) = &rec.trace else {
        cell.note = "no failing recording".into();
        return Ok(cell);
    };
    let replay = Replay::open(trace, false)
        .with_context(|| format!("cannot open the trace {}", trace.display()))?;
    let recorded = replay
        .recorded
        .clone()
        .context("the trace has no outcome")?;
    cell.expected = Some(outcome_matches_expected(bug, &recorded, &rec.stdout));
    let mut base = AttemptOptions::new(0);
    base.timeout = RUN_TIMEOUT;
    // A wrong output exits 0 like a pass: each run's stdout is kept to tell.
    let wrong = bug.expect.kind == ExpectKind::WrongOutput;
    let out_dir = dir.join(format!("{}-{}-{strategy}-out", bug.name, rec.sketch));
    if wrong {
        base.output_dir = Some(out_dir.clone());
    }
    let opts = SearchOptions {
        strategy: Strategy::from_name(strategy).context("unknown strategy")?,
        max_attempts: a.max_attempts,
        seed: SEARCH_SEED,
        jobs: 1,
        base,
        saved: None,
        max_depth: 4,
    };
    let res: SearchResult = search(&replay, &opts, &|_run: &Run| {})
        .with_context(|| format!("{} {} {strategy}: search", bug.name, rec.sketch))?;
    cell.attempts = res.attempts;
    cell.secs = res.elapsed.as_secs_f64();
    cell.attempt = res.reproducing().map(|r| r.attempt);
    if let (true, Some(r)) = (wrong, res.reproducing()) {
        let stdout = std::fs::read_to_string(
            out_dir
                .join(format!("attempt-{}", r.attempt))
                .join("stdout"),
        )
        .unwrap_or_default();
        if !wrong_output(bug, &stdout) {
            cell.attempt = None;
            cell.note = format!(
                "attempt {} exited 0 with the correct output, and the search stops at the first run that exits like the recording",
                r.attempt
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    if cell.attempt.is_none() {
        if cell.note.is_empty() {
            // The most common ending instead.
            let mut seen: Vec<(String, usize)> = Vec::new();
            for r in res
                .runs
                .iter()
                .filter(|r| r.role == reprise_replayer::search::Role::Attempt)
            {
                let s = r.result.summary();
                match seen.iter_mut().find(|(t, _)| *t == s) {
                    Some((_, k)) => *k += 1,
                    None => seen.push((s, 1)),
                }
            }
            seen.sort_by_key(|x| std::cmp::Reverse(x.1));
            cell.note = match seen.first() {
                Some((s, k)) => format!("not reproduced in {} attempts; {k}× {s}", res.attempts),
                None => format!("not reproduced in {} attempts", res.attempts),
            };
        }
        return Ok(cell);
    }
    if feedback {
        match &res.root_cause {
            None => cell.root_cause = "sketch",
            Some(rc) => {
                let lines = race_lines(bug);
                match reprise_replayer::explain::explain(&replay, rc) {
                    Ok(rep) => {
                        let at = |f: &str, l: u32| lines.contains(&(f.to_string(), l));
                        let named = rep.races.iter().any(|r| {
                            at(&r.first.file, r.first.line) && at(&r.second.file, r.second.line)
                        });
                        cell.root_cause = if named { "yes" } else { "no" };
                        if rep.races.is_empty() {
                            cell.note =
                                format!("the root-cause report ({}) names no race", rep.how);
                        }
                        cell.races = rep
                            .races
                            .iter()
                            .map(|r| {
                                format!(
                                    "{} {}:{} -> {}:{}",
                                    r.variable,
                                    r.first.file,
                                    r.first.line,
                                    r.second.file,
                                    r.second.line
                                )
                            })
                            .collect();
                    }
                    Err(e) => {
                        cell.root_cause = "no";
                        cell.note = format!("no root-cause report: {e}");
                    }
                }
            }
        }
    }
    Ok(cell)
}

fn evaluate_replay(bug: &Bug, built: &Built, a: &EvalArgs, dir: &Path) -> Result<ReplayRow> {
    let mut recordings = Vec::new();
    for sketch in &a.sketches {
        let t = Instant::now();
        let rec = record_sketch(bug, built, sketch, a, dir)?;
        eprintln!(
            "  {:<28} {sketch:<4} recorded {} runs ({} args, {:.0} s): {}",
            bug.name,
            rec.runs,
            if rec.frequent { "frequent" } else { "default" },
            t.elapsed().as_secs_f64(),
            if rec.trace.is_some() {
                rec.recorded.as_str()
            } else {
                "no failure"
            }
        );
        recordings.push(rec);
    }
    // The native rate with the arguments the (primary) recording used.
    let primary = primary_sketch(a);
    let frequent = recordings
        .iter()
        .find(|r| r.sketch == primary)
        .is_some_and(|r| r.frequent);
    let argv = if frequent {
        &bug.frequent_args
    } else {
        &bug.args
    };
    let native = measure(bug, built, a, argv, false)?;
    let mut cells = Vec::new();
    for rec in &recordings {
        for strategy in &a.strategies {
            let c = replay_cell(bug, rec, strategy, a, dir)?;
            eprintln!(
                "  {:<28} {:<4} {:<8} {}{}{}",
                bug.name,
                c.sketch,
                c.strategy,
                c.text(),
                if c.root_cause.is_empty() || c.attempt.is_none() {
                    String::new()
                } else {
                    format!(", root cause {}", c.root_cause)
                },
                if c.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.note)
                }
            );
            cells.push(c);
        }
        if let Some(t) = &rec.trace {
            let _ = std::fs::remove_dir_all(t);
        }
    }
    Ok(ReplayRow {
        name: bug.name.clone(),
        kind: bug.kind.as_str(),
        expected: bug.expect.to_string(),
        native_args: if frequent { "frequent" } else { "default" },
        native_runs: native.runs,
        native_failures: native.failures,
        native_percent: native.rate_percent(),
        recordings,
        cells,
    })
}

/// The sketch whose feedback replay the failure-matched and root-cause
/// columns describe: sys, else the last one evaluated.
fn primary_sketch(a: &EvalArgs) -> &str {
    if a.sketches.iter().any(|s| s == "sys") {
        "sys"
    } else {
        a.sketches.last().map_or("sys", |s| s.as_str())
    }
}

/// The strategy of those columns: feedback, else the last one evaluated.
fn primary_strategy(a: &EvalArgs) -> &str {
    if a.strategies.iter().any(|s| s == "feedback") {
        "feedback"
    } else {
        a.strategies.last().map_or("feedback", |s| s.as_str())
    }
}

fn median(v: &mut [u32]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m] as f64
    } else {
        (v[m - 1] + v[m]) as f64 / 2.0
    })
}

fn print_replay_table(rows: &[ReplayRow], a: &EvalArgs, summary: &[String]) {
    let (ps, pst) = (primary_sketch(a), primary_strategy(a));
    let mut head = format!(
        "| program | kind | native % | recorded until failure ({}) |",
        a.sketches.join(" / ")
    );
    for sk in &a.sketches {
        for st in &a.strategies {
            head.push_str(&format!(" {st} {sk} |"));
        }
    }
    head.push_str(" failure matched | root cause |");
    println!("{head}");
    let cols = 4 + a.sketches.len() * a.strategies.len() + 2;
    println!("|{}", "---|".repeat(cols));
    for r in rows {
        let recorded: Vec<String> = r
            .recordings
            .iter()
            .map(|rec| match (&rec.trace, rec.frequent) {
                (Some(_), false) => rec.runs.to_string(),
                (Some(_), true) => format!("{} (f)", rec.runs),
                (None, _) => format!("none in {}", rec.runs),
            })
            .collect();
        let mut line = format!(
            "| {} | {} | {:.1}{} | {} |",
            r.name,
            r.kind,
            r.native_percent,
            if r.native_args == "frequent" {
                " (f)"
            } else {
                ""
            },
            recorded.join(" / ")
        );
        for sk in &a.sketches {
            for st in &a.strategies {
                let t = r.cell(st, sk).map(Cell::text).unwrap_or_default();
                line.push_str(&format!(" {t} |"));
            }
        }
        let p = r.cell(pst, ps);
        let (m, rc) = match p {
            Some(c) if c.expected.is_none() => ("no (no failing recording)".to_string(), "—"),
            Some(c) => (
                if matched(c) { "yes" } else { "no" }.to_string(),
                c.root_cause,
            ),
            None => ("—".to_string(), "—"),
        };
        line.push_str(&format!(
            " {m} | {} |",
            if rc.is_empty() { "—" } else { rc }
        ));
        println!("{line}");
    }
    println!();
    println!(
        "Cells: the attempt that reproduced the recorded failure (— : not within {}) and the search's time. \
         (f): the default arguments never failed (--runs {} recordings or --budget {} s), the frequent ones were used. \
         Failure matched and root cause: {pst}/{ps}.",
        a.max_attempts, a.runs, a.budget
    );
    println!();
    for l in summary {
        println!("{l}");
    }
    // What the cells cannot say.
    let mut notes = Vec::new();
    for r in rows {
        for c in &r.cells {
            if !c.note.is_empty() && c.expected.is_some() {
                notes.push(format!(
                    "- {} ({} {}): {}",
                    r.name, c.strategy, c.sketch, c.note
                ));
            }
        }
        if let Some(c) = r.cell(pst, ps) {
            if c.expected == Some(false) {
                let rec = r.recordings.iter().find(|x| x.sketch == ps);
                notes.push(format!(
                    "- {}: the recorded failure ({}) is not the expected {}",
                    r.name,
                    rec.map_or("", |x| x.recorded.as_str()),
                    r.expected
                ));
            }
            if c.root_cause == "no" && !c.races.is_empty() {
                notes.push(format!(
                    "- {}: root cause named {}",
                    r.name,
                    c.races.join("; ")
                ));
            }
        }
    }
    if !notes.is_empty() {
        println!();
        println!("Notes:");
        for n in notes {
            println!("{n}");
        }
    }
}

/// The summary lines: each strategy × sketch against its goal.
fn summary_lines(rows: &[ReplayRow], a: &EvalArgs) -> Vec<String> {
    let n = rows.len();
    let pct = |x: usize| {
        if n == 0 {
            0.0
        } else {
            100.0 * x as f64 / n as f64
        }
    };
    let mut out = Vec::new();
    let mut order: Vec<(&str, &str)> = Vec::new();
    for st in ["feedback", "random"] {
        for sk in ["sys", "sync"] {
            order.push((st, sk));
        }
    }
    for st in &a.strategies {
        for sk in &a.sketches {
            if !order.contains(&(st.as_str(), sk.as_str())) {
                order.push((st, sk));
            }
        }
    }
    for (st, sk) in order {
        if !a.strategies.iter().any(|s| s == st) || !a.sketches.iter().any(|s| s == sk) {
            continue;
        }
        let mut found: Vec<u32> = rows
            .iter()
            .filter_map(|r| r.cell(st, sk).and_then(|c| c.attempt))
            .collect();
        let x = found.len();
        let med = median(&mut found).map_or("—".to_string(), |m| format!("{m}"));
        let goal = match (st, sk) {
            ("feedback", "sys") => " (goal: >= 90%, median <= 3)",
            ("feedback", "sync") => " (goal >= 80%)",
            _ => "",
        };
        out.push(format!(
            "{st}, {sk}: {x}/{n} programs reproduced within {} attempts ({:.0}%), median attempts {med}{goal}",
            a.max_attempts,
            pct(x)
        ));
    }
    if a.strategies.iter().any(|s| s == "feedback") {
        let ps = primary_sketch(a);
        let cells: Vec<&Cell> = rows
            .iter()
            .filter_map(|r| r.cell("feedback", ps))
            .filter(|c| c.attempt.is_some())
            .collect();
        let y = cells.len();
        let x = cells.iter().filter(|c| c.root_cause == "yes").count();
        let by_sketch = cells.iter().filter(|c| c.root_cause == "sketch").count();
        out.push(format!(
            "root cause names the manifest's racing lines: {x} of {y} reproduced by feedback ({ps}){} (goal >= 90%){}",
            if y == 0 {
                String::new()
            } else {
                format!(", {:.0}%", 100.0 * x as f64 / y as f64)
            },
            if by_sketch > 0 {
                format!("; {by_sketch} of them need no flip (the sketch's own order decides the failure)")
            } else {
                String::new()
            }
        ));
    }
    out
}

fn run_replay(a: &EvalArgs, bugs: &[Bug], built: &[Built]) -> Result<u8> {
    for s in &a.sketches {
        if s != "sync" && s != "sys" {
            bail!("--sketches: {s:?} is not a sketch level (sync, sys)");
        }
    }
    for s in &a.strategies {
        if Strategy::from_name(s).is_none() {
            bail!("--strategies: {s:?} is not a strategy (random, feedback, preempt)");
        }
    }
    let traces = tempfile::tempdir().context("cannot create a temporary directory")?;
    let (ps, pst) = (primary_sketch(a), primary_strategy(a));
    let mut rows = Vec::new();
    for bug in bugs {
        let b = built
            .iter()
            .find(|b| b.name == bug.name)
            .context("program not built")?;
        let t = Instant::now();
        let r = evaluate_replay(bug, b, a, traces.path())?;
        let p = r.cell(pst, ps);
        eprintln!(
            "{:<30} done in {:.0} s: native {:.1}%, {pst}/{ps} {}, failure matched {}, root cause {}",
            r.name,
            t.elapsed().as_secs_f64(),
            r.native_percent,
            p.map(Cell::text).unwrap_or_default(),
            if p.is_some_and(matched) { "yes" } else { "no" },
            p.map_or("—", |c| if c.root_cause.is_empty() { "—" } else { c.root_cause })
        );
        rows.push(r);
    }
    let summary = summary_lines(&rows, a);
    if a.json {
        let v = json!({
            "max_attempts": a.max_attempts,
            "sketches": a.sketches,
            "strategies": a.strategies,
            "rows": rows.iter().map(|r| r.to_json(r.cell(pst, ps))).collect::<Vec<_>>(),
            "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_replay_table(&rows, a, &summary);
    }
    Ok(0)
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

fn measure(
    bug: &Bug,
    built: &Built,
    args: &EvalArgs,
    argv: &[String],
    recorded: bool,
) -> Result<RateRow> {
    let corpus = corpus_dir();
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
        args: argv.to_vec(),
        runs,
        failures,
        matching,
        cut_by_budget: runs < args.runs,
        elapsed: start.elapsed(),
    })
}

pub fn run(a: EvalArgs) -> Result<u8> {
    if !a.native && !a.record && !a.replay {
        bail!("say what to measure: --native (native failure rates), --record (rates under record), --replay (record each sketch until failure, replay with each strategy)");
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
        return run_replay(&a, &m.bugs, &built);
    }
    let mut native_rows = Vec::new();
    let mut record_rows = Vec::new();
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
        if a.native {
            let r = measure(bug, b, &a, argv, false)?;
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
            let r = measure(bug, b, &a, argv, true)?;
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
