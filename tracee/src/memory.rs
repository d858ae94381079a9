//! Reading the tracee's memory: from a saved stack snapshot or a live process.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use crate::error::{Result, TraceeError};
use crate::RemotePtr;

/// Something that holds (part of) a tracee's memory.
pub trait MemoryReader {
    /// Reads up to `buf.len()` bytes at `addr`; returns how many bytes were
    /// read (fewer when the readable memory ends before `buf` is full).
    /// Fails when not even the first byte is readable.
    fn read(&self, addr: RemotePtr<u8>, buf: &mut [u8]) -> Result<usize>;

    /// Reads exactly `buf.len()` bytes or fails.
    fn read_exact(&self, addr: RemotePtr<u8>, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read(addr.offset(done as i64), &mut buf[done..])?;
            if n == 0 {
                return Err(TraceeError::Memory {
                    pid: 0,
                    addr: addr.offset(done as i64),
                    len: buf.len() - done,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            done += n;
        }
        Ok(())
    }

    /// Reads a little-endian u64 (x86-64 is the only target).
    fn read_u64(&self, addr: RemotePtr<u64>) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact(addr.cast(), &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

impl<M: MemoryReader + ?Sized> MemoryReader for &M {
    fn read(&self, addr: RemotePtr<u8>, buf: &mut [u8]) -> Result<usize> {
        (**self).read(addr, buf)
    }
}

/// A copy of a range of the tracee's memory, typically its stack from `rsp`
/// up, taken at a crash (see `reprise_abi::CrashInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackSnapshot {
    /// Tracee address of `bytes[0]`.
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl StackSnapshot {
    pub fn new(base: RemotePtr<u8>, bytes: Vec<u8>) -> Self {
        StackSnapshot {
            base: base.addr(),
            bytes,
        }
    }

    /// Copies `CrashInfo::stack[..stack_len]` at `CrashInfo::stack_base`.
    pub fn from_crash(info: &reprise_abi::CrashInfo) -> Self {
        let len = (info.stack_len as usize).min(info.stack.len());
        StackSnapshot {
            base: info.stack_base,
            bytes: info.stack[..len].to_vec(),
        }
    }

    /// One past the last address held.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.bytes.len() as u64)
    }
}

impl MemoryReader for StackSnapshot {
    fn read(&self, addr: RemotePtr<u8>, buf: &mut [u8]) -> Result<usize> {
        let a = addr.addr();
        if a < self.base || a >= self.end() {
            return Err(TraceeError::OutsideSnapshot {
                addr,
                base: self.base,
                end: self.end(),
            });
        }
        let start = (a - self.base) as usize;
        let n = buf.len().min(self.bytes.len() - start);
        buf[..n].copy_from_slice(&self.bytes[start..start + n]);
        Ok(n)
    }
}

/// The memory of a live process, read with `process_vm_readv`, or through
/// `/proc/PID/mem` where that is refused or unavailable.
#[derive(Debug)]
pub struct ProcessMemory {
    pid: i32,
    mem_file: OnceLock<Option<File>>,
}

impl ProcessMemory {
    pub fn new(pid: i32) -> Self {
        ProcessMemory {
            pid,
            mem_file: OnceLock::new(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn read_proc_mem(&self, addr: RemotePtr<u8>, buf: &mut [u8]) -> std::io::Result<usize> {
        let file = self
            .mem_file
            .get_or_init(|| File::open(format!("/proc/{}/mem", self.pid)).ok());
        match file {
            Some(f) => f.read_at(buf, addr.addr()),
            None => Err(std::io::Error::from_raw_os_error(libc::EACCES)),
        }
    }
}

impl MemoryReader for ProcessMemory {
    fn read(&self, addr: RemotePtr<u8>, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let remote = [RemoteIoVec {
            base: addr.addr() as usize,
            len: buf.len(),
        }];
        let err = match process_vm_readv(
            Pid::from_raw(self.pid),
            &mut [IoSliceMut::new(buf)],
            &remote,
        ) {
            Ok(n) if n > 0 => return Ok(n),
            Ok(_) => Errno::EFAULT,
            Err(e) => e,
        };
        if err == Errno::ESRCH {
            return Err(TraceeError::NoSuchProcess { pid: self.pid });
        }
        // EPERM/ENOSYS (seccomp, old kernels) or EFAULT: /proc/PID/mem can
        // still work (it also reads pages that are mapped without read
        // permission, as ptrace does).
        match self.read_proc_mem(addr, buf) {
            Ok(n) if n > 0 => Ok(n),
            Ok(_) => Err(TraceeError::Memory {
                pid: self.pid,
                addr,
                len: buf.len(),
                source: std::io::Error::from_raw_os_error(err as i32),
            }),
            Err(e) => {
                if err == Errno::EPERM && e.raw_os_error() == Some(libc::EACCES) {
                    return Err(TraceeError::PtracePermission {
                        pid: self.pid,
                        op: "process_vm_readv",
                    });
                }
                Err(TraceeError::Memory {
                    pid: self.pid,
                    addr,
                    len: buf.len(),
                    source: e,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_only_inside() {
        let s = StackSnapshot {
            base: 0x1000,
            bytes: (0..16).collect(),
        };
        let mut b = [0u8; 8];
        assert_eq!(s.read(RemotePtr::new(0x1000), &mut b).unwrap(), 8);
        assert_eq!(b, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(s.read(RemotePtr::new(0x100c), &mut b).unwrap(), 4);
        assert!(s.read(RemotePtr::new(0x1010), &mut b).is_err());
        assert!(s.read(RemotePtr::new(0xfff), &mut b).is_err());
        assert!(s.read_u64(RemotePtr::new(0x100c)).is_err());
        assert_eq!(
            s.read_u64(RemotePtr::new(0x1008)).unwrap(),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15])
        );
    }

    #[test]
    fn process_memory_reads_self() {
        let data: [u8; 5] = *b"hello";
        let m = ProcessMemory::new(std::process::id() as i32);
        let mut b = [0u8; 5];
        m.read_exact(RemotePtr::new(data.as_ptr() as u64), &mut b)
            .unwrap();
        assert_eq!(&b, b"hello");
        assert!(m.read(RemotePtr::new(8), &mut b).is_err());
    }
}
