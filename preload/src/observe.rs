//! Breakpoints on the executable's memory accesses, in replay (see
//! `reprise_abi::observe` for the contract with the supervisor).
//!
//! Each access point holds an `int3`. A hit (SIGTRAP, si_code SI_KERNEL)
//! computes the effective address from the saved registers; if it is not
//! the thread's own stack, the hit counts: it may hold the thread (the
//! first half of a flip) or preempt it (the `random` strategy). Then the
//! original byte goes back, TF is set, and the handler returns: the CPU
//! executes the one instruction and traps again (si_code TRAP_TRACE), where
//! the `int3` is put back, the access is logged with the value before and
//! after, and a flip whose second half this was hands the baton back.
//!
//! A place on a thread's stack that the supervisor lists as reached by
//! other threads counts as shared even from its owner; a hardware
//! watchpoint on one (`watch`) traps after the access (si_code
//! `TRAP_PERF`) and is logged for the supervisor to find the instruction.
//!
//! One thread runs at a time in a replay, so the byte restored for one
//! step is not seen by another thread; a thread outside the schedule that
//! runs meanwhile at worst misses one hit.

use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use reprise_abi::observe::{
    self as ob, Access, AccessPoint, ObserveHeader, ACCESS_STACK, ACCESS_WATCH, ACCESS_WRITE,
    OPT_LOG, OPT_PREEMPT, REG_NONE, REG_RIP,
};

use crate::raw;
use crate::replay;

static HEADER: AtomicPtr<ObserveHeader> = AtomicPtr::new(core::ptr::null_mut());
/// The executable's load bias (runtime address - ELF address).
static BIAS: AtomicU64 = AtomicU64::new(0);

const INT3: u8 = 0xcc;
const TRAP_TRACE: c_int = 2;
const SI_KERNEL: c_int = 0x80;
const EFLAGS_TF: i64 = 0x100;

/// The access being single-stepped by this thread.
#[derive(Clone, Copy)]
struct Step {
    /// Runtime address of the instruction; 0 = none.
    pc: u64,
    point: usize,
    addr: u64,
    before: u64,
    /// Counted and logged (not a local of the thread).
    shared: bool,
}

thread_local! {
    static STEP: Cell<Step> = const {
        Cell::new(Step { pc: 0, point: 0, addr: 0, before: 0, shared: false })
    };
}

fn header() -> Option<&'static ObserveHeader> {
    let p = HEADER.load(Ordering::Acquire);
    // SAFETY: set once to a mapping that lives as long as the process.
    unsafe { p.as_ref() }
}

fn points(h: &ObserveHeader) -> &[AccessPoint] {
    // SAFETY: the supervisor wrote `npoints` points at `points_offset`,
    // inside the mapping (checked in `install`).
    unsafe {
        let base = (h as *const ObserveHeader as *const u8).add(h.points_offset as usize);
        core::slice::from_raw_parts(base as *const AccessPoint, h.npoints as usize)
    }
}

fn log_slot(h: &ObserveHeader, i: u64) -> *mut Access {
    // SAFETY: callers check `i < log_capacity`; the log lies in the mapping.
    unsafe {
        (h as *const ObserveHeader as *const u8)
            .add(h.log_offset as usize)
            .cast::<Access>()
            .cast_mut()
            .add(i as usize)
    }
}

/// The executable's loadable segments: bias, and the executable ones'
/// page ranges (at most 8).
fn exe_segments() -> (u64, [(u64, u64); 8], usize) {
    let mut out = [(0u64, 0u64); 8];
    let mut n = 0;
    // SAFETY: getauxval is async-signal-safe; AT_PHDR points to AT_PHNUM
    // program headers mapped for the life of the process.
    unsafe {
        let phdr = libc::getauxval(libc::AT_PHDR);
        let count = libc::getauxval(libc::AT_PHNUM) as usize;
        if phdr == 0 || count == 0 {
            return (0, out, 0);
        }
        let phs = core::slice::from_raw_parts(phdr as *const libc::Elf64_Phdr, count);
        let bias = phs
            .iter()
            .find(|p| p.p_type == libc::PT_PHDR)
            .map(|p| phdr.wrapping_sub(p.p_vaddr))
            .unwrap_or(0);
        for p in phs.iter() {
            if p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0 && n < out.len() {
                let lo = (p.p_vaddr.wrapping_add(bias)) & !4095;
                let hi = (p.p_vaddr.wrapping_add(bias) + p.p_memsz + 4095) & !4095;
                out[n] = (lo, hi);
                n += 1;
            }
        }
        (bias, out, n)
    }
}

/// Maps the observation block named in the environment and sets the
/// breakpoints. Called from the constructor of a replaying process; the
/// breakpoints of a forked child are inherited with its memory.
pub fn install() {
    let name = b"REPRISE_OBSERVE\0";
    debug_assert_eq!(&name[..name.len() - 1], ob::ENV_OBSERVE.as_bytes());
    // SAFETY: getenv with a NUL-terminated name, in the constructor; the
    // mapping is checked (magic, version, sizes) before use; the text is
    // patched only where the table's first byte matches the file's.
    unsafe {
        let path = libc::getenv(name.as_ptr() as *const libc::c_char);
        if path.is_null() {
            return;
        }
        let Some((fd, size)) = raw::open_shared(path) else {
            return;
        };
        let p = raw::mmap(
            core::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        libc::close(fd);
        if p == libc::MAP_FAILED || size < core::mem::size_of::<ObserveHeader>() {
            return;
        }
        crate::replay::checkpoint::note_region(1, p as usize, size);
        let h = &*(p as *const ObserveHeader);
        let point_bytes = h.npoints as usize * core::mem::size_of::<AccessPoint>();
        let log_bytes = h.log_capacity as usize * core::mem::size_of::<Access>();
        if h.magic != ob::MAGIC
            || h.version != reprise_abi::ABI_VERSION
            || h.points_offset as usize + point_bytes > size
            || h.log_offset as usize + log_bytes > size
        {
            libc::munmap(p, size);
            return;
        }
        let (bias, segs, nsegs) = exe_segments();
        let in_text = |a: u64| segs[..nsegs].iter().any(|&(lo, hi)| a >= lo && a < hi);
        let pts = points(h);
        // Another image (after execve): its code is not the table's.
        // Not the bytes of a function entry patched for the func sketch:
        // those instructions run elsewhere now, unobserved.
        let patched = |pt: &AccessPoint| crate::func_patch::covers(pt.vaddr.wrapping_add(bias));
        let matches = pts.iter().filter(|pt| !patched(pt)).all(|pt| {
            let a = pt.vaddr.wrapping_add(bias);
            in_text(a) && *(a as *const u8) == pt.first_byte
        });
        if !matches {
            if h.installed.load(Ordering::Relaxed) == 0 {
                h.mismatch.store(1, Ordering::Release);
            }
            return;
        }
        for &(lo, hi) in &segs[..nsegs] {
            let prot = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
            if libc::mprotect(lo as *mut c_void, (hi - lo) as usize, prot) != 0 {
                h.mismatch.store(2, Ordering::Release);
                return;
            }
        }
        let flags = (libc::SA_SIGINFO | libc::SA_RESTART) as u64;
        if !raw::install_handler(libc::SIGTRAP, on_trap as *const () as usize, flags) {
            h.mismatch.store(3, Ordering::Release);
            return;
        }
        BIAS.store(bias, Ordering::Relaxed);
        h.bias.store(bias, Ordering::Relaxed);
        for pt in pts.iter().filter(|pt| !patched(pt)) {
            *(pt.vaddr.wrapping_add(bias) as *mut u8) = INT3;
        }
        h.installed
            .fetch_add(pts.len().max(1) as u64, Ordering::Release);
        HEADER.store(p as *mut ObserveHeader, Ordering::Release);
    }
    // The constructor runs deeper than main will: the main thread's stack
    // ends at the strings the kernel put above it (the program's name is
    // the last of them).
    // SAFETY: getauxval is async-signal-safe.
    let top = unsafe { libc::getauxval(libc::AT_EXECFN) };
    stack_begins(if top != 0 { top } else { stack_pointer() });
}

fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads the stack pointer only.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp) };
    rsp
}

/// A thread of the replay starts (the process's first from `install`):
/// it logs where its stack is, so that the supervisor can tell another
/// thread's access to it, and sets the watchpoints on the places of other
/// threads' stacks that the supervisor asked for.
pub fn thread_started() {
    stack_begins(stack_pointer());
}

/// The running thread's stack lies below `top`.
fn stack_begins(top: u64) {
    let Some(h) = header() else { return };
    if h.options & OPT_LOG != 0 {
        log(
            h,
            Access {
                key: replay::current_key(),
                flags: ACCESS_STACK,
                addr: top,
                ..Access::default()
            },
        );
    }
    if h.nwatch > 0 {
        crate::watch::arm_thread(h);
    }
}

/// Appends `a` to the log (dropped past its capacity) with this thread's
/// replay positions.
fn log(h: &ObserveHeader, a: Access) {
    let i = h.log_len.fetch_add(1, Ordering::AcqRel);
    if i < h.log_capacity {
        let (turn, last_event) = replay::positions();
        // SAFETY: `i` is below the capacity.
        unsafe {
            *log_slot(h, i) = Access {
                turn,
                last_event,
                ..a
            }
        };
    }
}

fn find_point(pts: &[AccessPoint], vaddr: u64) -> Option<usize> {
    pts.binary_search_by(|p| p.vaddr.cmp(&vaddr)).ok()
}

/// Reads `size` (at most 8) bytes at `addr` without faulting: 0 if they
/// are not mapped.
fn peek(addr: u64, size: u8) -> u64 {
    let n = (size as usize).clamp(1, 8);
    let mut v = 0u64;
    let local = libc::iovec {
        iov_base: &mut v as *mut u64 as *mut c_void,
        iov_len: n,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: n,
    };
    raw::syscall6(
        libc::SYS_process_vm_readv,
        [
            raw::getpid() as u64,
            &local as *const libc::iovec as u64,
            1,
            &remote as *const libc::iovec as u64,
            1,
            0,
        ],
    );
    v
}

/// Reads `size` (at most 8) bytes at `addr`, which the interrupted
/// instruction has just accessed (so they are mapped), byte by byte (not
/// past them, into a page that may not be).
///
/// # Safety
/// `addr..addr+size` must be readable.
unsafe fn read_now(addr: u64, size: u8) -> u64 {
    let mut v = 0u64;
    for i in 0..(size as usize).clamp(1, 8) {
        v |= (core::ptr::read_volatile((addr as *const u8).add(i)) as u64) << (8 * i);
    }
    v
}

fn effective_address(pt: &AccessPoint, g: &[i64; 23], next_ip: u64) -> u64 {
    let reg = |r: u8| -> u64 {
        match r {
            REG_NONE => 0,
            REG_RIP => next_ip,
            r if (r as usize) < 16 => g[r as usize] as u64,
            _ => 0,
        }
    };
    reg(pt.base)
        .wrapping_add(reg(pt.index).wrapping_mul(pt.scale.max(1) as u64))
        .wrapping_add(pt.disp as u64)
}

/// A local of the running thread: near (above, or in the red zone below)
/// its stack pointer.
fn is_local(addr: u64, rsp: u64) -> bool {
    addr.wrapping_add(ob::RED_ZONE) >= rsp && addr < rsp.wrapping_add(ob::STACK_WINDOW)
}

extern "C" fn on_trap(_sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    let Some(h) = header() else { return };
    // SAFETY: the kernel passes a valid siginfo and ucontext to an
    // SA_SIGINFO handler; the text is writable (made so in `install`) and
    // every address patched comes from the checked table.
    unsafe {
        let uc = &mut *(uc as *mut libc::ucontext_t);
        let g = &mut uc.uc_mcontext.gregs;
        let code = (*info).si_code;
        let saved = raw::errno();
        let step = STEP.with(|s| s.get());
        if step.pc != 0 && code == TRAP_TRACE {
            finish_step(h, step, g);
        } else if code == SI_KERNEL || code == 0 {
            let pc = (g[libc::REG_RIP as usize] as u64).wrapping_sub(1);
            begin_step(h, pc, g);
        } else if code == crate::watch::TRAP_PERF {
            watch_hit(
                h,
                (*info).si_addr() as u64,
                g[libc::REG_RIP as usize] as u64,
            );
        }
        raw::set_errno(saved);
    }
}

/// At the `int3` before an access: count it, maybe hold or preempt, then
/// arrange for the original instruction to run once under TF.
///
/// # Safety
/// `g` is the interrupted thread's saved registers; the text is writable.
unsafe fn begin_step(h: &ObserveHeader, pc: u64, g: &mut [i64; 23]) {
    let bias = BIAS.load(Ordering::Relaxed);
    let pts = points(h);
    let Some(i) = find_point(pts, pc.wrapping_sub(bias)) else {
        if *(pc as *const u8) != INT3 {
            // Another thread put the byte back meanwhile: run it.
            g[libc::REG_RIP as usize] = pc as i64;
        } else {
            // The program's own int3: what it would get without us.
            raw::install_handler(libc::SIGTRAP, libc::SIG_DFL, 0);
        }
        return;
    };
    let pt = &pts[i];
    let next_ip = pc + pt.len as u64;
    let addr = effective_address(pt, g, next_ip);
    let shared = !is_local(addr, g[libc::REG_RSP as usize] as u64) || h.is_shared_stack(addr);
    h.hits.fetch_add(1, Ordering::Relaxed);
    if shared {
        let me = replay::current_key();
        let anchor = ob::anchor_of(replay::positions().1);
        let mut held = false;
        for f in &h.flips[..(h.nflips as usize).min(ob::MAX_FLIPS)] {
            let want = match f.held_target(anchor) {
                Some(want) if f.held == me && f.held_pc == pt.vaddr => want,
                _ => continue,
            };
            let n = f.held_seen.fetch_add(1, Ordering::AcqRel) + 1;
            if n == want
                && f.state
                    .compare_exchange(
                        ob::FLIP_ARMED,
                        ob::FLIP_HOLDING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
            {
                if f.standing != 0 {
                    f.stale.store(peek(addr, pt.size), Ordering::Release);
                }
                held = true;
            } else if n > want && standing_again(f, addr, pt.size) {
                held = true;
            }
        }
        if held {
            replay::hold_for_flip();
        } else if h.options & OPT_PREEMPT != 0 {
            if replay::maybe_preempt(h.preempt_rate) {
                h.preemptions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // A write's old value, read without faulting (the instruction itself
    // may be about to fault); a read's value is read after it.
    let before = if shared && pt.flags & ACCESS_WRITE != 0 {
        peek(addr, pt.size)
    } else {
        0
    };
    *(pc as *mut u8) = pt.first_byte;
    g[libc::REG_RIP as usize] = pc as i64;
    g[libc::REG_EFL as usize] |= EFLAGS_TF;
    STEP.with(|s| {
        s.set(Step {
            pc,
            point: i,
            addr,
            before,
            shared,
        })
    });
}

/// A hardware watchpoint fired on `addr` after the instruction before
/// `next_ip`: logged for the supervisor to decode (only when the
/// instruction is the executable's; the agent's own reads go through the
/// kernel, which the watchpoints exclude).
fn watch_hit(h: &ObserveHeader, addr: u64, next_ip: u64) {
    if h.options & OPT_LOG == 0 {
        return;
    }
    log(
        h,
        Access {
            key: replay::current_key(),
            flags: ACCESS_WATCH,
            size: 8,
            pc: next_ip.wrapping_sub(BIAS.load(Ordering::Relaxed)),
            addr: addr & !7,
            // Read through the kernel: reading it here would hit again.
            after: peek(addr & !7, 8),
            ..Access::default()
        },
    );
}

/// After the one instruction: put the `int3` back, log the access, and
/// complete a flip whose second half it was.
///
/// # Safety
/// As [`begin_step`].
unsafe fn finish_step(h: &ObserveHeader, step: Step, g: &mut [i64; 23]) {
    *(step.pc as *mut u8) = INT3;
    g[libc::REG_EFL as usize] &= !EFLAGS_TF;
    STEP.with(|s| s.set(Step { pc: 0, ..step }));
    if !step.shared {
        return;
    }
    let pt = &points(h)[step.point];
    let me = replay::current_key();
    if h.options & OPT_LOG != 0 {
        // The instruction just accessed these bytes: they are mapped.
        // A watched place is read through the kernel (a read here would
        // hit the watchpoint).
        let after = if h.nwatch > 0 && h.is_shared_stack(step.addr) {
            peek(step.addr, pt.size)
        } else {
            read_now(step.addr, pt.size)
        };
        let before = if pt.flags & ACCESS_WRITE != 0 {
            step.before
        } else {
            after
        };
        log(
            h,
            Access {
                key: me,
                flags: pt.flags,
                size: pt.size,
                pc: pt.vaddr,
                addr: step.addr,
                before,
                after,
                ..Access::default()
            },
        );
    }
    let anchor = ob::anchor_of(replay::positions().1);
    for f in &h.flips[..(h.nflips as usize).min(ob::MAX_FLIPS)] {
        let target = f.until_target(anchor);
        let by_access =
            f.until == me && f.until_pc == pt.vaddr && f.until_fork == 0 && target.is_some();
        let by_write = f.until_addr != 0
            && f.held != me
            && pt.flags & ACCESS_WRITE != 0
            && step.addr <= f.until_addr
            && f.until_addr < step.addr + pt.size.max(1) as u64;
        if (by_access && f.until_addr == 0) || by_write {
            let want = match target {
                Some(k) if !by_write => k,
                _ => f.until_n,
            };
            let n = if by_write {
                want
            } else {
                f.until_seen.fetch_add(1, Ordering::AcqRel) + 1
            };
            if n == want {
                let next = if f.defer != 0 {
                    ob::FLIP_DEFERRED
                } else {
                    ob::FLIP_DONE
                };
                if f.state
                    .compare_exchange(ob::FLIP_HOLDING, next, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    if f.defer == 0 {
                        replay::hand_baton_to(f.held);
                    }
                } else if !by_write {
                    // A delay waits for the next write after the hold:
                    // earlier ones do not settle it.
                    let _ = f.state.compare_exchange(
                        ob::FLIP_ARMED,
                        ob::FLIP_ALREADY,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
            }
        }
    }
}

/// A standing delay that was satisfied: the held thread reads the same
/// place again and would see the value it was first held from — it waits
/// again for another thread's write there (a polling loop waits instead of
/// skipping another iteration).
fn standing_again(f: &ob::Flip, addr: u64, size: u8) -> bool {
    f.standing != 0
        && addr == f.until_addr
        && peek(addr, size) == f.stale.load(Ordering::Acquire)
        && f.state
            .compare_exchange(
                ob::FLIP_DONE,
                ob::FLIP_HOLDING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
}

/// The thread held by the earliest flip still holding, if any.
pub fn earliest_held() -> Option<u32> {
    let h = header()?;
    h.flips[..(h.nflips as usize).min(ob::MAX_FLIPS)]
        .iter()
        .find(|f| f.state.load(Ordering::Acquire) == ob::FLIP_HOLDING)
        .map(|f| f.held)
}

/// Called by the scheduler when nobody can run while `key` is held: the
/// flip it waits for cannot happen; it runs on.
pub fn flip_infeasible(key: u32) {
    let Some(h) = header() else { return };
    for f in &h.flips[..(h.nflips as usize).min(ob::MAX_FLIPS)] {
        if f.held == key {
            let _ = f.state.compare_exchange(
                ob::FLIP_HOLDING,
                ob::FLIP_INFEASIBLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

/// A deferred flip whose second access came: the held thread to run now
/// that the other one gives the baton away (called by the scheduler).
pub fn deferred_release() -> Option<u32> {
    let h = header()?;
    for f in &h.flips[..(h.nflips as usize).min(ob::MAX_FLIPS)] {
        if f.state
            .compare_exchange(
                ob::FLIP_DEFERRED,
                ob::FLIP_DONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            return Some(f.held);
        }
    }
    None
}

/// The parent has really forked process `child`: flips waiting for that
/// complete (their held thread runs when this one gives the baton away),
/// and the log gets a marker (what the parent's threads did before it, the
/// child sees).
pub fn forked(child: u32) {
    let Some(h) = header() else { return };
    for f in &h.flips[..(h.nflips as usize).min(ob::MAX_FLIPS)] {
        if f.until_fork == child as u64 + 1 {
            let _ = f.state.compare_exchange(
                ob::FLIP_HOLDING,
                ob::FLIP_DEFERRED,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
    if h.options & OPT_LOG != 0 {
        log(
            h,
            Access {
                key: replay::current_key(),
                flags: ob::ACCESS_FORK,
                addr: child as u64,
                ..Access::default()
            },
        );
    }
}
