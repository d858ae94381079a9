//! `reprise bench record`: how much recording slows programs down.
//! `reprise bench replay`: how much replaying slows them down (see
//! [`replay`]).
//!
//! Runs each workload natively and under `reprise record` (the same `reprise`
//! executable), alternating, for several rounds, and prints the median wall
//! times, their ratio, the trace size and whether the design's goal is met:
//!
//! - `pigz -p 2`, `pbzip2 -p2` and `xz -T2` compressing a generated,
//!   mildly compressible file, at `sync` and `sys`: geometric mean of the
//!   ratios over the three compressors ≤ 1.05 at `sync`, ≤ 1.15 at `sys`;
//! - `bench/locks.c`, 4 threads, 10 million lock/unlock pairs in total, at
//!   `sync`: ≤ 3;
//! - `bench/reads.c`, 1 million 64-byte `pread`s of a file, at `sys`: ≤ 15.
//!
//! Every run's standard output (the compressed data, the lock counter, the
//! checksum of the bytes read) must equal the native reference output, byte for
//! byte, or the benchmark fails.

//!
//! The tools the workloads run (pigz, pbzip2, xz, gcc) are not installed
//! here: `scripts/setup.sh` installs them; a missing one is an error that
//! names it.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

mod debug;
mod record;
mod replay;
mod servers;
mod solver;

/// Seed of the generated input; part of its cache file name.
const SEED: u64 = 0x7265_7072_6973_6521;
/// Bump when the generator changes, so stale cached inputs are not reused.
const GENERATOR_VERSION: u32 = 1;

/// What `reprise bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// Recording overhead: native vs `reprise record` wall time and trace
    /// size on compressors and microbenchmarks.
    Record,
    /// Replay time of a recorded non-failing `pigz -p 2` run.
    Replay,
    /// Time of one solver query as the observed run grows.
    Solver,
    /// `bisect` and `goto` of the debugger on a run of ≥ 1M events.
    Debug,
}

/// Settings of a benchmark.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub what: What,
    /// Timed rounds per workload; each round runs it natively and recorded
    /// at each sketch level, in alternating order (None: 5, 2 with `quick`).
    pub rounds: Option<u32>,
    /// Size in MB of the generated file the compressors compress (None:
    /// 100 for record, 20 for replay; 2 with `quick`).
    pub size_mb: Option<u64>,
    /// Smoke test: small inputs and 2 rounds (the goals are not meaningful).
    pub quick: bool,
    /// Only these workloads (pigz, pbzip2, xz, locks, reads); empty: all.
    pub only: Vec<String>,
    /// Where the generated input and the built microbenchmarks are kept
    /// (None: $XDG_CACHE_HOME/reprise-bench or ~/.cache/reprise-bench).
    pub cache_dir: Option<PathBuf>,
    /// Seconds after which a single run is killed and the benchmark fails.
    pub timeout: f64,
    /// Exit status 1 if a goal is not met.
    pub check: bool,
    /// `record`: the sketches to measure (sync, sys, func, bb, bb-N);
    /// empty: sync and sys. The `func` and `bb` rows run builds of the
    /// microbenchmarks made with the flags those levels need.
    pub sketches: Vec<String>,
    /// The `reprise` executable that records and replays.
    pub reprise: PathBuf,
}

/// Runs the benchmark; prints its table on stdout, its progress on
/// stderr. The exit status: 1 if a run failed (or, with `check`, a goal is
/// not met), else 0.
pub fn run(a: &BenchOptions) -> Result<u8> {
    match a.what {
        What::Record => record::run_record(a),
        What::Replay => replay::run_replay(a),
        What::Solver => solver::run_solver(a.quick),
        What::Debug => debug::run_debug(a),
    }
}

// ---------------------------------------------------------------------------
// Interruption and cleanup

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch SIGINT/SIGTERM/SIGHUP so that temporary files are removed: the
/// running child gets the terminal's SIGINT itself, and the watchdog kills it
/// anyway; the benchmark then unwinds through the guards' destructors.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// A directory removed, with its contents, when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path, prefix: &str) -> Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = parent.join(format!("{prefix}-{}-{nanos:08x}", std::process::id()));
        fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(TempDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A file removed when dropped unless `keep` was called.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

// ---------------------------------------------------------------------------
// Running one command

/// Run `cmd` with stdout and stderr to the given files; the wall time from
/// spawn to reaping. Killed (and an error) after `timeout` or on interruption.
fn run_timed(
    cmd: &mut Command,
    stdout: &Path,
    stderr: &Path,
    timeout: Duration,
) -> Result<(Duration, ExitStatus)> {
    check_interrupted()?;
    cmd.stdin(Stdio::null())
        .stdout(
            File::create(stdout).with_context(|| format!("cannot create {}", stdout.display()))?,
        )
        .stderr(
            File::create(stderr).with_context(|| format!("cannot create {}", stderr.display()))?,
        );
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // 0: still running, 1: killed for timeout, 2: killed for interruption.
    let killed = std::sync::Arc::new(AtomicI32::new(0));
    let killed_w = killed.clone();
    let watchdog = std::thread::spawn(move || loop {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let why = if INTERRUPTED.load(Ordering::SeqCst) {
                    2
                } else if start.elapsed() > timeout {
                    1
                } else {
                    continue;
                };
                killed_w.store(why, Ordering::SeqCst);
                // The child is not reaped before the main thread's wait
                // returns, which it cannot before done is sent: the pid is
                // still ours.
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return;
            }
            _ => return,
        }
    });
    let status = child.wait();
    let elapsed = start.elapsed();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let status = status.context("cannot wait for the benchmark process")?;
    match killed.load(Ordering::SeqCst) {
        1 => bail!(
            "{:?} did not finish within {:.0} s (--timeout) and was killed",
            cmd.get_program(),
            timeout.as_secs_f64()
        ),
        2 => bail!("interrupted"),
        _ => {}
    }
    check_interrupted()?;
    Ok((elapsed, status))
}

fn tail(path: &Path, max: usize) -> String {
    let s = fs::read(path).unwrap_or_default();
    let s = String::from_utf8_lossy(&s[s.len().saturating_sub(max)..]).into_owned();
    s.trim_end().to_string()
}

fn files_equal(a: &Path, b: &Path) -> Result<bool> {
    let (ma, mb) = (fs::metadata(a)?, fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn geomean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

// ---------------------------------------------------------------------------
// Environment: machine, tools, cache, inputs

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| {
            format!(
                "load average {}",
                s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            )
        })
        .unwrap_or_else(|_| "load average unknown".into())
}

fn machine_description() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<u64>().ok())
                })
        })
        .map(|kb| format!(", {:.1} GiB RAM", kb as f64 / (1024.0 * 1024.0)))
        .unwrap_or_default();
    format!(
        "machine: nproc {nproc} (online {online}), {cpu}, Linux {kernel}{mem}; {}",
        loadavg()
    )
}

/// An error naming the tools of `tools` that are not in PATH, if any:
/// `scripts/setup.sh` installs them (packages are not installed here).
fn require_tools(tools: &[&str]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_in_path(t).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing {}: install {} (scripts/setup.sh does)",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("reprise-bench");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(h).join(".cache").join("reprise-bench");
    }
    std::env::temp_dir().join("reprise-bench-cache")
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
}

/// The compressors' input: `size_mb` MB of pseudo-random English-looking
/// text (words from a seeded vocabulary, skewed towards frequent ones),
/// generated once into the cache and identical for a given seed and size.
fn ensure_input(cache: &Path, size_mb: u64) -> Result<PathBuf> {
    let path = cache.join(format!(
        "words-v{GENERATOR_VERSION}-{SEED:016x}-{size_mb}MB.txt"
    ));
    let want = size_mb * 1_000_000;
    if fs::metadata(&path)
        .map(|m| m.len() == want)
        .unwrap_or(false)
    {
        return Ok(path);
    }
    eprintln!(
        "reprise bench: generating {} ({size_mb} MB)",
        path.display()
    );
    let tmp = cache.join(format!(".words-{}.tmp", std::process::id()));
    let guard = TempFile(Some(tmp.clone()));
    let mut rng = SplitMix(SEED);
    // Letters weighted by their frequency in English text.
    const LETTERS: &[u8] = b"etaoinshrdlcumwfgypbvkjxqz";
    const WEIGHTS: [u64; 26] = [
        127, 91, 82, 75, 70, 67, 63, 61, 60, 43, 40, 28, 28, 24, 24, 22, 20, 20, 19, 15, 10, 8, 2,
        2, 1, 1,
    ];
    let total_weight: u64 = WEIGHTS.iter().sum();
    let letter = |rng: &mut SplitMix| {
        let mut r = rng.below(total_weight);
        for (i, w) in WEIGHTS.iter().enumerate() {
            if r < *w {
                return LETTERS[i];
            }
            r -= w;
        }
        b'e'
    };
    let vocab: Vec<Vec<u8>> = (0..16384)
        .map(|_| {
            let len = 2 + rng.below(6) + rng.below(6);
            (0..len).map(|_| letter(&mut rng)).collect()
        })
        .collect();
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let mut written: u64 = 0;
    let mut line_words = 0;
    let mut capital = true;
    while written < want {
        if written % (16 << 20) < 16 {
            check_interrupted()?;
        }
        // Skewed choice: frequent words much more often than rare ones.
        let u = rng.below(1 << 20) as f64 / (1 << 20) as f64;
        let idx = ((u * u * u) * vocab.len() as f64) as usize;
        let w = &vocab[idx.min(vocab.len() - 1)];
        let mut word = w.clone();
        if capital {
            word[0] = word[0].to_ascii_uppercase();
            capital = false;
        }
        let p = rng.below(100);
        if p < 6 {
            word.push(b'.');
            capital = true;
        } else if p < 12 {
            word.push(b',');
        }
        line_words += 1;
        if line_words >= 10 + rng.below(6) {
            word.push(b'\n');
            line_words = 0;
        } else {
            word.push(b' ');
        }
        let n = word.len().min((want - written) as usize);
        out.write_all(&word[..n])?;
        written += n as u64;
    }
    out.flush()?;
    drop(out);
    fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    guard.keep();
    Ok(path)
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Build a microbenchmark with gcc into the cache (once per source text).
fn build_c(cache: &Path, name: &str, source: &str, flags: &[&str]) -> Result<PathBuf> {
    let key = fnv1a(format!("{source}\0{}", flags.join(" ")).as_bytes());
    let exe = cache.join(format!("{name}-{key:016x}"));
    if exe.is_file() {
        return Ok(exe);
    }
    let gcc = find_in_path("gcc").ok_or_else(|| {
        anyhow!("missing gcc: it builds the microbenchmarks; install it (scripts/setup.sh does)")
    })?;
    let src = cache.join(format!("{name}-{key:016x}.c"));
    let src_guard = TempFile(Some(src.clone()));
    fs::write(&src, source)?;
    let tmp = cache.join(format!(".{name}-{}.tmp", std::process::id()));
    let tmp_guard = TempFile(Some(tmp.clone()));
    let out = Command::new(gcc)
        .args(flags)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .context("cannot run gcc")?;
    if !out.status.success() {
        bail!(
            "gcc failed to build {name}.c: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::rename(&tmp, &exe)?;
    tmp_guard.keep();
    drop(src_guard);
    eprintln!("reprise bench: built {}", exe.display());
    Ok(exe)
}

// ---------------------------------------------------------------------------
// Workloads

struct Workload {
    /// Short name, for --only.
    key: &'static str,
    /// What the table shows.
    label: String,
    program: PathBuf,
    args: Vec<OsString>,
    /// Sketch levels to record at, with the goal for each (the compressors'
    /// goal is on their geometric mean).
    sketches: Vec<(String, f64)>,
    compressor: bool,
}

/// The first line of an error with its causes, for the table's notes.
fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        s.push_str(": ");
        s.push_str(&c.to_string());
    }
    s.replace('\n', " | ")
}

/// Run the workload natively; check its status and, if `reference` is given,
/// that its output equals it.
fn native_run(
    w: &Workload,
    out: &Path,
    err: &Path,
    timeout: Duration,
    reference: Option<&Path>,
) -> Result<Duration> {
    let (t, status) = run_timed(Command::new(&w.program).args(&w.args), out, err, timeout)?;
    if !status.success() {
        bail!("native run failed ({status}): {}", tail(err, 1000));
    }
    if let Some(r) = reference {
        if !files_equal(out, r)? {
            bail!("native runs give different outputs: the workload is not deterministic");
        }
    }
    Ok(t)
}
