//! Smoke tests of `reprise bench record --quick` (every workload gets a row
//! with a numeric ratio; the goals are not checked: --quick inputs are too
//! small for them to mean anything) and `reprise bench solver --quick`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

#[test]
fn bench_record_quick_has_every_row() {
    let missing: Vec<&str> = ["pigz", "pbzip2", "xz"]
        .into_iter()
        .filter(|t| !in_path(t))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipping: {} not installed (scripts/setup.sh installs them)",
            missing.join(", ")
        );
        return;
    }
    if !in_path("gcc") {
        eprintln!("skipping: gcc is not installed (it builds the microbenchmarks)");
        return;
    }
    let exe = env!("CARGO_BIN_EXE_reprise");
    let agent = Path::new(exe).with_file_name("libreprise_preload.so");
    if !agent.exists() {
        eprintln!("skipping: the agent {} is not built", agent.display());
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = Command::new(exe)
        .args([
            "bench",
            "record",
            "--quick",
            "--timeout",
            "50",
            "--cache-dir",
        ])
        .arg(cache.path())
        .output()
        .expect("run reprise bench record --quick");
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!(
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    assert!(
        stdout.contains("machine: nproc"),
        "no machine line\n{context}"
    );
    let rows = [
        ("pigz -p 2", "sync"),
        ("pigz -p 2", "sys"),
        ("pbzip2 -p2", "sync"),
        ("pbzip2 -p2", "sys"),
        ("xz -T2", "sync"),
        ("xz -T2", "sys"),
        ("locks ", "sync"),
        ("reads ", "sys"),
    ];
    for (workload, sketch) in rows {
        let line = stdout
            .lines()
            .find(|l| {
                l.starts_with(workload)
                    && l.split_whitespace().any(|w| w == sketch)
                    && l.contains("<=")
            })
            .unwrap_or_else(|| panic!("no row for {workload} at {sketch}\n{context}"));
        // The columns after the sketch: native s, recorded s, ratio, ...
        let cols: Vec<&str> = line.split_whitespace().collect();
        let at = cols.iter().position(|c| *c == sketch).unwrap();
        let ratio = cols.get(at + 3).copied().unwrap_or("");
        let ratio: f64 = ratio.parse().unwrap_or_else(|_| {
            panic!("row {workload} at {sketch} has no numeric ratio: {line:?}\n{context}")
        });
        assert!(
            ratio.is_finite() && ratio > 0.0,
            "bad ratio {ratio} in {line:?}\n{context}"
        );
    }
    assert!(
        stdout.contains("geomean of 3 compressors, sync"),
        "no sync geomean\n{context}"
    );
    assert!(
        stdout.contains("geomean of 3 compressors, sys"),
        "no sys geomean\n{context}"
    );
    assert!(out.status.success(), "reprise bench failed\n{context}");
    assert!(
        took < Duration::from_secs(60),
        "--quick took {took:?}, over a minute\n{context}"
    );
}

/// `reprise bench record ARGS...`, which must succeed: its stdout, and
/// what an assertion shows (status, stdout, stderr).
fn bench_ok(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reprise"))
        .args(["bench", "record"])
        .args(args)
        .output()
        .expect("run reprise bench record");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let context = format!(
        "status {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{context}");
    (stdout, context)
}

/// `reprise bench record --quick --only memcached --rounds 1`: the server
/// row, with both throughputs, the ratio, the CPU time per request and the
/// replay's verdict.
#[test]
fn bench_record_quick_measures_a_server() {
    if !Path::new("/usr/bin/memcached").exists() {
        panic!("/usr/bin/memcached is missing: scripts/setup.sh installs it");
    }
    let (stdout, context) = bench_ok(&["--quick", "--only", "memcached", "--rounds", "1"]);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("memcached -t 4"))
        .unwrap_or_else(|| panic!("no memcached row\n{context}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    // memcached -t 4 REQUESTS NATIVE RECORDED RATIO ...
    let num = |i: usize| cols.get(i).and_then(|c| c.parse::<f64>().ok());
    assert_eq!(num(3), Some(2000.0), "{line}");
    for i in 4..=6 {
        assert!(
            num(i).is_some_and(|v| v > 0.0),
            "column {i} of {line:?}\n{context}"
        );
    }
    // ... P99 NAT, P99 REC, CPU NAT, CPU REC: CPU time per request, the
    // recorded one with the recorder's own.
    let us = |i: usize| {
        cols.get(i)
            .and_then(|c| c.strip_suffix("us"))
            .and_then(|c| c.parse::<f64>().ok())
    };
    let (cpu_nat, cpu_rec) = (us(9), us(10));
    assert!(
        cpu_nat.is_some_and(|v| v > 0.0) && cpu_rec.is_some_and(|v| v > 0.0),
        "cpu columns of {line:?}\n{context}"
    );
    assert!(line.contains("same responses, same exit"), "{context}");
}

/// `reprise bench record --quick --sketch func,bb-4 --only cpu`: the CPU
/// workload at func (unmodified and -finstrument-functions builds) and at
/// bb-4 (a trace-pc build), each with a ratio and a trace size.
#[test]
fn bench_record_quick_measures_func_and_bb() {
    let (stdout, context) = bench_ok(&[
        "--quick",
        "--sketch",
        "func,bb-4",
        "--only",
        "cpu",
        "--rounds",
        "1",
    ]);
    for (build, sketch) in [
        ("cpu 2thr 100k ", "func"),
        ("cpu 2thr 100k, -finstrument", "func"),
        ("cpu 2thr 100k, trace-pc", "bb-4"),
    ] {
        let line = stdout
            .lines()
            .find(|l| {
                l.starts_with(build) && l[build.len()..].split_whitespace().next() == Some(sketch)
            })
            .unwrap_or_else(|| panic!("no row {build:?} at {sketch}\n{context}"));
        let ratio = line[build.len()..]
            .split_whitespace()
            .nth(3)
            .and_then(|r| r.parse::<f64>().ok());
        assert!(ratio.is_some_and(|r| r > 0.0), "{line}\n{context}");
    }
}

/// `reprise bench solver --quick` times one query at 1k and 10k accesses
/// and says whether the 10k goal is met.
#[test]
fn bench_solver_quick_times_each_size() {
    let o = Command::new(env!("CARGO_BIN_EXE_reprise"))
        .args(["bench", "solver", "--quick"])
        .output()
        .expect("run reprise");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for n in ["1000", "10000"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(n)),
            "no row for {n}: {out}"
        );
    }
    assert!(out.contains("one query at 10k accesses: "), "{out}");
}
