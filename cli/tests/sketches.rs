//! The `func` and `bb` sketches: function and basic-block entries of an
//! instrumented program, in the global order, enforced by replay.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{compile, record_at, run_reprise, stderr};

const LIMIT: Duration = Duration::from_secs(120);
const PIPELINE: &str = include_str!("programs/pipeline.c");
const BRANCH: &str = include_str!("programs/branch_on_file.c");
const BLOCKED_RUN: &str = include_str!("programs/blocked_run.c");

/// The directory of `libreprise_cov.so`, the `bb` sketch's link stub
/// (built with the workspace, next to `reprise`).
fn cov_dir() -> PathBuf {
    let dir = common::reprise().parent().unwrap().to_path_buf();
    assert!(
        dir.join("libreprise_cov.so").is_file(),
        "libreprise_cov.so is missing in {}: build the workspace first",
        dir.display()
    );
    dir
}

/// Compiles `source` for the `bb` sketch.
fn compile_bb(dir: &Path, name: &str, source: &str) -> PathBuf {
    let cov = cov_dir();
    let l = format!("-L{}", cov.display());
    let rpath = format!("-Wl,-rpath,{}", cov.display());
    compile(
        dir,
        name,
        source,
        &[
            "-O0",
            "-g",
            "-fsanitize-coverage=trace-pc",
            "-Wl,--no-as-needed",
            &l,
            &rpath,
            "-lreprise_cov",
        ],
    )
}

/// `reprise dump TRACE`'s function entries: (thread, function name).
fn function_entries(root: &Path, trace: &Path) -> Vec<(String, String)> {
    let o = run_reprise(root, &["dump", trace.to_str().unwrap()], None, LIMIT);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(" function_entry("))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // #N pP tT function_entry(0x…) from 0x… NAME at FILE:LINE
            (f[2].to_string(), f.get(6).unwrap_or(&"?").to_string())
        })
        .collect()
}

/// Records `prog` at the func sketch and checks its function entries,
/// thread by thread, then replays it.
fn func_entries_are_listed_in_order(root: &Path, prog: &Path, trace: &Path) {
    let o = record_at(root, "func", trace, prog, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("(func sketch,"), "{}", stderr(&o));
    let entries = function_entries(root, trace);
    let of = |t: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(th, _)| th == t)
            .map(|(_, f)| f.as_str())
            .collect()
    };
    assert_eq!(of("t0"), ["main"], "{entries:?}");
    assert_eq!(
        of("t1"),
        ["worker", "parse", "plan", "execute"],
        "{entries:?}"
    );
    assert_eq!(of("t2"), ["logger", "flush", "flush"], "{entries:?}");
    // The worker was joined before the logger started: its entries come first.
    let first_logger = entries.iter().position(|(t, _)| t == "t2").unwrap();
    let last_worker = entries.iter().rposition(|(t, _)| t == "t1").unwrap();
    assert!(last_worker < first_logger, "{entries:?}");
    for _ in 0..3 {
        let out = common::replays_as_recorded(root, trace, &[], LIMIT);
        assert!(out.starts_with("work 14\n"), "{out}");
    }
}

#[test]
fn a_func_recording_lists_each_threads_function_entries_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(
        tmp.path(),
        "pipeline",
        PIPELINE,
        &["-O0", "-g", "-finstrument-functions"],
    );
    func_entries_are_listed_in_order(tmp.path(), &prog, &tmp.path().join("trace"));
}

/// Without -finstrument-functions: the entries are patched at start-up.
/// Optimised, as programs ship (small functions entered unaligned, RIP-
/// relative operands in the first instructions).
#[test]
fn an_unmodified_program_gets_the_same_func_sketch() {
    let tmp = tempfile::tempdir().unwrap();
    for opt in ["-O0", "-O2"] {
        let name = format!("pipeline{opt}");
        // noinline: at -O2 the small functions would vanish into their callers.
        let source = PIPELINE.replace("static void ", "__attribute__((noinline)) static void ");
        let prog = compile(tmp.path(), &name, &source, &[opt, "-g"]);
        func_entries_are_listed_in_order(tmp.path(), &prog, &tmp.path().join(format!("t{opt}")));
    }
}

#[test]
fn a_bb_trace_replays_with_every_block_in_order_and_bb_n_keeps_every_nth() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile_bb(tmp.path(), "pipeline_bb", PIPELINE);
    // Each thread's blocks, in order.
    let blocks = |trace: &Path| {
        let r = reprise_schema::TraceReader::open(trace).unwrap();
        let mut per: BTreeMap<(u16, u32), Vec<u64>> = BTreeMap::new();
        for e in r.events() {
            let e = e.unwrap();
            if e.kind == reprise_abi::EventKind::Block {
                per.entry((e.process, e.thread)).or_default().push(e.object);
            }
        }
        per
    };
    let all = tmp.path().join("bb");
    let o = record_at(tmp.path(), "bb", &all, &prog, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let every = blocks(&all);
    assert_eq!(every.len(), 3, "blocks of main, the worker and the logger");
    for _ in 0..3 {
        let out = common::replays_as_recorded(tmp.path(), &all, &[], LIMIT);
        assert!(out.starts_with("work 14\n"), "{out}");
    }
    let fourth = tmp.path().join("bb4");
    let o = record_at(tmp.path(), "bb-4", &fourth, &prog, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("(bb-4 sketch,"), "{}", stderr(&o));
    // Each thread keeps every 4th of its own blocks (the program's path
    // does not depend on the interleaving).
    let some = blocks(&fourth);
    for (thread, all) in &every {
        let kept: Vec<u64> = all.iter().skip(3).step_by(4).copied().collect();
        assert_eq!(
            some.get(thread).cloned().unwrap_or_default(),
            kept,
            "thread {thread:?}"
        );
    }
    common::replays_as_recorded(tmp.path(), &fourth, &[], LIMIT);
}

#[test]
fn a_block_off_the_recorded_path_diverges_at_that_block() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile_bb(tmp.path(), "branch_on_file", BRANCH);
    let input = tmp.path().join("input");
    std::fs::write(&input, "A").unwrap();
    let trace = tmp.path().join("trace");
    let o = record_at(tmp.path(), "bb", &trace, &prog, &[input.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "taken 11\n",
        "{}",
        stderr(&o)
    );
    common::replays_as_recorded(tmp.path(), &trace, &[], LIMIT);

    // The mapped byte is not in the trace: the replay takes the other path.
    std::fs::write(&input, "B").unwrap();
    let o = run_reprise(
        tmp.path(),
        &[
            "replay",
            trace.to_str().unwrap(),
            "--max-attempts",
            "1",
            "--no-schedule",
            "--no-program-output",
        ],
        None,
        LIMIT,
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert!(out.contains("diverged"), "{out}");
    // Named where it is: the recorded block and the one reached instead,
    // both in main after the branch.
    let line = out
        .lines()
        .find(|l| l.contains("expected block("))
        .unwrap_or_else(|| panic!("no block divergence: {out}"));
    assert!(line.contains("got block("), "{line}");
    assert!(line.contains("main at branch_on_file.c:31"), "{line}");
    assert!(line.contains("main at branch_on_file.c:33"), "{line}");
    assert!(
        !out.contains("taken 12"),
        "the attempt stops at the block: {out}"
    );
}

#[test]
fn bb_refuses_a_program_built_without_its_hook_and_func_a_stripped_one() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "plain", PIPELINE, &["-O1", "-s"]);
    for (sketch, words) in [
        ("func", "no symbol table"),
        ("bb", "-fsanitize-coverage=trace-pc"),
        ("bb-8", "-fsanitize-coverage=trace-pc"),
    ] {
        let trace = tmp.path().join(format!("t-{sketch}"));
        let o = record_at(tmp.path(), sketch, &trace, &prog, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("reprise: error: ") && err.contains(words),
            "{err}"
        );
        assert!(!trace.exists(), "no trace is left");
    }
}

/// A func trace of an unmodified program is searched like a sys one: its
/// observed attempts see the racing accesses (the function entries' patch
/// leaves access breakpoints elsewhere alone) and the lost update of
/// aget_bwritten reproduces, its race named.
#[test]
fn a_func_trace_reproduces_a_lost_update_with_its_race_named() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = common::compile_testbug(tmp.path(), "aget_bwritten");
    let expected = tmp.path().join("expected.txt");
    std::fs::write(&expected, "Download completed, bytes=204800\n").unwrap();
    let trace = tmp.path().join("trace");
    let mut wrong = false;
    // Recorded at `func` on a loaded machine (CI runs two tests at once)
    // fewer runs lose an update than natively: once none of 20 did.
    for _ in 0..60 {
        let _ = std::fs::remove_dir_all(&trace);
        let o = run_reprise(
            tmp.path(),
            &[
                "record",
                "--sketch",
                "func",
                "--expect-output",
                expected.to_str().unwrap(),
                "-o",
                trace.to_str().unwrap(),
                prog.to_str().unwrap(),
                "200",
                "200",
            ],
            None,
            LIMIT,
        );
        if stderr(&o).contains("wrong output") {
            wrong = true;
            break;
        }
    }
    assert!(wrong, "no recording of 60 lost an update");
    let o = run_reprise(
        tmp.path(),
        &[
            "replay",
            trace.to_str().unwrap(),
            "--max-attempts",
            "10",
            "--no-program-output",
        ],
        None,
        LIMIT,
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("reproduced the recorded failure"), "{out}");
    assert!(out.contains("race 1 on bwritten"), "{out}");
}

/// A thread blocked in an unrecorded system call with its run of block
/// entries open: the recorder takes the run over (with its entries) so the
/// other thread's entries go on, and the thread, woken, starts a new one;
/// the trace replays whole, every entry at its place.
#[test]
fn a_run_left_open_by_a_blocked_thread_is_taken_over_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile_bb(tmp.path(), "blocked_run", BLOCKED_RUN);
    let trace = tmp.path().join("trace");
    let o = record_at(tmp.path(), "bb", &trace, &prog, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    let r = reprise_schema::TraceReader::open(&trace).unwrap();
    let sleeper_blocks = r
        .events()
        .map(|e| e.unwrap())
        .filter(|e| e.kind == reprise_abi::EventKind::Block && e.thread == 1)
        .count();
    assert!(
        sleeper_blocks >= 5 * 100,
        "{sleeper_blocks} blocks of the sleeper"
    );
    let out = common::replays_as_recorded(tmp.path(), &trace, &[], LIMIT);
    assert!(out.starts_with(&printed), "{out}");
}
