//! Hardware watchpoints over a live multithreaded C program: every write to
//! a mutex-protected counter is caught in order, by the function that
//! writes it; a once-written global hits once, naming its thread; signals
//! the program handles itself (SIGUSR1, SIGSYS from seccomp RET_TRAP,
//! SIGTRAP from int3) reach it; after the detach it runs to exit 0.
//! Each test is bounded (about 15 s).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use object::{Object, ObjectSegment, ObjectSymbol};
use reprise_debugger::watchpoints::{Hit, Watch, WatchError, Watcher};
use reprise_tracee::{MemoryMap, MemoryReader, ProcessMemory, RemotePtr, Symbolizer};

const BUDGET: Duration = Duration::from_secs(15);

const PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

long counter;
long once_value;
int once_writer;
int usr1_seen, sys_seen, trap_seen;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static int iters, nsig;

__attribute__((noinline)) void bump_counter(void) { counter = counter + 1; }
__attribute__((noinline)) void write_once(void) { once_writer = syscall(SYS_gettid); once_value = 42; }

static void on_signal(int sig)
{
    int *n = sig == SIGUSR1 ? &usr1_seen : sig == SIGSYS ? &sys_seen : &trap_seen;
    __atomic_fetch_add(n, 1, __ATOMIC_RELAXED);
}

static void *worker(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < iters; i++) {
        pthread_mutex_lock(&m);
        bump_counter();
        pthread_mutex_unlock(&m);
        if (id == 1 && i == iters / 2) write_once();
        if (i < nsig) {
            if (id == 0) pthread_kill(pthread_self(), SIGUSR1);
            else if (id == 1) syscall(SYS_getppid);            /* SIGSYS */
            else __asm__ volatile("int3");                    /* SIGTRAP */
        }
    }
    return NULL;
}

static void trap_getppid(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { sizeof f / sizeof f[0], f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) abort();
}

int main(int argc, char **argv)
{
    iters = atoi(argv[1]);
    nsig = atoi(argv[2]);
    struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART };
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGSYS, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
    if (nsig) trap_getppid();
    printf("ready\n");
    fflush(stdout);
    char c;
    if (read(0, &c, 1) != 1) return 3;
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    printf("counter=%ld once=%ld writer=%d usr1=%d sys=%d trap=%d\n",
           counter, once_value, once_writer, usr1_seen, sys_seen, trap_seen);
    fflush(stdout);
    while (read(0, &c, 1) > 0) ;
    return 0;
}
"#;

/// The compiled program, once per test binary.
fn program() -> &'static Path {
    static EXE: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &EXE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("wp.c");
        std::fs::write(&src, PROGRAM).unwrap();
        let exe = dir.path().join("wp");
        let st = Command::new("gcc")
            .args(["-g", "-O0", "-pthread", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()
            .expect("gcc runs");
        assert!(st.success(), "gcc failed");
        (dir, exe)
    })
    .1
}

/// The program, started and waiting on stdin before its threads start.
struct Prog {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Prog {
    fn start(iters: u32, nsig: u32) -> Prog {
        let mut child = Command::new(program())
            .args([iters.to_string(), nsig.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(l);
            }
        });
        let stdin = child.stdin.take();
        let p = Prog {
            child,
            stdin,
            lines,
        };
        assert_eq!(p.lines.recv_timeout(BUDGET).unwrap(), "ready");
        p
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn go(&mut self) {
        self.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    }

    /// The result line, if printed by now.
    fn result(&self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Closes stdin and expects exit status 0.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + BUDGET;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "program ended with {st}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "program did not exit after the detach"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The run-time address of the global `name` in the program `pid` runs.
fn global(pid: i32, name: &str) -> u64 {
    let data = std::fs::read(program()).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"));
    let first_vaddr = file.segments().map(|s| s.address()).min().unwrap() & !0xfff;
    let exe = std::fs::canonicalize(program()).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let start = maps
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6 && Path::new(f[5]) == exe && u64::from_str_radix(f[2], 16) == Ok(0))
                .then(|| u64::from_str_radix(f[0].split('-').next().unwrap(), 16).unwrap())
        })
        .expect("the executable is mapped");
    sym.address() + (start - first_vaddr)
}

fn function_at(pid: i32, pc: u64) -> Option<String> {
    let maps = MemoryMap::for_pid(pid).unwrap();
    Symbolizer::new()
        .symbolize(RemotePtr::new(pc), &maps)
        .function
}

fn read_u64(pid: i32, addr: u64) -> u64 {
    ProcessMemory::new(pid)
        .read_u64(RemotePtr::new(addr))
        .unwrap()
}

/// The next hit, failing the test after the budget.
fn next_hit(w: &mut Watcher, start: Instant) -> Hit {
    let hit = w.run(&mut || start.elapsed() > BUDGET).unwrap();
    hit.unwrap_or_else(|| panic!("no hit within {BUDGET:?}"))
}

/// Runs until the program prints its result line; no hit may come first.
fn run_to_result(w: &mut Watcher, p: &Prog, start: Instant) -> String {
    let mut line = None;
    let r = w.run(&mut || {
        line = line.take().or_else(|| p.result());
        line.is_some() || start.elapsed() > BUDGET
    });
    assert!(matches!(r, Ok(None)), "unexpected {r:?}");
    line.expect("result line within the budget")
}

fn field(line: &str, key: &str) -> i64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn every_counter_write_in_order_by_bump_counter() {
    let start = Instant::now();
    let mut p = Prog::start(100, 0);
    let counter = global(p.pid(), "counter");
    let mut w = Watcher::attach(
        p.pid(),
        &[Watch {
            addr: counter,
            len: 8,
        }],
    )
    .unwrap();
    p.go();
    let mut tids = std::collections::BTreeSet::new();
    for n in 1..=300u64 {
        let hit = next_hit(&mut w, start);
        assert_eq!(hit.slot, 0);
        assert_eq!(read_u64(p.pid(), counter), n, "hit {n} sees the n-th value");
        assert!(hit.pc_exact, "{hit:?}");
        assert!(
            hit.pc < hit.after_pc && hit.after_pc - hit.pc <= 15,
            "{hit:?}"
        );
        assert_eq!(hit.regs[16], hit.after_pc);
        if n <= 5 {
            assert_eq!(
                function_at(p.pid(), hit.pc).as_deref(),
                Some("bump_counter"),
                "{hit:?}"
            );
        }
        tids.insert(hit.tid);
    }
    assert!(tids.len() >= 2, "all writes by one thread: {tids:?}");
    assert!(!tids.contains(&p.pid()), "main does not write the counter");
    let line = run_to_result(&mut w, &p, start);
    assert_eq!(field(&line, "counter"), 300);
    w.detach().unwrap();
    p.finish();
}

#[test]
fn once_written_global_hits_once_then_rearmed_on_counter() {
    let start = Instant::now();
    let mut p = Prog::start(200, 0);
    let once = global(p.pid(), "once_value");
    let counter = global(p.pid(), "counter");
    let mut w = Watcher::attach(p.pid(), &[Watch { addr: once, len: 8 }]).unwrap();
    p.go();
    let hit = next_hit(&mut w, start);
    assert_eq!(read_u64(p.pid(), once), 42);
    assert_eq!(
        function_at(p.pid(), hit.pc).as_deref(),
        Some("write_once"),
        "{hit:?}"
    );
    let writer = hit.tid;
    // Re-armed on the counter: the next write is an increment.
    w.set_watches(&[Watch {
        addr: counter,
        len: 8,
    }])
    .unwrap();
    let before = read_u64(p.pid(), counter);
    let hit = next_hit(&mut w, start);
    assert_eq!(read_u64(p.pid(), counter), before + 1);
    assert_eq!(
        function_at(p.pid(), hit.pc).as_deref(),
        Some("bump_counter"),
        "{hit:?}"
    );
    // Back on the once-written global: no more hits to the end.
    w.set_watches(&[Watch { addr: once, len: 8 }]).unwrap();
    let line = run_to_result(&mut w, &p, start);
    assert_eq!(
        field(&line, "writer"),
        i64::from(writer),
        "the hit names the writing thread"
    );
    assert_eq!(field(&line, "once"), 42);
    w.detach().unwrap();
    p.finish();
}

#[test]
fn signals_the_program_handles_reach_it() {
    let start = Instant::now();
    let mut p = Prog::start(100, 20);
    let counter = global(p.pid(), "counter");
    let once = global(p.pid(), "once_value");
    let watches = [
        Watch {
            addr: counter,
            len: 8,
        },
        Watch { addr: once, len: 8 },
    ];
    let mut w = Watcher::attach(p.pid(), &watches).unwrap();
    p.go();
    let mut per_slot = [0u32; 2];
    for _ in 0..301 {
        per_slot[next_hit(&mut w, start).slot] += 1;
    }
    assert_eq!(per_slot, [300, 1]);
    let line = run_to_result(&mut w, &p, start);
    assert_eq!(
        (
            field(&line, "usr1"),
            field(&line, "sys"),
            field(&line, "trap")
        ),
        (20, 20, 20),
        "{line}"
    );
    w.detach().unwrap();
    p.finish();
}

#[test]
fn detach_while_running_leaves_the_program_intact() {
    let start = Instant::now();
    let mut p = Prog::start(3000, 50);
    let counter = global(p.pid(), "counter");
    let mut w = Watcher::attach(
        p.pid(),
        &[Watch {
            addr: counter,
            len: 8,
        }],
    )
    .unwrap();
    p.go();
    next_hit(&mut w, start);
    // Left running (stop() at once; a hit found in the same poll comes
    // first), then detached with writes going on.
    let mut left_running = false;
    for _ in 0..1000 {
        if w.run(&mut || true).unwrap().is_none() {
            left_running = true;
            break;
        }
    }
    assert!(left_running, "run() with stop() true never returned None");
    std::thread::sleep(Duration::from_millis(2));
    w.detach().unwrap();
    let line = p
        .lines
        .recv_timeout(BUDGET)
        .expect("result line after the detach");
    assert_eq!(field(&line, "counter"), 9000, "{line}");
    assert_eq!(
        (
            field(&line, "usr1"),
            field(&line, "sys"),
            field(&line, "trap")
        ),
        (50, 50, 50),
        "{line}"
    );
    p.finish();
}

#[test]
fn bad_watches_are_refused() {
    let w = |addr, len| Watch { addr, len };
    let five = [
        w(0x1000, 8),
        w(0x1008, 8),
        w(0x1010, 8),
        w(0x1018, 8),
        w(0x1020, 8),
    ];
    let e = Watcher::attach(1, &five).err().unwrap();
    assert!(matches!(e, WatchError::TooMany(5)), "{e}");
    assert!(e.to_string().contains("4 debug registers"), "{e}");
    let e = Watcher::attach(1, &[w(0x1004, 8)]).err().unwrap();
    assert!(matches!(e, WatchError::Unaligned { .. }), "{e}");
    let e = Watcher::attach(1, &[w(0x1000, 3)]).err().unwrap();
    assert!(matches!(e, WatchError::BadLength { .. }), "{e}");
    let e = Watcher::attach(i32::MAX, &[w(0x1000, 8)]).err().unwrap();
    assert!(matches!(e, WatchError::NoSuchProcess(_)), "{e}");
}
