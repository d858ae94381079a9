//! [`RemotePtr`]: a typed address in another process.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

/// An address in the tracee's address space, pointing at a `T` there.
///
/// It is never dereferenced in the supervisor: it is only an integer with a
/// type attached, so that tracee addresses are not confused with host
/// pointers or with other integers (sizes, offsets, pids).
pub struct RemotePtr<T> {
    addr: u64,
    // `fn() -> T` keeps `RemotePtr<T>` Send + Sync and free of drop-check
    // obligations whatever `T` is.
    _marker: PhantomData<fn() -> T>,
}

impl<T> RemotePtr<T> {
    pub const fn new(addr: u64) -> Self {
        RemotePtr {
            addr,
            _marker: PhantomData,
        }
    }

    pub const fn null() -> Self {
        Self::new(0)
    }

    pub const fn addr(self) -> u64 {
        self.addr
    }

    pub const fn is_null(self) -> bool {
        self.addr == 0
    }

    /// The same address, seen as pointing at a `U`.
    pub const fn cast<U>(self) -> RemotePtr<U> {
        RemotePtr::new(self.addr)
    }

    /// The address `bytes` bytes further (wrapping; negative moves back).
    pub const fn offset(self, bytes: i64) -> Self {
        Self::new(self.addr.wrapping_add(bytes as u64))
    }

    /// The address `count` elements of `T` further (wrapping).
    pub const fn add(self, count: u64) -> Self {
        Self::new(
            self.addr
                .wrapping_add(count.wrapping_mul(std::mem::size_of::<T>() as u64)),
        )
    }

    /// Bytes from `origin` to `self` (`self - origin`), if `self >= origin`.
    pub fn bytes_from(self, origin: RemotePtr<T>) -> Option<u64> {
        self.addr.checked_sub(origin.addr)
    }
}

impl<T> Clone for RemotePtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for RemotePtr<T> {}

impl<T> PartialEq for RemotePtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}
impl<T> Eq for RemotePtr<T> {}

impl<T> PartialOrd for RemotePtr<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for RemotePtr<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.addr.cmp(&other.addr)
    }
}

impl<T> Hash for RemotePtr<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr.hash(state)
    }
}

impl<T> Default for RemotePtr<T> {
    fn default() -> Self {
        Self::null()
    }
}

impl<T> fmt::Debug for RemotePtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.addr)
    }
}

impl<T> fmt::Display for RemotePtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.addr)
    }
}

impl<T> fmt::LowerHex for RemotePtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.addr, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_formatting() {
        let p: RemotePtr<u64> = RemotePtr::new(0x1000);
        assert_eq!(p.add(2).addr(), 0x1010);
        assert_eq!(p.offset(-16).addr(), 0xff0);
        assert_eq!(p.cast::<u8>().add(2).addr(), 0x1002);
        assert_eq!(format!("{p}"), "0x1000");
        assert_eq!(format!("{p:?}"), "0x1000");
        assert!(RemotePtr::<u8>::null().is_null());
        assert!(p < p.add(1));
        assert_eq!(p.add(3).bytes_from(p), Some(24));
    }
}
