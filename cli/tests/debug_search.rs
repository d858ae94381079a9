//! `watch` and `bisect` (reprise_debugger::search) on reproduced runs of
//! testbugs programs: pgdoorman_206_bounded_list (the bounded list grows
//! past its bound by a racy insert) and memcached_127_refcount (a lost
//! increment lets a decrement free the item early). Each trace is
//! recorded at `sync` until the program fails, then replayed once by
//! `reprise replay` to save the reproducing schedule.

mod common;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{run_reprise, stderr};
use reprise_debugger::dwarf::Program;
use reprise_debugger::search::{bisect, watch};
use reprise_debugger::{Position, Target};
use reprise_schema::{read_schedule, OutcomeKind, TraceReader};

const LIMIT: Duration = Duration::from_secs(120);

/// One debugged run at a time: each holds ptrace stops and processes.
static SERIAL: Mutex<()> = Mutex::new(());

struct Reproduced {
    _tmp: tempfile::TempDir,
    trace: PathBuf,
}

/// Builds testbugs program `name`, records `args` at sync until it fails
/// within `max_events` events, and saves its reproducing schedule.
fn reproduce(name: &str, args: &[&str], max_events: usize, max_attempts: u32) -> Reproduced {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let exe = common::compile_testbug(&root, name);
    let trace = root.join(format!("{name}.trace"));
    let t = trace.to_str().unwrap().to_string();
    let failed =
        |o: &reprise_schema::OutcomeInfo| o.kind != OutcomeKind::Exited || o.exit_code != 0;
    for _ in 0..3 {
        let mut recorded = false;
        // Under a loaded machine a failure is rarer: try long enough.
        for _ in 0..250 {
            let _ = std::fs::remove_dir_all(&trace);
            let mut a = vec![
                "record",
                "--sketch",
                "sync",
                "-o",
                &t,
                exe.to_str().unwrap(),
            ];
            a.extend_from_slice(args);
            run_reprise(&root, &a, None, LIMIT);
            let r = TraceReader::open(&trace).unwrap();
            if r.outcome().is_some_and(failed) && r.event_count() as usize <= max_events {
                recorded = true;
                break;
            }
        }
        assert!(recorded, "{name} {args:?}: no failure in 250 recorded runs");
        let o = run_reprise(
            &root,
            &[
                "replay",
                &t,
                "--jobs",
                "1",
                "--max-attempts",
                &max_attempts.to_string(),
            ],
            None,
            LIMIT,
        );
        if read_schedule(&trace).ok().flatten().is_some() {
            return Reproduced { _tmp: tmp, trace };
        }
        eprintln!("{name}: not reproduced, recording again: {}", stderr(&o));
    }
    panic!("{name}: not reproduced from 3 failing recordings");
}

fn pgdoorman() -> &'static Reproduced {
    static R: OnceLock<Reproduced> = OnceLock::new();
    R.get_or_init(|| {
        reproduce(
            "pgdoorman_206_bounded_list",
            &["300", "3000"],
            usize::MAX,
            20,
        )
    })
}

fn memcached() -> &'static Reproduced {
    static R: OnceLock<Reproduced> = OnceLock::new();
    // A wide window makes the first lost increment come early (a short
    // run, found in fewer attempts), even on a loaded machine.
    R.get_or_init(|| reproduce("memcached_127_refcount", &["3000", "1000"], 1000, 40))
}

/// The target paused before event 0 and the program's DWARF placed.
fn open(r: &Reproduced) -> (Target, Program) {
    let (target, note) = Target::open(&r.trace, true).unwrap();
    assert!(note.is_none(), "{note:?}");
    let path = target.replay().header.program_path.clone();
    let mut program = Program::load(&path).unwrap();
    if let Some(bias) = program.load_bias_in(&target.maps().unwrap()) {
        program.set_load_bias(bias);
    }
    (target, program)
}

fn int(s: &str) -> i64 {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not an integer: {s:?}"))
}

#[test]
fn bisect_names_the_racy_insert() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = pgdoorman();
    let (mut target, program) = open(r);
    let start = Instant::now();
    let b = bisect(&mut target, &program, "cache_peak <= 8", None, None).unwrap();
    eprintln!("{b}");
    assert!(start.elapsed() < Duration::from_secs(120), "{b}");
    assert_eq!(b.first_false, b.last_true + 1);
    assert_eq!(target.position(), &Position::Before(b.first_false));
    let w = b
        .write
        .as_ref()
        .unwrap_or_else(|| panic!("no write found: {b}"));
    let place = w.place();
    let racy = [
        "pgdoorman_206_bounded_list.c:70",
        "pgdoorman_206_bounded_list.c:92",
        "pgdoorman_206_bounded_list.c:93",
        "pgdoorman_206_bounded_list.c:103",
    ];
    assert!(racy.iter().any(|l| place.starts_with(l)), "{place}: {b}");
    let (text, old, new) = w
        .parts
        .iter()
        .find(|p| p.0 == "cache_peak")
        .unwrap_or_else(|| panic!("no cache_peak in {:?}", w.parts));
    assert_eq!(text, "cache_peak");
    assert!(int(old) <= 8 && int(new) > 8, "{b}");
    assert!(w.thread.starts_with("thread"), "{b}");
    // The display the REPL shows.
    let s = b.to_string();
    assert!(
        s.starts_with(&format!(
            "the invariant broke between event {} and event {}",
            b.last_true, b.first_false
        )),
        "{s}"
    );
    assert!(s.contains("cache_peak: "), "{s}");

    // Bisecting again is cheaper: the checkpoints are there.
    let again = bisect(&mut target, &program, "cache_peak <= 8", None, None).unwrap();
    assert_eq!(
        (again.last_true, again.first_false),
        (b.last_true, b.first_false)
    );
    assert_eq!(again.fresh_replays, 0, "{again}");

    // Ends that are not as required are named.
    let e = bisect(&mut target, &program, "cache_peak > 100", None, None).unwrap_err();
    assert!(e.to_string().contains("does not hold at the start"), "{e}");
    let e = bisect(&mut target, &program, "cache_peak >= 0", None, None).unwrap_err();
    assert!(e.to_string().contains("still holds at the end"), "{e}");
}

#[test]
fn watch_lists_the_peak_growing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = pgdoorman();
    let (mut target, program) = open(r);
    let end = target.event_count() - 1;
    let changes = watch(&mut target, &program, "cache_peak", 0, end).unwrap();
    for c in &changes {
        eprintln!("{c}");
    }
    assert!(changes.len() >= 9, "{changes:?}");
    let mut last = 0;
    for c in &changes {
        assert_eq!(int(&c.old), last, "{c}");
        assert!(int(&c.new) > last, "{c}");
        last = int(&c.new);
        assert!(c.place().contains("pgdoorman_206_bounded_list.c:"), "{c}");
        assert!(c.thread.starts_with("thread"), "{c}");
    }
    assert!(last > 8);
    // Events never go backward.
    assert!(changes.windows(2).all(|w| w[0].event <= w[1].event));
    assert_eq!(target.position(), &Position::Before(end));
    // Too much memory for four debug registers: a clear error.
    target.goto(0).unwrap();
    let e = watch(
        &mut target,
        &program,
        "max_size + cache_len + cache_peak + hits + misses",
        0,
        10,
    )
    .unwrap_err();
    assert!(e.to_string().contains("only 4"), "{e}");
}

#[test]
fn watch_memcached_refcount_shows_the_early_free() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = memcached();
    let (mut target, program) = open(r);
    // `hot` is set once threads start: watch from the first event where
    // it points at the item.
    let mut from = 0;
    let end = target.event_count() - 1;
    while from < end {
        target.goto(from).unwrap();
        let mem = target.memory().unwrap();
        let e = reprise_debugger::expr::parse("hot->refcount").unwrap();
        if reprise_debugger::expr::evaluate(&program, &e, None, &mem).is_ok() {
            break;
        }
        from += 1;
    }
    let changes = watch(&mut target, &program, "hot->refcount", from, end).unwrap();
    for c in changes.iter().rev().take(8).rev() {
        eprintln!("{c}");
    }
    // The decrement to 0 while the other worker still holds it: written by
    // item_release (its read-modify-write), to 0. Which lost update the
    // reproduced schedule took decides the value it overwrote: 1 when an
    // increment was lost before, 2 when this release read the count before
    // the other worker's increment and wrote its stale result over it.
    let freed = changes
        .iter()
        .find(|c| int(&c.new) == 0)
        .unwrap_or_else(|| panic!("no decrement to 0 among {} changes", changes.len()));
    assert!(matches!(int(&freed.old), 1 | 2), "{freed}");
    let place = freed.place();
    assert!(place.contains("memcached_127_refcount.c:"), "{place}");
    assert!(
        place.contains("item_release") || place.contains("worker"),
        "{place}"
    );
}

/// `watch` and `bisect` as a user runs them: `reprise debug TRACE -ex ...
/// --batch`, one answer per command, `--json` parsable.
#[test]
fn watch_and_bisect_commands_in_batch_mode() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = pgdoorman();
    let root = r.trace.parent().unwrap();
    let t = r.trace.to_str().unwrap();
    let args = [
        "debug",
        t,
        "--no-program-output",
        "-ex",
        "goto 1",
        "-ex",
        "watch cache_peak",
        "-ex",
        "bisect cache_peak <= 8",
        "-ex",
        "print cache_peak",
        "--batch",
    ];
    let o = run_reprise(root, &args, None, LIMIT);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert!(o.status.success(), "{out}");
    // watch: the peak grows one by one, written in insert.
    assert!(out.contains("-> 9"), "{out}");
    assert!(out.contains("in insert"), "{out}");
    // bisect: the two adjacent events, the write, the replays made.
    assert!(out.contains("the invariant broke between event"), "{out}");
    assert!(out.contains("(cache_peak: 8 -> 9)"), "{out}");
    assert!(out.contains("probes,") && out.contains("replays"), "{out}");
    assert!(out.contains("cache_peak = (long) 9"), "{out}");
    // The same as JSON: one object per answer.
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let o = run_reprise(root, &json_args, None, LIMIT);
    let text = String::from_utf8_lossy(&o.stdout);
    let answers: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let b = answers
        .iter()
        .find(|a| a.get("first_false").is_some())
        .unwrap_or_else(|| panic!("no bisect answer in {text}"));
    assert_eq!(
        b["first_false"].as_u64().unwrap(),
        b["last_true"].as_u64().unwrap() + 1,
        "{b}"
    );
    // The expression's own values: true (1) before the write, false after.
    assert_eq!(b["write"]["old"], "1", "{b}");
    assert_eq!(b["write"]["new"], "0", "{b}");
    assert!(
        b["write"]["place"].as_str().unwrap().contains("in insert"),
        "{b}"
    );
}
