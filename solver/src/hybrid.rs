//! `--strategy hybrid`: the feedback search first, the solver once
//! feedback has spent its share of the attempts without reproducing.
//!
//! Feedback flips one observed race at a time, best first, and reproduces
//! most failures in a few attempts; when a failure needs a race that only
//! shows once an earlier one is flipped (two threads handed one object),
//! its ranked races run out on the wrong ones. The solver then starts from
//! everything feedback observed: what those runs read counts as tried, and
//! the furthest of them on the early base order is its first query's base.
//!
//! When the solver concludes (no untried schedule within what it observed)
//! with attempts left, feedback's search goes on with them.
//!
//! Neither attempt counts nor progress along the sketch tell the two kinds
//! of failure apart early: in both, every attempt reaches the recorded
//! failure's place and does not fail there. So the split is fixed.

use reprise_feedback::planner::SchedulePlanner;
use reprise_feedback::runner::Runner;
use reprise_feedback::search::{FeedbackPlanner, SearchResult};
use reprise_replayer::ReplayError;

use crate::search::SolverPlanner;

/// Attempts feedback gets before the solver takes over, chosen by
/// `reprise eval --replay --strategies feedback,solver,hybrid` (see the
/// README's *eval* section): half of the default budget of ten.
pub const HANDOVER: u32 = 5;

pub struct HybridPlanner {
    /// Attempts (counted from the first) feedback may make.
    pub handover: u32,
}

impl SchedulePlanner for HybridPlanner {
    fn plan(
        &mut self,
        runner: &mut Runner<'_>,
        result: &mut SearchResult,
    ) -> Result<(), ReplayError> {
        runner.cap = Some(self.handover);
        let fed = FeedbackPlanner.plan(runner, result);
        runner.cap = None;
        fed?;
        if result.found.is_some() || runner.budget() == 0 {
            return Ok(());
        }
        SolverPlanner.plan(runner, result)?;
        if result.found.is_some() || runner.budget() == 0 {
            return Ok(());
        }
        // The solver concluded with attempts left: its proof holds only
        // within what observation saw (not inside libraries, not beyond
        // the accesses its runs logged), so feedback's search goes on with
        // the rest. It replans from the start; its first attempts are
        // runs it made before and are not run again (see `Runner::run_all`).
        let said = result.conclusion.take().unwrap_or_default();
        let before = runner.attempts;
        FeedbackPlanner.plan(runner, result)?;
        if result.found.is_none() && !said.is_empty() {
            result.conclusion = Some(format!(
                "{said}; feedback's search in the other {} attempt(s) did not reproduce it either",
                runner.attempts - before
            ));
        }
        Ok(())
    }
}

/// Attempts in each turn of `--strategy auto`: the first turn is exactly
/// `feedback` within the `reprise eval --replay` budget of ten attempts.
pub const AUTO_TURN: u32 = 10;

/// `--strategy auto`, the default: feedback's search for the first
/// [`AUTO_TURN`] attempts, then the solver and feedback in turns of as
/// many attempts, each planning from everything the runs so far observed
/// (a planner replans from the start; the runs it made before answer its
/// first choices without running again, see `Runner::run_all`, so it goes
/// on where it stopped). A failure feedback reproduces within ten attempts
/// reproduces as with `feedback`; one that needs coordinated flips (two
/// threads handed one object) gets the solver after them. Once the solver
/// concludes (no untried schedule within what it observed), feedback has
/// the rest.
pub struct TurnsPlanner {
    /// Attempts per turn.
    pub turn: u32,
}

impl SchedulePlanner for TurnsPlanner {
    fn plan(
        &mut self,
        runner: &mut Runner<'_>,
        result: &mut SearchResult,
    ) -> Result<(), ReplayError> {
        let mut solver_said: Option<String> = None;
        let mut after_solver = 0;
        for turn in 0u32.. {
            let solver = turn % 2 == 1 && solver_said.is_none();
            if turn % 2 == 1 && !solver {
                continue;
            }
            let before = runner.attempts;
            runner.cap = Some(before.saturating_add(self.turn));
            let planned = if solver {
                SolverPlanner.plan(runner, result)
            } else {
                FeedbackPlanner.plan(runner, result)
            };
            runner.cap = None;
            planned?;
            if solver_said.is_some() {
                after_solver += runner.attempts - before;
            }
            if result.found.is_some() || runner.budget() == 0 {
                break;
            }
            if solver {
                // Stopped before its turn ended: it concluded.
                if runner.attempts < before + self.turn {
                    solver_said = Some(result.conclusion.take().unwrap_or_default());
                } else {
                    result.conclusion = None;
                }
            } else if runner.attempts == before && solver_said.is_some() {
                // Feedback has nothing new and the solver is done.
                break;
            }
        }
        if let (None, Some(said)) = (result.found, solver_said) {
            if !said.is_empty() {
                result.conclusion = Some(format!(
                    "{said}; feedback's search in the other {after_solver} attempt(s) did not reproduce it either"
                ));
            }
        }
        Ok(())
    }
}
