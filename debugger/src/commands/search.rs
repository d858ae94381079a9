//! `watch EXPR` and `bisect EXPR`: the searches over the debugged run
//! (crate::search), as commands.

use serde_json::json;

use super::{Answer, CmdResult, Debugger};
use crate::search::{self, Change};
use crate::Position;

/// Runs `f` with the program's DWARF and the target, both borrowed from
/// the debugger (the program is loaded on first use).
fn with_program<T>(
    d: &mut Debugger,
    f: impl FnOnce(&mut crate::Target, &crate::dwarf::Program) -> Result<T, String>,
) -> Result<T, String> {
    super::print::program(d)?;
    let loaded = d.program.take();
    let result = match &loaded {
        Some(Ok(p)) => f(&mut d.target, p),
        _ => Err("no expressions in this program".to_string()),
    };
    d.program = loaded;
    result
}

fn change_json(c: &Change) -> serde_json::Value {
    json!({
        "event": c.event,
        "thread": c.thread,
        "tid": c.tid,
        "pc": format!("{:#x}", c.pc),
        "pc_exact": c.pc_exact,
        "place": c.place(),
        "old": c.old,
        "new": c.new,
    })
}

/// `watch EXPR [--to N]`: every change of EXPR's value from the current
/// pause to event N (default: the last pause of the run).
pub(super) fn watch(d: &mut Debugger, args: &str) -> CmdResult {
    let (text, to) = split_option(args, "--to")?;
    if text.is_empty() {
        return Err("watch needs an expression: `watch list_len`, `watch hot->refcount`".into());
    }
    let Position::Before(from) = d.target.position().clone() else {
        return Err("the program has ended: `goto N` or `run` first, then watch from there".into());
    };
    let last = d.target.event_count().saturating_sub(1);
    let to = to.unwrap_or(last);
    let changes = with_program(d, |t, p| {
        search::watch(t, p, &text, from, to).map_err(|e| e.to_string())
    })?;
    let mut lines: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    if lines.is_empty() {
        lines.push(format!(
            "{text} did not change between event {from} and event {to}"
        ));
    }
    let stop = super::moves::stop_answer(d);
    lines.push(stop.text);
    Ok(Answer::new(
        lines.join("\n"),
        json!({
            "expression": text,
            "from": from,
            "to": to,
            "changes": changes.iter().map(change_json).collect::<Vec<_>>(),
        }),
    ))
}

/// `bisect EXPR [--from N] [--to N]`.
pub(super) fn bisect(d: &mut Debugger, args: &str) -> CmdResult {
    let (rest, to) = split_option(args, "--to")?;
    let (text, from) = split_option(&rest, "--from")?;
    if text.is_empty() {
        return Err("bisect needs an expression that holds at the start and not at the end: `bisect list_len <= 8`".into());
    }
    let b = with_program(d, |t, p| {
        search::bisect(t, p, &text, from, to).map_err(|e| e.to_string())
    })?;
    let stop = super::moves::stop_answer(d);
    Ok(Answer::new(
        format!("{b}\n{}", stop.text),
        json!({
            "expression": text,
            "last_true": b.last_true,
            "first_false": b.first_false,
            "write": b.write.as_ref().map(change_json),
            "probes": b.probes,
            "replays": b.fresh_replays,
            "resumes": b.resumes,
            "checkpoints": b.checkpoints,
            "seconds": b.elapsed.as_secs_f64(),
        }),
    ))
}

/// Takes `NAME N` out of `args`: (the rest, N).
fn split_option(args: &str, name: &str) -> Result<(String, Option<usize>), String> {
    let Some(i) = args.find(name) else {
        return Ok((args.trim().to_string(), None));
    };
    let after = &args[i + name.len()..];
    let value = after.split_whitespace().next().unwrap_or("");
    let n = value
        .parse::<usize>()
        .map_err(|_| format!("{name} needs an event number (got \"{value}\")"))?;
    let consumed = after.find(value).map_or(0, |j| j + value.len());
    let rest = format!("{} {}", &args[..i], &after[consumed..]);
    Ok((rest.trim().to_string(), Some(n)))
}
