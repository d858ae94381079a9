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
