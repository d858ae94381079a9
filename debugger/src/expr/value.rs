//! Values: the bytes of an object with its DWARF type, printed as gdb
//! does (`42`, `0x5555555592a0 -> "hello"`, `{next = 0x0, owner = 2}`).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use crate::dwarf::types::{BaseEncoding, Type, TypeId, TypeTable};

/// Array elements printed before `...`.
pub const MAX_ELEMENTS: usize = 16;
/// Nesting printed before `{...}`.
const MAX_DEPTH: usize = 8;
/// Characters of a pointed-to string printed before `...`.
pub const MAX_STRING: usize = 200;

/// The result of an expression: the object's bytes and its type.
#[derive(Clone)]
pub struct Value {
    pub(crate) types: Arc<TypeTable>,
    pub(crate) ty: TypeId,
    /// The object representation (little-endian); shorter than the type
    /// when a large object was only partly read.
    pub(crate) bytes: Vec<u8>,
    /// Where the object is in the tracee, when it is in memory.
    pub(crate) address: Option<u64>,
    /// Strings that `char *` pointers in the value point to, read for
    /// printing (`None`: unreadable).
    pub(crate) strings: HashMap<u64, Option<Vec<u8>>>,
    pub(crate) optimized_out: bool,
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({}: {})", self.type_name(), self)
    }
}

/// Equal when of the same type with the same bytes: what a watchpoint
/// compares (strings behind pointers are not part of the value).
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.ty == other.ty
            && self.bytes == other.bytes
            && self.optimized_out == other.optimized_out
    }
}

/// A number as C arithmetic sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scalar {
    Int(i128),
    Float(f64),
    Ptr(u64),
}

/// Reads a little-endian integer of `bytes.len()` (at most 16) bytes.
pub(crate) fn decode_int(bytes: &[u8], signed: bool) -> i128 {
    let n = bytes.len().min(16);
    let mut b = [0u8; 16];
    b[..n].copy_from_slice(&bytes[..n]);
    let v = u128::from_le_bytes(b);
    if n == 0 || n == 16 {
        return v as i128;
    }
    let bits = n * 8;
    if signed && (v >> (bits - 1)) & 1 == 1 {
        (v | (!0u128 << bits)) as i128
    } else {
        v as i128
    }
}

fn decode_float(bytes: &[u8]) -> Option<f64> {
    Some(match bytes.len() {
        4 => f32::from_le_bytes(bytes.try_into().ok()?) as f64,
        8 => f64::from_le_bytes(bytes.try_into().ok()?),
        // x87 80-bit extended (long double), padded to 16 bytes.
        10 | 16 => {
            let mant = u64::from_le_bytes(bytes[..8].try_into().ok()?);
            let se = u16::from_le_bytes(bytes[8..10].try_into().ok()?);
            let exp = i32::from(se & 0x7fff) - 16383 - 63;
            let v = mant as f64 * 2f64.powi(exp);
            if se & 0x8000 != 0 {
                -v
            } else {
                v
            }
        }
        _ => return None,
    })
}

/// The scalar in `bytes` if `ty` is a number, pointer or enum.
pub(crate) fn scalar_of(types: &TypeTable, ty: TypeId, bytes: &[u8]) -> Option<Scalar> {
    let size = types.size_of(ty)? as usize;
    let bytes = bytes.get(..size)?;
    Some(match &*types.resolve(ty) {
        Type::Base { encoding, .. } => match encoding {
            BaseEncoding::Float => Scalar::Float(decode_float(bytes)?),
            BaseEncoding::Signed | BaseEncoding::SignedChar => Scalar::Int(decode_int(bytes, true)),
            BaseEncoding::Other => return None,
            _ => Scalar::Int(decode_int(bytes, false)),
        },
        Type::Enum { signed, .. } => Scalar::Int(decode_int(bytes, *signed)),
        Type::Pointer { .. } => Scalar::Ptr(decode_int(bytes, false) as u64),
        _ => return None,
    })
}

/// Whether `ty` is a pointer to a character type (printed with its string).
pub(crate) fn is_char_pointer(types: &TypeTable, ty: TypeId) -> bool {
    matches!(&*types.resolve(ty), Type::Pointer { target } if types.is_char(*target))
}

impl Value {
    pub fn ty(&self) -> TypeId {
        self.ty
    }

    /// The C spelling of the value's type: `struct stack *`, `long`, `int[8]`.
    pub fn type_name(&self) -> String {
        self.types.name(self.ty)
    }

    /// Where the value is in the tracee's memory, if it is in memory.
    pub fn address(&self) -> Option<u64> {
        self.address
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_optimized_out(&self) -> bool {
        self.optimized_out
    }

    /// C truthiness of a scalar (number, pointer, enum); `None` for
    /// structs, arrays and optimized-out values.
    pub fn is_true(&self) -> Option<bool> {
        if self.optimized_out {
            return None;
        }
        Some(match scalar_of(&self.types, self.ty, &self.bytes)? {
            Scalar::Int(v) => v != 0,
            Scalar::Float(f) => f != 0.0,
            Scalar::Ptr(p) => p != 0,
        })
    }

    /// The value as an integer: numbers (floats truncated), enums, chars,
    /// bools, pointers (their address); `None` for aggregates.
    pub fn as_i128(&self) -> Option<i128> {
        if self.optimized_out {
            return None;
        }
        Some(match scalar_of(&self.types, self.ty, &self.bytes)? {
            Scalar::Int(v) => v,
            Scalar::Float(f) => f as i128,
            Scalar::Ptr(p) => i128::from(p),
        })
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.optimized_out {
            return f.write_str("<optimized out>");
        }
        let mut out = String::new();
        let p = Printer {
            types: &self.types,
            strings: &self.strings,
        };
        p.value(&mut out, self.ty, &self.bytes, 0);
        f.write_str(&out)
    }
}

struct Printer<'a> {
    types: &'a TypeTable,
    strings: &'a HashMap<u64, Option<Vec<u8>>>,
}

impl Printer<'_> {
    fn value(&self, out: &mut String, ty: TypeId, bytes: &[u8], depth: usize) {
        let t = self.types.resolve(ty);
        let size = self.types.size_of(ty).unwrap_or(0) as usize;
        if size > 0
            && bytes.len() < size
            && !matches!(&*t, Type::Array { .. } | Type::Struct { .. })
        {
            out.push_str("<unavailable>");
            return;
        }
        match &*t {
            Type::Base { encoding, .. } => self.base(out, *encoding, &bytes[..size]),
            Type::Enum {
                enumerators,
                signed,
                ..
            } => {
                let v = decode_int(&bytes[..size], *signed);
                match enumerators.iter().find(|(_, x)| *x == v) {
                    Some((name, _)) => out.push_str(name),
                    None => {
                        let _ = write!(out, "{v}");
                    }
                }
            }
            Type::Pointer { target } => {
                let p = decode_int(&bytes[..size], false) as u64;
                let _ = write!(out, "{p:#x}");
                if p != 0 && self.types.is_char(*target) {
                    match self.strings.get(&p) {
                        Some(Some(s)) => {
                            out.push_str(" -> ");
                            quote_string(out, s, s.len() >= MAX_STRING);
                        }
                        Some(None) => out.push_str(" -> <unreadable>"),
                        None => {}
                    }
                }
            }
            Type::Struct { .. } if depth >= MAX_DEPTH => out.push_str("{...}"),
            Type::Struct {
                members,
                incomplete,
                ..
            } => {
                if *incomplete {
                    out.push_str("<incomplete type>");
                    return;
                }
                out.push('{');
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    if let Some(n) = &m.name {
                        let _ = write!(out, "{n} = ");
                    }
                    match member_bytes(self.types, m, bytes) {
                        Some(b) => self.value(out, m.ty, &b, depth + 1),
                        None => out.push_str("<unavailable>"),
                    }
                }
                out.push('}');
            }
            Type::Array { .. } if depth >= MAX_DEPTH => out.push_str("{...}"),
            Type::Array { elem, count } => self.array(out, *elem, *count, bytes, depth),
            Type::Function { .. } => out.push_str("<function>"),
            Type::Void => out.push_str("void"),
            _ => out.push_str("<unknown type>"),
        }
    }

    fn base(&self, out: &mut String, encoding: BaseEncoding, bytes: &[u8]) {
        let _ = match encoding {
            BaseEncoding::Bool => match decode_int(bytes, false) {
                0 => write!(out, "false"),
                1 => write!(out, "true"),
                v => write!(out, "{v}"),
            },
            BaseEncoding::SignedChar | BaseEncoding::UnsignedChar if bytes.len() == 1 => {
                let signed = encoding == BaseEncoding::SignedChar;
                let _ = write!(out, "{} '", decode_int(bytes, signed));
                escape_char(out, bytes[0], '\'');
                write!(out, "'")
            }
            BaseEncoding::Signed | BaseEncoding::SignedChar => {
                write!(out, "{}", decode_int(bytes, true))
            }
            BaseEncoding::Unsigned | BaseEncoding::UnsignedChar => {
                write!(out, "{}", decode_int(bytes, false))
            }
            BaseEncoding::Float => match decode_float(bytes) {
                Some(f) => write!(out, "{f}"),
                None => write!(out, "<float of {} bytes>", bytes.len()),
            },
            BaseEncoding::Other => {
                let hex: String = bytes.iter().rev().map(|b| format!("{b:02x}")).collect();
                write!(out, "0x{hex}")
            }
        };
    }

    fn array(
        &self,
        out: &mut String,
        elem: TypeId,
        count: Option<u64>,
        bytes: &[u8],
        depth: usize,
    ) {
        let esize = self.types.size_of(elem).unwrap_or(0) as usize;
        let avail = bytes.len().checked_div(esize).unwrap_or(0);
        let n = count.map_or(avail, |c| (c as usize).min(avail));
        if self.types.is_char(elem) && esize == 1 {
            let s = &bytes[..n];
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            let cut = end > MAX_STRING;
            quote_string(
                out,
                &s[..end.min(MAX_STRING)],
                cut || (end == s.len() && count.is_some_and(|c| c as usize > n)),
            );
            return;
        }
        out.push('{');
        for i in 0..n.min(MAX_ELEMENTS) {
            if i > 0 {
                out.push_str(", ");
            }
            self.value(out, elem, &bytes[i * esize..(i + 1) * esize], depth + 1);
        }
        if n > MAX_ELEMENTS || count.is_some_and(|c| c as usize > n) {
            out.push_str(if n == 0 { "..." } else { ", ..." });
        }
        out.push('}');
    }
}

/// The bytes of member `m` of a struct whose bytes are `bytes`; a
/// bitfield comes out as a value of the member's type.
pub(crate) fn member_bytes(
    types: &TypeTable,
    m: &crate::dwarf::types::Member,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let size = types.size_of(m.ty).unwrap_or(0) as usize;
    let start = m.offset as usize;
    let Some((bit_off, bit_size)) = m.bits else {
        return bytes
            .get(start..start.checked_add(size)?)
            .map(<[u8]>::to_vec);
    };
    let nbytes = (bit_off.saturating_add(bit_size).div_ceil(8) as usize).min(16);
    let raw = decode_int(bytes.get(start..start.checked_add(nbytes)?)?, false) as u128;
    let mut v = (raw >> bit_off) & ((1u128 << bit_size.min(127)) - 1);
    let signed = matches!(scalar_of(types, m.ty, &vec![0xff; size]), Some(Scalar::Int(x)) if x < 0);
    if signed && bit_size > 0 && (v >> (bit_size - 1)) & 1 == 1 {
        v |= !0u128 << bit_size;
    }
    Some(v.to_le_bytes()[..size.min(16)].to_vec())
}

fn escape_char(out: &mut String, b: u8, quote: char) {
    match b {
        b'\n' => out.push_str("\\n"),
        b'\t' => out.push_str("\\t"),
        b'\r' => out.push_str("\\r"),
        b'\\' => out.push_str("\\\\"),
        0x20..=0x7e if b as char == quote => {
            out.push('\\');
            out.push(quote);
        }
        0x20..=0x7e => out.push(b as char),
        _ => {
            let _ = write!(out, "\\{b:03o}");
        }
    }
}

/// `"text"`, escaped as C would; `...` after when cut short.
pub(crate) fn quote_string(out: &mut String, s: &[u8], cut: bool) {
    out.push('"');
    for &b in s {
        escape_char(out, b, '"');
    }
    out.push('"');
    if cut {
        out.push_str("...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dwarf::types::{Member, StructKind, CHAR, INT, LONG};

    fn val(types: &Arc<TypeTable>, ty: TypeId, bytes: Vec<u8>) -> Value {
        Value {
            types: types.clone(),
            ty,
            bytes,
            address: None,
            strings: HashMap::new(),
            optimized_out: false,
        }
    }

    #[test]
    fn prints_like_gdb() {
        let t = Arc::new(TypeTable::new());
        assert_eq!(
            val(&t, INT, (-1i32).to_le_bytes().to_vec()).to_string(),
            "-1"
        );
        assert_eq!(val(&t, CHAR, vec![65]).to_string(), "65 'A'");
        assert_eq!(val(&t, CHAR, vec![0]).to_string(), "0 '\\000'");
        let arr = t.add(Type::Array {
            elem: INT,
            count: Some(20),
        });
        let a = val(&t, arr, vec![0; 80]).to_string();
        assert!(a.starts_with("{0, 0,") && a.ends_with(", ...}"), "{a}");
        let s = t.add(Type::Struct {
            kind: StructKind::Struct,
            name: Some("s".into()),
            size: 16,
            members: vec![
                Member {
                    name: Some("next".into()),
                    ty: t.pointer_to(INT),
                    offset: 0,
                    bits: None,
                },
                Member {
                    name: Some("flag".into()),
                    ty: INT,
                    offset: 8,
                    bits: Some((3, 2)),
                },
            ],
            incomplete: false,
        });
        let mut b = vec![0u8; 16];
        b[8] = 0b11000;
        assert_eq!(val(&t, s, b).to_string(), "{next = 0x0, flag = -1}");
        let mut v = val(&t, t.pointer_to(CHAR), 0x1000u64.to_le_bytes().to_vec());
        v.strings.insert(0x1000, Some(b"hi\n".to_vec()));
        assert_eq!(v.to_string(), "0x1000 -> \"hi\\n\"");
        assert_eq!(v.as_i128(), Some(0x1000));
        assert_eq!(
            val(&t, LONG, 5i64.to_le_bytes().to_vec()).is_true(),
            Some(true)
        );
        let carr = t.add(Type::Array {
            elem: CHAR,
            count: Some(8),
        });
        assert_eq!(
            val(&t, carr, b"abc\0\0\0\0\0".to_vec()).to_string(),
            "\"abc\""
        );
    }
}
