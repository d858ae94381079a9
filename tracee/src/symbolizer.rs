//! Unwinding (DWARF CFI, frame pointers) and symbolisation (DWARF line
//! tables through addr2line, ELF symbol tables).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianArcSlice, Evaluation,
    EvaluationResult, Expression, Register, RegisterRule, RunTimeEndian, UnwindContext,
    UnwindSection, Value,
};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};
use reprise_abi::{REG_RBP, REG_RIP, REG_RSP};

use crate::error::{Result, TraceeError};
use crate::maps::{LoadSegment, MemoryMap};
use crate::memory::MemoryReader;
use crate::RemotePtr;

/// Deepest backtrace produced.
pub const MAX_FRAMES: usize = 64;

pub(crate) type R = EndianArcSlice<RunTimeEndian>;

/// One symbolised frame of a backtrace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's pc: the faulting/stopped instruction for the innermost
    /// frame (and a frame interrupted by a signal), otherwise the return
    /// address. Inlined frames repeat the pc of the frame they are inlined
    /// into.
    pub pc: RemotePtr<u8>,
    /// Demangled function name, from DWARF or else the ELF symbol tables.
    pub function: Option<String>,
    pub file: Option<PathBuf>,
    /// For return addresses, the line of the call (looked up at `pc - 1`).
    pub line: Option<u32>,
    /// The mapped file holding `pc` (or the maps name such as `[vdso]`;
    /// empty for unmapped/anonymous memory).
    pub module: PathBuf,
    /// `pc` relative to the module: its link-time virtual address (what
    /// `addr2line -e MODULE` takes), or the offset in the mapping when the
    /// module could not be read; `pc` itself when nothing is mapped there.
    pub offset: u64,
    /// This frame is a function inlined into the next frame (same `pc`);
    /// its `line` is inside the inlined function and the next frame's
    /// `line` is the call site.
    pub inlined: bool,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {}",
            self.pc,
            self.function.as_deref().unwrap_or("??")
        )?;
        if let Some(file) = &self.file {
            write!(f, " at {}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
        }
        if self.inlined {
            write!(f, " [inlined]")?;
        }
        write!(f, " ({}+{:#x})", self.module.display(), self.offset)
    }
}

/// Registers of one frame, in [`reprise_abi::REG_NAMES`] order without
/// `eflags` (rax rbx rcx rdx rsi rdi rbp rsp r8..r15 rip); `None` where the
/// unwinder could not recover a value.
pub type FrameRegs = [Option<u64>; 17];

/// How a frame was reached from the frame inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindMethod {
    /// The innermost frame (given registers).
    Initial,
    /// DWARF CFI (`.eh_frame` / `.debug_frame`).
    Cfi,
    /// The saved-rbp chain.
    FramePointer,
    /// The pc was not in executable memory (a call through a bad pointer):
    /// the return address was taken from the top of the stack.
    BadPc,
}

/// An unsymbolised frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwoundFrame {
    pub pc: RemotePtr<u8>,
    pub regs: FrameRegs,
    /// `pc` is a return address (look up `pc - 1` for its call).
    pub is_return_address: bool,
    pub method: UnwindMethod,
}

/// DWARF x86-64 register number to our index.
fn dwarf_to_idx(reg: Register) -> Option<usize> {
    Some(match reg.0 {
        0 => 0, // rax
        1 => 3, // rdx
        2 => 2, // rcx
        3 => 1, // rbx
        4 => 4, // rsi
        5 => 5, // rdi
        6 => 6, // rbp
        7 => 7, // rsp
        8..=15 => reg.0 as usize,
        16 => REG_RIP, // return address column
        _ => return None,
    })
}

const ALL_DWARF_REGS: std::ops::RangeInclusive<u16> = 0..=16;

struct Sym {
    addr: u64,
    size: u64,
    weak: bool,
    name: String,
}

/// An FDE index over one CFI section: (start, end, FDE offset), by start.
struct Cfi<S> {
    section: S,
    fdes: Vec<(u64, u64, usize)>,
}

impl<S: UnwindSection<R>> Cfi<S> {
    fn new(section: S, bases: &BaseAddresses) -> Self {
        let mut fdes = Vec::new();
        let mut entries = section.entries(bases);
        // Stop at the first malformed entry; what was indexed still works.
        while let Ok(Some(entry)) = entries.next() {
            if let CieOrFde::Fde(partial) = entry {
                if let Ok(fde) = partial.parse(|s: &S, b, o| s.cie_from_offset(b, o)) {
                    if fde.len() > 0 {
                        fdes.push((fde.initial_address(), fde.end_address(), fde.offset()));
                    }
                }
            }
        }
        fdes.sort_unstable();
        Cfi { section, fdes }
    }

    /// Unwinds one frame whose (link-time) lookup address is `addr`.
    /// `None` when no FDE covers `addr`; `Some(None)` when one does but
    /// its rules could not be evaluated.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        bases: &BaseAddresses,
        ctx: &mut UnwindContext<usize>,
        addr: u64,
        regs: &FrameRegs,
        mem: &dyn MemoryReader,
    ) -> Option<Option<(FrameRegs, bool)>> {
        let i = self.fdes.partition_point(|f| f.0 <= addr);
        let &(_, end, off) = self.fdes.get(i.checked_sub(1)?)?;
        if addr >= end {
            return None;
        }
        let fde = self
            .section
            .fde_from_offset(bases, S::Offset::from(off), |s: &S, b, o| {
                s.cie_from_offset(b, o)
            })
            .ok()?;
        let signal = fde.is_signal_trampoline();
        let row = match fde.unwind_info_for_address(&self.section, bases, ctx, addr) {
            Ok(row) => row.clone(),
            Err(_) => return Some(None),
        };
        Some(apply_row(&self.section, &row, regs, mem).map(|r| (r, signal)))
    }
}

fn get_reg(regs: &FrameRegs, reg: Register) -> Option<u64> {
    regs[dwarf_to_idx(reg)?]
}

fn apply_row<S: UnwindSection<R>>(
    section: &S,
    row: &gimli::UnwindTableRow<usize>,
    regs: &FrameRegs,
    mem: &dyn MemoryReader,
) -> Option<FrameRegs> {
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            get_reg(regs, *register)?.wrapping_add(*offset as u64)
        }
        CfaRule::Expression(e) => eval_expr(e.get(section).ok()?, None, regs, mem)?,
    };
    let read = |a: u64| mem.read_u64(RemotePtr::new(a)).ok();
    // Registers without a rule keep their value (the rule for callee-saved
    // registers; for caller-saved ones the value is a guess either way).
    let mut new = *regs;
    new[REG_RSP] = Some(cfa);
    new[REG_RIP] = None; // no rule for the return address: end of stack
    for r in ALL_DWARF_REGS {
        let reg = Register(r);
        let Some(rule) = row.register(reg) else {
            continue;
        };
        let idx = dwarf_to_idx(reg)?;
        new[idx] = match rule {
            RegisterRule::Undefined => None,
            RegisterRule::SameValue => regs[idx],
            RegisterRule::Offset(n) => read(cfa.wrapping_add(n as u64)),
            RegisterRule::ValOffset(n) => Some(cfa.wrapping_add(n as u64)),
            RegisterRule::Register(other) => get_reg(regs, other),
            RegisterRule::Expression(e) => {
                eval_expr(e.get(section).ok()?, Some(cfa), regs, mem).and_then(read)
            }
            RegisterRule::ValExpression(e) => eval_expr(e.get(section).ok()?, Some(cfa), regs, mem),
            RegisterRule::Constant(c) => Some(c),
            _ => None,
        };
    }
    Some(new)
}

/// Evaluates a CFI DWARF expression (with the CFA pushed first for
/// register rules) to a value.
fn eval_expr(
    expr: Expression<R>,
    cfa: Option<u64>,
    regs: &FrameRegs,
    mem: &dyn MemoryReader,
) -> Option<u64> {
    let encoding = gimli::Encoding {
        address_size: 8,
        format: gimli::Format::Dwarf32,
        version: 4,
    };
    let mut eval: Evaluation<R> = expr.evaluation(encoding);
    if let Some(cfa) = cfa {
        eval.set_initial_value(cfa);
    }
    eval.set_max_iterations(1000);
    let mut res = eval.evaluate().ok()?;
    loop {
        res = match res {
            EvaluationResult::Complete => break,
            EvaluationResult::RequiresRegister { register, .. } => eval
                .resume_with_register(Value::Generic(get_reg(regs, register)?))
                .ok()?,
            EvaluationResult::RequiresMemory { address, size, .. } => {
                let mut b = [0u8; 8];
                let n = (size as usize).min(8);
                mem.read_exact(RemotePtr::new(address), &mut b[..n]).ok()?;
                eval.resume_with_memory(Value::Generic(u64::from_le_bytes(b)))
                    .ok()?
            }
            EvaluationResult::RequiresCallFrameCfa => eval.resume_with_call_frame_cfa(cfa?).ok()?,
            _ => return None,
        };
    }
    match eval.result().first()?.location {
        gimli::Location::Address { address } => Some(address),
        gimli::Location::Value { value } => value.to_u64(u64::MAX).ok(),
        gimli::Location::Register { register } => get_reg(regs, register),
        _ => None,
    }
}

/// One loaded ELF file (and its separate debug file, when installed).
struct Module {
    segments: Vec<LoadSegment>,
    bases: BaseAddresses,
    eh_frame: Option<Cfi<EhFrame<R>>>,
    debug_frame: Option<Cfi<DebugFrame<R>>>,
    dwarf: Option<addr2line::Context<R>>,
    /// Function symbols by address.
    symbols: Vec<Sym>,
}

pub(crate) fn elf_err(path: &Path, e: impl std::fmt::Display) -> TraceeError {
    TraceeError::Elf {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// The `PT_LOAD` program headers of an ELF file.
pub fn load_segments(path: &Path, data: &[u8]) -> Result<Vec<LoadSegment>> {
    let file = object::File::parse(data).map_err(|e| elf_err(path, e))?;
    Ok(file
        .segments()
        .map(|s| {
            let (offset, filesz) = s.file_range();
            LoadSegment {
                vaddr: s.address(),
                offset,
                filesz,
                memsz: s.size(),
                align: s.align(),
            }
        })
        .collect())
}

pub(crate) fn section_reader(
    file: &object::File<'_>,
    name: &str,
    endian: RunTimeEndian,
) -> Option<R> {
    let s = file.section_by_name(name)?;
    if s.kind() == object::SectionKind::UninitializedData {
        return None;
    }
    let data = s.uncompressed_data().ok()?;
    Some(EndianArcSlice::new(Arc::from(&*data), endian))
}

pub(crate) fn endian_of(file: &object::File<'_>) -> RunTimeEndian {
    if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    }
}

/// The contents of the separate debug file of `file` found by its build id
/// under /usr/lib/debug/.build-id (e.g. Debian's `-dbgsym` packages).
pub(crate) fn separate_debug_data(file: &object::File<'_>) -> Option<Vec<u8>> {
    let id = file.build_id().ok().flatten().filter(|id| id.len() > 1)?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::read(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ))
    .ok()
}

/// The DWARF sections of `file`, or `None` when it has no `.debug_info`.
pub(crate) fn load_dwarf(
    file: &object::File<'_>,
    endian: RunTimeEndian,
) -> Result<Option<gimli::Dwarf<R>>> {
    if file.section_by_name(".debug_info").is_none() {
        return Ok(None);
    }
    let empty = EndianArcSlice::new(Arc::from(&[][..]), endian);
    let d = gimli::Dwarf::load(|id| -> std::result::Result<R, gimli::Error> {
        Ok(section_reader(file, id.name(), endian).unwrap_or_else(|| empty.clone()))
    })?;
    Ok(Some(d))
}

fn collect_symbols(file: &object::File<'_>, out: &mut Vec<Sym>) {
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        if sym.kind() != SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() {
            continue;
        }
        out.push(Sym {
            addr: sym.address(),
            size: sym.size(),
            weak: sym.is_weak(),
            name: addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned(),
        });
    }
}

/// Ranks aliases at one address, best first: fewer leading underscores
/// (`pthread_mutex_lock` over `__pthread_mutex_lock`), then strong over
/// weak (`raise` over `gsignal`), then the shorter name.
fn alias_rank(s: &Sym) -> (usize, bool, usize) {
    let underscores = s.name.bytes().take_while(|&b| b == b'_').count();
    (underscores, s.weak, s.name.len())
}

impl Module {
    fn load(path: &Path, separate_debug: bool) -> Result<Module> {
        let data = std::fs::read(path).map_err(|e| TraceeError::io(path, e))?;
        let file = object::File::parse(&*data).map_err(|e| elf_err(path, e))?;
        let endian = endian_of(&file);
        let segments = load_segments(path, &data)?;

        let addr_of = |name: &str| file.section_by_name(name).map(|s| s.address());
        let mut bases = BaseAddresses::default();
        if let Some(a) = addr_of(".eh_frame") {
            bases = bases.set_eh_frame(a);
        }
        if let Some(a) = addr_of(".eh_frame_hdr") {
            bases = bases.set_eh_frame_hdr(a);
        }
        if let Some(a) = addr_of(".text") {
            bases = bases.set_text(a);
        }
        if let Some(a) = addr_of(".got") {
            bases = bases.set_got(a);
        }
        let eh_frame = section_reader(&file, ".eh_frame", endian).map(|r| {
            let mut s = EhFrame::from(r);
            s.set_address_size(8);
            Cfi::new(s, &bases)
        });

        // Debug info from a separate file found by build id, when
        // installed (e.g. Debian's libc6-dbg), else from the file itself.
        let debug_data = if separate_debug {
            separate_debug_data(&file)
        } else {
            None
        };
        let debug_file = debug_data
            .as_deref()
            .and_then(|d| object::File::parse(d).ok());

        let mut symbols = Vec::new();
        collect_symbols(&file, &mut symbols);
        let mut dwarf = None;
        let mut debug_frame = None;
        for f in debug_file.iter().chain(std::iter::once(&file)) {
            if dwarf.is_none() {
                if let Some(d) = load_dwarf(f, endian)? {
                    dwarf = addr2line::Context::from_dwarf(d).ok();
                }
            }
            if debug_frame.is_none() {
                debug_frame = section_reader(f, ".debug_frame", endian).map(|r| {
                    let mut s = DebugFrame::from(r);
                    s.set_address_size(8);
                    Cfi::new(s, &bases)
                });
            }
        }
        if let Some(df) = &debug_file {
            collect_symbols(df, &mut symbols);
        }
        symbols.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then(alias_rank(a).cmp(&alias_rank(b)))
                .then(b.size.cmp(&a.size))
        });
        symbols.dedup_by_key(|s| s.addr);

        Ok(Module {
            segments,
            bases,
            eh_frame,
            debug_frame,
            dwarf,
            symbols,
        })
    }

    fn symbol_for(&self, addr: u64) -> Option<&Sym> {
        let i = self.symbols.partition_point(|s| s.addr <= addr);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        // A symbol without size (hand-written assembly) covers up to the
        // next symbol; beyond a sized symbol's end lies something unnamed
        // (a static function of a stripped library): do not guess.
        if s.size == 0 || addr < s.addr + s.size {
            Some(s)
        } else {
            None
        }
    }

    /// (function, file, line) innermost first; several entries when `addr`
    /// is in inlined code.
    fn describe(&self, addr: u64) -> Vec<(Option<String>, Option<PathBuf>, Option<u32>)> {
        let mut out = Vec::new();
        if let Some(ctx) = &self.dwarf {
            if let Ok(mut frames) = ctx.find_frames(addr).skip_all_loads() {
                while let Ok(Some(f)) = frames.next() {
                    let function = f
                        .function
                        .as_ref()
                        .and_then(|n| n.demangle().ok().map(Cow::into_owned));
                    let (file, line) = match f.location {
                        Some(l) => (l.file.map(PathBuf::from), l.line),
                        None => (None, None),
                    };
                    out.push((function, file, line));
                }
            }
        }
        let sym = || self.symbol_for(addr).map(|s| s.name.clone());
        match out.last_mut() {
            None => out.push((sym(), None, None)),
            Some(last) if last.0.is_none() => last.0 = sym(),
            _ => {}
        }
        out
    }

    fn cfi_step(
        &self,
        ctx: &mut UnwindContext<usize>,
        addr: u64,
        regs: &FrameRegs,
        mem: &dyn MemoryReader,
    ) -> Option<Option<(FrameRegs, bool)>> {
        if let Some(eh) = &self.eh_frame {
            if let Some(r) = eh.step(&self.bases, ctx, addr, regs, mem) {
                return Some(r);
            }
        }
        self.debug_frame
            .as_ref()?
            .step(&self.bases, ctx, addr, regs, mem)
    }
}

/// Unwinds stacks and turns addresses into functions and source lines.
///
/// Each ELF file is loaded and indexed once, on first use, and kept.
pub struct Symbolizer {
    modules: Vec<Module>,
    by_path: HashMap<PathBuf, Option<usize>>,
    ctx: Box<UnwindContext<usize>>,
    separate_debug: bool,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            modules: Vec::new(),
            by_path: HashMap::new(),
            ctx: Box::new(UnwindContext::new()),
            separate_debug: true,
        }
    }

    /// Whether to use separate debug files found by build id under
    /// `/usr/lib/debug/.build-id/` (default: yes). Without them, stripped
    /// libraries such as Debian's libc are named from `.dynsym` only.
    /// Applies to files loaded after the call.
    pub fn set_separate_debug_info(&mut self, on: bool) {
        self.separate_debug = on;
    }

    fn module_index(&mut self, path: &Path) -> Option<usize> {
        if let Some(&i) = self.by_path.get(path) {
            return i;
        }
        // A file that cannot be read or parsed is remembered as such; its
        // frames get no names and are unwound by frame pointer.
        let i = Module::load(path, self.separate_debug).ok().map(|m| {
            self.modules.push(m);
            self.modules.len() - 1
        });
        self.by_path.insert(path.to_path_buf(), i);
        i
    }

    /// The loaded module mapped at `pc` and its load bias.
    fn locate(&mut self, pc: RemotePtr<u8>, maps: &MemoryMap) -> Option<(usize, u64)> {
        let m = maps.module_for(pc)?;
        let path = m.file()?.to_path_buf();
        let i = self.module_index(&path)?;
        let bias = m.load_bias(&self.modules[i].segments)?;
        Some((i, bias))
    }

    /// Symbolises `pc` exactly (the innermost frame; for a return address
    /// use [`Symbolizer::symbolize_frames`] with `is_return_address`).
    /// Returns the innermost function when `pc` is in inlined code.
    pub fn symbolize(&mut self, pc: RemotePtr<u8>, maps: &MemoryMap) -> Frame {
        self.symbolize_frames(pc, false, maps)
            .into_iter()
            .next()
            .expect("symbolize_frames returns at least one frame")
    }

    /// Symbolises one physical frame: the innermost inlined function first,
    /// then the functions it is inlined into, ending with the real one.
    /// A return address is looked up at `pc - 1` so that the line is the
    /// call's.
    pub fn symbolize_frames(
        &mut self,
        pc: RemotePtr<u8>,
        is_return_address: bool,
        maps: &MemoryMap,
    ) -> Vec<Frame> {
        let lookup = if is_return_address && pc.addr() > 0 {
            pc.offset(-1)
        } else {
            pc
        };
        let mapping = maps.find(lookup);
        let module_name = |m: Option<&crate::maps::Mapping>| {
            PathBuf::from(
                m.map(|m| {
                    m.file()
                        .map_or(m.name.as_str(), |p| p.to_str().unwrap_or(""))
                })
                .unwrap_or(""),
            )
        };
        match self.locate(lookup, maps) {
            Some((i, bias)) => {
                let rel = lookup.addr().wrapping_sub(bias);
                let offset = pc.addr().wrapping_sub(bias);
                let described = self.modules[i].describe(rel);
                let n = described.len();
                described
                    .into_iter()
                    .enumerate()
                    .map(|(k, (function, file, line))| Frame {
                        pc,
                        function,
                        file,
                        line,
                        module: module_name(mapping),
                        offset,
                        inlined: k + 1 < n,
                    })
                    .collect()
            }
            None => vec![Frame {
                pc,
                function: None,
                file: None,
                line: None,
                module: module_name(mapping),
                offset: match mapping {
                    Some(m) => pc
                        .addr()
                        .wrapping_sub(m.start.addr())
                        .wrapping_add(m.offset),
                    None => pc.addr(),
                },
                inlined: false,
            }],
        }
    }

    /// Unwinds the stack without symbolising: frame 0 is `regs` itself (the
    /// faulting or stopped instruction), then one frame per caller, using
    /// CFI where a module's `.eh_frame`/`.debug_frame` covers the pc and
    /// the frame-pointer chain elsewhere. Stops at an undefined or zero
    /// return address, a stack pointer that does not grow, memory that
    /// cannot be read, or [`MAX_FRAMES`].
    pub fn unwind(
        &mut self,
        regs: &[u64; 18],
        mem: &dyn MemoryReader,
        maps: &MemoryMap,
    ) -> Vec<UnwoundFrame> {
        let mut cur: FrameRegs = [None; 17];
        for (c, r) in cur.iter_mut().zip(regs) {
            *c = Some(*r);
        }
        let mut out = Vec::new();
        let mut is_return_address = false;
        let mut method = UnwindMethod::Initial;
        while out.len() < MAX_FRAMES {
            let Some(pc) = cur[REG_RIP] else { break };
            out.push(UnwoundFrame {
                pc: RemotePtr::new(pc),
                regs: cur,
                is_return_address,
                method,
            });
            let lookup = if is_return_address {
                pc.wrapping_sub(1)
            } else {
                pc
            };
            let first = out.len() == 1;
            let step = match self.locate(RemotePtr::new(lookup), maps) {
                Some((i, bias)) => {
                    self.modules[i].cfi_step(&mut self.ctx, lookup.wrapping_sub(bias), &cur, mem)
                }
                None => None,
            };
            let (next, signal, how) = match step {
                Some(Some((next, signal))) => (next, signal, UnwindMethod::Cfi),
                // CFI covers the pc but could not be followed.
                Some(None) => break,
                None => {
                    let executable = maps.find(RemotePtr::new(pc)).is_some_and(|m| m.exec);
                    let next = if first && !executable {
                        bad_pc_step(&cur, mem).map(|n| (n, UnwindMethod::BadPc))
                    } else {
                        frame_pointer_step(&cur, mem).map(|n| (n, UnwindMethod::FramePointer))
                    };
                    match next {
                        Some((n, how)) => (n, false, how),
                        None => break,
                    }
                }
            };
            match next[REG_RIP] {
                None | Some(0) => break,
                Some(_) => {}
            }
            let (Some(old_sp), Some(new_sp)) = (cur[REG_RSP], next[REG_RSP]) else {
                break;
            };
            // A signal frame may legitimately return to a lower stack
            // (sigaltstack); anything else must move up the stack.
            if new_sp <= old_sp && !signal {
                break;
            }
            cur = next;
            // Unwinding through a signal trampoline yields the interrupted
            // context: its pc is where the signal hit, not a return address.
            is_return_address = !signal;
            method = how;
        }
        out
    }

    /// A symbolised backtrace, innermost frame first (inlined functions
    /// appear as frames of their own with `inlined` set).
    pub fn backtrace(
        &mut self,
        regs: &[u64; 18],
        mem: &dyn MemoryReader,
        maps: &MemoryMap,
    ) -> Vec<Frame> {
        let raw = self.unwind(regs, mem, maps);
        let mut frames = Vec::new();
        for f in raw {
            frames.extend(self.symbolize_frames(f.pc, f.is_return_address, maps));
        }
        frames
    }
}

/// Follows the saved-rbp chain: `[rbp]` is the caller's rbp, `[rbp+8]` the
/// return address.
fn frame_pointer_step(regs: &FrameRegs, mem: &dyn MemoryReader) -> Option<FrameRegs> {
    let rbp = regs[REG_RBP]?;
    let rsp = regs[REG_RSP]?;
    if rbp < rsp || rbp % 8 != 0 {
        return None;
    }
    let saved_rbp = mem.read_u64(RemotePtr::new(rbp)).ok()?;
    let ra = mem.read_u64(RemotePtr::new(rbp + 8)).ok()?;
    let mut next = *regs;
    next[REG_RBP] = Some(saved_rbp);
    next[REG_RSP] = Some(rbp + 16);
    next[REG_RIP] = Some(ra);
    Some(next)
}

/// The pc is not executable: most likely a call through a bad function
/// pointer, so the return address is on top of the stack.
fn bad_pc_step(regs: &FrameRegs, mem: &dyn MemoryReader) -> Option<FrameRegs> {
    let rsp = regs[REG_RSP]?;
    let ra = mem.read_u64(RemotePtr::new(rsp)).ok()?;
    let mut next = *regs;
    next[REG_RSP] = Some(rsp + 8);
    next[REG_RIP] = Some(ra);
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn symbolizer_is_send() {
        assert_send::<Symbolizer>();
    }

    #[test]
    fn unwinds_this_test() {
        // Our own stack, read live: the innermost frames are this function.
        #[inline(never)]
        fn here() -> Vec<Frame> {
            let (rsp, rbp, rip): (u64, u64, u64);
            // SAFETY: reads three registers, touches no memory.
            unsafe {
                std::arch::asm!("mov {}, rsp", "mov {}, rbp", "lea {}, [rip]",
                    out(reg) rsp, out(reg) rbp, out(reg) rip);
            }
            let mut regs = [0u64; 18];
            regs[REG_RSP] = rsp;
            regs[REG_RBP] = rbp;
            regs[REG_RIP] = rip;
            let pid = std::process::id() as i32;
            let maps = MemoryMap::for_pid(pid).unwrap();
            let mem = crate::ProcessMemory::new(pid);
            Symbolizer::new().backtrace(&regs, &mem, &maps)
        }
        let frames = here();
        assert!(frames.len() >= 3, "{frames:#?}");
        let f0 = frames[0].function.as_deref().unwrap_or("");
        assert!(
            f0.contains("unwinds_this_test") && f0.contains("here"),
            "{frames:#?}"
        );
        let f1 = frames[1].function.as_deref().unwrap_or("");
        assert!(f1.contains("unwinds_this_test"), "{frames:#?}");
    }
}
