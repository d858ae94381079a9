//! `reprise bench record`: how much recording slows programs down.
//! `reprise bench replay`: how much replaying slows them down (see
//! [`run_replay`]).
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

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

const LOCKS_C: &str = include_str!("../../bench/locks.c");
const READS_C: &str = include_str!("../../bench/reads.c");

/// Seed of the generated input; part of its cache file name.
const SEED: u64 = 0x7265_7072_6973_6521;
/// Bump when the generator changes, so stale cached inputs are not reused.
const GENERATOR_VERSION: u32 = 1;

/// Measure recording overhead: native vs `reprise record` wall time and trace
/// size on compressors and microbenchmarks.
#[derive(Args)]
pub struct BenchArgs {
    /// What to benchmark: `record` (recording overhead) or `replay`
    /// (replay time of a recorded non-failing `pigz -p 2` run).
    #[arg(value_parser = ["record", "replay"])]
    what: String,
    /// Timed rounds per workload; each round runs it natively and recorded
    /// at each sketch level, in alternating order [default: 5, 2 with --quick].
    #[arg(long)]
    rounds: Option<u32>,
    /// Size in MB of the generated file the compressors compress
    /// [default: 100 for record, 20 for replay; 2 with --quick].
    #[arg(long)]
    size_mb: Option<u64>,
    /// Smoke test: small inputs and 2 rounds (the goals are not meaningful).
    #[arg(long)]
    quick: bool,
    /// Run only these workloads (comma-separated: pigz, pbzip2, xz, locks, reads).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the generated input and the built microbenchmarks are kept
    /// [default: $XDG_CACHE_HOME/reprise-bench or ~/.cache/reprise-bench].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Seconds after which a single run is killed and the benchmark fails.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Do not install missing compressors with apt-get.
    #[arg(long)]
    no_install: bool,
    /// Exit with status 1 if a goal is not met.
    #[arg(long)]
    check: bool,
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

/// Install the missing packages with apt-get (as root, or with `sudo -n`).
fn apt_install(packages: &[&str]) -> Result<()> {
    if find_in_path("apt-get").is_none() {
        bail!(
            "missing {}; apt-get is not available to install them",
            packages.join(" ")
        );
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let prefix: Vec<&str> = if root {
        vec![]
    } else if find_in_path("sudo").is_some() {
        vec!["sudo", "-n"]
    } else {
        bail!("missing {}; installing them needs root", packages.join(" "));
    };
    let attempt = |args: &[&str]| -> bool {
        let mut all: Vec<&str> = prefix.clone();
        all.push("apt-get");
        all.extend_from_slice(args);
        eprintln!("reprise bench: running {}", all.join(" "));
        Command::new(all[0])
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    if attempt(&install) {
        return Ok(());
    }
    check_interrupted()?;
    if attempt(&["update"]) && attempt(&install) {
        return Ok(());
    }
    check_interrupted()?;
    bail!("apt-get could not install {}", packages.join(" "))
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
        anyhow!("gcc is needed to build the microbenchmarks (apt-get install gcc)")
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
// Workloads and goals

struct Workload {
    /// Short name, for --only.
    key: &'static str,
    /// What the table shows.
    label: String,
    program: PathBuf,
    args: Vec<OsString>,
    /// Sketch levels to record at, with the goal for each (the compressors'
    /// goal is on their geometric mean).
    sketches: Vec<(&'static str, f64)>,
    compressor: bool,
}

const GOAL_COMPRESS_SYNC: f64 = 1.05;
const GOAL_COMPRESS_SYS: f64 = 1.15;
const GOAL_LOCKS_SYNC: f64 = 3.0;
const GOAL_READS_SYS: f64 = 15.0;

struct Row {
    label: String,
    sketch: &'static str,
    native: f64,
    recorded: f64,
    /// Median over rounds of recorded / native in the same round: robust
    /// to the machine's load drifting during the benchmark.
    paired_ratio: f64,
    /// (max - min) / median of the native times.
    native_spread: f64,
    trace_bytes: u64,
    goal: f64,
    compressor: bool,
    /// Why this row has no measurement: the recorded (or native) run failed.
    failure: Option<String>,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.failure.is_some() {
            f64::NAN
        } else {
            self.paired_ratio
        }
    }
}

pub fn run(a: BenchArgs) -> Result<u8> {
    if a.what == "replay" {
        return run_replay(&a);
    }
    let rounds = a.rounds.unwrap_or(if a.quick { 2 } else { 5 });
    let size_mb = a.size_mb.unwrap_or(if a.quick { 2 } else { 100 });
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if size_mb == 0 {
        bail!("--size-mb must be at least 1");
    }
    if !(a.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let known = ["pigz", "pbzip2", "xz", "locks", "reads"];
    for o in &a.only {
        if !known.contains(&o.as_str()) {
            bail!(
                "--only: unknown workload {o:?} (known: {})",
                known.join(", ")
            );
        }
    }
    let wanted = |k: &str| a.only.is_empty() || a.only.iter().any(|o| o == k);
    let (lock_pairs, reads) = if a.quick {
        (1_000_000u64, 100_000u64)
    } else {
        (10_000_000, 1_000_000)
    };

    install_signal_handlers();
    let reprise = std::env::current_exe().context("cannot find the reprise executable")?;
    println!("{}", machine_description());

    // Compressors, installed if missing.
    let tools = [("pigz", "pigz"), ("pbzip2", "pbzip2"), ("xz", "xz-utils")];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(t, _)| wanted(t) && find_in_path(t).is_none())
        .map(|(_, p)| *p)
        .collect();
    if !missing.is_empty() {
        if a.no_install {
            bail!("missing {} (--no-install given)", missing.join(" "));
        }
        eprintln!(
            "reprise bench: {} not installed; installing with apt-get",
            missing.join(", ")
        );
        apt_install(&missing)?;
    }

    let cache = a.cache_dir.clone().unwrap_or_else(default_cache_dir);
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let needs_input = ["pigz", "pbzip2", "xz", "reads"].iter().any(|k| wanted(k));
    let input = if needs_input {
        Some(ensure_input(&cache, size_mb)?)
    } else {
        None
    };
    // reads.c reads a file of at least 64 MB in full mode (its reads do not
    // wrap around); the compressors' input serves unless it is smaller.
    let reads_input = match &input {
        Some(_) if wanted("reads") && !a.quick && size_mb < 64 => Some(ensure_input(&cache, 64)?),
        other => other.clone(),
    };

    let mut workloads = Vec::new();
    let compressors: [(&str, &[&str]); 3] = [
        ("pigz", &["-p", "2"]),
        ("pbzip2", &["-p2"]),
        ("xz", &["-T2"]),
    ];
    for (tool, flags) in compressors {
        if !wanted(tool) {
            continue;
        }
        let program = find_in_path(tool).ok_or_else(|| anyhow!("{tool} is not installed"))?;
        let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
        args.push("-c".into());
        args.push(input.clone().unwrap().into_os_string());
        workloads.push(Workload {
            key: tool,
            label: format!("{tool} {}", flags.join(" ")),
            program,
            args,
            sketches: vec![("sync", GOAL_COMPRESS_SYNC), ("sys", GOAL_COMPRESS_SYS)],
            compressor: true,
        });
    }
    if wanted("locks") {
        let exe = build_c(&cache, "locks", LOCKS_C, &["-O2", "-pthread"])?;
        workloads.push(Workload {
            key: "locks",
            label: format!("locks 4thr {}M", lock_pairs / 1_000_000),
            program: exe,
            args: vec![lock_pairs.to_string().into(), "4".into()],
            sketches: vec![("sync", GOAL_LOCKS_SYNC)],
            compressor: false,
        });
    }
    if wanted("reads") {
        let exe = build_c(&cache, "reads", READS_C, &["-O2"])?;
        let mut args: Vec<OsString> = vec![reads_input.clone().unwrap().into_os_string()];
        args.push(reads.to_string().into());
        args.push("64".into());
        workloads.push(Workload {
            key: "reads",
            label: format!("reads {}k x64B", reads / 1000),
            program: exe,
            args,
            sketches: vec![("sys", GOAL_READS_SYS)],
            compressor: false,
        });
    }

    let tmp = TempDir::new(&std::env::temp_dir(), "reprise-bench")?;
    eprintln!(
        "reprise bench: {} workloads, {rounds} rounds, compressor input {size_mb} MB; temporary files in {}",
        workloads.len(),
        tmp.path().display()
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for w in &workloads {
        rows.extend(bench_workload(&a, &reprise, tmp.path(), w, rounds)?);
    }
    drop(tmp);

    print_table(&rows, a.quick, rounds, size_mb, started.elapsed());
    if rows.iter().any(|r| r.failure.is_some()) {
        eprintln!("reprise bench: FAILED: some recorded runs failed or changed the program's output (see above)");
        return Ok(1);
    }
    let all_met = goals(&rows).iter().all(|(_, _, _, met)| *met);
    Ok(if a.check && !all_met { 1 } else { 0 })
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

/// Record the workload at `sketch` into a temporary trace; check its status,
/// the trace's completeness and that its output equals `reference`. The wall
/// time and the trace's size.
#[allow(clippy::too_many_arguments)]
fn recorded_run(
    reprise: &Path,
    tmp: &Path,
    w: &Workload,
    sketch: &str,
    out: &Path,
    err: &Path,
    timeout: Duration,
    reference: &Path,
) -> Result<(Duration, u64)> {
    let rec = TempDir::new(tmp, "rec")?;
    let trace = rec.path().join("trace");
    let mut c = Command::new(reprise);
    c.arg("record")
        .arg("--sketch")
        .arg(sketch)
        .arg("-o")
        .arg(&trace)
        .arg(&w.program)
        .args(&w.args);
    let (t, status) = run_timed(&mut c, out, err, timeout)?;
    if !status.success() {
        bail!("recorded run failed ({status}): {}", tail(err, 1000));
    }
    if trace.join("incomplete").exists() || !trace.join("header").exists() {
        bail!("recorded run left an incomplete trace: {}", tail(err, 1000));
    }
    if !files_equal(out, reference)? {
        bail!(
            "OUTPUT DIFFERS: the recorded run wrote {} bytes, not the native run's {} bytes (or different ones): recording changed the program's result",
            fs::metadata(out).map(|m| m.len()).unwrap_or(0),
            fs::metadata(reference).map(|m| m.len()).unwrap_or(0)
        );
    }
    Ok((t, dir_size(&trace)))
}

/// Warm-up native run (the reference output), then `rounds` rounds each of
/// one native run and one recorded run per sketch level, the order reversed
/// every other round. A failed recorded run fails its row (later rounds skip
/// that sketch level); a failed native run fails the workload's rows.
fn bench_workload(
    a: &BenchArgs,
    reprise: &Path,
    tmp: &Path,
    w: &Workload,
    rounds: u32,
) -> Result<Vec<Row>> {
    let reference = tmp.join(format!("{}.reference", w.key));
    let out = tmp.join(format!("{}.out", w.key));
    let err = tmp.join(format!("{}.err", w.key));
    let max_timeout = Duration::from_secs_f64(a.timeout);
    let n = w.sketches.len();
    let mut failure: Vec<Option<String>> = vec![None; n];
    let fatal =
        |e: &anyhow::Error| INTERRUPTED.load(Ordering::SeqCst) || e.to_string() == "interrupted";

    let rows = |native_times: &[f64],
                rec: &[Vec<f64>],
                sizes: &[Vec<f64>],
                failure: Vec<Option<String>>|
     -> Vec<Row> {
        let native = median(native_times);
        let spread = native_times.iter().copied().fold(f64::NAN, f64::max)
            - native_times.iter().copied().fold(f64::NAN, f64::min);
        w.sketches
            .iter()
            .zip(failure)
            .enumerate()
            .map(|(i, ((sketch, goal), failure))| Row {
                label: w.label.clone(),
                sketch,
                native,
                recorded: if failure.is_some() {
                    f64::NAN
                } else {
                    median(&rec[i])
                },
                paired_ratio: median(
                    &rec[i]
                        .iter()
                        .zip(native_times)
                        .map(|(r, n)| r / n)
                        .collect::<Vec<f64>>(),
                ),
                native_spread: spread / native,
                trace_bytes: median(&sizes[i]) as u64,
                goal: *goal,
                compressor: w.compressor,
                failure,
            })
            .collect()
    };

    let warm = match native_run(w, &reference, &err, max_timeout, None) {
        Ok(t) if fs::metadata(&reference).map(|m| m.len()).unwrap_or(0) > 0 => t,
        Ok(_) => {
            let msg = "the native run wrote no output".to_string();
            eprintln!("reprise bench: {}: FAILED: {msg}", w.label);
            return Ok(rows(
                &[],
                &vec![vec![]; n],
                &vec![vec![]; n],
                vec![Some(msg); n],
            ));
        }
        Err(e) if fatal(&e) => return Err(e),
        Err(e) => {
            let msg = one_line(&e);
            eprintln!("reprise bench: {}: FAILED: {msg}", w.label);
            return Ok(rows(
                &[],
                &vec![vec![]; n],
                &vec![vec![]; n],
                vec![Some(msg); n],
            ));
        }
    };
    // Recording is expected within a small factor; do not wait forever.
    let timeout = max_timeout.min(Duration::from_secs_f64(
        (warm.as_secs_f64() * 50.0).max(60.0),
    ));
    eprintln!(
        "reprise bench: {}: warm-up native {:.3} s",
        w.label,
        warm.as_secs_f64()
    );

    let mut native_times = Vec::new();
    let mut rec_times: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut sizes: Vec<Vec<f64>> = vec![Vec::new(); n];
    // Slot 0: native; slot i: recorded at w.sketches[i - 1].
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..=n).collect()
        } else {
            (0..=n).rev().collect()
        };
        let mut line = format!("reprise bench: {}: round {}/{rounds}:", w.label, round + 1);
        for slot in order {
            if slot == 0 {
                match native_run(w, &out, &err, timeout, Some(&reference)) {
                    Ok(t) => {
                        native_times.push(t.as_secs_f64());
                        line.push_str(&format!(" native {:.3}s", t.as_secs_f64()));
                    }
                    Err(e) if fatal(&e) => return Err(e),
                    Err(e) => {
                        let msg = one_line(&e);
                        eprintln!("reprise bench: {}: FAILED: {msg}", w.label);
                        return Ok(rows(&native_times, &rec_times, &sizes, vec![Some(msg); n]));
                    }
                }
            } else {
                let i = slot - 1;
                let sketch = w.sketches[i].0;
                if failure[i].is_some() {
                    continue;
                }
                match recorded_run(reprise, tmp, w, sketch, &out, &err, timeout, &reference) {
                    Ok((t, size)) => {
                        rec_times[i].push(t.as_secs_f64());
                        sizes[i].push(size as f64);
                        line.push_str(&format!(" {sketch} {:.3}s", t.as_secs_f64()));
                    }
                    Err(e) if fatal(&e) => return Err(e),
                    Err(e) => {
                        let msg = one_line(&e);
                        eprintln!("reprise bench: {} at {sketch}: FAILED: {msg}", w.label);
                        line.push_str(&format!(" {sketch} FAILED"));
                        failure[i] = Some(msg);
                    }
                }
            }
            let _ = fs::remove_file(&out);
        }
        eprintln!("{line}");
    }
    Ok(rows(&native_times, &rec_times, &sizes, failure))
}

/// The goals that decide: each microbenchmark's row, and the compressors'
/// geometric mean per sketch level: (what, ratio, goal, met). A failed row
/// makes its goal unmet (ratio NaN).
fn goals(rows: &[Row]) -> Vec<(String, f64, f64, bool)> {
    let mut g = Vec::new();
    for (sketch, goal) in [("sync", GOAL_COMPRESS_SYNC), ("sys", GOAL_COMPRESS_SYS)] {
        let ratios: Vec<f64> = rows
            .iter()
            .filter(|r| r.compressor && r.sketch == sketch)
            .map(Row::ratio)
            .collect();
        if !ratios.is_empty() {
            let gm = geomean(&ratios);
            g.push((
                format!("geomean of {} compressors, {sketch}", ratios.len()),
                gm,
                goal,
                gm <= goal,
            ));
        }
    }
    for r in rows.iter().filter(|r| !r.compressor) {
        g.push((
            format!("{}, {}", r.label, r.sketch),
            r.ratio(),
            r.goal,
            r.ratio() <= r.goal,
        ));
    }
    g
}

fn print_table(rows: &[Row], quick: bool, rounds: u32, size_mb: u64, elapsed: Duration) {
    println!();
    println!(
        "recording overhead: medians of {rounds} rounds, compressor input {size_mb} MB; ratio = median over rounds of recorded/native in the same round{}",
        if quick {
            " (--quick: inputs too small for the goals to mean much)"
        } else {
            ""
        }
    );
    println!(
        "{:<18} {:<6} {:>9} {:>10} {:>7} {:>10}  {:<10} {}",
        "workload", "sketch", "native s", "recorded s", "ratio", "trace", "goal", "met"
    );
    for r in rows {
        let goal = if r.compressor {
            format!("<={:.2} gm", r.goal)
        } else {
            format!("<={:.2}", r.goal)
        };
        let (rec, ratio, trace) = if r.failure.is_some() {
            ("-".to_string(), "FAILED".to_string(), "-".to_string())
        } else {
            (
                format!("{:.3}", r.recorded),
                format!("{:.3}", r.ratio()),
                reprise_schema::listing::human_size(r.trace_bytes),
            )
        };
        println!(
            "{:<18} {:<6} {:>9.3} {:>10} {:>7} {:>10}  {:<10} {}",
            r.label,
            r.sketch,
            r.native,
            rec,
            ratio,
            trace,
            goal,
            if r.ratio() <= r.goal { "yes" } else { "no" }
        );
    }
    println!();
    for (what, ratio, goal, met) in goals(rows) {
        let ratio = if ratio.is_nan() {
            "n/a".to_string()
        } else {
            format!("{ratio:.3}")
        };
        println!(
            "{what:<40} ratio {ratio:>7}  goal <={goal:.2}  met {}",
            if met { "yes" } else { "no" }
        );
    }
    println!(
        "(gm: the compressors' goal is on their geometric mean; total {:.0} s)",
        elapsed.as_secs_f64()
    );
    let noisy: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| r.native_spread > 0.2)
        .map(|r| format!("{} ({:.0}%)", r.label, r.native_spread * 100.0))
        .collect();
    if !noisy.is_empty() {
        println!(
            "NOISY: native times vary by more than 20% across rounds for {}; the machine is loaded ({}): ratios are unreliable",
            noisy.into_iter().collect::<Vec<_>>().join(", "),
            loadavg()
        );
    }
    let failures: Vec<&Row> = rows.iter().filter(|r| r.failure.is_some()).collect();
    if !failures.is_empty() {
        println!();
        println!("FAILURES:");
        for r in failures {
            println!(
                "  {} at {}: {}",
                r.label,
                r.sketch,
                r.failure.as_deref().unwrap_or("")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// `bench replay`

const GOAL_REPLAY_PIGZ: f64 = 3.0;

/// `reprise bench replay`: records one non-failing `pigz -p 2 -c` run of the
/// generated input at `sys`, then, for several rounds, runs pigz natively
/// and `reprise replay` of the trace (one attempt), alternating the order;
/// prints the medians and the median of the per-round ratios. Every
/// replay must reproduce the run and write the native output, byte for
/// byte. Goal: replay ≤ 3× native.
fn run_replay(a: &BenchArgs) -> Result<u8> {
    let rounds = a.rounds.unwrap_or(if a.quick { 2 } else { 5 });
    let size_mb = a.size_mb.unwrap_or(if a.quick { 2 } else { 20 });
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if size_mb == 0 {
        bail!("--size-mb must be at least 1");
    }
    if a.timeout.is_nan() || a.timeout <= 0.0 {
        bail!("--timeout must be a positive number of seconds");
    }
    if a.only.iter().any(|o| o != "pigz") {
        bail!("--only: `bench replay` has one workload: pigz");
    }
    install_signal_handlers();
    let reprise = std::env::current_exe().context("cannot find the reprise executable")?;
    println!("{}", machine_description());
    if find_in_path("pigz").is_none() {
        if a.no_install {
            bail!("missing pigz (--no-install given)");
        }
        eprintln!("reprise bench: pigz not installed; installing with apt-get");
        apt_install(&["pigz"])?;
    }
    let program = find_in_path("pigz").ok_or_else(|| anyhow!("pigz is not installed"))?;
    let cache = a.cache_dir.clone().unwrap_or_else(default_cache_dir);
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let input = ensure_input(&cache, size_mb)?;
    let w = Workload {
        key: "pigz",
        label: "pigz -p 2".to_string(),
        program,
        args: vec!["-p".into(), "2".into(), "-c".into(), input.into_os_string()],
        sketches: vec![("sys", GOAL_REPLAY_PIGZ)],
        compressor: false,
    };
    let tmp = TempDir::new(&std::env::temp_dir(), "reprise-bench")?;
    let timeout = Duration::from_secs_f64(a.timeout);
    let reference = tmp.path().join("pigz.reference");
    let out = tmp.path().join("pigz.out");
    let err = tmp.path().join("pigz.err");
    let started = Instant::now();
    let warm = native_run(&w, &reference, &err, timeout, None)?;
    eprintln!(
        "reprise bench: {}: warm-up native {:.3} s",
        w.label,
        warm.as_secs_f64()
    );
    // The trace stays for all rounds.
    let trace = tmp.path().join("trace");
    let mut c = Command::new(&reprise);
    c.env("REPRISE_TRACE_DIR", tmp.path())
        .arg("record")
        .arg("--sketch")
        .arg("sys")
        .arg("-o")
        .arg(&trace)
        .arg(&w.program)
        .args(&w.args);
    let (t, status) = run_timed(&mut c, &out, &err, timeout)?;
    if !status.success() || !files_equal(&out, &reference)? {
        bail!(
            "the recorded run failed or changed the output ({status}): {}",
            tail(&err, 1000)
        );
    }
    let trace_bytes = dir_size(&trace);
    eprintln!(
        "reprise bench: {}: recorded in {:.3} s ({})",
        w.label,
        t.as_secs_f64(),
        reprise_schema::listing::human_size(trace_bytes)
    );
    let replay_out = tmp.path().join("replay-output");
    let replayed = |round: u32| -> Result<Duration> {
        let _ = fs::remove_dir_all(&replay_out);
        let mut c = Command::new(&reprise);
        c.env("REPRISE_TRACE_DIR", tmp.path())
            .arg("replay")
            .arg(&trace)
            .args(["--jobs", "1", "--max-attempts", "1", "--no-schedule"])
            .arg("--seed")
            .arg(round.to_string())
            .arg("--output-dir")
            .arg(&replay_out);
        let (t, status) = run_timed(&mut c, &out, &err, timeout)?;
        if !status.success() {
            bail!(
                "the replay did not reproduce the run ({status}): {} {}",
                tail(&out, 1000),
                tail(&err, 1000)
            );
        }
        if !files_equal(&replay_out.join("attempt-1/stdout"), &reference)? {
            bail!("OUTPUT DIFFERS: the replay wrote another output than the native run");
        }
        Ok(t)
    };
    let mut native_times = Vec::new();
    let mut replay_times = Vec::new();
    for round in 0..rounds {
        let mut line = format!("reprise bench: {}: round {}/{rounds}:", w.label, round + 1);
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for slot in order {
            if slot == 0 {
                let t = native_run(&w, &out, &err, timeout, Some(&reference))?;
                native_times.push(t.as_secs_f64());
                line.push_str(&format!(" native {:.3}s", t.as_secs_f64()));
            } else {
                let t = replayed(round)?;
                replay_times.push(t.as_secs_f64());
                line.push_str(&format!(" replay {:.3}s", t.as_secs_f64()));
            }
            let _ = fs::remove_file(&out);
        }
        eprintln!("{line}");
    }
    drop(tmp);
    let native = median(&native_times);
    let replay = median(&replay_times);
    let ratio = median(
        &replay_times
            .iter()
            .zip(&native_times)
            .map(|(r, n)| r / n)
            .collect::<Vec<f64>>(),
    );
    let spread = (native_times.iter().copied().fold(f64::NAN, f64::max)
        - native_times.iter().copied().fold(f64::NAN, f64::min))
        / native;
    let met = ratio <= GOAL_REPLAY_PIGZ;
    println!();
    println!(
        "replay time: medians of {rounds} rounds, input {size_mb} MB; ratio = median over rounds of replay/native in the same round{}",
        if a.quick {
            " (--quick: input too small for the goal to mean much)"
        } else {
            ""
        }
    );
    println!(
        "{:<18} {:<6} {:>9} {:>10} {:>7} {:>10}  {:<10} met",
        "workload", "sketch", "native s", "replay s", "ratio", "trace", "goal"
    );
    println!(
        "{:<18} {:<6} {:>9.3} {:>10.3} {:>7.3} {:>10}  {:<10} {}",
        w.label,
        "sys",
        native,
        replay,
        ratio,
        reprise_schema::listing::human_size(trace_bytes),
        format!("<={GOAL_REPLAY_PIGZ:.2}"),
        if met { "yes" } else { "no" }
    );
    println!(
        "(every replay reproduced the run with the native output; total {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    if spread > 0.2 {
        println!(
            "NOISY: native times vary by {:.0}% across rounds; the machine is loaded ({}): the ratio is unreliable",
            spread * 100.0,
            loadavg()
        );
    }
    observation_cost(a, &reprise)?;
    Ok(if a.check && !met { 1 } else { 0 })
}

/// Programs of the corpus whose observed replay is timed, at their
/// default arguments (runs that pass).
const OBSERVED_PROGRAMS: [&str; 3] = [
    "mysql_3596_procinfo",
    "mozilla_js_propcache",
    "uros_377_freestacks",
];

/// The cost of observation (the feedback strategy's access breakpoints
/// and log): the same schedule replayed plain and observed, alternating,
/// for a recorded passing run of a few corpus programs.
fn observation_cost(a: &BenchArgs, reprise: &Path) -> Result<()> {
    use reprise_replayer::observe::ObservePlan;
    use reprise_replayer::{attempt, matches, AttemptOptions, Replay, Strategy};
    let rounds = a.rounds.unwrap_or(if a.quick { 2 } else { 5 });
    let m = reprise_testbugs::load_manifest()?;
    let tmp = TempDir::new(&std::env::temp_dir(), "reprise-bench-observe")?;
    let built = reprise_testbugs::build_manifest(
        &m,
        &reprise_testbugs::corpus_dir(),
        &tmp.path().join("bin"),
    )?;
    println!();
    println!("observation cost: the same schedule replayed plain and observed (access breakpoints, log), medians of {rounds} rounds");
    println!(
        "{:<22} {:>9} {:>9} {:>10} {:>11} {:>7}",
        "program", "accesses", "plain s", "observed s", "per access", "ratio"
    );
    for name in OBSERVED_PROGRAMS {
        let bug = m
            .bugs
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| anyhow!("{name} is not in the corpus"))?;
        let exe = &built
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| anyhow!("{name} was not built"))?
            .exe;
        // A passing run: observation costs the same whether it fails.
        let trace = tmp.path().join(name);
        let mut recorded = None;
        for _ in 0..20 {
            let _ = fs::remove_dir_all(&trace);
            let status = Command::new(reprise)
                .env("REPRISE_TRACE_DIR", tmp.path())
                .current_dir(reprise_testbugs::corpus_dir())
                .args(["record", "--sketch", "sys", "-o"])
                .arg(&trace)
                .arg(exe)
                .args(&bug.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if status.success() {
                recorded = Some(Replay::open(&trace, false)?);
                break;
            }
        }
        let Some(replay) = recorded else {
            println!("{name:<22} no passing run recorded in 20 tries");
            continue;
        };
        let expected = replay
            .recorded
            .clone()
            .ok_or_else(|| anyhow!("{name}: the trace has no outcome"))?;
        let run = |observe: bool| -> Result<(f64, u64)> {
            let mut o = AttemptOptions::new(1);
            o.strategy = Strategy::Feedback;
            o.timeout = Duration::from_secs(120);
            o.observe = observe.then(|| ObservePlan {
                log: true,
                ..ObservePlan::default()
            });
            let r = attempt(&replay, &o)?;
            if !r.outcome().is_some_and(|got| matches(&expected, got)) {
                bail!("{name}: the replay did not reproduce the run: {}", r.summary());
            }
            let n = r.observation.as_ref().map_or(0, |ob| ob.hits);
            Ok((r.duration.as_secs_f64(), n))
        };
        let (mut plain, mut observed, mut ratios, mut hits) = (vec![], vec![], vec![], 0);
        for round in 0..rounds {
            let (p, o) = if round % 2 == 0 {
                let p = run(false)?;
                (p, run(true)?)
            } else {
                let o = run(true)?;
                (run(false)?, o)
            };
            plain.push(p.0);
            observed.push(o.0);
            ratios.push(o.0 / p.0);
            hits = o.1;
        }
        let (p, o) = (median(&plain), median(&observed));
        println!(
            "{:<22} {:>9} {:>9.3} {:>10.3} {:>9.1}us {:>7.1}",
            name,
            hits,
            p,
            o,
            if hits > 0 { (o - p) * 1e6 / hits as f64 } else { 0.0 },
            median(&ratios)
        );
    }
    println!("(accesses: breakpoint hits in the executable's code; per access: (observed - plain) / accesses)");
    Ok(())
}
