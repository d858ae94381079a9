//! The corpus of buggy multithreaded programs: manifest, build, native failure rates.
//!
//! * [`load_manifest`] / [`Manifest`]: `testbugs/manifest.toml`, one [`Bug`] per program.
//! * [`build_all`]: compile every program with gcc/g++ (`-g -O1 -pthread`).
//! * [`run_native`]: one run, classified as [`Outcome::Passed`] or a [`Failure`];
//!   [`RunResult::matches_expected`] compares with the manifest.
//! * [`native_rates`]: failure rates over many runs, printable with [`RateTable`].

pub mod manifest;
pub mod rates;
pub mod run;

use std::path::PathBuf;

pub use manifest::{corpus_dir, load_manifest, Bug, BugKind, Expect, ExpectKind, Lang, Manifest};
pub use rates::{
    default_build_dir, measure, native_rates, native_rates_with, RateOptions, RateRow, RateTable,
};
pub use run::{
    build_all, build_bug, build_bug_with, build_manifest, instrument_flags, run_native,
    run_native_in, Built, Failure, Outcome, RunResult, DEFAULT_TIMEOUT,
};

/// Errors of the corpus library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid manifest: {source}")]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("manifest does not match the programs:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    #[error("compiler `{0}` not found: install gcc and g++ (apt-get install build-essential)")]
    CompilerMissing(String),
    #[error("compiling {name} failed ({status}):\n{stderr}")]
    Compile {
        name: String,
        status: String,
        stderr: String,
    },
    #[error("program {0} was not built")]
    NotBuilt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
