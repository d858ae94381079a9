//! Applies the supervisor's plan to patch the executable's function
//! entries (the `func` sketch of an unmodified program, see
//! `reprise_abi::func_plan`), and the hook every patched entry jumps to.
//!
//! Runs once at start-up, before the program's own code: maps the stubs'
//! area where the plan says, checks that every entry still holds the bytes
//! the plan was made from (an `exec`'d program, or another build, is left
//! alone), then writes the jumps.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use reprise_abi::func_plan::{Header, Patch, HOOK_SLOT, MAGIC};

use crate::raw;

/// The plan's patches (in the mapped plan file) and their number.
static PATCHES: AtomicPtr<Patch> = AtomicPtr::new(core::ptr::null_mut());
static COUNT: AtomicU64 = AtomicU64::new(0);

const PAGE: u64 = 4096;

fn page_down(a: u64) -> u64 {
    a & !(PAGE - 1)
}

fn page_up(a: u64) -> u64 {
    (a + PAGE - 1) & !(PAGE - 1)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// The plan is for another executable (this one was `exec`'d).
    OtherProgram,
    /// The plan could not be applied (its file, its area, the bytes).
    Failed,
}

/// Maps the plan named by `path` and patches the entries.
pub fn apply(path: *const libc::c_char) -> Applied {
    let Some((fd, size)) = raw::open_shared(path) else {
        return Applied::Failed;
    };
    let base = raw::syscall6(
        libc::SYS_mmap,
        [
            0,
            size as u64,
            libc::PROT_READ as u64,
            libc::MAP_SHARED as u64,
            fd as u64,
            0,
        ],
    );
    raw::syscall3(libc::SYS_close, fd as u64, 0, 0);
    if base < 0 || size < core::mem::size_of::<Header>() {
        return Applied::Failed;
    }
    // SAFETY: the file starts with a Header (checked by its magic and the
    // sizes below); the patches and the code lie within the file.
    unsafe {
        let h = core::ptr::read_unaligned(base as *const Header);
        let patches_end =
            h.patches_offset as usize + h.count as usize * core::mem::size_of::<Patch>();
        if h.entry_point != libc::getauxval(libc::AT_ENTRY) {
            return Applied::OtherProgram;
        }
        if h.magic != MAGIC || patches_end > size || (h.area_offset + h.area_len) as usize > size {
            return Applied::Failed;
        }
        let patches = (base as u64 + h.patches_offset) as *mut Patch;
        let count = h.count as usize;
        for i in 0..count {
            let p = &*patches.add(i);
            let here = core::slice::from_raw_parts(p.entry as *const u8, p.len as usize);
            if here != &p.original[..p.len as usize] {
                return Applied::Failed;
            }
        }
        // The stubs' area: the plan's code, then the hook's address.
        let len = page_up(h.area_len);
        let area = raw::syscall6(
            libc::SYS_mmap,
            [
                h.area,
                len,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ],
        );
        if area as u64 != h.area {
            return Applied::Failed;
        }
        core::ptr::copy_nonoverlapping(
            (base as u64 + h.area_offset) as *const u8,
            area as *mut u8,
            h.area_len as usize,
        );
        *((area as u64 + HOOK_SLOT) as *mut u64) = entry_hook as *const () as u64;
        raw::syscall3(
            libc::SYS_mprotect,
            area as u64,
            len,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
        );
        PATCHES.store(patches, Ordering::Release);
        COUNT.store(count as u64, Ordering::Release);
        // The entries: their pages writable for as long as it takes.
        let lo = (0..count)
            .map(|i| (*patches.add(i)).entry)
            .min()
            .unwrap_or(0);
        let hi = (0..count)
            .map(|i| (*patches.add(i)).entry + (*patches.add(i)).len as u64)
            .max()
            .unwrap_or(0);
        if count == 0 {
            return Applied::Yes;
        }
        let (plo, phi) = (page_down(lo), page_up(hi));
        let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        if raw::syscall3(libc::SYS_mprotect, plo, phi - plo, rwx) != 0 {
            return Applied::Failed;
        }
        for i in 0..count {
            let p = &*patches.add(i);
            core::ptr::copy_nonoverlapping(p.patched.as_ptr(), p.entry as *mut u8, p.len as usize);
        }
        raw::syscall3(
            libc::SYS_mprotect,
            plo,
            phi - plo,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
        );
    }
    Applied::Yes
}

/// True if `addr` lies in a patched entry's bytes (what ran there now
/// runs from the stubs' area): access breakpoints are not set there.
pub fn covers(addr: u64) -> bool {
    let n = COUNT.load(Ordering::Acquire) as usize;
    let p = PATCHES.load(Ordering::Acquire);
    if p.is_null() || n == 0 {
        return false;
    }
    // SAFETY: the plan's `n` patches, sorted by entry, live in its mapping.
    let patches = unsafe { core::slice::from_raw_parts(p, n) };
    let i = patches.partition_point(|q| q.entry <= addr);
    i > 0 && addr < patches[i - 1].entry + patches[i - 1].len as u64
}

/// The Rust side of the hook: records or replays function `index`'s entry
/// (`site`: its caller's return address); returns where the function goes
/// on (its displaced instructions).
extern "C" fn entered(index: u64, site: u64) -> u64 {
    let n = COUNT.load(Ordering::Acquire);
    let p = PATCHES.load(Ordering::Acquire);
    if index >= n || p.is_null() {
        // Cannot happen: stubs push their own index.
        loop {
            raw::syscall3(libc::SYS_exit_group, 70, 0, 0);
        }
    }
    // SAFETY: index < COUNT patches live in the mapped plan.
    let patch = unsafe { &*p.add(index as usize) };
    crate::hooks::function_entered(patch.entry, site);
    patch.cont
}

/// Every stub's target: `[rsp]` is the function's index (pushed by its
/// stub), `[rsp+8]` its caller's return address. Saves what a function's
/// entry may hold live (argument and scratch registers, xmm0-7), calls
/// [`entered`] on a 16-byte aligned stack (a local function may be entered
/// unaligned: the compiler knows its callers), and jumps to the function's
/// displaced instructions.
#[unsafe(naked)]
extern "C" fn entry_hook() {
    core::arch::naked_asm!(
        "push rax",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "mov rax, rsp",
        "and rsp, -16",
        // xmm0-7, then the saved stack pointer at [rsp+128].
        "sub rsp, 144",
        "mov [rsp+128], rax",
        "movdqu [rsp], xmm0",
        "movdqu [rsp+16], xmm1",
        "movdqu [rsp+32], xmm2",
        "movdqu [rsp+48], xmm3",
        "movdqu [rsp+64], xmm4",
        "movdqu [rsp+80], xmm5",
        "movdqu [rsp+96], xmm6",
        "movdqu [rsp+112], xmm7",
        "mov rdi, [rax+72]",
        "mov rsi, [rax+80]",
        "call {entered}",
        // The index's slot becomes the address `ret` goes to.
        "mov rcx, [rsp+128]",
        "mov [rcx+72], rax",
        "movdqu xmm0, [rsp]",
        "movdqu xmm1, [rsp+16]",
        "movdqu xmm2, [rsp+32]",
        "movdqu xmm3, [rsp+48]",
        "movdqu xmm4, [rsp+64]",
        "movdqu xmm5, [rsp+80]",
        "movdqu xmm6, [rsp+96]",
        "movdqu xmm7, [rsp+112]",
        "mov rsp, rcx",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rax",
        // Not `ret`: that would pop the return-stack predictor's entry of
        // the function's caller, and every return above would mispredict.
        // The slot below the stack pointer is safe: signal frames skip the
        // 128-byte red zone.
        "lea rsp, [rsp+8]",
        "jmp qword ptr [rsp-8]",
        entered = sym entered,
    );
}
