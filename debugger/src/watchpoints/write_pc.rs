//! Which instruction wrote, for a thread stopped by a data breakpoint: the
//! trap reports the instruction after the write, so the writing one is
//! found by decoding backwards from the stop.

use std::collections::BTreeMap;

use iced_x86::{Decoder, DecoderOptions, Instruction, InstructionInfoFactory, OpAccess, Register};
use reprise_tracee::{MemoryReader, ProcessMemory, RemotePtr};

use super::Watch;

/// The value of `reg` (or a segment's base) in `r`, for address computation.
fn reg_value(r: &libc::user_regs_struct, reg: Register, rip: u64) -> Option<u64> {
    use Register::*;
    let full = match reg {
        FS => return Some(r.fs_base),
        GS => return Some(r.gs_base),
        ES | CS | SS | DS => return Some(0),
        RIP | EIP => return Some(rip),
        _ => reg.full_register(),
    };
    let v = match full {
        RAX => r.rax,
        RBX => r.rbx,
        RCX => r.rcx,
        RDX => r.rdx,
        RSI => r.rsi,
        RDI => r.rdi,
        RBP => r.rbp,
        RSP => r.rsp,
        R8 => r.r8,
        R9 => r.r9,
        R10 => r.r10,
        R11 => r.r11,
        R12 => r.r12,
        R13 => r.r13,
        R14 => r.r14,
        R15 => r.r15,
        _ => return Option::None,
    };
    Some(match reg.size() {
        4 => v & 0xffff_ffff,
        2 => v & 0xffff,
        _ => v,
    })
}

/// Whether `ins` writes memory, and whether (computed with the registers
/// after it ran) a written operand overlaps `w`.
fn writes(
    ins: &Instruction,
    r: &libc::user_regs_struct,
    w: &Watch,
    factory: &mut InstructionInfoFactory,
) -> (bool, bool) {
    let mut any = false;
    let mut overlaps = false;
    for m in factory.info(ins).used_memory() {
        if !matches!(
            m.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) {
            continue;
        }
        any = true;
        let size = m.memory_size().size().max(1) as u64;
        if let Some(a) = m.virtual_address(0, |reg, _, _| reg_value(r, reg, ins.next_ip())) {
            overlaps |= a < w.addr + u64::from(w.len) && w.addr < a.wrapping_add(size);
        }
    }
    (any, overlaps)
}

/// The instruction that wrote, for a thread stopped by a data breakpoint at
/// `r.rip`: a `rep` string instruction at rip with iterations left, or else
/// the memory-writing instruction that ends at rip, chosen by (its written
/// address overlaps the watch, how many linear decodes from earlier offsets
/// end on it). Returns (rip, false) when no single best one exists.
pub(super) fn writing_instruction(
    mem: &ProcessMemory,
    r: &libc::user_regs_struct,
    w: &Watch,
) -> (u64, bool) {
    const BACK: u64 = 48;
    let rip = r.rip;
    let mut factory = InstructionInfoFactory::new();
    let mut start = rip.saturating_sub(BACK);
    let mut buf = vec![0u8; (rip - start) as usize + 16];
    if mem.read_exact(RemotePtr::new(start), &mut buf).is_err() {
        // The window crosses into an unmapped page: stay within rip's page.
        start = start.max(rip & !0xfff);
        buf = vec![0u8; (rip - start) as usize + 16];
        if mem
            .read_exact(RemotePtr::new(start), &mut buf[..(rip - start) as usize])
            .is_err()
        {
            return (rip, false);
        }
    }
    let at = (rip - start) as usize;
    let here = Decoder::with_ip(64, &buf[at..], rip, DecoderOptions::NONE).decode();
    let rep = here.has_rep_prefix() || here.has_repe_prefix() || here.has_repne_prefix();
    if !here.is_invalid()
        && rep
        && here.is_string_instruction()
        && r.rcx != 0
        && writes(&here, r, w, &mut factory).0
    {
        return (rip, true);
    }
    // Votes: from each start offset, decode linearly; if it lands exactly on
    // rip, the last instruction decoded gets a vote.
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for s in 0..at {
        let mut d = Decoder::with_ip(64, &buf[s..at], start + s as u64, DecoderOptions::NONE);
        let mut last = None;
        while d.can_decode() {
            let ins = d.decode();
            if ins.is_invalid() {
                last = None;
                break;
            }
            last = Some(ins.ip());
        }
        if let (Some(ip), true) = (last, d.position() == at - s) {
            *votes.entry(ip).or_default() += 1;
        }
    }
    let mut scored = Vec::new();
    for k in 1..=15usize.min(at) {
        let ip = rip - k as u64;
        let ins = Decoder::with_ip(64, &buf[at - k..at], ip, DecoderOptions::NONE).decode();
        if ins.is_invalid() || ins.len() != k {
            continue;
        }
        let (any, overlaps) = writes(&ins, r, w, &mut factory);
        if any {
            scored.push(((overlaps, votes.get(&ip).copied().unwrap_or(0)), ip));
        }
    }
    scored.sort_by(|a, b| b.cmp(a));
    match scored.as_slice() {
        [(best, ip)] => (*ip, best.0 || best.1 > 0),
        [(best, ip), (second, _), ..] if best > second => (*ip, true),
        _ => (rip, false),
    }
}
