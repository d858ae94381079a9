//! Errors of this crate.

use std::path::PathBuf;

use crate::RemotePtr;

pub type Result<T, E = TraceeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TraceeError {
    /// ptrace (or reading another process's memory) was refused.
    #[error(
        "not permitted to ptrace process {pid} ({op}): allow it with \
         `sysctl kernel.yama.ptrace_scope=0` (or run reprise as the program's parent \
         with ptrace_scope 1), and inside a container start it with \
         `--cap-add=SYS_PTRACE` (docker/podman run)"
    )]
    PtracePermission { pid: i32, op: &'static str },

    #[error("process or thread {pid} does not exist (any more)")]
    NoSuchProcess { pid: i32 },

    #[error("ptrace {op} on thread {tid}: {source}")]
    Ptrace {
        op: &'static str,
        tid: i32,
        #[source]
        source: nix::Error,
    },

    #[error("thread {tid} did not stop within {millis} ms after PTRACE_INTERRUPT")]
    StopTimeout { tid: i32, millis: u64 },

    #[error("reading {len} bytes at {addr} in process {pid}: {source}")]
    Memory {
        pid: i32,
        addr: RemotePtr<u8>,
        len: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("address {addr} is outside the stack snapshot {base:#x}..{end:#x}")]
    OutsideSnapshot {
        addr: RemotePtr<u8>,
        base: u64,
        end: u64,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("malformed /proc/PID/maps line {line}: {text:?}")]
    BadMaps { line: usize, text: String },

    #[error("{}: bad ELF file: {msg}", path.display())]
    Elf { path: PathBuf, msg: String },

    #[error(
        "{}: no instruction at {vaddr:#x} (outside the executable sections, or undecodable)",
        path.display()
    )]
    Decode { path: PathBuf, vaddr: u64 },

    #[error("DWARF: {0}")]
    Dwarf(#[from] gimli::Error),
}

impl TraceeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TraceeError::Io {
            path: path.into(),
            source,
        }
    }
}
