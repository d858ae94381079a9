//! The hooks an instrumented program calls: function entries
//! (`-finstrument-functions`, the `func` sketch) and basic blocks
//! (`-fsanitize-coverage=trace-pc`, the `bb` sketch).
//!
//! Recording, each entry is one event in the global order (a `bb-N`
//! sketch logs every N-th block of a thread). Replaying, the thread waits
//! at each one until it is next in the recorded order, and an entry at
//! another address than recorded is a divergence right there, nearer the
//! race than the next synchronisation event.
//!
//! Hooks are off while the agent runs program code on the program's behalf
//! (a `pthread_once` initialiser, a signal handler): the operation around
//! it is one event, logged before or after it, and what runs inside is not
//! ordered the same way in record and replay.

use core::cell::Cell;
use core::ffi::c_void;

use reprise_abi::{ControlHeader, EventKind, Level};

use crate::{ctl, replay};

thread_local! {
    /// Blocks this thread entered (for `bb-N`).
    static BLOCKS: Cell<u64> = const { Cell::new(0) };
    /// Nesting of agent calls that run program code.
    static OFF: Cell<u32> = const { Cell::new(0) };
}

/// Turns this thread's hooks off until the guard is dropped.
pub struct Off;

impl Off {
    pub fn enter() -> Off {
        OFF.with(|o| o.set(o.get() + 1));
        Off
    }
}

impl Drop for Off {
    fn drop(&mut self) {
        OFF.with(|o| o.set(o.get().saturating_sub(1)));
    }
}

/// The control block of a process that records or replays at `func` or
/// above, if this thread's hooks should act.
#[inline(always)]
fn on() -> Option<&'static ControlHeader> {
    let c = ctl::control()?;
    if c.level < Level::Func as u32 || OFF.with(|o| o.get()) != 0 {
        return None;
    }
    Some(c)
}

fn enter(kind: EventKind, object: u64, arg0: u64) {
    if replay::on() {
        replay::program_point(kind, object);
    } else {
        ctl::log(
            ctl::Ev {
                arg0,
                ..ctl::Ev::new(kind, object)
            },
            &[],
        );
    }
}

/// Function `entry` entered, called from `site`: by the compiler's hook
/// or by a patched entry (`func_patch`).
pub fn function_entered(entry: u64, site: u64) {
    if on().is_some() {
        enter(EventKind::FuncEntry, entry, site);
    }
}

/// Called by `-finstrument-functions` code at each function entry.
#[no_mangle]
pub extern "C" fn __cyg_profile_func_enter(func: *mut c_void, site: *mut c_void) {
    function_entered(func as u64, site as u64);
}

/// Called at each function exit: not part of any sketch.
#[no_mangle]
pub extern "C" fn __cyg_profile_func_exit(_func: *mut c_void, _site: *mut c_void) {}

/// A block entered at `pc` (the instrumentation's call in it).
extern "C" fn block(pc: u64) {
    let Some(c) = on().filter(|c| c.level >= Level::Bb as u32) else {
        return;
    };
    let period = c.block_period.max(1) as u64;
    let n = BLOCKS.with(|b| {
        let n = b.get() + 1;
        b.set(n);
        n
    });
    if n.is_multiple_of(period) {
        enter(EventKind::Block, pc, 0);
    }
}

/// Called by `-fsanitize-coverage=trace-pc` code at each basic block; the
/// block is identified by the return address of this call.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn __sanitizer_cov_trace_pc() {
    // The return address is the first argument of `block`; a tail jump
    // keeps the stack as the caller left it.
    core::arch::naked_asm!("mov rdi, [rsp]", "jmp {b}", b = sym block);
}
