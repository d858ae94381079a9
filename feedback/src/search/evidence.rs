//! Root-cause evidence (see [`super`]): the observed runs that explain a
//! reproducing schedule — a failing run with its flips and, for each
//! flip, a run without it — or, when a base schedule fails without flips,
//! a passing run to compare it with (the other base, or a race whose flip
//! prevents the failure), and the flip that pins the base's race.

use reprise_abi::replay as rp;
use reprise_schema::ScheduleInfo;

use reprise_replayer::observe::{FlipSpec, FlipState};
use reprise_replayer::{is_failure, ReplayError, Strategy};

use super::{flip_from_info, flip_to_info, schedule, Role, RootCause, Run, SearchResult, Searcher};
use crate::races::{self, Focus, Race};

/// Races flipped, one at a time, to find the one whose flip prevents a
/// failure that the sketch alone reproduces.
const PREVENTION_TRIES: usize = 6;

impl Searcher<'_> {
    /// Base `base` reproduced in run `i` without flips. It is taken if the
    /// failure is no failure (a clean recorded run), or if it fails again
    /// observed (then with its root cause, and the race that decided it
    /// pinned by a flip where one is found). A base that failed once by
    /// timing alone is no schedule to save: false, and the search goes on.
    pub(super) fn confirm_base(
        &mut self,
        base: Strategy,
        other: Strategy,
        i: usize,
        result: &mut SearchResult,
    ) -> Result<bool, ReplayError> {
        let mut schedule = self.runs[i].schedule.clone();
        let mut root_cause = None;
        if is_failure(&self.recorded) {
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
    /// side of the first reads-from difference with the passing run, if
    /// the failure reproduces with it.
    fn pin_base(
        &mut self,
        base: Strategy,
        rc: Option<&RootCause>,
    ) -> Result<Option<ScheduleInfo>, ReplayError> {
        let Some(rc) = rc.filter(|rc| rc.flips.is_empty()) else {
            return Ok(None);
        };
        let Some(passing) = rc.passing.first() else {
            return Ok(None);
        };
        let Some(flip) = races::first_racy_diff(self.replay, &rc.failing, passing)
            .map(|d| races::pinning_flip(&d))
        else {
            return Ok(None);
        };
        let sc = schedule(base, self.opts.seed, 0, &[flip]);
        let i = self.run(sc.clone(), Role::Minimize, true, "pinning its race".into())?;
        Ok(self.runs[i].reproduced.then_some(sc))
    }

    /// When base `failing` reproduces without flips: a passing run to
    /// compare it with, both observed, to tell which reads differ — base
    /// `other` if it passes, else the failing base with one of its races
    /// flipped, nearest the failure first.
    fn explain_base(
        &mut self,
        failing: Strategy,
        other: Strategy,
    ) -> Result<Option<RootCause>, ReplayError> {
        let seed = self.opts.seed;
        let f = self.run(
            schedule(failing, seed, 0, &[]),
            Role::Minimize,
            true,
            "observed".into(),
        )?;
        if !self.runs[f].reproduced {
            return Ok(None);
        }
        let Some(failing_obs) = self.runs[f].result.observation.clone() else {
            return Ok(None);
        };
        let p = self.run(
            schedule(other, seed, 0, &[]),
            Role::Minimize,
            true,
            "observed".into(),
        )?;
        let mut passing = (!self.runs[p].reproduced)
            .then(|| self.runs[p].result.observation.clone())
            .flatten();
        // Both bases fail: the failure follows from the sketch's order and
        // its own races. Flip those nearest the failure, one at a time, until
        // one makes it go away: that race is what the failure needs.
        if passing.is_none() {
            let focus = Focus {
                pos: self.replay.end_position(),
                thread: Some(rp::key(self.recorded.process as u32, self.recorded.thread)),
            };
            let candidates: Vec<Race> = races::races(self.replay, &failing_obs, focus)
                .into_iter()
                .filter(|x| !x.delay)
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
                let i = self.run(
                    schedule(failing, seed, 0, &[race.flip(false)]),
                    Role::Minimize,
                    true,
                    "does flipping this race prevent the failure?".into(),
                )?;
                let r = &self.runs[i].result;
                let flipped = r.observation.as_ref().and_then(|o| o.flips.last().copied())
                    == Some(FlipState::Done);
                if flipped && !self.runs[i].reproduced && r.outcome().is_some() {
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
            hang: self.recorded.kind == reprise_schema::OutcomeKind::Hang,
        }))
    }

    /// The observations that describe the flips of `sc`: a failing run
    /// with all of them, and for each a run without it.
    pub(super) fn explain_flips(
        &mut self,
        sc: &ScheduleInfo,
    ) -> Result<Option<RootCause>, ReplayError> {
        let flips: Vec<FlipSpec> = sc.flips.iter().map(flip_from_info).collect();
        if flips.is_empty() {
            return Ok(None);
        }
        let failing = match observed(&self.runs, &flips) {
            Some(r) if r.reproduced => r.result.observation.clone(),
            _ => {
                let i = self.run(sc.clone(), Role::Minimize, true, "observed".into())?;
                self.runs[i].result.observation.clone()
            }
        };
        let Some(failing) = failing else {
            return Ok(None);
        };
        let mut passing = Vec::new();
        for k in 0..flips.len() {
            let mut fewer = flips.clone();
            fewer.remove(k);
            let obs = match observed(&self.runs, &fewer) {
                Some(r) => r.result.observation.clone(),
                None => {
                    let s2 = ScheduleInfo {
                        flips: fewer.iter().map(flip_to_info).collect(),
                        ..sc.clone()
                    };
                    let i =
                        self.run(s2, Role::Minimize, true, "observed without one flip".into())?;
                    self.runs[i].result.observation.clone()
                }
            };
            passing.push(obs.unwrap_or_default());
        }
        Ok(Some(RootCause {
            flips,
            failing,
            passing,
            failing_thread: self.failing_thread(),
            hang: self.recorded.kind == reprise_schema::OutcomeKind::Hang,
        }))
    }
}

/// The last observed run with exactly these flips.
fn observed<'r>(runs: &'r [Run], flips: &[FlipSpec]) -> Option<&'r Run> {
    runs.iter().rev().find(|r| {
        r.result.observation.is_some()
            && r.schedule
                .flips
                .iter()
                .map(flip_from_info)
                .collect::<Vec<_>>()
                == flips
    })
}
