//! The executable's DWARF as expressions need it: a type model
//! ([`types`]), its global and static variables, and each function's
//! scopes with their locals and parameters, found by pc.
//!
//! Only the executable itself is read (not the shared libraries it
//! loads): the variables a user asks about are the program's own.

mod build;
pub(crate) mod location;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gimli::{EndianArcSlice, RunTimeEndian};
use object::{Object, ObjectSection};
use reprise_tracee::{FrameRegs, LoadSegment, MemoryMap, UnwoundFrame};

use crate::expr::ExprError;
use types::{TypeId, TypeTable};

pub(crate) type R = EndianArcSlice<RunTimeEndian>;

/// Where a variable lives, as DWARF says (addresses link-time).
#[derive(Clone, Debug)]
pub(crate) enum Location {
    Expr(gimli::Expression<R>),
    /// A location list: (begin, end, expression), link-time pcs.
    List(Vec<(u64, u64, gimli::Expression<R>)>),
    /// `DW_AT_const_value`: no storage, the value itself.
    Const(Vec<u8>),
    /// No location: optimized out.
    None,
}

#[derive(Clone, Debug)]
pub(crate) struct Variable {
    pub name: String,
    pub ty: TypeId,
    pub location: Location,
    /// Index of its unit in [`Program::units`].
    pub unit: usize,
}

/// A function body or a block inside it.
#[derive(Debug)]
pub(crate) struct Scope {
    /// Link-time pc ranges; empty means "as the enclosing scope".
    pub ranges: Vec<(u64, u64)>,
    pub vars: Vec<Variable>,
    pub children: Vec<Scope>,
}

impl Scope {
    fn contains(&self, pc: u64) -> bool {
        self.ranges.is_empty() || self.ranges.iter().any(|&(b, e)| b <= pc && pc < e)
    }
}

#[derive(Debug)]
pub(crate) struct Function {
    pub name: String,
    pub unit: usize,
    pub frame_base: Location,
    pub scope: Scope,
}

/// What evaluating locals needs of one frame of a stopped thread.
///
/// `pc` is the pc to look scopes up at: the stopped instruction for the
/// innermost frame, but the return address minus one for callers (the
/// return address may already be past the end of the calling function or
/// block). [`FrameContext::from_unwound`] does this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameContext {
    pub pc: u64,
    /// As the unwinder gives them: rax rbx rcx rdx rsi rdi rbp rsp r8..r15
    /// rip; `None` where it could not recover a value.
    pub regs: FrameRegs,
    /// The canonical frame address: the caller's rsp just before the call
    /// (what `DW_OP_call_frame_cfa`, gcc's usual frame base, gives).
    pub cfa: Option<u64>,
}

impl FrameContext {
    /// Frame `i` of an unwinding by [`reprise_tracee::Symbolizer::unwind`]:
    /// its registers, its lookup pc, and as CFA the rsp of frame `i + 1`
    /// (on x86-64 the caller's rsp after return is exactly the callee's
    /// CFA; the unwinder sets it so). The outermost frame has no CFA.
    pub fn from_unwound(frames: &[UnwoundFrame], i: usize) -> Option<FrameContext> {
        let f = frames.get(i)?;
        let pc = f.pc.addr().wrapping_sub(u64::from(f.is_return_address));
        let cfa = frames.get(i + 1).and_then(|c| c.regs[7]);
        Some(FrameContext {
            pc,
            regs: f.regs,
            cfa,
        })
    }
}

/// The executable's DWARF, loaded once.
pub struct Program {
    path: PathBuf,
    types: Arc<TypeTable>,
    pub(crate) dwarf: gimli::Dwarf<R>,
    pub(crate) units: Vec<gimli::Unit<R>>,
    /// Sorted by name.
    globals: Vec<Variable>,
    functions: Vec<Function>,
    segments: Vec<LoadSegment>,
    bias: u64,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("path", &self.path)
            .field("globals", &self.globals.len())
            .field("functions", &self.functions.len())
            .field("bias", &self.bias)
            .finish()
    }
}

fn section_data(file: &object::File<'_>, name: &str, endian: RunTimeEndian) -> R {
    let data = file
        .section_by_name(name)
        .and_then(|s| s.uncompressed_data().ok())
        .map(|d| d.into_owned())
        .unwrap_or_default();
    EndianArcSlice::new(Arc::from(data), endian)
}

impl Program {
    /// Reads the DWARF of the executable at `path`. The load bias starts at
    /// 0 (right for non-PIE executables); set it for a PIE with
    /// [`Program::set_load_bias`].
    pub fn load(path: &Path) -> Result<Program, ExprError> {
        let data = std::fs::read(path).map_err(|source| ExprError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let elf_err = |e: object::Error| ExprError::Elf {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let file = object::File::parse(&*data).map_err(elf_err)?;
        if file.section_by_name(".debug_info").is_none() {
            return Err(ExprError::NoDebugInfo {
                path: path.to_path_buf(),
            });
        }
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let dwarf_err = |e: gimli::Error| ExprError::Dwarf {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let dwarf = gimli::Dwarf::load(|id| -> gimli::Result<R> {
            Ok(section_data(&file, id.name(), endian))
        })
        .map_err(dwarf_err)?;
        let mut units = Vec::new();
        let mut headers = dwarf.units();
        while let Some(h) = headers.next().map_err(dwarf_err)? {
            // A unit gimli cannot parse is skipped: the others still work.
            if let Ok(u) = dwarf.unit(h) {
                units.push(u);
            }
        }
        let types = Arc::new(TypeTable::new());
        let mut globals = Vec::new();
        let mut functions = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            let mut b = build::UnitBuilder::new(&dwarf, unit, i, &types);
            // Keep what was collected before a DIE gimli could not parse.
            let _ = b.collect(&mut globals, &mut functions);
        }
        globals.sort_by(|a, b| a.name.cmp(&b.name));
        let segments = reprise_tracee::load_segments(path, &data).map_err(|e| ExprError::Elf {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Program {
            path: path.to_path_buf(),
            types,
            dwarf,
            units,
            globals,
            functions,
            segments,
            bias: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runtime address = link-time address + `bias` (0 for non-PIE; for a
    /// PIE run with ASLR off, usually 0x555555554000).
    pub fn set_load_bias(&mut self, bias: u64) {
        self.bias = bias;
    }

    pub fn load_bias(&self) -> u64 {
        self.bias
    }

    /// The load bias of this executable in a process, from its
    /// `/proc/PID/maps` ([`MemoryMap::for_pid`]): the mapping of the same
    /// file (compared by canonical path).
    pub fn load_bias_in(&self, maps: &MemoryMap) -> Option<u64> {
        let want = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        maps.mappings()
            .iter()
            .filter(|m| {
                m.file()
                    .is_some_and(|f| f == want || std::fs::canonicalize(f).is_ok_and(|c| c == want))
            })
            .find_map(|m| m.load_bias(&self.segments))
    }

    /// The types of this program (shared with the values it produces).
    pub fn types(&self) -> &Arc<TypeTable> {
        &self.types
    }

    /// The function containing runtime address `pc`.
    pub fn function_at(&self, pc: u64) -> Option<&str> {
        self.function_containing(pc).map(|f| f.name.as_str())
    }

    pub(crate) fn function_containing(&self, pc: u64) -> Option<&Function> {
        let rel = pc.wrapping_sub(self.bias);
        self.functions
            .iter()
            .find(|f| !f.scope.ranges.is_empty() && f.scope.contains(rel))
    }

    /// The scopes containing the frame's pc, innermost first.
    fn scopes_at<'a>(
        &'a self,
        frame: Option<&FrameContext>,
    ) -> (Option<&'a Function>, Vec<&'a Scope>) {
        let Some(f) = frame.and_then(|fr| self.function_containing(fr.pc).map(|f| (f, fr.pc)))
        else {
            return (None, Vec::new());
        };
        let (func, pc) = f;
        let rel = pc.wrapping_sub(self.bias);
        let mut chain = vec![&func.scope];
        let mut cur = &func.scope;
        // Nested blocks: descend while a child block holds the pc.
        while let Some(inner) = cur
            .children
            .iter()
            .find(|c| !c.ranges.is_empty() && c.contains(rel))
        {
            chain.push(inner);
            cur = inner;
        }
        chain.reverse();
        (Some(func), chain)
    }

    /// Names visible at this frame: its locals and parameters (innermost
    /// scope first), then the globals, each once.
    pub fn names_in_scope(&self, frame: Option<&FrameContext>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let (_, scopes) = self.scopes_at(frame);
        for s in scopes {
            for v in &s.vars {
                if !out.contains(&v.name) {
                    out.push(v.name.clone());
                }
            }
        }
        let locals = out.len();
        for g in &self.globals {
            if out.last() != Some(&g.name) && !out[..locals].contains(&g.name) {
                out.push(g.name.clone());
            }
        }
        out
    }

    /// The variable `name` seen from `frame`: a local of the innermost
    /// scope that has it, else a global, preferring the frame's own unit
    /// (two files may each have a `static int count`).
    pub(crate) fn lookup(&self, name: &str, frame: Option<&FrameContext>) -> Option<Found<'_>> {
        let (func, scopes) = self.scopes_at(frame);
        for s in scopes {
            // The last declaration wins within one scope (shadowing in C
            // needs a new block, so duplicates are rare).
            if let Some(v) = s.vars.iter().rev().find(|v| v.name == name) {
                return Some(Found {
                    var: v,
                    function: func,
                });
            }
        }
        let start = self.globals.partition_point(|g| g.name.as_str() < name);
        let same: Vec<&Variable> = self.globals[start..]
            .iter()
            .take_while(|g| g.name == name)
            .collect();
        let unit = func.map(|f| f.unit);
        let best = same
            .iter()
            .find(|g| Some(g.unit) == unit)
            .or_else(|| same.iter().find(|g| !matches!(g.location, Location::None)))
            .or(same.first())?;
        Some(Found {
            var: best,
            function: None,
        })
    }
}

/// A variable found by name, with the function whose frame it lives in
/// (for its frame base); `None` for globals.
pub(crate) struct Found<'a> {
    pub var: &'a Variable,
    pub function: Option<&'a Function>,
}
