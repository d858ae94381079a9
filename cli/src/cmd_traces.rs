//! `reprise ls` and `reprise dump`: looking at recorded traces.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use reprise_abi::EventKind;
use reprise_schema::{listing, location, TraceReader};

/// List the recorded traces: name, program, date, sketch level, outcome, size.
#[derive(Args)]
pub struct LsArgs {
    /// Look in this directory instead of the trace root.
    #[arg(long)]
    root: Option<PathBuf>,
}

/// Print a trace's header, events and outcome readably.
#[derive(Args)]
pub struct DumpArgs {
    /// The trace: a name from `reprise ls`, a path, or (default) the latest.
    trace: Option<String>,
    /// Only events in this range of sequence numbers: N, N-M, N- or -M.
    range: Option<String>,
    /// One JSON object per line: the header, each event, the outcome.
    #[arg(long)]
    json: bool,
}

fn root(arg: Option<PathBuf>) -> Result<PathBuf> {
    match arg {
        Some(r) => Ok(r),
        None => location::trace_root().context("cannot find the trace directory"),
    }
}

pub fn ls(a: LsArgs) -> Result<u8> {
    let root = root(a.root)?;
    let rows = listing::list_traces(&root);
    if rows.is_empty() {
        println!(
            "no traces in {}: record one with `reprise record PROGRAM`",
            root.display()
        );
    } else {
        print!("{}", listing::format_trace_table(&rows));
    }
    Ok(0)
}

pub fn dump(a: DumpArgs) -> Result<u8> {
    let root = location::trace_root().context("cannot find the trace directory")?;
    let dir = location::resolve_trace(&root, a.trace.as_deref())?;
    let reader = TraceReader::open(&dir)?;
    let range = match &a.range {
        Some(r) => Some(listing::parse_range(r)?),
        None => None,
    };
    for w in reader.warnings() {
        eprintln!("reprise: warning: {w}");
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let h = reader.header();
    if a.json {
        writeln!(out, "{}", serde_json::json!({ "header": h }))?;
    } else {
        let argv: Vec<String> = h
            .argv
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        writeln!(out, "trace    {}", dir.display())?;
        writeln!(out, "program  {}", h.program_path.display())?;
        writeln!(out, "argv     {}", argv.join(" "))?;
        let sketch = reprise_schema::Sketch {
            level: h.level,
            block_period: h.block_period,
        };
        let chaos = if h.chaos {
            ", recorded with --chaos (random pauses)"
        } else {
            ""
        };
        writeln!(out, "sketch   {sketch}{chaos}")?;
        writeln!(
            out,
            "recorded {} on {} ({}, {} cpus)",
            listing::format_time_utc(h.start_time_unix_ns),
            h.machine,
            h.kernel,
            h.cpus
        )?;
        writeln!(out)?;
    }
    // Function and block entries are named (func and bb sketches).
    let names = (h.level >= reprise_schema::SketchLevel::Func)
        .then(|| reprise_replayer::code_names::CodeNames::open(&h.program_path));
    for ev in reader.events() {
        let ev = ev?;
        if let Some(r) = &range {
            if ev.seq < *r.start() {
                continue;
            }
            if ev.seq > *r.end() {
                break;
            }
        }
        let line = if a.json {
            serde_json::json!({ "event": ev }).to_string()
        } else {
            let mut line = listing::format_event(&ev);
            let code = matches!(ev.kind, EventKind::FuncEntry | EventKind::Block);
            if let (true, Some(n)) = (code, names.as_ref().and_then(|n| n.name(ev.object))) {
                line.push(' ');
                line.push_str(&n);
            }
            line
        };
        if writeln!(out, "{line}").is_err() {
            return Ok(0); // a closed pipe (`| head`) is not an error
        }
    }
    match reader.outcome() {
        Some(o) if a.json => writeln!(out, "{}", serde_json::json!({ "outcome": o }))?,
        Some(o) => writeln!(out, "\n{}", listing::format_outcome(o))?,
        None if !a.json => writeln!(out, "\n(no outcome: the recording was cut short)")?,
        None => {}
    }
    Ok(0)
}
