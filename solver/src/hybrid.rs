//! Feedback and the solver in turns: `--strategy hybrid` and `--strategy
//! auto` (the default).
//!
//! Feedback flips one observed race at a time, best first, and reproduces
//! most failures in a few attempts; when a failure needs a race that only
//! shows once an earlier one is flipped (two threads handed one object),
//! its ranked races run out on the wrong ones. The solver then starts from
//! everything feedback observed: what those runs read counts as tried, and
//! the furthest of them on the early base order is its first query's base.
//!
//! Each turn's planner plans from the start; the runs made before answer
//! its first choices without running again (see `Runner::run_all`), so it
//! goes on where it stopped. When the solver concludes (no untried
//! schedule within what it observed) with attempts left, feedback's search
//! has the rest: the solver's proof holds only within what observation saw
//! (not inside libraries, not beyond the accesses its runs logged).
//!
//! Neither attempt counts nor progress along the sketch tell the two kinds
//! of failure apart early: in both, every attempt reaches the recorded
//! failure's place and does not fail there. So the turns are fixed.

use reprise_feedback::planner::SchedulePlanner;
use reprise_feedback::runner::Runner;
use reprise_feedback::search::{FeedbackPlanner, SearchResult};
use reprise_replayer::ReplayError;

use crate::search::{feedback_also_missed, SolverPlanner};

/// `hybrid`: attempts feedback gets before the solver takes over, chosen
/// by `reprise eval --replay --strategies feedback,solver,hybrid` (see the
/// README's *eval* section): half of the default budget of ten.
pub const HANDOVER: u32 = 5;

/// `hybrid`: attempts in each turn after the first, the solver's and
/// feedback's in alternation. Measured on the 53 `sys` traces of two
/// evaluations (`reprise replay TRACE --strategy hybrid --max-attempts 10`):
/// 23 and 24 reproduced with turns of 2, 23 and 23 with one solver turn
/// until it concludes (which spent the budget on the solver and missed
/// memcached_127, which feedback's search reaches in its seventh or eighth
/// attempt).
pub const HYBRID_TURN: u32 = 2;

/// `auto`: attempts in each turn; the first turn is exactly `feedback`
/// within the `reprise eval --replay` budget of ten attempts.
pub const AUTO_TURN: u32 = 10;

/// Feedback's search for `first` attempts, then the solver and feedback in
/// turns of `turn` attempts, each planning from everything the runs so far
/// observed. `hybrid` is `first` 5, then turns of 2; `auto` is turns of
/// 10. A solver that concludes (no untried schedule) gets no more turns:
/// feedback has the rest.
/// A failure feedback reproduces within `first` attempts reproduces as with
/// `feedback`; one that needs coordinated flips gets the solver after them.
pub struct TurnsPlanner {
    /// Attempts of feedback's first turn.
    pub first: u32,
    /// Attempts of each later turn; `None`: a turn lasts until its planner
    /// stops (the solver concluding, feedback spending the budget).
    pub turn: Option<u32>,
}

impl SchedulePlanner for TurnsPlanner {
    fn plan(
        &mut self,
        runner: &mut Runner<'_>,
        result: &mut SearchResult,
    ) -> Result<(), ReplayError> {
        let mut solver_said: Option<String> = None;
        let mut after_solver = 0;
        for k in 0u32.. {
            let solver = k % 2 == 1;
            if solver && solver_said.is_some() {
                continue;
            }
            let before = runner.attempts;
            let length = if k == 0 { Some(self.first) } else { self.turn };
            let end = length.map_or(u32::MAX, |n| before.saturating_add(n));
            runner.cap = length.map(|_| end);
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
                if runner.attempts < end {
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
                result.conclusion = Some(feedback_also_missed(&said, after_solver));
            }
        }
        Ok(())
    }
}
