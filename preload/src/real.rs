//! Finding the real libc functions behind the ones the agent interposes.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Looks `name` (NUL-terminated) up in the libraries after the agent, at
/// `version` if given (glibc keeps old `pthread_cond_*` versions, and plain
/// `dlsym` may return them). Aborts if the symbol is missing: the agent
/// cannot run the program without it.
pub fn resolve(cache: &AtomicUsize, name: &[u8], version: Option<&[u8]>) -> usize {
    let p = cache.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: `name` and `version` are NUL-terminated literals.
    let f = unsafe {
        match version {
            Some(v) => libc::dlvsym(
                libc::RTLD_NEXT,
                name.as_ptr() as *const libc::c_char,
                v.as_ptr() as *const libc::c_char,
            ),
            None => libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const libc::c_char),
        }
    } as usize;
    if f == 0 {
        let msg = b"reprise agent: a libc function it interposes is missing\n";
        crate::raw::syscall3(libc::SYS_write, 2, msg.as_ptr() as u64, msg.len() as u64);
        // SAFETY: abort never returns.
        unsafe { libc::abort() };
    }
    cache.store(f, Ordering::Relaxed);
    f
}

/// `real!(name: fn(A, B) -> R)` evaluates to the next definition of `name`
/// as a function pointer of that type.
macro_rules! real {
    ($name:ident : fn($($t:ty),*) -> $r:ty) => {
        real!(@ $name, None, fn($($t),*) -> $r)
    };
    ($name:ident @ $ver:literal : fn($($t:ty),*) -> $r:ty) => {
        real!(@ $name, Some(concat!($ver, "\0").as_bytes()), fn($($t),*) -> $r)
    };
    (@ $name:ident, $ver:expr, fn($($t:ty),*) -> $r:ty) => {{
        static CACHE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        let p = $crate::real::resolve(&CACHE, concat!(stringify!($name), "\0").as_bytes(), $ver);
        // SAFETY: `p` is the address of the libc function of this name,
        // whose C signature is the one written at the call site.
        unsafe { core::mem::transmute::<usize, unsafe extern "C" fn($($t),*) -> $r>(p) }
    }};
}
pub(crate) use real;
