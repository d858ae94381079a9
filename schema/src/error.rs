use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong reading or writing a trace. Each message is
/// one line that says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("no trace at {}: the directory does not exist; `reprise ls` lists the traces", .dir.display())]
    NotFound { dir: PathBuf },

    #[error("not a reprise trace: {} has no header", .dir.display())]
    NotATrace { dir: PathBuf },

    #[error(
        "trace format version {found} is newer than this reprise ({supported}): upgrade reprise"
    )]
    NewerFormat { found: u32, supported: u32 },

    #[error("corrupt trace file {} at byte {offset}: {what}; the trace cannot be read past this point", .file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        what: String,
    },

    #[error("disk full while writing {}: free some space (`reprise ls` shows trace sizes) and record again", .path.display())]
    DiskFull { path: PathBuf },

    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot create trace {}: the directory exists and is not empty; choose a new directory", .dir.display())]
    Exists { dir: PathBuf },

    #[error("no traces yet: record one with `reprise record PROGRAM`")]
    NoTraces { root: PathBuf },

    #[error("no trace named {name} in {}; `reprise ls` lists them", .root.display())]
    NoSuchTrace { name: String, root: PathBuf },

    #[error("the latest trace {} no longer exists; `reprise ls` lists the others", .dir.display())]
    LatestGone { dir: PathBuf },

    #[error("cannot find a place for traces: set REPRISE_TRACE_DIR (or HOME)")]
    NoHome,

    #[error("bad event range '{0}': use N, N-M, N- or -M")]
    BadRange(String),

    #[error("the trace writer for {} failed earlier and cannot take more events", .path.display())]
    WriterFailed { path: PathBuf },
}

impl TraceError {
    /// An I/O error; ENOSPC/EDQUOT become [`TraceError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> TraceError {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => TraceError::DiskFull {
                path: path.to_path_buf(),
            },
            _ => TraceError::Io {
                op,
                path: path.to_path_buf(),
                source,
            },
        }
    }

    pub(crate) fn corrupt(file: &Path, offset: u64, what: impl Into<String>) -> TraceError {
        TraceError::Corrupt {
            file: file.to_path_buf(),
            offset,
            what: what.into(),
        }
    }

    /// True for [`TraceError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, TraceError::DiskFull { .. })
    }
}

pub type Result<T, E = TraceError> = std::result::Result<T, E>;
