//! Searching for a schedule that reproduces a recorded failure, on top of
//! the replayer's attempts (`reprise_replayer`).
//!
//! - [`search`]: the random and feedback searches, and the minimisation of
//!   a reproducing schedule's flips.
//! - [`races`]: the races of an observed attempt that a flip could
//!   reverse, and reads-from comparisons between two runs.
//! - [`rootcause`]: the root-cause report of a reproducing schedule.

pub mod races;
pub mod rootcause;
pub mod search;
