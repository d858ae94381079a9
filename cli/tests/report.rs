//! `reprise report`, rendered in headless Chromium: the page of a
//! reproduced testbugs failure has every thread's lane, the flipped race's
//! two accesses with their source lines, the flip and the failure (and a
//! screenshot); the page of a 100k-event trace draws in under 3 s.
//!
//! Chromium comes from Debian (`scripts/setup.sh` installs it); without it
//! these tests fail, they are not skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{run_reprise, stderr, wait_with_limit};
use reprise_schema::{OutcomeKind, TraceReader};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);
const BROWSER_LIMIT: Duration = Duration::from_secs(90);

fn chromium() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("chromium");
        if p.is_file() {
            return p;
        }
    }
    panic!("chromium is missing: the report tests render the page in headless Chromium; run scripts/setup.sh (it installs the Debian package `chromium`)");
}

/// Runs headless Chromium on `page` with `args`; kills it after the limit.
fn browser(page: &Path, args: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(chromium())
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chromium");
    let out = wait_with_limit(child, BROWSER_LIMIT);
    assert!(
        out.status.success(),
        "chromium failed on {}: {}",
        page.display(),
        stderr(&out)
    );
    out
}

/// The DOM after the page's script ran.
fn dump_dom(page: &Path) -> String {
    String::from_utf8_lossy(&browser(page, &["--dump-dom"]).stdout).into_owned()
}

/// The thread lanes a trace should have: `p0 t1` for each thread with an
/// event.
fn lanes(trace: &Path) -> Vec<String> {
    let r = TraceReader::open(trace).unwrap();
    let mut v: Vec<(u16, u32)> = r
        .events()
        .map(|e| e.unwrap())
        .map(|e| (e.process, e.thread))
        .collect();
    v.sort_unstable();
    v.dedup();
    v.into_iter().map(|(p, t)| format!("p{p} t{t}")).collect()
}

fn check_lanes(dom: &str, trace: &Path) -> usize {
    let lanes = lanes(trace);
    for l in &lanes {
        assert!(
            dom.contains(&format!("data-thread=\"{l}\"")) && dom.contains("class=\"lane"),
            "no lane for {l} in the page"
        );
    }
    lanes.len()
}

fn report(root: &Path, trace: &Path, out: &Path) -> Output {
    let o = run_reprise(
        root,
        &[
            "report",
            trace.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        None,
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(0), "report failed: {}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("reprise: report written to {}", out.display())),
        "{}",
        stderr(&o)
    );
    o
}

/// "file.c:LINE" of one access of `replay --json`'s root cause.
fn place(access: &Value) -> String {
    format!(
        "{}:{}",
        access["file"].as_str().unwrap_or(""),
        access["line"].as_u64().unwrap_or(0)
    )
}

/// Records mysql_3596_procinfo (`300 2000`) until a run crashes, and
/// replays it until it reproduces (saving the schedule): the replay's
/// JSON.
fn reproduced_mysql(root: &Path, exe: &Path, trace: &Path) -> Value {
    for _ in 0..3 {
        let mut crashed = false;
        // At least 80 runs, and more while under 90 s: a loaded machine
        // often runs the race's threads one after the other.
        let started = std::time::Instant::now();
        for run in 0.. {
            if run >= 80 && started.elapsed() > std::time::Duration::from_secs(90) {
                break;
            }
            let _ = std::fs::remove_dir_all(trace);
            let args = [
                "record",
                "-o",
                trace.to_str().unwrap(),
                exe.to_str().unwrap(),
                "300",
                "2000",
            ];
            let o = run_reprise(root, &args, None, LIMIT);
            let r = TraceReader::open(trace)
                .unwrap_or_else(|e| panic!("no trace ({e}): {}", stderr(&o)));
            if r.outcome().is_some_and(|o| o.kind == OutcomeKind::Signaled) {
                crashed = true;
                break;
            }
        }
        assert!(
            crashed,
            "mysql_3596_procinfo: no crash in at least 80 recorded runs and 90 s"
        );
        let args = [
            "replay",
            trace.to_str().unwrap(),
            "--json",
            "--jobs",
            "1",
            "--max-attempts",
            "20",
        ];
        let o = run_reprise(root, &args, None, LIMIT);
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("replay --json printed no JSON ({e}): {}", stderr(&o)));
        if v["reproduced"] == true && v["schedule_saved"] == true {
            return v;
        }
    }
    panic!("mysql_3596_procinfo: not reproduced from 3 crashing recordings");
}

#[test]
fn report_of_a_reproduced_race_shows_lanes_race_flip_and_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exe = common::compile_testbug(&root, "mysql_3596_procinfo");
    let trace = root.join("mysql-trace");
    let v = reproduced_mysql(root, &exe, &trace);
    let races = v["root_cause"]["races"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!races.is_empty(), "no race in the root cause: {v:#}");

    let page = root.join("out.html");
    report(root, &trace, &page);
    let html = std::fs::read_to_string(&page).unwrap();
    for remote in ["src=\"http", "href=\"http", "url(http", "@import", "fetch("] {
        assert!(
            !html.contains(remote),
            "the page loads something from the network ({remote})"
        );
    }
    let dom = dump_dom(&page);
    let lanes = check_lanes(&dom, &trace);
    assert!(
        lanes >= 3,
        "expected main and two threads, got {lanes} lanes"
    );
    // The root cause: each race with its two accesses and their lines.
    let start = dom.find("class=\"race\"").expect("no .race in the page");
    let end = dom[start..]
        .find("id=\"view\"")
        .map_or(dom.len(), |e| start + e);
    let races_html = &dom[start..end];
    for r in &races {
        for a in [&r["first"], &r["second"]] {
            let loc = place(a);
            assert!(
                races_html.contains(&loc),
                "{loc} missing from the page's races"
            );
        }
    }
    assert!(
        races_html.contains("class=\"access first\"")
            && races_html.contains("class=\"access second\"")
    );
    // The flip, the observed accesses and the failure.
    assert!(dom.contains("class=\"flip\""), "no flip arrow drawn");
    assert!(dom.contains("class=\"acc "), "no observed access drawn");
    let fail = dom.find("id=\"failure\"").expect("no #failure");
    assert!(
        dom[fail..].contains("SIGSEGV"),
        "the failure does not say SIGSEGV"
    );
    assert!(
        dom.contains("class=\"failure-mark"),
        "no failure mark at the end of the lanes"
    );

    let png = root.join("report.png");
    browser(
        &page,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,900",
        ],
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "the screenshot is {size} bytes");
    if let Some(keep) = std::env::var_os("REPRISE_REPORT_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    // `reprise replay --report` writes the same picture into the trace.
    let o = run_reprise(
        root,
        &[
            "replay",
            trace.to_str().unwrap(),
            "--report",
            "--max-attempts",
            "3",
        ],
        None,
        LIMIT,
    );
    let written = trace.join("report.html");
    assert!(
        stderr(&o).contains(&format!("reprise: report written to {}", written.display())),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::read_to_string(&written)
        .unwrap()
        .contains("class=\"race"));
    eprintln!(
        "report: {} lanes, {} race(s), screenshot {size} bytes",
        lanes,
        races.len()
    );
}

/// Four threads, each taking two mutexes of its own in turn (no two
/// consecutive pairs on one mutex: every lock and unlock is its own event).
const MANY_LOCKS: &str = r#"
#include <pthread.h>
#include <stdlib.h>
static pthread_mutex_t m[8] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};
static long n, counter[8];
static void *work(void *a) {
    long t = (long)a;
    for (long i = 0; i < n; i++) {
        long k = t * 2 + (i & 1);
        pthread_mutex_lock(&m[k]);
        counter[k]++;
        pthread_mutex_unlock(&m[k]);
    }
    return 0;
}
int main(int argc, char **argv) {
    n = atol(argv[1]);
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, work, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
    return 0;
}
"#;

#[test]
fn report_of_100k_events_renders_in_under_3_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exe = common::compile(root, "many_locks", MANY_LOCKS, &["-O1", "-g"]);
    let trace = root.join("many-trace");
    let o = run_reprise(
        root,
        &[
            "record",
            "-o",
            trace.to_str().unwrap(),
            exe.to_str().unwrap(),
            "15000",
        ],
        None,
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // `reprise dump` shows every event (runs expanded).
    let d = run_reprise(root, &["dump", trace.to_str().unwrap()], None, LIMIT);
    let text = String::from_utf8_lossy(&d.stdout);
    let events = text.lines().filter(|l| l.starts_with('#')).count();
    assert!(events >= 100_000, "the trace has {events} events");

    let page = root.join("big.html");
    let o = report(root, &trace, &page);
    assert!(
        stderr(&o).contains("no reproducing schedule saved yet: run `reprise replay` first; drawing the recorded sketch alone"),
        "{}",
        stderr(&o)
    );
    let started = Instant::now();
    let dom = dump_dom(&page);
    let wall = started.elapsed();
    check_lanes(&dom, &trace);
    assert!(
        dom.contains("class=\"agg "),
        "zoomed out, runs of events are not aggregated into bars"
    );
    assert!(
        dom.contains("id=\"no-schedule\""),
        "the page does not say there is no schedule"
    );
    let ms: f64 = dom
        .split("data-render-ms=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("the page's script did not record its render time (data-render-ms)");
    eprintln!(
        "report of {events} events ({} KiB): first render {ms} ms after navigation start; chromium --dump-dom took {:.2} s in all",
        std::fs::metadata(&page).unwrap().len() / 1024,
        wall.as_secs_f64()
    );
    assert!(
        ms < 3000.0,
        "the page took {ms} ms to render {events} events"
    );

    // The search: `#find=N` zooms in on event N (each event its own mark).
    let at = dump_dom(Path::new(&format!("{}#find=60000", page.display())));
    assert!(
        at.contains("data-found=\"60000\""),
        "the search did not find event 60000"
    );
    assert!(
        at.contains("class=\"hit\"") && at.contains("class=\"ev c"),
        "event 60000 is not shown"
    );
    let at = dump_dom(Path::new(&format!("{}#find=pthread_join", page.display())));
    let found = at.find("id=\"found\"").expect("no #found");
    assert!(
        at[found..].starts_with("id=\"found\" class=\"status\">event #")
            && at[found..]
                .split("</span>")
                .next()
                .unwrap()
                .contains("pthread_join"),
        "the search did not find a pthread_join"
    );
}
