//! `print EXPR`: a C expression over the program's DWARF, evaluated in
//! the paused run (globals, and the selected frame's locals).

use serde_json::json;

use super::{Answer, CmdResult, Debugger};
use crate::dwarf::{FrameContext, Program};
use crate::expr;
use reprise_tracee::UnwoundFrame;

pub(super) fn print(d: &mut Debugger, args: &str) -> CmdResult {
    if args.is_empty() {
        return Err("print needs an expression: `print conn.proc_info`, `p *list`".into());
    }
    let parsed = expr::parse(args).map_err(|e| bad_expression(args, &e))?;
    let mem = d.target.memory().map_err(|e| e.to_string())?;
    let frame = selected_frame(d);
    let program = program(d)?;
    let ev = expr::evaluate(program, &parsed, frame.as_ref(), &mem).map_err(|e| e.to_string())?;
    let value = ev.value;
    let ty = value.type_name();
    let shown = value.to_string();
    Ok(Answer::new(
        format!("{args} = ({ty}) {shown}"),
        json!({
            "expression": args,
            "type": ty,
            "value": shown,
            "integer": value.as_i128().map(|v| v.to_string()),
            "address": value.address().map(|a| format!("{a:#x}")),
        }),
    ))
}

pub(super) fn info_locals(d: &mut Debugger, args: &str) -> CmdResult {
    super::moves::no_args(args, "info locals")?;
    let mem = d.target.memory().map_err(|e| e.to_string())?;
    let frame = selected_frame(d)
        .ok_or("no frame is selected (`thread N` selects a thread, `frame N` one of its frames)")?;
    let program = program(d)?;
    // The frame's names are its locals, then the globals (a local that
    // shadows a global is left out: a limitation of this listing).
    let globals: std::collections::HashSet<String> =
        program.names_in_scope(None).into_iter().collect();
    let mut text = String::new();
    let mut list = Vec::new();
    for name in program.names_in_scope(Some(&frame)) {
        if globals.contains(&name) {
            continue;
        }
        let shown = match expr::parse(&name).map_err(|e| e.to_string()).and_then(|e| {
            expr::evaluate(program, &e, Some(&frame), &mem).map_err(|e| e.to_string())
        }) {
            Ok(ev) => format!("({}) {}", ev.value.type_name(), ev.value),
            Err(e) => format!("<{e}>"),
        };
        text.push_str(&format!("{name} = {shown}\n"));
        list.push(json!({ "name": name, "value": shown }));
    }
    if list.is_empty() {
        text.push_str("no locals here\n");
    }
    Ok(Answer::new(text.trim_end(), json!({ "locals": list })))
}

/// `bad expression "conn..x": column 6: expected a field name`.
fn bad_expression(text: &str, e: &expr::ParseError) -> String {
    format!(
        "bad expression \"{text}\": column {}: {}",
        e.column, e.message
    )
}

/// The program's DWARF, loaded at first use, placed where the live run
/// mapped it.
pub(super) fn program(d: &mut Debugger) -> Result<&Program, String> {
    if d.program.is_none() {
        let path = d.target.replay().header.program_path.clone();
        let loaded = Program::load(&path)
            .map_err(|e| e.to_string())
            .map(|mut p| {
                if let Some(bias) = d.target.maps().ok().and_then(|m| p.load_bias_in(&m)) {
                    p.set_load_bias(bias);
                }
                p
            });
        d.program = Some(loaded);
    }
    match d.program.as_ref() {
        Some(Ok(p)) => Ok(p),
        Some(Err(e)) => Err(format!("no expressions in this program: {e}")),
        None => Err("the program's debug information is not loaded".into()),
    }
}

/// The selected thread's selected frame, for its locals: `None` (globals
/// only) when no thread is selected or its stack cannot be read.
pub(super) fn selected_frame(d: &mut Debugger) -> Option<FrameContext> {
    let key = d.selected?;
    let frames = d.target.backtrace(key).ok()?;
    // The backtrace lists inlined functions as frames of their own; the
    // unwinder's frames are one per physical frame.
    let mut unwound: Vec<UnwoundFrame> = Vec::new();
    let mut index = 0;
    for (i, (_, u)) in frames.iter().enumerate() {
        let same = unwound
            .last()
            .is_some_and(|l| l.pc == u.pc && l.regs[7] == u.regs[7]);
        if !same {
            unwound.push(u.clone());
        }
        if i == d.frame {
            index = unwound.len() - 1;
        }
    }
    FrameContext::from_unwound(&unwound, index)
}
