//! Replaying what the file system told the recorded run.
//!
//! A program's behaviour depends on more than the bytes it reads: whether
//! its config file exists (`access`, `stat`), how big it is and when it
//! changed (`stat`, `fstat`: glibc re-reads the time-zone file when its
//! `stat` changes, stdio picks its buffering from `fstat`), where a link
//! points (`readlink`). A `sys` recording logs these queries with their
//! results; a replay returns the recorded results without asking the file
//! system, which may have changed since (the program itself may have
//! rewritten the file).
//!
//! `open`/`openat` run for real (the program goes on using the file
//! descriptor: `lseek`, `mmap`, `close`), and their result is made the
//! recorded one: the descriptor moved to the recorded number, a recorded
//! failure returned as such. A file the recording opened that is missing
//! now cannot be replayed: the attempt stops with a divergence that names
//! it, of its own kind, so the replayer can tell the user to restore it.
//! Unless the recorded run created it itself, in another thread's open
//! logged later (the replayer marks those opens): then a stand-in
//! descriptor takes the recorded number, the reads being answered from the
//! trace. An exclusive create (`O_CREAT | O_EXCL`) that the recording saw
//! fail because another thread created the file first, but that succeeds
//! now, removes the file it made so that the creator's turn creates it.

use reprise_abi::replay as rp;
use reprise_abi::ControlHeader;

use super::divergence::{diverge, diverge_as, Text};
use super::{copy_data, data_byte, Turn};
use crate::raw;

/// `struct stat` on x86-64.
const STAT_BYTES: usize = core::mem::size_of::<libc::stat>();
/// `struct statx`.
const STATX_BYTES: usize = 256;
/// Longest path compared or shown.
const PATH_MAX: usize = 4096;

pub fn is_file_syscall(nr: i64) -> bool {
    crate::sys::FILES.contains(&nr)
}

pub fn name(nr: i64) -> Option<&'static [u8]> {
    Some(match nr {
        libc::SYS_open => b"open",
        libc::SYS_openat => b"openat",
        libc::SYS_stat => b"stat",
        libc::SYS_lstat => b"lstat",
        libc::SYS_fstat => b"fstat",
        libc::SYS_newfstatat => b"newfstatat",
        libc::SYS_statx => b"statx",
        libc::SYS_access => b"access",
        libc::SYS_faccessat => b"faccessat",
        libc::SYS_faccessat2 => b"faccessat2",
        libc::SYS_readlink => b"readlink",
        libc::SYS_readlinkat => b"readlinkat",
        libc::SYS_getcwd => b"getcwd",
        _ => return None,
    })
}

/// The program's path argument of an `open` or `openat`.
pub fn open_path(nr: i64, a: &[u64; 6]) -> u64 {
    if nr == libc::SYS_open {
        a[0]
    } else {
        a[1]
    }
}

/// Replays file syscall `nr` at its turn `t`; returns the program's result.
///
/// # Safety
/// `a` are the program's arguments to this syscall: its buffers are as
/// large as the syscall says.
pub unsafe fn emulate(c: &ControlHeader, t: &Turn, nr: i64, a: [u64; 6]) -> i64 {
    // The recorded bytes land in the buffer the kernel would have filled.
    let (dst, room) = match nr {
        libc::SYS_open | libc::SYS_openat => return open(c, t, nr, a),
        libc::SYS_stat | libc::SYS_lstat | libc::SYS_fstat => (a[1], STAT_BYTES),
        libc::SYS_newfstatat => (a[2], STAT_BYTES),
        libc::SYS_statx => (a[4], STATX_BYTES),
        libc::SYS_readlink => (a[1], a[2] as usize),
        libc::SYS_readlinkat => (a[2], a[3] as usize),
        libc::SYS_getcwd => (a[0], a[1] as usize),
        // access, faccessat, faccessat2: the result alone.
        _ => (0, 0),
    };
    if t.result >= 0 && dst != 0 {
        let n = (t.data_len as usize).min(room);
        copy_data(c, t.pos, 0, dst as *mut u8, n);
    }
    t.result
}

/// `open`/`openat`: runs for real, then returns what the recording got.
unsafe fn open(c: &ControlHeader, t: &Turn, nr: i64, a: [u64; 6]) -> i64 {
    // The recording's kernel could not read the path (a bad pointer): it
    // is not read here either.
    if t.result == -(libc::EFAULT as i64) {
        return t.result;
    }
    let path = open_path(nr, &a) as *const u8;
    let len = cstr_len(path);
    if !same_path(c, t, path, len) {
        let mut m = Text::new();
        m.s(b"expected ");
        quoted_recorded(&mut m, c, t, nr);
        m.s(b" got ");
        quoted(&mut m, nr, path, len);
        diverge(c, t.pos, &m);
    }
    let real = raw::syscall6(nr, a);
    let rec = t.result;
    let flags = if nr == libc::SYS_open { a[1] } else { a[2] };
    match (rec >= 0, real >= 0) {
        (true, true) if real == rec => rec,
        (true, true) => {
            // Another descriptor number than recorded (the program's other
            // descriptors differ): moved to the recorded one if it is free.
            move_to(real, rec, flags)
        }
        (false, true) => {
            raw::syscall3(libc::SYS_close, real as u64, 0, 0);
            let exclusive = (libc::O_CREAT | libc::O_EXCL) as u64;
            if flags & exclusive == exclusive && rec == -(libc::EEXIST as i64) {
                remove_created(nr, a);
            }
            rec
        }
        (false, false) => rec,
        (true, false)
            if real == -(libc::ENOENT as i64) && t.extra & rp::OPEN_OF_FILE_CREATED_LATER != 0 =>
        {
            let null = b"/dev/null\0";
            let mode = flags & (libc::O_ACCMODE | libc::O_CLOEXEC) as u64;
            let stand_in = raw::syscall3(libc::SYS_open, null.as_ptr() as u64, mode, 0);
            if stand_in < 0 {
                return stand_in;
            }
            move_to(stand_in, rec, flags)
        }
        (true, false) => {
            let mut m = Text::new();
            quoted(&mut m, nr, path, len);
            m.s(b": the file cannot be opened at replay time (");
            match errno_name(-real) {
                Some(n) => m.s(n),
                None => m.s(b"errno ").d((-real) as u64),
            };
            m.s(b"); the recording opened it: restore it, then replay again");
            diverge_as(c, t.pos, &m, rp::DIVERGED_MISSING_FILE)
        }
    }
}

/// Moves descriptor `real` to the recorded number `rec` if that is free;
/// returns the program's descriptor.
fn move_to(real: i64, rec: i64, flags: u64) -> i64 {
    if real == rec {
        return rec;
    }
    let free = raw::syscall3(libc::SYS_fcntl, rec as u64, libc::F_GETFD as u64, 0) < 0;
    if !free {
        return real;
    }
    let cloexec = if flags & libc::O_CLOEXEC as u64 != 0 {
        libc::O_CLOEXEC as u64
    } else {
        0
    };
    if raw::syscall3(libc::SYS_dup3, real as u64, rec as u64, cloexec) < 0 {
        return real;
    }
    raw::syscall3(libc::SYS_close, real as u64, 0, 0);
    rec
}

/// Removes the file an exclusive create just made (it did not exist, so it
/// is empty and no one else holds it).
fn remove_created(nr: i64, a: [u64; 6]) {
    if nr == libc::SYS_open {
        raw::syscall3(libc::SYS_unlink, a[0], 0, 0);
    } else {
        raw::syscall3(libc::SYS_unlinkat, a[0], a[1], 0);
    }
}

unsafe fn cstr_len(p: *const u8) -> usize {
    if p.is_null() {
        return 0;
    }
    let mut n = 0;
    while n < PATH_MAX && *p.add(n) != 0 {
        n += 1;
    }
    n
}

/// True if the program opens the path the recording opened, counting two
/// runs of digits as equal (`/proc/<pid>/...`: pids are not replayed).
unsafe fn same_path(c: &ControlHeader, t: &Turn, path: *const u8, len: usize) -> bool {
    let rec_len = t.data_len as usize;
    let (mut i, mut j) = (0, 0);
    while i < len && j < rec_len {
        let (x, y) = (*path.add(i), data_byte(c, t.pos, j));
        if x.is_ascii_digit() && y.is_ascii_digit() {
            while i < len && (*path.add(i)).is_ascii_digit() {
                i += 1;
            }
            while j < rec_len && data_byte(c, t.pos, j).is_ascii_digit() {
                j += 1;
            }
            continue;
        }
        if x != y {
            return false;
        }
        i += 1;
        j += 1;
    }
    i == len && j == rec_len
}

/// `openat("path")` from the program's memory.
unsafe fn quoted(m: &mut Text, nr: i64, path: *const u8, len: usize) {
    m.s(name(nr).unwrap_or(b"open")).s(b"(\"");
    m.s(core::slice::from_raw_parts(path, len.min(200)));
    m.s(b"\")");
}

/// `openat("path")` as recorded.
fn quoted_recorded(m: &mut Text, c: &ControlHeader, t: &Turn, nr: i64) {
    let mut buf = [0u8; 200];
    let n = (t.data_len as usize).min(buf.len());
    for (i, b) in buf[..n].iter_mut().enumerate() {
        *b = data_byte(c, t.pos, i);
    }
    m.s(name(nr).unwrap_or(b"open"))
        .s(b"(\"")
        .s(&buf[..n])
        .s(b"\")");
}

fn errno_name(e: i64) -> Option<&'static [u8]> {
    Some(match e as i32 {
        libc::ENOENT => b"ENOENT: no such file or directory",
        libc::EACCES => b"EACCES: permission denied",
        libc::ENOTDIR => b"ENOTDIR: a path component is not a directory",
        libc::EISDIR => b"EISDIR: it is a directory",
        libc::ELOOP => b"ELOOP: too many symbolic links",
        libc::EROFS => b"EROFS: read-only file system",
        libc::EPERM => b"EPERM: operation not permitted",
        _ => return None,
    })
}
