//! `reprise replay` on real multithreaded tools: a recorded non-failing run
//! replays with byte-identical stdout and the same exit status, every time.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{run_reprise, stderr};

/// One `reprise` command may take this long.
const LIMIT: Duration = Duration::from_secs(60);
/// A whole test (one tool, both sketches, 10 replays each) may take this long.
const TEST_LIMIT: Duration = Duration::from_secs(150);
const REPLAYS: u32 = 10;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `reprise ARGS` with `TMPDIR` set, killed after `LIMIT`.
fn run_with_tmpdir(root: &Path, args: &[&str], tmpdir: &Path) -> Output {
    let child = Command::new(common::reprise())
        .args(args)
        .env("REPRISE_TRACE_DIR", root)
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run reprise");
    common::wait_with_limit(child, LIMIT)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Records `tool args FILE` at each sketch in `sketches`, then replays each
/// trace `REPLAYS` times (one attempt each, another seed each time): every
/// replay must reproduce the recorded exit and write the native stdout.
fn replays_identically(tool: &str, args: &[&str], sketches: &[&str]) {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let input = common::sample(tmp.path());
    // Temporary files (sort's) stay in the test's directory, also when a
    // replay is killed; the replay runs with the recorded environment.
    let tmpdir = tmp.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let mut full: Vec<&str> = args.to_vec();
    full.push(input.to_str().unwrap());
    let native = Command::new(tool)
        .args(&full)
        .env("TMPDIR", &tmpdir)
        .output()
        .unwrap();
    assert!(native.status.success(), "{tool} fails natively");
    for sketch in sketches {
        let trace = tmp.path().join(format!("trace-{sketch}"));
        let mut rargs = vec![
            "record",
            "--sketch",
            sketch,
            "-o",
            trace.to_str().unwrap(),
            tool,
        ];
        rargs.extend(full.iter());
        // The trace keeps the environment, TMPDIR included.
        let rec = run_with_tmpdir(tmp.path(), &rargs, &tmpdir);
        assert_eq!(rec.status.code(), Some(0), "{}", stderr(&rec));
        assert!(
            rec.stdout == native.stdout,
            "{tool} output differs under record ({sketch})"
        );
        let mut times = Vec::new();
        for i in 0..REPLAYS {
            let out = tmp.path().join(format!("out-{sketch}-{i}"));
            let t = Instant::now();
            let o = run_reprise(
                tmp.path(),
                &[
                    "replay",
                    trace.to_str().unwrap(),
                    "--jobs",
                    "1",
                    "--max-attempts",
                    "1",
                    "--no-schedule",
                    "--seed",
                    &i.to_string(),
                    "--output-dir",
                    out.to_str().unwrap(),
                ],
                None,
                LIMIT,
            );
            times.push(t.elapsed().as_secs_f64());
            assert_eq!(
                o.status.code(),
                Some(0),
                "{tool} ({sketch}) replay {i} (seed {i}) did not reproduce the run:\n{}{}",
                stdout(&o),
                stderr(&o)
            );
            assert!(
                stdout(&o).contains("reproduced: exited with status 0"),
                "{}",
                stdout(&o)
            );
            let got = std::fs::read(out.join("attempt-1/stdout")).unwrap();
            assert!(
                got == native.stdout,
                "{tool} ({sketch}) replay {i}: stdout differs ({} bytes, native {})",
                got.len(),
                native.stdout.len()
            );
            let _ = std::fs::remove_dir_all(&out);
            assert!(
                started.elapsed() < TEST_LIMIT,
                "{tool}: over {TEST_LIMIT:?}"
            );
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "{tool} ({sketch}): {REPLAYS}/{REPLAYS} replays identical, median {:.2} s, max {:.2} s",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

#[test]
fn pigz_replays_identically() {
    if !have("pigz") {
        eprintln!("SKIPPED: pigz is not installed (the test script installs it)");
        return;
    }
    replays_identically("pigz", &["-p", "2", "-c"], &["sys", "sync"]);
}

/// sort spills to temporary files (`-S 1M`), named by glibc's mkostemp
/// from a clock read inside glibc (and `getrandom` when a draw falls in the
/// biased range). At `sys` the vDSO is hidden from the program, so those
/// clock reads are syscalls the agent records and replays.
#[test]
fn parallel_sort_replays_identically() {
    replays_identically("sort", &["--parallel=2", "-S", "1M"], &["sys", "sync"]);
}
