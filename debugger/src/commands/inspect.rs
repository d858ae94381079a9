//! The commands that look at the paused run: info events, info threads,
//! thread, where/bt, frame.

use serde_json::{json, Value};

use super::moves::{frame_json, place, short};
use super::{Answer, CmdResult, Debugger};
use crate::target::{event_what, Position};
use reprise_abi::replay as rp;
use reprise_tracee::Frame;

/// Events `info events` shows around one, and at most in one answer.
const AROUND: usize = 5;
const MAX_EVENTS: usize = 1000;

pub(super) fn info_events(d: &mut Debugger, args: &str) -> CmdResult {
    let total = d.target.event_count();
    if total == 0 {
        return Ok(Answer::new(
            "the trace has no events",
            json!({ "events": [] }),
        ));
    }
    let cur = match d.target.position() {
        Position::Before(n) => Some(*n),
        Position::Ended(_) => None,
    };
    let (from, to) = event_range(args, cur.unwrap_or(total), total)?;
    let to_shown = to.min(from + MAX_EVENTS - 1);
    let mut text = String::new();
    let mut list = Vec::new();
    for i in from..=to_shown {
        let e = &d.target.events()[i];
        let mark = if Some(i) == cur { "=>" } else { "  " };
        let who = reprise_replayer::thread_name(e.process, e.thread);
        let what = event_what(e);
        text.push_str(&format!("{mark} {i:>6}  {who}  {what}\n"));
        list.push(json!({
            "event": i,
            "thread": who,
            "what": what,
            "done": cur.is_none_or(|c| i < c),
            "next": Some(i) == cur,
        }));
    }
    if to_shown < to {
        text.push_str(&format!(
            "({} more; `info events {}-{to}` shows them)\n",
            to - to_shown,
            to_shown + 1
        ));
    }
    let position = match cur {
        Some(c) => format!("the run is paused before event {c} of {total}"),
        None => format!("the run has ended ({total} events)"),
    };
    text.push_str(&position);
    Ok(Answer::new(
        text,
        json!({ "events": list, "next": cur, "count": total }),
    ))
}

/// `N-M` (inclusive), `N` (the events around N), or nothing (around
/// `cur`), within `0..total`.
fn event_range(args: &str, cur: usize, total: usize) -> Result<(usize, usize), String> {
    let last = total - 1;
    let num = |s: &str| -> Result<usize, String> {
        s.trim().parse::<usize>().map_err(|_| {
            format!("\"{args}\" is not an event range: N, or FROM-TO (events 0 to {last})")
        })
    };
    let (from, to) = match args.split_once('-') {
        _ if args.is_empty() => (cur.saturating_sub(AROUND), cur + AROUND),
        Some((a, b)) => {
            let a = if a.trim().is_empty() { 0 } else { num(a)? };
            let b = if b.trim().is_empty() { last } else { num(b)? };
            (a, b)
        }
        None => {
            let n = num(args)?;
            (n.saturating_sub(AROUND), n + AROUND)
        }
    };
    if from > to {
        return Err(format!("the range {from}-{to} is empty"));
    }
    if from > last {
        return Err(format!("event {from} is past the end (events 0 to {last})"));
    }
    Ok((from, to.min(last)))
}

pub(super) fn info_threads(d: &mut Debugger, args: &str) -> CmdResult {
    super::moves::no_args(args, "info threads")?;
    let threads = d.target.threads().map_err(|e| e.to_string())?;
    let mut text = String::new();
    let mut list = Vec::new();
    for t in &threads {
        let selected = Some(t.key) == d.selected;
        let next = t.next_event.map(|i| {
            (
                i,
                d.target.events().get(i).map(event_what).unwrap_or_default(),
            )
        });
        let next_text = match &next {
            Some((i, what)) => format!("next: event {i} {what}"),
            None => "no more events".into(),
        };
        let at = t
            .frame
            .as_ref()
            .map(|f| format!("; pc {}{}", f.pc, place(f)));
        text.push_str(&format!(
            "{} {} (tid {}): {}; {}{}\n",
            if selected { "*" } else { " " },
            t.name,
            t.tid,
            t.state,
            next_text,
            at.unwrap_or_default()
        ));
        list.push(json!({
            "thread": t.name,
            "tid": t.tid,
            "selected": selected,
            "state": t.state,
            "next_event": next.as_ref().map(|n| n.0),
            "next_what": next.as_ref().map(|n| n.1.clone()),
            "frame": t.frame.as_ref().map(frame_json),
        }));
    }
    if threads.is_empty() {
        text.push_str("no threads\n");
    }
    Ok(Answer::new(text.trim_end(), json!({ "threads": list })))
}

/// A thread as the user names it: `2`, `thread 2`, `1.2` or `process 1
/// thread 2`; its baton key.
pub(super) fn parse_thread(text: &str) -> Result<u32, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let bad = || {
        format!("\"{text}\" is not a thread: give its number as `info threads` shows it (`2`, or `1.2` for process 1's thread 2)")
    };
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let (p, t) = match words.as_slice() {
        [n] => match n.split_once('.') {
            Some((p, t)) => (num(p)?, num(t)?),
            None => (0, num(n)?),
        },
        ["thread", n] => (0, num(n)?),
        ["process", p, "thread", n] => (num(p)?, num(n)?),
        _ => return Err(bad()),
    };
    if p > 0x7ff || t > 0xf_ffff {
        return Err(bad());
    }
    Ok(rp::key(p, t))
}

pub(super) fn thread(d: &mut Debugger, args: &str) -> CmdResult {
    if args.is_empty() {
        return match d.selected {
            Some(k) => Ok(Answer::new(
                format!("the selected thread is {}", reprise_replayer::key_name(k)),
                json!({ "thread": reprise_replayer::key_name(k) }),
            )),
            None => Err("no thread is selected: `thread N` selects one".into()),
        };
    }
    let key = parse_thread(args)?;
    let tid = d.target.tid_of(key).map_err(|e| e.to_string())?;
    d.selected = Some(key);
    d.frame = 0;
    let name = reprise_replayer::key_name(key);
    let frames = d.target.backtrace(key).unwrap_or_default();
    let mut text = format!("[selected {name} (tid {tid})]");
    if let Some((f, _)) = frames.first() {
        text.push('\n');
        text.push_str(&frame_line(0, f));
    }
    Ok(Answer::new(
        text,
        json!({ "thread": name, "tid": tid, "frame": frames.first().map(|(f, _)| frame_json(f)) }),
    ))
}

/// `#1  0x555555555224 in processlist_thread at mysql_3596_procinfo.c:49`.
pub(super) fn frame_line(i: usize, f: &Frame) -> String {
    let function = f.function.as_deref().unwrap_or("??");
    let inl = if f.inlined { " [inlined]" } else { "" };
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!(
            "#{i:<2} {} in {function} at {}:{line}{inl}",
            f.pc,
            file.display()
        ),
        _ => format!("#{i:<2} {} in {function} ({}){inl}", f.pc, short(&f.module)),
    }
}

/// The selected thread, or the one `args` names.
fn thread_arg(d: &Debugger, args: &str) -> Result<u32, String> {
    match args {
        "" => d
            .selected
            .ok_or_else(|| "no thread is selected: `thread N` selects one".to_string()),
        a => parse_thread(a),
    }
}

pub(super) fn backtrace(d: &mut Debugger, args: &str) -> CmdResult {
    let key = thread_arg(d, args)?;
    let frames = d.target.backtrace(key).map_err(|e| e.to_string())?;
    let name = reprise_replayer::key_name(key);
    let mut text = format!("{name}:\n");
    let mut list: Vec<Value> = Vec::new();
    for (i, (f, _)) in frames.iter().enumerate() {
        text.push_str(&frame_line(i, f));
        text.push('\n');
        list.push(frame_json(f));
    }
    if frames.is_empty() {
        text.push_str("(no frames: the stack could not be read)\n");
    }
    Ok(Answer::new(
        text.trim_end(),
        json!({ "thread": name, "frames": list }),
    ))
}

pub(super) fn frame(d: &mut Debugger, args: &str) -> CmdResult {
    let key = thread_arg(d, "")?;
    let frames = d.target.backtrace(key).map_err(|e| e.to_string())?;
    let n = match args {
        "" => d.frame,
        a => a
            .parse::<usize>()
            .map_err(|_| format!("\"{a}\" is not a frame number (`bt` numbers them)"))?,
    };
    let Some((f, _)) = frames.get(n) else {
        return Err(format!(
            "{} has {} frames (0 to {})",
            reprise_replayer::key_name(key),
            frames.len(),
            frames.len().saturating_sub(1)
        ));
    };
    d.frame = n;
    Ok(Answer::new(
        frame_line(n, f),
        json!({ "thread": reprise_replayer::key_name(key), "frame": n, "at": frame_json(f) }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(event_range("", 3, 100), Ok((0, 8)));
        assert_eq!(event_range("10-20", 0, 100), Ok((10, 20)));
        assert_eq!(event_range("50", 0, 100), Ok((45, 55)));
        assert_eq!(event_range("90-", 0, 100), Ok((90, 99)));
        assert_eq!(event_range("95-200", 0, 100), Ok((95, 99)));
        assert!(event_range("20-10", 0, 100).is_err());
        assert!(event_range("x", 0, 100).is_err());
        assert!(event_range("200", 0, 100).is_err());
    }

    #[test]
    fn threads() {
        assert_eq!(parse_thread("2"), Ok(rp::key(0, 2)));
        assert_eq!(parse_thread("thread 2"), Ok(rp::key(0, 2)));
        assert_eq!(parse_thread("1.3"), Ok(rp::key(1, 3)));
        assert_eq!(parse_thread("process 1 thread 3"), Ok(rp::key(1, 3)));
        assert!(parse_thread("x").is_err());
        assert!(parse_thread("-1").is_err());
    }
}
