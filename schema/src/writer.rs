//! Writing a trace: incremental, chunked, completed atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use capnp::message::{Builder, ScratchSpaceHeapAllocator};

use crate::convert;
use crate::error::{Result, TraceError};
use crate::frame::{encode_frame, encode_frame_parts, ZSTD_LEVEL};
use crate::trace_capnp as tc;
use crate::types::*;

pub(crate) const HEADER_FILE: &str = "header";
pub(crate) const EVENTS_FILE: &str = "events";
pub(crate) const OUTCOME_FILE: &str = "outcome";
pub(crate) const SCHEDULE_FILE: &str = "schedule";
pub(crate) const INCOMPLETE_FILE: &str = "incomplete";

/// A chunk is written once this many events are buffered ...
pub const CHUNK_EVENTS: usize = 8192;
/// ... or this many data bytes.
pub const CHUNK_DATA_BYTES: usize = 1 << 20;

/// Capnp words of one `Event` struct in a list (7 data words, 1 pointer).
const EVENT_WORDS: usize = 10;
/// Events (runs expanded) per chunk at most: readers expand a chunk in
/// memory.
const CHUNK_EXPANDED_EVENTS: u64 = 1 << 18;

/// An event's fixed-size fields, buffered until the chunk is written; the
/// data bytes go to one shared buffer, so buffering never allocates.
#[derive(Clone, Copy)]
struct Fixed {
    seq: u64,
    object: u64,
    arg0: u64,
    arg1: u64,
    result: i64,
    extra: u64,
    thread: u32,
    data_len: u32,
    process: u16,
    kind: u16,
    /// 0: one event; N > 1: a run of N events (see `Event.repeat`).
    repeat: u64,
    alt_kind: u16,
}

/// Writes one trace directory. See the crate documentation for the layout.
///
/// Events are buffered and written in chunks of [`CHUNK_EVENTS`] events or
/// [`CHUNK_DATA_BYTES`] of data, so a trace cut short by a crash still reads
/// up to its last whole chunk. The `incomplete` marker is removed by
/// [`TraceWriter::finish`], last.
pub struct TraceWriter {
    dir: PathBuf,
    events_path: PathBuf,
    events_file: File,
    fixed: Vec<Fixed>,
    /// Events the buffered records stand for (runs count as many).
    buffered_events: u64,
    data: Vec<u8>,
    scratch: Vec<capnp::Word>,
    raw: Vec<u8>,
    out: Vec<u8>,
    cctx: zstd::zstd_safe::CCtx<'static>,
    events_written: u64,
    bytes_written: u64,
    /// Length of the events file up to its last whole chunk.
    events_len: u64,
    dropped: u64,
    failed: bool,
    finished: bool,
}

pub(crate) fn create_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TraceError::io("create", path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TraceError::io("sync", dir, e))
}

/// Writes `bytes` (one framed chunk) to `dir/name` atomically: a temporary
/// file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let res = (|| {
        let mut f = create_file(&tmp)?;
        f.write_all(bytes)
            .map_err(|e| TraceError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| TraceError::io("sync", &tmp, e))?;
        drop(f);
        let dst = dir.join(name);
        fs::rename(&tmp, &dst).map_err(|e| TraceError::io("rename to", &dst, e))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Frames a whole small message (header, outcome, schedule).
pub(crate) fn frame_message(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match zstd::bulk::Compressor::new(ZSTD_LEVEL) {
        Ok(mut c) => encode_frame(raw, 1, &mut c, &mut out),
        Err(_) => unreachable_compressor(raw, &mut out),
    }
    out
}

/// zstd could not even create a context (out of memory): store raw.
fn unreachable_compressor(raw: &[u8], out: &mut Vec<u8>) {
    let h = crate::frame::FrameHeader {
        flags: 0,
        stored_len: raw.len() as u32,
        raw_len: raw.len() as u32,
        crc: crc32fast::hash(raw),
        count: 1,
    };
    out.clear();
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(raw);
}

impl TraceWriter {
    /// Creates the trace directory `dir` (mode 0700; it may already exist if
    /// empty, as made by [`crate::location::new_trace_dir`]), marks it
    /// incomplete and writes the header.
    pub fn create(dir: &Path, header: &HeaderInfo) -> Result<TraceWriter> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let empty = fs::read_dir(dir)
                    .map_err(|e| TraceError::io("read directory", dir, e))?
                    .next()
                    .is_none();
                if !empty {
                    return Err(TraceError::Exists {
                        dir: dir.to_path_buf(),
                    });
                }
            }
            Err(e) => return Err(TraceError::io("create directory", dir, e)),
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| TraceError::io("set permissions of", dir, e))?;

        let marker = dir.join(INCOMPLETE_FILE);
        let mut m = create_file(&marker)?;
        m.write_all(
            b"reprise is writing this trace; if it is not running, the recording was cut short\n",
        )
        .map_err(|e| TraceError::io("write", &marker, e))?;
        drop(m);

        let mut header = header.clone();
        if header.format_version == 0 {
            header.format_version = crate::FORMAT_VERSION;
        }
        let framed = frame_message(&convert::header_to_bytes(&header));
        let hpath = dir.join(HEADER_FILE);
        let mut hf = create_file(&hpath)?;
        hf.write_all(&framed)
            .and_then(|_| hf.sync_all())
            .map_err(|e| TraceError::io("write", &hpath, e))?;

        let events_path = dir.join(EVENTS_FILE);
        let events_file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&events_path)
            .map_err(|e| TraceError::io("create", &events_path, e))?;
        sync_dir(dir)?;

        Ok(TraceWriter {
            dir: dir.to_path_buf(),
            events_path,
            events_file,
            fixed: Vec::with_capacity(CHUNK_EVENTS),
            buffered_events: 0,
            data: Vec::new(),
            scratch: Vec::new(),
            raw: Vec::new(),
            out: Vec::new(),
            cctx: {
                let mut c = zstd::zstd_safe::CCtx::create();
                let _ = c.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(ZSTD_LEVEL));
                c
            },
            events_written: 0,
            bytes_written: framed.len() as u64,
            events_len: 0,
            dropped: 0,
            failed: false,
            finished: false,
        })
    }

    /// The trace directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Buffers one event (see [`TraceWriter::push_ref`]).
    #[inline]
    pub fn push(&mut self, ev: EventRecord) -> Result<()> {
        self.push_ref(&ev)
    }

    /// Buffers one event, writing a chunk when enough are buffered. Never
    /// allocates per event (the data bytes are copied into a shared buffer).
    /// Returns [`TraceError::DiskFull`] if the chunk could not be written;
    /// after that, events are counted as dropped and the error repeats.
    #[inline]
    pub fn push_ref(&mut self, ev: &EventRecord) -> Result<()> {
        if self.failed {
            self.dropped += 1;
            return Err(self.failed_error());
        }
        let len = ev.data.len().min(u32::MAX as usize);
        self.fixed.push(Fixed {
            seq: ev.seq,
            object: ev.object,
            arg0: ev.arg0,
            arg1: ev.arg1,
            result: ev.result,
            extra: ev.extra,
            thread: ev.thread,
            data_len: len as u32,
            process: ev.process,
            kind: ev.kind as u16,
            repeat: 0,
            alt_kind: 0,
        });
        self.buffered_events += 1;
        if len != 0 {
            self.data.extend_from_slice(&ev.data[..len]);
        }
        self.maybe_write_chunk()
    }

    fn maybe_write_chunk(&mut self) -> Result<()> {
        if self.fixed.len() >= CHUNK_EVENTS
            || self.data.len() >= CHUNK_DATA_BYTES
            || self.buffered_events >= CHUNK_EXPANDED_EVENTS
        {
            self.write_chunk()
        } else {
            Ok(())
        }
    }

    /// Buffers a run: `count` events of `first`'s thread and object at
    /// sequence numbers `first.seq ..`, their kinds alternating
    /// `first.kind`, `alt_kind`, results 0, no data. Readers see the
    /// individual events.
    pub fn push_run(
        &mut self,
        first: &EventRecord,
        alt_kind: reprise_abi::EventKind,
        count: u64,
    ) -> Result<()> {
        if count <= 1 {
            return self.push_ref(first);
        }
        if self.failed {
            self.dropped += count;
            return Err(self.failed_error());
        }
        self.fixed.push(Fixed {
            seq: first.seq,
            object: first.object,
            arg0: first.arg0,
            arg1: first.arg1,
            result: 0,
            extra: first.extra,
            thread: first.thread,
            data_len: 0,
            process: first.process,
            kind: first.kind as u16,
            repeat: count,
            alt_kind: alt_kind as u16,
        });
        self.buffered_events += count;
        self.maybe_write_chunk()
    }

    /// Buffers a run of `objects.len()` function or block entries of
    /// `first`'s thread at sequence numbers `first.seq ..` (`first.kind`),
    /// with their addresses and, for function entries, their call sites
    /// (`sites`, as long; ignored for blocks). Readers see the individual
    /// events.
    pub fn push_code_run(
        &mut self,
        first: &EventRecord,
        objects: &[u64],
        sites: &[u64],
    ) -> Result<()> {
        let n = objects.len() as u64;
        if n <= 1 {
            return self.push_ref(first);
        }
        if self.failed {
            self.dropped += n;
            return Err(self.failed_error());
        }
        let with_sites = first.kind == reprise_abi::EventKind::FuncEntry;
        let before = self.data.len();
        for o in objects {
            self.data.extend_from_slice(&o.to_le_bytes());
        }
        if with_sites {
            for s in sites
                .iter()
                .chain(std::iter::repeat(&0))
                .take(objects.len())
            {
                self.data.extend_from_slice(&s.to_le_bytes());
            }
        }
        self.fixed.push(Fixed {
            seq: first.seq,
            object: objects[0],
            arg0: 0,
            arg1: 0,
            result: 0,
            extra: 0,
            thread: first.thread,
            data_len: (self.data.len() - before) as u32,
            process: first.process,
            kind: first.kind as u16,
            repeat: n,
            alt_kind: first.kind as u16,
        });
        self.buffered_events += n;
        self.maybe_write_chunk()
    }

    fn failed_error(&self) -> TraceError {
        TraceError::DiskFull {
            path: self.events_path.clone(),
        }
    }

    /// Writes the buffered events as one chunk (nothing if none).
    pub fn flush(&mut self) -> Result<()> {
        self.write_chunk()
    }

    /// Events in whole chunks on disk.
    pub fn events_written(&self) -> u64 {
        self.events_written
    }

    /// Events buffered, not yet written.
    pub fn events_buffered(&self) -> u64 {
        self.buffered_events
    }

    /// Bytes written to all trace files so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Events lost because a chunk could not be written.
    pub fn events_dropped(&self) -> u64 {
        self.dropped
    }

    fn build_chunk(&mut self) {
        let n = self.fixed.len();
        let data_words: usize = self
            .fixed
            .iter()
            .map(|f| (f.data_len as usize).div_ceil(8))
            .sum();
        let words = 8 + n * EVENT_WORDS + data_words;
        if self.scratch.len() < words {
            self.scratch = capnp::Word::allocate_zeroed_vec(words);
        }
        let bytes = capnp::Word::words_to_bytes_mut(&mut self.scratch[..words]);
        let mut msg = Builder::new(ScratchSpaceHeapAllocator::new(bytes));
        {
            let root = msg.init_root::<tc::event_chunk::Builder>();
            let mut list = root.init_events(n as u32);
            let mut off = 0usize;
            for (i, f) in self.fixed.iter().enumerate() {
                let mut e = list.reborrow().get(i as u32);
                e.set_seq(f.seq);
                e.set_process(f.process);
                e.set_thread(f.thread);
                e.set_kind(tc::EventKind::try_from(f.kind).unwrap_or(tc::EventKind::MutexLock));
                e.set_object(f.object);
                e.set_arg0(f.arg0);
                e.set_arg1(f.arg1);
                e.set_result(f.result);
                e.set_extra(f.extra);
                if f.repeat > 1 {
                    e.set_repeat(f.repeat);
                    e.set_alt_kind(
                        tc::EventKind::try_from(f.alt_kind).unwrap_or(tc::EventKind::MutexLock),
                    );
                }
                if f.data_len != 0 {
                    let end = off + f.data_len as usize;
                    e.set_data(&self.data[off..end]);
                    off = end;
                }
            }
        }
        // The serialized form: segment table, then the segments, compressed
        // straight from the builder's memory.
        let segs = msg.get_segments_for_output();
        let nseg = segs.len() as u32;
        self.raw.clear();
        self.raw.extend_from_slice(&(nseg - 1).to_le_bytes());
        for seg in segs.iter() {
            self.raw
                .extend_from_slice(&((seg.len() / 8) as u32).to_le_bytes());
        }
        if nseg & 1 == 0 {
            self.raw.extend_from_slice(&[0u8; 4]);
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + segs.len());
        parts.push(&self.raw);
        parts.extend(segs.iter().copied());
        encode_frame_parts(
            &parts,
            self.buffered_events as u32,
            &mut self.cctx,
            &mut self.out,
        );
    }

    fn write_chunk(&mut self) -> Result<()> {
        if self.fixed.is_empty() {
            return Ok(());
        }
        let n = self.buffered_events;
        self.buffered_events = 0;
        if self.failed {
            self.dropped += n;
            self.fixed.clear();
            self.data.clear();
            return Err(self.failed_error());
        }
        self.buffered_events = n; // build_chunk writes it into the frame header
        self.build_chunk();
        self.buffered_events = 0;
        self.fixed.clear();
        self.data.clear();
        match self.events_file.write_all(&self.out) {
            Ok(()) => {
                self.events_len += self.out.len() as u64;
                self.bytes_written += self.out.len() as u64;
                self.events_written += n;
                Ok(())
            }
            Err(e) => {
                // Cut the partial chunk off (this frees space, so it works on
                // a full disk); what was whole stays readable.
                let _ = self.events_file.set_len(self.events_len);
                self.failed = true;
                self.dropped += n;
                Err(TraceError::io("write", &self.events_path, e))
            }
        }
    }

    /// Writes the last chunk and the outcome, syncs everything and removes
    /// the `incomplete` marker, last. After a [`TraceError::DiskFull`] it
    /// still completes the trace with what was written; the events lost are
    /// in `TraceSummary::dropped_events` and added to the outcome's
    /// `dropped_events`. It fails (leaving the trace incomplete) only if the
    /// outcome cannot be written.
    pub fn finish(mut self, outcome: &OutcomeInfo) -> Result<TraceSummary> {
        self.finished = true;
        let _ = self.write_chunk();
        let _ = self.events_file.sync_all();
        let mut o = outcome.clone();
        o.dropped_events += self.dropped;
        let framed = frame_message(&convert::outcome_to_bytes(&o));
        write_atomic(&self.dir, OUTCOME_FILE, &framed)?;
        self.bytes_written += framed.len() as u64;
        let marker = self.dir.join(INCOMPLETE_FILE);
        match fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(TraceError::io("remove", &marker, e)),
        }
        sync_dir(&self.dir)?;
        Ok(TraceSummary {
            events: self.events_written,
            bytes: self.bytes_written,
            path: self.dir.clone(),
            dropped_events: self.dropped,
        })
    }
}

impl Drop for TraceWriter {
    /// A writer dropped without `finish` (an error path, a panic) writes what
    /// it buffered; the trace stays marked incomplete.
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.write_chunk();
        }
    }
}

/// Saves a reproducing schedule into the trace `dir`, atomically (temporary
/// file + rename), replacing any earlier one.
pub fn write_schedule(dir: &Path, schedule: &ScheduleInfo) -> Result<()> {
    if !dir.is_dir() {
        return Err(TraceError::NotFound {
            dir: dir.to_path_buf(),
        });
    }
    let framed = frame_message(&convert::schedule_to_bytes(schedule));
    write_atomic(dir, SCHEDULE_FILE, &framed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ENOSPC while writing a chunk: DiskFull, the whole chunks before it
    /// stay readable, and finish still completes the trace.
    #[test]
    fn disk_full_is_typed_and_finish_completes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        let mut w = TraceWriter::create(&dir, &HeaderInfo::default()).unwrap();
        let ev = |seq| EventRecord {
            seq,
            ..Default::default()
        };
        for i in 0..CHUNK_EVENTS as u64 {
            w.push(ev(i)).unwrap();
        }
        assert_eq!(w.events_written(), CHUNK_EVENTS as u64);
        // Every write now fails with ENOSPC.
        w.events_file = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut err = None;
        for i in 0..CHUNK_EVENTS as u64 {
            if let Err(e) = w.push(ev(CHUNK_EVENTS as u64 + i)) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("DiskFull");
        assert!(err.is_disk_full(), "{err}");
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(w.push(ev(0)).unwrap_err().is_disk_full());
        let s = w.finish(&OutcomeInfo::default()).unwrap();
        assert_eq!(s.events, CHUNK_EVENTS as u64);
        assert_eq!(s.dropped_events, CHUNK_EVENTS as u64 + 1);
        let r = crate::TraceReader::open(&dir).unwrap();
        assert!(r.is_complete());
        assert_eq!(r.outcome().unwrap().dropped_events, CHUNK_EVENTS as u64 + 1);
        assert_eq!(r.events().count(), CHUNK_EVENTS);
    }

    #[test]
    fn event_kind_numbering_matches_schema() {
        for k in reprise_abi::EventKind::ALL {
            let c = tc::EventKind::try_from(k as u16).unwrap();
            assert_eq!(c as u16, k as u16);
            assert_eq!(convert::kind_from_capnp(c).unwrap(), k);
        }
    }
}
