mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use reprise_schema::*;

#[test]
fn header_events_outcome_schedule_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let s = write_trace(&dir, 20_000);
    assert_eq!(s.events, 20_000);
    assert_eq!(s.path, dir);
    assert_eq!(s.dropped_events, 0);
    let r = TraceReader::open(&dir).unwrap();
    assert_eq!(r.header(), &header());
    assert_eq!(r.outcome(), Some(&outcome()));
    assert!(r.is_complete());
    assert!(r.warnings().is_empty(), "{:?}", r.warnings());
    assert_eq!(r.event_count(), 20_000);
    assert_eq!(r.chunk_count(), 3);
    let evs: Vec<EventRecord> = r.events().collect::<Result<_>>().unwrap();
    assert_eq!(evs.len(), 20_000);
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e, &event(i as u64));
    }
    let size: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(s.bytes, size);

    assert_eq!(read_schedule(&dir).unwrap(), None);
    let sched = ScheduleInfo {
        strategy: "pct".into(),
        seed: 42,
        attempts: 17,
        decisions: vec![
            Decision {
                before_seq: 10,
                process: 0,
                thread: 2,
                pc: 0,
                occurrence: 0,
            },
            Decision {
                before_seq: 0,
                process: 1,
                thread: 3,
                pc: 0x401000,
                occurrence: 5,
            },
        ],
        flips: vec![FlipInfo {
            held_process: 0,
            held_thread: 1,
            held_pc: 0x1234,
            held_n: 7,
            until_process: 0,
            until_thread: 2,
            until_pc: 0x1250,
            until_n: 3,
            defer: true,
            until_fork: 3,
            until_addr: 0x5555_1000,
            standing: true,
            held_anchor: 42,
            held_k: 2,
            until_anchor: 1,
            until_k: 3,
        }],
        preempt_rate: 512,
        odd_thread: Some((1, 0)),
    };
    write_schedule(&dir, &sched).unwrap();
    assert_eq!(read_schedule(&dir).unwrap(), Some(sched.clone()));
    let sched2 = ScheduleInfo { seed: 43, ..sched };
    write_schedule(&dir, &sched2).unwrap();
    assert_eq!(r.schedule().unwrap(), Some(sched2));
    assert!(write_schedule(&tmp.path().join("nope"), &ScheduleInfo::default()).is_err());
}

#[test]
fn empty_trace_and_default_values() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let w = TraceWriter::create(&dir, &HeaderInfo::default()).unwrap();
    w.finish(&OutcomeInfo::default()).unwrap();
    let r = TraceReader::open(&dir).unwrap();
    assert_eq!(r.header().format_version, FORMAT_VERSION);
    assert_eq!(r.outcome(), Some(&OutcomeInfo::default()));
    assert_eq!(r.events().count(), 0);
}

#[test]
fn big_data_events_split_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let mut w = TraceWriter::create(&dir, &header()).unwrap();
    let mut evs = Vec::new();
    for i in 0..40u64 {
        let e = EventRecord {
            seq: i,
            kind: reprise_abi::EventKind::Syscall,
            data: (0..(100_000 + i as usize))
                .map(|x| (x * 7 + i as usize) as u8)
                .collect(),
            ..Default::default()
        };
        w.push_ref(&e).unwrap();
        evs.push(e);
    }
    w.finish(&outcome()).unwrap();
    let r = TraceReader::open(&dir).unwrap();
    assert!(r.chunk_count() >= 4, "{}", r.chunk_count());
    assert_eq!(read_all(&dir).unwrap(), evs);
}

#[test]
fn permissions_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    write_trace(&dir, 10);
    write_schedule(&dir, &ScheduleInfo::default()).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        n += 1;
    }
    assert_eq!(n, 4); // header events outcome schedule
}

#[test]
fn create_refuses_nonempty_dir_accepts_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    std::fs::create_dir(&dir).unwrap();
    let w = TraceWriter::create(&dir, &header()).unwrap();
    drop(w);
    let e = TraceWriter::create(&dir, &header()).err().unwrap();
    assert!(matches!(e, TraceError::Exists { .. }), "{e}");
}

#[test]
fn json_serialisation() {
    let j = serde_json::to_value(header()).unwrap();
    assert_eq!(j["level"], "sys");
    assert_eq!(j["build_id"], "01020304");
    assert_eq!(j["argv"][0], "prog");
    let e = serde_json::to_value(event(3)).unwrap();
    assert_eq!(e["kind"], "pthread_cond_wait");
    assert_eq!(e["data"], "000102");
    let o = serde_json::to_value(outcome()).unwrap();
    assert_eq!(o["kind"], "deadlock");
    assert_eq!(o["threads"][1]["wait_kind"], "pthread_rwlock_wrlock");
}

#[test]
fn sketch_level_text() {
    for l in SketchLevel::ALL {
        assert_eq!(l.to_string().parse::<SketchLevel>().unwrap(), l);
    }
    assert_eq!("BB".parse::<SketchLevel>().unwrap(), SketchLevel::Bb);
    assert!("fast"
        .parse::<SketchLevel>()
        .unwrap_err()
        .contains("sync, sys, func, bb"));
}

/// 1M events round trip; prints the writer's throughput.
#[test]
fn million_events_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    const N: u64 = 1_000_000;
    // Small sync events, as the recorder pushes them.
    let mut ev = EventRecord {
        kind: reprise_abi::EventKind::MutexLock,
        ..Default::default()
    };
    let mut w = TraceWriter::create(&dir, &header()).unwrap();
    let t = Instant::now();
    for i in 0..N {
        ev.seq = i;
        ev.thread = (i % 4) as u32;
        ev.object = 0x5555_5555_8000 + (i % 16) * 64;
        ev.kind = if i % 2 == 0 {
            reprise_abi::EventKind::MutexLock
        } else {
            reprise_abi::EventKind::MutexUnlock
        };
        w.push_ref(&ev).unwrap();
    }
    let s = w.finish(&outcome()).unwrap();
    let dt = t.elapsed();
    let ns = dt.as_nanos() as f64 / N as f64;
    println!(
        "writer: {N} events in {:.3} s = {:.1} ns/event ({:.1} M events/s), {} bytes on disk ({:.2} bytes/event){}",
        dt.as_secs_f64(),
        ns,
        1e3 / ns,
        s.bytes,
        s.bytes as f64 / N as f64,
        if cfg!(debug_assertions) { " [debug build of reprise-schema: run `cargo test --release` for real numbers]" } else { "" }
    );
    let t = Instant::now();
    let r = TraceReader::open(&dir).unwrap();
    let mut n = 0u64;
    for e in r.events() {
        let e = e.unwrap();
        assert_eq!(e.seq, n);
        assert_eq!(e.object, 0x5555_5555_8000 + (n % 16) * 64);
        n += 1;
    }
    assert_eq!(n, N);
    println!(
        "reader: {N} events in {:.3} s = {:.1} ns/event",
        t.elapsed().as_secs_f64(),
        t.elapsed().as_nanos() as f64 / N as f64
    );
    if !cfg!(debug_assertions) {
        assert!(ns < 1000.0, "writer too slow: {ns:.1} ns/event");
    }
}

#[test]
fn runs_of_lock_unlock_pairs_read_back_as_single_events() {
    use reprise_abi::EventKind;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let mut w = TraceWriter::create(&dir, &HeaderInfo::default()).unwrap();
    let ev = |seq, kind| EventRecord {
        seq,
        thread: 2,
        kind,
        object: 0x5000,
        ..EventRecord::default()
    };
    w.push(ev(0, EventKind::ThreadStart)).unwrap();
    // 1,000,001 events in one record: more than a chunk holds expanded.
    w.push_run(
        &ev(1, EventKind::MutexLock),
        EventKind::MutexUnlock,
        1_000_001,
    )
    .unwrap();
    w.push(ev(1_000_002, EventKind::ThreadExit)).unwrap();
    let summary = w.finish(&OutcomeInfo::default()).unwrap();
    assert_eq!(summary.events, 1_000_003);
    let r = TraceReader::open(&dir).unwrap();
    assert_eq!(r.event_count(), 1_000_003);
    let evs: Vec<EventRecord> = r.events().map(|e| e.unwrap()).collect();
    assert_eq!(evs.len(), 1_000_003);
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
        assert_eq!(e.thread, 2);
    }
    assert_eq!(evs[1].kind, EventKind::MutexLock);
    assert_eq!(evs[2].kind, EventKind::MutexUnlock);
    assert_eq!(evs[1_000_001].kind, EventKind::MutexLock);
    assert_eq!(evs[1_000_002].kind, EventKind::ThreadExit);
}

#[test]
fn runs_of_code_entries_read_back_with_their_addresses() {
    use reprise_abi::EventKind;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let mut w = TraceWriter::create(&dir, &HeaderInfo::default()).unwrap();
    let ev = |seq, kind| EventRecord {
        seq,
        thread: 1,
        kind,
        ..EventRecord::default()
    };
    w.push(ev(0, EventKind::ThreadStart)).unwrap();
    w.push_code_run(
        &ev(1, EventKind::FuncEntry),
        &[0x1000, 0x2000, 0x1000],
        &[0x10, 0x20, 0x30],
    )
    .unwrap();
    w.push_code_run(&ev(4, EventKind::Block), &[0x1004, 0x1008], &[])
        .unwrap();
    w.push(ev(6, EventKind::ThreadExit)).unwrap();
    let summary = w.finish(&OutcomeInfo::default()).unwrap();
    assert_eq!(summary.events, 7);
    let r = TraceReader::open(&dir).unwrap();
    let evs: Vec<EventRecord> = r.events().map(|e| e.unwrap()).collect();
    let got: Vec<(u64, EventKind, u64, u64)> = evs
        .iter()
        .map(|e| (e.seq, e.kind, e.object, e.arg0))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, EventKind::ThreadStart, 0, 0),
            (1, EventKind::FuncEntry, 0x1000, 0x10),
            (2, EventKind::FuncEntry, 0x2000, 0x20),
            (3, EventKind::FuncEntry, 0x1000, 0x30),
            (4, EventKind::Block, 0x1004, 0),
            (5, EventKind::Block, 0x1008, 0),
            (6, EventKind::ThreadExit, 0, 0),
        ]
    );
    assert!(evs.iter().all(|e| e.thread == 1 && e.data.is_empty()));
}
