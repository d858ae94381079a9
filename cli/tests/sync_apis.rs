//! The synchronisation APIs beyond plain pthreads are sketch events like
//! their pthread forms: the timed and clock-based waits
//! (`pthread_mutex_clocklock`, the timed and clock read-write locks,
//! `sem_clockwait`, `pthread_cond_clockwait`: what C++'s `wait_for`,
//! `try_lock_for` and `try_lock_shared_for` call; the joins that may fail),
//! C11's `<threads.h>`
//! (which glibc builds on pthreads inside libc, out of the agent's reach).
//! A wait on a condition variable releases and retakes its mutex in the
//! sketch, and a replay returns a recorded timeout without waiting for it.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{compile, replays_as_recorded, run_reprise, stderr};
use reprise_abi::EventKind as K;
use reprise_schema::{EventRecord, TraceReader};

const TIMED_SYNC: &str = include_str!("programs/timed_sync.c");
const C11_THREADS: &str = include_str!("programs/c11_threads.c");
const OPENMP_SYNC: &str = include_str!("programs/openmp_sync.c");
const ETIMEDOUT: i64 = libc::ETIMEDOUT as i64;

const OUTPUT: &str = "mutex_clocklock short: 110
mutex_clocklock long: 0
rwlock_clockrdlock short: 110
rwlock_timedrdlock short: 110
rwlock_timedwrlock short: 110
rwlock_clockwrlock long: 0
rwlock_timedrdlock free: 0
sem_clockwait short: -1 errno ETIMEDOUT
sem_clockwait long: 0
cond_clockwait short: 110
cond_clockwait long: flag 1
tryjoin running: 16
timedjoin short: 110
clockjoin long: 0 result 7
";

#[test]
fn timed_and_clock_waits_are_sketch_events_and_replay_as_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "timed_sync", TIMED_SYNC, &["-O1", "-g"]);
    let trace = tmp.path().join("trace");
    let evs = record(tmp.path(), &prog, &trace, OUTPUT);
    let results = main_results(&evs);
    assert_eq!(results[&K::MutexTimedlock], [ETIMEDOUT, 0]);
    assert_eq!(results[&K::RwRdlock], [ETIMEDOUT, ETIMEDOUT, 0]);
    assert_eq!(results[&K::RwWrlock], [ETIMEDOUT, 0]);
    // sem_clockwait: -1 (errno ETIMEDOUT), then 0; the plain sem_waits
    // of the program's handshakes are the other zeros.
    assert!(results[&K::SemWait].contains(&-1), "{results:?}");
    assert_eq!(results[&K::CondWait].len(), 2, "{results:?}");
    assert_eq!(results[&K::CondWake], [ETIMEDOUT, 0]);
    // The helper's join, then the sleeper's three.
    assert_eq!(
        results[&K::ThreadJoin],
        [0, libc::EBUSY as i64, ETIMEDOUT, 0]
    );

    let mutex = evs
        .iter()
        .find(|e| e.kind == K::MutexTimedlock)
        .unwrap()
        .object;
    held_by_one_thread_at_a_time(&evs, mutex);

    // The replay gives each wait its recorded result: the same output.
    let out = replays_as_recorded(tmp.path(), &trace, &[], Duration::from_secs(60));
    assert!(out.starts_with(OUTPUT), "{out}");
}

const C11_OUTPUT: &str = "counter 2000 inits 1 results 11 22
trylock held: 1
timedlock held: 4
cnd_timedwait: 4
timedlock released: 0
";

#[test]
fn c11_threads_are_sketch_events_and_replay_as_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "c11_threads", C11_THREADS, &["-O1", "-g"]);
    let trace = tmp.path().join("trace");
    let evs = record(tmp.path(), &prog, &trace, C11_OUTPUT);
    let count = |k: K| evs.iter().filter(|e| e.kind == k).count();
    assert_eq!((count(K::ThreadCreate), count(K::ThreadJoin)), (3, 3));
    // 2 x 1000 additions, the holder's lock and main's last timed lock.
    assert!(count(K::MutexLock) >= 2000, "{}", count(K::MutexLock));
    let results = main_results(&evs);
    // pthread results in the trace (thrd_busy is EBUSY, thrd_timedout
    // ETIMEDOUT), C11's in the program.
    assert_eq!(results[&K::MutexTrylock], [libc::EBUSY as i64]);
    assert_eq!(results[&K::MutexTimedlock], [ETIMEDOUT, 0]);
    assert!(results[&K::CondWake].contains(&ETIMEDOUT), "{results:?}");
    let once = evs.iter().find(|e| e.kind == K::Once).unwrap().object;
    assert_eq!(
        evs.iter()
            .filter(|e| e.kind == K::Once && e.object == once)
            .count(),
        2,
        "both adders pass call_once"
    );
    let mutex = evs
        .iter()
        .find(|e| e.kind == K::MutexTimedlock)
        .unwrap()
        .object;
    held_by_one_thread_at_a_time(&evs, mutex);
    let out = replays_as_recorded(tmp.path(), &trace, &[], Duration::from_secs(60));
    assert!(out.starts_with(C11_OUTPUT), "{out}");
}

const OPENMP_OUTPUT: &str =
    "unnamed 200 named 400 locked 600 tested 4 atomic 100.0 after_barrier 16\n";

#[test]
fn openmp_critical_sections_locks_and_barriers_are_sketch_events() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(
        tmp.path(),
        "openmp_sync",
        OPENMP_SYNC,
        &["-O1", "-g", "-fopenmp"],
    );
    let trace = tmp.path().join("trace");
    let evs = record(tmp.path(), &prog, &trace, OPENMP_OUTPUT);
    // Per object, the locks: the unnamed critical section (4 x 50 + 4
    // + 4), the named one, the omp lock and the atomic update (4 x 50
    // each; the lock also by the 4 successful tests).
    let mut locks: HashMap<u64, usize> = HashMap::new();
    for e in evs.iter().filter(|e| e.kind == K::MutexLock) {
        *locks.entry(e.object).or_default() += 1;
    }
    let mut counts: Vec<usize> = locks.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, [200, 200, 200, 208], "{locks:?}");
    let tests = evs
        .iter()
        .filter(|e| e.kind == K::MutexTrylock && e.result == 0);
    assert_eq!(tests.count(), 4);
    let barrier = evs.iter().filter(|e| e.kind == K::BarrierWait).count();
    assert_eq!(barrier, 4, "one explicit barrier, four threads");
    for (&object, _) in locks.iter() {
        held_by_one_thread_at_a_time(&evs, object);
    }
    let out = replays_as_recorded(tmp.path(), &trace, &[], Duration::from_secs(60));
    assert!(out.starts_with(OPENMP_OUTPUT), "{out}");
}

/// Two threads that hand a value over through a futex of their own: no
/// event orders them, and the recording says so.
const FUTEX_HANDOFF: &str = r#"
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static atomic_int ready; static int value;
static void *producer(void *a) {
    value = 42;
    atomic_store(&ready, 1);
    syscall(SYS_futex, &ready, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    return a;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, producer, NULL);
    while (!atomic_load(&ready))
        syscall(SYS_futex, &ready, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    pthread_join(t, NULL);
    printf("value %d\n", value);
    return 0;
}
"#;

#[test]
fn threads_that_synchronise_outside_the_sketch_are_named_at_record() {
    let tmp = tempfile::tempdir().unwrap();
    let prog = compile(tmp.path(), "futex_handoff", FUTEX_HANDOFF, &["-O1"]);
    let trace = tmp.path().join("trace");
    let o = run_record(tmp.path(), &prog, &trace);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 thread(s) made no synchronisation event"),
        "{}",
        stderr(&o)
    );
    // A program whose threads lock a mutex is not warned about.
    let prog = compile(tmp.path(), "timed_sync", TIMED_SYNC, &["-O1"]);
    let trace = tmp.path().join("trace2");
    let o = run_record(tmp.path(), &prog, &trace);
    assert!(
        !stderr(&o).contains("no synchronisation event"),
        "{}",
        stderr(&o)
    );
}

/// Records `prog` into `trace`: it must exit 0 printing `output`. Its
/// events.
fn record(root: &Path, prog: &Path, trace: &Path, output: &str) -> Vec<EventRecord> {
    let o = run_record(root, prog, trace);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), output);
    let r = TraceReader::open(trace).unwrap();
    r.events().map(|e| e.unwrap()).collect()
}

/// `reprise record -o TRACE PROG` (60 s at most).
fn run_record(root: &Path, prog: &Path, trace: &Path) -> Output {
    run_reprise(
        root,
        &[
            "record",
            "-o",
            trace.to_str().unwrap(),
            prog.to_str().unwrap(),
        ],
        None,
        Duration::from_secs(60),
    )
}

/// The main thread's results, per kind, in order.
fn main_results(evs: &[EventRecord]) -> HashMap<K, Vec<i64>> {
    let mut results: HashMap<K, Vec<i64>> = HashMap::new();
    for e in evs.iter().filter(|e| e.thread == 0) {
        results.entry(e.kind).or_default().push(e.result);
    }
    results
}

/// In the sketch's order, `mutex` is never taken while held: the
/// condition variables' waits release it and their wake-ups retake it.
fn held_by_one_thread_at_a_time(evs: &[EventRecord], mutex: u64) {
    let mut holder: Option<u32> = None;
    for e in evs {
        let (acquires, releases) = match e.kind {
            K::MutexLock | K::MutexTimedlock | K::MutexTrylock
                if e.object == mutex && e.result == 0 =>
            {
                (true, false)
            }
            K::MutexUnlock if e.object == mutex => (false, true),
            K::CondWake if e.arg0 == mutex => (true, false),
            K::CondWait if e.arg0 == mutex => (false, true),
            _ => (false, false),
        };
        if acquires {
            assert_eq!(holder, None, "#{} takes the mutex while it is held", e.seq);
            holder = Some(e.thread);
        }
        if releases {
            assert_eq!(
                holder,
                Some(e.thread),
                "#{} releases a mutex it does not hold",
                e.seq
            );
            holder = None;
        }
    }
}
