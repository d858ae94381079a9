//! `reprise record` on real multithreaded tools, and interruptions.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{reprise, run_reprise, stderr};
use reprise_schema::{OutcomeKind, TraceReader};

const LIMIT: Duration = Duration::from_secs(120);

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn same_output_as_native(tool: &str, args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let input = common::sample(tmp.path());
    let mut full: Vec<&str> = args.to_vec();
    full.push(input.to_str().unwrap());
    let native = Command::new(tool).args(&full).output().unwrap();
    assert!(native.status.success());
    for sketch in ["sync", "sys"] {
        let out_dir = tmp.path().join(format!("trace-{sketch}"));
        let mut rargs = vec![
            "record",
            "--sketch",
            sketch,
            "-o",
            out_dir.to_str().unwrap(),
            tool,
        ];
        rargs.extend(full.iter());
        let rec = run_reprise(tmp.path(), &rargs, None, LIMIT);
        assert_eq!(rec.status.code(), Some(0), "{}", stderr(&rec));
        assert!(
            rec.stdout == native.stdout,
            "{tool} output differs under record ({sketch})"
        );
        let r = TraceReader::open(&out_dir).unwrap();
        assert!(r.is_complete());
        assert_eq!(r.outcome().unwrap().kind, OutcomeKind::Exited);
        assert_eq!(
            r.outcome().unwrap().output[0].length,
            native.stdout.len() as u64
        );
    }
}

#[test]
fn pigz_output_is_unchanged_by_recording() {
    if !have("pigz") {
        eprintln!("SKIPPED: pigz is not installed (the test script installs it)");
        return;
    }
    same_output_as_native("pigz", &["-p", "2", "-c"]);
}

#[test]
fn parallel_sort_output_is_unchanged_by_recording() {
    same_output_as_native("sort", &["--parallel=2", "-S", "1M"]);
}

const LOOPER: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
long n;
void *spin(void *a) { for (;;) { pthread_mutex_lock(&m); n++; pthread_mutex_unlock(&m); usleep(100); } }
int main() {
    pthread_t t; pthread_create(&t, 0, spin, 0);
    printf("started\n"); fflush(stdout);
    for (;;) pause();
}
"#;

fn wait_for_start(child: &mut std::process::Child) {
    use std::io::Read;
    let mut buf = [0u8; 8];
    child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"started\n");
}

#[test]
fn sigint_to_reprise_reaches_the_program_and_completes_the_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = common::compile(tmp.path(), "looper", LOOPER, &["-O1", "-g"]);
    let out_dir = tmp.path().join("trace");
    let mut child = Command::new(reprise())
        .args([
            "record",
            "-o",
            out_dir.to_str().unwrap(),
            prog.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_start(&mut child);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "reprise did not finish after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + libc::SIGINT), "{}", stderr(&o));
    let r = TraceReader::open(&out_dir).unwrap();
    assert!(r.is_complete());
    let oc = r.outcome().unwrap();
    assert_eq!(oc.kind, OutcomeKind::Interrupted);
    assert!(
        r.events().count() > 10,
        "the events before the interrupt are kept"
    );
}

#[test]
fn killing_reprise_kills_the_program_and_keeps_the_trace_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = common::compile(tmp.path(), "looper", LOOPER, &["-O1", "-g"]);
    let out_dir = tmp.path().join("trace");
    let mut child = Command::new(reprise())
        .args([
            "record",
            "-o",
            out_dir.to_str().unwrap(),
            prog.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_start(&mut child);
    // Long enough for at least one chunk to be flushed (every 0.5 s).
    std::thread::sleep(Duration::from_millis(1500));
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|p: &i32| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| {
                    s.contains(&format!(") S {} ", child.id()))
                        || s.contains(&format!(") R {} ", child.id()))
                        || s.contains(&format!(") Z {} ", child.id()))
                })
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(pids.len(), 1, "reprise has one child, the program");
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{}", pids[0])).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", pids[0]))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the program outlived reprise"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = TraceReader::open(&out_dir).expect("a cut-short trace still opens");
    assert!(!r.is_complete());
    assert!(r.outcome().is_none());
    assert!(
        !r.warnings().is_empty(),
        "the reader warns that the trace is incomplete"
    );
    let n = r.events().filter(|e| e.is_ok()).count();
    assert!(n > 0, "events up to the last whole chunk are readable");
}

/// xz and pbzip2 block all signals in their worker threads; the agent must
/// keep SIGSYS deliverable or the kernel kills them at the first trap.
#[test]
fn xz_and_pbzip2_which_block_signals_record_unchanged() {
    for (tool, args) in [("xz", &["-T2", "-c"][..]), ("pbzip2", &["-p2", "-c"][..])] {
        if !have(tool) {
            eprintln!("SKIPPED: {tool} is not installed (the test script installs it)");
            continue;
        }
        same_output_as_native(tool, args);
    }
}

/// A disk that fills up mid-recording: the program runs to its end, the
/// trace is completed with what was written, and reprise says so.
#[test]
fn disk_full_completes_the_trace_with_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    // Reading 4 MB of random bytes records them: far more than 256 KiB.
    let input = tmp.path().join("random.bin");
    let mut x: u64 = 7;
    let bytes: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&input, &bytes).unwrap();
    let out_dir = mnt.join("trace");
    let o = run_reprise(
        tmp.path(),
        &[
            "record",
            "-o",
            out_dir.to_str().unwrap(),
            "md5sum",
            input.to_str().unwrap(),
        ],
        None,
        LIMIT,
    );
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the program still runs to its end: {err}"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("random.bin"),
        "its output is intact"
    );
    assert!(err.contains("disk full"), "{err}");
    let r = TraceReader::open(&out_dir).expect("the trace opens");
    let oc = r
        .outcome()
        .expect("the trace was completed with an outcome");
    assert_eq!(oc.kind, OutcomeKind::Exited);
    assert!(oc.dropped_events > 0, "the outcome counts the events lost");
    assert!(r.events().all(|e| e.is_ok()), "what was written reads back");
}
