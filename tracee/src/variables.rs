//! Names of global and static variables by address, for reports: the
//! variable containing an address, down to the struct member and array
//! element (`conn.proc_info`, `free_stacks[3]`), from the executable's
//! DWARF, else from its ELF symbol table (`counter`, `buf+12`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use gimli::{AttributeValue, DebuggingInformationEntry, Operation, Reader, UnitOffset};
use object::{Object, ObjectSymbol, SymbolKind};

use crate::error::{Result, TraceeError};
use crate::symbolizer::{elf_err, endian_of, load_dwarf, separate_debug_data, R};

/// Deepest nesting of types followed (members of members, typedefs...).
const MAX_TYPE_DEPTH: usize = 64;

type TypeId = usize;

/// A type, as far as naming the parts of a variable goes. Typedefs and
/// qualifiers (const, volatile, _Atomic...) are resolved to their target.
#[derive(Debug)]
enum Type {
    /// Base types, pointers, enums, anything without named parts.
    Leaf { size: Option<u64> },
    /// Structs, unions and classes.
    Struct {
        size: Option<u64>,
        members: Vec<Member>,
    },
    Array {
        elem: Option<TypeId>,
        /// Element counts, outermost first (`int m[3][4]`: `[3, 4]`).
        dims: Vec<Option<u64>>,
        /// `DW_AT_byte_size` of the array type, if given.
        size: Option<u64>,
    },
}

#[derive(Debug)]
struct Member {
    /// `None` for anonymous structs/unions and base classes.
    name: Option<String>,
    offset: u64,
    ty: Option<TypeId>,
}

/// A variable at a fixed address.
#[derive(Debug)]
struct Var {
    addr: u64,
    /// Bytes; 0 when unknown (then only its first byte matches).
    size: u64,
    name: String,
    ty: Option<TypeId>,
}

impl Var {
    fn contains(&self, addr: u64) -> bool {
        addr >= self.addr && addr - self.addr < self.size.max(1)
    }
}

/// The global and static variables of an executable, by address.
#[derive(Debug, Default)]
pub struct Variables {
    /// Variables from DWARF, sorted by address.
    vars: Vec<Var>,
    /// `STT_OBJECT` symbols with a size, sorted by address.
    symbols: Vec<Var>,
    types: Vec<Type>,
}

impl Variables {
    /// Reads the variables of the ELF file at `elf`: from its DWARF (in the
    /// file or in a separate debug file found by build id) and its symbol
    /// tables. A unit whose DWARF cannot be parsed is skipped.
    pub fn load(elf: &Path) -> Result<Variables> {
        let data = std::fs::read(elf).map_err(|e| TraceeError::io(elf, e))?;
        let file = object::File::parse(&*data).map_err(|e| elf_err(elf, e))?;
        let debug_data = separate_debug_data(&file);
        let debug_file = debug_data
            .as_deref()
            .and_then(|d| object::File::parse(d).ok());

        let mut symbols = Vec::new();
        for f in std::iter::once(&file).chain(debug_file.iter()) {
            collect_symbols(f, &mut symbols);
        }
        symbols.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
        symbols.dedup_by_key(|s| s.addr);

        let mut vars = Vec::new();
        let mut types = Vec::new();
        for f in debug_file.iter().chain(std::iter::once(&file)) {
            if let Some(dwarf) = load_dwarf(f, endian_of(f))? {
                let mut b = Builder::new(&dwarf)?;
                b.collect_all(&mut vars);
                types = b.types;
                break;
            }
        }
        // Definitions in several units (or a definition and its abstract
        // origin): keep the one that has a type, then a size.
        vars.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then(b.ty.is_some().cmp(&a.ty.is_some()))
                .then(b.size.cmp(&a.size))
        });
        vars.dedup_by_key(|v| v.addr);
        for v in &mut vars {
            if v.size == 0 {
                if let Some(s) = find(&symbols, v.addr).filter(|s| s.addr == v.addr) {
                    v.size = s.size;
                }
            }
        }
        Ok(Variables {
            vars,
            symbols,
            types,
        })
    }

    /// Number of variables known from DWARF and from the symbol tables.
    pub fn len(&self) -> usize {
        self.vars.len() + self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The global/static variable containing ELF virtual address `addr`,
    /// named as a C programmer would: `conn.proc_info`, `free_stacks[3]`,
    /// `counter`, `buf+12` (an offset into something without finer type
    /// information).
    pub fn describe(&self, addr: u64) -> Option<String> {
        if let Some(v) = find(&self.vars, addr) {
            let mut name = v.name.clone();
            let off = addr - v.addr;
            match v.ty {
                Some(ty) => self.describe_in(ty, off, &mut name, 0),
                None => push_offset(&mut name, off),
            }
            return Some(name);
        }
        let s = find(&self.symbols, addr)?;
        let mut name = s.name.clone();
        push_offset(&mut name, addr - s.addr);
        Some(name)
    }

    fn size_of(&self, ty: TypeId) -> Option<u64> {
        size_of(&self.types, ty, 0)
    }

    /// Appends to `name` the part of a `ty` at byte `off`.
    fn describe_in(&self, ty: TypeId, off: u64, name: &mut String, depth: usize) {
        if depth > MAX_TYPE_DEPTH {
            push_offset(name, off);
            return;
        }
        match &self.types[ty] {
            Type::Leaf { .. } => push_offset(name, off),
            Type::Struct { members, .. } => {
                let size = |m: &Member| m.ty.and_then(|t| self.size_of(t)).filter(|&s| s > 0);
                // A member of known size containing `off`; else the last
                // one of unknown size (a flexible array) starting before it.
                let member = members
                    .iter()
                    .find(|m| m.offset <= off && size(m).is_some_and(|s| off - m.offset < s))
                    .or_else(|| {
                        members
                            .iter()
                            .rev()
                            .find(|m| m.offset <= off && size(m).is_none())
                    });
                let Some(m) = member else {
                    push_offset(name, off);
                    return;
                };
                if let Some(n) = &m.name {
                    name.push('.');
                    name.push_str(n);
                }
                match m.ty {
                    Some(t) => self.describe_in(t, off - m.offset, name, depth + 1),
                    None => push_offset(name, off - m.offset),
                }
            }
            Type::Array { elem, dims, .. } => {
                let Some(elem) = *elem else {
                    push_offset(name, off);
                    return;
                };
                let Some(elem_size) = self.size_of(elem).filter(|&s| s > 0) else {
                    push_offset(name, off);
                    return;
                };
                // Stride of each dimension: the element size times the
                // counts of the inner dimensions (the outermost count may
                // be unknown: `extern int a[];`).
                let mut strides = Vec::with_capacity(dims.len());
                let mut stride = elem_size;
                for (k, d) in dims.iter().enumerate().rev() {
                    strides.push(stride);
                    if k > 0 {
                        match d.and_then(|d| stride.checked_mul(d)) {
                            Some(s) => stride = s,
                            None => {
                                // Unknown inner count: index by element.
                                let _ = write!(name, "[{}]", off / elem_size);
                                self.describe_in(elem, off % elem_size, name, depth + 1);
                                return;
                            }
                        }
                    }
                }
                strides.reverse();
                let mut rem = off;
                for s in strides {
                    let _ = write!(name, "[{}]", rem / s);
                    rem %= s;
                }
                self.describe_in(elem, rem, name, depth + 1);
            }
        }
    }
}

/// Bytes of type `ty`, when known.
fn size_of(types: &[Type], ty: TypeId, depth: usize) -> Option<u64> {
    match &types[ty] {
        Type::Leaf { size } | Type::Struct { size, .. } => *size,
        Type::Array { size: Some(s), .. } => Some(*s),
        Type::Array { elem, dims, .. } => {
            if depth > MAX_TYPE_DEPTH {
                return None;
            }
            let mut n = size_of(types, (*elem)?, depth + 1)?;
            for d in dims {
                n = n.checked_mul((*d)?)?;
            }
            Some(n)
        }
    }
}

fn push_offset(name: &mut String, off: u64) {
    if off > 0 {
        let _ = write!(name, "+{off}");
    }
}

/// The entry of `sorted` (by address) containing `addr`.
fn find(sorted: &[Var], addr: u64) -> Option<&Var> {
    let i = sorted.partition_point(|v| v.addr <= addr);
    // The nearest start first; a few more in case variables overlap.
    sorted[..i].iter().rev().take(8).find(|v| v.contains(addr))
}

fn collect_symbols(file: &object::File<'_>, out: &mut Vec<Var>) {
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        if sym.kind() != SymbolKind::Data || sym.is_undefined() || sym.size() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() {
            continue;
        }
        out.push(Var {
            addr: sym.address(),
            size: sym.size(),
            name: addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned(),
            ty: None,
        });
    }
}

/// Reads variables and the types they need out of DWARF.
struct Builder<'a> {
    dwarf: &'a gimli::Dwarf<R>,
    units: Vec<gimli::Unit<R>>,
    types: Vec<Type>,
    /// Type of each DIE already read, by (unit index, offset in the unit).
    ids: HashMap<(usize, usize), Option<TypeId>>,
}

type Die = DebuggingInformationEntry<R>;

impl<'a> Builder<'a> {
    fn new(dwarf: &'a gimli::Dwarf<R>) -> Result<Self> {
        let mut units = Vec::new();
        let mut headers = dwarf.units();
        while let Some(header) = headers.next()? {
            // A unit that does not parse is left out.
            if let Ok(unit) = dwarf.unit(header) {
                units.push(unit);
            }
        }
        Ok(Builder {
            dwarf,
            units,
            types: Vec::new(),
            ids: HashMap::new(),
        })
    }

    fn collect_all(&mut self, out: &mut Vec<Var>) {
        for u in 0..self.units.len() {
            // A DWARF error ends this unit's variables, not the others'.
            let _ = self.collect_unit(u, out);
        }
    }

    /// The variables of unit `u` at fixed addresses (`DW_OP_addr`), at
    /// any depth: file scope and function statics.
    fn collect_unit(&mut self, u: usize, out: &mut Vec<Var>) -> Result<()> {
        let mut found = Vec::new();
        {
            let unit = &self.units[u];
            let mut entries = unit.entries();
            while let Some(die) = entries.next_dfs()? {
                if die.tag() != gimli::DW_TAG_variable {
                    continue;
                }
                if let Some(addr) = self.fixed_address(u, die) {
                    found.push((addr, die.offset()));
                }
            }
        }
        for (addr, offset) in found {
            let unit = &self.units[u];
            let die = unit.entry(offset)?;
            // The name and type may be on the declaration this defines
            // (`DW_AT_specification`) or on an abstract origin.
            let mut name = None;
            let mut ty = None;
            let mut cur = Some((u, die));
            for _ in 0..4 {
                let Some((cu, d)) = cur.take() else { break };
                if name.is_none() {
                    if let Some(v) = d.attr_value(gimli::DW_AT_name) {
                        let s = self.dwarf.attr_string(&self.units[cu], v)?;
                        name = Some(s.to_string_lossy()?.into_owned());
                    }
                }
                if ty.is_none() {
                    if let Some(v) = d.attr_value(gimli::DW_AT_type) {
                        ty = self.type_ref(cu, v, 0)?;
                    }
                }
                if name.is_some() && ty.is_some() {
                    break;
                }
                let next = d
                    .attr_value(gimli::DW_AT_specification)
                    .or_else(|| d.attr_value(gimli::DW_AT_abstract_origin));
                if let Some((nu, off)) = next.and_then(|v| self.resolve_ref(cu, v)) {
                    let unit = &self.units[nu];
                    cur = Some((nu, unit.entry(off)?));
                }
            }
            let Some(name) = name else { continue };
            let size = ty.and_then(|t| self.size_of(t)).unwrap_or(0);
            out.push(Var {
                addr,
                size,
                name,
                ty,
            });
        }
        Ok(())
    }

    /// The address of a variable whose location is just `DW_OP_addr`.
    fn fixed_address(&self, u: usize, die: &Die) -> Option<u64> {
        let unit = &self.units[u];
        let AttributeValue::Exprloc(expr) = die.attr_value(gimli::DW_AT_location)? else {
            return None;
        };
        let mut ops = expr.operations(unit.encoding());
        let addr = match ops.next().ok()?? {
            Operation::Address { address } => address,
            Operation::AddressIndex { index } => self.dwarf.address(unit, index).ok()?,
            _ => return None,
        };
        // Anything after it (DW_OP_GNU_push_tls_address, DW_OP_plus...)
        // makes it something else.
        match ops.next() {
            Ok(None) => Some(addr),
            _ => None,
        }
    }

    /// The unit and offset a reference attribute points to.
    fn resolve_ref(&self, u: usize, v: AttributeValue<R>) -> Option<(usize, UnitOffset)> {
        match v {
            AttributeValue::UnitRef(off) => Some((u, off)),
            AttributeValue::DebugInfoRef(off) => self
                .units
                .iter()
                .enumerate()
                .find_map(|(i, unit)| Some((i, off.to_unit_offset(&unit.header)?))),
            _ => None,
        }
    }

    fn type_ref(&mut self, u: usize, v: AttributeValue<R>, depth: usize) -> Result<Option<TypeId>> {
        match self.resolve_ref(u, v) {
            Some((tu, off)) => self.type_at(tu, off, depth),
            None => Ok(None),
        }
    }

    /// The type of DIE `off` of unit `u`.
    fn type_at(&mut self, u: usize, off: UnitOffset, depth: usize) -> Result<Option<TypeId>> {
        if let Some(&id) = self.ids.get(&(u, off.0)) {
            return Ok(id);
        }
        if depth > MAX_TYPE_DEPTH {
            return Ok(None);
        }
        let unit = &self.units[u];
        let die = unit.entry(off)?;
        let byte_size = die
            .attr_value(gimli::DW_AT_byte_size)
            .and_then(|v| v.udata_value());
        let target = die.attr_value(gimli::DW_AT_type);
        let id = match die.tag() {
            gimli::DW_TAG_typedef
            | gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_atomic_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_immutable_type
            | gimli::DW_TAG_packed_type
            | gimli::DW_TAG_shared_type => match target {
                Some(t) => self.type_ref(u, t, depth + 1)?,
                None => None,
            },
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type
            | gimli::DW_TAG_ptr_to_member_type => Some(self.add(
                u,
                off,
                Type::Leaf {
                    size: byte_size.or(Some(u64::from(unit.encoding().address_size))),
                },
            )),
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_class_type => {
                // Registered before its members are read (they cannot
                // contain it, but pointers in them may lead back).
                let id = self.add(
                    u,
                    off,
                    Type::Struct {
                        size: byte_size,
                        members: Vec::new(),
                    },
                );
                let members = self.members(u, off, depth)?;
                self.types[id] = Type::Struct {
                    size: byte_size,
                    members,
                };
                Some(id)
            }
            gimli::DW_TAG_array_type => {
                let id = self.add(
                    u,
                    off,
                    Type::Array {
                        elem: None,
                        dims: Vec::new(),
                        size: byte_size,
                    },
                );
                let elem = match target {
                    Some(t) => self.type_ref(u, t, depth + 1)?,
                    None => None,
                };
                let dims = self.dims(u, off)?;
                self.types[id] = Type::Array {
                    elem,
                    dims,
                    size: byte_size,
                };
                Some(id)
            }
            _ => Some(self.add(u, off, Type::Leaf { size: byte_size })),
        };
        self.ids.insert((u, off.0), id);
        Ok(id)
    }

    fn add(&mut self, u: usize, off: UnitOffset, ty: Type) -> TypeId {
        let id = self.types.len();
        self.types.push(ty);
        self.ids.insert((u, off.0), Some(id));
        id
    }

    /// The data members (and base classes) of the struct at `off`.
    fn members(&mut self, u: usize, off: UnitOffset, depth: usize) -> Result<Vec<Member>> {
        let mut raw = Vec::new();
        {
            let unit = &self.units[u];
            let mut tree = unit.entries_tree(Some(off))?;
            let root = tree.root()?;
            let mut children = root.children();
            while let Some(child) = children.next()? {
                let d = child.entry();
                if !matches!(d.tag(), gimli::DW_TAG_member | gimli::DW_TAG_inheritance) {
                    continue;
                }
                // Static members have no location in the object.
                if d.attr_value(gimli::DW_AT_external).is_some()
                    || d.attr_value(gimli::DW_AT_declaration).is_some()
                {
                    continue;
                }
                let offset = match d.attr_value(gimli::DW_AT_data_member_location) {
                    Some(AttributeValue::Exprloc(e)) => {
                        match e.operations(unit.encoding()).next() {
                            Ok(Some(Operation::PlusConstant { value })) => value,
                            _ => continue,
                        }
                    }
                    Some(v) => match v.udata_value() {
                        Some(o) => o,
                        None => continue,
                    },
                    // Bit fields (DWARF 4+), and union members.
                    None => match d.attr_value(gimli::DW_AT_data_bit_offset) {
                        Some(v) => v.udata_value().map_or(0, |b| b / 8),
                        None => 0,
                    },
                };
                let name = match d.attr_value(gimli::DW_AT_name) {
                    Some(v) if d.tag() == gimli::DW_TAG_member => Some(
                        self.dwarf
                            .attr_string(unit, v)?
                            .to_string_lossy()?
                            .into_owned(),
                    ),
                    _ => None,
                };
                raw.push((name, offset, d.attr_value(gimli::DW_AT_type)));
            }
        }
        let mut members = Vec::with_capacity(raw.len());
        for (name, offset, ty) in raw {
            let ty = match ty {
                Some(t) => self.type_ref(u, t, depth + 1)?,
                None => None,
            };
            members.push(Member { name, offset, ty });
        }
        Ok(members)
    }

    /// The element counts of the array type at `off`.
    fn dims(&self, u: usize, off: UnitOffset) -> Result<Vec<Option<u64>>> {
        let unit = &self.units[u];
        let mut tree = unit.entries_tree(Some(off))?;
        let root = tree.root()?;
        let mut children = root.children();
        let mut dims = Vec::new();
        while let Some(child) = children.next()? {
            let d = child.entry();
            if d.tag() != gimli::DW_TAG_subrange_type {
                continue;
            }
            let count = match d.attr_value(gimli::DW_AT_count) {
                Some(v) => v.udata_value(),
                None => {
                    let lower = d
                        .attr_value(gimli::DW_AT_lower_bound)
                        .and_then(|v| v.udata_value())
                        .unwrap_or(0);
                    d.attr_value(gimli::DW_AT_upper_bound)
                        .and_then(|v| match v {
                            // `int a[0]`: upper bound -1.
                            AttributeValue::Sdata(s) if s < 0 => Some(0),
                            v => v.udata_value().map(|hi| (hi + 1).saturating_sub(lower)),
                        })
                }
            };
            dims.push(count);
        }
        if dims.is_empty() {
            dims.push(None);
        }
        Ok(dims)
    }

    fn size_of(&self, ty: TypeId) -> Option<u64> {
        size_of(&self.types, ty, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, offset: u64, ty: TypeId) -> Member {
        Member {
            name: (!name.is_empty()).then(|| name.to_owned()),
            offset,
            ty: Some(ty),
        }
    }

    fn var(addr: u64, size: u64, name: &str, ty: Option<TypeId>) -> Var {
        Var {
            addr,
            size,
            name: name.to_owned(),
            ty,
        }
    }

    /// struct s { int x; union { short h[3]; long l; }; struct s2 { char c[2][3]; } in; int tail[]; }
    fn sample() -> Variables {
        let types = vec![
            /* 0 */ Type::Leaf { size: Some(4) },
            /* 1 */ Type::Leaf { size: Some(2) },
            /* 2 */ Type::Leaf { size: Some(8) },
            /* 3 */ Type::Leaf { size: Some(1) },
            /* 4 short[3] */
            Type::Array {
                elem: Some(1),
                dims: vec![Some(3)],
                size: None,
            },
            /* 5 anonymous union */
            Type::Struct {
                size: Some(8),
                members: vec![member("h", 0, 4), member("l", 0, 2)],
            },
            /* 6 char[2][3] */
            Type::Array {
                elem: Some(3),
                dims: vec![Some(2), Some(3)],
                size: None,
            },
            /* 7 struct s2 */
            Type::Struct {
                size: Some(6),
                members: vec![member("c", 0, 6)],
            },
            /* 8 int[] */
            Type::Array {
                elem: Some(0),
                dims: vec![None],
                size: None,
            },
            /* 9 struct s */
            Type::Struct {
                size: Some(24),
                members: vec![
                    member("x", 0, 0),
                    member("", 8, 5),
                    member("in", 16, 7),
                    member("tail", 24, 8),
                ],
            },
            /* 10 struct s[2] */
            Type::Array {
                elem: Some(9),
                dims: vec![Some(2)],
                size: None,
            },
        ];
        Variables {
            vars: vec![
                var(0x1000, 24, "s", Some(9)),
                var(0x1020, 48, "many", Some(10)),
                var(0x1060, 8, "untyped", None),
            ],
            symbols: vec![var(0x1060, 16, "sym", None), var(0x2000, 64, "buf", None)],
            types,
        }
    }

    #[test]
    fn names_members_and_elements() {
        let v = sample();
        let d = |a| v.describe(a);
        assert_eq!(d(0x1000).as_deref(), Some("s.x"));
        assert_eq!(d(0x1002).as_deref(), Some("s.x+2"));
        assert_eq!(d(0x1004).as_deref(), Some("s+4"), "padding");
        assert_eq!(
            d(0x100a).as_deref(),
            Some("s.h[1]"),
            "anonymous union: first member"
        );
        assert_eq!(d(0x100e).as_deref(), Some("s.l+6"));
        assert_eq!(d(0x1010).as_deref(), Some("s.in.c[0][0]"));
        assert_eq!(d(0x1015).as_deref(), Some("s.in.c[1][2]"));
        assert_eq!(d(0x1020 + 24 + 17).as_deref(), Some("many[1].in.c[0][1]"));
        assert_eq!(d(0x1067).as_deref(), Some("untyped+7"));
    }

    #[test]
    fn falls_back_to_symbols() {
        let v = sample();
        assert_eq!(v.describe(0x1068).as_deref(), Some("sym+8"));
        assert_eq!(v.describe(0x2000).as_deref(), Some("buf"));
        assert_eq!(v.describe(0x203f).as_deref(), Some("buf+63"));
        assert_eq!(v.describe(0x2040), None);
        assert_eq!(v.describe(0xfff), None);
    }

    #[test]
    fn sizes() {
        let v = sample();
        assert_eq!(v.size_of(4), Some(6));
        assert_eq!(v.size_of(6), Some(6));
        assert_eq!(v.size_of(8), None);
        assert_eq!(v.size_of(10), Some(48));
    }
}
