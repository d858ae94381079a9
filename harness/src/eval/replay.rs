//! `reprise eval --replay`: record each program under each sketch until a
//! run fails, replay each failing trace with each strategy.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reprise_feedback::planner::search_with;
use reprise_feedback::search::{Run, SearchOptions, SearchResult};
use reprise_replayer::{AttemptOptions, Replay};
use reprise_schema::{OutcomeInfo, OutcomeKind};
use reprise_testbugs::run::signal_name;
use reprise_testbugs::{corpus_dir, run_native_in, Bug, Built, ExpectKind, Failure, Outcome};
use serde_json::{json, Value};

use super::miss::{classify, failure_point, Miss};
use super::report::{primary_sketch, primary_strategy, print_replay_table, summary_lines};
use super::{classify_recorded, measure, EvalOptions, RunUnder};

/// The seed of the first replay attempt (random: the next ones take the
/// next seeds).
const SEARCH_SEED: u64 = 0x5eed_0000;
/// Time limit of one replay run.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// One sketch's recordings of a program: how many it took until one failed.
pub(super) struct Recording {
    pub(super) sketch: String,
    /// Recordings made (default arguments and then frequent ones).
    pub(super) runs: usize,
    /// The last argument set tried was the frequent one (the defaults never
    /// failed).
    pub(super) frequent: bool,
    /// The failing recording's trace.
    pub(super) trace: Option<PathBuf>,
    /// The failing recording's standard output.
    pub(super) stdout: String,
    /// The recorded outcome, one line.
    pub(super) recorded: String,
}

/// One strategy's replay of one sketch's failing trace.
pub(super) struct Cell {
    pub(super) sketch: String,
    pub(super) strategy: String,
    /// The attempt that reproduced the recorded failure.
    pub(super) attempt: Option<u32>,
    pub(super) attempts: u32,
    pub(super) secs: f64,
    /// The recorded failure is the manifest's expected one (None: no trace).
    pub(super) expected: Option<bool>,
    /// yes / no / sketch / — (feedback only; empty for other strategies).
    pub(super) root_cause: &'static str,
    /// The root cause's races, `file:line -> file:line`.
    pub(super) races: Vec<String>,
    pub(super) note: String,
    /// Not reproduced: fidelity or search (see [`super::miss`]).
    pub(super) miss: Option<Miss>,
    /// Root cause `sketch` from a `no-race` report whose ordered write and
    /// read are on the manifest's racing lines.
    pub(super) ordered_on_race_lines: bool,
    /// The solver's query times (ms).
    pub(super) query_millis: Vec<u64>,
}

impl Cell {
    pub(super) fn text(&self) -> String {
        match self.attempt {
            Some(n) => format!("{n} ({:.1} s)", self.secs),
            None => format!("— ({:.1} s)", self.secs),
        }
    }
}

/// One program's row of the replay evaluation.
pub(super) struct ReplayRow {
    pub(super) name: String,
    pub(super) kind: &'static str,
    pub(super) expected: String,
    pub(super) native_args: &'static str,
    pub(super) native_runs: usize,
    pub(super) native_failures: usize,
    pub(super) native_percent: f64,
    pub(super) recordings: Vec<Recording>,
    pub(super) cells: Vec<Cell>,
}

impl ReplayRow {
    pub(super) fn cell(&self, strategy: &str, sketch: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.strategy == strategy && c.sketch == sketch)
    }

    pub(super) fn to_json(&self, primary: Option<&Cell>) -> Value {
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
                "miss": c.miss.as_ref().map(Miss::to_json),
            })).collect::<Vec<_>>(),
            "failure_matched": primary.map(matched),
            "root_cause": primary.map(|c| c.root_cause),
        })
    }
}

/// The failure-matched verdict of a cell: the recorded failure is the
/// expected one and the replay reproduced it.
pub(super) fn matched(c: &Cell) -> bool {
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
    a: &EvalOptions,
    dir: &Path,
) -> Result<(usize, Option<(PathBuf, String)>)> {
    let corpus = corpus_dir();
    let reprise = Built {
        name: bug.name.clone(),
        exe: a.reprise.clone(),
    };
    let start = Instant::now();
    let budget = Duration::from_secs_f64(a.budget);
    // A wrong-output bug is recorded with the correct output, as a user
    // would: a trace of a run that printed something else then says so.
    let expected = if bug.expect.kind == ExpectKind::WrongOutput {
        match correct_output(bug, built, args, dir)? {
            Some(path) => Some(path),
            None => {
                // Without the correct output no run can be told wrong.
                eprintln!(
                    "  {:<28} {sketch:<4} no native run printed the correct output in 200 runs with {}: not recorded",
                    bug.name,
                    args.join(" ")
                );
                return Ok((0, None));
            }
        }
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
        if a.chaos {
            full.push("--chaos".into());
        }
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
/// run that printed the manifest's correct line (written into `dir`);
/// None if none of 200 runs did (arguments under which it always fails).
fn correct_output(
    bug: &Bug,
    built: &Built,
    args: &[String],
    dir: &Path,
) -> Result<Option<PathBuf>> {
    let corpus = corpus_dir();
    for _ in 0..200 {
        let r = run_native_in(bug, built, args, RUN_TIMEOUT, &corpus)?;
        if r.passed() && !wrong_output(bug, &r.stdout) {
            // One file name, whatever the arguments hold (paths).
            let name: String = format!("{}-{}.expected", bug.name, args.join("-"))
                .chars()
                .map(|c| if c == '/' { '_' } else { c })
                .collect();
            let path = dir.join(name);
            std::fs::write(&path, r.stdout.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Records under `sketch`: default arguments first, the frequent ones if
/// the defaults never fail.
fn record_sketch(
    bug: &Bug,
    built: &Built,
    sketch: &str,
    a: &EvalOptions,
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
    a: &EvalOptions,
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
        miss: None,
        ordered_on_race_lines: false,
        query_millis: Vec::new(),
    };
    // The strategies that observe accesses, and so name a root cause.
    let feedback = matches!(strategy, "feedback" | "solver" | "hybrid" | "auto");
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
    let mut named = reprise_solver::strategy(strategy).context("unknown strategy")?;
    let opts = SearchOptions {
        strategy: named.base,
        max_attempts: a.max_attempts,
        seed: SEARCH_SEED,
        jobs: 1,
        base,
        saved: None,
        max_depth: 4,
    };
    let res: SearchResult =
        search_with(&replay, &opts, named.planner.as_mut(), &|_run: &Run| {})
            .with_context(|| format!("{} {} {strategy}: search", bug.name, rec.sketch))?;
    cell.attempts = res.attempts;
    cell.query_millis = res.query_millis.clone();
    cell.secs = res.elapsed.as_secs_f64();
    cell.attempt = res.reproducing().map(|r| r.attempt);
    if let (true, Some(r)) = (wrong, res.reproducing()) {
        let stdout = r
            .output_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("stdout")).ok())
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
        // Fidelity or search: what the attempts did instead.
        cell.miss = classify(&res.runs, failure_point(&replay));
        if cell.note.is_empty() {
            let n = format!(
                "not reproduced in {} attempt{}",
                res.attempts,
                if res.attempts == 1 { "" } else { "s" }
            );
            cell.note = match &cell.miss {
                Some(m) => format!("{n}; {}", m.text()),
                None => n,
            };
        }
        return Ok(cell);
    }
    if feedback {
        root_cause_verdict(bug, &replay, &res, &mut cell);
    }
    Ok(cell)
}

/// Whether the feedback search's root cause names the manifest's racing
/// lines: `yes`, `no`, or `sketch` (the failure needs no race).
fn root_cause_verdict(bug: &Bug, replay: &Replay, res: &SearchResult, cell: &mut Cell) {
    let Some(rc) = &res.root_cause else {
        cell.root_cause = "sketch";
        return;
    };
    let rep = match reprise_feedback::rootcause::explain(replay, rc) {
        Ok(rep) => rep,
        Err(e) => {
            cell.root_cause = "no";
            cell.note = format!("no root-cause report: {e}");
            return;
        }
    };
    let lines = race_lines(bug);
    let at = |f: &str, l: u32| lines.contains(&(f.to_string(), l));
    let named = rep
        .races
        .iter()
        .any(|r| at(&r.first.file, r.first.line) && at(&r.second.file, r.second.line));
    cell.root_cause = match (named, rep.how) {
        (true, _) => "yes",
        (false, "no-race") => "sketch",
        (false, _) => "no",
    };
    if let Some(o) = &rep.ordered {
        cell.ordered_on_race_lines =
            at(&o.write.file, o.write.line) && at(&o.read.file, o.read.line);
        cell.races.push(format!(
            "ordered, no race: {} {}:{} -> {}:{}",
            o.variable, o.write.file, o.write.line, o.read.file, o.read.line
        ));
    }
    if rep.races.is_empty() && rep.how != "no-race" {
        cell.note = format!("the root-cause report ({}) names no race", rep.how);
    }
    cell.races.extend(rep.races.iter().map(|r| {
        format!(
            "{} {}:{} -> {}:{}",
            r.variable, r.first.file, r.first.line, r.second.file, r.second.line
        )
    }));
}

/// The program as a sketch level needs it built: `bb` calls the agent's
/// hook (rebuilt into `dir/<sketch>/`); `func` runs the program as built,
/// its function entries patched at start-up, as a user's program would be.
fn built_for(bug: &Bug, built: &Built, sketch: &str, a: &EvalOptions, dir: &Path) -> Result<Built> {
    let cov = crate::cov_dir(&a.reprise)?;
    if sketch == "func" {
        return Ok(built.clone());
    }
    match reprise_testbugs::instrument_flags(sketch, &cov) {
        None => Ok(built.clone()),
        Some(flags) => {
            reprise_testbugs::build_bug_with(bug, &corpus_dir(), &dir.join(sketch), &flags)
                .with_context(|| format!("cannot build {} for the {sketch} sketch", bug.name))
        }
    }
}

fn evaluate_replay(bug: &Bug, built: &Built, a: &EvalOptions, dir: &Path) -> Result<ReplayRow> {
    let mut recordings = Vec::new();
    for sketch in &a.sketches {
        let t = Instant::now();
        let exe = built_for(bug, built, sketch, a, dir)?;
        let rec = record_sketch(bug, &exe, sketch, a, dir)?;
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
    let native = measure(bug, built, a, argv, RunUnder::Native)?;
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
        if let (Some(t), None) = (&rec.trace, &a.keep_traces) {
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

pub(super) fn run_replay(a: &EvalOptions, bugs: &[Bug], built: &[Built]) -> Result<u8> {
    for s in &a.sketches {
        if s.parse::<reprise_schema::Sketch>().is_err() {
            bail!("--sketches: {s:?} is not a sketch (sync, sys, func, bb, bb-N)");
        }
    }
    for s in &a.strategies {
        if reprise_solver::strategy(s).is_none() {
            bail!(
                "--strategies: {s:?} is not a strategy ({})",
                reprise_solver::STRATEGY_NAMES.join(", ")
            );
        }
    }
    let scratch;
    let traces = match &a.keep_traces {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create the trace directory {}", d.display()))?;
            d.clone()
        }
        None => {
            scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
            scratch.path().to_path_buf()
        }
    };
    let (ps, pst) = (primary_sketch(a), primary_strategy(a));
    let mut rows = Vec::new();
    for bug in bugs {
        let b = built
            .iter()
            .find(|b| b.name == bug.name)
            .context("program not built")?;
        let t = Instant::now();
        let r = evaluate_replay(bug, b, a, &traces)?;
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
