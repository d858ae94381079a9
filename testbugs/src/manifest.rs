//! The corpus manifest (`testbugs/manifest.toml`): one `[[bug]]` per program.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// The whole manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "bug")]
    pub bugs: Vec<Bug>,
}

/// One buggy program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bug {
    pub name: String,
    /// File name under `testbugs/programs/`.
    pub source: String,
    pub lang: Lang,
    pub kind: BugKind,
    /// The real bug it follows (project and bug number).
    pub models: String,
    pub description: String,
    /// Compiler flags (`-g -O1 -pthread` for all of them today).
    pub flags: Vec<String>,
    /// Default arguments: the failure is rare.
    pub args: Vec<String>,
    /// Arguments under which it fails often.
    pub frequent_args: Vec<String>,
    /// A file (relative to `testbugs/`) fed to stdin.
    #[serde(default)]
    pub stdin: Option<String>,
    pub expect: Expect,
    /// `FILE:LINE` of the lines marked `/* RACE */` that cause the bug.
    pub race_lines: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Lang {
    #[serde(rename = "c")]
    C,
    #[serde(rename = "c++")]
    Cxx,
}

impl Lang {
    /// The compiler driver for this language.
    pub fn compiler(self) -> &'static str {
        match self {
            Lang::C => "gcc",
            Lang::Cxx => "g++",
        }
    }
}

/// The kind of concurrency bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BugKind {
    AtomicitySingle,
    AtomicityMulti,
    OrderUseBeforeInit,
    UseAfterFree,
    Deadlock,
    LostWakeup,
    LostUpdateOutput,
    InputDependent,
    ThreeThread,
    Fork,
    /// The process exits (exit handlers run) while threads still run.
    ExitWhileRunning,
    /// Many threads (about 20), each doing its own I/O.
    ManyThreads,
    /// Behaviour depends on the file system and on argv (a config file found
    /// from argv[0], created when missing, reloaded when it changes).
    FsAndArgv,
}

impl BugKind {
    /// Every kind; the corpus must cover all of them.
    pub const ALL: [BugKind; 13] = [
        BugKind::AtomicitySingle,
        BugKind::AtomicityMulti,
        BugKind::OrderUseBeforeInit,
        BugKind::UseAfterFree,
        BugKind::Deadlock,
        BugKind::LostWakeup,
        BugKind::LostUpdateOutput,
        BugKind::InputDependent,
        BugKind::ThreeThread,
        BugKind::Fork,
        BugKind::ExitWhileRunning,
        BugKind::ManyThreads,
        BugKind::FsAndArgv,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BugKind::AtomicitySingle => "atomicity-single",
            BugKind::AtomicityMulti => "atomicity-multi",
            BugKind::OrderUseBeforeInit => "order-use-before-init",
            BugKind::UseAfterFree => "use-after-free",
            BugKind::Deadlock => "deadlock",
            BugKind::LostWakeup => "lost-wakeup",
            BugKind::LostUpdateOutput => "lost-update-output",
            BugKind::InputDependent => "input-dependent",
            BugKind::ThreeThread => "three-thread",
            BugKind::Fork => "fork",
            BugKind::ExitWhileRunning => "exit-while-running",
            BugKind::ManyThreads => "many-threads",
            BugKind::FsAndArgv => "fs-and-argv",
        }
    }
}

impl fmt::Display for BugKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the failure shows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectKind {
    Signal,
    Assertion,
    Deadlock,
    Hang,
    WrongOutput,
    ExitCode,
}

/// The expected failure signature.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub kind: ExpectKind,
    /// For `signal`: e.g. "SIGSEGV".
    #[serde(default)]
    pub signal: Option<String>,
    /// For `assertion`: a substring of the assertion message.
    #[serde(default)]
    pub assertion: Option<String>,
    /// The correct output line; a run whose stdout lacks it is wrong output.
    #[serde(default)]
    pub output: Option<String>,
    /// For `exit-code`.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ExpectKind::Signal => write!(f, "{}", self.signal.as_deref().unwrap_or("signal")),
            ExpectKind::Assertion => write!(f, "assert"),
            ExpectKind::Deadlock => write!(f, "deadlock"),
            ExpectKind::Hang => write!(f, "hang"),
            ExpectKind::WrongOutput => write!(f, "wrong output"),
            ExpectKind::ExitCode => write!(f, "exit {}", self.exit_code.unwrap_or(-1)),
        }
    }
}

/// `testbugs/` in the source tree.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads `testbugs/manifest.toml` from the source tree.
pub fn load_manifest() -> Result<Manifest, Error> {
    Manifest::load(&corpus_dir().join("manifest.toml"))
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(&text).map_err(|e| match e {
            Error::Toml { source, .. } => Error::Toml {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Manifest, Error> {
        toml::from_str(text).map_err(|source| Error::Toml {
            path: PathBuf::from("<string>"),
            source,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Bug> {
        self.bugs.iter().find(|b| b.name == name)
    }

    /// Checks the manifest against the programs in `corpus`: unique names,
    /// sources present, every race line marked `/* RACE */`, every program
    /// listed, the expectation complete, all kinds covered. Returns every
    /// problem found.
    pub fn validate(&self, corpus: &Path) -> Result<(), Error> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        let programs = corpus.join("programs");
        for b in &self.bugs {
            if !names.insert(b.name.as_str()) {
                problems.push(format!("{}: duplicate name", b.name));
            }
            let src = programs.join(&b.source);
            let text = match std::fs::read_to_string(&src) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{}: source {}: {e}", b.name, src.display()));
                    continue;
                }
            };
            let lines: Vec<&str> = text.lines().collect();
            if b.race_lines.is_empty() {
                problems.push(format!("{}: no race_lines", b.name));
            }
            for rl in &b.race_lines {
                match rl.rsplit_once(':').map(|(f, l)| (f, l.parse::<usize>())) {
                    Some((file, Ok(line))) if file == b.source => {
                        match lines.get(line.wrapping_sub(1)) {
                            Some(l) if l.contains("/* RACE */") => {}
                            _ => {
                                problems.push(format!("{}: {rl} is not a /* RACE */ line", b.name))
                            }
                        }
                    }
                    _ => problems.push(format!("{}: bad race line {rl:?}", b.name)),
                }
            }
            let marked = lines.iter().filter(|l| l.contains("/* RACE */")).count();
            if marked != b.race_lines.len() {
                problems.push(format!(
                    "{}: {marked} lines marked /* RACE */ but {} race_lines",
                    b.name,
                    b.race_lines.len()
                ));
            }
            if let Some(stdin) = &b.stdin {
                if !corpus.join(stdin).is_file() {
                    problems.push(format!("{}: stdin file {stdin} missing", b.name));
                }
            }
            let e = &b.expect;
            let complete = match e.kind {
                ExpectKind::Signal => e
                    .signal
                    .as_deref()
                    .and_then(crate::run::signal_number)
                    .is_some(),
                ExpectKind::Assertion => e.assertion.is_some(),
                ExpectKind::WrongOutput => e.output.is_some(),
                ExpectKind::ExitCode => matches!(e.exit_code, Some(c) if c != 0),
                ExpectKind::Deadlock | ExpectKind::Hang => true,
            };
            if !complete {
                problems.push(format!("{}: incomplete expect {:?}", b.name, e));
            }
            let ext_ok = match b.lang {
                Lang::C => b.source.ends_with(".c"),
                Lang::Cxx => b.source.ends_with(".cpp") || b.source.ends_with(".cc"),
            };
            if !ext_ok {
                problems.push(format!(
                    "{}: source {} does not match lang",
                    b.name, b.source
                ));
            }
        }
        if let Ok(rd) = std::fs::read_dir(&programs) {
            for entry in rd.flatten() {
                let f = entry.file_name().to_string_lossy().into_owned();
                if (f.ends_with(".c") || f.ends_with(".cpp"))
                    && !self.bugs.iter().any(|b| b.source == f)
                {
                    problems.push(format!("programs/{f} is not listed in the manifest"));
                }
            }
        }
        for k in BugKind::ALL {
            if !self.bugs.iter().any(|b| b.kind == k) {
                problems.push(format!("no program of kind {k}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(problems))
        }
    }
}
