//! `reprise record` by an ordinary user on a machine whose every core is
//! busy with other work. Such a user's drainer cannot come back from
//! `SCHED_IDLE`, so it runs at a lowered priority instead (nice 10,
//! recorder/src/drain_priority.rs): it must still get enough of the busy
//! cores to keep the ring from stalling the program, and every event must
//! reach the trace, including a backlog still waiting when the program ends.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{compile, stderr, wait_with_limit, Hogs};
use reprise_abi::EventKind;
use reprise_schema::TraceReader;

/// Four threads each read one byte at a time: 2.4 million recorded reads
/// (two slots each), almost five times what the ring holds: it fills unless it is
/// drained while the program runs.
const READS: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#define THREADS 4
#define READS 600000
static void *reader(void *arg) {
    int fd = open("/dev/zero", O_RDONLY);
    char c;
    long got = 0;
    for (int i = 0; i < READS; i++) got += read(fd, &c, 1);
    close(fd);
    return (void *)got;
}
int main(void) {
    pthread_t t[THREADS];
    long total = 0;
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], 0, reader, 0);
    for (int i = 0; i < THREADS; i++) {
        void *got;
        pthread_join(t[i], &got);
        total += (long)got;
    }
    printf("read %ld bytes\n", total);
    return 0;
}
"#;

/// `reprise` and its agent, copied where an ordinary user may run them.
fn reprise_for_anyone(dir: &Path) -> PathBuf {
    let exe = common::reprise();
    let agent = exe.with_file_name("libreprise_preload.so");
    let to = dir.join("reprise");
    std::fs::copy(&exe, &to).unwrap();
    std::fs::copy(&agent, dir.join("libreprise_preload.so")).expect("the agent is built");
    to
}

#[test]
fn an_ordinary_users_recording_keeps_up_on_a_busy_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let prog = compile(dir, "reads", READS, &["-O1"]);
    let reprise = reprise_for_anyone(dir);
    let trace = dir.join("trace");
    let mut cmd = if unsafe_geteuid() == 0 {
        // As root the drainer could leave SCHED_IDLE by itself: run as
        // nobody, who cannot.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&reprise);
        c
    } else {
        Command::new(&reprise)
    };
    cmd.args(["record", "-o"])
        .arg(&trace)
        .arg(&prog)
        .env("REPRISE_TRACE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let hogs = Hogs::on_every_core();
    let started = Instant::now();
    let out = wait_with_limit(cmd.spawn().expect("run reprise"), Duration::from_secs(150));
    let took = started.elapsed();
    drop(hogs);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the recording did not end within 150 s (took {took:?}): {}",
        stderr(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "read 2400000 bytes\n",
        "{}",
        stderr(&out)
    );
    let r = TraceReader::open(&trace).expect("trace opens");
    assert!(r.is_complete());
    assert_eq!(r.outcome().map(|o| o.dropped_events), Some(0));
    let reads = r
        .events()
        .map(|e| e.expect("event reads"))
        .filter(|e| e.kind == EventKind::Syscall && e.object == libc::SYS_read as u64)
        .count();
    assert_eq!(reads, 2_400_000, "every read is in the trace");
    eprintln!("recorded with every core busy in {took:?}");
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
