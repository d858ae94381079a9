//! Cut-short, corrupt and foreign traces.
mod common;
use common::*;

use std::fs;
use std::path::Path;

use reprise_schema::*;

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// Offsets of the chunk boundaries of an events file.
fn boundaries(events: &[u8]) -> Vec<usize> {
    let mut v = vec![0];
    let mut pos = 0;
    while pos < events.len() {
        let stored = u32::from_le_bytes(events[pos + 8..pos + 12].try_into().unwrap()) as usize;
        pos += 32 + stored;
        v.push(pos);
    }
    v
}

#[test]
fn truncated_traces_read_whole_chunks_with_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    write_trace(&orig, 30_000); // chunks of 8192: 4 chunks
    let events = fs::read(orig.join("events")).unwrap();
    let b = boundaries(&events);
    assert_eq!(b.len(), 5);
    let cuts = [
        0,
        10,
        32,
        b[1] - 1,
        b[1],
        b[1] + 5,
        b[2] + 40,
        b[3] - 1,
        b[3],
        events.len() - 1,
    ];
    for (i, &cut) in cuts.iter().enumerate() {
        for marker in [true, false] {
            let d = tmp.path().join(format!("cut{i}-{marker}"));
            copy_dir(&orig, &d);
            fs::write(d.join("events"), &events[..cut]).unwrap();
            if marker {
                fs::remove_file(d.join("outcome")).unwrap();
                fs::write(d.join("incomplete"), b"").unwrap();
            }
            let whole = b.iter().filter(|&&x| x <= cut).count() - 1;
            let expect = (whole * 8192).min(30_000);
            let r = TraceReader::open(&d).unwrap();
            assert_eq!(r.is_complete(), !marker);
            assert_eq!(r.outcome().is_some(), !marker);
            let evs: Vec<_> = r.events().collect::<Result<_>>().unwrap();
            assert_eq!(evs.len(), expect, "cut at {cut}");
            for (j, e) in evs.iter().enumerate() {
                assert_eq!(e, &event(j as u64));
            }
            if marker {
                assert_eq!(
                    r.warnings(),
                    &[format!("trace is incomplete (recording was cut short): read {expect} events up to the last whole chunk")]
                );
            } else if b.contains(&cut) {
                assert!(r.warnings().is_empty(), "{:?}", r.warnings());
            } else {
                assert_eq!(r.warnings().len(), 1, "cut at {cut}");
                assert!(r.warnings()[0].contains("cut short"), "{:?}", r.warnings());
                assert!(r.warnings()[0].contains(&format!("read {expect} events")));
            }
        }
    }
}

#[test]
fn zero_filled_tail_is_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("t");
    write_trace(&d, 10_000);
    let mut events = fs::read(d.join("events")).unwrap();
    let b = boundaries(&events);
    events.truncate(b[1]);
    events.extend_from_slice(&[0u8; 4096]);
    fs::write(d.join("events"), &events).unwrap();
    fs::write(d.join("incomplete"), b"").unwrap();
    assert_eq!(read_all(&d).unwrap().len(), 8192);
}

#[test]
fn dropped_writer_leaves_incomplete_readable_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("t");
    let mut w = TraceWriter::create(&d, &header()).unwrap();
    for i in 0..100 {
        w.push(event(i)).unwrap();
    }
    assert_eq!(w.events_written(), 0);
    w.flush().unwrap();
    assert_eq!(w.events_written(), 100);
    for i in 100..150 {
        w.push(event(i)).unwrap();
    }
    // While the writer is alive, a reader sees what was flushed.
    let r = TraceReader::open(&d).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.events().count(), 100);
    drop(w);
    let r = TraceReader::open(&d).unwrap();
    assert!(!r.is_complete());
    assert!(r.outcome().is_none());
    assert_eq!(r.events().count(), 150);
    assert!(r.warnings()[0].starts_with("trace is incomplete"));
}

#[test]
fn corrupt_chunk_is_an_error_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    write_trace(&orig, 20_000);
    let events = fs::read(orig.join("events")).unwrap();
    let b = boundaries(&events);

    // Payload byte flipped in the second chunk: CRC mismatch.
    let d = tmp.path().join("crc");
    copy_dir(&orig, &d);
    let mut e = events.clone();
    e[b[1] + 100] ^= 0x40;
    fs::write(d.join("events"), &e).unwrap();
    let r = TraceReader::open(&d).unwrap();
    let res: Vec<_> = r.events().collect();
    assert_eq!(res.len(), 8193);
    let err = res.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&format!("at byte {}", b[1])), "{err}");
    assert!(err.contains("/crc/events"), "{err}");
    assert!(!err.contains('\n'));

    // Bad magic of a chunk in the middle.
    let d = tmp.path().join("magic");
    copy_dir(&orig, &d);
    let mut e = events.clone();
    e[b[1]] = b'X';
    fs::write(d.join("events"), &e).unwrap();
    let err = read_all(&d).unwrap_err().to_string();
    assert!(err.contains("bad chunk magic"), "{err}");
    assert!(err.contains(&format!("at byte {}", b[1])), "{err}");

    // Valid frame around a payload that is not a capnp message.
    let d = tmp.path().join("capnp");
    copy_dir(&orig, &d);
    let junk = vec![0xffu8; 64];
    let h = frame::FrameHeader {
        flags: 0,
        stored_len: 64,
        raw_len: 64,
        crc: crc32fast::hash(&junk),
        count: 1,
    };
    let mut e = events[..b[1]].to_vec();
    e.extend_from_slice(&h.encode());
    e.extend_from_slice(&junk);
    fs::write(d.join("events"), &e).unwrap();
    let err = read_all(&d).unwrap_err().to_string();
    assert!(err.contains("bad chunk contents"), "{err}");
    assert!(err.contains(&format!("at byte {}", b[1])), "{err}");

    // Corrupt header file.
    let d = tmp.path().join("hdr");
    copy_dir(&orig, &d);
    let mut h = fs::read(d.join("header")).unwrap();
    let n = h.len();
    h[n - 3] ^= 1;
    fs::write(d.join("header"), &h).unwrap();
    let err = TraceReader::open(&d).unwrap_err().to_string();
    assert!(
        err.contains("header at byte 0: chunk checksum mismatch"),
        "{err}"
    );
}

#[test]
fn not_a_trace_missing_and_newer_format() {
    let tmp = tempfile::tempdir().unwrap();
    let err = TraceReader::open(tmp.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "not a reprise trace: {} has no header",
            tmp.path().display()
        )
    );

    let missing = tmp.path().join("missing");
    let err = TraceReader::open(&missing).unwrap_err();
    assert!(matches!(err, TraceError::NotFound { .. }));
    assert!(err.to_string().contains("does not exist"), "{err}");

    let d = tmp.path().join("new");
    let mut h = header();
    h.format_version = 7;
    let w = TraceWriter::create(&d, &h).unwrap();
    w.finish(&outcome()).unwrap();
    let err = TraceReader::open(&d).unwrap_err().to_string();
    assert_eq!(
        err,
        "trace format version 7 is newer than this reprise (2): upgrade reprise"
    );
}

/// Random byte flips, truncations and splices of a real trace: Ok or Err,
/// never a panic.
#[test]
fn fuzzed_traces_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    write_trace(&orig, 9000);
    write_schedule(
        &orig,
        &ScheduleInfo {
            strategy: "x".into(),
            seed: 1,
            attempts: 2,
            decisions: vec![Decision::default(); 3],
            ..Default::default()
        },
    )
    .unwrap();
    let files = ["header", "events", "outcome", "schedule"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(orig.join(f)).unwrap())
        .collect();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let d = tmp.path().join("fuzz");
    copy_dir(&orig, &d);
    let (mut ok, mut err) = (0, 0);
    for round in 0..300 {
        let fi = (next() % 4) as usize;
        let mut bytes = originals[fi].clone();
        match round % 4 {
            0 | 1 => {
                for _ in 0..(1 + next() % 4) {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] ^= 1 << (next() % 8);
                }
            }
            2 => {
                let n = (next() as usize) % (bytes.len() + 1);
                bytes.truncate(n);
            }
            _ => {
                // Flip bytes and fix up the frame checksums, so the capnp
                // decoder and the decompressor see the damage.
                if bytes.len() > 40 {
                    let hdr_stored = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
                    let end = (32 + hdr_stored).min(bytes.len());
                    for _ in 0..(1 + next() % 8) {
                        let i = 32 + (next() as usize) % (end - 32);
                        bytes[i] = next() as u8;
                    }
                    let crc = crc32fast::hash(&bytes[32..end]);
                    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
                    let hcrc = crc32fast::hash(&bytes[0..28]);
                    bytes[28..32].copy_from_slice(&hcrc.to_le_bytes());
                }
            }
        }
        fs::write(d.join(files[fi]), &bytes).unwrap();
        match TraceReader::open(&d) {
            Ok(r) => {
                let _ = r.schedule();
                let _ = listing::format_outcome(&r.outcome().cloned().unwrap_or_default());
                let mut n = 0;
                for e in r.events() {
                    match e {
                        Ok(e) => {
                            let _ = listing::format_event(&e);
                            n += 1;
                        }
                        Err(e) => {
                            assert!(!e.to_string().is_empty());
                            err += 1;
                        }
                    }
                }
                assert!(n <= 9000);
                ok += 1;
            }
            Err(e) => {
                assert!(!e.to_string().contains('\n'));
                err += 1;
            }
        }
        fs::write(d.join(files[fi]), &originals[fi]).unwrap();
    }
    println!("fuzz: {ok} opened, {err} errors");
    assert!(ok > 0 && err > 0);
}
