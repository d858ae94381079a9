//! `/proc/PID/maps`: which file is mapped where, and at what load bias.

use std::path::{Path, PathBuf};

use crate::error::{Result, TraceeError};
use crate::RemotePtr;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: RemotePtr<u8>,
    /// One past the last byte.
    pub end: RemotePtr<u8>,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    /// Offset in the file of the byte at `start`.
    pub offset: u64,
    /// `major:minor` of the file's device.
    pub dev: String,
    pub inode: u64,
    /// The name column: a path, `[heap]`, `[stack]`, `[vdso]`, ... or empty
    /// for anonymous memory. A ` (deleted)` suffix is kept.
    pub name: String,
}

impl Mapping {
    pub fn contains(&self, addr: RemotePtr<u8>) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The mapped file, if this is a file mapping (inode != 0 and an
    /// absolute path); a trailing ` (deleted)` is removed.
    pub fn file(&self) -> Option<&Path> {
        if self.inode == 0 || !self.name.starts_with('/') {
            return None;
        }
        Some(Path::new(
            self.name.strip_suffix(" (deleted)").unwrap_or(&self.name),
        ))
    }

    /// The load bias of the ELF file this mapping belongs to (runtime
    /// address = link-time virtual address + bias), computed from the
    /// mapping's file offset and the file's `PT_LOAD` program headers.
    ///
    /// The segment whose file range holds `offset` places file offset `o` at
    /// link-time address `p_vaddr + (o - p_offset)`; the mapping places it at
    /// `start + (o - offset)`. Works for executables (bias 0), PIEs and
    /// shared objects, whichever of their segments this mapping is.
    pub fn load_bias(&self, segments: &[LoadSegment]) -> Option<u64> {
        // Adjacent segments share a file page (the last page of one is the
        // first of the next), so several may contain `offset`; the kernel
        // maps each segment from its page-aligned offset, so the one that
        // starts latest is this mapping's (a mapping split by mprotect,
        // e.g. RELRO, starts inside its segment).
        let page = |s: &LoadSegment| s.offset & !(s.align.clamp(4096, 1 << 21) - 1);
        let seg = segments
            .iter()
            .filter(|s| page(s) <= self.offset && self.offset < s.offset + s.filesz.max(1))
            .max_by_key(|s| page(s))?;
        Some(
            self.start
                .addr()
                .wrapping_sub(self.offset)
                .wrapping_add(seg.offset)
                .wrapping_sub(seg.vaddr),
        )
    }
}

/// A `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// A process's address space layout, parsed from `/proc/PID/maps` text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryMap {
    mappings: Vec<Mapping>,
}

/// Parses the text of `/proc/PID/maps` (or `CrashInfo::maps`).
pub fn parse_maps(text: &str) -> Result<MemoryMap> {
    let mut mappings = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || TraceeError::BadMaps {
            line: i + 1,
            text: line.to_string(),
        };
        // Five space-separated fields, then the name (which may contain
        // spaces) after a run of padding.
        let mut rest = line;
        let mut field = || -> Option<&str> {
            rest = rest.trim_start_matches(' ');
            let end = rest.find(' ').unwrap_or(rest.len());
            let (f, r) = rest.split_at(end);
            rest = r;
            (!f.is_empty()).then_some(f)
        };
        let range = field().ok_or_else(bad)?;
        let perms = field().ok_or_else(bad)?;
        let offset = field().ok_or_else(bad)?;
        let dev = field().ok_or_else(bad)?;
        let inode = field().ok_or_else(bad)?;
        let name = rest.trim_start_matches(' ').to_string();
        let (start, end) = range.split_once('-').ok_or_else(bad)?;
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
        let p = perms.as_bytes();
        if p.len() < 4 {
            return Err(bad());
        }
        mappings.push(Mapping {
            start: RemotePtr::new(hex(start)?),
            end: RemotePtr::new(hex(end)?),
            read: p[0] == b'r',
            write: p[1] == b'w',
            exec: p[2] == b'x',
            shared: p[3] == b's',
            offset: hex(offset)?,
            dev: dev.to_string(),
            inode: inode.parse().map_err(|_| bad())?,
            name,
        });
    }
    mappings.sort_by_key(|m| m.start);
    Ok(MemoryMap { mappings })
}

impl MemoryMap {
    /// Reads and parses `/proc/PID/maps` of a live process.
    pub fn for_pid(pid: i32) -> Result<MemoryMap> {
        let path = PathBuf::from(format!("/proc/{pid}/maps"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TraceeError::NoSuchProcess { pid }
            } else {
                TraceeError::io(path, e)
            }
        })?;
        parse_maps(&text)
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// The mapping containing `addr`.
    pub fn find(&self, addr: RemotePtr<u8>) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        m.contains(addr).then_some(m)
    }

    /// The file-backed mapping containing `pc` (its path is
    /// [`Mapping::file`]; its bias is [`Mapping::load_bias`] or, reading the
    /// file's program headers, [`MemoryMap::module_for_with_bias`]).
    pub fn module_for(&self, pc: RemotePtr<u8>) -> Option<&Mapping> {
        let m = self.find(pc)?;
        m.file().is_some().then_some(m)
    }

    /// The file mapped at `pc` and its load bias, reading the file's ELF
    /// program headers. The [`crate::Symbolizer`] does the same with its
    /// cached files.
    pub fn module_for_with_bias(&self, pc: RemotePtr<u8>) -> Result<Option<(PathBuf, u64)>> {
        let Some(m) = self.module_for(pc) else {
            return Ok(None);
        };
        let path = m.file().expect("module_for returns file mappings");
        let data = std::fs::read(path).map_err(|e| TraceeError::io(path, e))?;
        let segs = crate::symbolizer::load_segments(path, &data)?;
        Ok(m.load_bias(&segs).map(|b| (path.to_path_buf(), b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
555555554000-555555555000 r--p 00000000 08:01 1234                       /tmp/x/crash prog
555555555000-555555556000 r-xp 00001000 08:01 1234                       /tmp/x/crash prog
555555559000-55555557a000 rw-p 00000000 00:00 0                          [heap]
7ffff7d8a000-7ffff7db0000 r--p 00000000 08:01 42                         /usr/lib/x86_64-linux-gnu/libc.so.6
7ffff7db0000-7ffff7f05000 r-xp 00026000 08:01 42                         /usr/lib/x86_64-linux-gnu/libc.so.6
7ffff7fc1000-7ffff7fc3000 r-xp 00000000 00:00 0                          [vdso]
7ffff7fd0000-7ffff7fd1000 rw-p 00000000 00:00 0 
";

    #[test]
    fn parses_and_finds() {
        let m = parse_maps(MAPS).unwrap();
        assert_eq!(m.mappings().len(), 7);
        let exe = m.module_for(RemotePtr::new(0x555555555123)).unwrap();
        assert_eq!(exe.file().unwrap(), Path::new("/tmp/x/crash prog"));
        assert!(exe.exec && !exe.write);
        assert_eq!(exe.offset, 0x1000);
        assert!(m.module_for(RemotePtr::new(0x7ffff7fc1010)).is_none());
        assert_eq!(
            m.find(RemotePtr::new(0x7ffff7fc1010)).unwrap().name,
            "[vdso]"
        );
        assert!(m.find(RemotePtr::new(0x555555557000)).is_none());
        assert_eq!(m.mappings()[6].name, "");
    }

    #[test]
    fn bias_from_program_headers() {
        let m = parse_maps(MAPS).unwrap();
        let libc_text = m.module_for(RemotePtr::new(0x7ffff7db1000)).unwrap();
        // A typical libc: text segment at vaddr 0x26000, file offset 0x26000.
        let segs = [
            LoadSegment {
                vaddr: 0,
                offset: 0,
                filesz: 0x25f10,
                memsz: 0x25f10,
                align: 0x1000,
            },
            LoadSegment {
                vaddr: 0x26000,
                offset: 0x26000,
                filesz: 0x155000,
                memsz: 0x155000,
                align: 0x1000,
            },
        ];
        assert_eq!(libc_text.load_bias(&segs), Some(0x7ffff7d8a000));
        // Segment whose vaddr differs from its offset (e.g. after a gap).
        let segs = [
            LoadSegment {
                vaddr: 0,
                offset: 0,
                filesz: 0x1000,
                memsz: 0x1000,
                align: 0x1000,
            },
            LoadSegment {
                vaddr: 0x201000,
                offset: 0x1000,
                filesz: 0x1000,
                memsz: 0x1000,
                align: 0x1000,
            },
        ];
        let exe_text = m.module_for(RemotePtr::new(0x555555555000)).unwrap();
        assert_eq!(exe_text.load_bias(&segs), Some(0x555555555000 - 0x201000));
        // Segments sharing a file page (a Rust test binary's layout):
        // mapping at offset 0x1000 belongs to the second segment.
        let segs = [
            LoadSegment {
                vaddr: 0,
                offset: 0,
                filesz: 0x13e0,
                memsz: 0x13e0,
                align: 0x1000,
            },
            LoadSegment {
                vaddr: 0x23e0,
                offset: 0x13e0,
                filesz: 0x2000,
                memsz: 0x2000,
                align: 0x1000,
            },
        ];
        assert_eq!(exe_text.load_bias(&segs), Some(0x555555555000 - 0x2000));
    }
}
