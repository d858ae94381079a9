//! Reading the DWARF once at load: types reachable from variables, global
//! and static variables, and each function's tree of scopes with their
//! locals, parameters and pc ranges.

use std::collections::HashMap;

use gimli::{
    AttributeValue, DebuggingInformationEntry, EntriesTreeNode, Reader as _, Unit, UnitOffset,
};

use super::types::{c_base_name, BaseEncoding, Member, StructKind, Type, TypeId, TypeTable};
use super::types::{UNKNOWN, VOID};
use super::{Function, Location, Scope, Variable, R};

type Die = DebuggingInformationEntry<R>;

/// Deepest nesting followed (types inside types, blocks inside blocks).
const MAX_DEPTH: usize = 64;

/// Builds the model of one unit.
pub(super) struct UnitBuilder<'a> {
    pub dwarf: &'a gimli::Dwarf<R>,
    pub unit: &'a Unit<R>,
    pub unit_index: usize,
    pub types: &'a TypeTable,
    /// Types of this unit already built, by DIE offset.
    memo: HashMap<UnitOffset, TypeId>,
}

impl<'a> UnitBuilder<'a> {
    pub fn new(
        dwarf: &'a gimli::Dwarf<R>,
        unit: &'a Unit<R>,
        unit_index: usize,
        types: &'a TypeTable,
    ) -> Self {
        UnitBuilder {
            dwarf,
            unit,
            unit_index,
            types,
            memo: HashMap::new(),
        }
    }

    /// Collects the unit's globals and functions. DIEs that cannot be
    /// parsed are skipped rather than failing the whole program: a
    /// debugger with most names beats none.
    pub fn collect(
        &mut self,
        globals: &mut Vec<Variable>,
        functions: &mut Vec<Function>,
    ) -> gimli::Result<()> {
        let mut tree = self.unit.entries_tree(None)?;
        let root = tree.root()?;
        self.walk_top(root, globals, functions, 0)
    }

    fn walk_top(
        &mut self,
        node: EntriesTreeNode<R>,
        globals: &mut Vec<Variable>,
        functions: &mut Vec<Function>,
        depth: usize,
    ) -> gimli::Result<()> {
        let mut children = node.children();
        while let Some(child) = children.next()? {
            let entry = child.entry().clone();
            match entry.tag() {
                gimli::DW_TAG_variable => {
                    if let Some(v) = self.variable(&entry) {
                        globals.push(v);
                    }
                }
                gimli::DW_TAG_subprogram => {
                    if let Some(f) = self.function(child, &entry)? {
                        functions.push(f);
                    }
                }
                // C++ namespaces: their variables are globals too.
                gimli::DW_TAG_namespace if depth < MAX_DEPTH => {
                    self.walk_top(child, globals, functions, depth + 1)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A function definition (one with code) and its scopes.
    fn function(
        &mut self,
        node: EntriesTreeNode<R>,
        entry: &Die,
    ) -> gimli::Result<Option<Function>> {
        let ranges = self.ranges(entry);
        if ranges.is_empty() {
            return Ok(None);
        }
        let name = self.name(entry, 0).unwrap_or_else(|| "??".to_string());
        let frame_base = match entry.attr_value(gimli::DW_AT_frame_base) {
            Some(v) => self.location(v),
            None => Location::None,
        };
        let mut scope = Scope {
            ranges,
            vars: Vec::new(),
            children: Vec::new(),
        };
        self.fill_scope(node, &mut scope, 0)?;
        Ok(Some(Function {
            name,
            unit: self.unit_index,
            frame_base,
            scope,
        }))
    }

    fn fill_scope(
        &mut self,
        node: EntriesTreeNode<R>,
        scope: &mut Scope,
        depth: usize,
    ) -> gimli::Result<()> {
        let mut children = node.children();
        while let Some(child) = children.next()? {
            let entry = child.entry().clone();
            match entry.tag() {
                gimli::DW_TAG_variable | gimli::DW_TAG_formal_parameter => {
                    if let Some(v) = self.variable(&entry) {
                        scope.vars.push(v);
                    }
                }
                gimli::DW_TAG_lexical_block | gimli::DW_TAG_inlined_subroutine
                    if depth < MAX_DEPTH =>
                {
                    let mut inner = Scope {
                        ranges: self.ranges(&entry),
                        vars: Vec::new(),
                        children: Vec::new(),
                    };
                    self.fill_scope(child, &mut inner, depth + 1)?;
                    scope.children.push(inner);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Link-time pc ranges of a DIE (empty when it has none).
    fn ranges(&self, entry: &Die) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if let Ok(mut it) = self.dwarf.die_ranges(self.unit, entry) {
            while let Ok(Some(r)) = it.next() {
                if r.begin < r.end {
                    out.push((r.begin, r.end));
                }
            }
        }
        out
    }

    /// A variable or parameter; `None` for declarations (`extern int x;`),
    /// whose definition is found elsewhere, and nameless DIEs.
    fn variable(&mut self, entry: &Die) -> Option<Variable> {
        let location = match entry.attr_value(gimli::DW_AT_location) {
            Some(v) => self.location(v),
            None => match entry.attr_value(gimli::DW_AT_const_value) {
                Some(v) => Location::Const(const_bytes(&v)?),
                None if entry.has_attr(gimli::DW_AT_declaration) => return None,
                None => Location::None,
            },
        };
        let name = self.name(entry, 0)?;
        let ty = self.type_attr(entry, 0);
        Some(Variable {
            name,
            ty,
            location,
            unit: self.unit_index,
        })
    }

    fn location(&self, v: AttributeValue<R>) -> Location {
        if let Some(e) = v.exprloc_value() {
            return Location::Expr(e);
        }
        let Ok(Some(mut list)) = self.dwarf.attr_locations(self.unit, v) else {
            return Location::None;
        };
        let mut out = Vec::new();
        while let Ok(Some(e)) = list.next() {
            out.push((e.range.begin, e.range.end, e.data));
        }
        Location::List(out)
    }

    /// The DIE this one completes (`DW_AT_specification`) or is a concrete
    /// instance of (`DW_AT_abstract_origin`), in the same unit.
    fn origin(&self, entry: &Die) -> Option<Die> {
        let v = entry
            .attr_value(gimli::DW_AT_abstract_origin)
            .or_else(|| entry.attr_value(gimli::DW_AT_specification))?;
        match v {
            AttributeValue::UnitRef(off) => self.unit.entry(off).ok(),
            _ => None,
        }
    }

    fn name(&self, entry: &Die, depth: usize) -> Option<String> {
        if let Some(v) = entry.attr_value(gimli::DW_AT_name) {
            let s = self.dwarf.attr_string(self.unit, v).ok()?;
            return Some(String::from_utf8_lossy(&s.to_slice().ok()?).into_owned());
        }
        if depth >= 4 {
            return None;
        }
        self.name(&self.origin(entry)?, depth + 1)
    }

    /// The type a DIE's `DW_AT_type` names (void when absent).
    fn type_attr(&mut self, entry: &Die, depth: usize) -> TypeId {
        match entry.attr_value(gimli::DW_AT_type) {
            Some(AttributeValue::UnitRef(off)) => self.type_at(off, depth + 1),
            Some(_) => UNKNOWN,
            None if depth < 4 => match self.origin(entry) {
                Some(o) => self.type_attr(&o, depth + 1),
                None => VOID,
            },
            None => VOID,
        }
    }

    fn type_at(&mut self, off: UnitOffset, depth: usize) -> TypeId {
        if let Some(&id) = self.memo.get(&off) {
            return id;
        }
        if depth > MAX_DEPTH {
            return UNKNOWN;
        }
        let Ok(entry) = self.unit.entry(off) else {
            return UNKNOWN;
        };
        // Reserve the id first: a struct may point to itself.
        let id = self.types.add(Type::Unknown);
        self.memo.insert(off, id);
        let ty = self.build_type(off, &entry, depth);
        self.types.set(id, ty);
        id
    }

    fn build_type(&mut self, off: UnitOffset, entry: &Die, depth: usize) -> Type {
        let size = entry
            .attr_value(gimli::DW_AT_byte_size)
            .and_then(|v| v.udata_value())
            .unwrap_or(0);
        let name = self.name(entry, 0);
        let target = |b: &mut Self| b.type_attr(entry, depth);
        match entry.tag() {
            gimli::DW_TAG_base_type => Type::Base {
                name: c_base_name(name.as_deref().unwrap_or("?")),
                size,
                encoding: base_encoding(entry),
            },
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type => Type::Pointer {
                target: target(self),
            },
            gimli::DW_TAG_typedef => Type::Typedef {
                name: name.unwrap_or_default(),
                target: target(self),
            },
            gimli::DW_TAG_const_type => qualified("const", target(self)),
            gimli::DW_TAG_volatile_type => qualified("volatile", target(self)),
            gimli::DW_TAG_restrict_type => qualified("restrict", target(self)),
            gimli::DW_TAG_atomic_type => qualified("_Atomic", target(self)),
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_class_type => {
                let kind = match entry.tag() {
                    gimli::DW_TAG_union_type => StructKind::Union,
                    gimli::DW_TAG_class_type => StructKind::Class,
                    _ => StructKind::Struct,
                };
                Type::Struct {
                    kind,
                    name,
                    size,
                    members: self.members(off, depth).unwrap_or_default(),
                    incomplete: entry.has_attr(gimli::DW_AT_declaration),
                }
            }
            gimli::DW_TAG_array_type => {
                let elem = target(self);
                self.array(off, elem)
                    .unwrap_or(Type::Array { elem, count: None })
            }
            gimli::DW_TAG_enumeration_type => {
                let under = self.type_attr(entry, depth);
                let enumerators = self.enumerators(off).unwrap_or_default();
                let signed = match &*self.types.resolve(under) {
                    Type::Base { encoding, .. } => *encoding == BaseEncoding::Signed,
                    _ => enumerators.iter().any(|(_, v)| *v < 0),
                };
                Type::Enum {
                    name,
                    size,
                    signed,
                    enumerators,
                }
            }
            gimli::DW_TAG_subroutine_type => {
                let ret = target(self);
                let (params, variadic) = self.params(off, depth).unwrap_or_default();
                Type::Function {
                    ret,
                    params,
                    variadic,
                }
            }
            gimli::DW_TAG_unspecified_type => Type::Void,
            _ => Type::Unknown,
        }
    }

    /// The direct children of the DIE at `off`.
    fn children_of(&self, off: UnitOffset) -> gimli::Result<Vec<Die>> {
        let mut tree = self.unit.entries_tree(Some(off))?;
        let root = tree.root()?;
        let mut it = root.children();
        let mut out = Vec::new();
        while let Some(c) = it.next()? {
            out.push(c.entry().clone());
        }
        Ok(out)
    }

    fn members(&mut self, off: UnitOffset, depth: usize) -> gimli::Result<Vec<Member>> {
        let mut out = Vec::new();
        for m in self.children_of(off)? {
            if m.tag() != gimli::DW_TAG_member && m.tag() != gimli::DW_TAG_inheritance {
                continue;
            }
            let ty = self.type_attr(&m, depth);
            let byte_off = m
                .attr_value(gimli::DW_AT_data_member_location)
                .and_then(|v| v.udata_value())
                .unwrap_or(0);
            let bit_size = m
                .attr_value(gimli::DW_AT_bit_size)
                .and_then(|v| v.udata_value());
            let (offset, bits) = match bit_size {
                None => (byte_off, None),
                Some(bs) => bitfield(&m, byte_off, bs),
            };
            out.push(Member {
                name: self.name(&m, 0),
                ty,
                offset,
                bits,
            });
        }
        Ok(out)
    }

    /// An array type: one nested `Array` per `DW_TAG_subrange_type`,
    /// outermost dimension first.
    fn array(&mut self, off: UnitOffset, elem: TypeId) -> gimli::Result<Type> {
        let mut counts = Vec::new();
        for s in self.children_of(off)? {
            if s.tag() != gimli::DW_TAG_subrange_type {
                continue;
            }
            let lower = s
                .attr_value(gimli::DW_AT_lower_bound)
                .and_then(|v| v.udata_value())
                .unwrap_or(0);
            let count = match s
                .attr_value(gimli::DW_AT_count)
                .and_then(|v| v.udata_value())
            {
                Some(c) => Some(c),
                None => s
                    .attr_value(gimli::DW_AT_upper_bound)
                    .and_then(|v| match v {
                        AttributeValue::Sdata(-1) => None,
                        v => v.udata_value(),
                    })
                    .map(|u| (u + 1).saturating_sub(lower)),
            };
            counts.push(count);
        }
        let Some((&outer, inner)) = counts.split_first() else {
            return Ok(Type::Array { elem, count: None });
        };
        let mut e = elem;
        for &c in inner.iter().rev() {
            e = self.types.add(Type::Array { elem: e, count: c });
        }
        Ok(Type::Array {
            elem: e,
            count: outer,
        })
    }

    fn enumerators(&self, off: UnitOffset) -> gimli::Result<Vec<(String, i128)>> {
        let mut out = Vec::new();
        for e in self.children_of(off)? {
            if e.tag() != gimli::DW_TAG_enumerator {
                continue;
            }
            let value = match e.attr_value(gimli::DW_AT_const_value) {
                Some(AttributeValue::Sdata(v)) => v as i128,
                Some(v) => v.udata_value().map_or(0, |u| u as i128),
                None => 0,
            };
            if let Some(n) = self.name(&e, 0) {
                out.push((n, value));
            }
        }
        Ok(out)
    }

    fn params(&mut self, off: UnitOffset, depth: usize) -> gimli::Result<(Vec<TypeId>, bool)> {
        let mut params = Vec::new();
        let mut variadic = false;
        for p in self.children_of(off)? {
            match p.tag() {
                gimli::DW_TAG_formal_parameter => params.push(self.type_attr(&p, depth)),
                gimli::DW_TAG_unspecified_parameters => variadic = true,
                _ => {}
            }
        }
        Ok((params, variadic))
    }
}

fn qualified(qualifier: &'static str, target: TypeId) -> Type {
    Type::Qualified { qualifier, target }
}

fn base_encoding(entry: &Die) -> BaseEncoding {
    match entry.attr_value(gimli::DW_AT_encoding) {
        Some(AttributeValue::Encoding(e)) => match e {
            gimli::DW_ATE_signed => BaseEncoding::Signed,
            gimli::DW_ATE_unsigned => BaseEncoding::Unsigned,
            gimli::DW_ATE_signed_char => BaseEncoding::SignedChar,
            gimli::DW_ATE_unsigned_char => BaseEncoding::UnsignedChar,
            gimli::DW_ATE_boolean => BaseEncoding::Bool,
            gimli::DW_ATE_float => BaseEncoding::Float,
            _ => BaseEncoding::Other,
        },
        _ => BaseEncoding::Other,
    }
}

/// (byte offset, (bit offset within, bit size)) of a bitfield, from
/// DWARF 4+'s `DW_AT_data_bit_offset` or DWARF 2's `DW_AT_bit_offset`
/// (counted from the most significant bit of a `DW_AT_byte_size` unit).
fn bitfield(m: &Die, byte_off: u64, bit_size: u64) -> (u64, Option<(u32, u32)>) {
    let from_start = match m
        .attr_value(gimli::DW_AT_data_bit_offset)
        .and_then(|v| v.udata_value())
    {
        Some(b) => b,
        None => {
            let unit = m
                .attr_value(gimli::DW_AT_byte_size)
                .and_then(|v| v.udata_value())
                .unwrap_or(4);
            let msb = m
                .attr_value(gimli::DW_AT_bit_offset)
                .and_then(|v| v.udata_value())
                .unwrap_or(0);
            (byte_off * 8 + unit * 8).saturating_sub(msb + bit_size)
        }
    };
    (
        from_start / 8,
        Some(((from_start % 8) as u32, bit_size as u32)),
    )
}

/// The bytes of a `DW_AT_const_value` (little-endian, x86-64).
fn const_bytes(v: &AttributeValue<R>) -> Option<Vec<u8>> {
    Some(match v {
        AttributeValue::Block(b) => b.to_slice().ok()?.into_owned(),
        AttributeValue::Sdata(s) => s.to_le_bytes().to_vec(),
        AttributeValue::Data1(d) => vec![*d],
        AttributeValue::Data2(d) => d.to_le_bytes().to_vec(),
        AttributeValue::Data4(d) => d.to_le_bytes().to_vec(),
        AttributeValue::Data8(d) => d.to_le_bytes().to_vec(),
        other => other.udata_value()?.to_le_bytes().to_vec(),
    })
}
