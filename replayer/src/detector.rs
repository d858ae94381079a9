//! The failure detector: whether an attempt's outcome is the recorded
//! failure again (same kind, same place), and whether a recorded run
//! failed at all.

use reprise_schema::{OutcomeInfo, OutcomeKind};

/// The failing frame of a crash: the first named frame in the program's
/// own code (libc's and the agent's frames above it may differ between
/// runs: the agent emulates some calls), else the first named frame.
fn place(o: &OutcomeInfo) -> Option<&str> {
    let named = |f: &&reprise_schema::Frame| !f.function.is_empty();
    let shared = |f: &reprise_schema::Frame| {
        let m = f.module.to_string_lossy();
        m.ends_with(".so") || m.contains(".so.")
    };
    o.backtrace
        .iter()
        .filter(named)
        .find(|f| !shared(f))
        .or_else(|| o.backtrace.iter().find(named))
        .map(|f| f.function.as_str())
}

/// True if `got` is the recorded failure again: same kind and same place
/// (signal and faulting function or pc; assertion text; the locks of a
/// deadlock's cycle; exit code).
pub fn matches(recorded: &OutcomeInfo, got: &OutcomeInfo) -> bool {
    if recorded.kind != got.kind {
        return false;
    }
    match recorded.kind {
        OutcomeKind::Exited => recorded.exit_code == got.exit_code,
        OutcomeKind::Signaled => {
            recorded.signal == got.signal
                && match (place(recorded), place(got)) {
                    (Some(a), Some(b)) => a == b,
                    _ => recorded.pc == got.pc,
                }
        }
        OutcomeKind::Assertion => recorded.assertion == got.assertion,
        OutcomeKind::Deadlock => {
            let mut a = recorded.cycle.clone();
            let mut b = got.cycle.clone();
            a.sort_unstable();
            b.sort_unstable();
            a == b
        }
        OutcomeKind::Hang | OutcomeKind::Interrupted | OutcomeKind::Unknown => true,
        // The same line wrong (a lost update loses another amount).
        OutcomeKind::WrongOutput => recorded.output_line == got.output_line,
    }
}

/// True if the recorded run failed (anything but a clean exit).
pub fn is_failure(o: &OutcomeInfo) -> bool {
    !(o.kind == OutcomeKind::Exited && o.exit_code == 0)
}
#[cfg(test)]
mod tests {
    use super::*;
    use reprise_schema::Frame;

    fn frame(function: &str) -> Frame {
        Frame {
            function: function.into(),
            ..Frame::default()
        }
    }

    #[test]
    fn matches_compares_kind_and_place() {
        let exit = |code| OutcomeInfo {
            kind: OutcomeKind::Exited,
            exit_code: code,
            ..OutcomeInfo::default()
        };
        assert!(matches(&exit(2), &exit(2)));
        assert!(!matches(&exit(2), &exit(0)));

        let segv = |f: &str, pc| OutcomeInfo {
            kind: OutcomeKind::Signaled,
            signal: libc::SIGSEGV,
            pc,
            backtrace: vec![frame(""), frame(f)],
            ..OutcomeInfo::default()
        };
        assert!(matches(&segv("a", 1), &segv("a", 2)));
        assert!(!matches(&segv("a", 1), &segv("b", 1)));
        // A libc frame on top does not hide the program's frame.
        let mut libc_top = segv("a", 1);
        libc_top.backtrace.insert(
            0,
            Frame {
                function: "___pthread_mutex_trylock".into(),
                module: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                ..Frame::default()
            },
        );
        assert!(matches(&libc_top, &segv("a", 2)));
        let mut abrt = segv("a", 1);
        abrt.signal = libc::SIGABRT;
        assert!(!matches(&segv("a", 1), &abrt));
        // Without symbols, the pc decides.
        let bare = |pc| OutcomeInfo {
            backtrace: Vec::new(),
            ..segv("", pc)
        };
        assert!(matches(&bare(5), &bare(5)));
        assert!(!matches(&bare(5), &bare(6)));

        let assertion = |t: &str| OutcomeInfo {
            kind: OutcomeKind::Assertion,
            assertion: t.into(),
            ..OutcomeInfo::default()
        };
        assert!(matches(&assertion("x"), &assertion("x")));
        assert!(!matches(&assertion("x"), &assertion("y")));
        assert!(!matches(&assertion("x"), &exit(134)));

        let deadlock = |cycle: Vec<u64>| OutcomeInfo {
            kind: OutcomeKind::Deadlock,
            cycle,
            ..OutcomeInfo::default()
        };
        assert!(matches(&deadlock(vec![1, 2]), &deadlock(vec![2, 1])));
        assert!(!matches(&deadlock(vec![1, 2]), &deadlock(vec![1, 3])));

        // A wrong output is the same line wrong, whatever it printed there.
        let wrong = |line| OutcomeInfo {
            kind: OutcomeKind::WrongOutput,
            output_line: line,
            ..OutcomeInfo::default()
        };
        assert!(matches(&wrong(2), &wrong(2)));
        assert!(!matches(&wrong(2), &wrong(1)));
        assert!(!matches(&wrong(1), &exit(0)));
    }
}
