//! Schedule synthesis (ODR-style inference): from the memory accesses
//! observed in attempts, ask z3 for an order of those accesses that the
//! sketch allows and in which the failing thread reads something it has
//! not read in any attempt so far, with as few changes from the observed
//! order as possible; the order becomes the replayer's flips.
//!
//! [`query`] holds the problem in plain data (accesses, their place
//! between sketch events, the reads-from classes already run), independent
//! of the replayer; [`encode`] turns it into z3 constraints and reads the
//! model back; [`search`] runs the attempts the answers describe.

pub mod encode;
pub mod hybrid;
pub mod observed;
pub mod query;
pub mod search;
mod stages;

pub use encode::{solve, solve_for, Answer, Stats};
pub use query::{Access, AccessId, Class, Query, Window};

use reprise_feedback::planner::SchedulePlanner;
use reprise_feedback::search::FeedbackPlanner;
use reprise_replayer::Strategy;

/// The strategies a user can name (`--strategy`, `--strategies`).
pub const STRATEGY_NAMES: [&str; 6] = ["auto", "feedback", "random", "preempt", "solver", "hybrid"];

/// A strategy as the user names it: its planner, and the replayer's base
/// strategy it runs attempts on (`SearchOptions::strategy`).
pub struct NamedStrategy {
    pub base: Strategy,
    pub planner: Box<dyn SchedulePlanner>,
}

/// The strategy called `name` (one of [`STRATEGY_NAMES`]).
pub fn strategy(name: &str) -> Option<NamedStrategy> {
    let (base, planner): (Strategy, Box<dyn SchedulePlanner>) = match name {
        "solver" => (Strategy::Feedback, Box::new(search::SolverPlanner)),
        "hybrid" => (
            Strategy::Feedback,
            Box::new(hybrid::TurnsPlanner {
                first: hybrid::HANDOVER,
                turn: Some(hybrid::HYBRID_TURN),
            }),
        ),
        "auto" => (
            Strategy::Feedback,
            Box::new(hybrid::TurnsPlanner {
                first: hybrid::AUTO_TURN,
                turn: Some(hybrid::AUTO_TURN),
            }),
        ),
        other => (Strategy::from_name(other)?, Box::new(FeedbackPlanner)),
    };
    Some(NamedStrategy { base, planner })
}
