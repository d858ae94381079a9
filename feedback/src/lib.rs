//! Searching for a schedule that reproduces a recorded failure, on top of
//! the replayer's attempts (`reprise_replayer`).
//!
//! - [`planner`]: the `SchedulePlanner` trait every strategy implements,
//!   and the one loop that runs a planner's search.
//! - [`runner`]: the one interface to the replayer: a schedule in, a run
//!   (its outcome and observed accesses) out; parallel runs.
//! - [`search`]: the random and feedback searches, and the minimisation of
//!   a reproducing schedule's flips.
//! - [`races`]: the races of an observed attempt that a flip could
//!   reverse.
//! - [`reads_from`]: which write each read saw, and how two runs differ
//!   in that.
//! - [`counts`]: the delay that makes a polling loop skip as many
//!   iterations as the sketch's event count says it did.
//! - [`moves`]: two flips at once that make a read of the failing thread
//!   see another thread's earlier write (a reads-from move).
//! - [`spans`]: races that split a stretch during which the other threads
//!   made many events (its thread was descheduled there when recorded).
//! - [`rootcause`]: the root-cause report of a reproducing schedule.

pub mod counts;
pub mod moves;
pub mod planner;
pub mod races;
pub mod reads_from;
pub mod rootcause;
pub mod runner;
pub mod search;
pub mod spans;
