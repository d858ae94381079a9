//! Checkpoints for the debugger: a copy of the whole paused process that
//! can be resumed later, any number of times.
//!
//! `fork` copies only the calling thread. So, as rr does, the other
//! threads are re-created in the copy: at a pause every thread waits in
//! the agent, and each saves its callee-saved registers, stack pointer and
//! return address (a `setjmp`) before waiting. The paused thread then
//! forks a *zygote*: a single-threaded frozen copy whose shared mappings
//! (control block, observation block) are made private. To resume the
//! checkpoint, the debugger writes the paths of fresh shared files into
//! the zygote's mailbox and signals it; the zygote forks again, and that
//! child maps the fresh files in place of the old ones (with the copied
//! contents), re-creates every saved thread with `clone` (same TLS; glibc's
//! tid word keeps the old value, which locks record as their owner, and
//! is cleared at exit for `pthread_join`) and jumps into each saved
//! context.
//! Both forks use `CLONE_PARENT`, so every copy is a child of the debugger.
//!
//! The forks and clones are raw syscalls: glibc's `fork` would run the
//! program's atfork handlers and reclaim the other threads' stacks.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use reprise_abi::{replay as rp, ControlHeader, MAX_THREADS};

use super::{bump, futex_wait, st};
use crate::ctl;
use crate::raw;

/// A saved thread: callee-saved registers, stack pointer and return
/// address, then what the re-created thread needs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Context {
    /// rbx rbp r12 r13 r14 r15 rsp rip (offsets used by the assembly).
    regs: [u64; 8],
    /// FS base: the thread's TLS and glibc's `struct pthread`.
    fs: u64,
    /// Where glibc keeps the thread's tid (inside `struct pthread`).
    tid_addr: u64,
    sigmask: u64,
    /// Its entry in the control block's thread tables.
    entry: u64,
    /// The checkpoint it was saved for (`ckpt_generation`).
    generation: u64,
}

const EMPTY: Context = Context {
    regs: [0; 8],
    fs: 0,
    tid_addr: 0,
    sigmask: 0,
    entry: u64::MAX,
    generation: 0,
};

/// One per thread entry; written by each thread for itself at a
/// checkpoint, read by the copy that re-creates it.
static mut CONTEXTS: [Context; MAX_THREADS] = [EMPTY; MAX_THREADS];

/// The shared mappings a copy must replace: 0 control block, 1 observation.
static REGION_ADDR: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static REGION_LEN: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The zygote's mailbox: the debugger writes the fresh files' paths here
/// (with `process_vm_writev`), then sends [`RESTORE_SIGNAL`].
#[repr(C)]
pub struct Mailbox {
    paths: [[u8; 128]; 2],
}
static mut MAILBOX: Mailbox = Mailbox {
    paths: [[0; 128]; 2],
};
static RESTORES: AtomicU64 = AtomicU64::new(0);

const RESTORE_SIGNAL: i32 = libc::SIGUSR2;

core::arch::global_asm!(
    ".globl reprise_ckpt_save",
    ".hidden reprise_ckpt_save",
    "reprise_ckpt_save:",
    "mov [rdi], rbx",
    "mov [rdi + 8], rbp",
    "mov [rdi + 16], r12",
    "mov [rdi + 24], r13",
    "mov [rdi + 32], r14",
    "mov [rdi + 40], r15",
    "lea rax, [rsp + 8]",
    "mov [rdi + 48], rax",
    "mov rax, [rsp]",
    "mov [rdi + 56], rax",
    "xor eax, eax",
    "ret",
    ".globl reprise_ckpt_resume",
    ".hidden reprise_ckpt_resume",
    "reprise_ckpt_resume:",
    "mov rbx, [rdi]",
    "mov rbp, [rdi + 8]",
    "mov r12, [rdi + 16]",
    "mov r13, [rdi + 24]",
    "mov r14, [rdi + 32]",
    "mov r15, [rdi + 40]",
    "mov rsp, [rdi + 48]",
    "mov eax, 1",
    "jmp qword ptr [rdi + 56]",
    // (flags, stack, ptid, ctid, tls, ctx): clone(2), and in the child
    // call reprise_ckpt_thread(ctx) on the given stack.
    ".globl reprise_ckpt_clone",
    ".hidden reprise_ckpt_clone",
    "reprise_ckpt_clone:",
    "mov r10, rcx",
    "mov eax, 56",
    "syscall",
    "test rax, rax",
    "jnz 2f",
    "xor ebp, ebp",
    "mov rdi, r9",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    "2:",
    "ret",
    entry = sym reprise_ckpt_thread,
);

extern "C" {
    /// Saves the caller's context; returns 0, and 1 when resumed.
    fn reprise_ckpt_save(ctx: *mut Context) -> u64;
    fn reprise_ckpt_resume(ctx: *const Context) -> !;
    fn reprise_ckpt_clone(flags: u64, stack: u64, ptid: u64, ctid: u64, tls: u64, ctx: u64) -> i64;
}

/// Records one of the agent's shared mappings (0 control, 1 observation).
pub fn note_region(which: usize, addr: usize, len: usize) {
    REGION_ADDR[which].store(addr, Ordering::Release);
    REGION_LEN[which].store(len, Ordering::Release);
}

fn fs_base() -> u64 {
    let mut fs = 0u64;
    raw::syscall3(
        libc::SYS_arch_prctl,
        0x1003, // ARCH_GET_FS
        &mut fs as *mut u64 as u64,
        0,
    );
    fs
}

/// Where glibc keeps a thread's tid inside its `struct pthread` (at the
/// FS base), found once by looking for the tid (glibc's layout is its
/// own); 0 until found.
static TID_OFFSET: AtomicUsize = AtomicUsize::new(0);

/// The address of the calling thread's tid word in glibc's `struct
/// pthread`. In a copy, the word keeps the recorded thread's tid while
/// the kernel gave a new one: the offset found before is used.
fn tid_address(fs: u64, tid: i32) -> u64 {
    let known = TID_OFFSET.load(Ordering::Acquire);
    if known != 0 {
        return fs + known as u64;
    }
    // `struct pthread` is larger than 0x600 bytes on x86-64 (its tid
    // sits at 0x2d0 in current glibc): the reads stay inside it.
    let mut off = 0x100u64;
    while off < 0x600 {
        // SAFETY: inside this thread's own `struct pthread`, see above.
        let v = unsafe { core::ptr::read_volatile((fs + off) as *const i32) };
        if v == tid {
            TID_OFFSET.store(off as usize, Ordering::Release);
            return fs + off;
        }
        off += 4;
    }
    0
}

fn this_entry() -> Option<usize> {
    let c = ctl::control()?;
    let e = ctl::thread_entry()? as *const reprise_abi::ThreadEntry as usize;
    let base = c.threads.as_ptr() as usize;
    Some((e - base) / core::mem::size_of::<reprise_abi::ThreadEntry>())
}

/// Fills this thread's context (except the registers) and saves it: 0
/// now, 1 when a copy resumes it.
#[inline(always)]
fn save_self() -> u64 {
    let Some(i) = this_entry() else { return 0 };
    let fs = fs_base();
    let mut mask = 0u64;
    raw::syscall6(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_BLOCK as u64,
            0,
            &mut mask as *mut u64 as u64,
            8,
            0,
            0,
        ],
    );
    // SAFETY: each thread writes only its own entry.
    unsafe {
        let ctx = core::ptr::addr_of_mut!(CONTEXTS[i]);
        (*ctx).fs = fs;
        (*ctx).tid_addr = tid_address(fs, raw::gettid());
        (*ctx).sigmask = mask;
        (*ctx).entry = i as u64;
        if let Some(c) = ctl::control() {
            (*ctx).generation = st(c).ckpt_generation.load(Ordering::Acquire) as u64;
        }
        reprise_ckpt_save(ctx)
    }
}

/// A waiting thread's part: while the paused thread gathers a
/// checkpoint, save this thread's context and wait until it is taken.
#[inline(never)]
pub(super) fn offer(c: &ControlHeader) {
    let r = st(c);
    if r.ckpt_phase.load(Ordering::Acquire) != rp::CKPT_GATHER {
        return;
    }
    if save_self() != 0 {
        // Resumed in a copy: back to waiting, there.
        return;
    }
    r.ckpt_saved.fetch_add(1, Ordering::AcqRel);
    bump(r);
    while r.ckpt_phase.load(Ordering::Acquire) == rp::CKPT_GATHER {
        futex_wait(&r.ckpt_phase, rp::CKPT_GATHER, 100);
    }
}

/// Threads of this process, from `/proc/self/status` (0 if unreadable).
fn thread_count() -> u32 {
    let path = b"/proc/self/status\0";
    let fd = raw::syscall6(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path.as_ptr() as u64,
            libc::O_RDONLY as u64,
            0,
            0,
            0,
        ],
    );
    if fd < 0 {
        return 0;
    }
    let mut buf = [0u8; 8192];
    let mut len = 0usize;
    while len < buf.len() {
        let n = raw::syscall3(
            libc::SYS_read,
            fd as u64,
            buf[len..].as_mut_ptr() as u64,
            (buf.len() - len) as u64,
        );
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    raw::syscall3(libc::SYS_close, fd as u64, 0, 0);
    let b = &buf[..len];
    let key = b"\nThreads:";
    let Some(i) = b.windows(key.len()).position(|w| w == key) else {
        return 0;
    };
    let mut v = 0u32;
    for &ch in &b[i + key.len()..] {
        match ch {
            b'0'..=b'9' => v = v * 10 + (ch - b'0') as u32,
            b' ' | b'\t' => {}
            _ => break,
        }
    }
    v
}

/// Threads of this process the agent knows alive, other than the caller.
fn live_others(c: &ControlHeader) -> u32 {
    let me = this_entry();
    let n = (c.next_thread_entry.load(Ordering::Acquire) as usize).min(MAX_THREADS);
    (0..n)
        .filter(|&i| Some(i) != me)
        .filter(|&i| {
            let e = &c.threads[i];
            e.state.load(Ordering::Acquire) == 1
                && e.process.load(Ordering::Acquire) == ctl::process()
        })
        .count() as u32
}

/// Every other live thread saved a context for this checkpoint.
fn all_saved(c: &ControlHeader, generation: u64) -> bool {
    let me = this_entry();
    let n = (c.next_thread_entry.load(Ordering::Acquire) as usize).min(MAX_THREADS);
    (0..n).filter(|&i| Some(i) != me).all(|i| {
        let e = &c.threads[i];
        if e.state.load(Ordering::Acquire) != 1
            || e.process.load(Ordering::Acquire) != ctl::process()
        {
            return true;
        }
        // SAFETY: a plain read of a context its thread wrote before
        // bumping `ckpt_saved` (Release), read after loading it (Acquire).
        unsafe { CONTEXTS[i].generation == generation }
    })
}

/// The paused thread's part, when the debugger asks for a checkpoint:
/// gather every other thread's context, fork the zygote, report its pid
/// (or why not) in `ckpt_result`. Returns in the original process and,
/// later, in every copy resumed from this checkpoint.
pub(super) fn take(c: &ControlHeader) {
    let r = st(c);
    r.ckpt_mailbox.store(mailbox_address(), Ordering::Release);
    let generation = r.ckpt_generation.fetch_add(1, Ordering::AcqRel) as u64 + 1;
    r.ckpt_saved.store(0, Ordering::Release);
    r.ckpt_phase.store(rp::CKPT_GATHER, Ordering::Release);
    bump(r);
    // Every thread the kernel runs in this process must save itself,
    // whether or not the agent knows it yet (a thread just cloned).
    let others = thread_count().saturating_sub(1).max(live_others(c));
    r.ckpt_others.store(others, Ordering::Release);
    let mut waited = 0;
    let done = |r: &reprise_abi::ReplayState| {
        r.ckpt_saved.load(Ordering::Acquire) >= others && all_saved(c, generation)
    };
    while !done(r) && waited < 1000 {
        let ep = r.epoch.load(Ordering::Acquire);
        futex_wait(&r.epoch, ep, 10);
        waited += 10;
    }
    let result = if !done(r) {
        // A thread blocked outside the schedule (in the kernel) cannot
        // be saved.
        -(rp::CKPT_THREAD_OUTSIDE as i64)
    } else if save_self() != 0 {
        // Resumed in a copy (see `restore`): the paused thread goes on.
        return;
    } else {
        fork_zygote(c)
    };
    r.ckpt_result.store(result, Ordering::Release);
    r.ckpt_request.store(0, Ordering::Release);
    r.ckpt_phase.store(rp::CKPT_IDLE, Ordering::Release);
    bump(r);
    wake(&r.ckpt_phase);
}

fn wake(word: &core::sync::atomic::AtomicU32) {
    raw::syscall6(
        libc::SYS_futex,
        [
            word.as_ptr() as u64,
            libc::FUTEX_WAKE as u64,
            i32::MAX as u64,
            0,
            0,
            0,
        ],
    );
}

/// Forks the zygote; in the parent returns its pid. The zygote never
/// returns from here: it serves restores until it is killed; each copy it
/// makes resumes the paused thread's saved context.
fn fork_zygote(c: &ControlHeader) -> i64 {
    let r = st(c);
    r.ckpt_zygote_ready.store(0, Ordering::Release);
    let pid = raw::syscall6(
        libc::SYS_clone,
        [(libc::CLONE_PARENT | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
    );
    if pid != 0 {
        // The shared blocks are shared with the zygote until it has made
        // its own copies: nothing may change them before.
        if pid > 0 {
            let mut waited = 0;
            while r.ckpt_zygote_ready.load(Ordering::Acquire) == 0 && waited < 5000 {
                futex_wait(&r.ckpt_zygote_ready, 0, 10);
                waited += 10;
            }
            if r.ckpt_zygote_ready.load(Ordering::Acquire) == 0 {
                raw::syscall3(libc::SYS_kill, pid as u64, libc::SIGKILL as u64, 0);
                return -(libc::ETIMEDOUT as i64);
            }
        }
        return pid;
    }
    // The zygote. Its shared mappings become private copies, so the
    // original and later copies do not see its state change.
    raw::syscall3(
        libc::SYS_prctl,
        libc::PR_SET_PDEATHSIG as u64,
        libc::SIGKILL as u64,
        0,
    );
    // A second view of the shared control block, to tell the original
    // once the copies are private (mremap of size 0 aliases shared pages).
    let base = REGION_ADDR[0].load(Ordering::Acquire);
    let len = REGION_LEN[0].load(Ordering::Acquire);
    let alias = raw::syscall6(
        libc::SYS_mremap,
        [
            base as u64,
            0,
            len as u64,
            libc::MREMAP_MAYMOVE as u64,
            0,
            0,
        ],
    );
    for which in 0..2 {
        privatize(which);
    }
    if alias > 0 {
        let off = &r.ckpt_zygote_ready as *const _ as usize - base;
        // SAFETY: the alias maps the shared control block for `len`
        // bytes; the field lies inside it.
        unsafe {
            let w = &*((alias as usize + off) as *const core::sync::atomic::AtomicU32);
            w.store(1, Ordering::Release);
            wake(w);
            libc::munmap(alias as *mut libc::c_void, len);
        }
    }
    serve_restores()
}

/// Replaces a shared mapping by a private one with the same contents.
fn privatize(which: usize) {
    let (addr, len) = (
        REGION_ADDR[which].load(Ordering::Acquire),
        REGION_LEN[which].load(Ordering::Acquire),
    );
    if addr == 0 {
        return;
    }
    // SAFETY: a fresh anonymous mapping as scratch, then the same range
    // mapped privately in place; nothing else runs in the zygote.
    unsafe {
        let tmp = raw::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if tmp == libc::MAP_FAILED {
            return;
        }
        core::ptr::copy_nonoverlapping(addr as *const u8, tmp as *mut u8, len);
        let p = raw::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        );
        if p != libc::MAP_FAILED {
            core::ptr::copy_nonoverlapping(tmp as *const u8, addr as *mut u8, len);
        }
        libc::munmap(tmp, len);
    }
}

/// The zygote's loop: wait for the restore signal, fork a copy; the copy
/// returns (into the paused thread's wait), the zygote waits again.
fn serve_restores() -> i64 {
    let set: u64 = 1 << (RESTORE_SIGNAL - 1);
    let all: u64 = !0;
    raw::syscall6(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as u64,
            &all as *const u64 as u64,
            0,
            8,
            0,
            0,
        ],
    );
    loop {
        let got = raw::syscall6(
            libc::SYS_rt_sigtimedwait,
            [&set as *const u64 as u64, 0, 0, 8, 0, 0],
        );
        if got != RESTORE_SIGNAL as i64 {
            continue;
        }
        let pid = raw::syscall6(
            libc::SYS_clone,
            [(libc::CLONE_PARENT | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
        );
        if pid == 0 {
            restore();
            // SAFETY: the paused thread's context saved in `take`, whose
            // stack is this copy's (unchanged since); its signal mask
            // comes back first (the zygote blocks every signal).
            unsafe {
                let i = this_entry().unwrap_or(0);
                let ctx = core::ptr::addr_of!(CONTEXTS[i]);
                raw::syscall6(
                    libc::SYS_rt_sigprocmask,
                    [
                        libc::SIG_SETMASK as u64,
                        core::ptr::addr_of!((*ctx).sigmask) as u64,
                        0,
                        8,
                        0,
                        0,
                    ],
                );
                reprise_ckpt_resume(ctx);
            }
        }
        RESTORES.fetch_add(1, Ordering::Relaxed);
    }
}

/// In a copy: map the fresh shared files in place, publish this process,
/// re-create the other threads.
fn restore() {
    raw::syscall3(
        libc::SYS_prctl,
        libc::PR_SET_PDEATHSIG as u64,
        libc::SIGKILL as u64,
        0,
    );
    for which in 0..2 {
        // SAFETY: the debugger wrote the paths before the signal; the
        // zygote reads its own copy.
        let path = unsafe { core::ptr::addr_of!(MAILBOX.paths[which]) };
        share_again(which, path as *const u8);
    }
    let Some(c) = ctl::control() else { return };
    let r = st(c);
    let me = raw::gettid();
    let pid = raw::getpid();
    if let Some(p) = ctl::process_entry(c, ctl::process()) {
        p.pid.store(pid, Ordering::Release);
    }
    let mine = this_entry();
    if let Some(i) = mine {
        c.threads[i].tid.store(me, Ordering::Release);
        // SAFETY: this thread's own context, filled in `take`.
        let tid_addr = unsafe { CONTEXTS[i].tid_addr };
        if tid_addr != 0 {
            // glibc's tid word keeps the recorded thread's value: locks
            // remember their owner by it (a rwlock's writer), and the
            // replay's tids are the recorded ones anyway. The kernel
            // clears it when the thread exits, for pthread_join.
            raw::syscall3(libc::SYS_set_tid_address, tid_addr, 0, 0);
        }
    }
    let n = (c.next_thread_entry.load(Ordering::Acquire) as usize).min(MAX_THREADS);
    for i in 0..n {
        if Some(i) == mine || c.threads[i].state.load(Ordering::Acquire) != 1 {
            continue;
        }
        // SAFETY: contexts were written before the zygote was forked.
        let ctx = unsafe { core::ptr::addr_of!(CONTEXTS[i]) };
        // SAFETY: read of a plain struct in this process's memory.
        let cx = unsafe { *ctx };
        let generation = r.ckpt_generation.load(Ordering::Acquire) as u64;
        if cx.entry != i as u64 || cx.regs[6] == 0 || cx.generation != generation {
            continue;
        }
        let flags = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_CHILD_CLEARTID;
        // The new thread starts below the saved stack pointer: that part
        // of its stack is dead at the saved point.
        let stack = (cx.regs[6] - 2048) & !15;
        // SAFETY: the child runs `reprise_ckpt_thread(ctx)` on a dead part
        // of its own stack, then jumps into its saved context.
        unsafe {
            reprise_ckpt_clone(
                flags as u64,
                stack,
                cx.tid_addr,
                cx.tid_addr,
                cx.fs,
                ctx as u64,
            );
        }
    }
    r.ckpt_request.store(0, Ordering::Release);
    r.ckpt_phase.store(rp::CKPT_IDLE, Ordering::Release);
    r.ckpt_saved.store(0, Ordering::Release);
    r.restored_pid.store(pid, Ordering::Release);
    bump(r);
}

/// A re-created thread's first code: its signal mask and tid, then its
/// saved context.
extern "C" fn reprise_ckpt_thread(ctx: *const Context) -> ! {
    // SAFETY: `ctx` points into CONTEXTS, written before the fork.
    unsafe {
        let cx = &*ctx;
        raw::syscall6(
            libc::SYS_rt_sigprocmask,
            [
                libc::SIG_SETMASK as u64,
                &cx.sigmask as *const u64 as u64,
                0,
                8,
                0,
                0,
            ],
        );
        if let Some(c) = ctl::control() {
            if let Some(e) = c.threads.get(cx.entry as usize) {
                e.tid.store(raw::gettid(), Ordering::Release);
            }
        }
        reprise_ckpt_resume(ctx)
    }
}

/// Maps the file at `path` over region `which`, with the region's current
/// contents copied into it first.
fn share_again(which: usize, path: *const u8) {
    let (addr, len) = (
        REGION_ADDR[which].load(Ordering::Acquire),
        REGION_LEN[which].load(Ordering::Acquire),
    );
    // SAFETY: `path` is NUL-terminated (the mailbox is zeroed and the
    // debugger writes at most 127 bytes).
    if addr == 0 || unsafe { *path } == 0 {
        return;
    }
    let Some((fd, size)) = raw::open_shared(path as *const libc::c_char) else {
        return;
    };
    if size < len {
        raw::syscall3(libc::SYS_close, fd as u64, 0, 0);
        return;
    }
    // SAFETY: the file is `len` bytes or more; it is mapped at a scratch
    // address, filled, then mapped in place of the region.
    unsafe {
        let tmp = raw::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        if tmp != libc::MAP_FAILED {
            core::ptr::copy_nonoverlapping(addr as *const u8, tmp as *mut u8, len);
            libc::munmap(tmp, len);
            raw::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                0,
            );
        }
    }
    raw::syscall3(libc::SYS_close, fd as u64, 0, 0);
}

/// The mailbox's address, for the debugger (published in the control
/// block when a checkpoint is taken).
pub fn mailbox_address() -> u64 {
    core::ptr::addr_of!(MAILBOX) as u64
}
