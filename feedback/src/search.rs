//! Searching for a schedule that reproduces the recorded failure.
//!
//! Both strategies start with one plain attempt (no breakpoints): when the
//! sketch alone decides the failure, it reproduces at full speed.
//!
//! - `random`: attempts with seeded random choices at sketch events and,
//!   from the second attempt on, random preemptions at the program's
//!   memory accesses (a seed is one schedule); `jobs` at once.
//! - `feedback`: the failed attempt is run again, observed (its shared
//!   accesses logged); its races that the sketch left unordered are ranked,
//!   nearest the recorded failure (or the divergence) first, and the next
//!   attempt flips the first one not tried yet. An attempt that ran without
//!   failing and without diverging is explored further (depth first, its
//!   flips kept, its own races next); one that diverged, or whose flip
//!   could not happen, or that read the same values as an earlier one,
//!   gives way to the next race. When the failure reproduces, its flips are
//!   reduced to a minimal set (dropping one at a time while it still
//!   fails), and the races that remain are the root cause.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use reprise_abi::replay as rp;

use reprise_replayer::observe::{FlipSpec, FlipState, Observation};
use reprise_replayer::{
    AttemptEnd, AttemptOptions, AttemptResult, Replay, ReplayError, Schedule, Strategy,
};

use crate::planner::SchedulePlanner;
use crate::races::{self, Focus};
use crate::runner::Runner;

mod evidence;
mod node;
use node::Node;

/// Settings of a search.
#[derive(Clone, Debug)]
pub struct SearchOptions {
    pub strategy: Strategy,
    /// Attempts (schedules tried) before giving up; observation re-runs
    /// and minimisation runs are not attempts.
    pub max_attempts: u32,
    /// The first attempt's seed (random: the next ones take the next seeds).
    pub seed: u64,
    /// Random attempts run at once.
    pub jobs: usize,
    /// Timeouts and output capture of each run.
    pub base: AttemptOptions,
    /// A saved schedule to try first.
    pub saved: Option<Schedule>,
    /// Flips kept at once (feedback).
    pub max_depth: usize,
}

/// Why a run was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A schedule tried.
    Attempt,
    /// A failed attempt again, observed (feedback).
    Observe,
    /// Reducing the flips of the reproducing schedule.
    Minimize,
}

/// One run of the program.
#[derive(Clone, Debug)]
pub struct Run {
    /// The attempt number (1-based) for attempts; the attempt it belongs
    /// to for other runs.
    pub attempt: u32,
    pub role: Role,
    pub schedule: Schedule,
    pub result: AttemptResult,
    pub reproduced: bool,
    /// Feedback: what became of the last flip, and why the search moved on.
    pub note: String,
    /// The run logged its memory accesses (an observation; random
    /// preemptions alone set breakpoints but log nothing).
    pub observed: bool,
    /// Where its stdout and stderr are (`stdout`, `stderr`), with
    /// [`AttemptOptions::output_dir`].
    pub output_dir: Option<std::path::PathBuf>,
}

/// One race of the root cause: the flip, and the failing run's and the
/// passing run's observations to describe it (see [`crate::rootcause`]).
#[derive(Clone, Debug)]
pub struct RootCause {
    /// The flips the failure needs; empty when a base schedule alone
    /// fails and the other base passes: then the root cause is the reads
    /// that saw another write in the failing run than in the passing one.
    pub flips: Vec<FlipSpec>,
    /// The failing run with exactly these flips, observed.
    pub failing: Observation,
    /// For each flip, a run without it (that did not fail), observed; with
    /// no flips, the passing base's run — or none: no passing run was
    /// found, and the report gives what the failing thread last read from
    /// other threads.
    pub passing: Vec<Observation>,
    /// The thread that failed (its baton key); none for a deadlock or a
    /// hang.
    pub failing_thread: Option<u32>,
    /// The recorded failure is a hang (a lost wake-up: the race is a write
    /// that came after the read that needed it).
    pub hang: bool,
}

#[derive(Debug, Default)]
pub struct SearchResult {
    pub runs: Vec<Run>,
    /// Attempts run (schedules tried; observation and minimisation runs
    /// are not attempts). With `jobs` > 1 it can exceed the reproducing
    /// attempt's number: attempts already running when it reproduced
    /// still end, and count.
    pub attempts: u32,
    /// Index into `runs` of the first attempt that reproduced.
    pub found: Option<usize>,
    /// The schedule to save: the reproducing one, its flips minimised.
    pub schedule: Option<Schedule>,
    /// Attempts that turned out to be an execution already seen (same
    /// reads-from relation).
    pub duplicates: u32,
    /// Why the search stopped before its budget, when it knows (the
    /// solver: no untried schedule within what it observed).
    pub conclusion: Option<String>,
    /// The solver: each query's time, in milliseconds (empty for the
    /// other strategies).
    pub query_millis: Vec<u64>,
    pub root_cause: Option<RootCause>,
    pub elapsed: Duration,
}

impl SearchResult {
    pub fn reproducing(&self) -> Option<&Run> {
        self.found.map(|i| &self.runs[i])
    }

    /// Attempts numbered after the reproducing one (run in parallel with
    /// it); 0 if none reproduced.
    pub fn attempts_after(&self) -> u32 {
        self.reproducing().map_or(0, |r| {
            self.runs
                .iter()
                .filter(|x| x.role == Role::Attempt && x.attempt > r.attempt)
                .count() as u32
        })
    }

    pub fn divergences(&self) -> usize {
        self.runs
            .iter()
            .filter(|r| r.role == Role::Attempt && r.result.outcome().is_none())
            .count()
    }

    /// Runs that logged their accesses (feedback's observations), of
    /// every role.
    pub fn observed_runs(&self) -> usize {
        self.runs.iter().filter(|r| r.observed).count()
    }
}

/// The random strategy's preemption chance at an access for a seed, in
/// 1/65536: from 1/16 to 1/8192, so that attempts explore both dense and
/// sparse preemptions.
pub fn preempt_rate(seed: u64) -> u32 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^= z >> 29;
    65536 >> (4 + (z % 10) as u32)
}

/// Runs the random or feedback search (`opts.strategy`); `on_run` sees
/// every run as it ends.
pub fn search(
    replay: &Replay,
    opts: &SearchOptions,
    on_run: &(dyn Fn(&Run) + Sync),
) -> Result<SearchResult, ReplayError> {
    crate::planner::search_with(replay, opts, &mut FeedbackPlanner, on_run)
}

/// The random and feedback strategies (which one: `opts.strategy`).
pub struct FeedbackPlanner;

impl SchedulePlanner for FeedbackPlanner {
    fn plan(
        &mut self,
        runner: &mut Runner<'_>,
        result: &mut SearchResult,
    ) -> Result<(), ReplayError> {
        let mut s = Searcher {
            runner,
            confirmed: None,
        };
        // A saved schedule first: it reproduced before.
        if let Some(saved) = &s.runner.opts.saved {
            let log = !saved.flips.is_empty();
            let i = s
                .runner
                .run(saved.clone(), Role::Attempt, log, String::new())?;
            if s.runner.runs[i].reproduced {
                result.found = Some(i);
                result.schedule = Some(saved.clone());
                if log {
                    result.root_cause = s.explain_flips(saved)?;
                }
                return Ok(());
            }
        }
        match s.runner.opts.strategy {
            Strategy::Feedback => s.feedback(result)?,
            _ => s.random(result)?,
        }
        s.stabilize(result)
    }
}

/// The feedback search's state over one runner.
struct Searcher<'r, 'a> {
    runner: &'r mut Runner<'a>,
    /// A schedule already seen to reproduce every time it was confirmed.
    confirmed: Option<Schedule>,
}

/// Races tried per node at most, and the cost of one more flip in the
/// best-first order (in ranks).
pub(super) const BRANCH: usize = 8;
const DEPTH_COST: usize = 2;
const DEFER_COST: usize = 3;
/// One attempt in this many (from the sixth) is the late base (see
/// `Searcher::late_base`, the first time) or random preemptions: the
/// flips keep their places.
const RANDOM_EVERY: u32 = 3;

impl Searcher<'_, '_> {
    /// The rest of the budget as random schedules, `jobs` at once: seeds
    /// from `opts.seed` on; the first attempt plain, then preemptions at
    /// accesses (the `preempt` strategy preempts by time instead).
    fn random(&mut self, result: &mut SearchResult) -> Result<(), ReplayError> {
        let first = self.runner.attempts;
        let strategy = self.runner.opts.strategy;
        // Seeds already run (by a planner before this one) are not run
        // again and do not count: the next seeds take their place.
        let mut next = 0u32;
        while self.runner.budget() > 0 {
            let want = self.runner.budget();
            let schedules = (next..next + want)
                .map(|i| {
                    let seed = self.runner.opts.seed.wrapping_add(i as u64);
                    let rate = if first + i == 0 || strategy == Strategy::Preempt {
                        0
                    } else {
                        preempt_rate(seed)
                    };
                    (
                        Schedule::base(strategy, seed).with_preemptions(rate),
                        String::new(),
                    )
                })
                .collect();
            next += want;
            let ran = self.runner.run_all(schedules, Role::Attempt, false, true)?;
            if let Some(&i) = ran.iter().find(|&&i| self.runner.runs[i].reproduced) {
                result.found = Some(i);
                result.schedule = Some(self.runner.runs[i].schedule.clone());
                return Ok(());
            }
        }
        Ok(())
    }

    /// The thread that failed; none for a deadlock or a hang (every
    /// thread of the cycle, or all of them, failed).
    /// For an exit, the thread that called `exit` or returned from `main`
    /// (the recording's last `ProcessExit` event in the process), or every
    /// thread if the trace does not say.
    fn failing_thread(&self) -> Option<u32> {
        use reprise_schema::OutcomeKind as O;
        let p = self.runner.recorded.process;
        match self.runner.recorded.kind {
            O::Deadlock | O::Hang => None,
            O::Exited => self
                .runner
                .replay
                .events()
                .iter()
                .rev()
                .find(|e| e.kind == reprise_abi::EventKind::ProcessExit && e.process == p)
                .map(|e| rp::key(p as u32, e.thread)),
            _ => Some(rp::key(p as u32, self.runner.recorded.thread)),
        }
    }

    /// The two base schedules the search starts from, each tried plain
    /// first, then observed, their races the roots of the search: every
    /// thread runs on from an event to its next one as early as it can
    /// (`feedback`), or as late as it can (`feedback-lazy`: the owner of
    /// the next event first). A race the recorded run won one way in every
    /// iteration of a loop is a single base away rather than a flip per
    /// iteration.
    fn bases(&self) -> [Schedule; 2] {
        let seed = self.runner.opts.seed;
        [
            Schedule::base(Strategy::Feedback, seed),
            Schedule::base(Strategy::FeedbackLazy, seed),
        ]
    }

    /// A third base, tried plain in the search's first random slot (the
    /// sixth attempt): the other threads act as early as they can and the failing
    /// thread checks as late as it can, so that it sees all they did
    /// before its next recorded event (an object handed to two threads, a
    /// pool entry recycled under its user) — what takes a flip per access
    /// of the failing thread otherwise. None for a deadlock or a hang (no
    /// one thread fails) or a program of one thread.
    fn late_base(&self) -> Option<Schedule> {
        let threads: HashSet<u32> = self
            .runner
            .replay
            .events()
            .iter()
            .map(|e| rp::key(e.process as u32, e.thread))
            .collect();
        let failing = self.failing_thread().filter(|_| threads.len() > 1)?;
        Some(Schedule::base(Strategy::Feedback, self.runner.opts.seed).with_odd_thread(failing))
    }

    /// Runs the late base (see [`Searcher::late_base`]) if it is still
    /// due; true if it reproduced and was confirmed.
    fn try_late_base(
        &mut self,
        late: &mut Option<Schedule>,
        eager: &Schedule,
        result: &mut SearchResult,
    ) -> Result<bool, ReplayError> {
        let Some(base) = late.take() else {
            return Ok(false);
        };
        let plain = self
            .runner
            .run(base.clone(), Role::Attempt, false, String::new())?;
        Ok(self.runner.runs[plain].reproduced && self.confirm_base(&base, eager, plain, result)?)
    }

    /// Where the races that matter are: where the attempt diverged — or,
    /// before that, where a thread first took a lock from another call
    /// site than recorded (its path changed there) —, else the end of the
    /// recording (where the recorded run failed).
    fn focus(&self, r: &AttemptResult) -> Focus {
        match r.outcome() {
            None => match r.first_path_change {
                Some((pos, key)) if pos < r.stopped_at => Focus {
                    pos,
                    thread: Some(key),
                },
                _ => Focus {
                    pos: r.stopped_at,
                    thread: r.diverging_thread,
                },
            },
            Some(_) => Focus {
                pos: self.runner.replay.end_position(),
                thread: Some(rp::key(
                    self.runner.recorded.process as u32,
                    self.runner.recorded.thread,
                )),
            },
        }
    }

    fn feedback(&mut self, result: &mut SearchResult) -> Result<(), ReplayError> {
        let seed = self.runner.opts.seed;
        let bases = self.bases();
        for (b, base) in bases.iter().enumerate() {
            // --max-attempts holds for the bases too (a saved schedule
            // tried first may have used the budget).
            if self.runner.attempts >= self.runner.limit() {
                return Ok(());
            }
            let plain = self
                .runner
                .run(base.clone(), Role::Attempt, false, String::new())?;
            if self.runner.runs[plain].reproduced
                && self.confirm_base(base, &bases[1 - b], plain, result)?
            {
                return Ok(());
            }
        }
        if self.runner.attempts >= self.runner.limit() {
            return Ok(());
        }
        let mut roots = Vec::new();
        for (b, base) in bases.iter().enumerate() {
            let obs = self
                .runner
                .run(base.clone(), Role::Observe, true, String::new())?;
            if self.runner.runs[obs].reproduced
                && self.confirm_base(base, &bases[1 - b], obs, result)?
            {
                return Ok(());
            }
            if let Some(o) = self.runner.runs[obs].result.observation.clone() {
                roots.push((base.clone(), obs, o));
            }
        }
        let mut seen_rf: HashSet<u64> = HashSet::new();
        let mut nodes = Vec::new();
        for (base, obs, o) in &roots {
            seen_rf.insert(races::reads_from_digest(o));
            let r = &self.runner.runs[*obs].result;
            nodes.push(Node::new(
                self.runner.replay,
                base.clone(),
                Vec::new(),
                o,
                r,
                self.focus(r),
                None,
            ));
        }
        // Best first: a node's k-th race costs k, plus DEPTH_COST per flip
        // already made (deeper is more promising only while its own races
        // are the most suspect).
        // Each race two ways: swapped (the held thread resumes right after
        // the other access), then deferred (after the other thread's
        // stretch), DEFER_COST ranks later.
        type Frontier = BinaryHeap<Reverse<(usize, usize, usize, bool)>>;
        let mut frontier: Frontier = BinaryHeap::new();
        // A race the last flip exposed costs no more than that flip did.
        let push = |frontier: &mut Frontier, nodes: &[Node], n: usize| {
            let node = &nodes[n];
            for k in 0..node.races.len().min(BRANCH) {
                let depth = if k < node.exposed {
                    node.flips.len().saturating_sub(1)
                } else {
                    node.flips.len()
                };
                // A count-matched delay is computed, not guessed: next.
                let cost = if node.races[k].standing {
                    0
                } else {
                    depth * DEPTH_COST + k
                };
                frontier.push(Reverse((cost, n, k, false)));
                frontier.push(Reverse((cost + DEFER_COST, n, k, true)));
            }
        };
        for n in 0..nodes.len() {
            push(&mut frontier, &nodes, n);
        }
        let failing = self.failing_thread();
        let mut tried: HashSet<Vec<FlipSpec>> = HashSet::new();
        let passing_root = roots.first().map(|(_, _, o)| o.clone());
        let mut late = self.late_base();
        while self.runner.attempts < self.runner.limit() {
            // Every third attempt from the sixth on: the late base first,
            // then random preemptions at accesses on the base schedule,
            // observed — what the ranked races miss (several races at
            // once) they sometimes hit.
            if self.runner.attempts >= 4 && (self.runner.attempts + 1).is_multiple_of(RANDOM_EVERY)
            {
                if late.is_some() {
                    if self.try_late_base(&mut late, &bases[0], result)? {
                        return Ok(());
                    }
                    continue;
                }
                let s = seed.wrapping_add(self.runner.attempts as u64);
                let sc = Schedule::base(Strategy::Feedback, s).with_preemptions(preempt_rate(s));
                let i = self
                    .runner
                    .run(sc, Role::Attempt, true, "random preemptions".into())?;
                if self.runner.runs[i].reproduced {
                    result.found = Some(i);
                    result.schedule = Some(self.runner.runs[i].schedule.clone());
                    if let (Some(f), Some(p)) = (
                        self.runner.runs[i].result.observation.clone(),
                        passing_root.clone(),
                    ) {
                        result.root_cause = Some(RootCause {
                            flips: Vec::new(),
                            failing: f,
                            passing: vec![p],
                            failing_thread: self.failing_thread(),
                            hang: self.runner.recorded.kind == reprise_schema::OutcomeKind::Hang,
                        });
                    }
                    return Ok(());
                }
                continue;
            }
            let Some(Reverse((cost, n, k, defer))) = frontier.pop() else {
                break;
            };
            let race = nodes[n].races[k];
            let mut flips = nodes[n].flips.clone();
            flips.extend(race.flips(defer));
            if !tried.insert(flips.clone()) {
                continue;
            }
            let parent_stop = nodes[n].stopped_at;
            let base = nodes[n].base.clone();
            let i = self.runner.run(
                base.clone().with_flips(flips.clone()),
                Role::Attempt,
                true,
                String::new(),
            )?;
            if self.runner.runs[i].reproduced {
                result.found = Some(i);
                self.minimize(result, &base, flips)?;
                return Ok(());
            }
            let r = &self.runner.runs[i].result;
            let state = r
                .observation
                .as_ref()
                .and_then(|o| o.flips.last().copied())
                .unwrap_or(FlipState::NotReached);
            let note = match (&r.end, state) {
                (_, FlipState::Infeasible) => "the flip could not happen under the sketch",
                (_, FlipState::NotReached) => "the flip's first access did not come",
                (_, FlipState::Already) => "the flip's second access came first anyway",
                (_, FlipState::Holding) => "the flip's second access did not come",
                (_, FlipState::Deferred) => "the flip's second thread did not give the baton back",
                (AttemptEnd::Outcome(_), FlipState::Done) => "flipped; did not fail",
                (_, FlipState::Done) => "flipped; left the sketch",
            };
            let mut note = note.to_string();
            // The failing thread was held and its flip changed how the
            // run ended, yet nothing failed: it may have run on too soon
            // after the other thread's access, ahead of what that thread
            // does next (a double free whose first free must be the
            // other thread's). The deferred form of the same flip, which
            // lets the other thread finish its stretch first, is next.
            // So for a split read-modify-write (`spans::stale_updates`):
            // where its thread resumed in the recording, relative to what
            // the other thread did next, is unknown, and both forms leave
            // the same end when the order of the next writes was wrong.
            let resumed_too_soon = (!race.is_move()
                && Some(race.first.access.key) == failing
                && r.summary() != nodes[n].end)
                || (race.span && race.is_move());
            if !defer && state == FlipState::Done && resumed_too_soon {
                frontier.push(Reverse((cost, n, k, true)));
            }
            // Explored further: an attempt whose flip happened and that
            // got at least as far along the sketch (a divergence there is
            // the failure failing to happen, the nearest miss).
            let progressed =
                state == FlipState::Done && (r.outcome().is_some() || r.stopped_at >= parent_stop);
            // The flip happened and the failure did not: the read may
            // need another of the writer's values. (An alternate's own
            // flip, pushed past the end of `alternates`, has none.)
            let alternates = match (state, defer) {
                (FlipState::Done, false) => nodes[n].alternates.get_mut(k).map(std::mem::take),
                _ => None,
            };
            // At the flip's own rank: the run that got as far without
            // failing says the race is the right one. (A rank apart each
            // was measured: the same programs, later.)
            for alt in alternates.unwrap_or_default() {
                nodes[n].races.push(alt);
                let at = nodes[n].races.len() - 1;
                frontier.push(Reverse((cost, n, at, false)));
            }
            // A run that left the sketch early because a polling loop
            // skipped every iteration (its flip held the writer) is short
            // of the recorded run, yet it is the one run whose stretch
            // counts the loop's reads: its count-matched delay is next.
            let skipped = !progressed
                && r.observation.as_ref().is_some_and(|o| {
                    races::count_delay(self.runner.replay, o, self.focus(r)).is_some()
                });
            if let (true, Some(obs)) = (progressed || skipped, r.observation.clone()) {
                if !seen_rf.insert(races::reads_from_digest(&obs)) {
                    result.duplicates += 1;
                    note.push_str("; the same execution as an earlier attempt");
                } else if flips.len() < self.runner.opts.max_depth {
                    let r = &self.runner.runs[i].result;
                    let focus = self.focus(r);
                    let child = Node::new(
                        self.runner.replay,
                        base,
                        flips,
                        &obs,
                        r,
                        focus,
                        Some(&nodes[n]),
                    );
                    nodes.push(child);
                    push(&mut frontier, &nodes, nodes.len() - 1);
                }
            }
            // A run made before (replanning after the solver) keeps its note.
            if self.runner.runs[i].note.is_empty() {
                self.runner.runs[i].note = note;
            }
        }
        // Every race tried: the late base if it is still due, then the
        // rest of the budget goes to random preemptions on the same base
        // schedule.
        if self.runner.attempts < self.runner.limit()
            && self.try_late_base(&mut late, &bases[0], result)?
        {
            return Ok(());
        }
        if self.runner.attempts < self.runner.limit() {
            self.random(result)?;
        }
        Ok(())
    }

    /// Drops the flips of a reproducing schedule one at a time while it
    /// still reproduces; the rest is the root cause.
    fn minimize(
        &mut self,
        result: &mut SearchResult,
        base: &Schedule,
        mut flips: Vec<FlipSpec>,
    ) -> Result<(), ReplayError> {
        let mut k = 0;
        while flips.len() > 1 && k < flips.len() {
            let mut fewer = flips.clone();
            fewer.remove(k);
            let i = self.runner.run(
                base.clone().with_flips(fewer.clone()),
                Role::Minimize,
                true,
                String::new(),
            )?;
            if self.runner.runs[i].reproduced {
                self.runner.runs[i].note = "still fails without this flip: dropped".into();
                flips = fewer;
            } else {
                self.runner.runs[i].note = "does not fail without this flip: kept".into();
                k += 1;
            }
        }
        let sc = base.clone().with_flips(flips);
        result.root_cause = self.explain_flips(&sc)?;
        result.schedule = Some(sc);
        Ok(())
    }
}
