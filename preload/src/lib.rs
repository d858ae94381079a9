//! The reprise agent, preloaded (`LD_PRELOAD`) into every traced process.
//!
//! It interposes the pthread synchronisation API and logs each operation
//! into the control block shared with the supervisor ([`ctl`]); at the `sys`
//! sketch level it also traps input syscalls in-process with seccomp
//! ([`sys`]); it records how the process died ([`fatal`]).
//!
//! Rules for code in this crate: it runs inside arbitrary programs, on their
//! hot paths and in signal handlers. No allocation (except where the
//! program itself allocates: thread creation), no std locks, no panics, no
//! syscalls that the agent's own filter traps except through [`raw`].

mod ambient;
mod c11;
mod chaos;
mod ctl;
mod fatal;
mod filter;
mod func_patch;
mod hooks;
mod net;
mod observe;
mod openmp;
mod raw;
mod real;
mod replay;
mod signals;
mod sync;
mod sys;
mod threads;
mod vdso;
mod watch;

use reprise_abi::{EventKind, Level, ENV_CONTROL};

fn say(msg: &[u8]) {
    raw::syscall3(libc::SYS_write, 2, msg.as_ptr() as u64, msg.len() as u64);
}

/// The agent's start-up: attaches to the control block and installs the
/// filters and handlers. Runs once ([`ctl::start_from_constructor`]), at the
/// first call into the agent or from the constructor, whichever comes
/// first: always before the program's own constructors and `main`.
fn init() {
    let name = b"REPRISE_CONTROL\0";
    debug_assert_eq!(&name[..name.len() - 1], ENV_CONTROL.as_bytes());
    // SAFETY: getenv with a NUL-terminated name, before any thread exists.
    let path = unsafe { libc::getenv(name.as_ptr() as *const libc::c_char) };
    if path.is_null() {
        return;
    }
    // The untrapped syscall page first: in an image `exec`'d by a recorded
    // process the inherited filter traps `openat` and `fstat` (at `sys`),
    // and no SIGSYS handler is installed yet: a trap would kill it.
    let page = raw::map_syscall_page();
    if !ctl::attach(path) {
        return;
    }
    // Only a recording at `sys` answers clock calls itself (sys.rs).
    if !replay::on() && ctl::level() >= Level::Sys {
        vdso::init();
    }
    if !page {
        say(b"reprise agent: address 0x70000000 is taken; recording the sync sketch only\n");
    }
    let pid = raw::getpid();
    let Some(index) = ctl::register_process(pid, u32::MAX) else {
        say(b"reprise agent: too many processes; this one is not recorded\n");
        return;
    };
    ctl::set_process(index);
    ctl::register_thread(0);
    let parent = ctl::control()
        .and_then(|c| ctl::process_entry(c, index))
        .map(|e| e.parent.load(core::sync::atomic::Ordering::Relaxed))
        .unwrap_or(u32::MAX);
    if replay::on() {
        replay::simple(EventKind::ProcessStart);
    } else {
        ctl::log(
            ctl::Ev {
                arg0: parent as u64,
                extra: pid as u64,
                ..ctl::Ev::new(EventKind::ProcessStart, 0)
            },
            &[],
        );
    }
    fatal::install();
    // Entries first: access breakpoints then skip the patched bytes.
    if ctl::level() >= Level::Func {
        let name = b"REPRISE_FUNC_PLAN\0";
        debug_assert_eq!(
            &name[..name.len() - 1],
            reprise_abi::func_plan::ENV.as_bytes()
        );
        // SAFETY: getenv with a NUL-terminated name, before any thread exists.
        let plan = unsafe { libc::getenv(name.as_ptr() as *const libc::c_char) };
        if !plan.is_null() && func_patch::apply(plan) == func_patch::Applied::Failed {
            say(b"reprise agent: the function-entry plan does not fit this program; its entries are not recorded\n");
        }
    }
    if replay::on() {
        observe::install();
    }
    if !sys::install(ctl::level() >= Level::Sys) {
        say(b"reprise agent: seccomp is unavailable; syscalls made inside libc are not recorded\n");
    }
    chaos::start_thread(true);
}

extern "C" fn constructor() {
    ctl::start_from_constructor();
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = constructor;
