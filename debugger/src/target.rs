//! The debugged run: the program replayed under one schedule, paused
//! between sketch events. Forward moves let the replay run on to a later
//! pause; backward moves start again from the nearest checkpoint (or from
//! the start), which gives the same run because the schedule is the same.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use reprise_abi::replay as rp;
use reprise_replayer::{
    key_name, AttemptOptions, AttemptResult, Checkpoint, Replay, ReplaySession, Schedule, Stop,
};
use reprise_schema::EventRecord;
use reprise_tracee::{
    Frame, MemoryMap, MemoryReader, ProcessMemory, Symbolizer, ThreadSnapshot, UnwoundFrame,
};

use crate::DebugError;

/// Where the debugged run is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// Paused before event `n` (0-based index into the trace's events):
    /// events `0..n` have happened.
    Before(usize),
    /// The program ended: how (one line, as `reprise replay` says it).
    Ended(String),
}

/// One thread of the paused run.
#[derive(Clone, Debug)]
pub struct ThreadInfo {
    /// The baton key (process and thread number of the recording).
    pub key: u32,
    /// `thread 2`, `process 1 thread 0`.
    pub name: String,
    pub tid: i32,
    /// `running`, `waiting at its next event`, `waiting for the baton`, ...
    pub state: &'static str,
    /// The index of its next sketch event, if it has one.
    pub next_event: Option<usize>,
    /// The innermost frame in the program's own code (not the agent's).
    pub frame: Option<Frame>,
}

/// The live run and how it was started.
pub struct Target {
    replay: &'static Replay,
    options: AttemptOptions,
    /// The schedule replayed: the saved reproducing one, else the base.
    pub schedule: Schedule,
    /// Whether `schedule` is the trace's saved reproducing schedule.
    pub reproducing: bool,
    session: Option<ReplaySession<'static>>,
    position: Position,
    ended: Option<AttemptResult>,
    symbolizer: Symbolizer,
    /// Replays started (the first one included), and copies resumed
    /// from checkpoints.
    pub replays: u64,
    pub resumes: u64,
    /// Checkpoints by id (ids are never reused).
    checkpoints: Vec<(usize, Checkpoint)>,
    /// The running session is a copy resumed from a checkpoint.
    from_checkpoint: bool,
    /// Resumed copies that failed (then replayed from the start instead).
    pub checkpoint_failures: u64,
    /// What the last move had to do differently, for the user.
    note: Option<String>,
    next_checkpoint_id: usize,
}

impl Target {
    /// Opens the trace at `dir` and starts its replay paused before event
    /// 0. Returns a note when the trace has no reproducing schedule.
    pub fn open(dir: &Path, force: bool) -> Result<(Target, Option<String>), DebugError> {
        Self::open_with_output(dir, force, None)
    }

    /// [`Target::open`], the program's stdout and stderr going to files
    /// `stdout` and `stderr` in `output` (None: nowhere).
    pub fn open_with_output(
        dir: &Path,
        force: bool,
        output: Option<PathBuf>,
    ) -> Result<(Target, Option<String>), DebugError> {
        // The debugger keeps one trace for the life of the process.
        let replay: &'static Replay = Box::leak(Box::new(Replay::open(dir, force)?));
        let saved = reprise_replayer::schedule::read_saved(dir)?.map(|(s, _)| s);
        let note = saved.is_none().then(|| {
            format!(
                "{} has no saved reproducing schedule (run `reprise replay` first): debugging the sketch's base schedule, which may not fail",
                dir.display()
            )
        });
        let reproducing = saved.is_some();
        let schedule =
            saved.unwrap_or_else(|| Schedule::base(reprise_replayer::Strategy::Feedback, 0));
        let mut base = AttemptOptions::new(schedule.seed);
        // The user thinks at the prompt: no timeout on the whole run.
        base.timeout = Duration::from_secs(365 * 24 * 3600);
        base.hang_timeout = Duration::from_secs(5);
        base.output_dir = output;
        let options = schedule.options(&base, false);
        let mut t = Target {
            replay,
            options,
            schedule,
            reproducing,
            session: None,
            position: Position::Before(0),
            ended: None,
            symbolizer: Symbolizer::new(),
            replays: 0,
            resumes: 0,
            checkpoints: Vec::new(),
            from_checkpoint: false,
            checkpoint_failures: 0,
            note: None,
            next_checkpoint_id: 1,
        };
        t.start(0)?;
        Ok((t, note))
    }

    /// Where the program's output goes (a directory with `stdout` and
    /// `stderr`), from the next start on.
    pub fn set_output_dir(&mut self, dir: Option<PathBuf>) {
        self.options.output_dir = dir;
    }

    pub fn replay(&self) -> &'static Replay {
        self.replay
    }

    pub fn events(&self) -> &'static [EventRecord] {
        self.replay.events()
    }

    pub fn event_count(&self) -> usize {
        self.replay.events().len()
    }

    pub fn position(&self) -> &Position {
        &self.position
    }

    /// How the run ended, once it has.
    pub fn outcome(&self) -> Option<&AttemptResult> {
        self.ended.as_ref()
    }

    /// `event 12: thread 1 pthread_mutex_lock(0x5555555580a0)`.
    pub fn describe_event(&self, i: usize) -> String {
        match self.replay.events().get(i) {
            Some(e) => format!(
                "event {i}: {} {}",
                reprise_replayer::thread_name(e.process, e.thread),
                event_what(e)
            ),
            None => format!("event {i}: past the end ({} events)", self.event_count()),
        }
    }

    /// The run again, paused before `event`: from the latest checkpoint
    /// at or before it, else a new replay from the start.
    fn start(&mut self, event: usize) -> Result<Position, DebugError> {
        let event = event.min(self.event_count());
        let from = self
            .checkpoints
            .iter()
            .filter(|(_, c)| c.event <= event)
            .max_by_key(|(_, c)| c.event)
            .map(|(id, _)| *id);
        match from {
            Some(id) => self.resume(id, event),
            None => self.replay_from_start(event),
        }
    }

    /// A new replay from event 0, paused before `event`.
    fn replay_from_start(&mut self, event: usize) -> Result<Position, DebugError> {
        if let Some(s) = self.session.take() {
            let _ = s.finish();
        }
        self.ended = None;
        self.from_checkpoint = false;
        let mut options = self.options.clone();
        options.pause_before = Some(event.min(self.event_count()));
        self.session = Some(ReplaySession::start(self.replay, &options)?);
        self.replays += 1;
        self.run_session()
    }

    /// A copy of checkpoint `id`, run on to the pause before `event`. The
    /// copy is checked by the sketch as any replay is: one that leaves
    /// it (a thread re-created in a state the agent could not copy) is
    /// dropped with its checkpoint, and the run is replayed from the start.
    fn resume(&mut self, id: usize, event: usize) -> Result<Position, DebugError> {
        if let Some(s) = self.session.take() {
            let _ = s.finish();
        }
        self.ended = None;
        let (_, c) = self
            .checkpoints
            .iter()
            .find(|(i, _)| *i == id)
            .ok_or(DebugError::NoCheckpoint(id))?;
        let start = c.event;
        let resumed = ReplaySession::resume(self.replay, &self.options, c);
        let position = match resumed {
            Ok(mut session) => {
                self.resumes += 1;
                session.pause_before((event < self.event_count()).then_some(event));
                self.session = Some(session);
                self.from_checkpoint = true;
                self.position = Position::Before(start);
                self.run_session()
            }
            Err(e) => Err(e.into()),
        };
        let left_sketch = matches!(&position, Ok(Position::Ended(_)))
            && self.ended.as_ref().is_some_and(|r| r.outcome().is_none());
        if position.is_err() || left_sketch {
            self.checkpoint_failures += 1;
            self.checkpoints.retain(|(i, _)| *i != id);
            let why = match &position {
                Err(e) => e.to_string(),
                Ok(_) => self.ended.as_ref().map(|r| r.summary()).unwrap_or_default(),
            };
            self.note = Some(format!(
                "checkpoint {id} could not be resumed ({why}); it is deleted and the run was replayed from the start instead"
            ));
            return self.replay_from_start(event);
        }
        position
    }

    /// What the last move had to do differently (a checkpoint that could
    /// not be resumed), once.
    pub fn take_note(&mut self) -> Option<String> {
        self.note.take()
    }

    /// Runs `f`; if it fails on a copy resumed from a checkpoint, the run
    /// is replayed from the start to the same event and `f` runs again.
    fn on_live<T>(
        &mut self,
        f: impl Fn(&mut Self) -> Result<T, DebugError>,
    ) -> Result<T, DebugError> {
        match f(self) {
            Err(_) if self.from_checkpoint => {
                if let Position::Before(n) = self.position {
                    self.checkpoint_failures += 1;
                    self.replay_from_start(n)?;
                }
                f(self)
            }
            other => other,
        }
    }

    /// Freezes a copy of the paused run; returns its id.
    pub fn checkpoint(&mut self) -> Result<usize, DebugError> {
        let session = self.session.as_mut().ok_or(DebugError::Ended)?;
        let c = session.checkpoint()?;
        let id = self.next_checkpoint_id;
        self.next_checkpoint_id += 1;
        self.checkpoints.push((id, c));
        Ok(id)
    }

    /// Checkpoints: (id, the event each is paused before, its process).
    pub fn checkpoints(&self) -> Vec<(usize, usize, i32)> {
        self.checkpoints
            .iter()
            .map(|(id, c)| (*id, c.event, c.pid()))
            .collect()
    }

    /// Goes back (or forward) to checkpoint `id`.
    pub fn restart_from(&mut self, id: usize) -> Result<Position, DebugError> {
        let event = self
            .checkpoints
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, c)| c.event)
            .ok_or(DebugError::NoCheckpoint(id))?;
        self.resume(id, event)
    }

    /// Drops checkpoint `id` (its frozen process ends).
    pub fn delete_checkpoint(&mut self, id: usize) -> Result<(), DebugError> {
        let before = self.checkpoints.len();
        self.checkpoints.retain(|(i, _)| *i != id);
        if self.checkpoints.len() == before {
            return Err(DebugError::NoCheckpoint(id));
        }
        Ok(())
    }

    /// Runs the session to its pause or its end.
    fn run_session(&mut self) -> Result<Position, DebugError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(self.position.clone());
        };
        self.position = match session.run()? {
            Stop::Paused { event } => Position::Before(event),
            Stop::Ended => {
                let session = self.session.take().ok_or(DebugError::NotRunning)?;
                let result = session.finish()?;
                let summary = result.summary();
                self.ended = Some(result);
                Position::Ended(summary)
            }
        };
        Ok(self.position.clone())
    }

    /// Goes to the pause before event `n` (the end for `n` past the last
    /// event): forward by running on, backward by replaying again.
    pub fn goto(&mut self, n: usize) -> Result<Position, DebugError> {
        let n = n.min(self.event_count());
        match self.position {
            Position::Before(cur) if cur <= n && self.session.is_some() => {
                if cur == n {
                    return Ok(self.position.clone());
                }
                let pause = (n < self.event_count()).then_some(n);
                if let Some(s) = self.session.as_mut() {
                    s.pause_before(pause);
                }
                self.run_session()
            }
            _ => self.start(n),
        }
    }

    /// To the end of the run (or its failure).
    pub fn cont(&mut self) -> Result<Position, DebugError> {
        self.goto(self.event_count())
    }

    /// Starts again from event 0 (a new replay, not a checkpoint).
    pub fn restart(&mut self) -> Result<Position, DebugError> {
        self.replay_from_start(0)
    }

    /// To the next sketch event (of `thread`, a baton key, if given).
    pub fn next(&mut self, thread: Option<u32>) -> Result<Position, DebugError> {
        let Position::Before(cur) = self.position else {
            return Err(DebugError::Ended);
        };
        let target = match thread {
            None => cur + 1,
            Some(k) => {
                // Past its next event: the pause before the event after it.
                let events = self.events();
                let mine = |e: &EventRecord| rp::key(e.process as u32, e.thread) == k;
                match events[cur..].iter().position(mine) {
                    Some(i) => cur + i + 1,
                    None => {
                        return Err(DebugError::NoMoreEvents(key_name(k)));
                    }
                }
            }
        };
        self.goto(target)
    }

    /// The paused program's first process.
    ///
    /// A live thread's id stands for the process when its first thread
    /// has exited: in a copy resumed from a checkpoint the thread that
    /// forked leads the process, and it may end before the others; the
    /// kernel refuses to read memory through an exited leader.
    pub fn pid(&self) -> Result<i32, DebugError> {
        let session = self.session.as_ref().ok_or(DebugError::Ended)?;
        let pid = session.pid();
        if !reprise_tracee::process::exited(pid) {
            return Ok(pid);
        }
        let ctl = session.control();
        Ok(ctl
            .header()
            .threads
            .iter()
            .filter(|t| t.state.load(Ordering::Acquire) == 1)
            .map(|t| t.tid.load(Ordering::Acquire))
            .find(|&tid| tid > 0 && !reprise_tracee::process::exited(tid))
            .unwrap_or(pid))
    }

    /// The index of the next event to happen (while running too).
    pub fn current_event(&self) -> Option<usize> {
        self.session.as_ref().map(|s| s.next_event())
    }

    /// Runs on to the pause before event `n` with `during` in charge: it
    /// gets the pid and a function that keeps the replay supplied with
    /// events and says whether the pause is reached, and which event is
    /// next (its first call lets the run go on from the current pause);
    /// `during` must return once
    /// the pause is reached, with the process no longer ptraced by it.
    pub fn run_to_with(
        &mut self,
        n: usize,
        during: &mut dyn FnMut(i32, &mut dyn FnMut() -> (bool, usize)) -> Result<(), DebugError>,
    ) -> Result<Position, DebugError> {
        let n = n.min(self.event_count());
        match self.position {
            Position::Before(cur) if cur <= n && self.session.is_some() => {}
            _ => {
                self.goto(n)?;
                return Ok(self.position.clone());
            }
        }
        let count = self.event_count();
        let pid = self.pid()?;
        let session = self.session.as_mut().ok_or(DebugError::Ended)?;
        // The run stays paused until `during` first asks (it attaches
        // first: nothing may happen before it watches).
        let mut released = false;
        let mut reached = || {
            if !released {
                released = true;
                session.pause_before((n < count).then_some(n));
                return (false, session.next_event());
            }
            (session.fill_and_check_pause(), session.next_event())
        };
        let result = during(pid, &mut reached);
        let position = self.run_session()?;
        result.map(|_| position)
    }

    /// The live process's memory.
    pub fn memory(&self) -> Result<ProcessMemory, DebugError> {
        Ok(ProcessMemory::new(self.pid()?))
    }

    /// The live process's mappings.
    pub fn maps(&self) -> Result<MemoryMap, DebugError> {
        Ok(MemoryMap::for_pid(self.pid()?)?)
    }

    /// Every thread of the schedule: its state, next event and place.
    pub fn threads(&mut self) -> Result<Vec<ThreadInfo>, DebugError> {
        self.on_live(|t| t.threads_now())
    }

    fn threads_now(&mut self) -> Result<Vec<ThreadInfo>, DebugError> {
        let Position::Before(cur) = self.position else {
            return Err(DebugError::Ended);
        };
        let pid = self.pid()?;
        let session = self.session.as_ref().ok_or(DebugError::Ended)?;
        let ctl = session.control();
        let header = ctl.header();
        let r = ctl.replay();
        let snapshots = reprise_tracee::snapshot_threads(pid)?;
        let maps = MemoryMap::for_pid(pid)?;
        let mem = ProcessMemory::new(pid);
        let mut out = Vec::new();
        for (i, t) in r.threads.iter().enumerate() {
            let key = t.key.load(Ordering::Acquire);
            let tid = header.threads[i].tid.load(Ordering::Acquire);
            if key == 0 || tid == 0 {
                continue;
            }
            let state = state_name(t.state.load(Ordering::Acquire));
            let next_event = self.replay.events()[cur..]
                .iter()
                .position(|e| rp::key(e.process as u32, e.thread) == key)
                .map(|j| cur + j);
            let frame = snapshots.iter().find(|s| s.tid == tid).and_then(|s| {
                let mut regs = s.regs;
                leave_syscall_page(&mut regs, &mem);
                let frames = self.symbolizer.backtrace(&regs, &mem, &maps);
                program_frames(&frames, &self.replay.header.program_path)
                    .into_iter()
                    .next()
            });
            out.push(ThreadInfo {
                key,
                name: key_name(key),
                tid,
                state,
                next_event,
                frame,
            });
        }
        Ok(out)
    }

    /// The kernel tid of the thread with baton key `key`.
    pub fn tid_of(&self, key: u32) -> Result<i32, DebugError> {
        let session = self.session.as_ref().ok_or(DebugError::Ended)?;
        let ctl = session.control();
        let r = ctl.replay();
        r.threads
            .iter()
            .zip(ctl.header().threads.iter())
            .find(|(t, _)| t.key.load(Ordering::Acquire) == key)
            .map(|(_, h)| h.tid.load(Ordering::Acquire))
            .filter(|&tid| tid > 0)
            .ok_or_else(|| DebugError::NoThread(key_name(key)))
    }

    /// The registers of thread `key` now.
    pub fn registers(&mut self, key: u32) -> Result<ThreadSnapshot, DebugError> {
        self.on_live(|t| t.registers_now(key))
    }

    fn registers_now(&self, key: u32) -> Result<ThreadSnapshot, DebugError> {
        let tid = self.tid_of(key)?;
        let pid = self.pid()?;
        reprise_tracee::snapshot_threads(pid)?
            .into_iter()
            .find(|s| s.tid == tid)
            .ok_or_else(|| DebugError::NoThread(key_name(key)))
    }

    /// The backtrace of thread `key`: its frames from the interposed call
    /// the agent stopped it in (`pthread_mutex_lock`) outward; the
    /// agent's own frames are left out. With each frame, the unwound
    /// registers (for its locals).
    pub fn backtrace(&mut self, key: u32) -> Result<Vec<(Frame, UnwoundFrame)>, DebugError> {
        let mut snap = self.registers(key)?;
        let pid = self.pid()?;
        let maps = MemoryMap::for_pid(pid)?;
        let mem = ProcessMemory::new(pid);
        leave_syscall_page(&mut snap.regs, &mem);
        let unwound = self.symbolizer.unwind(&snap.regs, &mem, &maps);
        let mut out = Vec::new();
        for u in unwound {
            for f in self
                .symbolizer
                .symbolize_frames(u.pc, u.is_return_address, &maps)
            {
                out.push((f, u.clone()));
            }
        }
        let agent_frames = out.iter().take_while(|(f, _)| is_agent(&f.module)).count();
        // Keep the outermost of the innermost agent frames: the
        // interposed call itself (`pthread_mutex_lock`); the agent's other
        // frames (its thread trampoline) are not the program's.
        let skip = agent_frames.saturating_sub(1);
        Ok(out
            .into_iter()
            .enumerate()
            .filter(|(i, (f, _))| *i >= skip && (*i == skip || !is_agent(&f.module)))
            .map(|(_, x)| x)
            .collect())
    }

    /// Ends the run (killing the program).
    pub fn kill(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.finish();
        }
        self.checkpoints.clear();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A thread stopped in the agent's syscall stubs (no unwind information
/// there) is moved to the stub's caller: the stubs are leaves, their
/// return address on top of the stack.
fn leave_syscall_page(regs: &mut [u64; 18], mem: &ProcessMemory) {
    const RIP: usize = 16;
    const RSP: usize = 7;
    let page = reprise_abi::SYSCALL_PAGE..reprise_abi::SYSCALL_PAGE + 4096;
    if page.contains(&regs[RIP]) {
        if let Ok(ret) = mem.read_u64(reprise_tracee::RemotePtr::new(regs[RSP])) {
            regs[RIP] = ret;
            regs[RSP] += 8;
        }
    }
}

/// The frames from the first one in `program`'s own code outward.
fn program_frames(frames: &[Frame], program: &Path) -> Vec<Frame> {
    let program = program
        .canonicalize()
        .unwrap_or_else(|_| program.to_path_buf());
    let first = frames
        .iter()
        .position(|f| f.module == program || f.module.canonicalize().is_ok_and(|m| m == program));
    match first {
        Some(i) => frames[i..].to_vec(),
        None => Vec::new(),
    }
}

fn is_agent(module: &Path) -> bool {
    module
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("libreprise_preload"))
}

/// What an event does: `pthread_mutex_lock(0x5555555580a0)`, `write()`.
pub fn event_what(e: &EventRecord) -> String {
    if e.kind == reprise_abi::EventKind::Syscall {
        format!("{}()", reprise_schema::listing::syscall_name(e.object))
    } else {
        format!("{}({:#x})", e.kind.name(), e.object)
    }
}

fn state_name(state: u32) -> &'static str {
    match state {
        rp::RUNNING => "running",
        rp::PENDING => "waiting for the baton",
        rp::WAITING => "waiting at its next event",
        rp::IN_EVENT => "in its event",
        rp::DETACHED => "outside the schedule (blocked or exited)",
        rp::HELD => "held for a flip",
        _ => "not started",
    }
}
