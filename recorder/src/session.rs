//! A recording session: launch, drain, watch, conclude.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reprise_abi::{EventKind, Level, Mode, OUTPUT_KEEP_BYTES};
use reprise_schema::{
    EventRecord, HeaderInfo, OutcomeInfo, OutputStream, SketchLevel, TraceSummary, TraceWriter,
};
use sha2::{Digest, Sha256};

use crate::code_runs::CodeRun;
use crate::control::{ControlBlock, DeadWriter, RawEvent};
use crate::expected::OutputCheck;
use crate::outcome;
use crate::running::{self, Ended};
use crate::{launch, RecordError};
use reprise_tracee::process::{become_subreaper, exited};

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The program as the user named it.
    pub program: OsString,
    pub args: Vec<OsString>,
    pub level: SketchLevel,
    /// `bb-N`: every N-th block of a thread is logged (1 for `bb`).
    pub block_period: u32,
    /// The trace directory to create (must not exist, or be empty).
    pub trace_dir: PathBuf,
    pub hang_timeout: Duration,
    /// Slots in the shared ring (a power of two); 64 bytes each.
    pub ring_slots: u64,
    /// The correct stdout: a run that exits normally but prints something
    /// else is a wrong-output failure.
    pub expect_output: Option<Vec<u8>>,
    /// Pause each thread at random points of its computation, so that a
    /// rare interleaving comes sooner (the agent's chaos.rs).
    pub chaos: bool,
}

impl RecordOptions {
    pub fn new(program: OsString, args: Vec<OsString>, trace_dir: PathBuf) -> RecordOptions {
        RecordOptions {
            program,
            args,
            level: SketchLevel::Sys,
            block_period: 0,
            trace_dir,
            hang_timeout: crate::DEFAULT_HANG_TIMEOUT,
            ring_slots: 1 << 20,
            expect_output: None,
            chaos: false,
        }
    }
}

/// The result of a recording.
#[derive(Debug)]
pub struct RecordResult {
    pub summary: TraceSummary,
    pub outcome: OutcomeInfo,
    /// What `reprise record` exits with: the program's status, or
    /// 128 + signal.
    pub exit_status: i32,
    /// Problems that did not stop the recording (disk full, ...).
    pub warnings: Vec<String>,
}

pub(crate) static INTERRUPTS: AtomicI32 = AtomicI32::new(0);
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
static HANDLERS_SET: AtomicBool = AtomicBool::new(false);

/// SIGINT/SIGTERM/SIGHUP sent to reprise alone (not by the terminal, which
/// signals the program too) are forwarded to the program; either way
/// reprise stays alive to complete the trace.
extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: reading si_code of the kernel-provided siginfo; kill(2) is
    // async-signal-safe.
    unsafe {
        let from_user = (*info).si_code == libc::SI_USER || (*info).si_code == libc::SI_QUEUE;
        let pid = FORWARD_TO.load(Ordering::Relaxed);
        if (from_user || sig != libc::SIGINT) && pid > 0 {
            libc::kill(pid, sig);
        }
    }
}

fn install_signal_handlers() {
    if HANDLERS_SET.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: installing a handler that only touches atomics and kill(2).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn uname() -> (String, String) {
    // SAFETY: uname fills a zeroed struct of NUL-terminated strings.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return (String::new(), String::new());
        }
        let s = |f: &[libc::c_char]| {
            std::ffi::CStr::from_ptr(f.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        (
            format!("{} {}", s(&u.machine), s(&u.nodename)),
            format!("{} {}", s(&u.sysname), s(&u.release)),
        )
    }
}

/// SHA-256 of the program file's bytes and its GNU build id (empty if none).
fn program_identity(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let digest = Sha256::digest(bytes).to_vec();
    (digest, build_id(bytes).unwrap_or_default())
}

/// The NT_GNU_BUILD_ID note of an ELF file, found through its section
/// headers (`.note.gnu.build-id`).
fn build_id(b: &[u8]) -> Option<Vec<u8>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?) as usize);
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?) as usize);
    let u64_at = |o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?) as usize);
    if !b.starts_with(b"\x7fELF") || b.get(4) != Some(&2) {
        return None;
    }
    let (shoff, shentsize, shnum) = (u64_at(40)?, u16_at(58)?, u16_at(60)?);
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        if u32_at(sh + 4)? != 7 {
            continue; // not SHT_NOTE
        }
        let (off, size) = (u64_at(sh + 24)?, u64_at(sh + 32)?);
        let mut p = off;
        while p + 12 <= off + size {
            let (namesz, descsz, ty) = (u32_at(p)?, u32_at(p + 4)?, u32_at(p + 8)?);
            let name = p + 12;
            let desc = name + namesz.div_ceil(4) * 4;
            if ty == 3 && b.get(name..name + namesz)? == b"GNU\0" {
                return Some(b.get(desc..desc + descsz)?.to_vec());
            }
            p = desc + descsz.div_ceil(4) * 4;
        }
    }
    None
}

/// Per output stream (stdout, stderr): what the trace keeps of it.
#[derive(Default)]
struct OutputTally {
    len: u64,
    digest: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x100_0000_01b3;

impl OutputTally {
    fn add(&mut self, bytes: &[u8]) {
        if self.len == 0 {
            self.digest = FNV_OFFSET;
        }
        for b in bytes {
            self.digest = (self.digest ^ *b as u64).wrapping_mul(FNV_PRIME);
        }
        self.len += bytes.len() as u64;
    }
}

/// Moves events from the ring into the trace, keeping output statistics.
pub(crate) struct Drain {
    writer: TraceWriter,
    /// False once the writer failed (disk full): events are counted, not kept.
    accepting: bool,
    output: [OutputTally; 2],
    /// stdout against the expected output, if the user gave one.
    check: Option<OutputCheck>,
    /// The fd of the last output event of each (process, thread), so that
    /// its `DataMore` continuations count as output too.
    last_output_fd: std::collections::HashMap<(u16, u32), usize>,
    events: u64,
    disk_error: Option<reprise_schema::TraceError>,
    dropped: u64,
    /// Since when the next event has been missing (reset at each look
    /// for an open run), and since when without a break.
    stuck_since: Option<Instant>,
    stalled_since: Option<Instant>,
    /// Sequence numbers reserved by threads that died before writing them
    /// (a process killed mid-log), skipped.
    lost_to_dead_writers: u64,
    /// Function and block entries gathered into one record.
    code: crate::code_runs::CodeRun,
    /// The trace's number of the next event.
    next_seq: u64,
    /// Threads the program started, and the operations that order threads
    /// (locks, condition variables, semaphores, barriers) logged: a
    /// program with threads and none of those synchronises some other way.
    threads_started: u64,
    thread_orderings: u64,
}

/// Events taken from the ring at most before the supervisor looks at the
/// process again.
pub(crate) const DRAIN_BATCH: usize = 65536;

/// After the program ended: how long a reserved slot may stay unwritten
/// before its thread counts as killed mid-write (the kernel ends a killed
/// process's threads within milliseconds).
const LEFTOVER_WAIT: Duration = Duration::from_millis(200);

/// How long the next slot may stay empty during the run before the
/// drainer looks for a dead thread that reserved it.
const DEAD_WRITER_WAIT: Duration = Duration::from_millis(50);

/// Whether thread `tid` still runs: not gone, not a zombie (/proc has
/// an entry for every thread id, not only for processes).
fn thread_exists(tid: i32) -> bool {
    tid > 0 && !exited(tid)
}

/// How long the drainer waits for a thread to close a run it has open at
/// the next sequence number before it takes the run itself.
const RUN_TAKEOVER: Duration = Duration::from_millis(2);

impl Drain {
    pub(crate) fn take(&mut self, ctl: &ControlBlock) -> usize {
        let mut n = 0;
        while let Some(ev) = ctl.next_event() {
            self.push(ev);
            n += 1;
            if n >= DRAIN_BATCH {
                break;
            }
        }
        ctl.publish();
        if n > 0 || !ctl.stalled() {
            self.stuck_since = None;
            self.stalled_since = None;
        } else {
            // A slot that stays empty this long may be a dead thread's: a
            // process killed mid-log would otherwise stop the drain, and
            // then, once the ring is full, the whole program.
            let stalled = *self.stalled_since.get_or_insert_with(Instant::now);
            if stalled.elapsed() >= DEAD_WRITER_WAIT {
                self.stalled_since = None;
                match ctl.pass_dead_writer(thread_exists) {
                    Some(DeadWriter::Run(ev)) => {
                        self.push(ev);
                        n += 1;
                    }
                    Some(DeadWriter::Skipped(k)) => self.lost_to_dead_writers += k,
                    None => {}
                }
            }
            // The next event may be the start of a run its thread keeps
            // open (it is blocked, or between two lock operations): take
            // it after a while so that the ring does not fill up behind it.
            let since = *self.stuck_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= RUN_TAKEOVER {
                if let Some(ev) = ctl.take_open_run() {
                    self.push(ev);
                    n += 1;
                }
                self.stuck_since = None;
            }
        }
        n
    }

    fn push(&mut self, mut ev: RawEvent) {
        let key = (ev.process, ev.thread);
        let stream = match ev.kind {
            EventKind::Syscall
                if (ev.object as i64 == libc::SYS_write
                    || ev.object as i64 == libc::SYS_writev)
                    && (1..=2).contains(&ev.arg0) =>
            {
                let s = ev.arg0 as usize - 1;
                self.last_output_fd.insert(key, s);
                Some(s)
            }
            EventKind::DataMore => self.last_output_fd.get(&key).copied(),
            _ => {
                // Most events are not output: no hashing for them.
                if !self.last_output_fd.is_empty() {
                    self.last_output_fd.remove(&key);
                }
                None
            }
        };
        if let Some(s) = stream {
            let t = &mut self.output[s];
            let before = t.len;
            t.add(&ev.data);
            if let (0, Some(c)) = (s, self.check.as_mut()) {
                c.feed(&ev.data);
            }
            if before >= OUTPUT_KEEP_BYTES {
                ev.data.clear();
            } else if before + ev.data.len() as u64 > OUTPUT_KEEP_BYTES {
                ev.data.truncate((OUTPUT_KEEP_BYTES - before) as usize);
            }
        }
        self.events += 1;
        match ev.kind {
            EventKind::ThreadStart => self.threads_started += 1,
            k if k.orders_threads() => self.thread_orderings += 1,
            _ => {}
        }
        if !self.accepting {
            self.dropped += 1;
            return;
        }
        self.events += ev.repeat.max(1) - 1;
        let repeat = ev.repeat;
        let alt_kind = ev.alt_kind;
        // The trace numbers events densely: a run of function or block
        // entries reserved more numbers in the ring than it used.
        let seq = self.next_seq;
        self.next_seq += repeat.max(1);
        let rec = EventRecord {
            seq,
            process: ev.process,
            thread: ev.thread,
            kind: ev.kind,
            object: ev.object,
            arg0: ev.arg0,
            arg1: ev.arg1,
            result: ev.result,
            extra: ev.extra,
            data: ev.data,
        };
        if CodeRun::holds(&rec) {
            let count = repeat.max(1);
            if !self.code.continues(&rec) || !self.code.has_room(count) {
                self.flush_code();
            }
            if rec.data.is_empty() {
                self.code.add(rec);
            } else {
                self.code.add_gathered(rec, count);
            }
            return;
        }
        self.flush_code();
        let written = if repeat > 1 {
            self.push_run(rec, alt_kind, repeat)
        } else {
            self.writer.push(rec)
        };
        self.note_written(written);
    }

    fn note_written(&mut self, written: Result<(), reprise_schema::TraceError>) {
        if let Err(e) = written {
            self.dropped += 1;
            if self.disk_error.is_none() {
                self.disk_error = Some(e);
            }
        }
    }

    /// Writes what the trace holds so far to disk (while the program runs,
    /// every so often), unless the writer already failed.
    pub(crate) fn flush(&mut self) {
        if self.accepting {
            self.flush_code();
            if let Err(e) = self.writer.flush() {
                self.disk_error.get_or_insert(e);
            }
        }
    }

    /// Once the writer failed (disk full), stops keeping events; the
    /// warning to give, the first time.
    pub(crate) fn stop_on_disk_error(&mut self) -> Option<String> {
        let e = self.disk_error.as_ref().filter(|_| self.accepting)?;
        let warning = format!("{e}; the trace keeps the events written before");
        self.accepting = false;
        Some(warning)
    }

    /// Writes the gathered function or block entries, if any.
    fn flush_code(&mut self) {
        if let Some((first, objects, sites)) = self.code.take() {
            let written = self.writer.push_code_run(&first, &objects, &sites);
            self.note_written(written);
        }
    }

    /// Writes a run in pieces small enough for a reader to expand. Pieces
    /// are of even length, so each starts with the run's first kind.
    fn push_run(
        &mut self,
        mut first: EventRecord,
        alt: EventKind,
        count: u64,
    ) -> Result<(), reprise_schema::TraceError> {
        const PIECE: u64 = 1 << 16;
        let mut left = count;
        while left > 0 {
            let n = left.min(PIECE);
            self.writer.push_run(&first, alt, n)?;
            first.seq += n;
            left -= n;
        }
        Ok(())
    }

    fn output_streams(&self) -> Vec<OutputStream> {
        self.output
            .iter()
            .enumerate()
            .map(|(i, t)| OutputStream {
                fd: i as i32 + 1,
                length: t.len,
                digest: if t.len == 0 { FNV_OFFSET } else { t.digest },
                kept_bytes: t.len.min(OUTPUT_KEEP_BYTES),
            })
            .collect()
    }
}

/// Records one run of `opts.program`.
pub fn record(opts: &RecordOptions) -> Result<RecordResult, RecordError> {
    let level = match opts.level {
        SketchLevel::Sync => Level::Sync,
        SketchLevel::Sys => Level::Sys,
        SketchLevel::Func => Level::Func,
        SketchLevel::Bb => Level::Bb,
    };
    let block_period = if level == Level::Bb {
        opts.block_period.max(1)
    } else {
        0
    };
    let program = launch::resolve_program(&opts.program)?;
    let agent = launch::find_agent()?;
    // Read once: its identity, and what func and bb need of it.
    let bytes = std::fs::read(&program)
        .map_err(|e| RecordError::Io(format!("cannot read {}: {e}", program.display())))?;
    let (digest, build_id) = program_identity(&bytes);
    crate::instrumented::check(&program, &bytes, opts.level, &agent)?;
    let func_plan = crate::instrumented::func_entry_plan(&program, &bytes, opts.level)?;
    let cwd = std::env::current_dir()
        .map_err(|e| RecordError::Io(format!("cannot read the current directory: {e}")))?;
    let mut argv = vec![opts.program.clone()];
    argv.extend(opts.args.iter().cloned());
    let base_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let (machine, kernel) = uname();
    let header = HeaderInfo {
        format_version: reprise_schema::FORMAT_VERSION,
        reprise_version: env!("CARGO_PKG_VERSION").to_string(),
        program_path: program.clone(),
        program_digest: digest,
        build_id,
        argv: argv.clone(),
        env: base_env
            .iter()
            .map(|(k, v)| {
                let mut s = k.clone();
                s.push("=");
                s.push(v);
                s
            })
            .collect(),
        cwd: cwd.clone(),
        level: opts.level,
        machine,
        kernel,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        start_time_unix_ns: now_ns(),
        recorded_events: reprise_schema::RecordedEvents::CURRENT,
        block_period,
        chaos: opts.chaos,
    };
    let ctl =
        ControlBlock::create(Mode::Record, level, opts.ring_slots).map_err(RecordError::Control)?;
    ctl.set_block_period(block_period);
    ctl.set_chaos(opts.chaos);
    let writer = TraceWriter::create(&opts.trace_dir, &header)?;
    let mut env = launch::agent_env(&base_env, &agent, ctl.path());
    if let Some(p) = &func_plan {
        env.push((
            reprise_abi::func_plan::ENV.into(),
            p.file.path().as_os_str().to_os_string(),
        ));
    }

    install_signal_handlers();
    // A daemon's process outlives the one reprise starts: it stays ours.
    become_subreaper();
    let started = Instant::now();
    let child = launch::spawn(&program, &argv, &env, &cwd, level >= Level::Sys)?;
    let pid = child.id() as i32;
    FORWARD_TO.store(pid, Ordering::Relaxed);

    let drain = Drain {
        writer,
        accepting: true,
        output: Default::default(),
        check: opts.expect_output.clone().map(OutputCheck::new),
        last_output_fd: Default::default(),
        events: 0,
        disk_error: None,
        dropped: 0,
        stuck_since: None,
        stalled_since: None,
        lost_to_dead_writers: 0,
        code: Default::default(),
        next_seq: 0,
        threads_started: 0,
        thread_orderings: 0,
    };
    let Ended {
        ctl,
        mut drain,
        status,
        hang,
        mut warnings,
    } = running::drain_until_exit(ctl, drain, pid, opts.hang_timeout);
    FORWARD_TO.store(0, Ordering::Relaxed);
    // Whatever of the program is left (after a hang) ends with it.
    kill_all(&ctl, pid, false);
    let lost = drain_leftovers(&ctl, &mut drain) + drain.lost_to_dead_writers;
    if lost > 0 {
        warnings.push(format!(
            "{lost} ring slot(s) reserved by threads killed before they wrote them were skipped: the events there are missing from the trace (the events after them are kept)"
        ));
    }
    if drain.threads_started > 0 && drain.thread_orderings == 0 {
        warnings.push(format!(
            "the program's {} thread(s) made no synchronisation event (no pthread, C11 or OpenMP lock, condition variable, semaphore or barrier): if they synchronise through futexes or atomics (C++20 atomic::wait, std::latch, std::future, Rust's std::sync), the sketch does not order that, and a replay leaves it to the search",
            drain.threads_started
        ));
    }
    let interrupted = INTERRUPTS.swap(0, Ordering::Relaxed) > 0;
    let mut outcome = outcome::conclude(&ctl, status, hang);
    if interrupted
        && outcome.kind == reprise_schema::OutcomeKind::Signaled
        && outcome.signal == libc::SIGINT
    {
        outcome.kind = reprise_schema::OutcomeKind::Interrupted;
    }
    outcome.output = drain.output_streams();
    if let Some(c) = &drain.check {
        c.judge(&mut outcome);
    }
    outcome.event_count = drain.events;
    outcome.duration_ns = started.elapsed().as_nanos() as u64;
    outcome.dropped_events = drain.dropped + ctl.header().dropped.load(Ordering::Relaxed);
    outcome.summary = outcome::summary_line(&outcome);
    let exit_status = outcome::exit_status(status);

    // After a disk-full error the writer still completes the trace with
    // the chunks already written.
    drain.flush_code();
    let summary = drain.writer.finish(&outcome)?;
    drop(child);
    Ok(RecordResult {
        summary,
        outcome,
        exit_status,
        warnings,
    })
}

/// Drains what is left once the program is gone; returns how many slots
/// were skipped as reserved by threads killed before they wrote them.
///
/// A slot that stays reserved but unwritten was taken by a thread killed
/// before it wrote its event (a thread the kernel preempted between taking
/// a number and writing it, while another thread crashed): that one event
/// is lost, the events after it — often the failing thread's last words —
/// are kept.
fn drain_leftovers(ctl: &ControlBlock, drain: &mut Drain) -> u64 {
    let deadline = Instant::now() + LEFTOVER_WAIT;
    let mut lost = 0u64;
    loop {
        let n = drain.take(ctl);
        if !ctl.stalled() {
            break;
        }
        if n > 0 {
            // A backlog (the drainer idled while the program ran): only
            // a slot that stays unwritten counts as a dead writer's.
            continue;
        }
        // Runs left open by threads that are gone.
        if let Some(ev) = ctl.take_open_run() {
            drain.push(ev);
            continue;
        }
        if Instant::now() > deadline {
            ctl.skip_slot();
            lost += 1;
            continue;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    lost
}

/// SIGKILLs the processes the agents registered; the program itself
/// (`pid`) too unless it was already reaped.
pub(crate) fn kill_all(ctl: &ControlBlock, pid: i32, including_main: bool) {
    for p in ctl.pids() {
        if p != pid || including_main {
            // SAFETY: kill(2); a process that is gone gives ESRCH.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}
