//! The commands that move the run: goto, next, continue, run; and the
//! line that says where the run is after each of them.

use std::path::Path;

use serde_json::{json, Value};

use super::inspect::parse_thread;
use super::{Answer, CmdResult, Debugger};
use crate::target::{event_what, Position};
use reprise_tracee::Frame;

pub(super) fn goto(d: &mut Debugger, args: &str) -> CmdResult {
    let n = parse_event(d, args, "goto")?;
    d.target.goto(n).map_err(|e| e.to_string())?;
    Ok(moved(d))
}

pub(super) fn next(d: &mut Debugger, args: &str) -> CmdResult {
    let thread = match args {
        "" => None,
        a => Some(parse_thread(a)?),
    };
    d.target.next(thread).map_err(|e| e.to_string())?;
    Ok(moved(d))
}

pub(super) fn cont(d: &mut Debugger, args: &str) -> CmdResult {
    no_args(args, "continue")?;
    if let Position::Ended(_) = d.target.position() {
        return Err(crate::DebugError::Ended.to_string());
    }
    d.target.cont().map_err(|e| e.to_string())?;
    Ok(moved(d))
}

pub(super) fn run(d: &mut Debugger, args: &str) -> CmdResult {
    no_args(args, "run")?;
    d.target.restart().map_err(|e| e.to_string())?;
    Ok(moved(d))
}

pub(super) fn checkpoint(d: &mut Debugger, args: &str) -> CmdResult {
    no_args(args, "checkpoint")?;
    let id = d.target.checkpoint().map_err(|e| e.to_string())?;
    let event = match d.target.position() {
        Position::Before(n) => *n,
        Position::Ended(_) => d.target.event_count(),
    };
    Ok(Answer::new(
        format!("checkpoint {id}: before event {event} (`restart {id}` comes back here)"),
        json!({ "checkpoint": id, "event": event }),
    ))
}

pub(super) fn restart(d: &mut Debugger, args: &str) -> CmdResult {
    let id = args.trim().parse::<usize>().map_err(|_| {
        format!("restart needs a checkpoint number (`info checkpoints` lists them), not \"{args}\"")
    })?;
    d.target.restart_from(id).map_err(|e| e.to_string())?;
    Ok(moved(d))
}

pub(super) fn info_checkpoints(d: &mut Debugger, args: &str) -> CmdResult {
    no_args(args, "info checkpoints")?;
    let list = d.target.checkpoints();
    let mut text = String::new();
    for (id, event, pid) in &list {
        text.push_str(&format!(
            "checkpoint {id}: before event {event} (frozen copy pid {pid})\n"
        ));
    }
    if list.is_empty() {
        text.push_str("no checkpoints (`checkpoint` makes one)");
    }
    let v: Vec<Value> = list
        .iter()
        .map(|(id, event, pid)| json!({ "checkpoint": id, "event": event, "pid": pid }))
        .collect();
    Ok(Answer::new(text.trim_end(), json!({ "checkpoints": v })))
}

pub(super) fn delete_checkpoint(d: &mut Debugger, args: &str) -> CmdResult {
    let id = args
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("delete checkpoint needs a checkpoint number, not \"{args}\""))?;
    d.target.delete_checkpoint(id).map_err(|e| e.to_string())?;
    Ok(Answer::new(
        format!("checkpoint {id} deleted"),
        json!({ "deleted": id }),
    ))
}

/// After a move: the stopped thread selected, and where the run is.
pub(super) fn moved(d: &mut Debugger) -> Answer {
    d.select_stopped_thread();
    let mut answer = stop_answer(d);
    if let Some(note) = d.target.take_note() {
        answer.text = format!("note: {note}\n{}", answer.text);
        answer.json["note"] = serde_json::Value::String(note);
    }
    answer
}

pub(super) fn no_args(args: &str, cmd: &str) -> Result<(), String> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(format!("{cmd} takes no arguments (got \"{args}\")"))
    }
}

/// An event number `0..=count` (the count itself is the end of the run).
pub(super) fn parse_event(d: &Debugger, text: &str, cmd: &str) -> Result<usize, String> {
    let total = d.target.event_count();
    match text.trim().parse::<usize>() {
        Ok(n) if n <= total => Ok(n),
        Ok(n) => Err(format!(
            "event {n} is past the end: the run has {total} events (0 to {})",
            total.saturating_sub(1)
        )),
        Err(_) if text.trim().is_empty() => Err(format!(
            "{cmd} needs an event number (0 to {})",
            total.saturating_sub(1)
        )),
        Err(_) => Err(format!(
            "\"{}\" is not an event number (0 to {})",
            text.trim(),
            total.saturating_sub(1)
        )),
    }
}

/// `stopped before event 41 of 312: thread 2
/// pthread_mutex_lock(0x5555555580a0) at mysql_3596_procinfo.c:49 in
/// processlist_thread`, or `the program ended: ...`.
pub(super) fn stop_answer(d: &mut Debugger) -> Answer {
    let total = d.target.event_count();
    let n = match d.target.position().clone() {
        Position::Ended(how) => return ended_answer(d, &how),
        Position::Before(n) => n,
    };
    let Some(e) = d.target.events().get(n) else {
        return Answer::new(
            format!("stopped after the last event ({total} events)"),
            json!({ "stopped": { "event": n, "events": total } }),
        );
    };
    let key = reprise_abi::replay::key(e.process as u32, e.thread);
    let who = reprise_replayer::thread_name(e.process, e.thread);
    let what = event_what(e);
    let frame = d
        .target
        .threads()
        .ok()
        .and_then(|ts| ts.into_iter().find(|t| t.key == key))
        .and_then(|t| t.frame);
    let at = frame.as_ref().map(place).unwrap_or_default();
    let mut stopped = json!({
        "event": n,
        "events": total,
        "thread": who,
        "what": what,
    });
    if let (Some(f), Value::Object(m)) = (&frame, &mut stopped) {
        if let Value::Object(fj) = frame_json(f) {
            m.extend(fj);
        }
    }
    Answer::new(
        format!("stopped before event {n} of {total}: {who} {what}{at}"),
        json!({ "stopped": stopped }),
    )
}

fn ended_answer(d: &Debugger, how: &str) -> Answer {
    let recorded = d.target.replay().recorded.as_ref();
    let got = d.target.outcome().and_then(|r| r.outcome());
    let as_recorded = match (recorded, got) {
        (Some(r), Some(g)) => reprise_replayer::matches(r, g),
        _ => false,
    };
    let failure = recorded.is_some_and(reprise_replayer::is_failure);
    let note = match (as_recorded, failure) {
        (true, true) => " (the recorded failure)",
        (true, false) => " (as recorded)",
        (false, _) if recorded.is_some() => " (not as recorded)",
        _ => "",
    };
    Answer::new(
        format!("the program ended: {how}{note}"),
        json!({ "ended": how, "as_recorded": as_recorded }),
    )
}

/// ` at file.c:49 in function` (the file's name only), or ` in
/// function`, or ` at 0x...`.
pub(super) fn place(f: &Frame) -> String {
    let function = f.function.as_deref().unwrap_or("??");
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!(" at {}:{line} in {function}", short(file)),
        _ if f.function.is_some() => format!(" in {function}"),
        _ => format!(" at {}", f.pc),
    }
}

/// A path's file name.
pub(super) fn short(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

pub(super) fn frame_json(f: &Frame) -> Value {
    json!({
        "pc": format!("{:#x}", f.pc.addr()),
        "function": f.function,
        "file": f.file,
        "line": f.line,
        "module": f.module,
        "inlined": f.inlined,
    })
}
