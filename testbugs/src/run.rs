//! Building the programs and running them natively, classifying each run.

use std::fmt;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::manifest::{corpus_dir, load_manifest, Bug, ExpectKind, Manifest};
use crate::Error;

/// The default timeout after which a run counts as a hang.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A compiled program.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: String,
    pub exe: PathBuf,
}

/// Compiles every program of the source-tree manifest into `out_dir`.
pub fn build_all(out_dir: &Path) -> Result<Vec<Built>, Error> {
    let m = load_manifest()?;
    build_manifest(&m, &corpus_dir(), out_dir)
}

/// Compiles every program of `manifest` (sources under `corpus/programs`).
pub fn build_manifest(
    manifest: &Manifest,
    corpus: &Path,
    out_dir: &Path,
) -> Result<Vec<Built>, Error> {
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    manifest
        .bugs
        .iter()
        .map(|b| build_bug(b, corpus, out_dir))
        .collect()
}

/// Compiles one program into `out_dir/NAME` (dynamically linked).
pub fn build_bug(bug: &Bug, corpus: &Path, out_dir: &Path) -> Result<Built, Error> {
    build_bug_with(bug, corpus, out_dir, &[])
}

/// The compiler flags that make a program call the hooks of a sketch
/// level: function entries for `func`, basic blocks for `bb` (whose hook
/// is linked from `libreprise_cov.so` in `cov_dir`). None for the levels
/// that need no rebuild.
pub fn instrument_flags(level: &str, cov_dir: &Path) -> Option<Vec<String>> {
    let level = level.split('-').next().unwrap_or(level);
    match level {
        "func" => Some(vec!["-finstrument-functions".into()]),
        "bb" => Some(vec![
            "-fsanitize-coverage=trace-pc".into(),
            format!("-L{}", cov_dir.display()),
            format!("-Wl,-rpath,{}", cov_dir.display()),
            "-lreprise_cov".into(),
        ]),
        _ => None,
    }
}

/// [`build_bug`] with `extra` flags after the manifest's (the source
/// before them, so that `-l` options follow it).
pub fn build_bug_with(
    bug: &Bug,
    corpus: &Path,
    out_dir: &Path,
    extra: &[String],
) -> Result<Built, Error> {
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let compiler = bug.lang.compiler();
    let src = corpus.join("programs").join(&bug.source);
    let exe = out_dir.join(&bug.name);
    let out = Command::new(compiler)
        .args(&bug.flags)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::CompilerMissing(compiler.to_string()),
            _ => Error::Io {
                path: PathBuf::from(compiler),
                source,
            },
        })?;
    if !out.status.success() {
        return Err(Error::Compile {
            name: bug.name.clone(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(Built {
        name: bug.name.clone(),
        exe,
    })
}

/// How a failing run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Killed by a signal (not an assertion).
    Signal(String),
    /// `assert()` failed; the message from stderr.
    Assertion(String),
    /// Still running at the timeout (deadlock or lost wakeup).
    Hang,
    /// Exit 0 but stdout lacks the expected line.
    WrongOutput,
    /// Non-zero exit status.
    ExitCode(i32),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Signal(s) => write!(f, "{s}"),
            Failure::Assertion(m) => write!(f, "assertion: {m}"),
            Failure::Hang => write!(f, "hang"),
            Failure::WrongOutput => write!(f, "wrong output"),
            Failure::ExitCode(c) => write!(f, "exit {c}"),
        }
    }
}

/// The classified outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(Failure),
}

/// One native run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub outcome: Outcome,
    pub duration: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Passed
    }

    /// Whether this run failed the way the manifest says the bug fails.
    pub fn matches_expected(&self, bug: &Bug) -> bool {
        let Outcome::Failed(f) = &self.outcome else {
            return false;
        };
        let e = &bug.expect;
        match (e.kind, f) {
            (ExpectKind::Signal, Failure::Signal(s)) => e.signal.as_deref() == Some(s.as_str()),
            (ExpectKind::Assertion, Failure::Assertion(m)) => {
                e.assertion.as_deref().is_some_and(|a| m.contains(a))
            }
            (ExpectKind::Deadlock | ExpectKind::Hang, Failure::Hang) => true,
            (ExpectKind::WrongOutput, Failure::WrongOutput) => true,
            (ExpectKind::ExitCode, Failure::ExitCode(c)) => e.exit_code == Some(*c),
            _ => false,
        }
    }
}

/// The name of a signal number ("SIGSEGV").
pub fn signal_name(sig: i32) -> String {
    const NAMES: &[(i32, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == sig)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("SIG{sig}"))
}

/// The number of a signal name, for the names [`signal_name`] knows.
pub fn signal_number(name: &str) -> Option<i32> {
    (1..32).find(|&n| signal_name(n) == name)
}

/// Extracts the message of a glibc assertion failure from stderr:
/// `prog: file.c:42: func: Assertion `expr' failed.`
pub fn assertion_message(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|l| l.contains("Assertion `") && l.contains("' failed"))
        .map(|l| l.to_string())
}

/// Runs a built program once with `args`, cwd `testbugs/` (so input paths
/// in args resolve), stdin from the manifest, core dumps off, and classifies
/// the run. After `timeout` the whole process group is killed: a hang.
pub fn run_native(
    bug: &Bug,
    built: &Built,
    args: &[String],
    timeout: Duration,
) -> Result<RunResult, Error> {
    run_native_in(bug, built, args, timeout, &corpus_dir())
}

/// [`run_native`] with an explicit corpus directory.
pub fn run_native_in(
    bug: &Bug,
    built: &Built,
    args: &[String],
    timeout: Duration,
    corpus: &Path,
) -> Result<RunResult, Error> {
    let stdin = match &bug.stdin {
        Some(f) => {
            let p = corpus.join(f);
            Stdio::from(std::fs::File::open(&p).map_err(|source| Error::Io { path: p, source })?)
        }
        None => Stdio::null(),
    };
    let mut cmd = Command::new(&built.exe);
    cmd.args(args)
        .current_dir(corpus)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| Error::Io {
        path: built.exe.clone(),
        source,
    })?;
    let pid = child.id() as i32;
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(source) => {
                return Err(Error::Io {
                    path: built.exe.clone(),
                    source,
                })
            }
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            // SAFETY: plain kill(2) of the child's own process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            break child.wait().map_err(|source| Error::Io {
                path: built.exe.clone(),
                source,
            })?;
        }
        let e = start.elapsed();
        std::thread::sleep(if e < Duration::from_millis(20) {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(2)
        });
    };
    let duration = start.elapsed();
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    let outcome = if timed_out {
        Outcome::Failed(Failure::Hang)
    } else if let Some(sig) = status.signal() {
        match assertion_message(&stderr) {
            Some(m) if sig == libc::SIGABRT => Outcome::Failed(Failure::Assertion(m)),
            _ => Outcome::Failed(Failure::Signal(signal_name(sig))),
        }
    } else if let Some(m) = assertion_message(&stderr).filter(|_| status.code() == Some(0)) {
        // The assertion printed its message, and the process exited 0
        // before its abort did (another thread's exit): it failed all the
        // same. (A nonzero status is the program's own verdict.)
        Outcome::Failed(Failure::Assertion(m))
    } else {
        match status.code() {
            Some(0) => match &bug.expect.output {
                Some(line) if !stdout.lines().any(|l| l.trim_end() == line) => {
                    Outcome::Failed(Failure::WrongOutput)
                }
                _ => Outcome::Passed,
            },
            Some(c) => Outcome::Failed(Failure::ExitCode(c)),
            None => Outcome::Failed(Failure::ExitCode(-1)),
        }
    };
    Ok(RunResult {
        outcome,
        duration,
        stdout,
        stderr,
    })
}
