//! Checkpoints of a paused replay session (see the agent's
//! `replay::checkpoint`): the paused program copied into a frozen process,
//! from which copies resume at the same event, any number of times.

use std::sync::atomic::Ordering;
use std::time::Instant;

use reprise_tracee::process::wait_blocking;

use super::*;

impl<'r> ReplaySession<'r> {
    /// Copies the paused program into a checkpoint (see the agent's
    /// `replay::checkpoint`): a frozen process that [`ReplaySession::resume`]
    /// copies again to go on from this event, any number of times.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, ReplayError> {
        let r = self.ctl.replay();
        let paused = r.paused.load(Ordering::Acquire);
        let Some((event, _)) = paused.checked_sub(1).and_then(|p| self.replay.event_at(p)) else {
            return Err(ReplayError::Checkpoint("the run is not paused".into()));
        };
        if self.ctl.pids().len() > 1 {
            return Err(ReplayError::Checkpoint(
                "the program runs several processes; only one can be copied".into(),
            ));
        }
        r.ckpt_result.store(0, Ordering::Release);
        r.ckpt_request.store(1, Ordering::Release);
        self.ctl.wake_replay();
        let asked = Instant::now();
        while r.ckpt_request.load(Ordering::Acquire) != 0 {
            if asked.elapsed() > Duration::from_secs(3) {
                r.ckpt_request.store(0, Ordering::Release);
                return Err(ReplayError::Checkpoint(
                    "the paused thread did not answer".into(),
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let result = r.ckpt_result.load(Ordering::Acquire);
        if result <= 0 {
            return Err(ReplayError::Checkpoint(
                if result == -(rp::CKPT_THREAD_OUTSIDE as i64) {
                    format!(
                    "{} of the {} other threads did not come to a stop the agent can copy (blocked outside the schedule, in the kernel)",
                    r.ckpt_others.load(Ordering::Acquire) - r.ckpt_saved.load(Ordering::Acquire).min(r.ckpt_others.load(Ordering::Acquire)),
                    r.ckpt_others.load(Ordering::Acquire)
                )
                } else {
                    format!("fork failed (errno {})", -result)
                },
            ));
        }
        Ok(Checkpoint {
            zygote: result as i32,
            event,
            next_fill: self.next,
            mailbox: r.ckpt_mailbox.load(Ordering::Acquire),
            ring_slots: self.replay.ring_slots,
        })
    }

    /// A new session going on from `checkpoint`: a copy of the frozen
    /// process, paused where the checkpoint was taken.
    pub fn resume(
        replay: &'r Replay,
        opts: &AttemptOptions,
        checkpoint: &Checkpoint,
    ) -> Result<Self, ReplayError> {
        let ctl = super::replay_control(replay, checkpoint.ring_slots)?;
        let observe = match &opts.observe {
            Some(plan) => Some(
                ObserveBlock::create(replay.stack_plan()?, plan).map_err(ReplayError::Control)?,
            ),
            None => None,
        };
        let mut mailbox = [0u8; 256];
        let paths = [Some(ctl.path()), observe.as_ref().map(|o| o.path())];
        for (i, p) in paths.iter().enumerate() {
            if let Some(p) = p {
                let b = p.as_os_str().as_bytes();
                if b.len() >= 128 {
                    return Err(ReplayError::Checkpoint(format!(
                        "{}: path too long",
                        p.display()
                    )));
                }
                mailbox[i * 128..i * 128 + b.len()].copy_from_slice(b);
            }
        }
        write_remote(checkpoint.zygote, checkpoint.mailbox, &mailbox)
            .map_err(|e| ReplayError::Checkpoint(format!("cannot reach the checkpoint: {e}")))?;
        // SAFETY: kill(2) on the zygote, a child of ours.
        unsafe { libc::kill(checkpoint.zygote, libc::SIGUSR2) };
        let asked = Instant::now();
        let r = ctl.replay();
        let pid = loop {
            let pid = r.restored_pid.load(Ordering::Acquire);
            if pid > 0 {
                break pid;
            }
            if asked.elapsed() > Duration::from_secs(3) {
                return Err(ReplayError::Checkpoint(
                    "the checkpoint did not resume".into(),
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let turn = r.turn.0.load(Ordering::Acquire);
        let stdout_copy = None;
        Ok(ReplaySession {
            replay,
            opts: opts.clone(),
            progress: (turn, cpu_ticks(pid), Instant::now()),
            polls: (r.polls.load(Ordering::Acquire), None),
            ctl,
            child: None,
            pid,
            observe,
            stdout_copy,
            next: checkpoint.next_fill,
            started: Instant::now(),
            last_cpu_check: Instant::now(),
            nudge: (u64::MAX, 0, Instant::now()),
            ending: None,
            off_sketch_since: None,
            main_status: None,
        })
    }
}

/// A paused program frozen in a process of its own (the zygote), from
/// which copies resume; killed when dropped.
pub struct Checkpoint {
    zygote: i32,
    /// The event the run is paused before.
    pub event: usize,
    /// The next event the supervisor had to put into the ring.
    next_fill: usize,
    /// Where the zygote's mailbox is.
    mailbox: u64,
    ring_slots: u64,
}

impl Checkpoint {
    /// The frozen process.
    pub fn pid(&self) -> i32 {
        self.zygote
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, then reap it.
        unsafe { libc::kill(self.zygote, libc::SIGKILL) };
        wait_blocking(self.zygote);
    }
}

/// Writes `bytes` at `addr` in process `pid`.
fn write_remote(pid: i32, addr: u64, bytes: &[u8]) -> std::io::Result<()> {
    let local = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: one local buffer we own, one remote range in the zygote.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
