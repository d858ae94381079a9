//! The supervisor's side of the observation block (`reprise_abi::observe`):
//! the access points to break on, the flips of a schedule, the options,
//! and after the attempt, the accesses the agent logged.

use std::io;
use std::sync::atomic::Ordering;

use reprise_abi::observe::{self as ob, Access, AccessPoint, ObserveHeader, OPT_LOG, OPT_PREEMPT};
use reprise_abi::ABI_VERSION;
use reprise_recorder::shm::SharedFile;

use crate::stack_sharing::StackPlan;

/// One flip, as the schedule holds it: thread `held` (baton key) waits
/// before its `held_n`-th access at `held_pc` until thread `until` made
/// its `until_n`-th access at `until_pc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlipSpec {
    pub held: u32,
    pub held_pc: u64,
    pub held_n: u32,
    pub until: u32,
    pub until_pc: u64,
    pub until_n: u32,
    /// `held` runs on when `until` gives the baton away (its stretch
    /// finished), not right after the access.
    pub defer: bool,
    /// Nonzero: process index + 1; the flip completes when the parent has
    /// really forked that process (`until` is the child's access).
    pub until_fork: u64,
    /// Nonzero: the flip completes at another thread's first write to the
    /// 8 bytes at this address (the held read is delayed until then).
    pub until_addr: u64,
    /// With `until_addr`: each later read there by `held` at `held_pc`
    /// that would see the old value waits again for another thread's write.
    pub standing: bool,
    /// Nonzero ([`reprise_abi::observe::anchor_of`] the access's
    /// `last_event`): the held access is the `held_k`-th at `held_pc` in
    /// its thread's stretch after that event, whatever `held_n` says; a
    /// flip earlier in the run that changes how often a loop goes round
    /// leaves it the same access.
    pub held_anchor: u64,
    pub held_k: u32,
    /// The same for the access `held` waits for.
    pub until_anchor: u64,
    pub until_k: u32,
}

/// What happened to a flip in an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlipState {
    /// The held thread never reached its access.
    NotReached,
    /// Held, and the other access never came.
    Holding,
    Done,
    /// Nobody else could run while the thread was held.
    Infeasible,
    /// The other access came first anyway.
    Already,
    /// Deferred: the other access came, its thread has not yet given the
    /// baton away.
    Deferred,
}

impl FlipState {
    fn from_raw(v: u32) -> FlipState {
        match v {
            ob::FLIP_HOLDING => FlipState::Holding,
            ob::FLIP_DONE => FlipState::Done,
            ob::FLIP_INFEASIBLE => FlipState::Infeasible,
            ob::FLIP_ALREADY => FlipState::Already,
            ob::FLIP_DEFERRED => FlipState::Deferred,
            _ => FlipState::NotReached,
        }
    }
}

/// How an attempt uses the access breakpoints.
#[derive(Clone, Debug, Default)]
pub struct ObservePlan {
    /// Log every shared access (feedback's observation).
    pub log: bool,
    /// Preempt at an access with probability `preempt_rate / 65536`
    /// (`random` strategy); 0 = never.
    pub preempt_rate: u32,
    pub flips: Vec<FlipSpec>,
}

/// What the agent reported.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub accesses: Vec<Access>,
    /// Accesses beyond the log's capacity (not kept).
    pub dropped: u64,
    pub flips: Vec<FlipState>,
    pub hits: u64,
    pub preemptions: u64,
    /// The breakpoints were set (false: the executable did not match the
    /// table, or the program never started).
    pub installed: bool,
    /// The executable's load bias (runtime address - ELF address).
    pub bias: u64,
    /// Hardware watchpoints the agents could not set (perf_event_open
    /// refused): places on a thread's stack whose owner stays unseen.
    pub watch_failed: u64,
}

/// Accesses kept per attempt (56 bytes each; the file is sparse).
pub const LOG_CAPACITY: u64 = 1 << 20;

pub struct ObserveBlock {
    file: SharedFile,
    /// The table and stack places the attempt runs with.
    stack: StackPlan,
}

impl ObserveBlock {
    pub fn create(stack: StackPlan, plan: &ObservePlan) -> io::Result<ObserveBlock> {
        let points: &[AccessPoint] = &stack.points;
        let points_offset = std::mem::size_of::<ObserveHeader>().next_multiple_of(64);
        let log_offset = (points_offset + std::mem::size_of_val(points)).next_multiple_of(4096);
        let log_capacity = if plan.log { LOG_CAPACITY } else { 0 };
        let size = log_offset + log_capacity as usize * std::mem::size_of::<Access>();
        let file = SharedFile::create("observe", size)?;
        // SAFETY: the file is zero-filled and `size` bytes long; the plain
        // fields are written before any agent maps it; the points fit
        // between `points_offset` and `log_offset`.
        unsafe {
            let h = &mut *(file.base() as *mut ObserveHeader);
            h.magic = ob::MAGIC;
            h.version = ABI_VERSION;
            h.options = if plan.log { OPT_LOG } else { 0 }
                | if plan.preempt_rate > 0 {
                    OPT_PREEMPT
                } else {
                    0
                };
            h.preempt_rate = plan.preempt_rate;
            h.points_offset = points_offset as u64;
            h.npoints = points.len() as u64;
            h.log_offset = log_offset as u64;
            h.log_capacity = log_capacity;
            let n = plan.flips.len().min(ob::MAX_FLIPS);
            h.nflips = n as u32;
            for (f, s) in h.flips.iter_mut().zip(&plan.flips[..n]) {
                f.held = s.held;
                f.held_pc = s.held_pc;
                f.held_n = s.held_n;
                f.until = s.until;
                f.until_pc = s.until_pc;
                f.until_n = s.until_n;
                f.defer = s.defer as u32;
                f.until_fork = s.until_fork;
                f.until_addr = s.until_addr;
                f.standing = s.standing as u32;
                f.held_anchor = s.held_anchor;
                f.held_k = s.held_k;
                f.until_anchor = s.until_anchor;
                f.until_k = s.until_k;
            }
            let w = stack.watch.len().min(ob::MAX_WATCH);
            h.nwatch = w as u32;
            h.watch[..w].copy_from_slice(&stack.watch[..w]);
            let n = stack.shared.len().min(ob::MAX_SHARED_STACK);
            h.nshared_stack = n as u64;
            h.shared_stack[..n].copy_from_slice(&stack.shared[..n]);
            std::ptr::copy_nonoverlapping(
                points.as_ptr(),
                file.base().add(points_offset) as *mut AccessPoint,
                points.len(),
            );
        }
        Ok(ObserveBlock { file, stack })
    }

    /// The table and stack places the attempt runs with.
    pub fn stack_plan(&self) -> &StackPlan {
        &self.stack
    }

    pub fn path(&self) -> &std::path::Path {
        self.file.path()
    }

    fn header(&self) -> &ObserveHeader {
        // SAFETY: the mapping starts with a header for our lifetime.
        unsafe { &*(self.file.base() as *const ObserveHeader) }
    }

    /// Reads what the agents wrote (after the program has ended).
    pub fn observation(&self) -> Observation {
        let h = self.header();
        let len = h.log_len.load(Ordering::Acquire);
        let kept = len.min(h.log_capacity) as usize;
        // SAFETY: the log holds `log_capacity` entries at `log_offset`,
        // inside the mapping; the writers are gone.
        let accesses = unsafe {
            let base = self.file.base().add(h.log_offset as usize) as *const Access;
            std::slice::from_raw_parts(base, kept).to_vec()
        };
        Observation {
            accesses,
            dropped: len - kept as u64,
            flips: h.flips[..h.nflips as usize]
                .iter()
                .map(|f| FlipState::from_raw(f.state.load(Ordering::Acquire)))
                .collect(),
            hits: h.hits.load(Ordering::Acquire),
            preemptions: h.preemptions.load(Ordering::Acquire),
            installed: h.installed.load(Ordering::Acquire) != 0,
            bias: h.bias.load(Ordering::Acquire),
            watch_failed: h.watch_failed.load(Ordering::Acquire),
        }
    }
}
