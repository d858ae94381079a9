//! `reprise debug` driven through a pseudo-terminal, as a user types at
//! it: on a reproduced run of mysql_3596_procinfo (recorded until it
//! crashed, replayed once to save the reproducing schedule), every
//! command answers, moves are deterministic (the same values after going
//! back and forth), errors are one line that helps, Ctrl-C at the prompt
//! does not quit and Ctrl-D does; `-ex ... --batch` and `--json` script it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{record_until, run_reprise, stderr};
use expectrl::{ControlCode, Eof, Expect, Session};
use reprise_schema::{read_schedule, OutcomeKind};

const LIMIT: Duration = Duration::from_secs(120);
/// The longest one answer may take.
const ANSWER: Duration = Duration::from_secs(60);

/// The trace root and the reproduced trace, made once for all tests.
struct Reproduced {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    trace: PathBuf,
}

fn reproduced() -> &'static Reproduced {
    static R: OnceLock<Reproduced> = OnceLock::new();
    R.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let exe = common::compile_testbug(&root, "mysql_3596_procinfo");
        let trace = root.join("mysql");
        // A crash past the first few events: the tests list events 10-20
        // (one run in ten or so crashes before event 21).
        let crashed =
            |o: &reprise_schema::OutcomeInfo| o.kind == OutcomeKind::Signaled && o.event_count > 30;
        for _ in 0..3 {
            assert!(
                record_until(&root, &trace, &exe, &["1000", "5000"], 200, crashed),
                "mysql_3596_procinfo: no crash in 200 recorded runs"
            );
            let t = trace.to_str().unwrap();
            let args = ["replay", t, "--jobs", "1", "--max-attempts", "20"];
            let o = run_reprise(&root, &args, None, LIMIT);
            if read_schedule(&trace).ok().flatten().is_some() {
                return Reproduced {
                    _tmp: tmp,
                    root,
                    trace,
                };
            }
            eprintln!("not reproduced, recording again: {}", stderr(&o));
        }
        panic!("mysql_3596_procinfo: not reproduced from 3 crashing recordings");
    })
}

/// `reprise debug TRACE ARGS` under a pseudo-terminal, at its first prompt.
struct Repl {
    s: expectrl::session::OsSession,
}

impl Repl {
    /// The session, its opening text and the run's event count.
    fn start(args: &[&str]) -> (Repl, String, usize) {
        let r = reproduced();
        let mut cmd = Command::new(common::reprise());
        cmd.arg("debug")
            .arg(&r.trace)
            .args(args)
            .env("REPRISE_TRACE_DIR", &r.root)
            .env("XDG_STATE_HOME", r.root.join("state"))
            .env("TERM", "xterm");
        let mut s = Session::spawn(cmd).expect("spawn reprise debug in a pty");
        s.set_expect_timeout(Some(ANSWER));
        let mut repl = Repl { s };
        let opening = plain(&repl.prompt());
        let n = capture(&opening, "stopped before event 0 of ")
            .parse()
            .unwrap();
        (repl, opening, n)
    }

    /// The output up to the next prompt.
    fn prompt(&mut self) -> String {
        let c = self
            .s
            .expect("(reprise) ")
            .unwrap_or_else(|e| panic!("no prompt: {e}"));
        String::from_utf8_lossy(c.before()).into_owned()
    }

    /// Types `line`; its answer (the output up to the next prompt).
    fn cmd(&mut self, line: &str) -> String {
        self.s.send_line(line).unwrap();
        // The echo of the line itself, then the answer.
        self.s
            .expect(line)
            .unwrap_or_else(|e| panic!("{line}: no echo: {e}"));
        let out = self.prompt();
        plain(&out)
    }
}

/// `text` without carriage returns and the terminal's escape sequences
/// (ESC `[` parameters, then a letter).
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' if chars.peek() == Some(&'[') => {
                for c in chars.by_ref().skip(1) {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The number (decimal or 0x hex) right after the first `prefix` in
/// `text`, or a panic showing `text`.
fn capture(text: &str, prefix: &str) -> String {
    let v: String = text
        .find(prefix)
        .map(|at| {
            text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit() || *c == 'x')
                .collect()
        })
        .unwrap_or_default();
    assert!(!v.is_empty(), "no number after {prefix:?} in:\n{text}");
    v
}

#[test]
fn opening_info_events_info_threads_and_backtraces() {
    let (mut r, opening, n) = Repl::start(&[]);
    assert!(opening.contains("reprise: debugging"), "{opening}");
    assert!(
        opening.contains("schedule: the saved reproducing schedule (feedback seed 0x"),
        "{opening}"
    );
    assert!(
        opening.contains("the program's stdout and stderr go to"),
        "{opening}"
    );
    let ev = r.cmd("info events");
    assert!(ev.contains("=>      0  thread 0  process_start"), "{ev}");
    assert!(ev.contains("pthread_create"), "{ev}");
    let ev = r.cmd("info events 10-20");
    assert!(
        ev.contains("    10  thread ") && ev.contains("    20  thread "),
        "{ev}"
    );
    assert!(
        !ev.contains("    21  thread ") && !ev.contains("=>"),
        "{ev}"
    );

    // The last event: both workers have started, one is about to crash.
    let last = n - 1;
    let stop = r.cmd(&format!("goto {last}"));
    assert!(
        stop.contains(&format!("stopped before event {last} of {n}: thread ")),
        "{stop}"
    );
    let th = r.cmd("info threads");
    for t in ["thread 0 (tid", "thread 1 (tid", "thread 2 (tid"] {
        assert!(th.contains(t), "{th}");
    }
    assert_eq!(th.lines().filter(|l| l.starts_with('*')).count(), 1, "{th}");
    assert!(th.contains("mysql_3596_procinfo.c:"), "{th}");
    assert!(th.contains("in processlist_thread"), "{th}");

    // The thread in processlist_thread: its frames, and that frame selected.
    let (k, bt) = ["1", "2"]
        .iter()
        .map(|k| (*k, r.cmd(&format!("bt {k}"))))
        .find(|(_, bt)| bt.contains("in processlist_thread at "))
        .expect("a thread in processlist_thread");
    assert!(
        bt.contains("#0 ") && bt.contains("mysql_3596_procinfo.c:"),
        "{bt}"
    );
    assert!(bt.contains("start_thread"), "{bt}");
    let line = bt
        .lines()
        .find(|l| l.contains("in processlist_thread"))
        .unwrap();
    let frame = capture(line, "#");
    let sel = r.cmd(&format!("thread {k}"));
    assert!(sel.contains(&format!("[selected thread {k} (tid")), "{sel}");
    let bt = r.cmd("where");
    assert!(bt.contains("in processlist_thread"), "{bt}");
    let f = r.cmd(&format!("frame {frame}"));
    assert!(f.contains("in processlist_thread"), "{f}");
    // Its locals: the loop counter, and `shown` (a size_t).
    let l = r.cmd("info locals");
    assert!(
        l.contains("i = (int) ") && l.contains("shown = (size_t) "),
        "{l}"
    );
    let i = r.cmd("print i < statements");
    assert!(i.contains("i < statements = (int) 1"), "{i}");
    let bad = r.cmd("thread 9");
    assert!(bad.contains("no thread 9 in this run now"), "{bad}");
    let help = r.cmd("help");
    for c in [
        "info events",
        "info threads",
        "goto N",
        "print EXPR",
        "race",
        "quit",
    ] {
        assert!(help.contains(c), "{help}");
    }
    let h = r.cmd("help bt");
    assert!(
        h.contains("where [THREAD]") && h.contains("also: bt"),
        "{h}"
    );
}

/// `p conn` at event `n`: its query_id and proc_info.
fn conn_at(r: &mut Repl, n: usize) -> (String, String) {
    let stop = r.cmd(&format!("goto {n}"));
    assert!(
        stop.contains(&format!("stopped before event {n} of ")),
        "{stop}"
    );
    let v = r.cmd("print conn");
    assert!(v.contains("conn = (struct thd) {query_id = "), "{v}");
    (capture(&v, "query_id = "), capture(&v, "proc_info = "))
}

#[test]
fn goto_forward_backward_forward_prints_the_same_values() {
    let (mut r, _, n) = Repl::start(&[]);
    let (early_at, late_at) = (n / 4, n * 3 / 4);
    let late = conn_at(&mut r, late_at);
    let early = conn_at(&mut r, early_at);
    let id = |v: &(String, String)| v.0.parse::<u64>().unwrap();
    assert!(
        id(&early) <= id(&late),
        "query_id at event {early_at} ({}) above event {late_at}'s ({})",
        early.0,
        late.0
    );
    assert_eq!(conn_at(&mut r, late_at), late, "event {late_at} again");
    assert_eq!(conn_at(&mut r, early_at), early, "event {early_at} again");
    // A field in arithmetic, a comparison through & and ->.
    let q = r.cmd("print conn.query_id + 1");
    assert!(q.contains("conn.query_id + 1 = (long) "), "{q}");
    assert_eq!(
        capture(&q, "(long) ").parse::<u64>().unwrap(),
        id(&early) + 1
    );
    let p = r.cmd("p (&conn)->query_id == conn.query_id && statements > 0");
    assert!(p.trim_end().ends_with(") 1"), "{p}");
    let s = r.cmd("p statements");
    assert!(s.contains("statements = (int) 1000"), "{s}");
}

#[test]
fn next_and_next_thread() {
    let (mut r, _, n) = Repl::start(&[]);
    let mid = n / 2;
    r.cmd(&format!("goto {mid}"));
    let out = r.cmd("next");
    assert!(
        out.contains(&format!("stopped before event {} of ", mid + 1)),
        "{out}"
    );
    // An empty line repeats the move.
    let out = r.cmd("");
    assert!(
        out.contains(&format!("stopped before event {} of ", mid + 2)),
        "{out}"
    );
    let th = r.cmd("info threads");
    let (k, next) = ["1", "2"]
        .iter()
        .find_map(|k| {
            let line = th
                .lines()
                .find(|l| l.contains(&format!("thread {k} (tid")))?;
            line.contains("next: event ")
                .then(|| (*k, capture(line, "next: event ").parse::<usize>().unwrap()))
        })
        .unwrap_or_else(|| panic!("no worker with a next event:\n{th}"));
    let out = r.cmd(&format!("next {k}"));
    assert!(
        out.contains(&format!("stopped before event {} of ", next + 1)),
        "thread {k}'s next event was {next}: {out}"
    );
}

#[test]
fn continue_to_the_recorded_failure_then_run_again() {
    let (mut r, _, n) = Repl::start(&[]);
    let end = r.cmd("continue");
    assert!(
        end.contains("the program ended: killed by SIGSEGV")
            && end.contains("(the recorded failure)"),
        "{end}"
    );
    let e = r.cmd("info threads");
    assert!(
        e.contains("the program has ended: `run` starts it again"),
        "{e}"
    );
    let e = r.cmd("print conn");
    assert!(e.contains("the program has ended"), "{e}");
    let e = r.cmd("next");
    assert!(e.contains("the program has ended"), "{e}");
    let start = r.cmd("run");
    assert!(
        start.contains(&format!("stopped before event 0 of {n}")),
        "{start}"
    );
    let back = r.cmd(&format!("goto {}", n / 2));
    assert!(
        back.contains(&format!("stopped before event {} of ", n / 2)),
        "{back}"
    );
    let race = r.cmd("race");
    assert!(race.contains("race 1 on conn.proc_info"), "{race}");
    assert!(race.contains("mysql_3596_procinfo.c:"), "{race}");
}

#[test]
fn errors_are_one_helpful_line() {
    let (mut r, _, _) = Repl::start(&[]);
    let e = r.cmd("contineu");
    assert!(
        e.contains("unknown command \"contineu\"; did you mean \"continue\"? (help lists them)"),
        "{e}"
    );
    let e = r.cmd("print conn..query_id");
    assert!(
        e.contains("bad expression \"conn..query_id\": column 6:"),
        "{e}"
    );
    let e = r.cmd("print nosuch");
    assert!(
        e.contains("no variable \"nosuch\" here; in scope:") && e.contains("conn"),
        "{e}"
    );
    let e = r.cmd("goto x");
    assert!(e.contains("\"x\" is not an event number"), "{e}");
    let e = r.cmd("goto 99999999");
    assert!(e.contains("past the end"), "{e}");
    let e = r.cmd("info");
    assert!(
        e.contains("\"info\" needs one of: info events, info threads"),
        "{e}"
    );
    // Still at the prompt, still working.
    let ok = r.cmd("p statements");
    assert!(ok.contains("statements = (int) "), "{ok}");
}

#[test]
fn ctrl_c_at_the_prompt_does_not_quit_and_ctrl_d_does() {
    let (mut r, _, _) = Repl::start(&[]);
    r.s.send("goto 12").unwrap();
    r.s.send(ControlCode::EndOfText).unwrap();
    r.prompt();
    let stop = r.cmd("next");
    assert!(
        stop.contains("stopped before event 1 of "),
        "the interrupted line ran: {stop}"
    );
    r.s.send(ControlCode::EndOfTransmission).unwrap();
    r.s.expect(Eof).expect("reprise debug ends at Ctrl-D");
    let status = r.s.get_process().wait().unwrap();
    assert!(
        matches!(status, expectrl::process::unix::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
}

#[test]
fn tab_completes_command_names() {
    let (mut r, _, _) = Repl::start(&[]);
    r.s.send("info th\t").unwrap();
    r.s.expect("reads ").expect("completed to `info threads `");
    r.s.send("\r").unwrap();
    let out = r.prompt();
    assert!(out.contains("thread 0 (tid"), "{out}");
}

fn debug_batch(args: &[&str]) -> std::process::Output {
    let r = reproduced();
    let mut a = vec!["debug", r.trace.to_str().unwrap()];
    a.extend_from_slice(args);
    run_reprise(&r.root, &a, None, LIMIT)
}

#[test]
fn ex_commands_in_batch_mode() {
    let o = debug_batch(&[
        "-ex",
        "goto 20",
        "--ex",
        "print conn.query_id",
        "-ex",
        "info events 19-21",
        "--batch",
        "--no-program-output",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("stopped before event 20 of "), "{out}");
    assert!(out.contains("conn.query_id = (long) "), "{out}");
    assert!(out.contains("=>     20  thread "), "{out}");
    assert!(!out.contains("the program's stdout"), "{out}");
    // A failing command: its line on stderr, exit status 1.
    let o = debug_batch(&["-ex", "contineu", "--batch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("did you mean \"continue\""),
        "{}",
        stderr(&o)
    );
    // Commands from a pipe, no prompt.
    let r = reproduced();
    let t = r.trace.to_str().unwrap();
    let o = run_reprise(&r.root, &["debug", t], Some(b"goto 5\nquit\n"), LIMIT);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("stopped before event 5 of ") && !out.contains("(reprise)"),
        "{out}"
    );
}

#[test]
fn json_is_one_object_per_answer() {
    let o = debug_batch(&[
        "--json",
        "-ex",
        "goto 20",
        "-ex",
        "print conn",
        "-ex",
        "info threads",
        "-ex",
        "nosuch",
        "-ex",
        "continue",
        "--batch",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(objects.len(), 6, "{out}");
    assert_eq!(objects[0]["reproducing"], true);
    assert_eq!(objects[0]["stopped"]["event"], 0);
    assert_eq!(objects[1]["command"], "goto 20");
    assert_eq!(objects[1]["stopped"]["event"], 20);
    assert_eq!(objects[2]["type"], "struct thd");
    assert!(
        objects[3]["threads"]
            .as_array()
            .is_some_and(|t| t.len() >= 2),
        "{out}"
    );
    assert!(objects[4]["error"]
        .as_str()
        .unwrap()
        .contains("unknown command"));
    assert_eq!(objects[5]["as_recorded"], true, "{out}");
}

#[test]
fn checkpoint_restart_and_info_checkpoints() {
    let (mut r, _, n) = Repl::start(&[]);
    let mid = n / 2;
    let at_mid = conn_at(&mut r, mid);
    let c = r.cmd("checkpoint");
    assert!(
        c.contains(&format!("checkpoint 1: before event {mid}")),
        "{c}"
    );
    let l = r.cmd("info checkpoints");
    assert!(
        l.contains(&format!("checkpoint 1: before event {mid}")),
        "{l}"
    );
    let end = r.cmd("continue");
    assert!(end.contains("(the recorded failure)"), "{end}");
    // Back from the end, then forward and back again: the same values.
    let back = r.cmd("restart 1");
    assert!(
        back.contains(&format!("stopped before event {mid} of ")),
        "{back}"
    );
    let v = r.cmd("print conn");
    assert!(v.contains(&format!("query_id = {},", at_mid.0)), "{v}");
    r.cmd(&format!("goto {}", n - 1));
    assert_eq!(
        conn_at(&mut r, mid),
        at_mid,
        "goto {mid} past the checkpoint"
    );
    let e = r.cmd("restart 9");
    assert!(e.contains("no checkpoint 9"), "{e}");
    let d = r.cmd("delete checkpoint 1");
    assert!(d.contains("checkpoint 1 deleted"), "{d}");
    let l = r.cmd("info checkpoints");
    assert!(l.contains("no checkpoints"), "{l}");
}

/// Seeks served by checkpoints show what a replay from the start shows,
/// at every event tried, no copy is dropped (no "could not be resumed"
/// note), and a copy runs on to the recorded failure.
#[test]
fn checkpoints_give_the_state_a_replay_from_the_start_gives() {
    let (mut fresh, _, n) = Repl::start(&[]);
    let (mut r, _, _) = Repl::start(&[]);
    let marks = [n / 5, n / 2, 4 * n / 5];
    for m in marks {
        r.cmd(&format!("goto {m}"));
        let c = r.cmd("checkpoint");
        assert!(c.contains(&format!("before event {m}")), "{c}");
    }
    // Backward and forward over the checkpoints, in a scrambled order.
    let probes: Vec<usize> = (0..12).map(|i| (i * 7919 + 13) % (n - 1)).collect();
    for &p in &probes {
        let moved = r.cmd(&format!("goto {p}"));
        assert!(!moved.contains("could not be resumed"), "goto {p}: {moved}");
        let want = conn_at(&mut fresh, p);
        let got = r.cmd("print conn");
        assert!(
            got.contains(&format!("query_id = {},", want.0)),
            "event {p}: {got} (a replay from the start: {want:?})"
        );
    }
    let l = r.cmd("info checkpoints");
    for m in marks {
        assert!(l.contains(&format!("before event {m}")), "{l}");
    }
    let back = r.cmd("restart 2");
    assert!(!back.contains("could not be resumed"), "{back}");
    let end = r.cmd("continue");
    assert!(end.contains("(the recorded failure)"), "{end}");
}

/// `race` on a run whose failure needs a race with an object on a
/// thread's stack (glibc_12674_sem_on_stack: the client destroys the
/// semaphore on its stack while the worker's post still reads it): the
/// debugger's one observed replay finds the place, observes again, and
/// names the owner's write through its stack pointer, with its value.
#[test]
fn race_names_a_write_through_the_owners_stack_pointer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exe = common::compile_testbug(root, "glibc_12674_sem_on_stack");
    let trace = root.join("sem");
    let failed = |o: &reprise_schema::OutcomeInfo| o.kind == OutcomeKind::Assertion;
    let mut answer = String::new();
    for _ in 0..3 {
        assert!(
            record_until(root, &trace, &exe, &["20", "10000000"], 20, failed),
            "glibc_12674_sem_on_stack: no failure in 20 recorded runs"
        );
        let t = trace.to_str().unwrap();
        let args = ["replay", t, "--jobs", "1", "--max-attempts", "10"];
        run_reprise(root, &args, None, LIMIT);
        if read_schedule(&trace).ok().flatten().is_none() {
            continue;
        }
        let o = run_reprise(
            root,
            &["debug", t, "--no-program-output", "-ex", "race", "--batch"],
            None,
            LIMIT,
        );
        answer = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
        break;
    }
    assert!(answer.contains("on the stack of thread 0"), "{answer}");
    assert!(
        answer.contains("thread 0 writes at glibc_12674_sem_on_stack.c:107 in call"),
        "{answer}"
    );
    assert!(answer.contains("[rsp+"), "{answer}");
    assert!(answer.contains("thread 0 wrote 57005"), "{answer}");
}
