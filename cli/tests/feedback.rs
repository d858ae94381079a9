//! The feedback strategy on a few testbugs programs: a recorded failure
//! whose race the sketch does not order reproduces within 10 attempts, the
//! root-cause report names the racing lines the manifest lists, and the
//! saved schedule (with its flips) reproduces the failure every time.

mod common;

use std::time::Instant;

use common::corpus::{correct_output, record_failure, replay_json};
use reprise_testbugs::{build_manifest, corpus_dir, load_manifest, ExpectKind};
use serde_json::Value;

/// Atomicity violation (crash), use before initialisation (crash), use of
/// a freed cache entry (assertion).
const PROGRAMS: [&str; 3] = [
    "mysql_3596_procinfo",
    "mozilla_nsthread_init",
    "mozilla_js_propcache",
];
const SAVED_REPLAYS: usize = 5;
const SKETCH: &str = "sys";

/// "file.c:LINE" of one access of the report.
fn place(access: &Value) -> String {
    format!(
        "{}:{}",
        access["file"].as_str().unwrap_or(""),
        access["line"].as_u64().unwrap_or(0)
    )
}

#[test]
fn feedback_reproduces_and_names_the_racing_lines() {
    check_feedback(&PROGRAMS, false);
}

/// Lost updates: the recording printed a wrong total (against the correct
/// output given at record); an attempt that loses updates too prints the
/// same line wrong, whatever the amount lost.
#[test]
fn feedback_reproduces_a_lost_update_by_its_wrong_line() {
    check_feedback(&["aget_bwritten", "radare2_15667_threadlock"], false);
}

/// An object on one thread's stack that another reaches by pointer, whose
/// owner's accesses go through its stack pointer: a semaphore destroyed
/// while the poster still reads it; the report names the owner's
/// destroying write. (tinyhttpd_9_stackarg is of this class too, but some
/// of its failing recordings need no race: a handler that started after
/// the next accept, in the sketch's order.)
#[test]
fn feedback_names_a_race_on_a_threads_stack() {
    check_feedback(&["glibc_12674_sem_on_stack"], false);
}

/// A loop that checks a pointer or flag without the lock in every
/// iteration and skipped some while another thread was between the two
/// steps of an update (a log closed and reopened; a file handle cleared
/// and published): the replay must skip exactly as many iterations (a
/// count-matched delay, feedback/src/counts.rs), found even from a run in
/// which the loop skipped them all. Some recordings of mysql_791 fail in
/// every run that follows the sketch (both base schedules skip as many
/// iterations as recorded): then the report says the sketch's order
/// decides, and names no race.
#[test]
fn feedback_reproduces_a_loop_that_skipped_iterations() {
    check_feedback(&["mysql_791_binlog", "wiredtiger_2706_log_switch"], true);
}

/// `sketch_may_decide`: a reproduction without flips may have a root cause
/// that names no race (the sketch's order alone decides the failure).
fn check_feedback(programs: &[&str], sketch_may_decide: bool) {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut m = load_manifest().unwrap();
    m.bugs.retain(|b| programs.contains(&b.name.as_str()));
    assert_eq!(
        m.bugs.len(),
        programs.len(),
        "programs missing from the manifest"
    );
    let built = build_manifest(&m, &corpus_dir(), &tmp.path().join("bin")).unwrap();
    let root = tmp.path();
    for bug in &m.bugs {
        let exe = &built.iter().find(|b| b.name == bug.name).unwrap().exe;
        let trace = root.join(format!("{}-trace", bug.name));
        let expected =
            (bug.expect.kind == ExpectKind::WrongOutput).then(|| correct_output(bug, exe, root));
        // Whether a failure reproduces within the budget depends on the
        // failing run recorded: up to three of them.
        let mut tries = Vec::new();
        let (runs, v) = loop {
            let runs = record_failure(root, bug, exe, &trace, expected.as_deref(), SKETCH)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: no failing run in at least 80 recordings and 90 s",
                        bug.name
                    )
                });
            let v = replay_json(root, &trace, "10");
            if v["reproduced"] == true {
                break (runs, v);
            }
            tries.push(v);
            assert!(
                tries.len() < 3,
                "{}: not reproduced within 10 attempts from 3 failing recordings: {:#}",
                bug.name,
                tries[2]
            );
        };
        let attempt = v["attempt"].as_u64().unwrap();
        if expected.is_some() {
            let outcome = v["outcome"].as_str().unwrap_or("");
            assert!(
                outcome.starts_with("wrong output: stdout line"),
                "{}: {v:#}",
                bug.name
            );
        }
        let races = v["root_cause"]["races"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no root cause: {v:#}", bug.name));
        let no_flips = v["schedule"]["flips"].as_array().is_none_or(Vec::is_empty);
        let sketch_decides = sketch_may_decide && no_flips && v["root_cause"]["how"] == "no-race";
        let named = sketch_decides
            || races.iter().any(|r| {
                bug.race_lines.contains(&place(&r["first"]))
                    && bug.race_lines.contains(&place(&r["second"]))
            });
        assert!(
            named,
            "{}: the root cause names {:?}, the manifest's racing lines are {:?}",
            bug.name,
            races
                .iter()
                .map(|r| (place(&r["first"]), place(&r["second"])))
                .collect::<Vec<_>>(),
            bug.race_lines
        );
        assert_eq!(v["schedule_saved"], true, "{}: {v:#}", bug.name);

        // The saved schedule, flips included, reproduces every time.
        for i in 0..SAVED_REPLAYS {
            let again = replay_json(root, &trace, "1");
            assert_eq!(
                (again["reproduced"].clone(), again["attempt"].clone()),
                (Value::Bool(true), Value::from(1)),
                "{}: saved schedule, replay {}: {again:#}",
                bug.name,
                i + 1
            );
        }
        eprintln!(
            "{}: recorded in run {runs}, reproduced in attempt {attempt}, root cause {:?}, saved schedule {SAVED_REPLAYS}/{SAVED_REPLAYS}",
            bug.name,
            races
                .iter()
                .map(|r| format!("{} / {}", place(&r["first"]), place(&r["second"])))
                .collect::<Vec<_>>()
        );
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}
