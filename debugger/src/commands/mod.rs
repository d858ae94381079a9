//! The debugger's commands: one table ([`COMMANDS`]) of names, aliases,
//! synopses and one-line docs (the `help` text is made from it), and the
//! [`Debugger`] that runs a command line against the [`Target`].
//!
//! Every command answers with an [`Answer`]: text for the terminal and a
//! JSON object for `--json`; a command that cannot be done answers with
//! one line saying why. No user input panics.

mod inspect;
mod moves;
mod print;
mod race;
mod search;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::dwarf::Program;
use crate::target::{Position, Target};

/// What a command says: text for people, a JSON object for programs.
#[derive(Clone, Debug)]
pub struct Answer {
    pub text: String,
    pub json: Value,
}

impl Answer {
    pub fn new(text: impl Into<String>, json: Value) -> Answer {
        Answer {
            text: text.into(),
            json,
        }
    }
}

/// A command's result: its answer, or one line saying why it failed.
pub type CmdResult = Result<Answer, String>;

/// One command of the table.
pub struct Command {
    /// `goto`, `info threads`.
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// The arguments, as `help` shows them: `N`, `[THREAD]`.
    pub synopsis: &'static str,
    /// One line: what it does.
    pub doc: &'static str,
    /// It moves the run: an empty line repeats it (as in gdb).
    pub moves: bool,
    run: fn(&mut Debugger, &str) -> CmdResult,
}

/// Every command, in the order `help` lists them.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "info events",
        aliases: &["info event"],
        synopsis: "[N | FROM-TO]",
        doc: "the sketch events around the current one (or N, or FROM-TO), the next one marked =>",
        moves: false,
        run: inspect::info_events,
    },
    Command {
        name: "info threads",
        aliases: &["info thread"],
        synopsis: "",
        doc: "each thread: its state, its next sketch event, its pc and file:line; * marks the selected one",
        moves: false,
        run: inspect::info_threads,
    },
    Command {
        name: "info locals",
        aliases: &[],
        synopsis: "",
        doc: "the selected frame's local variables and parameters, with their values",
        moves: false,
        run: print::info_locals,
    },
    Command {
        name: "thread",
        aliases: &[],
        synopsis: "N",
        doc: "select thread N (`thread 2`; `1.2` is process 1's thread 2) for bt, frame and print",
        moves: false,
        run: inspect::thread,
    },
    Command {
        name: "where",
        aliases: &["bt", "backtrace"],
        synopsis: "[THREAD]",
        doc: "the selected thread's (or THREAD's) frames: function and file:line, innermost first",
        moves: false,
        run: inspect::backtrace,
    },
    Command {
        name: "frame",
        aliases: &["f"],
        synopsis: "[N]",
        doc: "select frame N of the selected thread (its locals for print); without N, show the selected frame",
        moves: false,
        run: inspect::frame,
    },
    Command {
        name: "goto",
        aliases: &[],
        synopsis: "N",
        doc: "go to the pause before event N, forward or backward (the replay is deterministic)",
        moves: true,
        run: moves::goto,
    },
    Command {
        name: "next",
        aliases: &["n"],
        synopsis: "[THREAD]",
        doc: "run to the pause before the next sketch event (past THREAD's next event, with THREAD)",
        moves: true,
        run: moves::next,
    },
    Command {
        name: "continue",
        aliases: &["c", "cont"],
        synopsis: "",
        doc: "run to the end of the run: its failure, or its exit",
        moves: true,
        run: moves::cont,
    },
    Command {
        name: "run",
        aliases: &["r"],
        synopsis: "",
        doc: "start the run again, paused before event 0",
        moves: true,
        run: moves::run,
    },
    Command {
        name: "checkpoint",
        aliases: &[],
        synopsis: "",
        doc: "freeze a copy of the paused run: goto backward and restart resume from it instead of replaying from the start",
        moves: false,
        run: moves::checkpoint,
    },
    Command {
        name: "restart",
        aliases: &[],
        synopsis: "N",
        doc: "go back (or forward) to checkpoint N",
        moves: true,
        run: moves::restart,
    },
    Command {
        name: "info checkpoints",
        aliases: &["info checkpoint"],
        synopsis: "",
        doc: "the checkpoints: each one's number and the event it is paused before",
        moves: false,
        run: moves::info_checkpoints,
    },
    Command {
        name: "delete checkpoint",
        aliases: &[],
        synopsis: "N",
        doc: "drop checkpoint N (its frozen copy ends)",
        moves: false,
        run: moves::delete_checkpoint,
    },
    Command {
        name: "print",
        aliases: &["p"],
        synopsis: "EXPR",
        doc: "the value of a C expression over globals and the selected frame's locals",
        moves: false,
        run: print::print,
    },
    Command {
        name: "watch",
        aliases: &[],
        synopsis: "EXPR [--to N]",
        doc: "every change of EXPR's value from here to event N (the end): event, thread, instruction, file:line, old -> new",
        moves: true,
        run: search::watch,
    },
    Command {
        name: "bisect",
        aliases: &[],
        synopsis: "EXPR [--from N] [--to N]",
        doc: "binary search for the first event after which EXPR (true at the start) is false, then the write that broke it",
        moves: true,
        run: search::bisect,
    },
    Command {
        name: "race",
        aliases: &[],
        synopsis: "",
        doc: "the root cause of the reproduced failure: the races the saved schedule flips",
        moves: false,
        run: race::race,
    },
    Command {
        name: "help",
        aliases: &["h", "?"],
        synopsis: "[COMMAND]",
        doc: "the commands, or one command's arguments and what it does",
        moves: false,
        run: help,
    },
    Command {
        name: "quit",
        aliases: &["q", "exit"],
        synopsis: "",
        doc: "end the run and the debugger (Ctrl-D does too)",
        moves: false,
        run: quit,
    },
];

/// The debugged run and what the user selected in it.
pub struct Debugger {
    pub target: Target,
    /// The trace's directory.
    pub trace: PathBuf,
    /// The selected thread's baton key.
    selected: Option<u32>,
    /// The selected frame of the selected thread.
    frame: usize,
    /// The program's DWARF, loaded at the first `print` (or why not).
    program: Option<Result<Program, String>>,
    /// `race`'s answer, computed once (the replay is deterministic).
    race: Option<Answer>,
    quit: bool,
}

impl Debugger {
    pub fn new(target: Target, trace: PathBuf) -> Debugger {
        let mut d = Debugger {
            target,
            trace,
            selected: None,
            frame: 0,
            program: None,
            race: None,
            quit: false,
        };
        d.select_stopped_thread();
        d
    }

    /// `quit` was given.
    pub fn wants_quit(&self) -> bool {
        self.quit
    }

    /// Runs one command line. Its JSON object carries the line as
    /// `command`, and `error` when it failed.
    pub fn execute(&mut self, line: &str) -> CmdResult {
        let line = line.trim();
        let (cmd, args) = find(line)?;
        (cmd.run)(self, args.trim()).map(|mut a| {
            if let Value::Object(m) = &mut a.json {
                m.insert("command".into(), json!(line));
            }
            a
        })
    }

    /// The first answer: what is debugged (the trace, the schedule or
    /// the note saying there is none, the events, where the program's
    /// output goes) and where the run is.
    pub fn opening(&mut self, note: Option<&str>, output: Option<&Path>) -> Answer {
        let t = &self.target;
        let s = &t.schedule;
        let recorded = t.replay().recorded.as_ref().map(|o| o.summary.clone());
        let schedule = match note {
            Some(n) => n.to_string(),
            None if t.reproducing => format!(
                "the saved reproducing schedule ({} seed {:#x}, {} flip{})",
                s.policy_name(),
                s.seed,
                s.flips.len(),
                if s.flips.len() == 1 { "" } else { "s" }
            ),
            None => "the sketch's base schedule".to_string(),
        };
        let mut text = format!(
            "reprise: debugging {} ({} sketch, {} events; recorded: {})\n  schedule: {schedule}\n",
            self.trace.display(),
            t.replay().header.level,
            t.event_count(),
            recorded.as_deref().unwrap_or("no outcome (cut short)")
        );
        if let Some(o) = output {
            text.push_str(&format!(
                "  the program's stdout and stderr go to {}/\n",
                o.display()
            ));
        }
        let stop = self.stop();
        text.push_str(&stop.text);
        let mut v = json!({
            "trace": self.trace,
            "events": self.target.event_count(),
            "recorded": recorded,
            "reproducing": self.target.reproducing,
            "schedule": self.target.schedule.to_info(0),
            "note": note,
            "output": output,
        });
        if let (Value::Object(m), Value::Object(s)) = (&mut v, stop.json) {
            m.extend(s);
        }
        Answer::new(text, v)
    }

    /// Where the run is, as after a move.
    pub fn stop(&mut self) -> Answer {
        moves::stop_answer(self)
    }

    /// After a move: the thread the run stopped before is selected (as gdb
    /// selects the thread that stopped), at its innermost frame.
    fn select_stopped_thread(&mut self) {
        self.frame = 0;
        if let Position::Before(n) = self.target.position() {
            if let Some(e) = self.target.events().get(*n) {
                self.selected = Some(reprise_abi::replay::key(e.process as u32, e.thread));
            }
        }
    }
}

/// Whether `line` is a move command (an empty line repeats those).
pub fn is_move(line: &str) -> bool {
    find(line.trim()).is_ok_and(|(c, _)| c.moves)
}

/// The command names and aliases, for completion.
pub fn spellings() -> impl Iterator<Item = &'static str> {
    COMMANDS
        .iter()
        .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
}

/// The command `line` names and the rest of the line (its arguments):
/// an exact name or alias (the longest), else the one command whose name
/// the words begin (`cont`, `i th`), else an error naming the nearest.
fn find(line: &str) -> Result<(&'static Command, &str), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.is_empty() {
        return Err("no command (help lists them)".into());
    }
    let mut exact: Option<(&Command, usize)> = None;
    let mut prefixed: Vec<(&Command, usize)> = Vec::new();
    for c in COMMANDS {
        for s in std::iter::once(c.name).chain(c.aliases.iter().copied()) {
            let sw: Vec<&str> = s.split(' ').collect();
            if words.len() < sw.len() {
                continue;
            }
            let head = &words[..sw.len()];
            if head == sw.as_slice() {
                if exact.is_none_or(|(_, n)| sw.len() > n) {
                    exact = Some((c, sw.len()));
                }
            } else if head.iter().zip(&sw).all(|(w, s)| s.starts_with(w))
                && !prefixed.iter().any(|(p, _)| std::ptr::eq(*p, c))
            {
                prefixed.push((c, sw.len()));
            }
        }
    }
    let (cmd, n) = match (exact, prefixed.as_slice()) {
        (Some(e), _) => e,
        (None, [one]) => *one,
        (None, []) => return Err(incomplete(&words).unwrap_or_else(|| unknown(&words))),
        (None, many) => {
            let names: Vec<&str> = many.iter().map(|(c, _)| c.name).collect();
            return Err(format!(
                "ambiguous command \"{}\": {}",
                words[..many[0].1.min(words.len())].join(" "),
                names.join(", ")
            ));
        }
    };
    Ok((cmd, rest_after_words(line, n)))
}

/// `info` alone: the commands it begins.
fn incomplete(words: &[&str]) -> Option<String> {
    let [first] = words else { return None };
    let names: Vec<&str> = COMMANDS
        .iter()
        .map(|c| c.name)
        .filter(|n| n.split(' ').count() > 1 && n.split(' ').next() == Some(*first))
        .collect();
    (!names.is_empty()).then(|| format!("\"{first}\" needs one of: {}", names.join(", ")))
}

/// `line` after its first `n` words.
fn rest_after_words(line: &str, n: usize) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest
}

/// `unknown command "contineu"; did you mean "continue"? (help lists
/// them)`: the nearest name or alias by edit distance.
fn unknown(words: &[&str]) -> String {
    let mut best: Option<(usize, &str, String)> = None;
    for s in spellings() {
        let n = s.split(' ').count().min(words.len());
        let typed = words[..n].join(" ");
        let d = edit_distance(&typed, s);
        if best.as_ref().is_none_or(|(bd, _, _)| d < *bd) {
            best = Some((d, s, typed));
        }
    }
    match best {
        Some((d, s, typed))
            if d < typed.chars().count() && d <= typed.chars().count().div_ceil(2).max(2) =>
        {
            format!("unknown command \"{typed}\"; did you mean \"{s}\"? (help lists them)")
        }
        _ => match incomplete(&words[..1]) {
            // `info locls`: what `info` has.
            Some(has) if words.len() > 1 => {
                format!("unknown command \"{} {}\"; {has}", words[0], words[1])
            }
            _ => format!("unknown command \"{}\" (help lists them)", words[0]),
        },
    }
}

/// Levenshtein distance between two strings, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn help(_d: &mut Debugger, args: &str) -> CmdResult {
    if args.is_empty() {
        let usage = |c: &Command| format!("{} {}", c.name, c.synopsis).trim_end().to_string();
        let width = COMMANDS.iter().map(|c| usage(c).len()).max().unwrap_or(0);
        let mut text = String::from("commands (unique prefixes work too: `cont`, `i th`):\n");
        for c in COMMANDS {
            text.push_str(&format!("  {:width$}  {}\n", usage(c), c.doc));
        }
        text.push_str("An empty line repeats the last goto/next/continue/run.");
        let list: Vec<Value> = COMMANDS.iter().map(command_json).collect();
        return Ok(Answer::new(text, json!({ "commands": list })));
    }
    let (c, _) = find(args)?;
    let mut text = format!("{} {}\n  {}", c.name, c.synopsis, c.doc);
    if !c.aliases.is_empty() {
        text.push_str(&format!("\n  also: {}", c.aliases.join(", ")));
    }
    Ok(Answer::new(text.replace(" \n", "\n"), command_json(c)))
}

fn command_json(c: &Command) -> Value {
    json!({ "name": c.name, "aliases": c.aliases, "synopsis": c.synopsis, "doc": c.doc })
}

fn quit(d: &mut Debugger, _args: &str) -> CmdResult {
    d.quit = true;
    d.target.kill();
    Ok(Answer::new("", json!({ "quit": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_names_aliases_and_prefixes() {
        let name = |l: &str| find(l).map(|(c, a)| (c.name, a.to_string()));
        assert_eq!(name("goto 12"), Ok(("goto", "12".into())));
        assert_eq!(name("bt 2"), Ok(("where", "2".into())));
        assert_eq!(name("info threads"), Ok(("info threads", "".into())));
        assert_eq!(name("i th"), Ok(("info threads", "".into())));
        assert_eq!(name("cont"), Ok(("continue", "".into())));
        assert_eq!(name("c"), Ok(("continue", "".into())));
        assert_eq!(
            name("p  conn.proc_info == 0"),
            Ok(("print", "conn.proc_info == 0".into()))
        );
        assert_eq!(
            name("info events 10-20"),
            Ok(("info events", "10-20".into()))
        );
    }

    #[test]
    fn unknown_commands_name_the_nearest() {
        let e = find("contineu").err().unwrap();
        assert_eq!(
            e,
            "unknown command \"contineu\"; did you mean \"continue\"? (help lists them)"
        );
        assert!(find("info thraeds")
            .err()
            .unwrap()
            .contains("\"info threads\""));
        assert_eq!(
            find("info zzz").err().unwrap(),
            "unknown command \"info zzz\"; \"info\" needs one of: info events, info threads, info locals, info checkpoints"
        );
        assert!(find("xyzzy")
            .err()
            .unwrap()
            .starts_with("unknown command \"xyzzy\""));
        assert!(find("").is_err());
    }

    #[test]
    fn help_lists_every_command() {
        for c in COMMANDS {
            assert!(!c.doc.is_empty() && !c.doc.contains('\n'), "{}", c.name);
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
