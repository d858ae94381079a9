//! `watch EXPR` and `bisect EXPR`: hardware watchpoints over the replayed
//! run, and a binary search through its lifetime.
//!
//! `watch` evaluates the expression where the run is paused, covers the
//! memory the evaluation read with (at most four) x86 write watchpoints,
//! and lets the replay run on to a later pause under a [`Watcher`]: at
//! each write the expression is evaluated again (the other threads
//! stopped), and a different value is a [`Change`]. When the memory the
//! expression reads moves (a pointer in it changed) the watchpoints are
//! armed again over the new places.
//!
//! `bisect` first walks forward from `from` to `to` in strides, evaluating
//! the expression and taking a checkpoint at each stride while it holds
//! (FReD's decomposition of one long `continue` into smaller steps); the
//! binary search then runs between the last stride where it holds and the
//! first where it does not, each backward seek resuming the nearest
//! checkpoint rather than replaying from the start. Once the two adjacent
//! events are known, the run goes back to the first and `watch`es the
//! expression up to the second: the first write after which it is false
//! is the write that broke it, with its thread, instruction and line.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use reprise_tracee::{Frame, ProcessMemory, RemotePtr, Symbolizer};

use crate::dwarf::Program;
use crate::expr::{self, BinaryOp, Expr, ExprKind, UnaryOp, Value};
use crate::watchpoints::{Watch, WatchError, Watcher, MAX_WATCHES};
use crate::{DebugError, Position, Target};

mod bisect;
pub use bisect::{bisect, Bisection};

/// How many strides the first forward pass of `bisect` makes (each with
/// an evaluation and, while the expression holds, a checkpoint).
pub const BISECT_STRIDES: usize = 16;
/// During the binary search a probe where the expression holds gets a
/// checkpoint when the interval left is longer than this many events.
const CHECKPOINT_INTERVAL_MIN: usize = 256;

/// One change of a watched expression's value.
#[derive(Clone, Debug)]
pub struct Change {
    /// The run is between event `event - 1` and event `event` (events
    /// `0..event` have happened).
    pub event: usize,
    /// `thread 2`, as the control block names the writer.
    pub thread: String,
    pub tid: i32,
    /// The writing instruction.
    pub pc: u64,
    /// Whether `pc` is exactly the writing instruction (else the one
    /// after it).
    pub pc_exact: bool,
    /// `pc` symbolized: file:line and function.
    pub location: Option<Frame>,
    pub old: String,
    pub new: String,
    /// For a comparison (`cache_peak <= 8`), its operands that changed:
    /// (text, old, new), e.g. (`cache_peak`, `8`, `9`).
    pub parts: Vec<(String, String, String)>,
}

impl Change {
    /// `pgdoorman_206_bounded_list.c:93 in insert`, or the pc.
    pub fn place(&self) -> String {
        match &self.location {
            Some(f) => frame_place(f),
            None => format!("{:#x}", self.pc),
        }
    }

    /// `cache_peak: 8 -> 9` (the changed operands), else `old -> new`.
    pub fn values(&self) -> String {
        if self.parts.is_empty() {
            format!("{} -> {}", self.old, self.new)
        } else {
            self.parts
                .iter()
                .map(|(t, o, n)| format!("{t}: {o} -> {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

impl fmt::Display for Change {
    /// `event 42: thread 2 at pgdoorman_206_bounded_list.c:93 in insert (pc 0x401234): 8 -> 9`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {}: {} at {} (pc {:#x}): {} -> {}",
            self.event,
            self.thread,
            self.place(),
            self.pc,
            self.old,
            self.new
        )?;
        if !self.parts.is_empty() {
            write!(f, " ({})", self.values())?;
        }
        Ok(())
    }
}

fn frame_place(f: &Frame) -> String {
    let file = f
        .file
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let func = f.function.as_deref().unwrap_or("??");
    match (file, f.line) {
        (Some(file), Some(line)) => format!("{file}:{line} in {func}"),
        (Some(file), None) => format!("{file} in {func}"),
        _ => format!("{:#x} in {func}", f.pc.addr()),
    }
}

fn search_err(msg: impl Into<String>) -> DebugError {
    DebugError::Search(msg.into())
}

fn watch_err(e: WatchError) -> DebugError {
    search_err(format!("watchpoints: {e}"))
}

/// Every change of `text`'s value over events `[from, to)`: the run goes
/// to the pause before `from` and is watched up to the pause before `to`
/// (the last pause, `event_count() - 1`, at most: the end of the program
/// is not watched). The run is left paused before `to`.
pub fn watch(
    target: &mut Target,
    program: &Program,
    text: &str,
    from: usize,
    to: usize,
) -> Result<Vec<Change>, DebugError> {
    let parsed = parse(text)?;
    let last = last_pause(target)?;
    let to = to.min(last);
    if from >= to {
        return Err(search_err(format!(
            "watch needs an interval: from event {from} to event {to} is empty (the last pause is before event {last})"
        )));
    }
    goto_paused(target, from)?;
    let parts = parts_of(&parsed);
    watch_run(target, program, &parsed, &parts, to, &mut |_| false)
}

/// The last event the run can pause before.
fn last_pause(target: &Target) -> Result<usize, DebugError> {
    target
        .event_count()
        .checked_sub(1)
        .ok_or_else(|| search_err("the trace has no events"))
}

fn parse(text: &str) -> Result<Expr, DebugError> {
    expr::parse(text).map_err(|e| {
        search_err(format!(
            "bad expression \"{text}\": column {}: {}",
            e.column, e.message
        ))
    })
}

fn goto_paused(target: &mut Target, n: usize) -> Result<(), DebugError> {
    match target.goto(n)? {
        Position::Before(m) if m == n => Ok(()),
        Position::Before(m) => Err(search_err(format!(
            "the run paused before event {m}, not {n}"
        ))),
        Position::Ended(how) => Err(search_err(format!("the run ended before event {n}: {how}"))),
    }
}

/// The expression's value now, or why it has none.
fn eval_now(
    program: &Program,
    e: &Expr,
    mem: &ProcessMemory,
) -> (Result<Value, String>, Vec<(u64, u64)>) {
    match expr::evaluate(program, e, None, mem) {
        Ok(ev) => (Ok(ev.value), ev.reads),
        Err(err) => (Err(err.to_string()), Vec::new()),
    }
}

fn shown(v: &Result<Value, String>) -> String {
    match v {
        Ok(v) => v.to_string(),
        Err(e) => format!("<{e}>"),
    }
}

fn truth(v: &Result<Value, String>) -> Option<bool> {
    v.as_ref().ok().and_then(|v| v.is_true())
}

/// Watches from the current pause to the pause before `to`, collecting
/// every change; stops watching early (the run still goes on to `to`)
/// after a change for which `done(new value)` says so.
fn watch_run(
    target: &mut Target,
    program: &Program,
    e: &Expr,
    parts: &[(String, Expr)],
    to: usize,
    done: &mut dyn FnMut(&Result<Value, String>) -> bool,
) -> Result<Vec<Change>, DebugError> {
    let pid = target.pid()?;
    let mem = ProcessMemory::new(pid);
    let (first, reads) = eval_now(program, e, &mem);
    if let Err(why) = &first {
        return Err(search_err(format!(
            "cannot evaluate the expression here: {why}"
        )));
    }
    let watches = cover(&reads)?;
    let maps = target.maps()?;
    let mut names: HashMap<i32, String> = target
        .threads()
        .map(|ts| ts.into_iter().map(|t| (t.tid, t.name)).collect())
        .unwrap_or_default();
    let mut part_values: Vec<String> = parts
        .iter()
        .map(|(_, p)| shown(&eval_now(program, p, &mem).0))
        .collect();
    let mut symbolizer = Symbolizer::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut current = first;
    let mut current_reads = reads;

    let debug = std::env::var_os("REPRISE_SEARCH_DEBUG").is_some();
    let mut during =
        |pid: i32, reached: &mut dyn FnMut() -> (bool, usize)| -> Result<(), DebugError> {
            let mem = ProcessMemory::new(pid);
            let mut armed = watches.clone();
            let mut w = attach(pid, &armed)?;
            if debug {
                eprintln!(
                    "search: pid {pid} watches {armed:x?} threads {:?}",
                    w.threads(),
                );
            }
            let result = (|| -> Result<bool, DebugError> {
                loop {
                    // Threads created while watched are followed by the
                    // watcher (PTRACE_O_TRACECLONE) and armed at their first stop.
                    let mut stop = || reached().0;
                    let hit = match w.run(&mut stop) {
                        Ok(Some(hit)) => hit,
                        Ok(None) => {
                            if debug {
                                eprintln!(
                                    "search: reached at event {}: threads {:?}",
                                    reached().1,
                                    w.threads()
                                );
                            }
                            return Ok(false);
                        }
                        // The program ended (its failure) before the pause.
                        Err(WatchError::Exited(_)) => {
                            if debug {
                                eprintln!("search: the program exited");
                            }
                            return Ok(false);
                        }
                        Err(e) => return Err(watch_err(e)),
                    };
                    let (value, reads) = eval_now(program, e, &mem);
                    if debug {
                        eprintln!("search: hit {hit:x?} value {}", shown(&value));
                    }
                    if reads != current_reads && !reads.is_empty() {
                        let again = cover(&reads)?;
                        w.set_watches(&again).map_err(watch_err)?;
                        armed = again;
                        current_reads = reads;
                    }
                    let changed = match (&current, &value) {
                        (Ok(a), Ok(b)) => a != b,
                        (a, b) => shown(a) != shown(b),
                    };
                    if !changed {
                        continue;
                    }
                    let mut changed_parts = Vec::new();
                    for (i, (t, p)) in parts.iter().enumerate() {
                        let now = shown(&eval_now(program, p, &mem).0);
                        if now != part_values[i] {
                            changed_parts.push((t.clone(), part_values[i].clone(), now.clone()));
                            part_values[i] = now;
                        }
                    }
                    let location = symbolizer
                        .symbolize_frames(RemotePtr::new(hit.pc), false, &maps)
                        .into_iter()
                        .next()
                        .filter(|f| f.function.is_some() || f.line.is_some());
                    changes.push(Change {
                        // All threads are stopped: the turn is exact.
                        event: reached().1,
                        thread: String::new(),
                        tid: hit.tid,
                        pc: hit.pc,
                        pc_exact: hit.pc_exact,
                        location,
                        old: shown(&current),
                        new: shown(&value),
                        parts: changed_parts,
                    });
                    let stop = done(&value);
                    current = value;
                    if stop {
                        return Ok(true);
                    }
                }
            })();
            let detached = w.detach().map_err(watch_err);
            let stopped_early = result?;
            if task_ids(pid).is_empty() {
                return Ok(());
            }
            detached?;
            if stopped_early {
                // No longer watching: let the replay reach the pause.
                while !reached().0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Ok(())
        };
    target.run_to_with(to, &mut during)?;
    // Name the writers: the control block knows every thread it has seen.
    if let Ok(ts) = target.threads() {
        for t in ts {
            names.entry(t.tid).or_insert(t.name);
        }
    }
    for c in &mut changes {
        c.thread = names
            .get(&c.tid)
            .cloned()
            .unwrap_or_else(|| format!("tid {}", c.tid));
    }
    Ok(changes)
}

/// The threads of `pid` now.
fn task_ids(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// A [`Watcher`] over every thread of `pid`; a refusal says which thread
/// state caused it.
fn attach(pid: i32, watches: &[Watch]) -> Result<Watcher, DebugError> {
    Watcher::attach(pid, watches).map_err(|e| {
        let zombies: Vec<i32> = task_ids(pid)
            .into_iter()
            .filter(|t| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
                    .unwrap_or(false)
            })
            .collect();
        if zombies.is_empty() {
            watch_err(e)
        } else {
            search_err(format!(
                "watchpoints: {e} (threads {zombies:?} of process {pid} are zombies: a thread that exited while the others run cannot be ptraced)"
            ))
        }
    })
}

// ---------------------------------------------------------------------
// ---------------------------------------------------------------------

/// Covers the ranges `reads` with aligned 1/2/4/8-byte watches (the
/// smallest aligned block holding a range when one of 8 bytes or less
/// does, else 8-byte blocks); more than four → an error saying so.
pub fn cover(reads: &[(u64, u64)]) -> Result<Vec<Watch>, DebugError> {
    let mut blocks: Vec<Watch> = Vec::new();
    for &(a, n) in reads {
        if n == 0 {
            continue;
        }
        let end = a + n;
        let mut p = a;
        while p < end {
            let fit = [1u64, 2, 4, 8]
                .into_iter()
                .find(|&s| (p & !(s - 1)) + s >= end);
            match fit {
                Some(s) => {
                    blocks.push(Watch {
                        addr: p & !(s - 1),
                        len: s as u8,
                    });
                    p = end;
                }
                None => {
                    let b = p & !7;
                    blocks.push(Watch { addr: b, len: 8 });
                    p = b + 8;
                }
            }
        }
    }
    // Drop blocks inside others.
    blocks.sort_by_key(|w| (w.addr, std::cmp::Reverse(w.len)));
    let mut kept: Vec<Watch> = Vec::new();
    for w in blocks {
        let inside = kept
            .iter()
            .any(|k| k.addr <= w.addr && w.addr + w.len as u64 <= k.addr + k.len as u64);
        if !inside {
            kept.push(w);
        }
    }
    if kept.is_empty() {
        return Err(search_err(
            "the expression reads no memory: there is nothing to watch",
        ));
    }
    if kept.len() > MAX_WATCHES {
        let bytes: u64 = reads.iter().map(|r| r.1).sum();
        return Err(search_err(format!(
            "the expression reads {} places ({bytes} bytes) needing {} watchpoints, but x86 has only {MAX_WATCHES}: watch a smaller part of it",
            reads.len(),
            kept.len()
        )));
    }
    Ok(kept)
}

/// The operands worth showing when a comparison changes: every
/// non-constant operand of comparisons and `&&`/`||`, recursively.
fn parts_of(e: &Expr) -> Vec<(String, Expr)> {
    let mut out = Vec::new();
    if is_logical(e) {
        collect_parts(e, &mut out);
    }
    out
}

fn is_logical(e: &Expr) -> bool {
    use BinaryOp::*;
    match &e.kind {
        ExprKind::Binary(op, _, _) => matches!(op, Lt | Le | Gt | Ge | Eq | Ne | And | Or),
        ExprKind::Unary(UnaryOp::Not, _) => true,
        _ => false,
    }
}

fn collect_parts(e: &Expr, out: &mut Vec<(String, Expr)>) {
    match &e.kind {
        ExprKind::Binary(_, a, b) if is_logical(e) => {
            collect_parts(a, out);
            collect_parts(b, out);
        }
        ExprKind::Unary(UnaryOp::Not, a) => collect_parts(a, out),
        _ if is_constant(e) => {}
        _ => {
            let text = render(e);
            if !out.iter().any(|(t, _)| *t == text) {
                out.push((text, e.clone()));
            }
        }
    }
}

fn is_constant(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Int { .. } | ExprKind::Char(_) | ExprKind::Str(_) | ExprKind::SizeofType(_) => {
            true
        }
        ExprKind::Unary(op, a) => *op != UnaryOp::Deref && *op != UnaryOp::AddrOf && is_constant(a),
        ExprKind::Binary(_, a, b) => is_constant(a) && is_constant(b),
        ExprKind::Cast(_, a) => is_constant(a),
        _ => false,
    }
}

/// C text of an expression (fully parenthesized where it matters).
fn render(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Ident(n) => n.clone(),
        ExprKind::Int { value, .. } => value.to_string(),
        ExprKind::Char(c) => format!("'{}'", (*c as char).escape_default()),
        ExprKind::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
        ExprKind::Unary(op, a) => {
            let sym = match op {
                UnaryOp::Neg => "-",
                UnaryOp::Plus => "+",
                UnaryOp::Not => "!",
                UnaryOp::BitNot => "~",
                UnaryOp::Deref => "*",
                UnaryOp::AddrOf => "&",
            };
            format!("{sym}{}", render_operand(a))
        }
        ExprKind::Binary(op, a, b) => {
            format!(
                "{} {} {}",
                render_operand(a),
                op.symbol(),
                render_operand(b)
            )
        }
        ExprKind::Member { base, field, arrow } => {
            format!(
                "{}{}{field}",
                render_operand(base),
                if *arrow { "->" } else { "." }
            )
        }
        ExprKind::Index(a, i) => format!("{}[{}]", render_operand(a), render(i)),
        ExprKind::Cast(t, a) => format!(
            "({}{}){}",
            t.base,
            " *".repeat(t.pointers),
            render_operand(a)
        ),
        ExprKind::SizeofType(t) => format!("sizeof({}{})", t.base, " *".repeat(t.pointers)),
        ExprKind::SizeofExpr(a) => format!("sizeof({})", render(a)),
    }
}

fn render_operand(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Binary(..) | ExprKind::Cast(..) => format!("({})", render(e)),
        _ => render(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_fits_small_ranges_in_one_watch() {
        assert_eq!(
            cover(&[(0x1000, 8)]).unwrap(),
            vec![Watch {
                addr: 0x1000,
                len: 8
            }]
        );
        assert_eq!(
            cover(&[(0x1004, 4)]).unwrap(),
            vec![Watch {
                addr: 0x1004,
                len: 4
            }]
        );
        // 4 bytes straddling an 8-byte boundary: two blocks.
        let w = cover(&[(0x1006, 4)]).unwrap();
        assert_eq!(w.len(), 2);
        // Repeated and nested reads are watched once.
        let w = cover(&[(0x1000, 8), (0x1004, 4), (0x2000, 4)]).unwrap();
        assert_eq!(w.len(), 2);
        assert!(cover(&[(0x1000, 64)]).is_err());
        assert!(cover(&[]).is_err());
    }

    #[test]
    fn parts_of_a_comparison_are_its_variables() {
        let e = expr::parse("cache_peak <= 8 && list->len < max").unwrap();
        let p: Vec<String> = parts_of(&e).into_iter().map(|p| p.0).collect();
        assert_eq!(p, vec!["cache_peak", "list->len", "max"]);
        assert!(parts_of(&expr::parse("cache_peak").unwrap()).is_empty());
    }
}
