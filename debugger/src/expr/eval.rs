//! Evaluating an expression tree against a stopped process.
//!
//! Subexpressions are kept as *places* (an address and a type) as long as
//! C allows, and memory is read only when a value is needed: `&g`,
//! `s.inner` and `arr[2]` read nothing but the element itself, so the
//! ranges recorded in [`super::Evaluation::reads`] are exactly what the
//! value depends on (what a watchpoint must cover).

use reprise_tracee::{MemoryReader, RemotePtr};

use super::error::EvalError;
use super::parser::{Expr, ExprKind, TypeName, UnaryOp};
use super::value::{member_bytes, scalar_of, Scalar};
use crate::dwarf::location::{locate, Ctx, Place};
use crate::dwarf::types::{
    BaseEncoding, Member, Type, TypeId, TypeTable, CHAR, INT, LONG, UINT, ULONG,
};
use crate::dwarf::{FrameContext, Program};

/// Where an intermediate result is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Loc {
    Mem(u64),
    Bytes(Vec<u8>),
    OptimizedOut,
}

#[derive(Clone, Debug)]
pub(crate) struct Operand {
    pub ty: TypeId,
    pub loc: Loc,
    /// The variable it came from, for "optimized out" messages.
    pub name: String,
}

pub(crate) struct Evaluator<'a> {
    pub program: &'a Program,
    pub types: &'a TypeTable,
    pub frame: Option<&'a FrameContext>,
    pub mem: &'a dyn MemoryReader,
    pub reads: Vec<(u64, u64)>,
}

/// Largest single read, in bytes.
const MAX_READ: u64 = 16 << 20;

/// Names listed in an "unknown variable" message.
const MAX_LISTED: usize = 10;

impl Evaluator<'_> {
    pub fn read(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, EvalError> {
        // A bogus size (corrupt DWARF, a huge array) must not exhaust memory.
        if len > MAX_READ {
            return Err(EvalError::Type(format!(
                "the value is too large to read ({len} bytes at {addr:#x})"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.mem
            .read_exact(RemotePtr::new(addr), &mut buf)
            .map_err(|_| EvalError::Memory { addr, len })?;
        if !self.reads.contains(&(addr, len)) {
            self.reads.push((addr, len));
        }
        Ok(buf)
    }

    pub fn size(&self, ty: TypeId) -> Result<u64, EvalError> {
        self.types
            .size_of(ty)
            .ok_or_else(|| EvalError::Type(format!("{} has no size", self.types.name(ty))))
    }

    /// The bytes of an operand's value (reading memory if it is there).
    pub fn load(&mut self, op: &Operand) -> Result<Vec<u8>, EvalError> {
        match &op.loc {
            Loc::Mem(a) => {
                let n = self.size(op.ty)?;
                self.read(*a, n)
            }
            Loc::Bytes(b) => Ok(b.clone()),
            Loc::OptimizedOut => Err(EvalError::OptimizedOut {
                name: op.name.clone(),
            }),
        }
    }

    /// The operand as a C scalar, arrays decaying to pointers to their
    /// first element; the type is the operand's (or the decayed pointer's).
    pub fn scalar(&mut self, op: &Operand) -> Result<(Scalar, TypeId), EvalError> {
        if let Type::Array { elem, .. } = &*self.types.resolve(op.ty) {
            return match op.loc {
                Loc::Mem(a) => Ok((Scalar::Ptr(a), self.types.pointer_to(*elem))),
                _ => Err(EvalError::Type(format!(
                    "the array {} is not in memory",
                    op.name
                ))),
            };
        }
        if let Type::Function { .. } = &*self.types.resolve(op.ty) {
            if let Loc::Mem(a) = op.loc {
                return Ok((Scalar::Ptr(a), self.types.pointer_to(op.ty)));
            }
        }
        let bytes = self.load(op)?;
        match scalar_of(self.types, op.ty, &bytes) {
            Some(s) => Ok((s, op.ty)),
            None => Err(EvalError::Type(format!(
                "{} is a {}, not a number or pointer",
                describe(&op.name),
                self.types.name(op.ty)
            ))),
        }
    }

    pub fn value_operand(&self, ty: TypeId, bytes: Vec<u8>) -> Operand {
        Operand {
            ty,
            loc: Loc::Bytes(bytes),
            name: String::new(),
        }
    }

    /// An integer of type `ty`, truncated to its size.
    pub fn int_operand(&self, v: i128, ty: TypeId) -> Operand {
        let size = self.types.size_of(ty).unwrap_or(8).min(16) as usize;
        self.value_operand(ty, v.to_le_bytes()[..size].to_vec())
    }

    pub fn eval(&mut self, e: &Expr) -> Result<Operand, EvalError> {
        match &e.kind {
            ExprKind::Ident(name) => self.ident(name),
            ExprKind::Int {
                value,
                unsigned,
                long,
            } => Ok(self.literal(*value, *unsigned, *long)),
            ExprKind::Char(c) => Ok(self.value_operand(CHAR, vec![*c])),
            ExprKind::Str(s) => {
                let mut bytes = s.clone();
                bytes.push(0);
                let ty = self.types.array_of(CHAR, bytes.len() as u64);
                Ok(self.value_operand(ty, bytes))
            }
            ExprKind::Unary(op, inner) => self.unary(*op, inner),
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r),
            ExprKind::Member { base, field, arrow } => {
                let b = self.eval(base)?;
                self.member(b, field, *arrow)
            }
            ExprKind::Index(base, index) => self.index(base, index),
            ExprKind::Cast(t, inner) => {
                let ty = self.named_type(t)?;
                let v = self.eval(inner)?;
                self.cast(v, ty)
            }
            ExprKind::SizeofType(t) => {
                let ty = self.named_type(t)?;
                let n = self.size(ty)?;
                Ok(self.int_operand(i128::from(n), ULONG))
            }
            ExprKind::SizeofExpr(inner) => {
                // The operand is not evaluated in C: what it reads here is
                // not part of the result.
                let saved = std::mem::take(&mut self.reads);
                let v = self.eval(inner);
                self.reads = saved;
                let n = self.size(v?.ty)?;
                Ok(self.int_operand(i128::from(n), ULONG))
            }
        }
    }

    /// C's type for an integer literal: the first of int, long, unsigned
    /// long (or unsigned int...) that holds it.
    fn literal(&self, v: u128, unsigned: bool, long: bool) -> Operand {
        let ty = if !long && !unsigned && v <= i32::MAX as u128 {
            INT
        } else if !long && unsigned && v <= u32::MAX as u128 {
            UINT
        } else if !unsigned && v <= i64::MAX as u128 {
            LONG
        } else {
            ULONG
        };
        self.int_operand(v as i128, ty)
    }

    fn ident(&mut self, name: &str) -> Result<Operand, EvalError> {
        let Some(found) = self.program.lookup(name, self.frame) else {
            if let Some((ty, v)) = self.types.find_enumerator(name) {
                return Ok(self.int_operand(v, ty));
            }
            return Err(self.unknown(name));
        };
        let mut ctx = Ctx {
            program: self.program,
            frame: self.frame,
            mem: self.mem,
            reads: &mut self.reads,
        };
        let loc = match locate(&found, &mut ctx)? {
            Place::Memory(a) => Loc::Mem(a),
            Place::Bytes(mut b) => {
                // Registers hold 8 bytes; the variable is its type's size.
                if let Some(n) = self.types.size_of(found.var.ty) {
                    b.resize(n as usize, 0);
                }
                Loc::Bytes(b)
            }
            Place::OptimizedOut => Loc::OptimizedOut,
        };
        Ok(Operand {
            ty: found.var.ty,
            loc,
            name: name.to_string(),
        })
    }

    fn unknown(&self, name: &str) -> EvalError {
        let names = self.program.names_in_scope(self.frame);
        let mut in_scope = names
            .iter()
            .take(MAX_LISTED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if names.len() > MAX_LISTED {
            in_scope.push_str(", ...");
        }
        if names.is_empty() {
            in_scope = "(nothing)".into();
        }
        EvalError::UnknownVariable {
            name: name.to_string(),
            in_scope,
            suggestion: nearest(name, &names),
        }
    }

    fn member(&mut self, base: Operand, field: &str, arrow: bool) -> Result<Operand, EvalError> {
        let op = if arrow { "->" } else { "." };
        // Like gdb, `p.f` on a pointer and `s->f` on a struct both work.
        let base = match &*self.types.resolve(base.ty) {
            Type::Pointer { .. } => self.deref(base)?,
            _ => base,
        };
        let sty = self.complete(self.types.strip(base.ty));
        let Type::Struct { members, .. } = &*self.types.get(sty) else {
            return Err(EvalError::NotAStruct {
                op,
                field: field.to_string(),
                wanted: if arrow {
                    "pointer to a struct or union"
                } else {
                    "struct or union"
                },
                ty: self.types.name(base.ty),
            });
        };
        let Some((m, extra)) = find_member(self.types, members, field, 0) else {
            let mut names = Vec::new();
            member_names(self.types, members, &mut names, 0);
            return Err(EvalError::NoField {
                field: field.to_string(),
                ty: self.types.name(sty),
                fields: names.join(", "),
            });
        };
        let name = format!("{}{op}{field}", base.name);
        let loc = match (&base.loc, m.bits) {
            (Loc::Mem(a), None) => Loc::Mem(a + extra + m.offset),
            (Loc::OptimizedOut, _) => Loc::OptimizedOut,
            // Bitfields and members of values not in memory are values.
            _ => {
                let bytes = self.load(&base)?;
                let shifted = bytes.get(extra as usize..).unwrap_or(&[]);
                let b = member_bytes(self.types, &m, shifted).ok_or_else(|| {
                    EvalError::Type(format!("field \"{field}\" is outside the value"))
                })?;
                Loc::Bytes(b)
            }
        };
        Ok(Operand {
            ty: m.ty,
            loc,
            name,
        })
    }

    /// A struct only declared in this unit (`struct node;`) is completed
    /// from a definition of the same name elsewhere, as gdb does.
    fn complete(&self, sty: TypeId) -> TypeId {
        match &*self.types.get(sty) {
            Type::Struct {
                kind,
                name: Some(n),
                incomplete: true,
                ..
            } => self
                .types
                .find_named(&format!("{} {n}", kind.keyword()))
                .unwrap_or(sty),
            _ => sty,
        }
    }

    /// `*op`: the object a pointer points to (or an array's first element).
    pub fn deref(&mut self, op: Operand) -> Result<Operand, EvalError> {
        let (s, ty) = self.scalar(&op)?;
        let (target, addr) = match (&*self.types.resolve(ty), s) {
            (Type::Pointer { target }, Scalar::Ptr(a)) => (*target, a),
            _ => {
                return Err(EvalError::NotAPointer {
                    ty: self.types.name(op.ty),
                })
            }
        };
        if matches!(&*self.types.resolve(target), Type::Void) {
            return Err(EvalError::Type(format!(
                "cannot dereference {}: cast it to a pointer to a type first",
                self.types.name(ty)
            )));
        }
        Ok(Operand {
            ty: target,
            loc: Loc::Mem(addr),
            name: format!("*{}", op.name),
        })
    }

    fn index(&mut self, base: &Expr, index: &Expr) -> Result<Operand, EvalError> {
        let b = self.eval(base)?;
        let i = self.eval(index)?;
        let (iv, _) = self.scalar(&i)?;
        let Scalar::Int(iv) = iv else {
            return Err(EvalError::Type("an array index must be an integer".into()));
        };
        let name = format!("{}[{iv}]", b.name);
        match &*self.types.resolve(b.ty) {
            Type::Array { elem, count } => {
                let esize = self.size(*elem)?;
                let off = (iv as i64).wrapping_mul(esize as i64) as u64;
                let loc = match &b.loc {
                    Loc::Mem(a) => Loc::Mem(a.wrapping_add(off)),
                    Loc::OptimizedOut => Loc::OptimizedOut,
                    Loc::Bytes(bytes) => {
                        let out_of = || {
                            EvalError::Type(format!(
                                "index {iv} is outside {}",
                                self.types.name(b.ty)
                            ))
                        };
                        if iv < 0 || count.is_some_and(|c| iv as u64 >= c) {
                            return Err(out_of());
                        }
                        let start = off as usize;
                        let end = start.checked_add(esize as usize).ok_or_else(out_of)?;
                        Loc::Bytes(bytes.get(start..end).ok_or_else(out_of)?.to_vec())
                    }
                };
                Ok(Operand {
                    ty: *elem,
                    loc,
                    name,
                })
            }
            Type::Pointer { .. } => {
                let sum = self.pointer_add(&b, iv)?;
                let mut d = self.deref(sum)?;
                d.name = name;
                Ok(d)
            }
            _ => Err(EvalError::NotIndexable {
                ty: self.types.name(b.ty),
            }),
        }
    }

    fn unary(&mut self, op: UnaryOp, inner: &Expr) -> Result<Operand, EvalError> {
        let v = self.eval(inner)?;
        match op {
            UnaryOp::Deref => self.deref(v),
            UnaryOp::AddrOf => match v.loc {
                Loc::Mem(a) => {
                    let ty = self.types.pointer_to(v.ty);
                    Ok(self.value_operand(ty, a.to_le_bytes().to_vec()))
                }
                _ => Err(EvalError::NoAddress {
                    what: if v.name.is_empty() {
                        "a computed value".into()
                    } else {
                        format!("\"{}\": it is not in memory", v.name)
                    },
                }),
            },
            UnaryOp::Not => {
                let t = self.truth(&v)?;
                Ok(self.int_operand(i128::from(!t), INT))
            }
            UnaryOp::Neg | UnaryOp::Plus | UnaryOp::BitNot => self.arith_unary(op, v),
        }
    }

    /// C truthiness: a scalar compared with 0.
    pub fn truth(&mut self, v: &Operand) -> Result<bool, EvalError> {
        Ok(match self.scalar(v)?.0 {
            Scalar::Int(i) => i != 0,
            Scalar::Float(f) => f != 0.0,
            Scalar::Ptr(p) => p != 0,
        })
    }

    fn named_type(&self, t: &TypeName) -> Result<TypeId, EvalError> {
        let mut ty = match self.types.find_named(&t.base) {
            Some(ty) => ty,
            None => builtin(self.types, &t.base)
                .ok_or_else(|| EvalError::UnknownType(t.base.clone()))?,
        };
        for _ in 0..t.pointers {
            ty = self.types.pointer_to(ty);
        }
        Ok(ty)
    }
}

/// C base types a cast may name even when the program's DWARF lacks them.
fn builtin(types: &TypeTable, name: &str) -> Option<TypeId> {
    use BaseEncoding::*;
    let (size, encoding) = match name {
        "void" => return Some(crate::dwarf::types::VOID),
        "_Bool" => (1, Bool),
        "char" | "signed char" => (1, SignedChar),
        "unsigned char" => (1, UnsignedChar),
        "short" => (2, Signed),
        "unsigned short" => (2, Unsigned),
        "int" => return Some(INT),
        "unsigned int" => return Some(UINT),
        "long" | "long long" => (8, Signed),
        "unsigned long" | "unsigned long long" => (8, Unsigned),
        "float" => (4, Float),
        "double" => (8, Float),
        _ => return None,
    };
    Some(types.add(Type::Base {
        name: name.to_string(),
        size,
        encoding,
    }))
}

fn describe(name: &str) -> String {
    if name.is_empty() {
        "the value".into()
    } else {
        format!("\"{name}\"")
    }
}

/// A member by name, looking inside anonymous struct/union members (C11);
/// returns it with the offset of the anonymous member holding it.
fn find_member(
    types: &TypeTable,
    members: &[Member],
    field: &str,
    depth: usize,
) -> Option<(Member, u64)> {
    for m in members {
        if m.name.as_deref() == Some(field) {
            return Some((m.clone(), 0));
        }
        if m.name.is_none() && depth < 8 {
            if let Type::Struct { members: inner, .. } = &*types.resolve(m.ty) {
                if let Some((found, off)) = find_member(types, inner, field, depth + 1) {
                    return Some((found, off + m.offset));
                }
            }
        }
    }
    None
}

fn member_names(types: &TypeTable, members: &[Member], out: &mut Vec<String>, depth: usize) {
    for m in members {
        match &m.name {
            Some(n) => out.push(n.clone()),
            None if depth < 8 => {
                if let Type::Struct { members: inner, .. } = &*types.resolve(m.ty) {
                    member_names(types, inner, out, depth + 1);
                }
            }
            None => {}
        }
    }
}

/// The name closest to `name` by edit distance (a transposition counting
/// one), if close enough to be a likely typo.
pub(crate) fn nearest(name: &str, names: &[String]) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    names
        .iter()
        .map(|n| (edit_distance(name, n), n))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names() {
        let names: Vec<String> = ["list_len", "head", "length"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(nearest("lenght", &names).as_deref(), Some("length"));
        assert_eq!(nearest("haed", &names).as_deref(), Some("head"));
        assert_eq!(nearest("zzzzzz", &names), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
