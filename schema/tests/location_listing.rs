mod common;
use common::*;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use reprise_abi::EventKind;
use reprise_schema::listing::*;
use reprise_schema::location::*;
use reprise_schema::*;

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| OsString::from(v))
    }
}

#[test]
fn root_rules() {
    let all = [
        ("REPRISE_TRACE_DIR", "/r"),
        ("XDG_DATA_HOME", "/x"),
        ("HOME", "/h"),
    ];
    assert_eq!(trace_root_from(env(&all)).unwrap(), PathBuf::from("/r"));
    let xh = [
        ("REPRISE_TRACE_DIR", ""),
        ("XDG_DATA_HOME", "/x"),
        ("HOME", "/h"),
    ];
    assert_eq!(
        trace_root_from(env(&xh)).unwrap(),
        PathBuf::from("/x/reprise")
    );
    let rel = [("XDG_DATA_HOME", "rel"), ("HOME", "/h")];
    assert_eq!(
        trace_root_from(env(&rel)).unwrap(),
        PathBuf::from("/h/.local/share/reprise")
    );
    let h = [("HOME", "/h")];
    assert_eq!(
        trace_root_from(env(&h)).unwrap(),
        PathBuf::from("/h/.local/share/reprise")
    );
    assert!(matches!(trace_root_from(env(&[])), Err(TraceError::NoHome)));
}

#[test]
fn root_from_real_environment_is_created_private() {
    // The only test touching the process environment.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a/b/traces");
    std::env::set_var("REPRISE_TRACE_DIR", &root);
    assert_eq!(trace_root().unwrap(), root);
    std::env::remove_var("REPRISE_TRACE_DIR");
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn numbering_latest_and_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    assert!(matches!(
        resolve_trace(&root, None),
        Err(TraceError::NoTraces { .. })
    ));
    let d0 = new_trace_dir(&root, "/usr/bin/my prog").unwrap();
    assert_eq!(d0, root.join("my_prog-0"));
    let d1 = new_trace_dir(&root, "my prog").unwrap();
    assert_eq!(d1, root.join("my_prog-1"));
    assert_eq!(
        fs::metadata(&d1).unwrap().permissions().mode() & 0o777,
        0o700
    );
    fs::remove_dir(&d0).unwrap();
    assert_eq!(new_trace_dir(&root, "my prog").unwrap(), d0);
    assert_eq!(
        new_trace_dir(&root, "my prog").unwrap(),
        root.join("my_prog-2")
    );
    assert_eq!(sanitize_program_name("../.hidden"), "hidden");
    assert_eq!(sanitize_program_name(""), "trace");

    // Concurrent reservations never collide.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || new_trace_dir(&root, "race").unwrap())
        })
        .collect();
    let mut got: Vec<PathBuf> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 8);

    // The trace writer accepts a reserved (empty) directory.
    write_trace(&d1, 5);
    set_latest(&root, &d1).unwrap();
    assert_eq!(resolve_trace(&root, None).unwrap(), d1);
    assert_eq!(
        fs::read_link(root.join("latest-trace")).unwrap(),
        PathBuf::from("my_prog-1")
    );
    set_latest(&root, &d0).unwrap();
    assert_eq!(resolve_trace(&root, None).unwrap(), d0);
    assert_eq!(resolve_trace(&root, Some("my_prog-1")).unwrap(), d1);
    assert_eq!(
        resolve_trace(&root, Some(d1.to_str().unwrap())).unwrap(),
        d1
    );
    let e = resolve_trace(&root, Some("nope-3"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "no trace named nope-3 in {}; `reprise ls` lists them",
            root.display()
        )
    );
    let e = resolve_trace(&root, Some("/no/such/dir")).unwrap_err();
    assert!(matches!(e, TraceError::NotFound { .. }));
    fs::remove_dir(&d0).unwrap();
    assert!(matches!(
        resolve_trace(&root, None),
        Err(TraceError::LatestGone { .. })
    ));
    assert_eq!(
        TraceError::NoTraces { root: root.clone() }.to_string(),
        "no traces yet: record one with `reprise record PROGRAM`"
    );
}

#[test]
fn listing_shows_traces_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = new_trace_dir(root, "prog").unwrap();
    write_trace(&a, 100);
    let b = new_trace_dir(root, "prog").unwrap();
    let mut w = TraceWriter::create(
        &b,
        &HeaderInfo {
            start_time_unix_ns: 1_800_000_000_000_000_000,
            recorded_events: 0,
            block_period: 0,
            chaos: false,
            ..header()
        },
    )
    .unwrap();
    w.push(event(0)).unwrap();
    w.flush().unwrap();
    std::mem::forget(w); // as if the recorder was killed
    fs::create_dir(root.join("junk")).unwrap();
    set_latest(root, &a).unwrap();
    let rows = list_traces(root);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let ra = rows.iter().find(|r| r.name == "prog-0").unwrap();
    assert!(ra.complete);
    assert_eq!(ra.events, 100);
    assert_eq!(ra.outcome, "deadlock between t1 and t2");
    assert_eq!(ra.level, Some(SketchLevel::Sys));
    assert!(ra.size_bytes > 0);
    let rb = rows.iter().find(|r| r.name == "prog-1").unwrap();
    assert!(!rb.complete);
    assert!(rb.outcome.contains("incomplete"));
    let rj = rows.iter().find(|r| r.name == "junk").unwrap();
    assert!(rj.error.as_ref().unwrap().contains("has no header"));
    let table = format_trace_table(&rows);
    println!("{table}");
    assert!(table.starts_with("NAME"));
    assert!(table.contains("2023-11-14 22:13:20"));
    assert!(table.contains("error: not a reprise trace"));
    assert_eq!(format_time_utc(0), "1970-01-01 00:00:00");
    assert_eq!(
        format_time_utc(951_782_400_000_000_000),
        "2000-02-29 00:00:00"
    );
    assert_eq!(human_size(1536), "1.5 KiB");
}

#[test]
fn event_lines() {
    let lock = EventRecord {
        seq: 57,
        process: 0,
        thread: 3,
        kind: EventKind::MutexLock,
        object: 0x5555555580a0,
        ..Default::default()
    };
    assert_eq!(
        format_event(&lock),
        "#57 p0 t3 pthread_mutex_lock(0x5555555580a0) = 0"
    );
    let busy = EventRecord {
        kind: EventKind::MutexTrylock,
        result: 16,
        ..lock.clone()
    };
    assert_eq!(
        format_event(&busy),
        "#57 p0 t3 pthread_mutex_trylock(0x5555555580a0) = 16 (EBUSY)"
    );
    let read = EventRecord {
        seq: 60,
        thread: 1,
        kind: EventKind::Syscall,
        object: 0,
        arg0: 3,
        arg1: 0x7ffc1000,
        result: 13,
        data: b"hello world!\n".to_vec(),
        ..Default::default()
    };
    assert_eq!(
        format_event(&read),
        "#60 p0 t1 read(fd=3, buf=0x7ffc1000) = 13 [13 bytes: \"hello world!\\n\"]"
    );
    let eagain = EventRecord {
        object: 45,
        result: -11,
        data: vec![],
        ..read.clone()
    };
    assert_eq!(
        format_event(&eagain),
        "#60 p0 t1 recvfrom(fd=3, buf=0x7ffc1000) = -11 (EAGAIN)"
    );
    let rnd = EventRecord {
        object: 318,
        arg0: 0x1000,
        arg1: 16,
        result: 16,
        data: vec![0xff; 16],
        ..read.clone()
    };
    assert!(format_event(&rnd)
        .starts_with("#60 p0 t1 getrandom(buf=0x1000, count=16) = 16 [16 bytes: \"\\xff"));
    let mmap = EventRecord {
        object: 9,
        arg0: 0,
        arg1: 4096,
        result: 0x7f0000000000,
        data: vec![],
        ..read.clone()
    };
    assert_eq!(
        format_event(&mmap),
        "#60 p0 t1 mmap(addr=0x0, length=4096) = 0x7f0000000000"
    );
    let pid = EventRecord {
        object: 39,
        result: 1234,
        data: vec![],
        ..read.clone()
    };
    assert_eq!(format_event(&pid), "#60 p0 t1 getpid() = 1234");
    let unk = EventRecord {
        object: 999,
        arg0: 1,
        arg1: 2,
        result: 0,
        data: vec![],
        ..read
    };
    assert_eq!(
        format_event(&unk),
        "#60 p0 t1 syscall_999(a0=0x1, a1=0x2) = 0"
    );
    for n in [
        0, 1, 17, 19, 20, 45, 47, 318, 228, 96, 201, 39, 110, 186, 9, 257, 3,
    ] {
        assert!(!syscall_name(n).starts_with("syscall_"), "{n}");
    }
    let create = EventRecord {
        kind: EventKind::ThreadCreate,
        arg0: 2,
        ..lock.clone()
    };
    assert_eq!(
        format_event(&create),
        "#57 p0 t3 pthread_create() = 0 -> t2"
    );
    // Every kind formats.
    for k in EventKind::ALL {
        assert!(!format_event(&EventRecord {
            kind: k,
            ..lock.clone()
        })
        .is_empty());
    }
}

#[test]
fn ranges() {
    assert_eq!(parse_range("100-200").unwrap(), 100..=200);
    assert_eq!(parse_range("100-").unwrap(), 100..=u64::MAX);
    assert_eq!(parse_range("-50").unwrap(), 0..=50);
    assert_eq!(parse_range("7").unwrap(), 7..=7);
    assert_eq!(parse_range(" 3 - 4 ").unwrap(), 3..=4);
    for bad in ["", "-", "a", "5-3", "1-2-3", "x-"] {
        let e = parse_range(bad).unwrap_err().to_string();
        assert!(e.contains("use N, N-M, N- or -M"), "{bad}: {e}");
    }
}

#[test]
fn outcome_report() {
    let text = format_outcome(&outcome());
    println!("{text}");
    assert!(text.starts_with("outcome: deadlock\n"));
    assert!(text.contains("deadlock cycle: 0xa0 -> 0xb0 -> 0xa0"));
    assert!(text.contains("p0 t1 (tid 100): waiting in pthread_mutex_lock(0xa0), holding 0xb0"));
    assert!(text.contains("#0 0x401000 in fn0 at src/\u{fffd}a.c:0"));
    let segv = OutcomeInfo {
        kind: OutcomeKind::Signaled,
        signal: 11,
        signal_code: 1,
        fault_addr: 0,
        pc: 0x401136,
        thread: 2,
        backtrace: vec![Frame {
            pc: 0x401136,
            function: "worker".into(),
            file: "bug.c".into(),
            line: 12,
            ..Default::default()
        }],
        ..Default::default()
    };
    let t = format_outcome(&segv);
    assert!(
        t.starts_with(
            "outcome: signaled in p0 t2: SIGSEGV (SEGV_MAPERR) at address 0x0, pc 0x401136\n"
        ),
        "{t}"
    );
    assert!(t.contains("  #0 0x401136 in worker at bug.c:12\n"));
    let exit = OutcomeInfo {
        kind: OutcomeKind::Exited,
        exit_code: 3,
        ..Default::default()
    };
    assert!(format_outcome(&exit).starts_with("outcome: exited with status 3\n"));
    let a = OutcomeInfo {
        kind: OutcomeKind::Assertion,
        signal: 6,
        assertion: "prog.c:10: main: Assertion `x' failed.".into(),
        ..Default::default()
    };
    let t = format_outcome(&a);
    assert!(
        t.contains("SIGABRT") && t.contains("assertion: prog.c:10"),
        "{t}"
    );
}
