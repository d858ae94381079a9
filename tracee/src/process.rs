//! Small facts about a child process: whether it ended, how much CPU it
//! used. Shared by the record session and replay attempts.

/// The wait status of our child `pid` if it has ended (0 if it cannot be
/// waited for any more).
pub fn try_wait(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        Some(status)
    } else if r < 0 {
        Some(0)
    } else {
        None
    }
}

/// Waits for our child `pid` to end; its wait status.
pub fn wait_blocking(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// Makes this process the reaper of its orphaned descendants: a program's
/// process whose parent exits (a daemon) stays ours, to follow and reap.
pub fn become_subreaper() {
    // SAFETY: prctl(2) with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Reaps those of `pids` that are our children (orphans we adopted as
/// subreaper) and have ended. Never `waitpid(-1)`: parallel attempts are
/// children of the same process.
pub fn reap_ended(pids: &[i32]) {
    for &p in pids {
        let mut status = 0;
        // SAFETY: waitpid(2) with a valid status pointer, never blocking;
        // a pid that is not our child gives ECHILD.
        unsafe { libc::waitpid(p, &mut status, libc::WNOHANG | libc::__WALL) };
    }
}

/// User + system CPU clock ticks of a process, all its threads (0 if it
/// is gone).
pub fn cpu_ticks(pid: i32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_child_uses_cpu_and_is_waited_for() {
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert_eq!(try_wait(pid), None);
        let status = wait_blocking(pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(cpu_ticks(pid), 0, "a reaped process has no /proc entry");
    }
}

/// True if process `pid` has exited (gone, or a zombie not yet reaped).
pub fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| matches!(state, 'Z' | 'X' | 'x')),
    }
}

/// Sends signal `sig` to thread `tid` of process `pid`; false if it is
/// gone.
pub fn signal_thread(pid: i32, tid: i32, sig: i32) -> bool {
    // SAFETY: tgkill(2) with integer arguments only; it fails (ESRCH)
    // rather than signalling another process if `tid` is not in `pid`.
    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) == 0 }
}
