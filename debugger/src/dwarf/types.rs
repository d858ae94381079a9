//! The type model that expression values carry: C types as DWARF describes
//! them (base types with their encoding and size, pointers, typedefs and
//! qualifiers, structs and unions with their members, arrays, enums).
//!
//! Types live in one table shared by the [`super::Program`] and every value
//! it produces (values print themselves, so they need their type without
//! the program). The table grows after loading: taking an address (`&x`)
//! or decaying an array needs "pointer to T", which the DWARF may not have.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Index into a [`TypeTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeId(pub(crate) u32);

/// How a base type's bytes are to be read (`DW_AT_encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseEncoding {
    Signed,
    Unsigned,
    SignedChar,
    UnsignedChar,
    Bool,
    Float,
    /// Complex numbers, decimal floats...: shown as raw bytes.
    Other,
}

/// Struct, union or class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructKind {
    Struct,
    Union,
    Class,
}

impl StructKind {
    pub fn keyword(self) -> &'static str {
        match self {
            StructKind::Struct => "struct",
            StructKind::Union => "union",
            StructKind::Class => "class",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `None` for anonymous structs/unions.
    pub name: Option<String>,
    pub ty: TypeId,
    /// Byte offset of the member (of its storage unit for bitfields).
    pub offset: u64,
    /// For bitfields: (bit offset from `offset`, counting from the least
    /// significant bit of the little-endian storage, bit size).
    pub bits: Option<(u32, u32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Void,
    Base {
        name: String,
        size: u64,
        encoding: BaseEncoding,
    },
    Pointer {
        target: TypeId,
    },
    Typedef {
        name: String,
        target: TypeId,
    },
    /// `const`, `volatile`, `restrict`, `_Atomic`.
    Qualified {
        qualifier: &'static str,
        target: TypeId,
    },
    Struct {
        kind: StructKind,
        name: Option<String>,
        size: u64,
        members: Vec<Member>,
        /// Only declared here (`struct foo;`): no members known.
        incomplete: bool,
    },
    /// One dimension; `int m[3][4]` is an array of 3 arrays of 4 ints.
    Array {
        elem: TypeId,
        /// `None` for flexible or unknown bounds (`int a[]`).
        count: Option<u64>,
    },
    Enum {
        name: Option<String>,
        size: u64,
        signed: bool,
        enumerators: Vec<(String, i128)>,
    },
    Function {
        ret: TypeId,
        params: Vec<TypeId>,
        variadic: bool,
    },
    /// Something this model does not describe (C++ references, ...).
    Unknown,
}

/// Types built in at fixed ids: the results of C arithmetic and literals.
pub const VOID: TypeId = TypeId(0);
pub const INT: TypeId = TypeId(1);
pub const UINT: TypeId = TypeId(2);
pub const LONG: TypeId = TypeId(3);
pub const ULONG: TypeId = TypeId(4);
pub const CHAR: TypeId = TypeId(5);
pub const DOUBLE: TypeId = TypeId(6);
pub const UNKNOWN: TypeId = TypeId(7);

/// All types of a program; grows (append only) as pointer and array types
/// are made for expressions.
#[derive(Debug)]
pub struct TypeTable {
    types: RwLock<Vec<Arc<Type>>>,
    pointers: Mutex<HashMap<TypeId, TypeId>>,
    arrays: Mutex<HashMap<(TypeId, u64), TypeId>>,
}

/// A type with typedefs and qualifiers stripped: what operations look at.
pub type Resolved = Arc<Type>;

const MAX_DEPTH: usize = 64;

impl Default for TypeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl TypeTable {
    pub fn new() -> TypeTable {
        let base = |name: &str, size, encoding| Type::Base {
            name: name.to_string(),
            size,
            encoding,
        };
        let builtins = vec![
            Type::Void,
            base("int", 4, BaseEncoding::Signed),
            base("unsigned int", 4, BaseEncoding::Unsigned),
            base("long", 8, BaseEncoding::Signed),
            base("unsigned long", 8, BaseEncoding::Unsigned),
            base("char", 1, BaseEncoding::SignedChar),
            base("double", 8, BaseEncoding::Float),
            Type::Unknown,
        ];
        TypeTable {
            types: RwLock::new(builtins.into_iter().map(Arc::new).collect()),
            pointers: Mutex::new(HashMap::new()),
            arrays: Mutex::new(HashMap::new()),
        }
    }

    /// The type at `id` (`Unknown` for an id from another table).
    pub fn get(&self, id: TypeId) -> Arc<Type> {
        let types = self.types.read().unwrap_or_else(|e| e.into_inner());
        types
            .get(id.0 as usize)
            .cloned()
            .unwrap_or_else(|| Arc::new(Type::Unknown))
    }

    pub fn add(&self, ty: Type) -> TypeId {
        let mut types = self.types.write().unwrap_or_else(|e| e.into_inner());
        types.push(Arc::new(ty));
        TypeId((types.len() - 1) as u32)
    }

    /// Replaces a placeholder made while building (recursive types).
    pub(crate) fn set(&self, id: TypeId, ty: Type) {
        let mut types = self.types.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = types.get_mut(id.0 as usize) {
            *slot = Arc::new(ty);
        }
    }

    /// "Pointer to `target`", made once.
    pub fn pointer_to(&self, target: TypeId) -> TypeId {
        let mut ptrs = self.pointers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&p) = ptrs.get(&target) {
            return p;
        }
        let p = self.add(Type::Pointer { target });
        ptrs.insert(target, p);
        p
    }

    /// "Array of `count` `elem`", made once (string literals).
    pub fn array_of(&self, elem: TypeId, count: u64) -> TypeId {
        let mut arrays = self.arrays.lock().unwrap_or_else(|e| e.into_inner());
        *arrays.entry((elem, count)).or_insert_with(|| {
            self.add(Type::Array {
                elem,
                count: Some(count),
            })
        })
    }

    /// An enumerator by name: its enum type and value (`RUNNING` in
    /// `state == RUNNING`).
    pub fn find_enumerator(&self, wanted: &str) -> Option<(TypeId, i128)> {
        let types = self.types.read().unwrap_or_else(|e| e.into_inner());
        types.iter().enumerate().find_map(|(i, t)| match &**t {
            Type::Enum { enumerators, .. } => enumerators
                .iter()
                .find(|(n, _)| n == wanted)
                .map(|(_, v)| (TypeId(i as u32), *v)),
            _ => None,
        })
    }

    /// Follows typedefs and qualifiers.
    pub fn strip(&self, mut id: TypeId) -> TypeId {
        for _ in 0..MAX_DEPTH {
            match &*self.get(id) {
                Type::Typedef { target, .. } | Type::Qualified { target, .. } => id = *target,
                _ => return id,
            }
        }
        id
    }

    /// The type behind typedefs and qualifiers.
    pub fn resolve(&self, id: TypeId) -> Resolved {
        self.get(self.strip(id))
    }

    /// Size in bytes; `None` for void, functions and unknown-bound arrays.
    pub fn size_of(&self, id: TypeId) -> Option<u64> {
        self.size_depth(id, 0)
    }

    fn size_depth(&self, id: TypeId, depth: usize) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        match &*self.resolve(id) {
            Type::Base { size, .. } | Type::Enum { size, .. } => Some(*size),
            Type::Struct { size, .. } => Some(*size),
            Type::Pointer { .. } => Some(8),
            Type::Array { elem, count } => {
                Some(self.size_depth(*elem, depth + 1)?.checked_mul((*count)?)?)
            }
            Type::Void | Type::Function { .. } | Type::Unknown => None,
            Type::Typedef { .. } | Type::Qualified { .. } => None,
        }
    }

    /// Whether values of this type print as characters (`char`,
    /// `signed char`, `unsigned char`).
    pub fn is_char(&self, id: TypeId) -> bool {
        matches!(
            &*self.resolve(id),
            Type::Base {
                size: 1,
                encoding: BaseEncoding::SignedChar | BaseEncoding::UnsignedChar,
                ..
            }
        )
    }

    /// The C spelling of a type, as gdb's `whatis` prints it:
    /// `struct stack *`, `long`, `int[8]`, `char **`, `int (*)[4]`.
    pub fn name(&self, id: TypeId) -> String {
        let (mut left, right) = self.declarator(id, 0);
        if !right.is_empty() && left.ends_with(' ') {
            left.pop();
        }
        format!("{}{}", left, right).trim_end().to_string()
    }

    /// Splits a type into the text left and right of the declared name, as
    /// C declarators nest: pointers go left, arrays and parameters right.
    fn declarator(&self, id: TypeId, depth: usize) -> (String, String) {
        if depth > MAX_DEPTH {
            return ("...".to_string(), String::new());
        }
        match &*self.get(id) {
            Type::Pointer { target } => {
                let inner = self.get(self.strip(*target));
                let (mut l, r) = self.declarator(*target, depth + 1);
                let wraps = matches!(&*inner, Type::Array { .. } | Type::Function { .. });
                if wraps {
                    if !l.ends_with(' ') && !l.ends_with('*') {
                        l.push(' ');
                    }
                    l.push_str("(*");
                    (l, format!("){}", r))
                } else {
                    if !l.ends_with('*') && !l.ends_with(' ') {
                        l.push(' ');
                    }
                    l.push('*');
                    (l, r)
                }
            }
            Type::Array { elem, count } => {
                let (l, r) = self.declarator(*elem, depth + 1);
                let dim = count.map_or(String::new(), |c| c.to_string());
                (l, format!("[{dim}]{r}"))
            }
            Type::Function {
                ret,
                params,
                variadic,
            } => {
                let (l, r) = self.declarator(*ret, depth + 1);
                let mut ps: Vec<String> = params.iter().map(|p| self.name(*p)).collect();
                if *variadic {
                    ps.push("...".to_string());
                }
                if ps.is_empty() {
                    ps.push("void".to_string());
                }
                let l = if l.ends_with('*') { l } else { format!("{l} ") };
                (l, format!("({}){}", ps.join(", "), r))
            }
            Type::Qualified { qualifier, target } => {
                let inner = self.get(self.strip(*target));
                let (l, r) = self.declarator(*target, depth + 1);
                if matches!(&*inner, Type::Pointer { .. }) {
                    (format!("{l} {qualifier}"), r)
                } else {
                    (format!("{qualifier} {l}"), r)
                }
            }
            other => (self.simple_name(other), String::new()),
        }
    }

    fn simple_name(&self, ty: &Type) -> String {
        match ty {
            Type::Void => "void".to_string(),
            Type::Base { name, .. } | Type::Typedef { name, .. } => name.clone(),
            Type::Struct { kind, name, .. } => {
                format!("{} {}", kind.keyword(), name.as_deref().unwrap_or("{...}"))
            }
            Type::Enum { name, .. } => format!("enum {}", name.as_deref().unwrap_or("{...}")),
            _ => "?".to_string(),
        }
    }

    /// Finds a named type for casts: `int`, `struct foo`, `size_t`...
    pub fn find_named(&self, wanted: &str) -> Option<TypeId> {
        let types = self.types.read().unwrap_or_else(|e| e.into_inner());
        let found = types.iter().position(|t| match &**t {
            Type::Base { name, .. } | Type::Typedef { name, .. } => name == wanted,
            Type::Struct {
                kind,
                name: Some(n),
                incomplete: false,
                ..
            } => wanted.strip_prefix(kind.keyword()).map(str::trim) == Some(n.as_str()),
            Type::Enum { name: Some(n), .. } => {
                wanted.strip_prefix("enum").map(str::trim) == Some(n.as_str())
            }
            _ => false,
        })?;
        Some(TypeId(found as u32))
    }
}

/// gdb's short spellings of gcc's base type names (`long int` → `long`).
pub fn c_base_name(dwarf_name: &str) -> String {
    match dwarf_name {
        "long int" => "long",
        "long unsigned int" => "unsigned long",
        "short int" => "short",
        "short unsigned int" => "unsigned short",
        "long long int" => "long long",
        "long long unsigned int" => "unsigned long long",
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_c() {
        let t = TypeTable::new();
        let s = t.add(Type::Struct {
            kind: StructKind::Struct,
            name: Some("stack".into()),
            size: 16,
            members: vec![],
            incomplete: false,
        });
        assert_eq!(t.name(t.pointer_to(s)), "struct stack *");
        assert_eq!(t.name(t.pointer_to(t.pointer_to(CHAR))), "char **");
        let arr = t.add(Type::Array {
            elem: INT,
            count: Some(8),
        });
        assert_eq!(t.name(arr), "int[8]");
        assert_eq!(t.name(t.pointer_to(arr)), "int (*)[8]");
        assert_eq!(t.size_of(arr), Some(32));
        let c = t.add(Type::Qualified {
            qualifier: "const",
            target: CHAR,
        });
        assert_eq!(t.name(t.pointer_to(c)), "const char *");
        let f = t.add(Type::Function {
            ret: VOID,
            params: vec![INT],
            variadic: false,
        });
        assert_eq!(t.name(t.pointer_to(f)), "void (*)(int)");
        assert_eq!(t.find_named("struct stack"), Some(s));
    }
}
