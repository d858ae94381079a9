//! Files that describe the machine, which libc reads on its own at moments
//! that depend on timing: they are kept out of the sketch.
//!
//! glibc's malloc counts the CPUs (`/sys/devices/system/cpu/online`) when
//! a thread first needs an arena and the arenas in use are contended, and
//! reads `/proc/sys/vm/overcommit_memory` and the transparent huge page
//! settings when it grows or trims a heap. Which thread does so, and
//! whether it does at all, follows from which malloc found a lock taken:
//! ordered as events, these opens and reads made a replay leave the sketch
//! where the recorded thread counted the CPUs and the replayed one did not
//! (measured: a 20-thread program diverged in 1 of 2 recordings, at
//! `expected openat("/sys/devices/system/cpu/online")`). Record and replay
//! both run them for real and unordered: what they read is the machine's,
//! not the program's input.
//!
//! The descriptor such an open returns is remembered for the calling thread
//! until its next other system call: libc reads the file at once and
//! closes it (`close` is not trapped, so the mark cannot outlive the
//! pattern: any other call of the thread that reaches the agent clears it).

use core::cell::Cell;

thread_local! {
    /// The descriptor of a machine description file this thread opened,
    /// or -1.
    static FD: Cell<i64> = const { Cell::new(-1) };
}

/// Path prefixes of the files libc reads on its own (see the module).
const PREFIXES: [&[u8]; 3] = [
    b"/sys/devices/system/cpu/",
    b"/proc/sys/vm/overcommit_memory",
    b"/sys/kernel/mm/transparent_hugepage/",
];

/// Bytes of a path compared with [`PREFIXES`] (the longest is 36).
const PREFIX_MAX: usize = 40;

/// True if the string at `path` starts with one of [`PREFIXES`]. The
/// path is copied without touching memory the program may not have mapped
/// (it may pass a bad pointer and expect `EFAULT`); one ending just
/// before an unmapped page is still read.
fn is_ambient_path(path: u64) -> bool {
    if path == 0 {
        return false;
    }
    let mut buf = [0u8; PREFIX_MAX];
    let n = crate::raw::copy_own(path, &mut buf);
    PREFIXES
        .iter()
        .any(|p| p.len() <= n && buf[..p.len()] == **p)
}

/// The path argument of an open, if `nr` is one.
fn open_path(nr: i64, a: &[u64; 6]) -> Option<u64> {
    match nr {
        libc::SYS_open => Some(a[0]),
        libc::SYS_openat => Some(a[1]),
        _ => None,
    }
}

/// Runs the call for real if it opens or reads a machine description file
/// (see the module) and returns its result; `None` for any other call,
/// which the caller records or replays as usual.
pub fn run_outside_sketch(nr: i64, a: &[u64; 6]) -> Option<i64> {
    // A trace recorded before this rule has these calls as events.
    if crate::replay::on() && !crate::replay::ambient_unordered() {
        return None;
    }
    let mine = FD.with(|f| f.get());
    let reads_it =
        matches!(nr, libc::SYS_read | libc::SYS_pread64) && mine >= 0 && a[0] as i64 == mine;
    if reads_it {
        return Some(crate::raw::syscall6(nr, *a));
    }
    let opens_one = open_path(nr, a).is_some_and(is_ambient_path);
    if !opens_one {
        if mine >= 0 {
            FD.with(|f| f.set(-1));
        }
        return None;
    }
    let r = crate::raw::syscall6(nr, *a);
    FD.with(|f| f.set(if r >= 0 { r } else { -1 }));
    Some(r)
}
