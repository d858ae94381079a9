//! Where traces live, and how a user names one.
//!
//! The root is `$REPRISE_TRACE_DIR`, else `$XDG_DATA_HOME/reprise`, else
//! `~/.local/share/reprise` (created with mode 0700). Each trace is
//! `<root>/<program>-<N>`; `<root>/latest-trace` is a symlink to the newest.

use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Result, TraceError};

/// Name of the symlink to the most recent trace.
pub const LATEST: &str = "latest-trace";

/// The trace root for these environment values (no side effects).
pub fn trace_root_from(get: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
    if let Some(d) = nonempty("REPRISE_TRACE_DIR") {
        return Ok(PathBuf::from(d));
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(d) = nonempty("XDG_DATA_HOME").filter(|d| Path::new(d).is_absolute()) {
        return Ok(PathBuf::from(d).join("reprise"));
    }
    if let Some(h) = nonempty("HOME") {
        return Ok(PathBuf::from(h).join(".local/share/reprise"));
    }
    Err(TraceError::NoHome)
}

/// The trace root from the environment, created (mode 0700) if missing.
pub fn trace_root() -> Result<PathBuf> {
    let root = trace_root_from(|k| std::env::var_os(k))?;
    ensure_root(&root)?;
    Ok(root)
}

/// Creates `root` (parents with default permissions, `root` itself 0700).
pub fn ensure_root(root: &Path) -> Result<()> {
    if root.is_dir() {
        return Ok(());
    }
    if let Some(parent) = root.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent)
                .map_err(|e| TraceError::io("create directory", parent, e))?;
        }
    }
    match fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(|e| TraceError::io("set permissions of", root, e)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && root.is_dir() => Ok(()),
        Err(e) => Err(TraceError::io("create directory", root, e)),
    }
}

/// A file-name-safe version of a program's name (its last path component).
pub fn sanitize_program_name(program: &str) -> String {
    let base = program.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
    let mut s: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while s.starts_with('.') {
        s.remove(0);
    }
    if s.is_empty() {
        s = "trace".into();
    }
    if s == LATEST {
        s.push('_');
    }
    s
}

/// Creates and returns a new, empty trace directory `<root>/<program>-<N>`
/// (mode 0700) with the smallest unused `N` (from 0). Race-free: two
/// recorders never get the same directory.
pub fn new_trace_dir(root: &Path, program_name: &str) -> Result<PathBuf> {
    ensure_root(root)?;
    let name = sanitize_program_name(program_name);
    for n in 0u64.. {
        let dir = root.join(format!("{name}-{n}"));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| TraceError::io("set permissions of", &dir, e))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TraceError::io("create directory", &dir, e)),
        }
    }
    unreachable!()
}

/// Points `<root>/latest-trace` at `dir`, atomically (a new symlink renamed
/// over the old one). The link is relative when `dir` is inside `root`.
pub fn set_latest(root: &Path, dir: &Path) -> Result<()> {
    let target = match dir.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => dir.to_path_buf(),
    };
    let link = root.join(LATEST);
    let tmp = root.join(format!(".{LATEST}.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .map_err(|e| TraceError::io("create symlink", &tmp, e))?;
    fs::rename(&tmp, &link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        TraceError::io("update", &link, e)
    })
}

/// The trace a user means: `None` is the latest trace; otherwise `arg` is a
/// path to a trace directory or the name of a trace under `root`.
pub fn resolve_trace(root: &Path, arg: Option<&str>) -> Result<PathBuf> {
    match arg {
        None => {
            let link = root.join(LATEST);
            match fs::read_link(&link) {
                Ok(target) => {
                    let dir = root.join(target);
                    if dir.is_dir() {
                        Ok(dir)
                    } else {
                        Err(TraceError::LatestGone { dir })
                    }
                }
                Err(_) => Err(TraceError::NoTraces {
                    root: root.to_path_buf(),
                }),
            }
        }
        Some(a) => {
            let p = Path::new(a);
            if p.is_dir() {
                return Ok(p.to_path_buf());
            }
            let under = root.join(a);
            if !a.contains('/') && !a.is_empty() && under.is_dir() {
                return Ok(under);
            }
            if a.contains('/') {
                Err(TraceError::NotFound {
                    dir: p.to_path_buf(),
                })
            } else {
                Err(TraceError::NoSuchTrace {
                    name: a.to_string(),
                    root: root.to_path_buf(),
                })
            }
        }
    }
}
