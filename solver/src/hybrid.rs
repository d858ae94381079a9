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
        SolverPlanner.plan(runner, result)
    }
}
