//! Choosing the next attempt: a strategy is a [`SchedulePlanner`], and
//! [`search_with`] is the one loop that gives it a [`Runner`] and gathers
//! what it found. The random and feedback strategies
//! ([`crate::search::FeedbackPlanner`]) and the solver (`reprise_solver`)
//! are planners.
//!
//! A planner drives the runner (it asks for a run and looks at the result
//! before it asks for the next) rather than answering "what next?" from
//! the list of runs: the feedback search's evidence for a root cause and
//! its minimisation decide each run on the one before, which a pull
//! interface would have to turn into a state machine.

use std::time::Instant;

use reprise_replayer::{Replay, ReplayError};

use crate::runner::Runner;
use crate::search::{Run, SearchOptions, SearchResult};

pub trait SchedulePlanner {
    /// Plans schedules and runs them through `runner` until one
    /// reproduces the recorded outcome or `--max-attempts` is spent;
    /// sets in `result` what it found (`found`, `schedule`, `root_cause`)
    /// or why it stopped (`conclusion`).
    fn plan(
        &mut self,
        runner: &mut Runner<'_>,
        result: &mut SearchResult,
    ) -> Result<(), ReplayError>;
}

/// Runs `planner`'s search on `replay`; `on_run` sees every run as it ends.
pub fn search_with(
    replay: &Replay,
    opts: &SearchOptions,
    planner: &mut dyn SchedulePlanner,
    on_run: &(dyn Fn(&Run) + Sync),
) -> Result<SearchResult, ReplayError> {
    let started = Instant::now();
    let mut runner = Runner::new(replay, opts, on_run)?;
    let mut result = SearchResult::default();
    planner.plan(&mut runner, &mut result)?;
    result.attempts = runner.attempts;
    result.runs = runner.runs;
    result.elapsed = started.elapsed();
    Ok(result)
}
