//! Root-cause evidence (see [`super`]): the observed runs that explain a
//! reproducing schedule — a failing run with its flips and, for each
//! flip, a run without it — or, when a base schedule fails without flips,
//! a passing run to compare it with (the other base, or a race whose flip
//! prevents the failure), and the flip that pins the base's race.

use reprise_abi::replay as rp;

use reprise_replayer::observe::{FlipSpec, FlipState, Observation};
use reprise_replayer::{is_failure, ReplayError, Schedule};

use super::{Role, RootCause, Run, SearchResult, Searcher};
use crate::races::{self, Focus, Race};

/// Observed runs of an explanation made again at most this many times in
/// all while they keep finding places on a thread's stack that another
/// thread reaches (each watches four; the owner's accesses show after).
const STACK_PASSES: usize = 3;

/// Races flipped, one at a time, to find the one whose flip prevents a
/// failure that the sketch alone reproduces.
const PREVENTION_TRIES: usize = 6;
/// Runs of a pinned schedule that must all reproduce before it is saved.
const PIN_CONFIRMATIONS: usize = 3;
/// Most races pinned in one saved schedule.
const PIN_MAX: usize = 4;

impl Searcher<'_, '_> {
    /// Base `base` reproduced in run `i` without flips. It is taken if the
    /// failure is no failure (a clean recorded run), or if it fails again
    /// observed (then with its root cause, and the race that decided it
    /// pinned by a flip where one is found). A base that failed once by
    /// timing alone is no schedule to save: false, and the search goes on.
    pub(super) fn confirm_base(
        &mut self,
        base: &Schedule,
        other: &Schedule,
        i: usize,
        result: &mut SearchResult,
    ) -> Result<bool, ReplayError> {
        let mut schedule = self.runner.runs[i].schedule.clone();
        let mut root_cause = None;
        if is_failure(&self.runner.recorded) {
            root_cause = self.explain_base(base, other)?;
            if root_cause.is_none() {
                return Ok(false);
            }
            if let Some(sc) = self.pin_base(base, root_cause.as_ref())? {
                schedule = sc;
            }
        }
        result.found = Some(i);
        result.schedule = Some(schedule);
        result.root_cause = root_cause;
        Ok(true)
    }

    /// A base schedule that failed without flips may have failed by
    /// timing alone: the race its failure needs is not held by any flip.
    /// The schedule to save then gets the flip that keeps the failing
    /// side of that race, and is kept only if it reproduces
    /// [`PIN_CONFIRMATIONS`] times in a row; if not, the next races nearest
    /// the failure are pinned too, in the order the failing run made them
    /// (up to [`PIN_MAX`] flips).
    fn pin_base(
        &mut self,
        base: &Schedule,
        rc: Option<&RootCause>,
    ) -> Result<Option<Schedule>, ReplayError> {
        let Some(rc) = rc.filter(|rc| rc.flips.is_empty()) else {
            return Ok(None);
        };
        let replay = self.runner.replay;
        // With a passing run: the first reads-from difference. Else (no
        // passing run, or no racy difference with it): the race the report
        // names, the last one the sketch leaves open on what the failing
        // thread read, kept in the order the failing run made it.
        let first = rc
            .passing
            .first()
            .and_then(|passing| races::first_racy_diff(replay, &rc.failing, passing))
            .map(|d| races::pinning_flip(&d))
            .or_else(
                || match races::last_race(replay, &rc.failing, rc.failing_thread) {
                    races::LastRace::Race(first, second) => {
                        Some(races::order_flip(&first, &second))
                    }
                    _ => None,
                },
            );
        let Some(first) = first else {
            return Ok(None);
        };
        let focus = Focus {
            pos: replay.end_position(),
            thread: rc.failing_thread,
        };
        let mut more = races::races(replay, &rc.failing, focus)
            .into_iter()
            .filter(|x| !x.delay)
            .map(|x| races::order_flip(&x.first, &x.second))
            .filter(|f| *f != first);
        let mut pins = vec![first];
        loop {
            let sc = base.clone().with_flips(pins.clone());
            if self.confirm(&sc)? {
                return Ok(Some(sc));
            }
            match more.next() {
                Some(f) if pins.len() < PIN_MAX => pins.push(f),
                _ => return Ok(None),
            }
        }
    }

    /// Runs `sc` up to [`PIN_CONFIRMATIONS`] times, not observed (its
    /// flips need breakpoints, not a log): whether every run reproduced.
    fn confirm(&mut self, sc: &Schedule) -> Result<bool, ReplayError> {
        if self.confirmed.as_ref() == Some(sc) {
            return Ok(true);
        }
        for k in 0..PIN_CONFIRMATIONS {
            let note = format!(
                "does it reproduce every time? ({} of {PIN_CONFIRMATIONS})",
                k + 1
            );
            let i = self.runner.run(sc.clone(), Role::Minimize, false, note)?;
            if !self.runner.runs[i].reproduced {
                return Ok(false);
            }
        }
        self.confirmed = Some(sc.clone());
        Ok(true)
    }

    /// The accesses of a reproducing run of `sc`: an observed one already
    /// made, else one made now (None if it does not reproduce).
    fn observed_reproducing(&mut self, sc: &Schedule) -> Result<Option<Observation>, ReplayError> {
        let made = self
            .runner
            .runs
            .iter()
            .rev()
            .find(|r| r.reproduced && &r.schedule == sc)
            .and_then(|r| r.result.observation.clone());
        if made.is_some() {
            return Ok(made);
        }
        let note = "observed, to pin its races".to_string();
        let i = self.runner.run(sc.clone(), Role::Minimize, true, note)?;
        let run = &self.runner.runs[i];
        Ok(run.result.observation.clone().filter(|_| run.reproduced))
    }

    /// The schedule to save must reproduce every time, not by timing: it
    /// is run [`PIN_CONFIRMATIONS`] times; while one misses, the next race
    /// nearest the failure in an observed reproducing run of it is pinned
    /// in the order that run made it (up to [`PIN_MAX`] more flips). If it
    /// still misses, the schedule found is saved as it was.
    pub(super) fn stabilize(&mut self, result: &mut SearchResult) -> Result<(), ReplayError> {
        let Some(found) = result.schedule.clone() else {
            return Ok(());
        };
        // A clean recorded run needs no race held; a saved schedule was
        // checked when it was found.
        if !is_failure(&self.runner.recorded) || self.runner.opts.saved.as_ref() == Some(&found) {
            return Ok(());
        }
        let replay = self.runner.replay;
        let focus = Focus {
            pos: replay.end_position(),
            thread: self.failing_thread(),
        };
        let mut sc = found;
        for _ in 0..=PIN_MAX {
            if self.confirm(&sc)? {
                result.schedule = Some(sc);
                return Ok(());
            }
            let Some(o) = self.observed_reproducing(&sc)? else {
                return Ok(());
            };
            let next = races::races(replay, &o, focus)
                .into_iter()
                .filter(|x| !x.delay)
                .map(|x| races::order_flip(&x.first, &x.second))
                .find(|f| !sc.flips.contains(f));
            let Some(next) = next else {
                return Ok(());
            };
            let mut flips = sc.flips.clone();
            flips.push(next);
            sc = sc.with_flips(flips);
        }
        Ok(())
    }

    /// When base `failing` reproduces without flips: a passing run to
    /// compare it with, both observed, to tell which reads differ — base
    /// `other` if it passes, else the failing base with one of its races
    /// flipped, nearest the failure first.
    fn explain_base(
        &mut self,
        failing: &Schedule,
        other: &Schedule,
    ) -> Result<Option<RootCause>, ReplayError> {
        // The two runs may find places on a thread's stack that another
        // reaches: then their owner's accesses show only in runs after
        // them, and both are observed once more.
        let mut f = 0;
        let mut p = 0;
        for _ in 0..STACK_PASSES {
            let seen = self.runner.replay.stack_generation();
            f = self
                .runner
                .run(failing.clone(), Role::Minimize, true, "observed".into())?;
            if !self.runner.runs[f].reproduced {
                return Ok(None);
            }
            p = self
                .runner
                .run(other.clone(), Role::Minimize, true, "observed".into())?;
            if self.runner.replay.stack_generation() == seen {
                break;
            }
        }
        let Some(failing_obs) = self.runner.runs[f].result.observation.clone() else {
            return Ok(None);
        };
        let mut passing = (!self.runner.runs[p].reproduced)
            .then(|| self.runner.runs[p].result.observation.clone())
            .flatten();
        // Both bases fail: the failure follows from the sketch's order and
        // its own races. Flip those nearest the failure, one at a time, until
        // one makes it go away: that race is what the failure needs.
        if passing.is_none() {
            let focus = Focus {
                pos: self.runner.replay.end_position(),
                thread: Some(rp::key(
                    self.runner.recorded.process as u32,
                    self.runner.recorded.thread,
                )),
            };
            let candidates: Vec<Race> = races::races(self.runner.replay, &failing_obs, focus)
                .into_iter()
                .filter(|x| !x.delay && !x.is_move())
                .take(PREVENTION_TRIES)
                .collect();
            if std::env::var_os("REPRISE_DEBUG_RACES").is_some() {
                eprintln!("prevention candidates: {}", candidates.len());
                for x in &candidates {
                    eprintln!(
                        "  {:#x}#{} -> {:#x}#{} score {}",
                        x.first.access.pc, x.first.n, x.second.access.pc, x.second.n, x.score
                    );
                }
            }
            for race in candidates {
                let i = self.runner.run(
                    failing.clone().with_flips(vec![race.flip(false)]),
                    Role::Minimize,
                    true,
                    "does flipping this race prevent the failure?".into(),
                )?;
                let r = &self.runner.runs[i].result;
                let flipped = r.observation.as_ref().and_then(|o| o.flips.last().copied())
                    == Some(FlipState::Done);
                if flipped && !self.runner.runs[i].reproduced && r.outcome().is_some() {
                    passing = r.observation.clone();
                    break;
                }
            }
        }
        Ok(Some(RootCause {
            flips: Vec::new(),
            failing: failing_obs,
            passing: passing.into_iter().collect(),
            failing_thread: self.failing_thread(),
            hang: self.runner.recorded.kind == reprise_schema::OutcomeKind::Hang,
        }))
    }

    /// The observations that describe the flips of `sc`: a failing run
    /// with all of them, and for each a run without it.
    pub(super) fn explain_flips(
        &mut self,
        sc: &Schedule,
    ) -> Result<Option<RootCause>, ReplayError> {
        // The runs may find places on a thread's stack that another
        // reaches: the owner's accesses there show (and a flip waiting for
        // them completes) only in runs after them; then all are run again.
        let mut pass = 0;
        loop {
            let seen = self.runner.replay.stack_generation();
            let rc = self.explain_flips_observed(sc, pass == 0)?;
            pass += 1;
            if pass == STACK_PASSES || self.runner.replay.stack_generation() == seen {
                return Ok(rc);
            }
        }
    }

    /// [`Self::explain_flips`], from runs made before when `reuse`.
    fn explain_flips_observed(
        &mut self,
        sc: &Schedule,
        reuse: bool,
    ) -> Result<Option<RootCause>, ReplayError> {
        let flips = sc.flips.clone();
        if flips.is_empty() {
            return Ok(None);
        }
        let failing = match observed(&self.runner.runs, &flips).filter(|_| reuse) {
            Some(r) if r.reproduced => r.result.observation.clone(),
            _ => {
                let i = self
                    .runner
                    .run(sc.clone(), Role::Minimize, true, "observed".into())?;
                self.runner.runs[i].result.observation.clone()
            }
        };
        let Some(failing) = failing else {
            return Ok(None);
        };
        let mut passing = Vec::new();
        for k in 0..flips.len() {
            let mut fewer = flips.clone();
            fewer.remove(k);
            let obs = match observed(&self.runner.runs, &fewer).filter(|_| reuse) {
                Some(r) => r.result.observation.clone(),
                None => {
                    let s2 = sc.clone().with_flips(fewer);
                    let i = self.runner.run(
                        s2,
                        Role::Minimize,
                        true,
                        "observed without one flip".into(),
                    )?;
                    self.runner.runs[i].result.observation.clone()
                }
            };
            passing.push(obs.unwrap_or_default());
        }
        Ok(Some(RootCause {
            flips,
            failing,
            passing,
            failing_thread: self.failing_thread(),
            hang: self.runner.recorded.kind == reprise_schema::OutcomeKind::Hang,
        }))
    }
}

/// The last observed run with exactly these flips.
fn observed<'r>(runs: &'r [Run], flips: &[FlipSpec]) -> Option<&'r Run> {
    runs.iter()
        .rev()
        .find(|r| r.result.observation.is_some() && r.schedule.flips == flips)
}
