//! Thread and process lifetime: create, start, exit, join, fork.
//!
//! Logical thread indices are handed out by the creating thread, under the
//! `ThreadCreate` event, so the same program order gives the same indices in
//! a replay whatever the kernel's tids are.

use core::ffi::{c_int, c_void};
use core::sync::atomic::Ordering;

use libc::{pid_t, pthread_attr_t, pthread_t};
use reprise_abi::{replay as rp, EventKind as K};

use crate::ctl::{self, Ev};
use crate::raw;
use crate::real::real;
use crate::replay;

type StartFn = extern "C" fn(*mut c_void) -> *mut c_void;

/// What the trampoline needs; allocated with libc's malloc by the creator
/// (thread creation allocates anyway) and freed by the new thread.
#[repr(C)]
struct Start {
    f: StartFn,
    arg: *mut c_void,
    index: u32,
}

extern "C" fn trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the `Start` written by `pthread_create` below.
    let s = unsafe { core::ptr::read(p as *const Start) };
    // Known before anything else runs here.
    ctl::register_thread(s.index);
    crate::chaos::start_thread(false);
    crate::chaos::at_event();
    // The start event comes before the thread's first call into libc: its
    // first malloc or free sets up a per-thread cache and arena, which can
    // make syscalls of its own (glibc reads the number of CPUs once the
    // process has more arenas than 8): in a replay those must come in the
    // recorded order, after this thread started, not while it waits to.
    if replay::on() {
        replay::simple(K::ThreadStart);
        crate::observe::thread_started();
    } else {
        ctl::log(
            Ev {
                extra: raw::gettid() as u64,
                ..Ev::new(K::ThreadStart, 0)
            },
            &[],
        );
    }
    // SAFETY: allocated with malloc in `pthread_create`.
    unsafe { libc::free(p) };
    let ret = (s.f)(s.arg);
    thread_exit();
    ret
}

fn thread_exit() {
    crate::chaos::end_thread();
    if replay::on() {
        replay::thread_exit();
    } else {
        ctl::log(Ev::new(K::ThreadExit, 0), &[]);
    }
    ctl::thread_exited();
}

#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    th: *mut pthread_t,
    attr: *const pthread_attr_t,
    f: StartFn,
    arg: *mut c_void,
) -> c_int {
    let real = real!(pthread_create: fn(*mut pthread_t, *const pthread_attr_t, StartFn, *mut c_void) -> c_int);
    if !ctl::active() {
        return real(th, attr, f, arg);
    }
    let s = libc::malloc(core::mem::size_of::<Start>()) as *mut Start;
    if s.is_null() {
        return libc::EAGAIN;
    }
    let replaying = replay::on();
    let mut index = ctl::next_thread_index();
    if replaying {
        // The recorded index, so that the new thread's events are its own.
        index = replay::begin_create(K::ThreadCreate) as u32;
    }
    s.write(Start { f, arg, index });
    if !replaying {
        ctl::log(
            Ev {
                arg0: index as u64,
                ..Ev::new(K::ThreadCreate, 0)
            },
            &[],
        );
    }
    let r = real(th, attr, trampoline, s as *mut c_void);
    if replaying {
        replay::end_create((r == 0).then(|| rp::key(ctl::process(), index)));
    } else {
        crate::chaos::after_create();
    }
    if r != 0 {
        libc::free(s as *mut c_void);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn pthread_exit(ret: *mut c_void) -> ! {
    if ctl::active() {
        thread_exit();
    }
    let real = real!(pthread_exit: fn(*mut c_void) -> ());
    real(ret);
    unreachable_exit()
}

#[no_mangle]
pub unsafe extern "C" fn pthread_join(th: pthread_t, ret: *mut *mut c_void) -> c_int {
    let real = real!(pthread_join: fn(pthread_t, *mut *mut c_void) -> c_int);
    if !ctl::active() {
        return real(th, ret);
    }
    if replay::on() {
        return replay::acquire(K::ThreadJoin, th, false, || real(th, ret));
    }
    record_join(th, || real(th, ret))
}

/// A recorded join: the wait advertised (a hung program names the thread
/// it waits for), the join made, its `ThreadJoin` event logged.
fn record_join(th: pthread_t, join: impl FnOnce() -> c_int) -> c_int {
    ctl::set_waiting(th as u64, K::ThreadJoin);
    let r = join();
    ctl::clear_waiting();
    ctl::log(
        Ev {
            result: r as i64,
            ..Ev::new(K::ThreadJoin, th as u64)
        },
        &[],
    );
    r
}

/// A join that may fail without waiting for the thread (`EBUSY` from
/// `pthread_tryjoin_np`, `ETIMEDOUT` from the timed forms): the same
/// `ThreadJoin` event, with its result. A replay returns a recorded
/// failure as recorded, and a recorded success joins for real, waiting if
/// need be (the thread's exit came before in the sketch, but it may still
/// be finishing it).
fn join_or_fail(th: pthread_t, ret: *mut *mut c_void, attempt: impl FnOnce() -> c_int) -> c_int {
    if !ctl::active() {
        return attempt();
    }
    if replay::on() {
        let join = real!(pthread_join: fn(pthread_t, *mut *mut c_void) -> c_int);
        // SAFETY: the caller's thread and result pointer.
        return replay::after(K::ThreadJoin, th, false, || unsafe { join(th, ret) });
    }
    record_join(th, attempt)
}

#[no_mangle]
pub unsafe extern "C" fn pthread_tryjoin_np(th: pthread_t, ret: *mut *mut c_void) -> c_int {
    let f = real!(pthread_tryjoin_np: fn(pthread_t, *mut *mut c_void) -> c_int);
    join_or_fail(th, ret, || f(th, ret))
}

#[no_mangle]
pub unsafe extern "C" fn pthread_timedjoin_np(
    th: pthread_t,
    ret: *mut *mut c_void,
    t: *const libc::timespec,
) -> c_int {
    let f = real!(pthread_timedjoin_np:
        fn(pthread_t, *mut *mut c_void, *const libc::timespec) -> c_int);
    join_or_fail(th, ret, || f(th, ret, t))
}

#[no_mangle]
pub unsafe extern "C" fn pthread_clockjoin_np(
    th: pthread_t,
    ret: *mut *mut c_void,
    clock: libc::clockid_t,
    t: *const libc::timespec,
) -> c_int {
    let f = real!(pthread_clockjoin_np:
        fn(pthread_t, *mut *mut c_void, libc::clockid_t, *const libc::timespec) -> c_int);
    join_or_fail(th, ret, || f(th, ret, clock, t))
}

/// The child's process index is taken before the fork, under the `Fork`
/// event, and inherited through the copied memory.
#[no_mangle]
pub unsafe extern "C" fn fork() -> pid_t {
    let real = real!(fork: fn() -> pid_t);
    let Some(c) = ctl::control() else {
        return real();
    };
    let parent = ctl::process();
    let child = c.next_process.fetch_add(1, Ordering::AcqRel);
    let replaying = replay::on();
    if replaying {
        replay::begin_create(K::Fork);
        replay::before_fork();
    } else {
        ctl::log(
            Ev {
                arg0: child as u64,
                ..Ev::new(K::Fork, 0)
            },
            &[],
        );
    }
    let pid = real();
    if pid == 0 {
        let me = raw::getpid();
        if let Some(e) = ctl::process_entry(c, child) {
            e.parent.store(parent, Ordering::Relaxed);
            e.next_thread.store(1, Ordering::Relaxed);
            e.pid.store(me, Ordering::Release);
        }
        ctl::set_process(child);
        ctl::reset_thread();
        ctl::register_thread(0);
        crate::chaos::start_thread(true);
        // No PR_SET_PDEATHSIG here (the first process has one, towards
        // reprise): a daemon's child outlives its parent by design, and
        // reprise follows it. A process that outlives a killed reprise
        // ends itself at its next wait for the ring (`ctl`).
        if replaying {
            replay::forked_child();
            replay::simple(K::ProcessStart);
        } else {
            ctl::log(
                Ev {
                    arg0: parent as u64,
                    extra: me as u64,
                    ..Ev::new(K::ProcessStart, 0)
                },
                &[],
            );
        }
    } else if pid > 0 {
        if let Some(e) = ctl::process_entry(c, child) {
            e.pid.store(pid, Ordering::Release);
        }
        if replaying {
            crate::observe::forked(child);
            replay::end_create(Some(rp::key(child, 0)));
        }
    } else if replaying {
        replay::end_create(None);
    }
    pid
}

/// `exit_group` (from `exit`, `_exit`, or `main` returning): the end of
/// the process is a sketch event like any other. Recording logs it; a
/// replay holds it until every event recorded before it has happened, so
/// `main` cannot end the process while other threads still have recorded
/// work to do. A `vfork`ed child (it shares the parent's memory and
/// identity) is not the recorded process: its exit is not an event.
pub fn exit_group(code: u64) -> ! {
    let own = ctl::control()
        .and_then(|c| ctl::process_entry(c, ctl::process()))
        .is_some_and(|e| e.pid.load(Ordering::Acquire) == raw::getpid());
    if own {
        if replay::on() {
            replay::process_exit();
        } else {
            ctl::log(
                Ev {
                    result: code as i64,
                    ..Ev::new(K::ProcessExit, 0)
                },
                &[],
            );
        }
    }
    loop {
        raw::syscall3(libc::SYS_exit_group, code, 0, 0);
    }
}

fn unreachable_exit() -> ! {
    loop {
        raw::syscall3(libc::SYS_exit, 0, 0, 0);
    }
}
