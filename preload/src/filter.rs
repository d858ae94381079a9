//! The seccomp filter the agent installs (classic BPF, as the kernel's
//! seccomp interface takes it): allow everything from the agent's own
//! syscall page, from the dynamic loader and from other architectures;
//! trap the recorded syscalls (at `sys`), writes to stdout and stderr, and
//! the calls that could block or take SIGSYS away from the agent (a blocked
//! SIGSYS would make the kernel kill the process at the next trap).
//!
//! The kernel runs the filter on every syscall the program makes, so the
//! syscall number is looked up in a balanced decision tree (about seven
//! comparisons) rather than a chain of one comparison per trapped number.

use crate::raw;
use crate::sys::{FILES, OUTPUT, RECORDED};

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
pub const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_IP: u32 = 8;
const OFF_ARG0: u32 = 16;

/// Longest filter: the tree takes about two instructions per number.
pub const MAX_FILTER: usize = 256;
/// Most syscall numbers the tree decides on.
const MAX_NRS: usize = 96;
/// Most labels: the fixed ones and one per inner node of the tree.
const MAX_LABELS: usize = 64;

/// Jump targets while the filter is assembled.
#[derive(Clone, Copy, PartialEq)]
enum L {
    Next,
    Allow,
    CheckLoader,
    CheckNr,
    Trap,
    Out,
    SigAction,
    Fcntl,
    /// The right half of a node of the number tree.
    Node(u16),
}

/// A filter program assembled with symbolic jumps (all forward: classic
/// BPF has no backward jumps).
struct Asm {
    ins: [(libc::sock_filter, L, L); MAX_FILTER],
    labels: [(L, usize); MAX_LABELS],
    n: usize,
    nl: usize,
    nodes: u16,
}

const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

impl Asm {
    fn label(&mut self, l: L) {
        self.labels[self.nl] = (l, self.n);
        self.nl += 1;
    }
    fn push(&mut self, ins: libc::sock_filter, t: L, f: L) {
        self.ins[self.n] = (ins, t, f);
        self.n += 1;
    }
    fn ld(&mut self, off: u32) {
        self.push(stmt(BPF_LD_W_ABS, off), L::Next, L::Next);
    }
    fn ret(&mut self, k: u32) {
        self.push(stmt(BPF_RET_K, k), L::Next, L::Next);
    }
    fn jeq(&mut self, k: u32, t: L, f: L) {
        self.push(stmt(BPF_JEQ_K, k), t, f);
    }
    fn jge(&mut self, k: u32, t: L, f: L) {
        self.push(stmt(BPF_JGE_K, k), t, f);
    }

    /// The decision on the loaded syscall number among `items` (sorted by
    /// number, each with where it goes); any other number is allowed.
    fn tree(&mut self, items: &[(u32, L)]) {
        if items.len() <= 3 {
            for (i, &(nr, to)) in items.iter().enumerate() {
                let last = i + 1 == items.len();
                self.jeq(nr, to, if last { L::Allow } else { L::Next });
            }
            if items.is_empty() {
                self.jeq(0, L::Allow, L::Allow);
            }
            return;
        }
        let mid = items.len() / 2;
        let right = L::Node(self.nodes);
        self.nodes += 1;
        self.jge(items[mid].0, right, L::Next);
        self.tree(&items[..mid]);
        self.label(right);
        self.tree(&items[mid..]);
    }

    fn finish(self) -> ([libc::sock_filter; MAX_FILTER], usize) {
        let labels = &self.labels[..self.nl];
        let at = |l: L| labels.iter().find(|x| x.0 == l).map_or(0, |x| x.1);
        let mut out = [stmt(0, 0); MAX_FILTER];
        for pc in 0..self.n {
            let (mut ins, t, f) = self.ins[pc];
            // Labels lie ahead of their jumps, within 255 instructions
            // (checked by the tests below).
            if t != L::Next {
                ins.jt = at(t).wrapping_sub(pc + 1) as u8;
            }
            if f != L::Next {
                ins.jf = at(f).wrapping_sub(pc + 1) as u8;
            }
            out[pc] = ins;
        }
        (out, self.n)
    }
}

/// The syscall numbers the filter decides on, sorted, with where each goes.
fn decisions(sys: bool, out: &mut [(u32, L); MAX_NRS]) -> usize {
    let mut n = 0;
    let mut add = |nr: i64, to: L| {
        if n < MAX_NRS && !out[..n].iter().any(|x| x.0 == nr as u32) {
            out[n] = (nr as u32, to);
            n += 1;
        }
    };
    // Ahead of the lists: these go where they go at every level.
    add(libc::SYS_rt_sigprocmask, L::Trap);
    // The end of the process is an event at every level.
    add(libc::SYS_exit_group, L::Trap);
    add(libc::SYS_rt_sigaction, L::SigAction);
    if sys {
        // Output syscalls are recorded whatever the descriptor at `sys`
        // only when they are in a list; otherwise by descriptor.
        for nr in RECORDED
            .iter()
            .chain(FILES.iter())
            .chain(crate::net::NET.iter())
        {
            if !OUTPUT.contains(nr) {
                add(*nr, L::Trap);
            }
        }
        add(libc::SYS_fcntl, L::Fcntl);
    }
    for nr in OUTPUT {
        add(nr, L::Out);
    }
    // Insertion sort: no allocation in the agent.
    for i in 1..n {
        let mut j = i;
        while j > 0 && out[j - 1].0 > out[j].0 {
            out.swap(j - 1, j);
            j -= 1;
        }
    }
    n
}

/// The filter for this process (`sys`: the sketch records syscalls).
pub fn build(sys: bool) -> ([libc::sock_filter; MAX_FILTER], usize) {
    build_with(sys, loader_text())
}

/// The dynamic loader's code: [start, end). Its syscalls are never
/// trapped. After an `execve` the filter stays but the agent's SIGSYS
/// handler is gone until the new image's agent is loaded, by this very
/// loader (at the same address: ASLR is off); a trap then would kill the
/// process. The loader's own reads (of shared libraries) are not program
/// input, and they run for real in a replay too.
fn loader_text() -> Option<(u64, u64)> {
    // SAFETY: AT_BASE is where the kernel mapped the loader; its ELF and
    // program headers are mapped readable there.
    unsafe {
        let base = libc::getauxval(libc::AT_BASE);
        if base == 0 {
            return None;
        }
        let eh = &*(base as *const libc::Elf64_Ehdr);
        if &eh.e_ident[..4] != b"\x7fELF" {
            return None;
        }
        let ph = (base + eh.e_phoff) as *const libc::Elf64_Phdr;
        for i in 0..eh.e_phnum as usize {
            let p = &*ph.add(i);
            if p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0 {
                let start = base + p.p_vaddr;
                let end = start + p.p_memsz;
                // One 4 GiB window (the filter compares 32-bit halves).
                if start >> 32 == (end - 1) >> 32 {
                    return Some((start, end));
                }
            }
        }
        None
    }
}

fn build_with(sys: bool, loader: Option<(u64, u64)>) -> ([libc::sock_filter; MAX_FILTER], usize) {
    let ip = raw::SYSCALL_RETURN_IP;
    let mut a = Asm {
        ins: [(stmt(0, 0), L::Next, L::Next); MAX_FILTER],
        labels: [(L::Next, 0); MAX_LABELS],
        n: 0,
        nl: 0,
        nodes: 0,
    };
    a.ld(OFF_ARCH);
    a.jeq(AUDIT_ARCH_X86_64, L::Next, L::Allow);
    a.ld(OFF_IP);
    a.jeq(ip as u32, L::Next, L::CheckLoader);
    a.ld(OFF_IP + 4);
    a.jeq((ip >> 32) as u32, L::Allow, L::CheckLoader);
    a.label(L::CheckLoader);
    if let Some((start, end)) = loader {
        a.ld(OFF_IP + 4);
        a.jeq((start >> 32) as u32, L::Next, L::CheckNr);
        a.ld(OFF_IP);
        a.jge(start as u32, L::Next, L::CheckNr);
        a.jge(end as u32, L::CheckNr, L::Allow);
    }
    a.label(L::CheckNr);
    a.ld(OFF_NR);
    let mut items = [(0u32, L::Next); MAX_NRS];
    let n = decisions(sys, &mut items);
    a.tree(&items[..n]);
    // Output: fd (args[0]) is 1 or 2.
    a.label(L::Out);
    a.ld(OFF_ARG0 + 4);
    a.jeq(0, L::Next, L::Allow);
    a.ld(OFF_ARG0);
    a.jeq(1, L::Trap, L::Next);
    a.jeq(2, L::Trap, L::Allow);
    // sigaction(SIGSYS, ...)
    a.label(L::SigAction);
    a.ld(OFF_ARG0);
    a.jeq(libc::SIGSYS as u32, L::Trap, L::Allow);
    // fcntl(fd, cmd, ...): only the record-lock commands (args[1]).
    a.label(L::Fcntl);
    a.ld(OFF_ARG0 + 8);
    let (last, cmds) = crate::net::LOCK_COMMANDS.split_last().unwrap_or((&0, &[]));
    for cmd in cmds {
        a.jeq(*cmd as u32, L::Trap, L::Next);
    }
    a.jeq(*last as u32, L::Trap, L::Allow);
    a.label(L::Allow);
    a.ret(SECCOMP_RET_ALLOW);
    a.label(L::Trap);
    a.ret(SECCOMP_RET_TRAP);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter on one syscall, as the kernel would.
    fn run(f: &[libc::sock_filter], nr: i64, ip: u64, args: [u64; 2]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_le_bytes());
        data[8..16].copy_from_slice(&ip.to_le_bytes());
        data[16..24].copy_from_slice(&args[0].to_le_bytes());
        data[24..32].copy_from_slice(&args[1].to_le_bytes());
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = f[pc];
            let jump = |taken: bool| if taken { i.jt } else { i.jf } as usize;
            match i.code {
                BPF_LD_W_ABS => {
                    acc =
                        u32::from_le_bytes(data[i.k as usize..i.k as usize + 4].try_into().unwrap())
                }
                BPF_RET_K => return i.k,
                BPF_JEQ_K => pc += jump(acc == i.k),
                BPF_JGE_K => pc += jump(acc >= i.k),
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn filter_traps_what_it_should_and_allows_the_rest() {
        for sys in [false, true] {
            let (f, n) = build_with(sys, None);
            let f = &f[..n];
            let ip = 0x5555_0000_1234;
            let expect = |nr: i64, args: [u64; 2], want: u32| {
                assert_eq!(
                    run(f, nr, ip, args),
                    want,
                    "sys={sys} nr={nr} args={args:?}"
                );
            };
            let (trap, allow) = (SECCOMP_RET_TRAP, SECCOMP_RET_ALLOW);
            expect(libc::SYS_write, [1, 0], trap);
            expect(libc::SYS_write, [2, 0], trap);
            expect(libc::SYS_write, [3, 0], allow);
            expect(libc::SYS_write, [1 << 32 | 1, 0], allow);
            expect(libc::SYS_writev, [2, 0], trap);
            expect(libc::SYS_rt_sigprocmask, [0, 0], trap);
            expect(libc::SYS_rt_sigaction, [libc::SIGSYS as u64, 0], trap);
            expect(libc::SYS_rt_sigaction, [libc::SIGINT as u64, 0], allow);
            expect(libc::SYS_exit_group, [0, 0], trap);
            let at_sys = if sys { trap } else { allow };
            for nr in RECORDED
                .iter()
                .chain(FILES.iter())
                .chain(crate::net::NET.iter())
            {
                if !OUTPUT.contains(nr) {
                    expect(*nr, [0, 0], at_sys);
                }
            }
            expect(libc::SYS_fcntl, [3, libc::F_SETLKW as u64], at_sys);
            expect(libc::SYS_fcntl, [3, libc::F_OFD_GETLK as u64], at_sys);
            expect(libc::SYS_fcntl, [3, libc::F_GETFL as u64], allow);
            // Every other number, up to the highest in use.
            for nr in 0..460 {
                let decided = [libc::SYS_write, libc::SYS_writev, libc::SYS_rt_sigprocmask]
                    .contains(&nr)
                    || [
                        libc::SYS_rt_sigaction,
                        libc::SYS_exit_group,
                        libc::SYS_fcntl,
                    ]
                    .contains(&nr)
                    || RECORDED.contains(&nr)
                    || FILES.contains(&nr)
                    || crate::net::NET.contains(&nr);
                if !decided {
                    expect(nr, [0, 0], allow);
                }
            }
            // The agent's own syscall instruction is never trapped.
            assert_eq!(
                run(f, libc::SYS_read, raw::SYSCALL_RETURN_IP, [0, 0]),
                allow
            );
            assert_eq!(
                run(f, libc::SYS_write, raw::SYSCALL_RETURN_IP, [1, 0]),
                allow
            );
        }
    }

    #[test]
    fn jumps_go_forward_within_the_filter_and_lookups_are_short() {
        for sys in [false, true] {
            let (f, n) = build_with(sys, Some((0x7fff_f7fc_0000, 0x7fff_f7ff_0000)));
            assert!(n < MAX_FILTER, "the filter is {n} instructions");
            for (pc, i) in f[..n].iter().enumerate() {
                if i.code == BPF_JEQ_K || i.code == BPF_JGE_K {
                    assert!(pc + 1 + (i.jt.max(i.jf) as usize) < n, "jump out at {pc}");
                }
            }
            // The longest path to a decision on a number: a handful of
            // comparisons, not one per trapped number.
            let mut items = [(0u32, L::Next); MAX_NRS];
            let count = decisions(sys, &mut items);
            let depth = (count as f64 / 3.0).log2().ceil() as usize + 3;
            assert!(depth <= 9, "{count} numbers, depth {depth}");
        }
    }
}
