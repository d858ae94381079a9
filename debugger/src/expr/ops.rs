//! C arithmetic on evaluated operands: the usual arithmetic conversions,
//! pointer arithmetic scaled by the element size, comparisons, logical
//! operators that short-circuit, and casts.

use super::error::EvalError;
use super::eval::{Evaluator, Operand};
use super::parser::{BinaryOp, Expr, UnaryOp};
use super::value::Scalar;
use crate::dwarf::types::{BaseEncoding, Type, TypeId, DOUBLE, INT, LONG, UINT, ULONG};

/// (size, signed) of an integer type after C's integer promotion.
fn int_kind(ev: &Evaluator<'_>, ty: TypeId) -> (u64, bool) {
    let size = ev.types.size_of(ty).unwrap_or(4);
    let signed = match &*ev.types.resolve(ty) {
        Type::Base { encoding, .. } => {
            matches!(encoding, BaseEncoding::Signed | BaseEncoding::SignedChar)
        }
        Type::Enum { signed, .. } => *signed,
        _ => false,
    };
    if size < 4 {
        // char, short, _Bool all fit in int.
        (4, true)
    } else {
        (size.min(8), signed)
    }
}

fn int_type(kind: (u64, bool)) -> TypeId {
    match kind {
        (4, true) => INT,
        (4, false) => UINT,
        (_, true) => LONG,
        (_, false) => ULONG,
    }
}

/// The common type of two integer operands (C11 6.3.1.8).
fn common(a: (u64, bool), b: (u64, bool)) -> (u64, bool) {
    if a.0 != b.0 {
        if a.0 > b.0 {
            a
        } else {
            b
        }
    } else {
        (a.0, a.1 && b.1)
    }
}

/// `v` converted to an integer of `size` bytes (wrapping, as C does).
pub(crate) fn fit(v: i128, (size, signed): (u64, bool)) -> i128 {
    let bits = size.saturating_mul(8).min(128) as u32;
    if bits >= 128 {
        return v;
    }
    if bits == 0 {
        return 0;
    }
    let masked = (v as u128) & ((1u128 << bits) - 1);
    if signed && (masked >> (bits - 1)) & 1 == 1 {
        (masked | (!0u128 << bits)) as i128
    } else {
        masked as i128
    }
}

impl Evaluator<'_> {
    pub(crate) fn binary(
        &mut self,
        op: BinaryOp,
        l: &Expr,
        r: &Expr,
    ) -> Result<Operand, EvalError> {
        if matches!(op, BinaryOp::And | BinaryOp::Or) {
            let a = self.eval(l)?;
            let ta = self.truth(&a)?;
            // Short-circuit: the right side is not evaluated (nor read).
            if ta == (op == BinaryOp::Or) {
                return Ok(self.int_operand(i128::from(ta), INT));
            }
            let b = self.eval(r)?;
            let tb = self.truth(&b)?;
            return Ok(self.int_operand(i128::from(tb), INT));
        }
        let a = self.eval(l)?;
        let b = self.eval(r)?;
        let (sa, ta) = self.scalar(&a)?;
        let (sb, tb) = self.scalar(&b)?;
        let bad = |ev: &Self| {
            EvalError::Type(format!(
                "invalid operands to '{}' ({} and {})",
                op.symbol(),
                ev.types.name(ta),
                ev.types.name(tb)
            ))
        };
        match (sa, sb) {
            (Scalar::Int(x), Scalar::Int(y)) => self.int_binary(op, x, ta, y, tb),
            (Scalar::Float(_), _) | (_, Scalar::Float(_)) => {
                let f = |s: Scalar| match s {
                    Scalar::Int(i) => Some(i as f64),
                    Scalar::Float(f) => Some(f),
                    Scalar::Ptr(_) => None,
                };
                match (f(sa), f(sb)) {
                    (Some(x), Some(y)) => self.float_binary(op, x, y).ok_or_else(|| bad(self)),
                    _ => Err(bad(self)),
                }
            }
            // The pointer as a value: an array operand has decayed.
            (Scalar::Ptr(x), Scalar::Int(n)) if matches!(op, BinaryOp::Add | BinaryOp::Sub) => {
                let n = if op == BinaryOp::Sub {
                    n.wrapping_neg()
                } else {
                    n
                };
                let p = Operand {
                    name: a.name,
                    ..self.value_operand(ta, x.to_le_bytes().to_vec())
                };
                self.pointer_add(&p, n)
            }
            (Scalar::Int(n), Scalar::Ptr(x)) if op == BinaryOp::Add => {
                let p = Operand {
                    name: b.name,
                    ..self.value_operand(tb, x.to_le_bytes().to_vec())
                };
                self.pointer_add(&p, n)
            }
            (Scalar::Ptr(x), Scalar::Ptr(y)) if op == BinaryOp::Sub => {
                let (ea, eb) = (self.elem_size(ta)?, self.elem_size(tb)?);
                if ea != eb {
                    return Err(bad(self));
                }
                let diff = (x as i64).wrapping_sub(y as i64) / ea.max(1) as i64;
                Ok(self.int_operand(i128::from(diff), LONG))
            }
            (x, y) => {
                // Comparisons of pointers (with pointers or integers such
                // as 0) compare addresses.
                let addr = |s: Scalar| match s {
                    Scalar::Ptr(p) => i128::from(p),
                    Scalar::Int(i) => fit(i, (8, false)),
                    Scalar::Float(_) => 0,
                };
                match compare(op, addr(x), addr(y)) {
                    Some(c) => Ok(self.int_operand(i128::from(c), INT)),
                    None => Err(bad(self)),
                }
            }
        }
    }

    fn int_binary(
        &mut self,
        op: BinaryOp,
        x: i128,
        ta: TypeId,
        y: i128,
        tb: TypeId,
    ) -> Result<Operand, EvalError> {
        let (ka, kb) = (int_kind(self, ta), int_kind(self, tb));
        if matches!(op, BinaryOp::Shl | BinaryOp::Shr) {
            let bits = ka.0 * 8;
            if y < 0 || y >= i128::from(bits) {
                return Err(EvalError::Type(format!(
                    "shift count {y} is out of range for {}",
                    self.types.name(int_type(ka))
                )));
            }
            let x = fit(x, ka);
            let v = if op == BinaryOp::Shl { x << y } else { x >> y };
            return Ok(self.int_operand(fit(v, ka), int_type(ka)));
        }
        let k = common(ka, kb);
        let (x, y) = (fit(x, k), fit(y, k));
        if let Some(c) = compare(op, x, y) {
            return Ok(self.int_operand(i128::from(c), INT));
        }
        let v = match op {
            BinaryOp::Add => x.wrapping_add(y),
            BinaryOp::Sub => x.wrapping_sub(y),
            BinaryOp::Mul => x.wrapping_mul(y),
            BinaryOp::Div | BinaryOp::Rem if y == 0 => return Err(EvalError::DivisionByZero),
            BinaryOp::Div => x.wrapping_div(y),
            BinaryOp::Rem => x.wrapping_rem(y),
            BinaryOp::BitAnd => x & y,
            BinaryOp::BitOr => x | y,
            BinaryOp::BitXor => x ^ y,
            _ => {
                return Err(EvalError::Type(format!(
                    "'{}' is not supported here",
                    op.symbol()
                )))
            }
        };
        Ok(self.int_operand(fit(v, k), int_type(k)))
    }

    fn float_binary(&self, op: BinaryOp, x: f64, y: f64) -> Option<Operand> {
        if let Some(c) = fcompare(op, x, y) {
            return Some(self.int_operand(i128::from(c), INT));
        }
        let v = match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            // IEEE: x / 0.0 is an infinity, as in C.
            BinaryOp::Div => x / y,
            _ => return None,
        };
        Some(self.value_operand(DOUBLE, v.to_le_bytes().to_vec()))
    }

    /// Size of what a pointer type points to (1 for `void *`, as gcc).
    fn elem_size(&self, ptr: TypeId) -> Result<u64, EvalError> {
        match &*self.types.resolve(ptr) {
            Type::Pointer { target } => match &*self.types.resolve(*target) {
                Type::Void | Type::Function { .. } => Ok(1),
                _ => self.size(*target),
            },
            _ => Err(EvalError::NotAPointer {
                ty: self.types.name(ptr),
            }),
        }
    }

    /// `p + n`, scaled by the size of `*p`.
    pub(crate) fn pointer_add(&mut self, p: &Operand, n: i128) -> Result<Operand, EvalError> {
        let (s, ty) = self.scalar(p)?;
        let Scalar::Ptr(addr) = s else {
            return Err(EvalError::NotAPointer {
                ty: self.types.name(p.ty),
            });
        };
        let size = self.elem_size(ty)?;
        let off = (n as i64).wrapping_mul(size as i64);
        let a = addr.wrapping_add(off as u64);
        Ok(Operand {
            name: format!("{}+{n}", p.name),
            ..self.value_operand(ty, a.to_le_bytes().to_vec())
        })
    }

    pub(crate) fn arith_unary(&mut self, op: UnaryOp, v: Operand) -> Result<Operand, EvalError> {
        let (s, ty) = self.scalar(&v)?;
        match s {
            Scalar::Int(x) => {
                let k = int_kind(self, ty);
                let r = match op {
                    UnaryOp::Neg => x.wrapping_neg(),
                    UnaryOp::BitNot => !x,
                    _ => x,
                };
                Ok(self.int_operand(fit(r, k), int_type(k)))
            }
            Scalar::Float(f) if op != UnaryOp::BitNot => {
                let r = if op == UnaryOp::Neg { -f } else { f };
                Ok(self.value_operand(DOUBLE, r.to_le_bytes().to_vec()))
            }
            _ => Err(EvalError::Type(format!(
                "invalid operand to unary '{}' ({})",
                match op {
                    UnaryOp::Neg => "-",
                    UnaryOp::BitNot => "~",
                    _ => "+",
                },
                self.types.name(ty)
            ))),
        }
    }

    /// `(type) v` for scalar types; a struct or array only to its own type.
    pub(crate) fn cast(&mut self, v: Operand, to: TypeId) -> Result<Operand, EvalError> {
        if self.types.strip(v.ty) == self.types.strip(to) {
            return Ok(Operand { ty: to, ..v });
        }
        let (s, _) = self.scalar(&v)?;
        let target = self.types.resolve(to);
        let size = self.types.size_of(to).unwrap_or(0);
        let bad = || {
            EvalError::Type(format!(
                "cannot cast {} to {}",
                self.types.name(v.ty),
                self.types.name(to)
            ))
        };
        let int_of = |s: Scalar| match s {
            Scalar::Int(i) => i,
            Scalar::Ptr(p) => i128::from(p),
            Scalar::Float(f) => f as i128,
        };
        match &*target {
            Type::Base {
                encoding: BaseEncoding::Float,
                ..
            } => {
                let f = match s {
                    Scalar::Int(i) => i as f64,
                    Scalar::Float(f) => f,
                    Scalar::Ptr(_) => return Err(bad()),
                };
                match size {
                    4 => Ok(self.value_operand(to, (f as f32).to_le_bytes().to_vec())),
                    8 => Ok(self.value_operand(to, f.to_le_bytes().to_vec())),
                    _ => Err(bad()),
                }
            }
            Type::Base {
                encoding: BaseEncoding::Bool,
                ..
            } => Ok(self.int_operand(i128::from(int_of(s) != 0), to)),
            Type::Base { .. } | Type::Enum { .. } | Type::Pointer { .. } => {
                Ok(self.int_operand(int_of(s), to))
            }
            _ => Err(bad()),
        }
    }
}

fn compare(op: BinaryOp, x: i128, y: i128) -> Option<bool> {
    Some(match op {
        BinaryOp::Lt => x < y,
        BinaryOp::Le => x <= y,
        BinaryOp::Gt => x > y,
        BinaryOp::Ge => x >= y,
        BinaryOp::Eq => x == y,
        BinaryOp::Ne => x != y,
        _ => return None,
    })
}

fn fcompare(op: BinaryOp, x: f64, y: f64) -> Option<bool> {
    Some(match op {
        BinaryOp::Lt => x < y,
        BinaryOp::Le => x <= y,
        BinaryOp::Gt => x > y,
        BinaryOp::Ge => x >= y,
        BinaryOp::Eq => x == y,
        BinaryOp::Ne => x != y,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_like_c() {
        assert_eq!(fit(-1, (4, false)), 0xffff_ffff);
        assert_eq!(fit(0x1_0000_0000, (4, true)), 0);
        assert_eq!(fit(0xffff_ffff, (4, true)), -1);
        assert_eq!(common((4, true), (4, false)), (4, false));
        assert_eq!(common((8, true), (4, false)), (8, true));
    }
}
