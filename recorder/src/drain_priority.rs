//! The supervisor's scheduling class while it drains the ring.
//!
//! The supervisor shares the cores with the program. At the normal class,
//! each of its wake-ups (every 200 µs under a server's steady trickle of
//! events) preempts one of the program's threads on that core, in the
//! middle of a request: measured on memcached under a client's load
//! (`reprise bench record --only memcached`, 2 cores), that cost the
//! program more throughput than the draining itself. At `SCHED_IDLE` the
//! supervisor runs only when a core has nothing else to do (a server
//! waiting for its next request has plenty of such moments) and never
//! preempts the program.
//!
//! The ring is the buffer that makes this safe: events wait there until a
//! core is free. A program that keeps every core busy would starve an idle
//! drainer until its threads block on a full ring, so the drainer goes back
//! to the normal class once the ring is a quarter full, and idles again
//! when it has drained it below an eighth. Leaving `SCHED_IDLE` needs
//! `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20 (sched(7)).
//!
//! Where a probe finds that way back closed (an ordinary user), the drainer
//! lowers its own priority once, to nice [`DRAIN_NICE`], which any thread
//! may do and which needs no way back. At a tenth of a program thread's
//! weight its wake-ups seldom preempt the program (the scheduler places a
//! light task's deadline far out), yet it keeps a share of a busy core, so
//! it is never starved. Measured (`reprise bench record --only memcached`
//! by an unprivileged user, alternating builds): 1.22–1.36× at nice 10
//! against 1.39–1.71× at the normal class. An idle drainer with a guard
//! thread at the normal class, which took over when the ring filled, was
//! measured too and dropped: the guard waited up to 12 s for the trace
//! while the idle drainer, preempted in the middle of a batch, held it.

use std::io;

/// The nice value of a drainer that may not come back from `SCHED_IDLE`.
pub const DRAIN_NICE: i32 = 10;

/// The class the drainer is in, switched by how full the ring is.
pub struct DrainPriority {
    idle: bool,
    /// This process may return from `SCHED_IDLE` (probed once).
    reversible: bool,
}

impl DrainPriority {
    /// Whether a thread of this process may come back from `SCHED_IDLE`
    /// (`CAP_SYS_NICE` or `RLIMIT_NICE` 20). Probed on a thread of its own:
    /// a probe that cannot come back leaves only that thread idle.
    pub fn reversible() -> bool {
        std::thread::spawn(|| set_idle(true).is_ok() && set_idle(false).is_ok())
            .join()
            .unwrap_or(false)
    }

    /// The calling thread's priority as a drainer, given
    /// [`DrainPriority::reversible`]. A reversible one starts at the normal
    /// class (the program's first events come fast: loading, thread
    /// creation) and [`DrainPriority::adjust`] idles it; the other is
    /// lowered to nice [`DRAIN_NICE`] for good.
    pub fn start(reversible: bool) -> DrainPriority {
        if !reversible {
            // Failing leaves the normal priority: slower, not wrong.
            let _ = set_nice(DRAIN_NICE);
        }
        DrainPriority {
            idle: false,
            reversible,
        }
    }

    /// Idles while fewer than `ring_slots / 8` of the ring's slots are
    /// taken and not drained (`pending`), back to normal from a quarter.
    pub fn adjust(&mut self, pending: u64, ring_slots: u64) {
        let want_idle = if self.idle {
            pending < ring_slots / 4
        } else {
            pending < ring_slots / 8
        };
        if self.reversible && want_idle != self.idle && set_idle(want_idle).is_ok() {
            self.idle = want_idle;
        }
    }
}

/// Puts the calling thread in `SCHED_IDLE` or back in `SCHED_OTHER`.
/// Any thread may lower its own class; coming back needs `CAP_SYS_NICE`
/// or an `RLIMIT_NICE` of 20 (sched(7)), which [`DrainPriority::reversible`]
/// probes. The program, spawned before, keeps its own class.
fn set_idle(idle: bool) -> io::Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration; pid 0
    // is the calling thread; the call changes only its scheduling class.
    let r = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the calling thread's nice value (on Linux, `setpriority` with a
/// thread id changes that thread alone).
fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid(2) has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority(2) on the calling thread's own id; it changes
    // only that thread's nice value.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class() -> i32 {
        // SAFETY: pid 0 is the calling thread; the call reads its policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn idles_while_the_ring_has_room_and_returns_when_it_fills() {
        // On a thread of its own: the class is per thread.
        std::thread::spawn(|| {
            let mut p = DrainPriority::start(DrainPriority::reversible());
            if !p.reversible {
                // Without CAP_SYS_NICE or RLIMIT_NICE 20: never idles
                // (the other test checks what it does instead).
                p.adjust(10, 1024);
                assert_eq!(class(), libc::SCHED_OTHER);
                return;
            }
            p.adjust(10, 1024);
            assert_eq!(class(), libc::SCHED_IDLE);
            // Between an eighth and a quarter: stays idle.
            p.adjust(200, 1024);
            assert_eq!(class(), libc::SCHED_IDLE);
            p.adjust(300, 1024);
            assert_eq!(class(), libc::SCHED_OTHER);
            // Between the two again: stays normal until below an eighth.
            p.adjust(200, 1024);
            assert_eq!(class(), libc::SCHED_OTHER);
            p.adjust(100, 1024);
            assert_eq!(class(), libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }

    fn nice() -> i32 {
        // SAFETY: gettid(2) has no preconditions; getpriority(2) reads the
        // calling thread's nice value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn without_a_way_back_lowers_its_priority_once() {
        std::thread::spawn(|| {
            let mut p = DrainPriority::start(false);
            assert_eq!((class(), nice()), (libc::SCHED_OTHER, DRAIN_NICE));
            // However full the ring, it neither idles nor comes back.
            p.adjust(10, 1024);
            assert_eq!((class(), nice()), (libc::SCHED_OTHER, DRAIN_NICE));
            p.adjust(1000, 1024);
            assert_eq!((class(), nice()), (libc::SCHED_OTHER, DRAIN_NICE));
        })
        .join()
        .unwrap();
    }
}
