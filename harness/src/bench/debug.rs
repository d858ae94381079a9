//! `reprise bench debug`: the debugger's searches on a long reproduced run.
//!
//! Builds testbugs' pgdoorman_206_bounded_list, records `60000 0` at
//! `sync` until it fails (its bounded list grew past the bound: ≥ 1
//! million sketch events), saves the reproducing schedule with `reprise
//! replay`, then, in this process: opens the run as `reprise debug` does,
//! times `bisect "cache_peak <= 8"` down to the instruction (goal ≤ 30 s),
//! then `goto` to 10 random events (goal ≤ 2 s each, after the first pass
//! the bisect made), and prints the memory the checkpoints take (the sum
//! of `Private_Dirty` in each checkpoint process's smaps_rollup).
//!
//! A failing recording whose base schedule leaves the sketch before the
//! failure (its racy branches take another way) cannot be bisected for
//! the failure: the searches are then timed on a run of as many events
//! that its base schedule replays whole, bench/locks.c, whose counter
//! crosses half its final value half-way.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reprise_debugger::dwarf::Program;
use reprise_debugger::search::bisect;
use reprise_debugger::{Position, Target};
use reprise_schema::{read_schedule, OutcomeKind, TraceReader};

use super::{build_c, default_cache_dir, machine_description, BenchOptions, SplitMix, TempDir};

const SOURCE: &str = include_str!("../../../testbugs/programs/pgdoorman_206_bounded_list.c");
const INVARIANT: &str = "cache_peak <= 8";
const LOCKS_SOURCE: &str = include_str!("../../../bench/locks.c");
/// Lock/unlock pairs of the run that replays whole: 2 events each.
const LOCKS_PAIRS: u64 = 600_000;
/// Its counter (incremented under the lock) crosses half its final value.
const LOCKS_INVARIANT: &str = "counter < 300000";
const BISECT_GOAL: Duration = Duration::from_secs(30);
const GOTO_GOAL: Duration = Duration::from_secs(2);
const GOTOS: usize = 10;
const MIN_EVENTS: usize = 1_000_000;
const RECORD_TRIES: u32 = 20;
/// Failing recordings tried for one whose base schedule reproduces.
const BASE_TRIES: u32 = 5;

pub(super) fn run_debug(a: &BenchOptions) -> Result<u8> {
    super::install_signal_handlers();
    let cache = a.cache_dir.clone().unwrap_or_else(default_cache_dir);
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create {}", cache.display()))?;
    let exe = build_c(
        &cache,
        "pgdoorman_206_bounded_list",
        SOURCE,
        &["-g", "-O1", "-pthread"],
    )?;
    let tmp = TempDir::new(&std::env::temp_dir(), "reprise-bench-debug")?;
    let trace = tmp.path().join("trace");
    let args: &[&str] = if a.quick {
        &["3000", "3000"]
    } else {
        &["60000", "0"]
    };
    let timeout = Duration::from_secs_f64(a.timeout);

    // Record until it fails.
    let t0 = Instant::now();
    let mut tries = 0;
    let mut base_reproduces = true;
    loop {
        super::check_interrupted()?;
        tries += 1;
        let _ = std::fs::remove_dir_all(&trace);
        let (_, _) = super::run_timed(
            Command::new(&a.reprise)
                .args(["record", "--sketch", "sync", "-o"])
                .arg(&trace)
                .arg(&exe)
                .args(args)
                .env("REPRISE_TRACE_DIR", tmp.path()),
            &tmp.path().join("record.out"),
            &tmp.path().join("record.err"),
            timeout,
        )?;
        let r = TraceReader::open(&trace).map_err(|e| {
            anyhow!(
                "{}: {e}: {}",
                trace.display(),
                super::tail(&tmp.path().join("record.err"), 500)
            )
        })?;
        let failed = r
            .outcome()
            .is_some_and(|o| o.kind != OutcomeKind::Exited || o.exit_code != 0);
        // Without --quick the run is debugged on the sketch's base
        // schedule: keep a recording whose base schedule replays to the
        // recorded failure (checked by replaying it once, about a
        // microsecond per event).
        if failed && (a.quick || base_schedule_reproduces(&trace)?) {
            break;
        }
        if failed && tries >= BASE_TRIES {
            // Measured on the part of the run the base schedule replays.
            base_reproduces = false;
            break;
        }
        if tries >= RECORD_TRIES {
            bail!("pgdoorman_206_bounded_list {}: no failure that its base schedule replays in {RECORD_TRIES} recordings", args.join(" "));
        }
    }
    let record_time = t0.elapsed();
    // The run to debug: the sketch's base schedule when its replay
    // already breaks the invariant (checked by `bisect` itself), else the
    // schedule `reprise replay` finds. A search over a million events is
    // slow (each observed run breakpoints every access), so it is the
    // fallback only.
    let t1 = Instant::now();
    let mut searched = false;
    if a.quick {
        let (_, _) = super::run_timed(
            Command::new(&a.reprise)
                .args(["replay", "--jobs", "1", "--max-attempts", "20"])
                .arg(&trace)
                .env("REPRISE_TRACE_DIR", tmp.path()),
            &tmp.path().join("replay.out"),
            &tmp.path().join("replay.err"),
            timeout,
        )?;
        if read_schedule(&trace)?.is_none() {
            bail!(
                "reprise replay did not reproduce the recorded failure: {}",
                super::tail(&tmp.path().join("replay.err"), 500)
            );
        }
        searched = true;
    }
    let replay_time = t1.elapsed();

    println!("reprise bench debug: {}", machine_description());
    println!(
        "pgdoorman_206_bounded_list {} recorded at sync until it failed: {tries} recording(s), {:.1} s; {}",
        args.join(" "),
        record_time.as_secs_f64(),
        if searched {
            format!("reproduced by `reprise replay` in {:.1} s", replay_time.as_secs_f64())
        } else {
            "debugged on the sketch's base schedule (no search)".to_string()
        }
    );

    // In process, as `reprise debug` does.
    let t2 = Instant::now();
    let (mut target, _) = Target::open(&trace, true)?;
    let events = target.event_count();
    let path = target.replay().header.program_path.clone();
    let mut program: Program =
        Program::load(&path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if let Some(bias) = program.load_bias_in(&target.maps()?) {
        program.set_load_bias(bias);
    }
    let open_time = t2.elapsed();
    println!(
        "{events} sketch events ({}); opened paused before event 0 in {:.2} s",
        if events >= MIN_EVENTS {
            format!("at least {MIN_EVENTS}: yes")
        } else {
            format!("at least {MIN_EVENTS}: NO, the goals below are on a shorter run")
        },
        open_time.as_secs_f64()
    );

    let mut missed = 0;
    let mut t3 = Instant::now();
    // Where the replayable part of the run ends.
    let mut last = events.saturating_sub(1);
    let mut invariant = INVARIANT;
    let b = if base_reproduces {
        Some(bisect(&mut target, &program, INVARIANT, None, None))
    } else {
        target.cont()?;
        let reached = target.outcome().map_or(0, |r| r.events_replayed as usize);
        println!(
            "bisect \"{INVARIANT}\": NOT MEASURED: in {BASE_TRIES} failing recordings the base schedule left the sketch before the failure (this one at event {reached} of {events}: {}); a reproducing schedule of a run this long was not found (the feedback search's observed runs breakpoint every access)",
            target.outcome().map(|r| r.summary()).unwrap_or_default()
        );
        target.kill();
        // Instead: a run of as many events that its base schedule replays
        // whole (every shared access under the lock), bisected for the
        // moment its counter crossed half its final value.
        let locks = build_c(&cache, "locks-g", LOCKS_SOURCE, &["-g", "-O1", "-pthread"])?;
        let long = tmp.path().join("locks-trace");
        let (_, _) = super::run_timed(
            Command::new(&a.reprise)
                .args(["record", "--sketch", "sync", "-o"])
                .arg(&long)
                .arg(&locks)
                .args([LOCKS_PAIRS.to_string().as_str(), "4"])
                .env("REPRISE_TRACE_DIR", tmp.path()),
            &tmp.path().join("locks.out"),
            &tmp.path().join("locks.err"),
            timeout,
        )?;
        (target, _) = Target::open(&long, true)?;
        let path = target.replay().header.program_path.clone();
        program = Program::load(&path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if let Some(bias) = program.load_bias_in(&target.maps()?) {
            program.set_load_bias(bias);
        }
        last = target.event_count().saturating_sub(1);
        println!(
            "instead: bench/locks.c {LOCKS_PAIRS} 4 recorded at sync: {} sketch events, replayed whole by its base schedule; bisect \"{LOCKS_INVARIANT}\"",
            target.event_count()
        );
        invariant = LOCKS_INVARIANT;
        t3 = Instant::now();
        Some(bisect(&mut target, &program, LOCKS_INVARIANT, None, None))
    };
    let bisect_time = t3.elapsed();
    match &b {
        Some(Ok(b)) => {
            println!("bisect \"{invariant}\": {b}");
            if b.write.is_none() {
                missed += 1;
                println!("  the instruction was NOT found");
            }
        }
        Some(Err(e)) => {
            missed += 1;
            println!("bisect \"{invariant}\": FAILED: {e}");
        }
        None => missed += 1,
    }
    if let Some(b) = &b {
        let ok = bisect_time <= BISECT_GOAL && b.as_ref().is_ok_and(|b| b.write.is_some());
        if !ok {
            missed += 1;
        }
        println!(
            "bisect to the instruction: {:.2} s, goal <= {} s, met {}",
            bisect_time.as_secs_f64(),
            BISECT_GOAL.as_secs(),
            if ok { "yes" } else { "NO" }
        );
    } else {
        // The gotos below then run without the bisect's checkpoints:
        // one first pass to the end of what replays, checkpoints on it.
        let stride = (last / 16).max(1);
        let mut n = stride;
        while n < last {
            target.goto(n)?;
            let _ = target.checkpoint();
            n += stride;
        }
        println!(
            "first pass over {last} events with {} checkpoints: {:.2} s",
            target.checkpoints().len(),
            t3.elapsed().as_secs_f64()
        );
    }

    // gotos to random events, after the first pass the bisect made.
    let mut rng = SplitMix(0x0064_6562_7567);
    let mut times = Vec::new();
    for _ in 0..GOTOS {
        super::check_interrupted()?;
        let n = rng.below(last as u64 + 1) as usize;
        let t = Instant::now();
        let pos = target.goto(n)?;
        let d = t.elapsed();
        if pos != Position::Before(n) {
            println!("  goto {n}: ended at {pos:?}");
            missed += 1;
        }
        println!("  goto {n}: {:.3} s", d.as_secs_f64());
        times.push(d);
    }
    let worst = times.iter().max().copied().unwrap_or_default();
    let median = {
        let mut s: Vec<f64> = times.iter().map(|d| d.as_secs_f64()).collect();
        s.sort_by(|a, b| a.total_cmp(b));
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let goto_ok = worst <= GOTO_GOAL;
    if !goto_ok {
        missed += 1;
    }
    println!(
        "goto to {GOTOS} random events: median {median:.3} s, worst {:.3} s, goal <= {} s each, met {}",
        worst.as_secs_f64(),
        GOTO_GOAL.as_secs(),
        if goto_ok { "yes" } else { "NO" }
    );

    // What the checkpoints cost.
    let cps = target.checkpoints();
    let mut total_kb = 0u64;
    let mut unread = 0;
    for (_, _, pid) in &cps {
        match private_dirty_kb(*pid) {
            Some(kb) => total_kb += kb,
            None => unread += 1,
        }
    }
    println!(
        "checkpoints: {} ({} by the bisect), Private_Dirty {:.1} MiB in total ({:.0} KiB each on average){}",
        cps.len(),
        b.as_ref().and_then(|b| b.as_ref().ok()).map(|b| b.checkpoints).unwrap_or(0),
        total_kb as f64 / 1024.0,
        if cps.is_empty() { 0.0 } else { total_kb as f64 / cps.len() as f64 },
        if unread > 0 { format!("; {unread} unreadable") } else { String::new() }
    );
    println!(
        "replays started: {}, checkpoint resumes: {}",
        target.replays, target.resumes
    );
    target.kill();
    if a.quick {
        println!("(--quick: a short run, the goals are not meaningful)");
    }
    Ok(if a.check && missed > 0 { 1 } else { 0 })
}

/// Whether the trace's base schedule replays to its recorded failure.
fn base_schedule_reproduces(trace: &Path) -> Result<bool> {
    let (mut target, _) = Target::open(trace, true)?;
    target.cont()?;
    let recorded = target.replay().recorded.clone();
    let reproduced = match (target.outcome().and_then(|r| r.outcome()), recorded) {
        (Some(got), Some(rec)) => reprise_replayer::matches(&rec, got),
        _ => false,
    };
    target.kill();
    Ok(reproduced)
}

/// `Private_Dirty` of `pid` (kB), from /proc/PID/smaps_rollup.
fn private_dirty_kb(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(Path::new(&format!("/proc/{pid}/smaps_rollup"))).ok()?;
    s.lines()
        .find(|l| l.starts_with("Private_Dirty:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
