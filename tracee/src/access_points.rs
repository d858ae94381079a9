//! The memory-access instructions of an x86-64 executable: the table of
//! [`AccessPoint`]s that the agent patches with breakpoints in replay
//! (see `reprise_abi::observe`), and Intel-syntax disassembly of single
//! instructions for reports.
//!
//! An access point is an instruction with exactly one explicit memory
//! operand that really reads or writes memory, addressed through 64-bit
//! general registers or RIP other than the stack pointer and without an FS
//! or GS segment (thread-local storage). Implicit accesses (push, pop,
//! call, ret, string instructions) are not access points.

use std::path::{Path, PathBuf};

use iced_x86::{
    Decoder, DecoderOptions, Formatter, InstructionInfoFactory, InstructionInfoOptions,
    IntelFormatter, OpAccess, OpKind, Register,
};
use object::{Object, ObjectSection, ObjectSymbol, SectionFlags};
use reprise_abi::observe::{AccessPoint, ACCESS_READ, ACCESS_WRITE, REG_NONE, REG_RIP};

use crate::error::{Result, TraceeError};
use crate::symbolizer::elf_err;

/// Executable sections whose instructions are never access points: the
/// PLT stubs (they only jump through the GOT) and the init/fini prologues.
const SKIPPED_SECTIONS: &[&str] = &[".plt", ".plt.got", ".plt.sec", ".init", ".fini"];

/// The C runtime's start-up and tear-down glue that the compiler links into
/// every executable: its accesses (the `completed` flag of
/// `__do_global_dtors_aux`, the GOT) are not the program's shared data.
const SKIPPED_FUNCTIONS: &[&str] = &[
    "_start",
    "_dl_relocate_static_pie",
    "deregister_tm_clones",
    "register_tm_clones",
    "__do_global_dtors_aux",
    "frame_dummy",
    "__libc_csu_init",
    "__libc_csu_fini",
];

/// One executable section of the file.
#[derive(Clone, Debug)]
struct CodeSection {
    name: String,
    vaddr: u64,
    /// Byte range of the section within the file's contents.
    start: usize,
    end: usize,
}

/// An executable loaded once, for decoding instructions by address.
pub struct Disassembler {
    path: PathBuf,
    data: Vec<u8>,
    /// Executable sections, sorted by address.
    sections: Vec<CodeSection>,
    /// Address ranges of the [`SKIPPED_FUNCTIONS`] the file defines.
    skipped: Vec<std::ops::Range<u64>>,
}

impl Disassembler {
    /// Reads the ELF file at `path` (x86-64 only) and finds its executable
    /// sections.
    pub fn open(path: &Path) -> Result<Disassembler> {
        let data = std::fs::read(path).map_err(|e| TraceeError::io(path, e))?;
        let file = object::File::parse(&*data).map_err(|e| elf_err(path, e))?;
        if file.architecture() != object::Architecture::X86_64 {
            return Err(elf_err(
                path,
                format_args!(
                    "{:?} executable, only x86-64 is supported",
                    file.architecture()
                ),
            ));
        }
        let mut sections = Vec::new();
        for s in file.sections() {
            let SectionFlags::Elf { sh_flags, .. } = s.flags() else {
                continue;
            };
            if sh_flags.0 & object::elf::SHF_EXECINSTR.0 == 0 {
                continue;
            }
            // NOBITS sections have no file range.
            let Some((offset, size)) = s.file_range() else {
                continue;
            };
            let (Ok(start), Ok(size)) = (usize::try_from(offset), usize::try_from(size)) else {
                continue;
            };
            let Some(end) = start.checked_add(size).filter(|&e| e <= data.len()) else {
                return Err(elf_err(
                    path,
                    format_args!(
                        "section {} extends past the end of the file",
                        s.name().unwrap_or("?")
                    ),
                ));
            };
            sections.push(CodeSection {
                name: s.name().unwrap_or("").to_owned(),
                vaddr: s.address(),
                start,
                end,
            });
        }
        sections.sort_by_key(|s| s.vaddr);
        // crtstuff's functions have size 0 in the symbol table: they end
        // where the next symbol starts.
        let mut starts: Vec<u64> = file
            .symbols()
            .filter(|sym| sym.kind() == object::SymbolKind::Text && sym.address() != 0)
            .map(|sym| sym.address())
            .collect();
        starts.sort_unstable();
        let skipped = file
            .symbols()
            .filter(|sym| sym.name().is_ok_and(|n| SKIPPED_FUNCTIONS.contains(&n)))
            .map(|sym| {
                let start = sym.address();
                let end = if sym.size() > 0 {
                    start + sym.size()
                } else {
                    starts.iter().copied().find(|&a| a > start).unwrap_or(start)
                };
                start..end
            })
            .collect();
        Ok(Disassembler {
            path: path.to_path_buf(),
            data,
            sections,
            skipped,
        })
    }

    /// The path the executable was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The section containing `vaddr` and the bytes from `vaddr` to its end.
    fn code_at(&self, vaddr: u64) -> Option<&[u8]> {
        let i = self.sections.partition_point(|s| s.vaddr <= vaddr);
        let s = self.sections.get(i.checked_sub(1)?)?;
        let off = usize::try_from(vaddr - s.vaddr).ok()?;
        let bytes = &self.data[s.start..s.end];
        bytes.get(off..).filter(|b| !b.is_empty())
    }

    /// The Intel-syntax text of the instruction at ELF virtual address
    /// `vaddr` (e.g. `mov qword ptr [4010h],0`; RIP-relative operands
    /// are shown as absolute addresses), or `None` when `vaddr` is not in
    /// an executable section or does not decode.
    pub fn text_at(&self, vaddr: u64) -> Option<String> {
        let code = self.code_at(vaddr)?;
        let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
        let instr = decoder.decode();
        if instr.is_invalid() {
            return None;
        }
        let mut formatter = IntelFormatter::new();
        formatter
            .options_mut()
            .set_space_after_operand_separator(true);
        let mut out = String::new();
        formatter.format(&instr, &mut out);
        Some(out)
    }

    /// The access points of all executable sections but the PLT and
    /// init/fini ones, and of all functions but the C runtime's glue,
    /// sorted by address.
    pub fn access_points(&self) -> Vec<AccessPoint> {
        let mut factory = InstructionInfoFactory::new();
        let mut points = Vec::new();
        for s in &self.sections {
            if SKIPPED_SECTIONS.contains(&s.name.as_str()) {
                continue;
            }
            for (instr, first_byte) in self.instructions(s) {
                if self.skipped.iter().any(|r| r.contains(&instr.ip())) {
                    continue;
                }
                if let Some(p) = access_point(&instr, first_byte, false, &mut factory) {
                    points.push(p);
                }
            }
        }
        points.sort_by_key(|p| p.vaddr);
        points
    }

    /// The instructions of section `s`, decoded from its start (a linear
    /// sweep), each with its first byte.
    fn instructions<'a>(
        &'a self,
        s: &CodeSection,
    ) -> impl Iterator<Item = (iced_x86::Instruction, u8)> + 'a {
        let code = &self.data[s.start..s.end];
        let vaddr = s.vaddr;
        Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE)
            .into_iter()
            .map(move |i| (i, code[(i.ip() - vaddr) as usize]))
    }

    /// The instruction that ends where `next_ip` (an ELF address) begins,
    /// as an access point — one through the stack pointer too: a hardware
    /// watchpoint on a place of a thread's stack reports the instruction
    /// after the access. `None` when no instruction of an executable
    /// section decoded from its start ends there, or it is no single
    /// explicit memory access.
    pub fn access_point_before(&self, next_ip: u64) -> Option<AccessPoint> {
        let i = self.sections.partition_point(|s| s.vaddr < next_ip);
        let s = self.sections.get(i.checked_sub(1)?)?;
        // Past the section (another object's code: libc's, the agent's).
        if SKIPPED_SECTIONS.contains(&s.name.as_str())
            || next_ip > s.vaddr + (s.end - s.start) as u64
        {
            return None;
        }
        let (instr, first_byte) = self
            .instructions(s)
            .find(|(i, _)| i.next_ip() >= next_ip)
            .filter(|(i, _)| i.next_ip() == next_ip)?;
        access_point(&instr, first_byte, true, &mut InstructionInfoFactory::new())
    }
}

/// The access points of the x86-64 ELF executable at `elf` (PIE or not),
/// sorted by `vaddr`, the file's virtual address of each instruction.
pub fn access_points(elf: &Path) -> Result<Vec<AccessPoint>> {
    Ok(Disassembler::open(elf)?.access_points())
}

/// The Intel-syntax text of the instruction at ELF virtual address `vaddr`
/// of the executable `elf`. Loads the file: use [`Disassembler`] for many
/// instructions.
pub fn disassemble(elf: &Path, vaddr: u64) -> Result<String> {
    let d = Disassembler::open(elf)?;
    d.text_at(vaddr).ok_or_else(|| TraceeError::Decode {
        path: elf.to_path_buf(),
        vaddr,
    })
}

/// Register number in `ucontext_t` gregs order, for a 64-bit general
/// register; `None` for any other register.
fn greg(reg: Register) -> Option<u8> {
    Some(match reg {
        Register::R8 => 0,
        Register::R9 => 1,
        Register::R10 => 2,
        Register::R11 => 3,
        Register::R12 => 4,
        Register::R13 => 5,
        Register::R14 => 6,
        Register::R15 => 7,
        Register::RDI => 8,
        Register::RSI => 9,
        Register::RBP => 10,
        Register::RBX => 11,
        Register::RDX => 12,
        Register::RAX => 13,
        Register::RCX => 14,
        Register::RSP => 15,
        _ => return None,
    })
}

/// The access point of one decoded instruction whose first byte is
/// `first_byte`, if it is one.
/// With `through_stack`, an access through the stack pointer is one too.
fn access_point(
    instr: &iced_x86::Instruction,
    first_byte: u8,
    through_stack: bool,
    factory: &mut InstructionInfoFactory,
) -> Option<AccessPoint> {
    if instr.is_invalid() || instr.is_string_instruction() {
        return None;
    }
    // Exactly one explicit memory operand.
    let mut mem_ops = (0..instr.op_count()).filter(|&i| instr.op_kind(i) == OpKind::Memory);
    let op = mem_ops.next()?;
    if mem_ops.next().is_some() {
        return None;
    }
    if matches!(instr.memory_segment(), Register::FS | Register::GS) {
        return None;
    }

    let base_reg = instr.memory_base();
    let index_reg = instr.memory_index();
    let base = match base_reg {
        Register::None => REG_NONE,
        Register::RIP => REG_RIP,
        Register::RSP if !through_stack => return None,
        r => greg(r)?,
    };
    let index = match index_reg {
        Register::None => REG_NONE,
        // Also excludes vector (VSIB) and 32-bit index registers.
        r => greg(r)?,
    };
    if index == 15 {
        return None;
    }

    let size = match instr.memory_size().size() {
        0 => return None,
        n => n.min(255) as u8,
    };

    let info = factory.info_options(instr, InstructionInfoOptions::NO_REGISTER_USAGE);
    let flags = match info.op_access(op) {
        OpAccess::Read | OpAccess::CondRead => ACCESS_READ,
        OpAccess::Write | OpAccess::CondWrite => ACCESS_WRITE,
        OpAccess::ReadWrite | OpAccess::ReadCondWrite => ACCESS_READ | ACCESS_WRITE,
        OpAccess::None | OpAccess::NoMemAccess => return None,
    };
    // Any other memory the instruction touches must be the stack (push,
    // call through memory...).
    let other_memory = info
        .used_memory()
        .iter()
        .filter(|m| !matches!(m.base(), Register::RSP | Register::ESP))
        .count();
    if other_memory > 1 {
        return None;
    }

    let vaddr = instr.ip();
    let len = instr.len() as u64;
    let disp = if base == REG_RIP {
        // iced gives the absolute target; the agent adds the next ip.
        instr.memory_displacement64().wrapping_sub(vaddr + len) as i64
    } else {
        instr.memory_displacement64() as i64
    };
    Some(AccessPoint {
        vaddr,
        disp,
        len: len as u8,
        first_byte,
        base,
        index,
        scale: instr.memory_index_scale() as u8,
        size,
        flags,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: u64 = 0x401000;

    /// The access point of the one instruction encoded in `bytes` at `IP`.
    fn point(bytes: &[u8]) -> Option<AccessPoint> {
        let mut decoder = Decoder::with_ip(64, bytes, IP, DecoderOptions::NONE);
        let instr = decoder.decode();
        assert!(!instr.is_invalid(), "{bytes:02x?}");
        assert_eq!(instr.len(), bytes.len(), "{bytes:02x?}");
        access_point(&instr, bytes[0], false, &mut InstructionInfoFactory::new())
    }

    fn p(len: u8, base: u8, index: u8, scale: u8, disp: i64, size: u8, flags: u8) -> AccessPoint {
        AccessPoint {
            vaddr: IP,
            disp,
            len,
            first_byte: 0,
            base,
            index,
            scale,
            size,
            flags,
            _pad: 0,
        }
    }

    fn check(bytes: &[u8], expected: AccessPoint) {
        let got = point(bytes).unwrap_or_else(|| panic!("{bytes:02x?}: no access point"));
        assert_eq!(
            got,
            AccessPoint {
                first_byte: bytes[0],
                ..expected
            },
            "{bytes:02x?}"
        );
    }

    #[test]
    fn rip_relative_displacement_is_from_the_next_instruction() {
        // mov qword ptr [rip+0x10], 0
        check(
            &[0x48, 0xc7, 0x05, 0x10, 0, 0, 0, 0, 0, 0, 0],
            p(11, REG_RIP, REG_NONE, 1, 0x10, 8, ACCESS_WRITE),
        );
        // mov eax, [rip-0x20]
        check(
            &[0x8b, 0x05, 0xe0, 0xff, 0xff, 0xff],
            p(6, REG_RIP, REG_NONE, 1, -0x20, 4, ACCESS_READ),
        );
    }

    #[test]
    fn registers_scale_displacement_and_access() {
        // add [rbx+rcx*8-0x10], eax
        check(
            &[0x01, 0x44, 0xcb, 0xf0],
            p(4, 11, 14, 8, -0x10, 4, ACCESS_READ | ACCESS_WRITE),
        );
        // mov eax, [r12+r13*2+0x100]
        check(
            &[0x43, 0x8b, 0x84, 0x6c, 0x00, 0x01, 0x00, 0x00],
            p(8, 4, 5, 2, 0x100, 4, ACCESS_READ),
        );
        // mov eax, [rbp-4]: only rsp marks the stack.
        check(
            &[0x8b, 0x45, 0xfc],
            p(3, 10, REG_NONE, 1, -4, 4, ACCESS_READ),
        );
        // mov eax, [rcx*4+0x601000] (non-PIE array)
        check(
            &[0x8b, 0x04, 0x8d, 0x00, 0x10, 0x60, 0x00],
            p(7, REG_NONE, 14, 4, 0x601000, 4, ACCESS_READ),
        );
        // movabs eax, [0x1122334455667788]
        check(
            &[0xa1, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11],
            p(9, REG_NONE, REG_NONE, 1, 0x1122334455667788, 4, ACCESS_READ),
        );
        // lock cmpxchg [rdi], rsi; xchg [rdx], eax
        check(
            &[0xf0, 0x48, 0x0f, 0xb1, 0x37],
            p(5, 8, REG_NONE, 1, 0, 8, ACCESS_READ | ACCESS_WRITE),
        );
        check(
            &[0x87, 0x02],
            p(2, 12, REG_NONE, 1, 0, 4, ACCESS_READ | ACCESS_WRITE),
        );
        // cmovne rax, [rdi]: a conditional read is a read.
        check(
            &[0x48, 0x0f, 0x45, 0x07],
            p(4, 8, REG_NONE, 1, 0, 8, ACCESS_READ),
        );
    }

    #[test]
    fn explicit_operand_of_stack_instructions() {
        // push qword ptr [rax]; pop qword ptr [rax]; call qword ptr [rax+8]
        check(&[0xff, 0x30], p(2, 13, REG_NONE, 1, 0, 8, ACCESS_READ));
        check(&[0x8f, 0x00], p(2, 13, REG_NONE, 1, 0, 8, ACCESS_WRITE));
        check(
            &[0xff, 0x50, 0x08],
            p(3, 13, REG_NONE, 1, 8, 8, ACCESS_READ),
        );
    }

    #[test]
    fn not_access_points() {
        for bytes in [
            &[0x48, 0x8d, 0x05, 0x10, 0, 0, 0][..], // lea rax, [rip+0x10]
            &[0x48, 0x8b, 0x44, 0x24, 0x08],        // mov rax, [rsp+8]
            &[0x67, 0x8b, 0x44, 0x24, 0x04],        // mov eax, [esp+4]
            &[0x64, 0x8b, 0x04, 0x25, 0, 0, 0, 0],  // mov eax, fs:[0]
            &[0x65, 0x8b, 0x00],                    // mov eax, gs:[rax]
            &[0xa4],                                // movsb
            &[0xf3, 0x48, 0xab],                    // rep stosq
            &[0x0f, 0x1f, 0x04, 0x00],              // nop [rax+rax]
            &[0x0f, 0x18, 0x08],                    // prefetcht0 [rax]
            &[0xf3, 0x0f, 0x1e, 0xfa],              // endbr64
            &[0x67, 0x8b, 0x00],                    // mov eax, [eax]
            &[0xc4, 0xe2, 0x6d, 0x90, 0x04, 0x88],  // vpgatherdd (VSIB)
            &[0xd7],                                // xlatb
            &[0x50],                                // push rax
            &[0xc3],                                // ret
            &[0x48, 0x89, 0xc8],                    // mov rax, rcx
        ] {
            assert_eq!(point(bytes), None, "{bytes:02x?}");
        }
    }

    /// A place on a thread's stack that another thread reached: the
    /// owner's instructions through the stack pointer become access
    /// points, found from the address after them (a watchpoint's report).
    #[test]
    fn stack_accesses_when_asked_for() {
        // mov rax, [rsp+8]
        let bytes = [0x48, 0x8b, 0x44, 0x24, 0x08];
        let mut decoder = Decoder::with_ip(64, &bytes, IP, DecoderOptions::NONE);
        let instr = decoder.decode();
        let mut factory = InstructionInfoFactory::new();
        assert_eq!(
            access_point(&instr, bytes[0], true, &mut factory),
            Some(AccessPoint {
                first_byte: 0x48,
                ..p(5, 15, REG_NONE, 1, 8, 8, ACCESS_READ)
            })
        );
        // The same instruction, found in a real executable by its end.
        let d = Disassembler::open(Path::new("/proc/self/exe")).unwrap();
        let pts = d.access_points();
        let some = pts[pts.len() / 2];
        let found = d.access_point_before(some.vaddr + some.len as u64);
        assert_eq!(found, Some(some));
        assert_eq!(d.access_point_before(some.vaddr + 1), None);
    }
}
