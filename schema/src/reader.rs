//! Reading a trace: header and outcome at open, events streamed chunk by
//! chunk.

use std::fs::{self, File};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::convert;
use crate::error::{Result, TraceError};
use crate::frame::{decode_payload, reader_options, FrameHeader, FRAME_HEADER_LEN};
use crate::trace_capnp as tc;
use crate::types::*;
use crate::writer::{EVENTS_FILE, HEADER_FILE, INCOMPLETE_FILE, OUTCOME_FILE, SCHEDULE_FILE};

/// How the events file ends, found by walking the frame headers at open.
#[derive(Clone, Debug)]
enum Tail {
    /// Ends exactly after a whole chunk.
    Clean,
    /// The last chunk is cut short (at `offset`; file length `len`).
    Truncated { offset: u64, len: u64 },
    /// A broken frame header at `offset`.
    Corrupt { offset: u64, what: String },
}

/// An open trace directory.
#[derive(Debug)]
pub struct TraceReader {
    dir: PathBuf,
    header: HeaderInfo,
    outcome: Option<OutcomeInfo>,
    complete: bool,
    warnings: Vec<String>,
    /// Bytes of the events file holding whole chunks.
    events_end: u64,
    event_count: u64,
    chunk_count: u64,
    tail: Tail,
}

fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a file holding one framed chunk and returns its raw capnp message.
/// `Ok(None)` if the file does not exist.
fn read_single(path: &Path) -> Result<Option<Vec<u8>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TraceError::io("read", path, e)),
    };
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(TraceError::corrupt(
            path,
            0,
            "file is truncated (no whole chunk)",
        ));
    }
    let hb: &[u8; FRAME_HEADER_LEN] = bytes[..FRAME_HEADER_LEN].try_into().unwrap();
    let h = FrameHeader::decode(hb).map_err(|w| TraceError::corrupt(path, 0, w))?;
    let end = FRAME_HEADER_LEN + h.stored_len as usize;
    if bytes.len() < end {
        return Err(TraceError::corrupt(
            path,
            0,
            "file is truncated (chunk cut short)",
        ));
    }
    let mut scratch = Vec::new();
    let mut dec = zstd::bulk::Decompressor::new().map_err(|e| TraceError::io("read", path, e))?;
    let raw = decode_payload(
        &h,
        &bytes[FRAME_HEADER_LEN..end],
        &mut scratch,
        &mut dec,
        path,
        0,
    )?;
    Ok(Some(raw.to_vec()))
}

fn parse<T, F>(raw: &[u8], path: &Path, offset: u64, f: F) -> Result<T>
where
    F: FnOnce(&capnp::message::Reader<capnp::serialize::OwnedSegments>) -> capnp::Result<T>,
{
    let msg = capnp::serialize::read_message(&mut &raw[..], reader_options())
        .map_err(|e| TraceError::corrupt(path, offset, format!("bad chunk contents: {e}")))?;
    f(&msg).map_err(|e| TraceError::corrupt(path, offset, format!("bad chunk contents: {e}")))
}

/// Walks the frame headers of the events file (not the payloads).
fn scan_events(path: &Path) -> Result<(u64, u64, u64, Tail)> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((0, 0, 0, Tail::Clean)),
        Err(e) => return Err(TraceError::io("open", path, e)),
    };
    let len = f
        .metadata()
        .map_err(|e| TraceError::io("stat", path, e))?
        .len();
    let mut f = BufReader::with_capacity(FRAME_HEADER_LEN, f);
    let (mut pos, mut events, mut chunks) = (0u64, 0u64, 0u64);
    let tail = loop {
        if pos == len {
            break Tail::Clean;
        }
        if len - pos < FRAME_HEADER_LEN as u64 {
            break Tail::Truncated { offset: pos, len };
        }
        f.seek(SeekFrom::Start(pos))
            .map_err(|e| TraceError::io("seek in", path, e))?;
        let mut hb = [0u8; FRAME_HEADER_LEN];
        f.read_exact(&mut hb)
            .map_err(|e| TraceError::io("read", path, e))?;
        let h = match FrameHeader::decode(&hb) {
            Ok(h) => h,
            // Zeros where a chunk should start: the file was extended but
            // the data never reached the disk (machine crash).
            Err(_) if hb.iter().all(|&b| b == 0) => break Tail::Truncated { offset: pos, len },
            Err(what) => break Tail::Corrupt { offset: pos, what },
        };
        let next = pos + FRAME_HEADER_LEN as u64 + h.stored_len as u64;
        if next > len {
            break Tail::Truncated { offset: pos, len };
        }
        pos = next;
        events += h.count as u64;
        chunks += 1;
    };
    Ok((pos, events, chunks, tail))
}

impl TraceReader {
    /// Opens the trace directory `dir`: reads the header and the outcome and
    /// checks how far the events can be read.
    pub fn open(dir: &Path) -> Result<TraceReader> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(TraceError::NotATrace {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(TraceError::NotFound {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(TraceError::io("open", dir, e)),
        }
        let hpath = dir.join(HEADER_FILE);
        let raw = read_single(&hpath)?.ok_or_else(|| TraceError::NotATrace {
            dir: dir.to_path_buf(),
        })?;
        let header = parse(&raw, &hpath, 0, |m| {
            let r = m.get_root::<tc::header::Reader>()?;
            let v = convert::header_format_version(r);
            if v > crate::FORMAT_VERSION {
                return Ok(Err(v));
            }
            Ok(Ok(convert::header_from_capnp(r)?))
        })?
        .map_err(|found| TraceError::NewerFormat {
            found,
            supported: crate::FORMAT_VERSION,
        })?;
        if header.format_version == 0 {
            return Err(TraceError::corrupt(&hpath, 0, "format version 0"));
        }

        let mut warnings = Vec::new();
        let opath = dir.join(OUTCOME_FILE);
        let outcome = match read_single(&opath).and_then(|raw| match raw {
            None => Ok(None),
            Some(raw) => parse(&raw, &opath, 0, |m| {
                convert::outcome_from_capnp(m.get_root::<tc::outcome::Reader>()?)
            })
            .map(Some),
        }) {
            Ok(o) => o,
            Err(e) => {
                warnings.push(format!("{e} (the outcome is unknown)"));
                None
            }
        };
        let complete = !dir.join(INCOMPLETE_FILE).exists();

        let epath = dir.join(EVENTS_FILE);
        let (events_end, event_count, chunk_count, tail) = scan_events(&epath)?;
        if !complete {
            warnings.push(format!(
                "trace is incomplete (recording was cut short): read {event_count} events up to the last whole chunk"
            ));
        } else if let Tail::Truncated { offset, len } = &tail {
            warnings.push(format!(
                "events file {} is cut short at byte {offset} of {len}: read {event_count} events up to the last whole chunk",
                epath.display()
            ));
        }
        if complete && outcome.is_none() && warnings.is_empty() {
            warnings.push("trace has no outcome file: the outcome is unknown".into());
        }
        Ok(TraceReader {
            dir: dir.to_path_buf(),
            header,
            outcome,
            complete,
            warnings,
            events_end,
            event_count,
            chunk_count,
            tail,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn header(&self) -> &HeaderInfo {
        &self.header
    }

    /// The outcome; `None` for a cut-short trace.
    pub fn outcome(&self) -> Option<&OutcomeInfo> {
        self.outcome.as_ref()
    }

    /// False while the `incomplete` marker is present (recording running or
    /// cut short).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Problems found at open that did not stop reading, one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Events in whole chunks (from the chunk headers; no payload read).
    pub fn event_count(&self) -> u64 {
        self.event_count
    }

    pub fn chunk_count(&self) -> u64 {
        self.chunk_count
    }

    /// The saved reproducing schedule, if any.
    pub fn schedule(&self) -> Result<Option<ScheduleInfo>> {
        read_schedule(&self.dir)
    }

    /// Streams the events, one chunk in memory at a time. Yields an error
    /// (and then ends) at a corrupt chunk.
    pub fn events(&self) -> Events {
        Events {
            path: self.dir.join(EVENTS_FILE),
            file: None,
            opened: false,
            pos: 0,
            end: self.events_end,
            tail: self.tail.clone(),
            buf: Vec::new(),
            stored: Vec::new(),
            scratch: Vec::new(),
            decompressor: None,
            done: false,
        }
    }
}

/// Iterator over the events of a trace; see [`TraceReader::events`].
pub struct Events {
    path: PathBuf,
    file: Option<BufReader<File>>,
    opened: bool,
    pos: u64,
    end: u64,
    tail: Tail,
    /// The current chunk's events, reversed (popped from the back).
    buf: Vec<EventRecord>,
    stored: Vec<u8>,
    scratch: Vec<u8>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    done: bool,
}

impl Events {
    fn next_chunk(&mut self) -> Result<bool> {
        if self.pos >= self.end {
            if let Tail::Corrupt { offset, what } = &self.tail {
                return Err(TraceError::corrupt(&self.path, *offset, what.clone()));
            }
            return Ok(false);
        }
        if !self.opened {
            self.opened = true;
            let f = File::open(&self.path).map_err(|e| TraceError::io("open", &self.path, e))?;
            self.file = Some(BufReader::with_capacity(64 * 1024, f));
            self.decompressor = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| TraceError::io("read", &self.path, e))?,
            );
        }
        let (Some(file), Some(dec)) = (self.file.as_mut(), self.decompressor.as_mut()) else {
            return Ok(false);
        };
        let path = &self.path;
        let offset = self.pos;
        let mut hb = [0u8; FRAME_HEADER_LEN];
        let n = read_exact_or_eof(file, &mut hb).map_err(|e| TraceError::io("read", path, e))?;
        if n < FRAME_HEADER_LEN {
            return Err(TraceError::corrupt(
                path,
                offset,
                "file shrank while reading",
            ));
        }
        let h = FrameHeader::decode(&hb).map_err(|w| TraceError::corrupt(path, offset, w))?;
        self.stored.resize(h.stored_len as usize, 0);
        let n = read_exact_or_eof(file, &mut self.stored)
            .map_err(|e| TraceError::io("read", path, e))?;
        if n < self.stored.len() {
            return Err(TraceError::corrupt(
                path,
                offset,
                "file shrank while reading",
            ));
        }
        self.pos += (FRAME_HEADER_LEN + self.stored.len()) as u64;
        let raw = decode_payload(&h, &self.stored, &mut self.scratch, dec, path, offset)?;
        let buf = &mut self.buf;
        buf.clear();
        parse(raw, path, offset, |m| {
            convert::events_from_capnp(m.get_root::<tc::event_chunk::Reader>()?, buf)
        })?;
        if buf.len() != h.count as usize {
            return Err(TraceError::corrupt(
                path,
                offset,
                format!(
                    "chunk holds {} events, its header says {}",
                    buf.len(),
                    h.count
                ),
            ));
        }
        buf.reverse();
        Ok(true)
    }
}

impl Iterator for Events {
    type Item = Result<EventRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.buf.pop() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            match self.next_chunk() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl std::iter::FusedIterator for Events {}

/// Reads the reproducing schedule saved in trace `dir`, if there is one.
pub fn read_schedule(dir: &Path) -> Result<Option<ScheduleInfo>> {
    let path = dir.join(SCHEDULE_FILE);
    match read_single(&path)? {
        None => Ok(None),
        Some(raw) => parse(&raw, &path, 0, |m| {
            convert::schedule_from_capnp(m.get_root::<tc::schedule::Reader>()?)
        })
        .map(Some),
    }
}
