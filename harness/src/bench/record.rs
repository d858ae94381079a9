//! `reprise bench record`: recording overhead (see [`super`]).

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{
    build_c, default_cache_dir, dir_size, ensure_input, files_equal, find_in_path, geomean,
    install_signal_handlers, loadavg, machine_description, median, native_run, one_line,
    require_tools, run_timed, tail, BenchOptions, TempDir, Workload, INTERRUPTED,
};

const LOCKS_C: &str = include_str!("../../../bench/locks.c");
const CPU_C: &str = include_str!("../../../bench/cpu.c");
const READS_C: &str = include_str!("../../../bench/reads.c");

const GOAL_COMPRESS_SYNC: f64 = 1.05;
const GOAL_COMPRESS_SYS: f64 = 1.15;
const GOAL_LOCKS_SYNC: f64 = 3.0;
const GOAL_READS_SYS: f64 = 15.0;
/// The goals for the richer sketches on a CPU-bound program: func
/// at most 1.5x, bb at most 3x (against the same build run natively).
const GOAL_CPU_FUNC: f64 = 1.5;
const GOAL_CPU_BB: f64 = 3.0;

struct Row {
    label: String,
    sketch: String,
    native: f64,
    recorded: f64,
    /// Median over rounds of recorded / native in the same round: robust
    /// to the machine's load drifting during the benchmark.
    paired_ratio: f64,
    /// (max - min) / median of the native times.
    native_spread: f64,
    trace_bytes: u64,
    goal: f64,
    compressor: bool,
    /// Why this row has no measurement: the recorded (or native) run failed.
    failure: Option<String>,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.failure.is_some() {
            f64::NAN
        } else {
            self.paired_ratio
        }
    }
}

pub(super) fn run_record(a: &BenchOptions) -> Result<u8> {
    let rounds = a.rounds.unwrap_or(if a.quick { 2 } else { 5 });
    let size_mb = a.size_mb.unwrap_or(if a.quick { 2 } else { 100 });
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if size_mb == 0 {
        bail!("--size-mb must be at least 1");
    }
    if !(a.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let known = [
        "pigz",
        "pbzip2",
        "xz",
        "locks",
        "reads",
        "cpu",
        "memcached",
        "nginx",
        "redis",
    ];
    for o in &a.only {
        if !known.contains(&o.as_str()) {
            bail!(
                "--only: unknown workload {o:?} (known: {})",
                known.join(", ")
            );
        }
    }
    install_signal_handlers();
    let reprise = a.reprise.clone();
    println!("{}", machine_description());
    let workloads = workloads(a, &reprise, size_mb)?;

    let tmp = TempDir::new(&std::env::temp_dir(), "reprise-bench")?;
    eprintln!(
        "reprise bench: {} workloads, {rounds} rounds, compressor input {size_mb} MB; temporary files in {}",
        workloads.len(),
        tmp.path().display()
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for w in &workloads {
        rows.extend(bench_workload(a, &reprise, tmp.path(), w, rounds)?);
    }
    let servers = super::servers::bench_servers(a, &reprise, tmp.path(), rounds)?;
    drop(tmp);

    if !rows.is_empty() {
        print_table(&rows, a.quick, rounds, size_mb, started.elapsed());
    }
    super::servers::print_servers(&servers);
    if rows.iter().any(|r| r.failure.is_some()) {
        eprintln!("reprise bench: FAILED: some recorded runs failed or changed the program's output (see above)");
        return Ok(1);
    }
    let all_met = goals(&rows).iter().all(|(_, _, _, met)| *met);
    Ok(if a.check && !all_met { 1 } else { 0 })
}

/// The compressors `wanted`, at the levels `measured`, on `input`.
fn compressor_workloads(
    wanted: &dyn Fn(&str) -> bool,
    measured: &dyn Fn(&str) -> bool,
    input: Option<&Path>,
) -> Result<Vec<Workload>> {
    let mut workloads = Vec::new();
    let compressors: [(&str, &[&str]); 3] = [
        ("pigz", &["-p", "2"]),
        ("pbzip2", &["-p2"]),
        ("xz", &["-T2"]),
    ];
    for (tool, flags) in compressors {
        if !wanted(tool) {
            continue;
        }
        let program = find_in_path(tool).ok_or_else(|| anyhow!("{tool} is not installed"))?;
        let input = input.ok_or_else(|| anyhow!("no input file for {tool}"))?;
        let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
        args.push("-c".into());
        args.push(input.as_os_str().to_os_string());
        workloads.push(Workload {
            key: tool,
            label: format!("{tool} {}", flags.join(" ")),
            program,
            args,
            sketches: [("sync", GOAL_COMPRESS_SYNC), ("sys", GOAL_COMPRESS_SYS)]
                .into_iter()
                .filter(|(s, _)| measured(s))
                .map(|(s, g)| (s.to_string(), g))
                .collect(),
            compressor: true,
        });
    }
    Ok(workloads)
}

/// The workloads `--only` and `--sketch` ask for: the compressors, and the
/// microbenchmarks built as the sketch levels need them.
fn workloads(a: &BenchOptions, reprise: &Path, size_mb: u64) -> Result<Vec<Workload>> {
    let wanted = |k: &str| a.only.is_empty() || a.only.iter().any(|o| o == k);
    let levels: Vec<reprise_schema::Sketch> = if a.sketches.is_empty() {
        vec!["sync".parse().unwrap(), "sys".parse().unwrap()]
    } else {
        a.sketches
            .iter()
            .map(|s| s.parse().map_err(|e: String| anyhow!("--sketch: {e}")))
            .collect::<Result<_>>()?
    };
    let measured = |s: &str| levels.iter().any(|l| l.to_string() == s);
    // The levels that need an instrumented build (func, bb, bb-N).
    let instrumented: Vec<String> = levels
        .iter()
        .filter(|l| l.level >= reprise_schema::SketchLevel::Func)
        .map(|l| l.to_string())
        .collect();
    let (lock_pairs, reads) = if a.quick {
        (1_000_000u64, 100_000u64)
    } else {
        (10_000_000, 1_000_000)
    };

    // Compressors: scripts/setup.sh installs them.
    let compressors_wanted: Vec<&str> = ["pigz", "pbzip2", "xz"]
        .into_iter()
        .filter(|t| wanted(t))
        .collect();
    require_tools(&compressors_wanted)?;

    let cache = a.cache_dir.clone().unwrap_or_else(default_cache_dir);
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let needs_input = ["pigz", "pbzip2", "xz", "reads"].iter().any(|k| wanted(k));
    let input = if needs_input {
        Some(ensure_input(&cache, size_mb)?)
    } else {
        None
    };
    // reads.c reads a file of at least 64 MB in full mode (its reads do not
    // wrap around); the compressors' input serves unless it is smaller.
    let reads_input = match &input {
        Some(_) if wanted("reads") && !a.quick && size_mb < 64 => Some(ensure_input(&cache, 64)?),
        other => other.clone(),
    };

    let mut workloads = compressor_workloads(&wanted, &measured, input.as_deref())?;
    let cov = crate::cov_dir(reprise);
    // A microbenchmark: its plain build at the levels it has goals for,
    // and one build per instrumented level, measured against itself.
    let mut micro = |key: &'static str,
                     label: String,
                     source: &str,
                     flags: &[&str],
                     args: Vec<OsString>,
                     plain: &[(&str, f64)],
                     goal: &dyn Fn(&str) -> f64|
     -> Result<()> {
        if !wanted(key) {
            return Ok(());
        }
        let mut plain: Vec<(String, f64)> = plain
            .iter()
            .filter(|(s, _)| measured(s))
            .map(|(s, g)| (s.to_string(), *g))
            .collect();
        // func on the unmodified build: its entries patched at start-up.
        if measured("func") {
            plain.push(("func".to_string(), goal("func")));
        }
        if !plain.is_empty() {
            workloads.push(Workload {
                key,
                label: label.clone(),
                program: build_c(&cache, key, source, flags)?,
                args: args.clone(),
                sketches: plain,
                compressor: false,
            });
        }
        for level in &instrumented {
            let cov = cov.as_ref().map_err(|e| anyhow!("{e}"))?;
            let extra = reprise_testbugs::instrument_flags(level, cov).unwrap_or_default();
            let mut all: Vec<&str> = vec!["-Wl,--no-as-needed"];
            all.extend(flags);
            all.extend(extra.iter().map(String::as_str));
            let (build, flag) = if level.starts_with("bb") {
                ("bb", "trace-pc")
            } else {
                ("func", "-finstrument")
            };
            workloads.push(Workload {
                key,
                label: format!("{label}, {flag}"),
                program: build_c(&cache, &format!("{key}-{build}"), source, &all)?,
                args: args.clone(),
                sketches: vec![(level.clone(), goal(level))],
                compressor: false,
            });
        }
        Ok(())
    };
    let no_goal = |_: &str| f64::INFINITY;
    let cpu_items: u64 = if a.quick { 100_000 } else { 6_000_000 };
    // The cpu workload has no sync or sys goal: it is there for func and bb.
    if !instrumented.is_empty() || a.only.iter().any(|o| o == "cpu") {
        micro(
            "cpu",
            format!("cpu 2thr {}k", cpu_items / 1000),
            CPU_C,
            &["-O2", "-pthread"],
            vec![cpu_items.to_string().into(), "2".into()],
            &[("sync", f64::INFINITY), ("sys", f64::INFINITY)],
            &|l: &str| {
                if l == "func" {
                    GOAL_CPU_FUNC
                } else if l == "bb" {
                    GOAL_CPU_BB
                } else {
                    f64::INFINITY
                }
            },
        )?;
    }
    micro(
        "locks",
        format!("locks 4thr {}M", lock_pairs / 1_000_000),
        LOCKS_C,
        &["-O2", "-pthread"],
        vec![lock_pairs.to_string().into(), "4".into()],
        &[("sync", GOAL_LOCKS_SYNC)],
        &no_goal,
    )?;
    if wanted("reads") {
        let mut args: Vec<OsString> = vec![reads_input.clone().unwrap().into_os_string()];
        args.push(reads.to_string().into());
        args.push("64".into());
        micro(
            "reads",
            format!("reads {}k x64B", reads / 1000),
            READS_C,
            &["-O2"],
            args,
            &[("sys", GOAL_READS_SYS)],
            &no_goal,
        )?;
    }

    Ok(workloads)
}

/// Record the workload at `sketch` into a temporary trace; check its status,
/// the trace's completeness and that its output equals `reference`. The wall
/// time and the trace's size.
#[allow(clippy::too_many_arguments)]
fn recorded_run(
    reprise: &Path,
    tmp: &Path,
    w: &Workload,
    sketch: &str,
    out: &Path,
    err: &Path,
    timeout: Duration,
    reference: &Path,
) -> Result<(Duration, u64)> {
    let rec = TempDir::new(tmp, "rec")?;
    let trace = rec.path().join("trace");
    let mut c = Command::new(reprise);
    c.arg("record")
        .arg("--sketch")
        .arg(sketch)
        .arg("-o")
        .arg(&trace)
        .arg(&w.program)
        .args(&w.args);
    let (t, status) = run_timed(&mut c, out, err, timeout)?;
    if !status.success() {
        bail!("recorded run failed ({status}): {}", tail(err, 1000));
    }
    if trace.join("incomplete").exists() || !trace.join("header").exists() {
        bail!("recorded run left an incomplete trace: {}", tail(err, 1000));
    }
    if !files_equal(out, reference)? {
        bail!(
            "OUTPUT DIFFERS: the recorded run wrote {} bytes, not the native run's {} bytes (or different ones): recording changed the program's result",
            fs::metadata(out).map(|m| m.len()).unwrap_or(0),
            fs::metadata(reference).map(|m| m.len()).unwrap_or(0)
        );
    }
    Ok((t, dir_size(&trace)))
}

/// Warm-up native run (the reference output), then `rounds` rounds each of
/// one native run and one recorded run per sketch level, the order reversed
/// every other round. A failed recorded run fails its row (later rounds skip
/// that sketch level); a failed native run fails the workload's rows.
fn bench_workload(
    a: &BenchOptions,
    reprise: &Path,
    tmp: &Path,
    w: &Workload,
    rounds: u32,
) -> Result<Vec<Row>> {
    let reference = tmp.join(format!("{}.reference", w.key));
    let out = tmp.join(format!("{}.out", w.key));
    let err = tmp.join(format!("{}.err", w.key));
    let max_timeout = Duration::from_secs_f64(a.timeout);
    let n = w.sketches.len();
    let mut failure: Vec<Option<String>> = vec![None; n];
    let fatal =
        |e: &anyhow::Error| INTERRUPTED.load(Ordering::SeqCst) || e.to_string() == "interrupted";

    let rows = |native_times: &[f64],
                rec: &[Vec<f64>],
                sizes: &[Vec<f64>],
                failure: Vec<Option<String>>|
     -> Vec<Row> {
        let native = median(native_times);
        let spread = native_times.iter().copied().fold(f64::NAN, f64::max)
            - native_times.iter().copied().fold(f64::NAN, f64::min);
        w.sketches
            .iter()
            .zip(failure)
            .enumerate()
            .map(|(i, ((sketch, goal), failure))| Row {
                label: w.label.clone(),
                sketch: sketch.clone(),
                native,
                recorded: if failure.is_some() {
                    f64::NAN
                } else {
                    median(&rec[i])
                },
                paired_ratio: median(
                    &rec[i]
                        .iter()
                        .zip(native_times)
                        .map(|(r, n)| r / n)
                        .collect::<Vec<f64>>(),
                ),
                native_spread: spread / native,
                trace_bytes: median(&sizes[i]) as u64,
                goal: *goal,
                compressor: w.compressor,
                failure,
            })
            .collect()
    };

    let warm = match native_run(w, &reference, &err, max_timeout, None) {
        Ok(t) if fs::metadata(&reference).map(|m| m.len()).unwrap_or(0) > 0 => t,
        Ok(_) => {
            let msg = "the native run wrote no output".to_string();
            eprintln!("reprise bench: {}: FAILED: {msg}", w.label);
            return Ok(rows(
                &[],
                &vec![vec![]; n],
                &vec![vec![]; n],
                vec![Some(msg); n],
            ));
        }
        Err(e) if fatal(&e) => return Err(e),
        Err(e) => {
            let msg = one_line(&e);
            eprintln!("reprise bench: {}: FAILED: {msg}", w.label);
            return Ok(rows(
                &[],
                &vec![vec![]; n],
                &vec![vec![]; n],
                vec![Some(msg); n],
            ));
        }
    };
    // Recording is expected within a small factor; do not wait forever.
    let timeout = max_timeout.min(Duration::from_secs_f64(
        (warm.as_secs_f64() * 50.0).max(60.0),
    ));
    eprintln!(
        "reprise bench: {}: warm-up native {:.3} s",
        w.label,
        warm.as_secs_f64()
    );

    let mut native_times = Vec::new();
    let mut rec_times: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut sizes: Vec<Vec<f64>> = vec![Vec::new(); n];
    // Slot 0: native; slot i: recorded at w.sketches[i - 1].
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..=n).collect()
        } else {
            (0..=n).rev().collect()
        };
        let mut line = format!("reprise bench: {}: round {}/{rounds}:", w.label, round + 1);
        for slot in order {
            if slot == 0 {
                match native_run(w, &out, &err, timeout, Some(&reference)) {
                    Ok(t) => {
                        native_times.push(t.as_secs_f64());
                        line.push_str(&format!(" native {:.3}s", t.as_secs_f64()));
                    }
                    Err(e) if fatal(&e) => return Err(e),
                    Err(e) => {
                        let msg = one_line(&e);
                        eprintln!("reprise bench: {}: FAILED: {msg}", w.label);
                        return Ok(rows(&native_times, &rec_times, &sizes, vec![Some(msg); n]));
                    }
                }
            } else {
                let i = slot - 1;
                let sketch = w.sketches[i].0.as_str();
                if failure[i].is_some() {
                    continue;
                }
                match recorded_run(reprise, tmp, w, sketch, &out, &err, timeout, &reference) {
                    Ok((t, size)) => {
                        rec_times[i].push(t.as_secs_f64());
                        sizes[i].push(size as f64);
                        line.push_str(&format!(" {sketch} {:.3}s", t.as_secs_f64()));
                    }
                    Err(e) if fatal(&e) => return Err(e),
                    Err(e) => {
                        let msg = one_line(&e);
                        eprintln!("reprise bench: {} at {sketch}: FAILED: {msg}", w.label);
                        line.push_str(&format!(" {sketch} FAILED"));
                        failure[i] = Some(msg);
                    }
                }
            }
            let _ = fs::remove_file(&out);
        }
        eprintln!("{line}");
    }
    Ok(rows(&native_times, &rec_times, &sizes, failure))
}

/// The goals that decide: each microbenchmark's row, and the compressors'
/// geometric mean per sketch level: (what, ratio, goal, met). A failed row
/// makes its goal unmet (ratio NaN).
fn goals(rows: &[Row]) -> Vec<(String, f64, f64, bool)> {
    let mut g = Vec::new();
    for (sketch, goal) in [("sync", GOAL_COMPRESS_SYNC), ("sys", GOAL_COMPRESS_SYS)] {
        let ratios: Vec<f64> = rows
            .iter()
            .filter(|r| r.compressor && r.sketch == sketch)
            .map(Row::ratio)
            .collect();
        if !ratios.is_empty() {
            let gm = geomean(&ratios);
            g.push((
                format!("geomean of {} compressors, {sketch}", ratios.len()),
                gm,
                goal,
                gm <= goal,
            ));
        }
    }
    for r in rows.iter().filter(|r| !r.compressor && r.goal.is_finite()) {
        g.push((
            format!("{}, {}", r.label, r.sketch),
            r.ratio(),
            r.goal,
            r.ratio() <= r.goal,
        ));
    }
    g
}

fn print_table(rows: &[Row], quick: bool, rounds: u32, size_mb: u64, elapsed: Duration) {
    println!();
    println!(
        "recording overhead: medians of {rounds} rounds, compressor input {size_mb} MB; ratio = median over rounds of recorded/native in the same round{}",
        if quick {
            " (--quick: inputs too small for the goals to mean much)"
        } else {
            ""
        }
    );
    println!(
        "{:<30} {:<6} {:>9} {:>10} {:>7} {:>10} {:>10}  {:<10} met",
        "workload", "sketch", "native s", "recorded s", "ratio", "trace", "trace/s", "goal"
    );
    for r in rows {
        let goal = if r.compressor {
            format!("<={:.2} gm", r.goal)
        } else if r.goal.is_finite() {
            format!("<={:.2}", r.goal)
        } else {
            "-".to_string()
        };
        let (rec, ratio, trace, rate) = if r.failure.is_some() {
            ("-".into(), "FAILED".into(), "-".into(), "-".into())
        } else {
            (
                format!("{:.3}", r.recorded),
                format!("{:.3}", r.ratio()),
                reprise_schema::listing::human_size(r.trace_bytes),
                // Trace bytes per second of the recorded run.
                reprise_schema::listing::human_size(
                    (r.trace_bytes as f64 / r.recorded.max(1e-3)) as u64,
                ),
            )
        };
        let met = if !r.goal.is_finite() {
            "-"
        } else if r.ratio() <= r.goal {
            "yes"
        } else {
            "no"
        };
        println!(
            "{:<30} {:<6} {:>9.3} {:>10} {:>7} {:>10} {:>10}  {:<10} {met}",
            r.label, r.sketch, r.native, rec, ratio, trace, rate, goal,
        );
    }
    println!();
    for (what, ratio, goal, met) in goals(rows) {
        let ratio = if ratio.is_nan() {
            "n/a".to_string()
        } else {
            format!("{ratio:.3}")
        };
        println!(
            "{what:<40} ratio {ratio:>7}  goal <={goal:.2}  met {}",
            if met { "yes" } else { "no" }
        );
    }
    println!(
        "(gm: the compressors' goal is on their geometric mean; total {:.0} s)",
        elapsed.as_secs_f64()
    );
    let noisy: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| r.native_spread > 0.2)
        .map(|r| format!("{} ({:.0}%)", r.label, r.native_spread * 100.0))
        .collect();
    if !noisy.is_empty() {
        println!(
            "NOISY: native times vary by more than 20% across rounds for {}; the machine is loaded ({}): ratios are unreliable",
            noisy.into_iter().collect::<Vec<_>>().join(", "),
            loadavg()
        );
    }
    let failures: Vec<&Row> = rows.iter().filter(|r| r.failure.is_some()).collect();
    if !failures.is_empty() {
        println!();
        println!("FAILURES:");
        for r in failures {
            println!(
                "  {} at {}: {}",
                r.label,
                r.sketch,
                r.failure.as_deref().unwrap_or("")
            );
        }
    }
}
