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

use std::path::{Path, PathBuf};

/// Where `libreprise_cov.so` is (the `bb` sketch's link stub): next to the
/// `reprise` binary, or one level up (test binaries in `deps/`).
pub fn cov_dir(reprise: &Path) -> anyhow::Result<PathBuf> {
    let dir = reprise.parent().unwrap_or(Path::new("."));
    [dir.to_path_buf(), dir.join("..")]
        .into_iter()
        .find(|d| d.join("libreprise_cov.so").is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "libreprise_cov.so is missing next to {}: build the workspace (`cargo build --release`)",
                reprise.display()
            )
        })
}
