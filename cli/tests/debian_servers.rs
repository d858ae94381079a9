//! Real servers from Debian's packages (installed by scripts/setup.sh),
//! driven as their users drive them: each is recorded while a seeded
//! client sends it requests over loopback, stopped with SIGTERM, and its
//! trace replays with no client and no network — the same responses, byte
//! for byte (the replay compares every byte sent), and the same exit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reprise_abi::EventKind;
use reprise_schema::{OutcomeKind, TraceReader};

const LIMIT: Duration = Duration::from_secs(120);

fn need(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: scripts/setup.sh installs it (memcached, nginx, redis-server)"
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `reprise record -o TRACE ARGS...`, running.
fn start_recording(root: &Path, trace: &Path, args: &[&str]) -> Child {
    Command::new(common::reprise())
        .args(["record", "-o", trace.to_str().unwrap()])
        .args(args)
        .env("REPRISE_TRACE_DIR", root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Connects once the server listens (it starts under the recorder).
fn connect(port: u16) -> TcpStream {
    let started = Instant::now();
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            return s;
        }
        assert!(started.elapsed() < LIMIT, "the server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The recorded program's pid: the recorder's child.
fn server_pid(recorder: &Child) -> i32 {
    let p = recorder.id();
    let path = format!("/proc/{p}/task/{p}/children");
    let text = std::fs::read_to_string(&path).unwrap();
    text.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no child in {path}"))
        .parse()
        .unwrap()
}

/// SIGTERM to `pid`, then the recording must end with the server's exit.
fn stop(mut recorder: Child, pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = Instant::now();
    loop {
        if let Some(st) = recorder.try_wait().unwrap() {
            let mut err = String::new();
            let _ = recorder.stderr.take().unwrap().read_to_string(&mut err);
            assert!(st.success(), "record: {err}");
            return;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the server did not end on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the trace says the server sent to its clients: the bytes of every
/// send on a socket that is not one of its own pairs (a send's data
/// continues in the `DataMore` events after it), connection by
/// connection in the order they were accepted. (Across threads the trace's
/// order is the order the sends were logged, after the kernel took them:
/// a worker's last response to one connection can be logged after
/// another worker's first response to the next.)
fn recorded_sends(trace: &Path) -> Vec<u8> {
    let r = TraceReader::open(trace).unwrap();
    let mut internal = std::collections::HashSet::new();
    // Each connection's bytes, in accept order; a descriptor's current one.
    let mut streams: Vec<Vec<u8>> = Vec::new();
    let mut stream_of: std::collections::HashMap<(u16, u64), usize> =
        std::collections::HashMap::new();
    // The thread whose send's data continues in `DataMore` events.
    let mut sending: Option<(u16, u32, usize)> = None;
    for e in r.events() {
        let e = e.unwrap();
        if e.kind == EventKind::DataMore {
            if let Some((p, t, k)) = sending {
                if (p, t) == (e.process, e.thread) {
                    streams[k].extend_from_slice(&e.data);
                }
            }
            continue;
        }
        if sending.is_some_and(|(p, t, _)| (p, t) == (e.process, e.thread)) {
            sending = None;
        }
        if e.kind != EventKind::Syscall {
            continue;
        }
        let nr = e.object as i64;
        // A process's own pairs, until the number is a connection again.
        if nr == libc::SYS_socketpair && e.data.len() >= 8 {
            for k in [0, 4] {
                let fd = i32::from_le_bytes(e.data[k..k + 4].try_into().unwrap()) as u64;
                internal.insert((e.process, fd));
            }
        }
        if (nr == libc::SYS_accept4 || nr == libc::SYS_accept) && e.result >= 0 {
            let fd = (e.process, e.result as u64);
            internal.remove(&fd);
            streams.push(Vec::new());
            stream_of.insert(fd, streams.len() - 1);
        }
        let sends = [
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_write,
            libc::SYS_writev,
        ];
        let fd = (e.process, e.arg0);
        if sends.contains(&nr) && e.arg0 > 2 && !internal.contains(&fd) {
            let k = *stream_of.entry(fd).or_insert_with(|| {
                streams.push(Vec::new());
                streams.len() - 1
            });
            streams[k].extend_from_slice(&e.data);
            sending = Some((e.process, e.thread, k));
        }
    }
    streams.concat()
}

/// Replays `trace` once with no client: it must end as recorded.
fn replays(root: &Path, trace: &Path) {
    common::replays_as_recorded(root, trace, &["--no-program-output"], LIMIT);
}

/// Like [`replays`], within three attempts: redis's allocator (jemalloc)
/// has its background thread read the arenas' page counters without a
/// lock, so a run recorded on a loaded machine can need another schedule
/// of what the sketch does not order (measured: about 1 in 8 such
/// recordings diverge in attempt 1 at that thread's `clock_gettime`).
fn replays_within_three(root: &Path, trace: &Path) {
    common::replays_within(root, trace, &["--no-program-output"], 3, LIMIT);
}

fn exited_cleanly(trace: &Path) {
    let r = TraceReader::open(trace).unwrap();
    let o = r.outcome().unwrap();
    assert_eq!(o.kind, OutcomeKind::Exited, "{}", o.summary);
}

/// A seeded stream of numbers.
fn seeded(seed: u64) -> impl FnMut() -> u32 {
    let mut x = seed;
    move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as u32
    }
}

#[test]
fn memcached_with_four_threads_replays_its_responses() {
    let exe = need("/usr/bin/memcached");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let trace = root.join("memcached.trace");
    let port = free_port().to_string();
    let rec = start_recording(
        root,
        &trace,
        &[
            exe.to_str().unwrap(),
            "-t",
            "4",
            "-p",
            &port,
            "-U",
            "0",
            "-l",
            "127.0.0.1",
            "-u",
            "root",
        ],
    );
    let port: u16 = port.parse().unwrap();
    let mut next = seeded(11);
    let mut got = Vec::new();
    for _ in 0..20 {
        let s = connect(port);
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        for _ in 0..10 {
            let key = next() % 20;
            if next() % 2 == 0 {
                let v = format!("v{}", next() % 1000);
                write!(w, "set k{key} 0 0 {}\r\n{v}\r\n", v.len()).unwrap();
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.extend_from_slice(line.as_bytes());
            } else {
                write!(w, "get k{key}\r\n").unwrap();
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    got.extend_from_slice(line.as_bytes());
                    if line == "END\r\n" || line.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    let pid = server_pid(&rec);
    stop(rec, pid);
    exited_cleanly(&trace);
    assert_eq!(recorded_sends(&trace), got);
    replays(root, &trace);
}

#[test]
fn nginx_with_worker_processes_replays_its_responses() {
    nginx_records_and_replays(false);
}

/// nginx as installed runs: it daemonises (forks, and the process reprise
/// started exits) and its master and workers are followed to the end.
#[test]
fn a_daemonising_nginx_is_followed_and_replays() {
    nginx_records_and_replays(true);
}

fn nginx_records_and_replays(daemon: bool) {
    let exe = need("/usr/sbin/nginx");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.join("nginx");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let port = free_port();
    let d = dir.display();
    // SAFETY: getuid has no preconditions.
    let user = if unsafe { libc::getuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        "daemon {}; master_process on; worker_processes 2; {user}
error_log stderr notice; pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello $uri\\n\"; }} }}
}}
",
        if daemon { "on" } else { "off" }
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let trace = root.join("nginx.trace");
    let conf_path = dir.join("nginx.conf");
    let rec = start_recording(
        root,
        &trace,
        &[
            exe.to_str().unwrap(),
            "-p",
            dir.to_str().unwrap(),
            "-c",
            conf_path.to_str().unwrap(),
        ],
    );
    let mut got = Vec::new();
    for i in 0..20 {
        let mut s = connect(port);
        write!(s, "GET /p{i} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = Vec::new();
        s.read_to_end(&mut body).unwrap();
        assert!(body.ends_with(format!("hello /p{i}\n").as_bytes()));
        got.extend_from_slice(&body);
    }
    let pid: i32 = std::fs::read_to_string(dir.join("nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    stop(rec, pid);
    exited_cleanly(&trace);
    assert_eq!(recorded_sends(&trace), got);
    replays(root, &trace);
}

/// One RESP command, as redis-cli sends it.
fn resp(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

/// One RESP reply, read whole (bulk strings and arrays of them).
fn read_reply(r: &mut impl BufRead, got: &mut Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    got.extend_from_slice(line.as_bytes());
    let n: i64 = line[1..].trim().parse().unwrap_or(0);
    match line.as_bytes().first() {
        Some(b'$') if n >= 0 => {
            let mut body = vec![0u8; n as usize + 2];
            r.read_exact(&mut body).unwrap();
            got.extend_from_slice(&body);
        }
        Some(b'*') => {
            for _ in 0..n.max(0) {
                read_reply(r, got);
            }
        }
        _ => {}
    }
}

#[test]
fn redis_with_its_background_threads_replays_its_responses() {
    let _ = redis_records_and_replays("sys");
}

/// Debian's redis-server exports its functions: at `func` their entries
/// are patched at start-up and the run, tens of thousands of entries over
/// its threads, replays whole with the same responses.
#[test]
fn redis_at_the_func_sketch_replays_its_responses() {
    let (_dir, trace) = redis_records_and_replays("func");
    let r = reprise_schema::TraceReader::open(&trace).unwrap();
    let entries = r
        .events()
        .filter(|e| e.as_ref().unwrap().kind == reprise_abi::EventKind::FuncEntry)
        .count();
    assert!(entries > 10_000, "{entries} function entries");
}

/// Records redis-server at `sketch` under a seeded load, checks its
/// recorded responses and replays it; returns the trace and the directory
/// that holds it.
fn redis_records_and_replays(sketch: &str) -> (tempfile::TempDir, PathBuf) {
    let exe = need("/usr/bin/redis-server");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let trace = root.join("redis.trace");
    let port = free_port().to_string();
    // Its bio threads and jemalloc's background thread run as shipped.
    let rec = start_recording(
        root,
        &trace,
        &[
            "--sketch",
            sketch,
            "--",
            exe.to_str().unwrap(),
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            root.to_str().unwrap(),
        ],
    );
    let port: u16 = port.parse().unwrap();
    let mut next = seeded(7);
    let mut got = Vec::new();
    for c in 0..10 {
        let s = connect(port);
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        for _ in 0..30 {
            let key = format!("k{}", next() % 20);
            let cmd = match next() % 5 {
                0 => resp(&["SET", &key, &format!("v{}", next() % 1000)]),
                1 => resp(&["GET", &key]),
                2 => resp(&["INCR", &format!("n{}", next() % 5)]),
                3 => resp(&["RPUSH", &format!("l{c}"), &key]),
                _ => resp(&["LRANGE", &format!("l{c}"), "0", "-1"]),
            };
            w.write_all(cmd.as_bytes()).unwrap();
            read_reply(&mut r, &mut got);
        }
    }
    let pid = server_pid(&rec);
    stop(rec, pid);
    exited_cleanly(&trace);
    assert_eq!(recorded_sends(&trace), got);
    replays_within_three(root, &trace);
    (tmp, trace)
}
