//! The `func` sketch of an unmodified program: a plan to patch each of the
//! executable's function entries (see [`reprise_abi::func_plan`]).
//!
//! Each function named in the symbol table whose first instructions can be
//! moved is patched with a 5-byte `jmp` to its stub, in an area mapped near
//! the executable (a `jmp rel32` reaches ±2 GiB): `push <index>; jmp
//! [hook]`. The agent's hook logs (or, in replay, waits for) the entry,
//! then returns into the function's displaced instructions, re-encoded for
//! their new address (iced's block encoder fixes RIP-relative operands),
//! followed by a jump back after the patch. A function is left alone when
//! its first instructions change control flow, when its own code branches
//! into the patched bytes, or when it is shorter than the patch: then its
//! entries are not in the sketch, in record and replay alike (the plan
//! depends only on the executable's bytes).

use std::path::Path;

use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Decoder, DecoderOptions, FlowControl, Instruction,
    InstructionBlock, MemoryOperand, OpKind, Register,
};
use object::{Object, ObjectKind, ObjectSection, ObjectSymbol, SymbolKind};
use reprise_abi::func_plan::{Header, Patch, HOOK_SLOT, MAGIC, MAX_PATCH};

use crate::shm::SharedFile;
use crate::RecordError;

/// Where Linux maps a position-independent executable with randomisation
/// off (x86-64), as the recorder and replayer run programs.
const PIE_BASE: u64 = 0x5555_5555_4000;
/// A `jmp rel32`.
const JMP_LEN: usize = 5;
/// Stub: `push imm32` (5 bytes), `jmp [rip+disp32]` (6 bytes).
const STUB_LEN: u64 = 11;
/// The area sits this far below the executable (or above its end when
/// there is no room below).
const AREA_GAP: u64 = 0x1000_0000;

/// Compiler and C runtime functions that run before the agent or are not
/// the program's own.
const SKIPPED: [&str; 9] = [
    "_start",
    "_init",
    "_fini",
    "frame_dummy",
    "register_tm_clones",
    "deregister_tm_clones",
    "__do_global_dtors_aux",
    "__libc_csu_init",
    "__libc_csu_fini",
];

/// One function to patch.
struct Planned {
    entry: u64,
    len: usize,
    original: Vec<u8>,
    /// The displaced instructions, decoded at `entry`.
    moved: Vec<Instruction>,
}

/// The plan, written into a shared file for the agent.
pub struct FuncPlan {
    pub file: SharedFile,
    /// Functions patched, and functions seen but left alone.
    pub patched: usize,
    pub skipped: usize,
}

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> RecordError {
    RecordError::Io(format!("{what} {}: {e}", path.display()))
}

/// The first instructions of `code` (at `ip`) that cover a jump, if they
/// can run elsewhere: straight-line instructions, and as the last one a
/// direct call or jump (a function that starts by calling another).
fn displaced(code: &[u8], ip: u64) -> Option<(usize, Vec<Instruction>)> {
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut moved = Vec::new();
    let mut len = 0;
    while len < JMP_LEN {
        if !d.can_decode() {
            return None;
        }
        let i = d.decode();
        if i.is_invalid() {
            return None;
        }
        len += i.len();
        match i.flow_control() {
            FlowControl::Next => moved.push(i),
            FlowControl::Call | FlowControl::UnconditionalBranch
                if i.op0_kind() == OpKind::NearBranch64 && len >= JMP_LEN =>
            {
                moved.extend(moved_transfer(&i, ip + len as u64)?);
                return (len <= MAX_PATCH).then_some((len, moved));
            }
            _ => return None,
        }
    }
    (len <= MAX_PATCH).then_some((len, moved))
}

/// A direct call or jump, as it runs from the stubs' area: a call pushes
/// its original return address (`back`, right after the patch) and jumps,
/// so that the callee returns into the function itself, where unwinders
/// and debuggers know the code.
fn moved_transfer(i: &Instruction, back: u64) -> Option<Vec<Instruction>> {
    let target = i.near_branch_target();
    let jmp = Instruction::with_branch(Code::Jmp_rel32_64, target).ok()?;
    if i.flow_control() != FlowControl::Call {
        return Some(vec![jmp]);
    }
    let at = |d| MemoryOperand::with_base_displ(Register::RSP, d);
    Some(vec![
        Instruction::with2(Code::Lea_r64_m, Register::RSP, at(-8)).ok()?,
        Instruction::with2(Code::Mov_rm32_imm32, at(0), back as u32).ok()?,
        Instruction::with2(Code::Mov_rm32_imm32, at(4), (back >> 32) as u32).ok()?,
        jmp,
    ])
}

/// True if any direct branch of the function lands inside its patch.
fn branches_into(code: &[u8], ip: u64, patch_end: u64) -> bool {
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    while d.can_decode() {
        let i = d.decode();
        if matches!(
            i.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call
        ) {
            let t = i.near_branch_target();
            if t > ip && t < patch_end {
                return true;
            }
        }
    }
    false
}

/// Plans the patch of `program`'s function entries (its file's `bytes`).
/// None if it has no symbol table (stripped): its functions cannot be
/// found.
pub fn plan(program: &Path, bytes: &[u8]) -> Result<Option<FuncPlan>, RecordError> {
    let elf = object::File::parse(bytes).map_err(|e| io("cannot parse", program, e))?;
    let base = if elf.kind() == ObjectKind::Dynamic {
        PIE_BASE
    } else {
        0
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut planned = Vec::new();
    let mut skipped = 0;
    let mut high = 0u64;
    for s in elf.sections() {
        high = high.max(s.address() + s.size());
    }
    for sym in elf.symbols().chain(elf.dynamic_symbols()) {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 || sym.is_undefined() {
            continue;
        }
        let name = sym.name().unwrap_or("");
        if SKIPPED.contains(&name) || !seen.insert(sym.address()) {
            continue;
        }
        let Some(sec) = sym
            .section_index()
            .and_then(|i| elf.section_by_index(i).ok())
        else {
            continue;
        };
        if sec.name().ok() != Some(".text") {
            continue;
        }
        let Ok(data) = sec.data() else { continue };
        let start = (sym.address() - sec.address()) as usize;
        let Some(code) = data.get(start..start + sym.size() as usize) else {
            continue;
        };
        let entry = base + sym.address();
        match displaced(code, entry) {
            Some((len, moved))
                if code.len() >= len && !branches_into(code, entry, entry + len as u64) =>
            {
                planned.push(Planned {
                    entry,
                    len,
                    original: code[..len].to_vec(),
                    moved,
                })
            }
            _ => skipped += 1,
        }
    }
    if seen.is_empty() {
        return Ok(None);
    }
    // By address: the agent looks entries up by binary search.
    planned.sort_by_key(|p| p.entry);
    let low = base
        + elf
            .sections()
            .map(|s| s.address())
            .filter(|&a| a > 0)
            .min()
            .unwrap_or(0);
    let area = if low >= AREA_GAP + 0x10_0000 {
        (low - AREA_GAP) & !0xfff
    } else {
        (base + high + AREA_GAP + 0xfff) & !0xfff
    };
    // The area: the hook slot, the stubs, then each function's displaced
    // instructions and its jump back.
    let mut code = vec![0u8; 16];
    let stubs = 16u64;
    code.resize((stubs + STUB_LEN * planned.len() as u64) as usize, 0xcc);
    let mut patches = Vec::with_capacity(planned.len());
    for (n, p) in planned.iter().enumerate() {
        let stub = area + stubs + STUB_LEN * n as u64;
        let at = (stub - area) as usize;
        code[at] = 0x68; // push imm32
        code[at + 1..at + 5].copy_from_slice(&(n as u32).to_le_bytes());
        code[at + 5] = 0xff; // jmp [rip+disp32]
        code[at + 6] = 0x25;
        let disp = (area + HOOK_SLOT) as i64 - (stub + STUB_LEN) as i64;
        code[at + 7..at + 11].copy_from_slice(&(disp as i32).to_le_bytes());
        let cont = area + code.len() as u64;
        let moved = BlockEncoder::encode(
            64,
            InstructionBlock::new(&p.moved, cont),
            BlockEncoderOptions::NONE,
        )
        .map_err(|e| {
            io(
                "cannot move the first instructions of a function in",
                program,
                e,
            )
        })?;
        code.extend_from_slice(&moved.code_buffer);
        let back = p.entry + p.len as u64;
        let from = area + code.len() as u64 + JMP_LEN as u64;
        code.push(0xe9);
        code.extend_from_slice(&((back as i64 - from as i64) as i32).to_le_bytes());
        let mut patch = Patch {
            entry: p.entry,
            cont,
            len: p.len as u32,
            _pad: 0,
            original: [0; MAX_PATCH],
            patched: [0xcc; MAX_PATCH],
        };
        patch.original[..p.len].copy_from_slice(&p.original);
        patch.patched[0] = 0xe9;
        let rel = stub as i64 - (p.entry + JMP_LEN as u64) as i64;
        patch.patched[1..5].copy_from_slice(&(rel as i32).to_le_bytes());
        patches.push(patch);
    }
    let header = Header {
        magic: MAGIC,
        entry_point: base + elf.entry(),
        area,
        area_len: code.len() as u64,
        area_offset: 0,
        count: patches.len() as u64,
        patches_offset: std::mem::size_of::<Header>() as u64,
    };
    let patch_bytes = std::mem::size_of::<Patch>() * patches.len();
    let area_offset = (header.patches_offset as usize + patch_bytes).next_multiple_of(64);
    let header = Header {
        area_offset: area_offset as u64,
        ..header
    };
    let file = SharedFile::create("funcplan", area_offset + code.len())
        .map_err(|e| io("cannot create the function plan for", program, e))?;
    // SAFETY: the file is at least as large as the header, the patches and
    // the code; plain-data values are copied into it.
    unsafe {
        let b = file.base();
        std::ptr::write_unaligned(b as *mut Header, header);
        let pp = b.add(header.patches_offset as usize) as *mut Patch;
        for (i, p) in patches.iter().enumerate() {
            std::ptr::write_unaligned(pp.add(i), *p);
        }
        std::ptr::copy_nonoverlapping(code.as_ptr(), b.add(area_offset), code.len());
    }
    Ok(Some(FuncPlan {
        file,
        patched: patches.len(),
        skipped,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_a_prologue_and_refuses_control_flow() {
        // push rbp; mov rbp,rsp; sub rsp,0x10
        let prologue = [0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0xc3];
        let (len, moved) = displaced(&prologue, 0x1000).unwrap();
        assert_eq!((len, moved.len()), (8, 3));
        // xor eax,eax; ret: shorter than a jump before it returns.
        assert!(displaced(&[0x31, 0xc0, 0xc3], 0x1000).is_none());
        // call 0x2000 first: pushes the return address after the patch.
        let call = [0xe8, 0xfb, 0x0f, 0x00, 0x00, 0xc3];
        let (len, moved) = displaced(&call, 0x1000).unwrap();
        assert_eq!(len, 5);
        assert_eq!(moved.len(), 4);
        assert_eq!(moved[3].near_branch_target(), 0x2000);
        assert_eq!(moved[1].immediate32(), 0x1005);
        // A loop back to entry+1 lands inside a 5-byte patch.
        // 0x1000: nop; nop; nop; nop; nop; jmp 0x1001
        let looping = [0x90, 0x90, 0x90, 0x90, 0x90, 0xeb, 0xfa];
        assert!(branches_into(&looping, 0x1000, 0x1005));
        assert!(!branches_into(&prologue, 0x1000, 0x1008));
    }
}
