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
pub mod query;
pub mod search;

pub use encode::{solve, solve_for, Answer, Stats};
pub use query::{Access, AccessId, Class, Query, Window};
