//! Opens of files that the recorded run itself created concurrently.
//!
//! A `sys` trace logs a syscall when it returns. When one thread creates a
//! file (`open` with `O_CREAT`) while another opens it, the second can find
//! the file and return first, so the trace logs the open before the create.
//! A replay runs each open at its logged turn: the creator has not run yet
//! and the file is not there. The replayer marks such opens in the ring
//! ([`rp::OPEN_OF_FILE_CREATED_LATER`]) so the agent can stand in for the
//! missing file (its reads are answered from the trace anyway) instead of
//! stopping with "restore the file", which is meant for files missing from
//! the machine.

use std::collections::HashMap;

use reprise_abi::{replay as rp, EventKind};
use reprise_schema::EventRecord;

const SYS_OPEN: u64 = libc::SYS_open as u64;
const SYS_OPENAT: u64 = libc::SYS_openat as u64;

/// The open's flags: `open(path, flags, mode)` logs flags in `arg1`,
/// `openat(dirfd, path, flags, mode)` in `extra`.
fn open_flags(e: &EventRecord) -> Option<u64> {
    match (e.kind, e.object) {
        (EventKind::Syscall, SYS_OPEN) => Some(e.arg1),
        (EventKind::Syscall, SYS_OPENAT) => Some(e.extra),
        _ => None,
    }
}

/// The indices, in increasing order, of each successful open without
/// `O_CREAT` whose path another thread creates in an open logged later.
pub fn opens_of_files_created_later(events: &[EventRecord]) -> Vec<usize> {
    // Path -> a thread that creates it later in the log (the first found
    // walking backwards is enough to tell "another thread" for one creator;
    // two creators make any opener "another thread" of one of them).
    let mut creators: HashMap<Vec<u8>, Vec<(u16, u32)>> = HashMap::new();
    let mut marked = Vec::new();
    for (i, e) in events.iter().enumerate().rev() {
        let Some(flags) = open_flags(e) else { continue };
        if e.result < 0 {
            continue;
        }
        let me = (e.process, e.thread);
        if flags & libc::O_CREAT as u64 != 0 {
            let who = creators.entry(e.data.clone()).or_default();
            if !who.contains(&me) {
                who.push(me);
            }
        } else if creators
            .get(&e.data)
            .is_some_and(|who| who.iter().any(|&t| t != me))
        {
            marked.push(i);
        }
    }
    marked.reverse();
    marked
}

/// The event as the ring gets it: with [`rp::OPEN_OF_FILE_CREATED_LATER`]
/// set if it is one of `marked` (sorted), else unchanged.
pub fn ring_copy<'a>(
    i: usize,
    e: &'a EventRecord,
    marked: &[usize],
) -> std::borrow::Cow<'a, EventRecord> {
    if marked.binary_search(&i).is_ok() {
        let mut e = e.clone();
        e.extra |= rp::OPEN_OF_FILE_CREATED_LATER;
        std::borrow::Cow::Owned(e)
    } else {
        std::borrow::Cow::Borrowed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(process: u16, thread: u32, path: &str, flags: i32, result: i64) -> EventRecord {
        EventRecord {
            kind: EventKind::Syscall,
            process,
            thread,
            object: SYS_OPENAT,
            arg0: libc::AT_FDCWD as u64,
            extra: flags as u64,
            result,
            data: path.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn an_open_logged_before_another_threads_create_is_marked() {
        let evs = vec![
            open(2, 0, "/tmp/pid", libc::O_RDONLY, -2),
            open(2, 0, "/tmp/pid", libc::O_RDONLY, 3),
            open(1, 0, "/tmp/pid", libc::O_WRONLY | libc::O_CREAT, 3),
            open(1, 0, "/tmp/other", libc::O_RDONLY, 4),
        ];
        // Not a failed open, the creator itself or another path.
        let marked = opens_of_files_created_later(&evs);
        assert_eq!(marked, vec![1]);
        let ring = ring_copy(1, &evs[1], &marked);
        assert_eq!(
            ring.extra,
            libc::O_RDONLY as u64 | rp::OPEN_OF_FILE_CREATED_LATER
        );
        assert_eq!(ring_copy(2, &evs[2], &marked).extra, evs[2].extra);
    }

    #[test]
    fn the_same_threads_later_create_or_an_earlier_create_is_not_a_race() {
        let evs = vec![
            open(0, 1, "/tmp/a", libc::O_WRONLY | libc::O_CREAT, 3),
            open(0, 2, "/tmp/a", libc::O_RDONLY, 4),
            open(0, 3, "/tmp/b", libc::O_RDONLY, 5),
            open(0, 3, "/tmp/b", libc::O_RDWR | libc::O_CREAT, 5),
        ];
        assert!(opens_of_files_created_later(&evs).is_empty());
    }
}
