//! Servers under `reprise record` and `reprise replay`: a threaded epoll
//! server recorded while a client sends it a seeded load over loopback,
//! stopped with SIGTERM as its users stop it, replays with no client (no
//! network): the same bytes sent, the same exit; a replay whose program
//! sends other bytes stops there, naming the descriptor and the byte.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{compile, run_reprise, stderr};
use reprise_abi::EventKind;
use reprise_schema::{OutcomeKind, TraceReader};

const LIMIT: Duration = Duration::from_secs(60);
const SERVER: &str = include_str!("programs/kvserver.c");
const REAPER: &str = include_str!("programs/reaper.c");
const LOCKED_LOG: &str = include_str!("programs/locked_log.c");

/// A seeded client: `connections` connections of 5 requests each, one
/// at a time; returns every response byte in order.
fn load(port: u16, connections: u32, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as u32
    };
    let mut got = Vec::new();
    for _ in 0..connections {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for _ in 0..5 {
            let key = next() % 10;
            let req = if next() % 2 == 0 {
                format!("SET k{key} v{}\n", next() % 1000)
            } else {
                format!("GET k{key}\n")
            };
            s.write_all(req.as_bytes()).unwrap();
            // One response line per request.
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while !line.ends_with(b"\r\n") {
                if s.read(&mut b).unwrap() == 0 {
                    break;
                }
                line.push(b[0]);
            }
            got.extend_from_slice(&line);
        }
    }
    got
}

/// Records the server under a client's load; returns the bytes the
/// client received.
fn record_server(root: &Path, exe: &Path, trace: &Path) -> Vec<u8> {
    let mut child = Command::new(common::reprise())
        .args([
            "record",
            "-o",
            trace.to_str().unwrap(),
            exe.to_str().unwrap(),
            "0",
        ])
        .env("REPRISE_TRACE_DIR", root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // "port N pid P"
    let words: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(words.len(), 4, "the server said: {first:?}");
    let port: u16 = words[1].parse().unwrap();
    let pid: i32 = words[3].parse().unwrap();
    let got = load(port, 20, 42);
    // Stopped as its users stop it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            assert!(st.success(), "record: {err}");
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the server did not end on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    got
}

/// The bytes the recording says the server sent, in order.
fn recorded_sends(trace: &Path) -> Vec<u8> {
    let r = TraceReader::open(trace).unwrap();
    let mut sent = Vec::new();
    for e in r.events() {
        let e = e.unwrap();
        if e.kind == EventKind::Syscall
            && (e.object == libc::SYS_sendto as u64
                || e.object == libc::SYS_write as u64 && e.arg0 > 2)
        {
            sent.extend_from_slice(&e.data);
        }
    }
    sent
}

#[test]
fn a_threaded_server_replays_its_responses_without_a_client() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exe = compile(root, "kvserver", SERVER, &["-O1", "-g"]);
    let trace = root.join("kv.trace");
    let got = record_server(root, &exe, &trace);
    assert!(got.ends_with(b"\r\n") && got.len() > 100, "{got:?}");
    let r = TraceReader::open(&trace).unwrap();
    let outcome = r.outcome().unwrap();
    assert_eq!(outcome.kind, OutcomeKind::Exited, "{}", outcome.summary);
    // What the recording says was sent is what the client received: the
    // same response lines. Not in the same order: a send is logged when
    // it returns, and the thread answering the next request (the client's
    // next line, once it read this one) can return first.
    let lines = |b: &[u8]| {
        let mut v: Vec<Vec<u8>> = b
            .split_inclusive(|&c| c == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        v.sort();
        v
    };
    assert_eq!(lines(&recorded_sends(&trace)), lines(&got));
    // Replayed with no client: the server accepts the same connections,
    // receives the same requests, sends the same bytes (compared byte for
    // byte as it sends them) and ends as recorded, after its SIGTERM
    // handler ran at its recorded place.
    for _ in 0..3 {
        let out = common::replays_as_recorded(root, &trace, &[], LIMIT);
        assert!(out.contains("connections 20 sets"), "{out}");
    }
}

#[test]
fn a_replay_that_sends_other_bytes_names_the_descriptor_and_the_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exe = compile(root, "kvserver", SERVER, &["-O1", "-g"]);
    let trace = root.join("kv.trace");
    record_server(root, &exe, &trace);
    // The same server, answering a stored value with another word.
    let changed = SERVER.replace("\"STORED\\r\\n\"", "\"SAVED!\\r\\n\"");
    assert_ne!(changed, SERVER);
    compile(root, "kvserver", &changed, &["-O1", "-g"]);
    let o = run_reprise(
        root,
        &[
            "replay",
            trace.to_str().unwrap(),
            "--jobs",
            "1",
            "--max-attempts",
            "1",
            "--no-schedule",
            "--force",
        ],
        None,
        LIMIT,
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(
        out.contains("sendto(")
            && out.contains("sends other bytes than the recording did, from byte 1"),
        "{out}"
    );
}

#[test]
fn a_supervisor_reaps_its_workers_in_the_recorded_order() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exe = compile(root, "reaper", REAPER, &["-O1", "-g"]);
    let trace = root.join("reaper.trace");
    let o = common::record(root, &trace, &exe, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    // Each worker found by the pid its fork returned, shortest sleep first.
    let reaped = "worker 1 exited with 11\nworker 2 exited with 12\nworker 0 exited with 10\n";
    assert!(printed.starts_with(reaped), "{printed}");
    // Replayed, the sleeps take no time and the workers end in any order:
    // waitpid answers as recorded, naming each worker by this run's pid.
    for _ in 0..3 {
        let out = common::replays_as_recorded(root, &trace, &[], LIMIT);
        // The same lines; the pid it prints is this run's (pids are not
        // replayed), which the comparison with the recording accepts.
        assert!(out.starts_with(reaped), "{out}");
        assert!(out.contains("supervisor pid "), "{out}");
    }
}

#[test]
fn processes_taking_turns_with_record_locks_replay_who_found_them_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exe = compile(root, "locked_log", LOCKED_LOG, &["-O1", "-g"]);
    let log = root.join("shared.log");
    let trace = root.join("locked.trace");
    let o = common::record(root, &trace, &exe, &[log.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(printed.lines().count(), 3, "{printed}");
    // Each F_SETLK got or refused as in the recording: every worker found
    // the lock busy as often as it did then. The workers print at once,
    // from three processes: the trace orders their writes by when each
    // returned, which need not be the order the pipe got them in, so each
    // worker's line is compared, not the lines' order.
    let lines = |s: &str| {
        let mut l: Vec<String> = s.lines().take(3).map(str::to_string).collect();
        l.sort();
        l
    };
    for _ in 0..3 {
        let out = common::replays_as_recorded(root, &trace, &[], LIMIT);
        assert_eq!(
            lines(&out),
            lines(&printed),
            "recorded:\n{printed}\nreplayed:\n{out}"
        );
    }
}
