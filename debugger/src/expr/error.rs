//! Errors of expressions: each one line that says what is wrong and, where
//! it helps, what would be right.

use std::path::PathBuf;

use thiserror::Error;

/// A syntax error at a 1-based column of the expression text.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

/// Why an expression could not be evaluated.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum EvalError {
    #[error("no variable \"{name}\" here; in scope: {in_scope}{}", suggestion_text(.suggestion))]
    UnknownVariable {
        name: String,
        /// The names in scope, comma-separated (shortened with `...`).
        in_scope: String,
        suggestion: Option<String>,
    },
    #[error("{ty} has no field \"{field}\"; its fields: {fields}")]
    NoField {
        field: String,
        ty: String,
        fields: String,
    },
    #[error("\"{op}{field}\" needs a {wanted}, but the left side is {ty}")]
    NotAStruct {
        op: &'static str,
        field: String,
        wanted: &'static str,
        ty: String,
    },
    #[error("cannot dereference a value of type {ty}: it is not a pointer")]
    NotAPointer { ty: String },
    #[error("cannot index a value of type {ty}: it is neither an array nor a pointer")]
    NotIndexable { ty: String },
    #[error("cannot read {len} bytes at {addr:#x}")]
    Memory { addr: u64, len: u64 },
    #[error("division by zero")]
    DivisionByZero,
    #[error("\"{name}\" is <optimized out> here")]
    OptimizedOut { name: String },
    #[error("cannot take the address of {what}")]
    NoAddress { what: String },
    #[error("{0}")]
    Type(String),
    #[error("no type named \"{0}\" in the program")]
    UnknownType(String),
    #[error("cannot locate \"{name}\": {why}")]
    Location { name: String, why: String },
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => String::new(),
    }
}

/// Any error of this module: loading the program's DWARF, parsing or
/// evaluating an expression.
#[derive(Debug, Error)]
pub enum ExprError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not an ELF file reprise can read: {message}", path.display())]
    Elf { path: PathBuf, message: String },
    #[error("{} has no DWARF debug information (compile with -g)", path.display())]
    NoDebugInfo { path: PathBuf },
    #[error("{}: bad DWARF: {message}", path.display())]
    Dwarf { path: PathBuf, message: String },
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Eval(#[from] EvalError),
}
