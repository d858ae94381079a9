//! `reprise bench replay`: replay time, and the cost of observation (see
//! [`super`]).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{
    default_cache_dir, dir_size, ensure_input, files_equal, find_in_path, install_signal_handlers,
    loadavg, machine_description, median, native_run, require_tools, run_timed, tail, BenchOptions,
    TempDir, Workload,
};

const GOAL_REPLAY_PIGZ: f64 = 3.0;

/// `reprise bench replay`: records one non-failing `pigz -p 2 -c` run of the
/// generated input at `sys`, then, for several rounds, runs pigz natively
/// and `reprise replay` of the trace (one attempt), alternating the order;
/// prints the medians and the median of the per-round ratios. Every
/// replay must reproduce the run and write the native output, byte for
/// byte. Goal: replay ≤ 3× native.
pub(super) fn run_replay(a: &BenchOptions) -> Result<u8> {
    let rounds = a.rounds.unwrap_or(if a.quick { 2 } else { 5 });
    let size_mb = a.size_mb.unwrap_or(if a.quick { 2 } else { 20 });
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if size_mb == 0 {
        bail!("--size-mb must be at least 1");
    }
    if a.timeout.is_nan() || a.timeout <= 0.0 {
        bail!("--timeout must be a positive number of seconds");
    }
    if a.only.iter().any(|o| o != "pigz") {
        bail!("--only: `bench replay` has one workload: pigz");
    }
    install_signal_handlers();
    let reprise = a.reprise.clone();
    println!("{}", machine_description());
    require_tools(&["pigz"])?;
    let program = find_in_path("pigz").ok_or_else(|| anyhow!("pigz is not installed"))?;
    let cache = a.cache_dir.clone().unwrap_or_else(default_cache_dir);
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let input = ensure_input(&cache, size_mb)?;
    let w = Workload {
        key: "pigz",
        label: "pigz -p 2".to_string(),
        program,
        args: vec!["-p".into(), "2".into(), "-c".into(), input.into_os_string()],
        sketches: vec![("sys".to_string(), GOAL_REPLAY_PIGZ)],
        compressor: false,
    };
    let tmp = TempDir::new(&std::env::temp_dir(), "reprise-bench")?;
    let timeout = Duration::from_secs_f64(a.timeout);
    let reference = tmp.path().join("pigz.reference");
    let out = tmp.path().join("pigz.out");
    let err = tmp.path().join("pigz.err");
    let started = Instant::now();
    let warm = native_run(&w, &reference, &err, timeout, None)?;
    eprintln!(
        "reprise bench: {}: warm-up native {:.3} s",
        w.label,
        warm.as_secs_f64()
    );
    // The trace stays for all rounds.
    let trace = tmp.path().join("trace");
    let mut c = Command::new(&reprise);
    c.env("REPRISE_TRACE_DIR", tmp.path())
        .arg("record")
        .arg("--sketch")
        .arg("sys")
        .arg("-o")
        .arg(&trace)
        .arg(&w.program)
        .args(&w.args);
    let (t, status) = run_timed(&mut c, &out, &err, timeout)?;
    if !status.success() || !files_equal(&out, &reference)? {
        bail!(
            "the recorded run failed or changed the output ({status}): {}",
            tail(&err, 1000)
        );
    }
    let trace_bytes = dir_size(&trace);
    eprintln!(
        "reprise bench: {}: recorded in {:.3} s ({})",
        w.label,
        t.as_secs_f64(),
        reprise_schema::listing::human_size(trace_bytes)
    );
    let replay_out = tmp.path().join("replay-output");
    let replayed = |round: u32| -> Result<Duration> {
        let _ = fs::remove_dir_all(&replay_out);
        let mut c = Command::new(&reprise);
        c.env("REPRISE_TRACE_DIR", tmp.path())
            .arg("replay")
            .arg(&trace)
            .args(["--jobs", "1", "--max-attempts", "1", "--no-schedule"])
            .arg("--seed")
            .arg(round.to_string())
            .arg("--output-dir")
            .arg(&replay_out);
        let (t, status) = run_timed(&mut c, &out, &err, timeout)?;
        if !status.success() {
            bail!(
                "the replay did not reproduce the run ({status}): {} {}",
                tail(&out, 1000),
                tail(&err, 1000)
            );
        }
        if !files_equal(&replay_out.join("attempt-1/stdout"), &reference)? {
            bail!("OUTPUT DIFFERS: the replay wrote another output than the native run");
        }
        Ok(t)
    };
    let mut native_times = Vec::new();
    let mut replay_times = Vec::new();
    for round in 0..rounds {
        let mut line = format!("reprise bench: {}: round {}/{rounds}:", w.label, round + 1);
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for slot in order {
            if slot == 0 {
                let t = native_run(&w, &out, &err, timeout, Some(&reference))?;
                native_times.push(t.as_secs_f64());
                line.push_str(&format!(" native {:.3}s", t.as_secs_f64()));
            } else {
                let t = replayed(round)?;
                replay_times.push(t.as_secs_f64());
                line.push_str(&format!(" replay {:.3}s", t.as_secs_f64()));
            }
            let _ = fs::remove_file(&out);
        }
        eprintln!("{line}");
    }
    drop(tmp);
    let native = median(&native_times);
    let replay = median(&replay_times);
    let ratio = median(
        &replay_times
            .iter()
            .zip(&native_times)
            .map(|(r, n)| r / n)
            .collect::<Vec<f64>>(),
    );
    let spread = (native_times.iter().copied().fold(f64::NAN, f64::max)
        - native_times.iter().copied().fold(f64::NAN, f64::min))
        / native;
    let met = ratio <= GOAL_REPLAY_PIGZ;
    println!();
    println!(
        "replay time: medians of {rounds} rounds, input {size_mb} MB; ratio = median over rounds of replay/native in the same round{}",
        if a.quick {
            " (--quick: input too small for the goal to mean much)"
        } else {
            ""
        }
    );
    println!(
        "{:<18} {:<6} {:>9} {:>10} {:>7} {:>10}  {:<10} met",
        "workload", "sketch", "native s", "replay s", "ratio", "trace", "goal"
    );
    println!(
        "{:<18} {:<6} {:>9.3} {:>10.3} {:>7.3} {:>10}  {:<10} {}",
        w.label,
        "sys",
        native,
        replay,
        ratio,
        reprise_schema::listing::human_size(trace_bytes),
        format!("<={GOAL_REPLAY_PIGZ:.2}"),
        if met { "yes" } else { "no" }
    );
    println!(
        "(every replay reproduced the run with the native output; total {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    if spread > 0.2 {
        println!(
            "NOISY: native times vary by {:.0}% across rounds; the machine is loaded ({}): the ratio is unreliable",
            spread * 100.0,
            loadavg()
        );
    }
    observation_cost(a, &reprise)?;
    Ok(if a.check && !met { 1 } else { 0 })
}

/// Programs of the corpus whose observed replay is timed, at their
/// default arguments (runs that pass).
const OBSERVED_PROGRAMS: [&str; 3] = [
    "mysql_3596_procinfo",
    "mozilla_js_propcache",
    "uros_377_freestacks",
];

/// The cost of observation (the feedback strategy's access breakpoints
/// and log): the same schedule replayed plain and observed, alternating,
/// for a recorded passing run of a few corpus programs.
fn observation_cost(a: &BenchOptions, reprise: &Path) -> Result<()> {
    use reprise_replayer::observe::ObservePlan;
    use reprise_replayer::{attempt, matches, AttemptOptions, Replay, Strategy};
    let rounds = a.rounds.unwrap_or(if a.quick { 2 } else { 5 });
    let m = reprise_testbugs::load_manifest()?;
    let tmp = TempDir::new(&std::env::temp_dir(), "reprise-bench-observe")?;
    let built = reprise_testbugs::build_manifest(
        &m,
        &reprise_testbugs::corpus_dir(),
        &tmp.path().join("bin"),
    )?;
    println!();
    println!("observation cost: the same schedule replayed plain and observed (access breakpoints, log), medians of {rounds} rounds");
    println!(
        "{:<22} {:>9} {:>9} {:>10} {:>11} {:>7}",
        "program", "accesses", "plain s", "observed s", "per access", "ratio"
    );
    for name in OBSERVED_PROGRAMS {
        let bug = m
            .bugs
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| anyhow!("{name} is not in the corpus"))?;
        let exe = &built
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| anyhow!("{name} was not built"))?
            .exe;
        // A passing run: observation costs the same whether it fails.
        let trace = tmp.path().join(name);
        let mut recorded = None;
        for _ in 0..20 {
            let _ = fs::remove_dir_all(&trace);
            let status = Command::new(reprise)
                .env("REPRISE_TRACE_DIR", tmp.path())
                .current_dir(reprise_testbugs::corpus_dir())
                .args(["record", "--sketch", "sys", "-o"])
                .arg(&trace)
                .arg(exe)
                .args(&bug.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if status.success() {
                recorded = Some(Replay::open(&trace, false)?);
                break;
            }
        }
        let Some(replay) = recorded else {
            println!("{name:<22} no passing run recorded in 20 tries");
            continue;
        };
        let expected = replay
            .recorded
            .clone()
            .ok_or_else(|| anyhow!("{name}: the trace has no outcome"))?;
        let run = |observe: bool| -> Result<(f64, u64)> {
            let mut o = AttemptOptions::new(1);
            o.strategy = Strategy::Feedback;
            o.timeout = Duration::from_secs(120);
            o.observe = observe.then(|| ObservePlan {
                log: true,
                ..ObservePlan::default()
            });
            let r = attempt(&replay, &o)?;
            if !r.outcome().is_some_and(|got| matches(&expected, got)) {
                bail!(
                    "{name}: the replay did not reproduce the run: {}",
                    r.summary()
                );
            }
            let n = r.observation.as_ref().map_or(0, |ob| ob.hits);
            Ok((r.duration.as_secs_f64(), n))
        };
        let (mut plain, mut observed, mut ratios, mut hits) = (vec![], vec![], vec![], 0);
        for round in 0..rounds {
            let (p, o) = if round % 2 == 0 {
                let p = run(false)?;
                (p, run(true)?)
            } else {
                let o = run(true)?;
                (run(false)?, o)
            };
            plain.push(p.0);
            observed.push(o.0);
            ratios.push(o.0 / p.0);
            hits = o.1;
        }
        let (p, o) = (median(&plain), median(&observed));
        println!(
            "{:<22} {:>9} {:>9.3} {:>10.3} {:>9.1}us {:>7.1}",
            name,
            hits,
            p,
            o,
            if hits > 0 {
                (o - p) * 1e6 / hits as f64
            } else {
                0.0
            },
            median(&ratios)
        );
    }
    println!("(accesses: breakpoint hits in the executable's code; per access: (observed - plain) / accesses)");
    Ok(())
}
