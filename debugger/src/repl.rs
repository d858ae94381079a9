//! The prompt: rustyline on a terminal (history, line editing, tab
//! completion of command names), plain lines otherwise (`echo cmds |
//! reprise debug`). Commands given up front (`-ex`) run first, as in gdb.

use std::borrow::Cow;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::commands::{self, Answer, Debugger};

pub const PROMPT: &str = "(reprise) ";

/// How the debugger talks.
#[derive(Clone, Debug, Default)]
pub struct ReplOptions {
    /// One JSON object per answer (errors as `{"error": ...}`), on stdout.
    pub json: bool,
    /// Run `commands` and end, without a prompt.
    pub batch: bool,
    /// Commands to run before the prompt (`-ex`).
    pub commands: Vec<String>,
}

/// Runs the `-ex` commands, then the prompt until `quit` or end of input.
/// Returns the exit status: 1 when a `--batch` command failed, else 0.
pub fn run(d: &mut Debugger, opts: &ReplOptions) -> u8 {
    let mut failed = false;
    for c in &opts.commands {
        failed |= !execute(d, c, opts.json);
        if d.wants_quit() {
            return u8::from(failed && opts.batch);
        }
    }
    if opts.batch {
        return u8::from(failed);
    }
    if std::io::stdin().is_terminal() {
        interactive(d, opts.json);
    } else {
        plain(d, opts.json);
    }
    0
}

/// Prints an answer as the options say.
pub fn show(answer: &Answer, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", answer.json);
    } else if !answer.text.is_empty() {
        let _ = writeln!(out, "{}", answer.text);
    }
    let _ = out.flush();
}

/// Runs one command line and prints its answer or its error; false on
/// an error.
pub fn execute(d: &mut Debugger, line: &str, json: bool) -> bool {
    match d.execute(line) {
        Ok(a) => {
            show(&a, json);
            true
        }
        Err(e) => {
            if json {
                let v = serde_json::json!({ "command": line.trim(), "error": e });
                let _ = writeln!(std::io::stdout().lock(), "{v}");
            } else {
                // After stdout's answers so far, in order on a terminal.
                let _ = std::io::stdout().flush();
                eprintln!("{e}");
            }
            false
        }
    }
}

/// Lines from a pipe or a file, no prompt.
fn plain(d: &mut Debugger, json: bool) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        execute(d, &line, json);
        if d.wants_quit() {
            return;
        }
    }
}

fn interactive(d: &mut Debugger, json: bool) {
    let mut rl = match Editor::<CommandNames, _>::new() {
        Ok(rl) => rl,
        Err(_) => return plain(d, json),
    };
    rl.set_helper(Some(CommandNames));
    let history = history_file();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    let mut last_move: Option<String> = None;
    loop {
        match rl.readline(PROMPT) {
            Ok(line) => {
                let line = match (line.trim(), &last_move) {
                    // An empty line repeats the last move, as gdb does.
                    ("", Some(m)) => m.clone(),
                    ("", None) => continue,
                    (l, _) => {
                        let _ = rl.add_history_entry(l);
                        l.to_string()
                    }
                };
                if commands::is_move(&line) {
                    last_move = Some(line.clone());
                }
                execute(d, &line, json);
                if d.wants_quit() {
                    break;
                }
            }
            // Ctrl-C clears the line, as in gdb and a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                println!("quit");
                break;
            }
            Err(e) => {
                eprintln!("reprise: cannot read the terminal: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = rl.save_history(h);
    }
}

/// `$XDG_STATE_HOME/reprise/history`, else `~/.local/state/reprise/history`.
fn history_file() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state"))
        })?;
    Some(state.join("reprise").join("history"))
}

/// Tab completion of command names (`i` + Tab: `info events`, `info
/// threads`).
struct CommandNames;

impl Completer for CommandNames {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let typed = line[..pos].trim_start();
        let start = pos - typed.len();
        // Names first: an alias (`info thread`) only when no name fits.
        let fits = |s: &&str| s.len() > 2 && s.starts_with(typed) && *s != typed;
        let mut names: Vec<&str> = commands::COMMANDS
            .iter()
            .map(|c| c.name)
            .filter(fits)
            .collect();
        if names.is_empty() {
            names = commands::spellings().filter(fits).collect();
        }
        names.sort_unstable();
        names.dedup();
        Ok((
            start,
            names
                .into_iter()
                .map(|s| Pair {
                    display: s.to_string(),
                    replacement: format!("{s} "),
                })
                .collect(),
        ))
    }
}

impl Hinter for CommandNames {
    type Hint = String;
}

impl Highlighter for CommandNames {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        Cow::Borrowed(line)
    }
}

impl Validator for CommandNames {}

impl Helper for CommandNames {}
