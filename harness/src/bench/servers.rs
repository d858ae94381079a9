//! `reprise bench record --only memcached,nginx,redis`: servers under a client's
//! load, native and recorded at `sys`, alternating rounds. The client (two
//! threads, one persistent connection each, seeded requests over
//! loopback) measures throughput and the 99th-percentile latency; the
//! server is stopped with SIGTERM; the last recorded trace is then
//! replayed once with no client (its responses are compared byte for byte
//! by the replay itself).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{dir_size, median, BenchOptions, TempDir};

/// The recording overhead goal on a server's throughput at `sys`.
pub(super) const GOAL_SERVER_SYS: f64 = 1.2;
/// Client threads (one persistent connection each).
const CLIENTS: usize = 2;

pub(super) struct ServerRow {
    pub label: String,
    pub requests: usize,
    pub native_rps: f64,
    pub recorded_rps: f64,
    /// Median over rounds of native / recorded throughput in the round.
    pub ratio: f64,
    pub native_p99_us: f64,
    pub recorded_p99_us: f64,
    /// Median over rounds of the CPU time (user + system) the server used
    /// per request, natively and recorded (the recorder's own included):
    /// steadier than throughput on a machine others share.
    pub native_cpu_us: f64,
    pub recorded_cpu_us: f64,
    pub trace_bytes: u64,
    /// What replaying the last trace with no client gave (one line).
    pub replay: String,
}

#[derive(Clone, Copy)]
enum Kind {
    Memcached,
    Nginx,
    Redis,
}

struct Server {
    kind: Kind,
    program: PathBuf,
    /// Where nginx keeps its configuration and pid file.
    dir: PathBuf,
}

impl Server {
    fn args(&self, port: u16) -> Result<Vec<String>> {
        Ok(match self.kind {
            Kind::Memcached => [
                "-t",
                "4",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-l",
                "127.0.0.1",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(as_root(&["-u", "root"]))
            .collect(),
            Kind::Redis => [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                &self.dir.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            Kind::Nginx => {
                let d = self.dir.display();
                let user = if as_root(&["x"]).is_empty() {
                    ""
                } else {
                    "user root;"
                };
                let conf = format!(
                    "daemon off; master_process on; worker_processes 2; {user}
error_log stderr warn; pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 60s; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello $uri\\n\"; }} }} }}
"
                );
                std::fs::create_dir_all(self.dir.join("logs"))?;
                let path = self.dir.join("nginx.conf");
                std::fs::write(&path, conf)?;
                vec![
                    "-p".into(),
                    self.dir.display().to_string(),
                    "-c".into(),
                    path.display().to_string(),
                ]
            }
        })
    }

    fn label(&self) -> &'static str {
        match self.kind {
            Kind::Memcached => "memcached -t 4",
            Kind::Nginx => "nginx 2 workers",
            Kind::Redis => "redis-server",
        }
    }

    /// The pid to send SIGTERM to: nginx's master from its pid file, else
    /// `child` itself, or (recorded) the recorder's child.
    fn pid(&self, child: &Child, recorded: bool) -> Result<i32> {
        if let Kind::Nginx = self.kind {
            let text = std::fs::read_to_string(self.dir.join("nginx.pid"))?;
            return Ok(text.trim().parse()?);
        }
        if !recorded {
            return Ok(child.id() as i32);
        }
        let p = child.id();
        let text = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))?;
        text.split_whitespace()
            .next()
            .ok_or_else(|| anyhow!("the recorder has no child"))?
            .parse()
            .map_err(Into::into)
    }
}

/// `-u root` and the like, only for root (memcached refuses root without it).
fn as_root(args: &[&str]) -> Vec<String> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        args.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn connect(port: u16, deadline: Instant) -> Result<TcpStream> {
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(20)))?;
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => bail!("the server never listened on port {port}: {e}"),
        }
    }
}

/// Request `n` as its client sends it.
fn encode(kind: Kind, n: u64) -> Vec<u8> {
    let key = n % 64;
    let v = format!("v{n}");
    let k = format!("k{key}");
    match kind {
        Kind::Memcached if n % 2 == 0 => format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()),
        Kind::Memcached => format!("get {k}\r\n"),
        // SET and GET in RESP, as redis-cli sends them.
        Kind::Redis if n % 2 == 0 => format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
            k.len(),
            v.len()
        ),
        Kind::Redis => format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()),
        Kind::Nginx => format!("GET /{k} HTTP/1.1\r\nHost: x\r\n\r\n"),
    }
    .into_bytes()
}

/// One request and its response on a persistent connection. The request
/// goes out in one write, as real clients send it (a `write!` on the stream
/// would send each formatted piece as a segment of its own: the socket has
/// TCP_NODELAY, and the server would wake and read once per piece).
fn request(kind: Kind, r: &mut BufReader<TcpStream>, n: u64) -> Result<()> {
    r.get_ref().write_all(&encode(kind, n))?;
    match kind {
        Kind::Memcached if n % 2 == 0 => {
            let mut line = String::new();
            r.read_line(&mut line)?;
            if line != "STORED\r\n" {
                bail!("memcached answered {line:?} to a set");
            }
        }
        Kind::Memcached => loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                bail!("memcached closed the connection");
            }
            if line == "END\r\n" {
                break;
            }
        },
        Kind::Redis => {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                bail!("redis closed the connection");
            }
            // A bulk string: its bytes and CRLF follow.
            if let Some(len) = line.strip_prefix('$') {
                let len: i64 = len.trim().parse()?;
                if len >= 0 {
                    let mut body = vec![0u8; len as usize + 2];
                    r.read_exact(&mut body)?;
                }
            } else if !line.starts_with('+') {
                bail!("redis answered {line:?}");
            }
        }
        Kind::Nginx => {
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    bail!("nginx closed the connection");
                }
                if let Some(v) = line.strip_prefix("Content-Length: ") {
                    length = v.trim().parse()?;
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            r.read_exact(&mut body)?;
        }
    }
    Ok(())
}

/// `requests` requests from CLIENTS threads: (requests per second, p99 µs).
fn load(kind: Kind, port: u16, requests: usize) -> Result<(f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let conns: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| connect(port, deadline))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let per = requests / CLIENTS;
    let results: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(c, conn)| {
                s.spawn(move || -> Result<Vec<f64>> {
                    let mut r = BufReader::new(conn);
                    let mut lat = Vec::with_capacity(per);
                    for i in 0..per {
                        let t = Instant::now();
                        request(kind, &mut r, (c * per + i) as u64)?;
                        lat.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for r in results {
        lat.extend(r?);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let p99 = lat[((lat.len() as f64 * 0.99) as usize).min(lat.len() - 1)];
    Ok((lat.len() as f64 / secs, p99))
}

/// SIGTERM to `pid`; waits for `child` (the server or its recorder).
fn stop(mut child: Child, pid: i32) -> Result<()> {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                bail!("ended with {st} after SIGTERM");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("did not end within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one run measured.
struct Measured {
    rps: f64,
    p99_us: f64,
    /// CPU time per request of the server and everything it started (and,
    /// recorded, of the recorder), from start to exit.
    cpu_us: f64,
}

/// CPU time (user + system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One run, native or recorded into `trace`. The server (or its recorder)
/// is the only child this process waits for meanwhile, so the children's
/// CPU time grows by its own and its descendants' (nginx's workers are
/// reaped by their master, the server by the recorder).
fn one_run(s: &Server, reprise: &Path, trace: Option<&Path>, requests: usize) -> Result<Measured> {
    let cpu_before = children_cpu();
    let port = free_port()?;
    let args = s.args(port)?;
    let mut c = match trace {
        None => Command::new(&s.program),
        Some(t) => {
            let mut c = Command::new(reprise);
            c.args(["record", "--sketch", "sys", "-o"])
                .arg(t)
                .arg(&s.program);
            c
        }
    };
    let child = c
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", s.program.display()))?;
    let measured = load(s.kind, port, requests);
    // The pid file is there once the server listens.
    let pid = s.pid(&child, trace.is_some());
    let stopped = match pid {
        Ok(pid) => stop(child, pid),
        Err(e) => {
            let mut child = child;
            let _ = child.kill();
            Err(e)
        }
    };
    let (rps, p99_us) = measured?;
    stopped.with_context(|| {
        format!(
            "{} {}",
            s.label(),
            if trace.is_some() {
                "recorded"
            } else {
                "native"
            }
        )
    })?;
    let cpu = children_cpu().saturating_sub(cpu_before);
    Ok(Measured {
        rps,
        p99_us,
        cpu_us: cpu.as_secs_f64() * 1e6 / requests as f64,
    })
}

/// The servers `--only` names, measured over `rounds` rounds.
pub(super) fn bench_servers(
    a: &BenchOptions,
    reprise: &Path,
    tmp: &Path,
    rounds: u32,
) -> Result<Vec<ServerRow>> {
    let requests = if a.quick { 2_000 } else { 20_000 };
    let mut rows = Vec::new();
    for (key, kind, program) in [
        ("memcached", Kind::Memcached, "/usr/bin/memcached"),
        ("nginx", Kind::Nginx, "/usr/sbin/nginx"),
        ("redis", Kind::Redis, "/usr/bin/redis-server"),
    ] {
        // Not in the default set: they need Debian's packages and a port.
        if !a.only.iter().any(|o| o == key) {
            continue;
        }
        if !Path::new(program).exists() {
            bail!("{program} is not installed: scripts/setup.sh installs it");
        }
        let dir = TempDir::new(tmp, key)?;
        let s = Server {
            kind,
            program: program.into(),
            dir: dir.path().to_path_buf(),
        };
        let trace = dir.path().join("trace");
        let (mut nat, mut rec, mut ratios, mut np99, mut rp99) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut ncpu, mut rcpu) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!("reprise bench: {} round {}/{rounds}", s.label(), round + 1);
            let _ = std::fs::remove_dir_all(&trace);
            // Alternate which goes first.
            let (n, r) = if round % 2 == 0 {
                let n = one_run(&s, reprise, None, requests)?;
                (n, one_run(&s, reprise, Some(&trace), requests)?)
            } else {
                let r = one_run(&s, reprise, Some(&trace), requests)?;
                (one_run(&s, reprise, None, requests)?, r)
            };
            nat.push(n.rps);
            rec.push(r.rps);
            ratios.push(n.rps / r.rps);
            np99.push(n.p99_us);
            rp99.push(r.p99_us);
            ncpu.push(n.cpu_us);
            rcpu.push(r.cpu_us);
        }
        let o = Command::new(reprise)
            .arg("replay")
            .arg(&trace)
            .args([
                // A server's libc orders some things among its threads by
                // locks no sketch records (which thread first opens a file
                // it needs): an attempt may leave the sketch there, as any
                // replay's may, and the next one starts again.
                "--max-attempts",
                "3",
                "--jobs",
                "1",
                "--no-schedule",
                "--no-program-output",
            ])
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&o.stdout);
        let attempt = text
            .split("reproduced the recorded run in attempt ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or("1")
            .to_string();
        let replay = if o.status.success() && attempt == "1" {
            "same responses, same exit".to_string()
        } else if o.status.success() {
            format!("same responses, same exit (attempt {attempt})")
        } else {
            text.lines()
                .find(|l| l.contains(" x "))
                .unwrap_or("not replayed")
                .trim()
                .to_string()
        };
        rows.push(ServerRow {
            label: s.label().into(),
            requests,
            native_rps: median(&nat),
            recorded_rps: median(&rec),
            ratio: median(&ratios),
            native_p99_us: median(&np99),
            recorded_p99_us: median(&rp99),
            native_cpu_us: median(&ncpu),
            recorded_cpu_us: median(&rcpu),
            trace_bytes: dir_size(&trace),
            replay,
        });
    }
    Ok(rows)
}

pub(super) fn print_servers(rows: &[ServerRow]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "servers at sys, {CLIENTS} clients on persistent connections over loopback; ratio = median over rounds of native/recorded throughput; cpu = the server's (and recorder's) CPU time per request"
    );
    println!(
        "{:<17} {:>8} {:>11} {:>11} {:>7} {:>10} {:>10} {:>9} {:>9} {:>10}  {:<6} replay with no client",
        "server",
        "requests",
        "native r/s",
        "record r/s",
        "ratio",
        "p99 nat",
        "p99 rec",
        "cpu nat",
        "cpu rec",
        "trace",
        "goal"
    );
    for r in rows {
        println!(
            "{:<17} {:>8} {:>11.0} {:>11.0} {:>7.3} {:>8.0}us {:>8.0}us {:>7.1}us {:>7.1}us {:>10}  {:<6} {}",
            r.label,
            r.requests,
            r.native_rps,
            r.recorded_rps,
            r.ratio,
            r.native_p99_us,
            r.recorded_p99_us,
            r.native_cpu_us,
            r.recorded_cpu_us,
            format!("{:.1} MiB", r.trace_bytes as f64 / 1048576.0),
            if r.ratio <= GOAL_SERVER_SYS {
                "met"
            } else {
                "missed"
            },
            r.replay
        );
    }
}
