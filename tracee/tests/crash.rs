//! A crash captured as the agent captures it (registers + stack snapshot +
//! maps), unwound from the snapshot after the process is gone.

mod common;

use common::*;
use reprise_tracee::{parse_maps, Symbolizer, UnwindMethod};

const CRASH_C: &str = r#"#include <stdio.h>
#include <stdlib.h>

volatile int *target; /* null, and the compiler cannot know */

__attribute__((noinline, noclone)) int leaf(int x) {
    int r = x * 2 + 1;
    *target = r; /* LEAF_FAULT */
    return r + 1;
}

__attribute__((noinline, noclone)) int middle(int x) {
    int r = leaf(x + 1); /* MIDDLE_CALL */
    return r + 3;
}

int main(int argc, char **argv) {
    int r = middle(argc); /* MAIN_CALL */
    printf("%d\n", r);
    return 0;
}
"#;

const THREAD_CRASH_C: &str = r#"#include <pthread.h>
#include <stdio.h>

volatile int *target;

__attribute__((noinline, noclone)) int leaf(int x) {
    int r = x * 2 + 1;
    *target = r; /* LEAF_FAULT */
    return r + 1;
}

__attribute__((noinline, noclone)) int middle(int x) {
    int r = leaf(x + 1); /* MIDDLE_CALL */
    return r + 3;
}

static void *worker(void *arg) {
    long r = middle((int)(long)arg); /* WORKER_CALL */
    return (void *)r;
}

int main(void) {
    pthread_t t;
    void *res;
    pthread_create(&t, 0, worker, (void *)7L);
    pthread_join(t, &res);
    printf("%ld\n", (long)res);
    return 0;
}
"#;

/// Frame for `name` must exist after `from`, in `file` at `line`.
fn expect(frames: &[reprise_tracee::Frame], from: usize, name: &str, line: u32) -> usize {
    let i = find_fn(frames, from, name)
        .unwrap_or_else(|| panic!("no frame {name} after #{from}:\n{}", dump(frames)));
    let f = &frames[i];
    assert!(
        file_name(f).is_some_and(|n| n.ends_with(".c")),
        "{name}: no source file:\n{}",
        dump(frames)
    );
    assert_eq!(f.line, Some(line), "{name}: wrong line:\n{}", dump(frames));
    i
}

fn check_crash(src: &str, flags: &[&str], caller: &str, caller_marker: &str, fp: bool) {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(dir.path(), "crash", src, flags);
    if fp {
        // gcc -g without unwind tables still emits .debug_frame: drop it.
        let st = std::process::Command::new("objcopy")
            .arg("--remove-section=.debug_frame")
            .arg(&exe)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let crash = run_until_crash(&exe);
    assert_eq!(crash.signal, nix::sys::signal::Signal::SIGSEGV);
    // The process is dead: unwind from the snapshot alone, with maps
    // re-parsed from their text as they arrive in CrashInfo.
    let maps_text: String = crash
        .maps
        .mappings()
        .iter()
        .map(|m| {
            format!(
                "{:x}-{:x} {}{}{}{} {:08x} {} {} {}\n",
                m.start.addr(),
                m.end.addr(),
                if m.read { 'r' } else { '-' },
                if m.write { 'w' } else { '-' },
                if m.exec { 'x' } else { '-' },
                if m.shared { 's' } else { 'p' },
                m.offset,
                m.dev,
                m.inode,
                m.name
            )
        })
        .collect();
    let maps = parse_maps(&maps_text).unwrap();
    assert_eq!(maps, crash.maps);

    let mut sym = Symbolizer::new();
    let frames = sym.backtrace(&crash.regs, &crash.stack, &maps);
    eprintln!("{flags:?}:\n{}", dump(&frames));

    // Frame 0 is the faulting instruction itself.
    assert_eq!(frames[0].pc.addr(), crash.regs[16]);
    assert_eq!(
        frames[0].function.as_deref(),
        Some("leaf"),
        "{}",
        dump(&frames)
    );
    assert_eq!(frames[0].line, Some(line_of(src, "LEAF_FAULT")));
    assert_eq!(file_name(&frames[0]), Some("crash.c"));
    assert_eq!(frames[0].module, exe);
    let m = expect(&frames, 1, "middle", line_of(src, "MIDDLE_CALL"));
    assert_eq!(m, 1, "{}", dump(&frames));
    let c = expect(&frames, 2, caller, line_of(src, caller_marker));
    assert_eq!(c, 2, "{}", dump(&frames));
    // symbolize() agrees with the backtrace on the exact pc.
    assert_eq!(sym.symbolize(frames[0].pc, &maps), frames[0]);
    // How the caller frames were found.
    let raw = sym.unwind(&crash.regs, &crash.stack, &maps);
    let want = if fp {
        UnwindMethod::FramePointer
    } else {
        UnwindMethod::Cfi
    };
    assert_eq!(raw[1].method, want);
    assert_eq!(raw[2].method, want);
}

#[test]
fn segv_in_leaf_o0() {
    check_crash(CRASH_C, &["-g", "-O0"], "main", "MAIN_CALL", false);
}

#[test]
fn segv_in_leaf_o2() {
    check_crash(CRASH_C, &["-g", "-O2"], "main", "MAIN_CALL", false);
}

#[test]
fn segv_in_thread_o0() {
    check_crash(
        THREAD_CRASH_C,
        &["-g", "-O0"],
        "worker",
        "WORKER_CALL",
        false,
    );
}

#[test]
fn segv_in_thread_o2_debug_frame_only() {
    // No .eh_frame: gcc puts the CFI into .debug_frame instead.
    check_crash(
        THREAD_CRASH_C,
        &[
            "-g",
            "-O2",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ],
        "worker",
        "WORKER_CALL",
        false,
    );
}

#[test]
fn segv_in_thread_no_cfi_uses_frame_pointers() {
    // Without any CFI the program's frames are unwound by the rbp chain.
    // -O0: at -O2 gcc gives leaf functions no frame even with
    // -fno-omit-frame-pointer, and the rbp chain then skips their caller.
    check_crash(
        THREAD_CRASH_C,
        &[
            "-g",
            "-O0",
            "-fno-omit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ],
        "worker",
        "WORKER_CALL",
        true,
    );
}
