//! `reprise replay --strategy solver`: attempts chosen by the solver.
//!
//! The base schedule runs plain, then observed. From then on each round
//! asks z3 for schedules whose focus reads (the failing thread's last
//! reads of shared memory before where the recording failed, or where
//! the attempt diverged) read a class of values no attempt has read yet,
//! runs them observed (several at once with `jobs`), and adds what they
//! read to the classes tried. An attempt that got further along the
//! sketch than the one the queries are built on becomes their base: its
//! accesses, and its flips, are where the next queries start. When no
//! class is left the search says so: within the accesses observed, no
//! schedule the sketch allows makes the focus reads read anything new.

use reprise_abi::replay as rp;
use reprise_feedback::planner::{search_with, SchedulePlanner};
use reprise_feedback::races;
use reprise_feedback::runner::Runner;
use reprise_feedback::search::{
    FeedbackPlanner, Role, RootCause, Run, SearchOptions, SearchResult,
};
use reprise_replayer::observe::{FlipSpec, FlipState, Observation};
use reprise_replayer::order::SketchOrder;
use reprise_replayer::{Replay, ReplayError, Schedule, Strategy};
use reprise_schema::OutcomeKind;

use crate::encode::{solve, solve_for, Answer, Stats};
use crate::observed::{flip, fork_reads, query_accesses};
use crate::query::{self, Access, AccessId, Class, Limits, Query};
use crate::stages::{stages, Stage, DEPTHS};

/// One line on a query, for the attempt log and the progress output.
pub fn describe(stats: &Stats, answer: &Answer) -> String {
    let what = match answer {
        Answer::Order { flips, .. } => format!("{} flip(s)", flips.len()),
        Answer::Exhausted { classes } => format!("no untried class ({classes} covered)"),
        Answer::Unknown => "z3 gave up".to_string(),
    };
    format!(
        "solver: {} accesses, window {} ({} reads, {} writes, {} focus reads), {} choices, {} soft, {} ms -> {what}",
        stats.accesses,
        stats.window,
        stats.reads,
        stats.writes,
        stats.focus_reads,
        stats.choices,
        stats.soft,
        stats.millis
    )
}

/// Address-determining reads asked about, one query each (in the order
/// [`Query::address_reads`] gives).
const ADDRESS_READS: usize = 8;

/// A conclusion of the solver's, after which feedback's search spent
/// `attempts` more attempts without reproducing.
pub(crate) fn feedback_also_missed(said: &str, attempts: u32) -> String {
    format!(
        "{said}; feedback's search in the other {attempts} attempt(s) did not reproduce it either"
    )
}

/// How a search with no focus read in any query ends its conclusion.
const NOTHING: &str = "nothing to reason about";

/// Answers a stage gives on one base before the next stage is asked
/// (until an attempt gets further and becomes the base).
const STAGE_ANSWERS: usize = 3;

/// Reads of a shared object asked about (the focus thread's last ones).
const OBJECT_READS: usize = 4;

/// The base the queries are built on: an observed run and its flips.
struct Base {
    /// The run's accesses, as queries see them.
    accesses: Vec<Access>,
    flips: Vec<FlipSpec>,
    events: u64,
    focus_pos: u64,
    focus_thread: Option<u32>,
    /// When the run came from an address-determining read asked to read
    /// another thread's address: that object (the address), which its
    /// first query looks at.
    object: Option<u64>,
    /// Its reads a forked child made of its parent's memory (see
    /// [`fork_reads`]): what turns an answer's flips into `until_fork`.
    forked: Vec<(AccessId, u32)>,
}

/// A run's flips that acted in it: a flip whose held thread never got
/// to its access, or whose other access came first anyway, or that could
/// not happen, changed nothing in that run, so its accesses are the same
/// without it; carried on into the next attempts it could hold a thread
/// where the answer did not ask for it.
fn effective_flips(flips: &[FlipSpec], states: Option<&[FlipState]>) -> Vec<FlipSpec> {
    flips
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            !matches!(
                states.and_then(|s| s.get(*i)),
                Some(FlipState::NotReached | FlipState::Already | FlipState::Infeasible)
            )
        })
        .map(|(_, f)| *f)
        .collect()
}

/// The solver strategy: each attempt's schedule comes from a z3 query over
/// the accesses observed so far.
pub struct SolverPlanner;

struct Solver<'r, 'a> {
    runner: &'r mut Runner<'a>,
    order: SketchOrder,
    tried: Vec<Class>,
    queries: Vec<Stats>,
    /// Answers given at the current stage since the base last moved.
    stage_answers: usize,
}

/// Runs the solver's search; `on_run` sees every run as it ends.
pub fn search(
    replay: &Replay,
    opts: &SearchOptions,
    on_run: &(dyn Fn(&Run) + Sync),
) -> Result<SearchResult, ReplayError> {
    search_with(replay, opts, &mut SolverPlanner, on_run)
}

impl SchedulePlanner for SolverPlanner {
    fn plan(
        &mut self,
        runner: &mut Runner<'_>,
        result: &mut SearchResult,
    ) -> Result<(), ReplayError> {
        let recorded = runner.recorded.clone();
        let order = SketchOrder::new(runner.replay);
        let end = runner.replay.end_position();
        let mut s = Solver {
            runner,
            order,
            tried: Vec::new(),
            queries: Vec::new(),
            stage_answers: 0,
        };
        let is_hang = recorded.kind == OutcomeKind::Hang;
        let failing = match recorded.kind {
            OutcomeKind::Deadlock | OutcomeKind::Hang => None,
            _ => Some(rp::key(recorded.process as u32, recorded.thread)),
        };
        let searched = s.run_search(result, failing, end);
        // Appended: `auto` gives the solver several turns.
        result
            .query_millis
            .extend(s.queries.iter().map(|q| q.millis));
        searched?;
        // Nothing observed to reason about (a failure in a forked child
        // whose reads no schedule can change, a process that ends early):
        // the rest of the budget goes to feedback's search, which also
        // tries the other base order and random preemptions.
        let nothing = result
            .conclusion
            .as_ref()
            .is_some_and(|c| c.starts_with(NOTHING));
        if result.found.is_none() && nothing && s.runner.budget() > 0 {
            let said = result.conclusion.take().unwrap_or_default();
            let before = s.runner.attempts;
            FeedbackPlanner.plan(s.runner, result)?;
            if result.found.is_none() {
                result.conclusion = Some(feedback_also_missed(&said, s.runner.attempts - before));
            }
            return Ok(());
        }
        // Root cause: the reproducing schedule's flips, fewest first; for
        // each flip kept, the run without it (which did not fail).
        let Some(i) = result.found else {
            return Ok(());
        };
        let (best, passing) = s.minimize(i)?;
        let runs = &s.runner.runs;
        result.schedule = Some(runs[best].schedule.clone());
        if let Some(f) = &runs[best].result.observation {
            let flips = runs[best].schedule.flips.clone();
            // Without flips: the base run is the one that passed.
            let passing = if flips.is_empty() {
                runs.iter()
                    .find(|r| r.observed && !r.reproduced)
                    .and_then(|r| r.result.observation.clone())
                    .into_iter()
                    .collect()
            } else {
                passing
            };
            result.root_cause = Some(RootCause {
                flips,
                failing: f.clone(),
                passing,
                failing_thread: failing,
                hang: is_hang,
            });
        }
        Ok(())
    }
}

impl Solver<'_, '_> {
    /// Runs `schedules` (observed), in parallel up to `jobs`.
    fn run_all(&mut self, schedules: Vec<(Schedule, String)>) -> Result<Vec<usize>, ReplayError> {
        self.runner.run_all(schedules, Role::Attempt, true, true)
    }

    /// True if run `i` reproduced: then it is the result.
    fn found(&self, result: &mut SearchResult, i: usize) -> bool {
        if self.runner.runs[i].reproduced {
            result.found = Some(i);
            result.schedule = Some(self.runner.runs[i].schedule.clone());
        }
        self.runner.runs[i].reproduced
    }

    /// Run `i` left the sketch because a polling loop skipped every
    /// iteration (see `reprise_feedback::counts`): its schedule with the
    /// count-matched delay, which no query expresses (it asks what reads
    /// may see, not how many of a stretch's reads pass), if not run yet.
    fn count_matched(&self, i: usize) -> Option<(Schedule, String)> {
        let run = &self.runner.runs[i];
        let r = &run.result;
        if r.outcome().is_some() {
            return None;
        }
        let focus = races::Focus {
            pos: r.stopped_at,
            thread: r.diverging_thread,
        };
        let occ = races::occurrences(r.observation.as_ref()?);
        let delay = reprise_feedback::counts::count_delay(&occ, focus, &self.order)?;
        let mut flips = run.schedule.flips.clone();
        flips.extend(delay.flips(false));
        let sc = run.schedule.clone().with_flips(flips);
        let note = "the count-matched delay of a loop that skipped its iterations";
        (!self.runner.runs.iter().any(|x| x.schedule == sc)).then(|| (sc, note.to_string()))
    }

    /// Runs the count-matched delays of runs `ran` (see
    /// [`Self::count_matched`]); true if one reproduced.
    fn run_count_matched(
        &mut self,
        ran: &[usize],
        result: &mut SearchResult,
    ) -> Result<bool, ReplayError> {
        let room = self.runner.limit().saturating_sub(self.runner.attempts) as usize;
        let delays: Vec<(Schedule, String)> = ran
            .iter()
            .filter_map(|&i| self.count_matched(i))
            .take(room)
            .collect();
        if delays.is_empty() {
            return Ok(false);
        }
        Ok(self
            .run_all(delays)?
            .into_iter()
            .any(|i| self.found(result, i)))
    }

    /// What run `i` read joins the classes tried; it is returned as a
    /// possible base for the next queries (None: it observed nothing).
    fn learn(&mut self, i: usize, failing: Option<u32>, end: u64) -> Option<Base> {
        let b = self.base_of(i, failing, end)?;
        self.tried.push(query::class_of(&b.accesses));
        Some(b)
    }

    fn base_of(&self, i: usize, failing: Option<u32>, end: u64) -> Option<Base> {
        let r = &self.runner.runs[i].result;
        let accesses = query_accesses(&self.order, r.observation.as_ref()?);
        let (focus_pos, focus_thread) = match r.outcome() {
            // Diverged: what matters is where it left the sketch (stuck,
            // with no thread named: the failing thread's reads there).
            None => (r.stopped_at, r.diverging_thread.or(failing)),
            Some(_) => (end, failing),
        };
        Some(Base {
            forked: fork_reads(&self.order, &accesses),
            accesses,
            flips: effective_flips(
                &self.runner.runs[i].schedule.flips,
                r.observation.as_ref().map(|o| o.flips.as_slice()),
            ),
            events: r.events_replayed,
            focus_pos,
            focus_thread,
            object: None,
        })
    }

    fn run_search(
        &mut self,
        result: &mut SearchResult,
        failing: Option<u32>,
        end: u64,
    ) -> Result<(), ReplayError> {
        let seed = self.runner.opts.seed;
        let mut base: Option<Base> = None;
        // Runs another planner made before on this runner (the hybrid
        // strategy's feedback attempts): what they read is tried, and the
        // furthest observed run on the early base is where queries start.
        for i in 0..self.runner.runs.len() {
            let Some(b) = self.learn(i, failing, end) else {
                continue;
            };
            // Its flips carry over only onto the same base order.
            let sc = &self.runner.runs[i].schedule;
            let on_base = sc.strategy == Strategy::Feedback && sc.preempt_rate == 0;
            if on_base && base.as_ref().is_none_or(|x| b.events > x.events) {
                base = Some(b);
            }
        }
        // A saved schedule first, then the base, observed (unless an
        // earlier planner observed it already).
        let mut first = Vec::new();
        if self.runner.runs.is_empty() {
            if let Some(saved) = &self.runner.opts.saved {
                first.push((saved.clone(), "the saved schedule".to_string()));
            }
        }
        if base.is_none() {
            first.push((Schedule::base(Strategy::Feedback, seed), String::new()));
        }
        first.truncate(self.runner.budget().max(1) as usize);
        for (sc, note) in first {
            let i = self.run_all(vec![(sc, note)])?[0];
            if self.found(result, i) || self.run_count_matched(&[i], result)? {
                return Ok(());
            }
            if let Some(b) = self.learn(i, failing, end) {
                if base.as_ref().is_none_or(|x| b.events > x.events) {
                    base = Some(b);
                }
            }
        }
        let mut depth = 0;
        let Some(mut base) = base else {
            result.conclusion = Some(format!("{NOTHING}: the base run logged no access"));
            return Ok(());
        };
        // Bases left for a run that got as far (with their stage): a run
        // that got as far can have observed less (a read that took another
        // branch), so before concluding, the queries go back to them.
        let mut earlier: Vec<(Base, usize, usize)> = Vec::new();
        while self.runner.attempts < self.runner.limit() {
            let want = (self.runner.limit() - self.runner.attempts)
                .min(self.runner.opts.jobs.max(1) as u32);
            let mut batch = Vec::new();
            let mut objects = Vec::new();
            for _ in 0..want {
                let (answer, stats, object, stage) = self.ask(&base, &mut depth);
                if matches!(answer, Answer::Order { .. }) {
                    objects.push(object);
                }
                let line = format!("{}; asked about {stage}", describe(&stats, &answer));
                match answer {
                    Answer::Order { flips, class } => {
                        // Asked for: not asked again, whatever the attempt reads.
                        self.tried.push(class);
                        let mut all = compatible(&base, &flips);
                        all.extend(flips.iter().filter_map(|&(h, u)| flip(h, u, &base.forked)));
                        all.truncate(reprise_abi::observe::MAX_FLIPS);
                        batch.push((
                            Schedule::base(Strategy::Feedback, seed).with_flips(all),
                            line,
                        ));
                    }
                    Answer::Exhausted { .. }
                        if batch.is_empty() && self.queries.iter().all(|q| q.focus_reads == 0) =>
                    {
                        // Nothing was asked: no proof of anything.
                        result.conclusion = Some(format!(
                            "{NOTHING}: no attempt observed a shared read by {} before where the recording failed ({} accesses observed in all); the solver sees only what observation sees",
                            failing.map_or("any thread".to_string(), reprise_replayer::key_name),
                            base.accesses.len()
                        ));
                        return Ok(());
                    }
                    Answer::Exhausted { classes } => {
                        if batch.is_empty() {
                            if let Some((b, d, answers)) = earlier.pop() {
                                base = b;
                                depth = d;
                                self.stage_answers = answers;
                                break;
                            }
                            result.conclusion = Some(format!(
                                "exhausted: no untried schedule: within the {} observed accesses around {} focus read{}, no order the sketch allows makes them read anything not read before ({classes} reads-from classes covered, {} queries); this is a proof within what was observed, not beyond",
                                stats.window,
                                stats.focus_reads,
                                if stats.focus_reads == 1 { "" } else { "s" },
                                self.queries.len()
                            ));
                            return Ok(());
                        }
                        break;
                    }
                    Answer::Unknown => {
                        if batch.is_empty() {
                            result.conclusion = Some(format!("z3 gave up on a query ({line})"));
                            return Ok(());
                        }
                        break;
                    }
                }
            }
            let mut moved = false;
            let ran = self.run_all(batch)?;
            if ran.iter().any(|&i| self.found(result, i)) || self.run_count_matched(&ran, result)? {
                return Ok(());
            }
            for (i, object) in ran.into_iter().zip(objects) {
                if let Some(mut b) = self.learn(i, failing, end) {
                    b.object = object;
                    // As far along the sketch or further: its accesses
                    // (objects its flips moved, new reads) and its flips
                    // are where the next queries start, near its end. Of
                    // a batch's runs that got as far, the first asked.
                    let further = b.events > base.events;
                    // As far, it replaces the base only if it observed as
                    // much: a run whose read took another branch (a count
                    // read before a walk) saw fewer reads to ask about.
                    let as_far = b.events == base.events && b.accesses.len() >= base.accesses.len();
                    if further || (as_far && !moved) {
                        moved = true;
                        // The stages start again when the run got further,
                        // or when it made two threads share an object (the
                        // first stage asks about it); a run that got as
                        // far is the base, but the stage goes on.
                        let (d, answers) = (depth, self.stage_answers);
                        if further || b.object.is_some() {
                            depth = 0;
                            self.stage_answers = 0;
                        }
                        let left = std::mem::replace(&mut base, b);
                        if !further {
                            earlier.push((left, d, answers));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops the reproducing schedule's flips one at a time while it still
    /// fails; returns the run of the smallest schedule and, for each flip
    /// it keeps, the observation of the run without it.
    fn minimize(&mut self, found: usize) -> Result<(usize, Vec<Observation>), ReplayError> {
        let mut best = found;
        let mut passing = Vec::new();
        let mut k = 0;
        loop {
            let flips = self.runner.runs[best].schedule.flips.clone();
            if k >= flips.len() {
                return Ok((best, passing));
            }
            let mut fewer = self.runner.runs[best].schedule.clone();
            fewer.flips.remove(k);
            let i = self.runner.run(
                fewer,
                Role::Minimize,
                true,
                format!("without flip {}", k + 1),
            )?;
            if self.runner.runs[i].reproduced {
                best = i;
            } else {
                passing.push(
                    self.runner.runs[i]
                        .result
                        .observation
                        .clone()
                        .unwrap_or_default(),
                );
                k += 1;
            }
        }
    }

    /// One answer on `base`, and the object it makes two threads share
    /// (an address-determining read's answer). Stages, each tried when
    /// the one before is exhausted (`depth`): when the base came from such
    /// an answer, the focus thread's reads of that object (now that both
    /// threads hold it, they may read what the other wrote); then, one at
    /// a time and one answer each, its address-determining reads (a read
    /// whose value the thread then used as an address), asked to read the
    /// write another thread's such read read (a split read-modify-write:
    /// both hold one object); then its last 2 .. 32 stretches; then any
    /// thread's reads of the locations those reads read (the updates
    /// behind a value it read, wherever they raced: a lost update printed
    /// at the end); then every thread's last 2 .. 32 stretches.
    fn ask(&mut self, base: &Base, depth: &mut usize) -> (Answer, Stats, Option<u64>, String) {
        let probe = Query {
            accesses: base.accesses.clone(),
            focus_pos: base.focus_pos,
            focus_thread: base.focus_thread,
            tried: Vec::new(),
            locations: Vec::new(),
            limits: Limits::default(),
        };
        let mut addresses = probe.address_reads();
        addresses.truncate(ADDRESS_READS);
        let object: Vec<u64> = base
            .object
            .map_or_else(Vec::new, |v| probe.object_locations(v));
        let stages = stages(
            base.focus_thread.is_some(),
            addresses.len(),
            !object.is_empty(),
        );
        let mut locations: Vec<u64> = Vec::new();
        loop {
            let stage = stages[(*depth).min(stages.len() - 1)];
            let last = *depth + 1 >= stages.len();
            let (everyone, level) = match stage {
                Stage::Stretches(l) => (false, l),
                Stage::Everyone(l) => (true, l),
                Stage::ByLocation | Stage::Address(_) | Stage::Object => (false, 0),
            };
            let by_location = stage == Stage::ByLocation;
            let stretches = 2usize << level.min(DEPTHS);
            let q = Query {
                accesses: base.accesses.clone(),
                focus_pos: base.focus_pos,
                focus_thread: if everyone { None } else { base.focus_thread },
                tried: self.tried.clone(),
                locations: if by_location {
                    locations.clone()
                } else {
                    Vec::new()
                },
                limits: Limits {
                    stretches,
                    focus_reads: if by_location { 16 } else { 4 * stretches },
                    ..Limits::default()
                },
            };
            if stage == Stage::Stretches(DEPTHS) {
                // The deepest look at the focus thread: the locations it
                // read are the next stage's.
                let w = q.window();
                locations = w.focus.iter().map(|&f| w.accesses[f].location).collect();
                locations.sort_unstable();
                locations.dedup();
            }
            let (answer, stats) = match stage {
                Stage::Address(k) => solve_for(&q, &addresses[k..k + 1], true),
                // The focus thread's last reads of the shared object (any
                // thread's when there is no focus thread).
                Stage::Object => solve_for(&q, &object_reads(base, &object), false),
                _ => solve(&q),
            };
            self.queries.push(stats);
            match (answer, stage) {
                (Answer::Exhausted { .. }, _) if !last => {
                    *depth += 1;
                    self.stage_answers = 0;
                }
                (a @ Answer::Order { .. }, Stage::Address(_)) => {
                    // One object per address read: the next answer is
                    // about the next read (or the run this one makes).
                    let Stage::Address(k) = stage else {
                        unreachable!()
                    };
                    let v = match &a {
                        Answer::Order { class, .. } => {
                            class.iter().find(|c| c.0 == addresses[k]).map(|c| c.1)
                        }
                        _ => None,
                    };
                    *depth += 1;
                    return (a, stats, v, stage.to_string());
                }
                (a, _) => {
                    // A stage whose answers keep ending like its first ones
                    // (a few reads with many writes to choose from: a loop
                    // whose every iteration races) gives way to the next.
                    if matches!(a, Answer::Order { .. }) && !last {
                        self.stage_answers += 1;
                        if self.stage_answers >= STAGE_ANSWERS {
                            *depth += 1;
                            self.stage_answers = 0;
                        }
                    }
                    return (a, stats, None, stage.to_string());
                }
            }
        }
    }
}

/// The reads the object stage asks about: the focus thread's last reads of
/// `object` (any thread's when there is no focus thread) — those in its
/// last stretch before the focus when it has any there. The recorded
/// failure happened in that stretch; a read made to fail in an earlier
/// one fails an iteration early, which is a divergence, not the failure.
fn object_reads(base: &Base, object: &[u64]) -> Vec<AccessId> {
    let mine = |a: &&Access| {
        a.after_event <= base.focus_pos && base.focus_thread.is_none_or(|t| t == a.id.thread)
    };
    let reads = || {
        base.accesses
            .iter()
            .rev()
            .filter(mine)
            .filter(|a| !a.write && object.contains(&a.location))
    };
    let last_stretch = base.focus_thread.and_then(|_| {
        base.accesses
            .iter()
            .filter(mine)
            .map(|a| a.after_event)
            .max()
    });
    let in_last: Vec<AccessId> = reads()
        .filter(|a| Some(a.after_event) == last_stretch)
        .take(OBJECT_READS)
        .map(|a| a.id)
        .collect();
    if !in_last.is_empty() {
        return in_last;
    }
    reads().take(OBJECT_READS).map(|a| a.id).collect()
}

/// The base's flips that the new ones (`fresh`, held then awaited) leave
/// possible: a base flip "u before h" is dropped when a new one "u2 before
/// h2" closes a cycle with it through program order (h no later than u2 in
/// its thread, h2 no later than u in its): enforcing both would hold the
/// two threads for each other until the attempt is stuck. One that holds
/// the same access as a new one is dropped too: the answer says how long
/// that access waits (the base's flip would release it earlier).
fn compatible(base: &Base, fresh: &[(AccessId, AccessId)]) -> Vec<FlipSpec> {
    let at: std::collections::HashMap<AccessId, usize> = base
        .accesses
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id, i))
        .collect();
    // `a` no later than `b` in the one thread they share.
    let po = |a: AccessId, b: AccessId| {
        a == b
            || (a.thread == b.thread
                && matches!((at.get(&a), at.get(&b)), (Some(x), Some(y)) if x <= y))
    };
    base.flips
        .iter()
        .filter(|f| {
            let h = AccessId {
                thread: f.held,
                pc: f.held_pc,
                n: f.held_n,
            };
            let u = AccessId {
                thread: f.until,
                pc: f.until_pc,
                n: f.until_n,
            };
            !fresh
                .iter()
                .any(|&(h2, u2)| h2 == h || (po(h, u2) && po(h2, u)))
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(thread: u32, pc: u64, n: u32, location: u64, write: bool, after: u64) -> Access {
        Access {
            id: AccessId { thread, pc, n },
            location,
            write,
            value: 0,
            before: 0,
            after_event: after,
            before_event: u64::MAX,
        }
    }

    fn base(accesses: Vec<Access>) -> Base {
        Base {
            accesses,
            flips: Vec::new(),
            events: 20,
            focus_pos: 12,
            focus_thread: Some(1),
            object: Some(0x1000),
            forked: Vec::new(),
        }
    }

    /// A stamp checked in each iteration: the one to fail is the check
    /// in the failing thread's last stretch, not an earlier iteration's.
    #[test]
    fn object_reads_are_those_of_the_last_stretch() {
        let b = base(vec![
            access(1, 0x10, 1, 0x1008, false, 3),
            access(1, 0x10, 2, 0x1008, false, 7),
            access(2, 0x20, 1, 0x1008, true, 8),
            access(1, 0x10, 3, 0x1008, false, 11),
            // After the focus: not asked about.
            access(1, 0x10, 4, 0x1008, false, 13),
        ]);
        let ids: Vec<u32> = object_reads(&b, &[0x1008]).iter().map(|a| a.n).collect();
        assert_eq!(ids, vec![3]);
    }

    #[test]
    fn without_object_reads_in_the_last_stretch_the_latest_are_asked() {
        let b = base(vec![
            access(1, 0x10, 1, 0x1008, false, 3),
            access(1, 0x10, 2, 0x1008, false, 7),
            access(1, 0x30, 1, 0x2000, false, 11),
        ]);
        let ids: Vec<u32> = object_reads(&b, &[0x1008]).iter().map(|a| a.n).collect();
        assert_eq!(ids, vec![2, 1]);
    }

    /// Flips that did nothing in the base run are not carried on; the
    /// ones that held a thread (done, deferred, still holding) are.
    #[test]
    fn only_flips_that_acted_carry_over() {
        let f = |n: u32| FlipSpec {
            held: 1,
            held_pc: 0x10,
            held_n: n,
            until: 2,
            until_pc: 0x20,
            until_n: 1,
            defer: false,
            until_fork: 0,
            until_addr: 0,
            standing: false,
            held_anchor: 0,
            held_k: 0,
            until_anchor: 0,
            until_k: 0,
        };
        let flips: Vec<FlipSpec> = (1..=6).map(f).collect();
        let states = [
            FlipState::Done,
            FlipState::NotReached,
            FlipState::Already,
            FlipState::Infeasible,
            FlipState::Holding,
            FlipState::Deferred,
        ];
        let kept: Vec<u32> = effective_flips(&flips, Some(&states))
            .iter()
            .map(|f| f.held_n)
            .collect();
        assert_eq!(kept, vec![1, 5, 6]);
        // A run that was not observed keeps them all.
        assert_eq!(effective_flips(&flips, None).len(), 6);
    }
}
