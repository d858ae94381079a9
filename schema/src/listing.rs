//! Human-readable views of traces: the `reprise ls` table, one line per
//! event for `reprise dump`, and outcome reports.

use std::fmt::Write as _;
use std::fs;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use reprise_abi::EventKind;
use serde::Serialize;

use crate::error::{Result, TraceError};
use crate::reader::TraceReader;
use crate::types::*;

/// One row of `reprise ls`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct TraceListing {
    /// Directory name under the root.
    pub name: String,
    #[serde(serialize_with = "crate::types::ser::path")]
    pub path: PathBuf,
    pub program: String,
    pub start_time_unix_ns: u64,
    pub level: Option<SketchLevel>,
    /// `bb-N` traces: N (0 otherwise).
    pub block_period: u32,
    /// Recorded with `record --chaos`.
    pub chaos: bool,
    pub events: u64,
    /// One line: the outcome summary, or why there is none.
    pub outcome: String,
    pub size_bytes: u64,
    pub complete: bool,
    /// Set when the entry could not be read as a trace.
    pub error: Option<String>,
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A one-line summary of an outcome.
pub fn outcome_summary(o: &OutcomeInfo) -> String {
    if !o.summary.is_empty() {
        return o.summary.clone();
    }
    match o.kind {
        OutcomeKind::Exited => format!("exited with status {}", o.exit_code),
        OutcomeKind::Signaled => format!("killed by {}", signal_name(o.signal)),
        OutcomeKind::Assertion if !o.assertion.is_empty() => {
            format!("assertion failed: {}", o.assertion)
        }
        k => k.to_string(),
    }
}

/// Every entry under `root` except the `latest-trace` link and hidden
/// files, newest last. Entries that cannot be read as traces are listed with
/// their error.
pub fn list_traces(root: &Path) -> Vec<TraceListing> {
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in rd.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == crate::location::LATEST {
            continue;
        }
        let path = entry.path();
        let mut l = TraceListing {
            name,
            path: path.clone(),
            ..Default::default()
        };
        if !path.is_dir() {
            l.error = Some("not a trace directory".into());
            out.push(l);
            continue;
        }
        l.size_bytes = dir_size(&path);
        match TraceReader::open(&path) {
            Ok(r) => {
                let h = r.header();
                l.program = h.program_name();
                l.start_time_unix_ns = h.start_time_unix_ns;
                l.level = Some(h.level);
                l.block_period = h.block_period;
                l.chaos = h.chaos;
                l.events = r.event_count();
                l.complete = r.is_complete();
                l.outcome = match r.outcome() {
                    Some(o) => outcome_summary(o),
                    None if !r.is_complete() => {
                        "incomplete (recording running or cut short)".into()
                    }
                    None => "unknown".into(),
                };
            }
            Err(e) => {
                l.error = Some(e.to_string());
                l.start_time_unix_ns = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
            }
        }
        out.push(l);
    }
    out.sort_by(|a, b| (a.start_time_unix_ns, &a.name).cmp(&(b.start_time_unix_ns, &b.name)));
    out
}

/// `1.5 MiB`-style sizes.
pub fn human_size(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time in nanoseconds.
pub fn format_time_utc(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The `reprise ls` table (times in UTC).
pub fn format_trace_table(rows: &[TraceListing]) -> String {
    let mut cells: Vec<[String; 6]> = vec![[
        "NAME".into(),
        "STARTED (UTC)".into(),
        "LEVEL".into(),
        "EVENTS".into(),
        "SIZE".into(),
        "OUTCOME".into(),
    ]];
    for r in rows {
        if let Some(e) = &r.error {
            cells.push([
                r.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                human_size(r.size_bytes),
                format!("error: {e}"),
            ]);
            continue;
        }
        cells.push([
            r.name.clone(),
            format_time_utc(r.start_time_unix_ns),
            r.level
                .map(|level| {
                    let sketch = crate::Sketch {
                        level,
                        block_period: r.block_period,
                    };
                    // A run paused at random: not a plain recording.
                    let chaos = if r.chaos { "+chaos" } else { "" };
                    format!("{sketch}{chaos}")
                })
                .unwrap_or_else(|| "-".into()),
            r.events.to_string(),
            human_size(r.size_bytes),
            r.outcome.clone(),
        ]);
    }
    let mut w = [0usize; 5];
    for c in &cells {
        for i in 0..5 {
            w[i] = w[i].max(c[i].chars().count());
        }
    }
    let mut s = String::new();
    for c in &cells {
        let _ = writeln!(
            s,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        );
    }
    s
}

// ---- events ---------------------------------------------------------------

/// How to show a syscall argument.
#[derive(Clone, Copy)]
enum A {
    /// Not shown.
    No,
    /// Signed decimal.
    Int(&'static str),
    /// Hexadecimal (pointers, flags).
    Ptr(&'static str),
}

/// Name and first two arguments of common x86-64 system calls.
fn syscall_info(nr: u64) -> Option<(&'static str, A, A)> {
    use A::*;
    Some(match nr {
        0 => ("read", Int("fd"), Ptr("buf")),
        1 => ("write", Int("fd"), Ptr("buf")),
        2 => ("open", Ptr("path"), Ptr("flags")),
        3 => ("close", Int("fd"), No),
        4 => ("stat", Ptr("path"), Ptr("statbuf")),
        5 => ("fstat", Int("fd"), Ptr("statbuf")),
        6 => ("lstat", Ptr("path"), Ptr("statbuf")),
        7 => ("poll", Ptr("fds"), Int("nfds")),
        8 => ("lseek", Int("fd"), Int("offset")),
        9 => ("mmap", Ptr("addr"), Int("length")),
        10 => ("mprotect", Ptr("addr"), Int("length")),
        11 => ("munmap", Ptr("addr"), Int("length")),
        12 => ("brk", Ptr("addr"), No),
        13 => ("rt_sigaction", Int("sig"), Ptr("act")),
        14 => ("rt_sigprocmask", Int("how"), Ptr("set")),
        16 => ("ioctl", Int("fd"), Ptr("request")),
        17 => ("pread64", Int("fd"), Ptr("buf")),
        18 => ("pwrite64", Int("fd"), Ptr("buf")),
        19 => ("readv", Int("fd"), Ptr("iov")),
        20 => ("writev", Int("fd"), Ptr("iov")),
        21 => ("access", Ptr("path"), Ptr("mode")),
        22 => ("pipe", Ptr("fds"), No),
        23 => ("select", Int("nfds"), Ptr("readfds")),
        24 => ("sched_yield", No, No),
        25 => ("mremap", Ptr("addr"), Int("old_size")),
        28 => ("madvise", Ptr("addr"), Int("length")),
        32 => ("dup", Int("fd"), No),
        33 => ("dup2", Int("oldfd"), Int("newfd")),
        34 => ("pause", No, No),
        35 => ("nanosleep", Ptr("req"), Ptr("rem")),
        39 => ("getpid", No, No),
        41 => ("socket", Int("domain"), Int("type")),
        42 => ("connect", Int("fd"), Ptr("addr")),
        43 => ("accept", Int("fd"), Ptr("addr")),
        44 => ("sendto", Int("fd"), Ptr("buf")),
        45 => ("recvfrom", Int("fd"), Ptr("buf")),
        46 => ("sendmsg", Int("fd"), Ptr("msg")),
        47 => ("recvmsg", Int("fd"), Ptr("msg")),
        48 => ("shutdown", Int("fd"), Int("how")),
        49 => ("bind", Int("fd"), Ptr("addr")),
        50 => ("listen", Int("fd"), Int("backlog")),
        51 => ("getsockname", Int("fd"), Ptr("addr")),
        52 => ("getpeername", Int("fd"), Ptr("addr")),
        53 => ("socketpair", Int("domain"), Int("type")),
        54 => ("setsockopt", Int("fd"), Int("level")),
        55 => ("getsockopt", Int("fd"), Int("level")),
        56 => ("clone", Ptr("flags"), Ptr("stack")),
        57 => ("fork", No, No),
        59 => ("execve", Ptr("path"), Ptr("argv")),
        60 => ("exit", Int("status"), No),
        61 => ("wait4", Int("pid"), Ptr("status")),
        62 => ("kill", Int("pid"), Int("sig")),
        63 => ("uname", Ptr("buf"), No),
        72 => ("fcntl", Int("fd"), Int("cmd")),
        74 => ("fsync", Int("fd"), No),
        77 => ("ftruncate", Int("fd"), Int("length")),
        79 => ("getcwd", Ptr("buf"), Int("size")),
        89 => ("readlink", Ptr("path"), Ptr("buf")),
        96 => ("gettimeofday", Ptr("tv"), Ptr("tz")),
        97 => ("getrlimit", Int("resource"), Ptr("rlim")),
        98 => ("getrusage", Int("who"), Ptr("usage")),
        99 => ("sysinfo", Ptr("info"), No),
        100 => ("times", Ptr("buf"), No),
        102 => ("getuid", No, No),
        104 => ("getgid", No, No),
        107 => ("geteuid", No, No),
        108 => ("getegid", No, No),
        110 => ("getppid", No, No),
        131 => ("sigaltstack", Ptr("ss"), Ptr("old_ss")),
        157 => ("prctl", Int("option"), Ptr("arg2")),
        158 => ("arch_prctl", Ptr("code"), Ptr("addr")),
        186 => ("gettid", No, No),
        200 => ("tkill", Int("tid"), Int("sig")),
        128 => ("rt_sigtimedwait", Ptr("set"), Ptr("info")),
        130 => ("rt_sigsuspend", Ptr("mask"), Int("size")),
        201 => ("time", Ptr("tloc"), No),
        202 => ("futex", Ptr("uaddr"), Int("op")),
        203 => ("sched_setaffinity", Int("pid"), Int("size")),
        204 => ("sched_getaffinity", Int("pid"), Int("size")),
        217 => ("getdents64", Int("fd"), Ptr("dirp")),
        218 => ("set_tid_address", Ptr("tidptr"), No),
        228 => ("clock_gettime", Int("clock"), Ptr("tp")),
        229 => ("clock_getres", Int("clock"), Ptr("res")),
        230 => ("clock_nanosleep", Int("clock"), Int("flags")),
        231 => ("exit_group", Int("status"), No),
        232 => ("epoll_wait", Int("epfd"), Ptr("events")),
        233 => ("epoll_ctl", Int("epfd"), Int("op")),
        234 => ("tgkill", Int("tgid"), Int("tid")),
        257 => ("openat", Int("dirfd"), Ptr("path")),
        262 => ("newfstatat", Int("dirfd"), Ptr("path")),
        267 => ("readlinkat", Int("dirfd"), Ptr("path")),
        269 => ("faccessat", Int("dirfd"), Ptr("path")),
        270 => ("pselect6", Int("nfds"), Ptr("readfds")),
        271 => ("ppoll", Ptr("fds"), Int("nfds")),
        273 => ("set_robust_list", Ptr("head"), Int("len")),
        281 => ("epoll_pwait", Int("epfd"), Ptr("events")),
        288 => ("accept4", Int("fd"), Ptr("addr")),
        290 => ("eventfd2", Int("initval"), Ptr("flags")),
        291 => ("epoll_create1", Ptr("flags"), No),
        292 => ("dup3", Int("oldfd"), Int("newfd")),
        293 => ("pipe2", Ptr("fds"), Ptr("flags")),
        295 => ("preadv", Int("fd"), Ptr("iov")),
        296 => ("pwritev", Int("fd"), Ptr("iov")),
        299 => ("recvmmsg", Int("fd"), Ptr("msgvec")),
        441 => ("epoll_pwait2", Int("epfd"), Ptr("events")),
        302 => ("prlimit64", Int("pid"), Int("resource")),
        318 => ("getrandom", Ptr("buf"), Int("count")),
        319 => ("memfd_create", Ptr("name"), Ptr("flags")),
        332 => ("statx", Int("dirfd"), Ptr("path")),
        334 => ("rseq", Ptr("rseq"), Int("len")),
        435 => ("clone3", Ptr("args"), Int("size")),
        439 => ("faccessat2", Int("dirfd"), Ptr("path")),
        _ => return None,
    })
}

/// The name of an x86-64 system call number (`syscall_N` if unknown).
pub fn syscall_name(nr: u64) -> String {
    match syscall_info(nr) {
        Some((n, _, _)) => n.to_string(),
        None => format!("syscall_{nr}"),
    }
}

/// `EAGAIN`-style name of an errno value, if known.
pub fn errno_name(e: i64) -> Option<&'static str> {
    Some(match e {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        6 => "ENXIO",
        7 => "E2BIG",
        8 => "ENOEXEC",
        9 => "EBADF",
        10 => "ECHILD",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        25 => "ENOTTY",
        28 => "ENOSPC",
        29 => "ESPIPE",
        32 => "EPIPE",
        34 => "ERANGE",
        35 => "EDEADLK",
        38 => "ENOSYS",
        61 => "ENODATA",
        62 => "ETIME",
        75 => "EOVERFLOW",
        88 => "ENOTSOCK",
        95 => "EOPNOTSUPP",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        130 => "EOWNERDEAD",
        131 => "ENOTRECOVERABLE",
        _ => return None,
    })
}

/// `SIGSEGV`-style name of a signal number.
pub fn signal_name(sig: i32) -> String {
    const N: [&str; 32] = [
        "0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match sig {
        1..=31 => N[sig as usize].to_string(),
        34..=64 => format!("SIGRTMIN+{}", sig - 34),
        _ => format!("signal {sig}"),
    }
}

fn signal_code_name(sig: i32, code: i32) -> Option<&'static str> {
    Some(match (sig, code) {
        (11, 1) => "SEGV_MAPERR",
        (11, 2) => "SEGV_ACCERR",
        (7, 1) => "BUS_ADRALN",
        (7, 2) => "BUS_ADRERR",
        (8, 1) => "FPE_INTDIV",
        (8, 2) => "FPE_INTOVF",
        (4, 1) => "ILL_ILLOPC",
        (_, 0) => "SI_USER",
        (_, -6) => "SI_TKILL",
        (_, 128) => "SI_KERNEL",
        _ => return None,
    })
}

fn fmt_arg(s: &mut String, a: A, v: u64) -> bool {
    match a {
        A::No => false,
        A::Int("dirfd") if v as u32 as i32 == -100 => {
            s.push_str("dirfd=AT_FDCWD");
            true
        }
        A::Int(n) => {
            let _ = write!(s, "{n}={}", v as i64);
            true
        }
        A::Ptr(n) => {
            let _ = write!(s, "{n}={v:#x}");
            true
        }
    }
}

fn fmt_result_errno(s: &mut String, r: i64, syscall: bool) {
    let errno = if syscall {
        (-4095..0).contains(&r).then_some(-r)
    } else {
        (r > 0).then_some(r)
    };
    let _ = write!(s, " = {r}");
    if let Some(name) = errno.and_then(errno_name) {
        let _ = write!(s, " ({name})");
    }
}

/// `"hello\n..."`: printable preview of some bytes.
fn preview(data: &[u8], max: usize) -> String {
    let mut s = String::from("\"");
    for &b in data.iter().take(max) {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\r' => s.push_str("\\r"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    if data.len() > max {
        s.push_str("...");
    }
    s
}

/// One readable line for an event, e.g.
/// `#57 p0 t3 pthread_mutex_lock(0x5555555580a0) = 0` or
/// `#60 p0 t1 read(fd=3, buf=0x7ffc1000) = 13 [13 bytes: "hello world\n"]`.
pub fn format_event(ev: &EventRecord) -> String {
    let mut s = format!("#{} p{} t{} ", ev.seq, ev.process, ev.thread);
    let k = ev.kind;
    match k {
        EventKind::Syscall => {
            let (name, a0, a1) = syscall_info(ev.object)
                .map(|(n, a, b)| (n.to_string(), a, b))
                .unwrap_or_else(|| (format!("syscall_{}", ev.object), A::Ptr("a0"), A::Ptr("a1")));
            s.push_str(&name);
            s.push('(');
            if fmt_arg(&mut s, a0, ev.arg0) && !matches!(a1, A::No) {
                s.push_str(", ");
            }
            fmt_arg(&mut s, a1, ev.arg1);
            s.push(')');
            if matches!(ev.object, 9 | 12 | 25) && ev.result > 0 {
                let _ = write!(s, " = {:#x}", ev.result);
            } else {
                fmt_result_errno(&mut s, ev.result, true);
            }
        }
        EventKind::ThreadCreate => {
            let _ = write!(s, "pthread_create() = {} -> t{}", ev.result, ev.arg0);
        }
        EventKind::ThreadStart => {
            let _ = write!(s, "thread_start tid={}", ev.extra);
        }
        EventKind::ThreadExit => s.push_str("thread_exit"),
        EventKind::ThreadJoin => {
            let _ = write!(s, "pthread_join({:#x})", ev.object);
            fmt_result_errno(&mut s, ev.result, false);
        }
        EventKind::Fork => {
            let _ = write!(s, "fork() -> p{}", ev.arg0);
        }
        EventKind::ProcessStart => {
            if ev.arg0 == u32::MAX as u64 {
                let _ = write!(s, "process_start pid={}", ev.extra);
            } else {
                let _ = write!(s, "process_start pid={} parent=p{}", ev.extra, ev.arg0);
            }
        }
        EventKind::Exec => s.push_str("execve"),
        EventKind::DataMore => s.push_str("data"),
        EventKind::Signal => {
            let _ = write!(s, "signal {}", signal_name(ev.object as i32));
        }
        EventKind::ProcessExit => {
            let _ = write!(s, "exit({})", ev.result);
        }
        EventKind::FuncEntry => {
            let _ = write!(s, "function_entry({:#x}) from {:#x}", ev.object, ev.arg0);
        }
        EventKind::Block => {
            let _ = write!(s, "block({:#x})", ev.object);
        }
        _ => {
            let _ = write!(s, "{}({:#x}", k.name(), ev.object);
            // A mutex operation's `arg0` is the lock's call site, which
            // the replay checks; it is not an argument.
            let site = matches!(k, EventKind::MutexLock | EventKind::MutexUnlock);
            if ev.arg0 != 0 && !site {
                let _ = write!(s, ", {:#x}", ev.arg0);
            }
            if ev.arg1 != 0 {
                let _ = write!(s, ", {:#x}", ev.arg1);
            }
            s.push(')');
            if !matches!(k, EventKind::CondWait) {
                fmt_result_errno(&mut s, ev.result, false);
            }
        }
    }
    if !ev.data.is_empty() {
        let _ = write!(s, " [{} bytes: {}]", ev.data.len(), preview(&ev.data, 32));
    }
    s
}

/// Parses an event range: `100-200` (inclusive), `100-` (from 100), `-50`
/// (up to 50), `7` (just 7).
pub fn parse_range(s: &str) -> Result<RangeInclusive<u64>> {
    let bad = || TraceError::BadRange(s.to_string());
    let t = s.trim();
    let num = |x: &str| x.trim().parse::<u64>().map_err(|_| bad());
    let r = match t.split_once('-') {
        None => {
            let n = num(t)?;
            n..=n
        }
        Some(("", "")) => return Err(bad()),
        Some((a, "")) => num(a)?..=u64::MAX,
        Some(("", b)) => 0..=num(b)?,
        Some((a, b)) => num(a)?..=num(b)?,
    };
    if r.start() > r.end() {
        return Err(bad());
    }
    Ok(r)
}

// ---- outcomes -------------------------------------------------------------

fn fmt_frames(s: &mut String, frames: &[Frame], indent: &str) {
    for (i, f) in frames.iter().enumerate() {
        let _ = write!(s, "{indent}#{i} {:#x} in ", f.pc);
        if f.function.is_empty() {
            s.push_str("??");
        } else {
            s.push_str(&f.function);
        }
        if !f.file.as_os_str().is_empty() {
            let _ = write!(s, " at {}:{}", f.file.display(), f.line);
        } else if !f.module.as_os_str().is_empty() {
            let _ = write!(s, " ({}+{:#x})", f.module.display(), f.offset);
        }
        s.push('\n');
    }
}

/// A multi-line report of an outcome: kind, exit status or signal (with
/// fault address and pc), assertion, backtrace, deadlock cycle, threads,
/// output and counts.
pub fn format_outcome(o: &OutcomeInfo) -> String {
    let mut s = String::new();
    let who = format!("p{} t{}", o.process, o.thread);
    match o.kind {
        OutcomeKind::Exited => {
            let _ = writeln!(s, "outcome: exited with status {}", o.exit_code);
        }
        OutcomeKind::Signaled | OutcomeKind::Assertion => {
            let _ = write!(s, "outcome: {} in {who}: {}", o.kind, signal_name(o.signal));
            if let Some(c) = signal_code_name(o.signal, o.signal_code) {
                let _ = write!(s, " ({c})");
            }
            if matches!(o.signal, 4 | 7 | 8 | 11) {
                let _ = write!(s, " at address {:#x}", o.fault_addr);
            }
            if o.pc != 0 {
                let _ = write!(s, ", pc {:#x}", o.pc);
            }
            s.push('\n');
        }
        k => {
            let _ = writeln!(s, "outcome: {k}");
        }
    }
    if !o.summary.is_empty() {
        let _ = writeln!(s, "summary: {}", o.summary);
    }
    if !o.assertion.is_empty() {
        let _ = writeln!(s, "assertion: {}", o.assertion);
    }
    if !o.backtrace.is_empty() {
        let _ = writeln!(s, "backtrace of {who}:");
        fmt_frames(&mut s, &o.backtrace, "  ");
    }
    if !o.cycle.is_empty() {
        let c: Vec<String> = o.cycle.iter().map(|a| format!("{a:#x}")).collect();
        let _ = writeln!(s, "deadlock cycle: {} -> {}", c.join(" -> "), c[0]);
    }
    if !o.threads.is_empty() {
        let _ = writeln!(s, "threads:");
        for t in &o.threads {
            let _ = write!(s, "  p{} t{} (tid {})", t.process, t.thread, t.tid);
            if t.waiting_on != 0 {
                let _ = write!(
                    s,
                    ": waiting in {}({:#x})",
                    t.wait_kind.name(),
                    t.waiting_on
                );
            } else {
                s.push_str(": running");
            }
            if !t.held.is_empty() {
                let h: Vec<String> = t.held.iter().map(|a| format!("{a:#x}")).collect();
                let _ = write!(s, ", holding {}", h.join(", "));
            }
            s.push('\n');
            fmt_frames(&mut s, &t.backtrace, "    ");
        }
    }
    for out in &o.output {
        let name = match out.fd {
            1 => "stdout".to_string(),
            2 => "stderr".to_string(),
            fd => format!("fd {fd}"),
        };
        let _ = writeln!(
            s,
            "{name}: {} bytes (digest {:016x}, {} kept)",
            out.length, out.digest, out.kept_bytes
        );
    }
    let _ = write!(s, "events: {}", o.event_count);
    if o.dropped_events != 0 {
        let _ = write!(s, " ({} dropped)", o.dropped_events);
    }
    let _ = writeln!(s, ", duration {:.3} s", o.duration_ns as f64 / 1e9);
    s
}
