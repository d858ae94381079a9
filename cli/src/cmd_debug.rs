//! `reprise debug`: the reproduced run under a prompt (see
//! `reprise_debugger`).

use std::ffi::OsString;

use anyhow::{Context, Result};
use clap::Args;
use reprise_debugger::commands::Debugger;
use reprise_debugger::repl::{self, ReplOptions};
use reprise_debugger::Target;
use reprise_schema::location;

/// Debug a trace's reproduced run: replay its saved reproducing schedule
/// (else its base schedule, with a note) deterministically, paused before
/// event 0, under a prompt: events, threads, backtraces, goto forward and
/// backward, print, race. `help` at the prompt lists the commands.
#[derive(Args)]
pub struct DebugArgs {
    /// The trace: a name from `reprise ls`, a path, or (default) the latest.
    trace: Option<String>,
    /// Run this command first (as gdb's -ex; repeatable, in order).
    /// `-ex CMD` and `--ex CMD` are the same.
    #[arg(long = "ex", value_name = "CMD")]
    ex: Vec<String>,
    /// Run the --ex commands and end, without a prompt (exit status 1 if
    /// one of them failed).
    #[arg(long)]
    batch: bool,
    /// Print each command's answer as one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Debug even if the program changed since it was recorded.
    #[arg(long)]
    force: bool,
    /// Throw the program's stdout and stderr away instead of keeping them
    /// in a file.
    #[arg(long)]
    no_program_output: bool,
}

/// gdb's `-ex CMD` as `--ex CMD` (clap's short options are one letter).
pub fn rewrite_ex(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "debug") {
        for a in args.iter_mut().skip(2) {
            if a == "-ex" {
                *a = OsString::from("--ex");
            } else if a == "--" {
                break;
            }
        }
    }
    args
}

pub fn run(a: DebugArgs) -> Result<u8> {
    let root = location::trace_root().context("cannot find the trace directory")?;
    let dir = location::resolve_trace(&root, a.trace.as_deref())?;
    // A damaged or foreign directory is one error line, before anything else.
    reprise_schema::TraceReader::open(&dir)?;
    // The program's output: into a directory kept after the session
    // (the user may want to read it), or nowhere.
    let output = if a.no_program_output {
        None
    } else {
        let d = tempfile::Builder::new()
            .prefix("reprise-debug-")
            .tempdir()
            .context("cannot create a directory for the program's output")?
            .keep();
        Some(d)
    };
    let (target, note) = Target::open_with_output(&dir, a.force, output.clone())?;
    let mut debugger = Debugger::new(target, dir);
    let opening = debugger.opening(note.as_deref(), output.as_deref());
    repl::show(&opening, a.json);
    let opts = ReplOptions {
        json: a.json,
        batch: a.batch,
        commands: a.ex,
    };
    Ok(repl::run(&mut debugger, &opts))
}
