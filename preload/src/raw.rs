//! System calls that the agent's own seccomp filter lets through.
//!
//! The filter traps the recorded syscalls of the program, so the agent must
//! issue its own (including the real ones it performs on the program's
//! behalf) from one known instruction. That instruction lives on a page at a
//! fixed address, as rr's "rr page" does: after `exec`, the new image's
//! agent maps the same code at the same address, so the filters installed by
//! earlier images (seccomp filters are inherited and cannot be removed)
//! still recognise it.

use core::sync::atomic::{AtomicBool, Ordering};

/// Where the syscall page lives. Far below the usual mmap area of a
/// non-randomised x86-64 process and above typical executables.
pub const SYSCALL_PAGE: usize = reprise_abi::SYSCALL_PAGE as usize;

/// `fn(nr, a0, a1, a2, a3, a4, a5) -> i64` in the System V calling
/// convention, moving the arguments into the syscall registers.
const STUB: [u8; 26] = [
    0x48, 0x89, 0xf8, // mov rax, rdi
    0x48, 0x89, 0xf7, // mov rdi, rsi
    0x48, 0x89, 0xd6, // mov rsi, rdx
    0x48, 0x89, 0xca, // mov rdx, rcx
    0x4d, 0x89, 0xc2, // mov r10, r8
    0x4d, 0x89, 0xc8, // mov r8, r9
    0x4c, 0x8b, 0x4c, 0x24, 0x08, // mov r9, [rsp+8]
    0x0f, 0x05, // syscall
    0xc3, // ret
];

/// Address of the instruction after `syscall`: what the kernel reports as
/// the instruction pointer of a syscall made by the stub.
pub const SYSCALL_RETURN_IP: u64 = (SYSCALL_PAGE + 25) as u64;

/// `rt_sigreturn`, the restorer of the handlers the agent installs itself
/// (glibc's own restorer is not exported).
const RESTORER: [u8; 9] = [
    0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, // mov rax, 15 (rt_sigreturn)
    0x0f, 0x05, // syscall
];
pub const RESTORER_ADDR: usize = SYSCALL_PAGE + 32;

static READY: AtomicBool = AtomicBool::new(false);

type StubFn = unsafe extern "C" fn(i64, u64, u64, u64, u64, u64, u64) -> i64;

/// Maps the syscall page. Returns false if the address is taken.
pub fn map_syscall_page() -> bool {
    if READY.load(Ordering::Acquire) {
        return true;
    }
    // SAFETY: a fresh anonymous mapping at an address we then check; the
    // kernel refuses (EEXIST) rather than replace an existing mapping.
    unsafe {
        let p = mmap(
            SYSCALL_PAGE as *mut libc::c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        );
        if p as usize != SYSCALL_PAGE {
            return false;
        }
        core::ptr::copy_nonoverlapping(STUB.as_ptr(), p as *mut u8, STUB.len());
        core::ptr::copy_nonoverlapping(RESTORER.as_ptr(), (p as *mut u8).add(32), RESTORER.len());
        if libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) != 0 {
            return false;
        }
    }
    READY.store(true, Ordering::Release);
    true
}

/// A raw syscall through the untrapped stub; returns the kernel's value
/// (negative errno on failure). Falls back to libc's `syscall` before the
/// page exists (nothing is trapped then).
#[inline]
pub fn syscall6(nr: i64, a: [u64; 6]) -> i64 {
    if READY.load(Ordering::Acquire) {
        // SAFETY: the page holds `STUB`, a valid function of this type.
        unsafe {
            let f: StubFn = core::mem::transmute::<usize, StubFn>(SYSCALL_PAGE);
            f(nr, a[0], a[1], a[2], a[3], a[4], a[5])
        }
    } else {
        // SAFETY: a plain syscall; arguments are passed through unchanged.
        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if r == -1 {
            -(errno() as i64)
        } else {
            r
        }
    }
}

pub fn syscall3(nr: i64, a0: u64, a1: u64, a2: u64) -> i64 {
    syscall6(nr, [a0, a1, a2, 0, 0, 0])
}

/// Opens one of reprise's own shared files read-write and returns the fd
/// and the file's size, with untrapped syscalls: the agent's files are not
/// the program's input, and a `sys` recording traps `open` and `fstat`.
pub fn open_shared(path: *const libc::c_char) -> Option<(i32, usize)> {
    let fd = syscall6(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path as u64,
            (libc::O_RDWR | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    );
    if fd < 0 {
        return None;
    }
    // SAFETY: an all-zero `stat` is a valid value; the kernel fills it.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    if syscall3(
        libc::SYS_fstat,
        fd as u64,
        &mut st as *mut libc::stat as u64,
        0,
    ) != 0
    {
        syscall3(libc::SYS_close, fd as u64, 0, 0);
        return None;
    }
    Some((fd as i32, st.st_size as usize))
}

pub fn errno() -> i32 {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(v: i32) {
    // SAFETY: writes this thread's errno.
    unsafe { *libc::__errno_location() = v }
}

/// Converts a raw kernel result into libc's convention.
pub fn to_libc(r: i64) -> i64 {
    if (-4095..0).contains(&r) {
        set_errno(-r as i32);
        -1
    } else {
        r
    }
}

/// Installs `handler` (SA_SIGINFO) for `sig` with a raw `rt_sigaction`
/// from the syscall page: in a process that inherited the agent's filter
/// through `execve`, libc's `sigaction(SIGSYS)` would itself be trapped,
/// and kill the process, before the handler exists.
pub fn install_handler(sig: i32, handler: usize, flags: u64) -> bool {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    const SA_RESTORER: u64 = 0x0400_0000;
    if !READY.load(Ordering::Acquire) {
        return false;
    }
    let ksa = KernelSigaction {
        handler,
        flags: flags | SA_RESTORER,
        restorer: RESTORER_ADDR,
        mask: 0,
    };
    syscall6(
        libc::SYS_rt_sigaction,
        [
            sig as u64,
            &ksa as *const KernelSigaction as u64,
            0,
            8,
            0,
            0,
        ],
    ) == 0
}

/// `mmap` without going through libc's symbol, which the agent interposes
/// (recording the agent's own mappings would give the trace events before
/// the process and thread are known).
///
/// # Safety
/// As for mmap(2).
pub unsafe fn mmap(
    addr: *mut libc::c_void,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> *mut libc::c_void {
    libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) as *mut libc::c_void
}

/// `clock`'s time in ns (async-signal-safe: a plain system call).
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    syscall3(
        libc::SYS_clock_gettime,
        clock as u64,
        &mut ts as *mut libc::timespec as u64,
        0,
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps `ns` (a plain system call: async-signal-safe, not trapped).
pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    syscall3(
        libc::SYS_nanosleep,
        &ts as *const libc::timespec as u64,
        0,
        0,
    );
}

/// A kernel timer on `clock` whose expiry sends `sig` to the calling
/// thread only (`SIGEV_THREAD_ID`); its id, or None if the kernel refused.
pub fn thread_timer(clock: libc::clockid_t, sig: i32) -> Option<i32> {
    // SAFETY: an all-zero sigevent is valid; the fields set name this thread.
    let mut sev: libc::sigevent = unsafe { core::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_THREAD_ID;
    sev.sigev_signo = sig;
    sev.sigev_notify_thread_id = gettid();
    let mut id: i32 = -1;
    let rc = syscall6(
        libc::SYS_timer_create,
        [
            clock as u64,
            &sev as *const libc::sigevent as u64,
            &mut id as *mut i32 as u64,
            0,
            0,
            0,
        ],
    );
    (rc == 0).then_some(id)
}

/// Arms timer `id` to expire once, `ns` from now on its clock.
pub fn arm_timer_once(id: i32, ns: u64) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        },
    };
    syscall6(
        libc::SYS_timer_settime,
        [
            id as u64,
            0,
            &spec as *const libc::itimerspec as u64,
            0,
            0,
            0,
        ],
    );
}

pub fn gettid() -> i32 {
    syscall3(libc::SYS_gettid, 0, 0, 0) as i32
}

pub fn getpid() -> i32 {
    syscall3(libc::SYS_getpid, 0, 0, 0) as i32
}

/// Copies this process's memory from `addr` into `dst` without faulting:
/// page by page through `process_vm_readv`, stopping at the first page
/// that cannot be read. Returns the bytes copied (those before it).
pub fn copy_own(addr: u64, dst: &mut [u8]) -> usize {
    let mut copied = 0usize;
    let mut at = addr;
    while copied < dst.len() {
        let page_end = (at & !4095) + 4096;
        let n = ((page_end - at) as usize).min(dst.len() - copied);
        let local = libc::iovec {
            iov_base: dst[copied..].as_mut_ptr().cast(),
            iov_len: n,
        };
        let remote = libc::iovec {
            iov_base: at as *mut core::ffi::c_void,
            iov_len: n,
        };
        let r = syscall6(
            libc::SYS_process_vm_readv,
            [
                getpid() as u64,
                &local as *const libc::iovec as u64,
                1,
                &remote as *const libc::iovec as u64,
                1,
                0,
            ],
        );
        if r <= 0 {
            break;
        }
        copied += r as usize;
        at += r as u64;
    }
    copied
}
