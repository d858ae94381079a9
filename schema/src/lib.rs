//! The reprise trace format: Cap'n Proto schema, TraceWriter and TraceReader.
//!
//! A trace is a directory (mode 0700, files 0600: it holds the program's
//! input data):
//!
//! | file | contents |
//! |---|---|
//! | `header` | one framed chunk: a capnp `Header` |
//! | `events` | framed chunks, each a capnp `EventChunk` of up to 8192 events / 1 MiB of data |
//! | `outcome` | one framed chunk: a capnp `Outcome` (absent in a cut-short trace) |
//! | `schedule` | one framed chunk: a capnp `Schedule` (once a reproducing schedule is known) |
//! | `incomplete` | present while the trace is written; removed last by [`TraceWriter::finish`] |
//!
//! Framing is described in [`frame`]. Other crates use the plain types of
//! this crate ([`HeaderInfo`], [`EventRecord`], [`OutcomeInfo`], ...) and
//! never touch capnp builders; [`trace_capnp`] is the generated code.

pub mod trace_capnp {
    #![allow(clippy::all, unused, missing_docs, unreachable_pub)]
    include!("trace_capnp.rs");
}

mod convert;
mod error;
pub mod frame;
pub mod listing;
pub mod location;
mod reader;
mod types;
mod writer;

pub use error::{Result, TraceError};
pub use reader::{read_schedule, Events, TraceReader};
pub use types::*;
pub use writer::{write_schedule, TraceWriter, CHUNK_DATA_BYTES, CHUNK_EVENTS};

/// The trace format this reprise writes, and the newest it reads. Bump it
/// when a reader of an older version could misread a newer trace.
/// 2: runs of function or block entries (their addresses in `data`).
pub const FORMAT_VERSION: u32 = 2;

/// This crate's version, for `HeaderInfo::reprise_version`.
pub const REPRISE_VERSION: &str = env!("CARGO_PKG_VERSION");
