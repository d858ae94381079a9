//! reprise's harnesses, behind `reprise eval` and `reprise bench`: the
//! command parses its arguments into [`eval::EvalOptions`] or
//! [`bench::BenchOptions`] and calls `run`, which prints the tables.
//!
//! - [`eval`]: the testbugs corpus measured: native failure rates, rates
//!   under `record`, and how each search strategy replays each sketch's
//!   failing trace.
//! - [`bench`]: how much recording and replaying slow programs down.

pub mod bench;
pub mod eval;
