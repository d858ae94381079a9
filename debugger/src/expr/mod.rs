//! C expressions over the program's DWARF, for `print`, `watch` and
//! `bisect`: [`parse`] the text once, [`evaluate`] it at each stop.
//!
//! ```text
//! let expr = parse("list->next->value + 1")?;
//! let ev = evaluate(&program, &expr, Some(&frame), &ProcessMemory::new(pid))?;
//! println!("{}", ev.value);      // 43
//! // ev.reads: the memory the value depends on (for watchpoints)
//! ```

mod error;
mod eval;
mod lexer;
mod ops;
mod parser;
mod value;

use std::collections::HashMap;

use reprise_tracee::{MemoryReader, RemotePtr};

pub use error::{EvalError, ExprError, ParseError};
pub use parser::{parse, BinaryOp, Expr, ExprKind, TypeName, UnaryOp};
pub use value::Value;

use crate::dwarf::types::{Type, TypeId, TypeTable};
use crate::dwarf::{FrameContext, Program};
use eval::{Evaluator, Loc};
use value::{is_char_pointer, member_bytes, MAX_ELEMENTS, MAX_STRING};

/// Largest object read for a result (a bigger array prints its start).
const MAX_VALUE_BYTES: u64 = 64 * 1024;

/// The value of an expression and what was read to compute it.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub value: Value,
    /// Every memory range (address, length) read to compute the value,
    /// in order, without repeats. Strings printed behind `char *`
    /// pointers are not included: the value is the pointer.
    pub reads: Vec<(u64, u64)>,
}

/// Evaluates `expr` in `frame` (locals and parameters there, then
/// globals; globals only when `None`), reading the tracee's memory
/// through `mem`.
pub fn evaluate(
    program: &Program,
    expr: &Expr,
    frame: Option<&FrameContext>,
    mem: &dyn MemoryReader,
) -> Result<Evaluation, EvalError> {
    let types = program.types();
    let mut ev = Evaluator {
        program,
        types,
        frame,
        mem,
        reads: Vec::new(),
    };
    let op = ev.eval(expr)?;
    let (bytes, address, optimized_out) = match op.loc {
        Loc::Mem(a) => {
            // Functions and incomplete types have no size: the address is
            // all there is to show.
            let n = types.size_of(op.ty).unwrap_or(0).min(MAX_VALUE_BYTES);
            (ev.read(a, n)?, Some(a), false)
        }
        Loc::Bytes(b) => (b, None, false),
        Loc::OptimizedOut => (Vec::new(), None, true),
    };
    let mut ptrs = Vec::new();
    char_pointers(types, op.ty, &bytes, 0, &mut ptrs);
    let strings = ptrs
        .into_iter()
        .map(|p| (p, read_string(mem, p)))
        .collect::<HashMap<_, _>>();
    Ok(Evaluation {
        value: Value {
            types: types.clone(),
            ty: op.ty,
            bytes,
            address,
            strings,
            optimized_out,
        },
        reads: ev.reads,
    })
}

/// Parses and evaluates in one step.
pub fn evaluate_str(
    program: &Program,
    text: &str,
    frame: Option<&FrameContext>,
    mem: &dyn MemoryReader,
) -> Result<Evaluation, ExprError> {
    let expr = parse(text)?;
    Ok(evaluate(program, &expr, frame, mem)?)
}

/// The targets of the `char *` pointers that printing the value shows
/// (the value itself, members, the array elements printed).
fn char_pointers(types: &TypeTable, ty: TypeId, bytes: &[u8], depth: usize, out: &mut Vec<u64>) {
    if depth > 8 || out.len() > 64 {
        return;
    }
    if is_char_pointer(types, ty) {
        if let Some(b) = bytes.get(..8) {
            let p = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            if p != 0 && !out.contains(&p) {
                out.push(p);
            }
        }
        return;
    }
    match &*types.resolve(ty) {
        Type::Struct { members, .. } => {
            for m in members {
                if let Some(b) = member_bytes(types, m, bytes) {
                    char_pointers(types, m.ty, &b, depth + 1, out);
                }
            }
        }
        Type::Array { elem, .. } => {
            let n = types.size_of(*elem).unwrap_or(0) as usize;
            if n > 0 {
                for chunk in bytes.chunks_exact(n).take(MAX_ELEMENTS) {
                    char_pointers(types, *elem, chunk, depth + 1, out);
                }
            }
        }
        _ => {}
    }
}

/// The NUL-terminated string at `addr`, at most [`MAX_STRING`] bytes;
/// `None` when not even its first byte is readable.
fn read_string(mem: &dyn MemoryReader, addr: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while out.len() < MAX_STRING {
        // Reads may stop short at a page end; the next read then fails.
        let n = match mem.read(RemotePtr::new(addr + out.len() as u64), &mut buf) {
            Ok(n) if n > 0 => n,
            _ if out.is_empty() => return None,
            _ => break,
        };
        if let Some(z) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..z]);
            return Some(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
    out.truncate(MAX_STRING);
    Some(out)
}
