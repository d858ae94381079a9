//! assert() failing in a thread: the backtrace goes through libc's
//! raise/abort/__assert_fail up to the user's function.

mod common;

use common::*;
use nix::sys::signal::Signal;
use reprise_tracee::Symbolizer;

const ASSERT_C: &str = r#"#include <assert.h>
#include <pthread.h>

int counter = 41;

__attribute__((noinline, noclone)) void check(int v) {
    assert(v == 42); /* ASSERT_FAILS */
}

static void *worker(void *arg) {
    check(counter); /* WORKER_CALL */
    return arg;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, 0, worker, 0);
    pthread_join(t, 0);
    return 0;
}
"#;

fn run(flags: &[&str], separate_debug: bool) {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(dir.path(), "assert", ASSERT_C, flags);
    let crash = run_until_crash(&exe);
    assert_eq!(crash.signal, Signal::SIGABRT);
    let mut sym = Symbolizer::new();
    sym.set_separate_debug_info(separate_debug);
    let frames = sym.backtrace(&crash.regs, &crash.stack, &crash.maps);
    eprintln!("{flags:?} debug={separate_debug}:\n{}", dump(&frames));
    let names: Vec<&str> = frames
        .iter()
        .map(|f| f.function.as_deref().unwrap_or("??"))
        .collect();
    // libc's own names differ with and without its debug info
    // (`__GI_raise` vs `raise`, `__GI_abort` vs `abort`).
    let find = |from: usize, want: &str| {
        (from..names.len())
            .find(|&i| names[i] == want || names[i] == format!("__GI_{want}"))
            .unwrap_or_else(|| panic!("no {want} after #{from}:\n{}", dump(&frames)))
    };
    let raise = find(0, "raise");
    let abort = find(raise + 1, "abort");
    let assert_fail = find(abort + 1, "__assert_fail");
    assert_eq!(names[assert_fail + 1], "check", "{}", dump(&frames));
    assert_eq!(
        frames[assert_fail + 1].line,
        Some(line_of(ASSERT_C, "ASSERT_FAILS"))
    );
    assert_eq!(names[assert_fail + 2], "worker", "{}", dump(&frames));
    assert_eq!(
        frames[assert_fail + 2].line,
        Some(line_of(ASSERT_C, "WORKER_CALL"))
    );
    for f in &frames[..=assert_fail] {
        assert!(
            f.module.to_str().unwrap().contains("libc.so"),
            "{}",
            dump(&frames)
        );
    }
}

#[test]
fn assert_in_thread_o0() {
    run(&["-g", "-O0"], true);
}

#[test]
fn assert_in_thread_o2_libc_dynsym_only() {
    run(&["-g", "-O2"], false);
}
