//! Where a variable is at a frame: evaluating its DWARF location
//! expression (or the entry of its location list that covers the pc) with
//! gimli, feeding it the frame's registers, CFA, frame base, memory and
//! the load bias.

use gimli::{EvaluationResult, Location as GLoc, Piece, Reader as _, Value as GValue};
use reprise_tracee::{MemoryReader, RemotePtr};

use super::{Found, FrameContext, Location, Program, R};
use crate::expr::EvalError;

/// Where a variable's value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// In memory at this runtime address.
    Memory(u64),
    /// Not in memory (a register, a constant, a computed value): the bytes.
    Bytes(Vec<u8>),
    OptimizedOut,
}

/// Everything a location expression may ask for.
pub(crate) struct Ctx<'a> {
    pub program: &'a Program,
    pub frame: Option<&'a FrameContext>,
    pub mem: &'a dyn MemoryReader,
    pub reads: &'a mut Vec<(u64, u64)>,
}

/// DWARF x86-64 register number to the [`FrameContext::regs`] index.
fn reg_index(dwarf_reg: u16) -> Option<usize> {
    Some(match dwarf_reg {
        0 => 0,
        1 => 3,
        2 => 2,
        3 => 1,
        4 => 4,
        5 => 5,
        6 => 6,
        7 => 7,
        8..=16 => dwarf_reg as usize,
        _ => return None,
    })
}

const REG_NAMES: [&str; 17] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip",
];

/// Locates `found` at the context's frame.
pub(crate) fn locate(found: &Found<'_>, ctx: &mut Ctx<'_>) -> Result<Place, EvalError> {
    let var = found.var;
    let err = |why: String| EvalError::Location {
        name: var.name.clone(),
        why,
    };
    let Some(expr) = pick(&var.location, ctx, &var.name)? else {
        return Ok(match &var.location {
            Location::Const(b) => Place::Bytes(b.clone()),
            _ => Place::OptimizedOut,
        });
    };
    let pieces = run(expr, var.unit, found, ctx, 0).map_err(err)?;
    pieces_to_place(&pieces, ctx).map_err(|why| EvalError::Location {
        name: var.name.clone(),
        why,
    })
}

/// The expression that applies at the frame's pc (`None`: no location).
fn pick<'a>(
    loc: &'a Location,
    ctx: &Ctx<'_>,
    name: &str,
) -> Result<Option<&'a gimli::Expression<R>>, EvalError> {
    match loc {
        Location::Expr(e) => Ok(Some(e)),
        Location::List(entries) => {
            let Some(frame) = ctx.frame else {
                return Err(EvalError::Location {
                    name: name.to_string(),
                    why: "its location depends on the pc, and no frame is selected".into(),
                });
            };
            let rel = frame.pc.wrapping_sub(ctx.program.load_bias());
            Ok(entries
                .iter()
                .find(|(b, e, _)| *b <= rel && rel < *e)
                .map(|(_, _, x)| x))
        }
        Location::Const(_) | Location::None => Ok(None),
    }
}

fn reg_value(ctx: &Ctx<'_>, dwarf_reg: u16) -> Result<u64, String> {
    let frame = ctx
        .frame
        .ok_or_else(|| "it lives in a register, and no frame is selected".to_string())?;
    let i = reg_index(dwarf_reg)
        .ok_or_else(|| format!("DWARF register {dwarf_reg} is not supported"))?;
    frame.regs[i].ok_or_else(|| format!("register {} is not known in this frame", REG_NAMES[i]))
}

fn read_word(ctx: &mut Ctx<'_>, addr: u64, size: u8) -> Result<u64, String> {
    let n = usize::from(size.clamp(1, 8));
    let mut b = [0u8; 8];
    ctx.mem
        .read_exact(RemotePtr::new(addr), &mut b[..n])
        .map_err(|_| format!("cannot read {n} bytes at {addr:#x}"))?;
    ctx.reads.push((addr, n as u64));
    Ok(u64::from_le_bytes(b))
}

/// The function's frame base (`DW_AT_frame_base`), as an address.
fn frame_base(found: &Found<'_>, ctx: &mut Ctx<'_>, depth: usize) -> Result<u64, String> {
    let func = found
        .function
        .ok_or_else(|| "its frame base is needed, but it is not in a function".to_string())?;
    if depth > 2 {
        return Err("frame base refers to itself".into());
    }
    let name = &found.var.name;
    let expr = pick(&func.frame_base, ctx, name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("function {} has no frame base here", func.name))?;
    let pieces = run(expr, func.unit, found, ctx, depth + 1)?;
    match pieces.first().map(|p| p.location.clone()) {
        Some(GLoc::Address { address }) => Ok(address),
        // DW_OP_reg6: the frame base is the register's value.
        Some(GLoc::Register { register }) => reg_value(ctx, register.0),
        Some(GLoc::Value { value }) => Ok(value.to_u64(!0).unwrap_or(0)),
        _ => Err("the frame base has no usable location".into()),
    }
}

/// Runs one location expression to its pieces.
fn run(
    expr: &gimli::Expression<R>,
    unit: usize,
    found: &Found<'_>,
    ctx: &mut Ctx<'_>,
    depth: usize,
) -> Result<Vec<Piece<R>>, String> {
    let program = ctx.program;
    let unit = program.units.get(unit).ok_or("unit not loaded")?;
    let mut ev = expr.clone().evaluation(unit.encoding());
    let gerr = |e: gimli::Error| format!("DWARF expression: {e}");
    let mut res = ev.evaluate().map_err(gerr)?;
    // Each step answers one question of gimli's; a well-formed expression
    // asks a handful, so a bound only guards against malformed ones.
    for _ in 0..10_000 {
        res = match res {
            EvaluationResult::Complete => return Ok(ev.result()),
            EvaluationResult::RequiresMemory { address, size, .. } => {
                let v = read_word(ctx, address, size)?;
                ev.resume_with_memory(GValue::Generic(v))
            }
            EvaluationResult::RequiresRegister { register, .. } => {
                let v = reg_value(ctx, register.0)?;
                ev.resume_with_register(GValue::Generic(v))
            }
            EvaluationResult::RequiresFrameBase => {
                let fb = frame_base(found, ctx, depth)?;
                ev.resume_with_frame_base(fb)
            }
            EvaluationResult::RequiresCallFrameCfa => {
                let cfa = ctx.frame.and_then(|f| f.cfa).ok_or(
                    "the frame's CFA is not known (outermost frame, or no frame selected)",
                )?;
                ev.resume_with_call_frame_cfa(cfa)
            }
            EvaluationResult::RequiresRelocatedAddress(a) => {
                ev.resume_with_relocated_address(a.wrapping_add(program.load_bias()))
            }
            EvaluationResult::RequiresIndexedAddress { index, relocate } => {
                let a = program.dwarf.address(unit, index).map_err(gerr)?;
                let bias = if relocate { program.load_bias() } else { 0 };
                ev.resume_with_indexed_address(a.wrapping_add(bias))
            }
            EvaluationResult::RequiresTls(_) => {
                return Err("thread-local variables are not supported".into())
            }
            EvaluationResult::RequiresEntryValue(_) => {
                return Err("its value at function entry is <optimized out>".into())
            }
            other => return Err(format!("unsupported DWARF operation ({other:?})")),
        }
        .map_err(gerr)?;
    }
    Err("DWARF expression does not finish".into())
}

/// One place from the pieces: a single memory/register/value piece, or
/// byte-sized pieces put together (a struct split over registers).
fn pieces_to_place(pieces: &[Piece<R>], ctx: &mut Ctx<'_>) -> Result<Place, String> {
    if let [p] = pieces {
        if p.size_in_bits.is_none() {
            return match p.location {
                GLoc::Address { address } => Ok(Place::Memory(address)),
                GLoc::Empty => Ok(Place::OptimizedOut),
                _ => Ok(Place::Bytes(piece_bytes(p, None, ctx)?)),
            };
        }
    }
    let mut bytes = Vec::new();
    for p in pieces {
        let bits = p.size_in_bits.unwrap_or(64);
        if bits % 8 != 0 || p.bit_offset.unwrap_or(0) != 0 {
            return Err("its location has bit-sized pieces (not supported)".into());
        }
        if matches!(p.location, GLoc::Empty) {
            return Ok(Place::OptimizedOut);
        }
        bytes.extend(piece_bytes(p, Some((bits / 8) as usize), ctx)?);
    }
    Ok(Place::Bytes(bytes))
}

fn piece_bytes(p: &Piece<R>, len: Option<usize>, ctx: &mut Ctx<'_>) -> Result<Vec<u8>, String> {
    let mut out = match p.location {
        GLoc::Register { register } => reg_value(ctx, register.0)?.to_le_bytes().to_vec(),
        GLoc::Value { value } => value_bytes(value),
        GLoc::Bytes { ref value } => value.to_slice().map_err(|e| e.to_string())?.into_owned(),
        GLoc::Address { address } => {
            let len = len.unwrap_or(8);
            let mut b = vec![0u8; len];
            ctx.mem
                .read_exact(RemotePtr::new(address), &mut b)
                .map_err(|_| format!("cannot read {len} bytes at {address:#x}"))?;
            ctx.reads.push((address, len as u64));
            b
        }
        GLoc::Empty => vec![0; len.unwrap_or(8)],
        GLoc::ImplicitPointer { .. } => {
            return Err("it is an implicit pointer (optimized out)".into())
        }
    };
    if let Some(len) = len {
        out.resize(len, 0);
    }
    Ok(out)
}

fn value_bytes(v: GValue) -> Vec<u8> {
    match v {
        GValue::Generic(x) | GValue::U64(x) => x.to_le_bytes().to_vec(),
        GValue::I8(x) => x.to_le_bytes().to_vec(),
        GValue::U8(x) => x.to_le_bytes().to_vec(),
        GValue::I16(x) => x.to_le_bytes().to_vec(),
        GValue::U16(x) => x.to_le_bytes().to_vec(),
        GValue::I32(x) => x.to_le_bytes().to_vec(),
        GValue::U32(x) => x.to_le_bytes().to_vec(),
        GValue::I64(x) => x.to_le_bytes().to_vec(),
        GValue::F32(x) => x.to_le_bytes().to_vec(),
        GValue::F64(x) => x.to_le_bytes().to_vec(),
    }
}
