//! A zero-filled file in /dev/shm, mapped shared: how the supervisor and
//! the agents share the control block and the observation block.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

pub struct SharedFile {
    path: PathBuf,
    base: *mut u8,
    size: usize,
}

// SAFETY: the mapping is process-wide; the users of the bytes synchronise
// through atomics in them.
unsafe impl Send for SharedFile {}
// SAFETY: shared references only read the path and the base address;
// writes into the mapping go through raw pointers whose users order them
// (atomics in the control block; plans are written before they are shared).
unsafe impl Sync for SharedFile {}

impl SharedFile {
    /// Creates `/dev/shm/reprise-<what>-<pid>-<n>` (or in the temporary
    /// directory without /dev/shm), `size` bytes, private to this user.
    pub fn create(what: &str, size: usize) -> io::Result<SharedFile> {
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let mut n = 0u32;
        let (path, fd) = loop {
            // Fixed width: the path is in the program's environment, and
            // a recording and its replays should lay out the same stack.
            let path = dir.join(format!("reprise-{what}-{:010}-{n:04}", std::process::id()));
            let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in path");
            // SAFETY: plain open(2) of a new file, private to this user.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o600,
                )
            };
            if fd >= 0 {
                break (path, fd);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) || n > 1000 {
                return Err(e);
            }
            n += 1;
        };
        // SAFETY: sizing and mapping the file we just created.
        let base = unsafe {
            if libc::ftruncate(fd, size as libc::off_t) != 0 {
                let e = io::Error::last_os_error();
                libc::close(fd);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            libc::close(fd);
            if p == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            p as *mut u8
        };
        Ok(SharedFile { path, base, size })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The start of the mapping (valid for `size()` bytes while `self` lives).
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; no references outlive self.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size) };
        let _ = std::fs::remove_file(&self.path);
    }
}
