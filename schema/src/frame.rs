//! Framing: every trace file is a sequence of framed chunks.
//!
//! Frame header, 32 bytes, little-endian:
//!
//! | offset | field |
//! |---|---|
//! | 0  | magic `b"RPRF"` |
//! | 4  | flags (bit 0: payload is zstd-compressed) |
//! | 8  | stored length (bytes of payload in the file) |
//! | 12 | raw length (bytes of the capnp message after decompression) |
//! | 16 | CRC32 of the stored payload bytes |
//! | 20 | item count (events in an `EventChunk`, 1 otherwise) |
//! | 24 | reserved, 0 |
//! | 28 | CRC32 of header bytes 0..28 |
//!
//! The payload is a serialized capnp message (segment table + segments).
//! The header checksum lets a reader tell a truncated tail (lengths are
//! trustworthy, the file just ends early) from corruption.

use std::path::Path;

use crate::error::{Result, TraceError};

pub const FRAME_MAGIC: [u8; 4] = *b"RPRF";
pub const FRAME_HEADER_LEN: usize = 32;
pub const FLAG_ZSTD: u32 = 1;
const KNOWN_FLAGS: u32 = FLAG_ZSTD;
/// No chunk is ever this big; a larger length is corruption.
pub const MAX_CHUNK_BYTES: u32 = 1 << 30;
pub const ZSTD_LEVEL: i32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub flags: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub crc: u32,
    pub count: u32,
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&FRAME_MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.stored_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.crc.to_le_bytes());
        b[20..24].copy_from_slice(&self.count.to_le_bytes());
        let hcrc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&hcrc.to_le_bytes());
        b
    }

    /// Decodes and checks a frame header; the error text says what is wrong.
    pub fn decode(b: &[u8; FRAME_HEADER_LEN]) -> std::result::Result<FrameHeader, String> {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b[0..4] != FRAME_MAGIC {
            return Err(format!(
                "bad chunk magic {:02x}{:02x}{:02x}{:02x} (expected a reprise frame)",
                b[0], b[1], b[2], b[3]
            ));
        }
        if crc32fast::hash(&b[0..28]) != u(28) {
            return Err("chunk header checksum mismatch".into());
        }
        let h = FrameHeader {
            flags: u(4),
            stored_len: u(8),
            raw_len: u(12),
            crc: u(16),
            count: u(20),
        };
        if h.flags & !KNOWN_FLAGS != 0 {
            return Err(format!("unknown chunk flags {:#x}", h.flags));
        }
        if h.stored_len > MAX_CHUNK_BYTES || h.raw_len > MAX_CHUNK_BYTES {
            return Err("chunk length out of range".into());
        }
        if h.flags & FLAG_ZSTD == 0 && h.stored_len != h.raw_len {
            return Err("uncompressed chunk with differing lengths".into());
        }
        Ok(h)
    }
}

/// Frames `raw` (a serialized capnp message) into `out` (cleared first),
/// compressing it with zstd when that makes it smaller.
pub fn encode_frame(
    raw: &[u8],
    count: u32,
    compressor: &mut zstd::bulk::Compressor<'static>,
    out: &mut Vec<u8>,
) {
    out.clear();
    let bound = zstd::zstd_safe::compress_bound(raw.len());
    out.resize(FRAME_HEADER_LEN + bound, 0);
    let mut flags = 0;
    let stored_len = match compressor.compress_to_buffer(raw, &mut out[FRAME_HEADER_LEN..]) {
        Ok(n) if n < raw.len() => {
            flags |= FLAG_ZSTD;
            n
        }
        _ => {
            out.truncate(FRAME_HEADER_LEN);
            out.extend_from_slice(raw);
            raw.len()
        }
    };
    out.truncate(FRAME_HEADER_LEN + stored_len);
    let h = FrameHeader {
        flags,
        stored_len: stored_len as u32,
        raw_len: raw.len() as u32,
        crc: crc32fast::hash(&out[FRAME_HEADER_LEN..]),
        count,
    };
    out[..FRAME_HEADER_LEN].copy_from_slice(&h.encode());
}

/// Checks the payload of a frame and returns the raw capnp message bytes
/// (decompressed into `scratch` if needed). `offset` is the frame's offset in
/// `file`, for error messages.
pub fn decode_payload<'a>(
    h: &FrameHeader,
    stored: &'a [u8],
    scratch: &'a mut Vec<u8>,
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    file: &Path,
    offset: u64,
) -> Result<&'a [u8]> {
    if crc32fast::hash(stored) != h.crc {
        return Err(TraceError::corrupt(file, offset, "chunk checksum mismatch"));
    }
    if h.flags & FLAG_ZSTD == 0 {
        return Ok(stored);
    }
    scratch.clear();
    scratch.reserve(h.raw_len as usize);
    match decompressor.decompress_to_buffer(stored, &mut *scratch) {
        Ok(n) if n == h.raw_len as usize => Ok(&scratch[..]),
        Ok(n) => Err(TraceError::corrupt(
            file,
            offset,
            format!("chunk decompressed to {n} bytes, expected {}", h.raw_len),
        )),
        Err(e) => Err(TraceError::corrupt(
            file,
            offset,
            format!("chunk does not decompress: {e}"),
        )),
    }
}

/// Reader options for chunk messages: generous but bounded.
pub fn reader_options() -> capnp::message::ReaderOptions {
    let mut o = capnp::message::ReaderOptions::new();
    o.traversal_limit_in_words(Some(MAX_CHUNK_BYTES as usize / 8 * 2));
    o.nesting_limit(16);
    o
}

/// Like [`encode_frame`], for a message given in parts (the segment table
/// and the segments), compressed without first copying it into one buffer.
pub fn encode_frame_parts(
    parts: &[&[u8]],
    count: u32,
    cctx: &mut zstd::zstd_safe::CCtx<'static>,
    out: &mut Vec<u8>,
) {
    use zstd::zstd_safe::{zstd_sys::ZSTD_EndDirective, InBuffer, OutBuffer, ResetDirective};
    let total: usize = parts.iter().map(|p| p.len()).sum();
    out.clear();
    out.reserve(FRAME_HEADER_LEN + zstd::zstd_safe::compress_bound(total));
    let compressed = (|| -> Option<usize> {
        cctx.reset(ResetDirective::SessionOnly).ok()?;
        cctx.set_pledged_src_size(Some(total as u64)).ok()?;
        let mut ob = OutBuffer::around_pos(&mut *out, FRAME_HEADER_LEN);
        for (i, p) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let mut ib = InBuffer::around(p);
            loop {
                let (ipos, opos) = (ib.pos(), ob.pos());
                let end = if last {
                    ZSTD_EndDirective::ZSTD_e_end
                } else {
                    ZSTD_EndDirective::ZSTD_e_continue
                };
                let left = cctx.compress_stream2(&mut ob, &mut ib, end).ok()?;
                if last && left == 0 || !last && ib.pos() == p.len() {
                    break;
                }
                if ib.pos() == ipos && ob.pos() == opos {
                    return None; // no progress: output full
                }
            }
        }
        Some(ob.pos() - FRAME_HEADER_LEN)
    })();
    let mut flags = 0;
    let stored_len = match compressed {
        Some(n) if n < total && out.len() == FRAME_HEADER_LEN + n => {
            flags |= FLAG_ZSTD;
            n
        }
        _ => {
            out.clear();
            out.resize(FRAME_HEADER_LEN, 0);
            for p in parts {
                out.extend_from_slice(p);
            }
            total
        }
    };
    let h = FrameHeader {
        flags,
        stored_len: stored_len as u32,
        raw_len: total as u32,
        crc: crc32fast::hash(&out[FRAME_HEADER_LEN..]),
        count,
    };
    out[..FRAME_HEADER_LEN].copy_from_slice(&h.encode());
}
