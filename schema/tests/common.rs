#![allow(dead_code)]
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use reprise_abi::EventKind;
use reprise_schema::*;

pub fn header() -> HeaderInfo {
    HeaderInfo {
        format_version: FORMAT_VERSION,
        reprise_version: REPRISE_VERSION.into(),
        program_path: PathBuf::from(OsString::from_vec(b"/tmp/bin/pr\xffog".to_vec())),
        program_digest: vec![0xab; 32],
        build_id: vec![1, 2, 3, 4],
        argv: vec![
            OsString::from("prog"),
            OsString::from_vec(b"--na\xfeme=\x00x".to_vec()),
        ],
        env: vec![
            OsString::from("A=1"),
            OsString::from_vec(b"B=\xc3\x28".to_vec()),
        ],
        cwd: PathBuf::from(OsString::from_vec(b"/home/\xe9t\xe9".to_vec())),
        level: SketchLevel::Sys,
        machine: "x86_64 host".into(),
        kernel: "Linux 6.1".into(),
        cpus: 2,
        start_time_unix_ns: 1_700_000_000_123_456_789,
        recorded_events: 0,
        block_period: 0,
        chaos: false,
    }
}

pub fn event(seq: u64) -> EventRecord {
    let kind = EventKind::ALL[(seq % EventKind::ALL.len() as u64) as usize];
    EventRecord {
        seq,
        process: (seq % 3) as u16,
        thread: (seq % 7) as u32,
        kind,
        object: 0x5555_5555_8000 + seq * 8,
        arg0: seq.wrapping_mul(31),
        arg1: !seq,
        result: -(seq as i64 % 5),
        extra: seq ^ 0xdead,
        data: if seq % 10 == 3 {
            (0..(seq % 300) as u8).collect()
        } else {
            Vec::new()
        },
    }
}

pub fn outcome() -> OutcomeInfo {
    let frame = |i: u64| Frame {
        pc: 0x401000 + i,
        function: format!("fn{i}"),
        file: PathBuf::from(OsString::from_vec(b"src/\xffa.c".to_vec())),
        line: i as u32,
        module: PathBuf::from("/bin/prog"),
        offset: i * 16,
    };
    OutcomeInfo {
        kind: OutcomeKind::Deadlock,
        exit_code: 0,
        signal: 11,
        signal_code: 1,
        fault_addr: 0x10,
        pc: 0x401136,
        registers: (0..18).collect(),
        process: 0,
        thread: 2,
        backtrace: vec![frame(0), frame(1)],
        assertion: "x == 1".into(),
        threads: vec![
            ThreadState {
                process: 0,
                thread: 1,
                tid: 100,
                waiting_on: 0xa0,
                wait_kind: EventKind::MutexLock,
                held: vec![0xb0],
                backtrace: vec![frame(5)],
            },
            ThreadState {
                process: 0,
                thread: 2,
                tid: 101,
                waiting_on: 0xb0,
                wait_kind: EventKind::RwWrlock,
                held: vec![0xa0, 0xc0],
                backtrace: vec![],
            },
        ],
        cycle: vec![0xa0, 0xb0],
        output: vec![OutputStream {
            fd: 1,
            length: 13,
            digest: 0x1234,
            kept_bytes: 13,
        }],
        event_count: 1000,
        duration_ns: 1_500_000_000,
        dropped_events: 0,
        summary: "deadlock between t1 and t2".into(),
        expected_output: b"total=42\n".to_vec(),
        output_line: 1,
        output_line_start: 0,
    }
}

/// Writes a complete trace of `n` events into `dir`.
pub fn write_trace(dir: &Path, n: u64) -> TraceSummary {
    let mut w = TraceWriter::create(dir, &header()).unwrap();
    for i in 0..n {
        w.push(event(i)).unwrap();
    }
    w.finish(&outcome()).unwrap()
}

pub fn read_all(dir: &Path) -> Result<Vec<EventRecord>> {
    TraceReader::open(dir)?.events().collect()
}
