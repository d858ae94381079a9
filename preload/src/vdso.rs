//! The kernel's vDSO clock functions, for the agent's own use.
//!
//! At `sys` the recorder hides the vDSO from the program (see
//! `reprise_recorder::launch`): glibc then reads the clock with syscalls,
//! including its internal reads, which the agent traps and records. The
//! agent's interposed `clock_gettime`, `gettimeofday` and `time` record
//! their result too, but need not pay for a syscall (~300 ns here against
//! ~40 ns) to get it: the recorder keeps the vDSO's address in the
//! auxiliary vector under a type of its own ([`AT_REPRISE_VDSO`]) that the
//! dynamic loader ignores, and this module finds the functions in it.
//!
//! Looked up once at start-up; read without locks afterwards.

use core::sync::atomic::{AtomicUsize, Ordering};

use reprise_abi::AT_REPRISE_VDSO;

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;
type Gettimeofday = unsafe extern "C" fn(*mut libc::timeval, *mut libc::c_void) -> libc::c_int;
type Time = unsafe extern "C" fn(*mut libc::time_t) -> libc::time_t;

/// `sh_type` of the dynamic symbol table (not in the libc crate).
const SHT_DYNSYM: u32 = 11;

static CLOCK_GETTIME: AtomicUsize = AtomicUsize::new(0);
static GETTIMEOFDAY: AtomicUsize = AtomicUsize::new(0);
static TIME: AtomicUsize = AtomicUsize::new(0);

/// Finds the vDSO's clock functions: under the recorder's own auxiliary
/// vector type, or (an image `exec`'d by a recorded process, whose vDSO is
/// not hidden) the usual one.
pub fn init() {
    // SAFETY: getauxval only reads the auxiliary vector.
    let base = unsafe {
        match libc::getauxval(AT_REPRISE_VDSO) {
            0 => libc::getauxval(libc::AT_SYSINFO_EHDR),
            b => b,
        }
    };
    if base == 0 {
        return;
    }
    // SAFETY: the kernel maps the vDSO at `base` as a whole ELF image (its
    // section headers included) for the life of the process.
    let found = unsafe { Image::at(base as usize) };
    let Some(img) = found else { return };
    for (name, slot) in [
        (&b"__vdso_clock_gettime"[..], &CLOCK_GETTIME),
        (&b"__vdso_gettimeofday"[..], &GETTIMEOFDAY),
        (&b"__vdso_time"[..], &TIME),
    ] {
        // SAFETY: as above.
        if let Some(addr) = unsafe { img.symbol(name) } {
            slot.store(addr, Ordering::Release);
        }
    }
}

/// `clock_gettime` through the vDSO, if it was found.
pub fn clock_gettime(clk: libc::clockid_t, ts: *mut libc::timespec) -> Option<i64> {
    let f = CLOCK_GETTIME.load(Ordering::Acquire);
    if f == 0 {
        return None;
    }
    // SAFETY: `f` is the vDSO's __vdso_clock_gettime, whose signature this
    // is; it returns 0 or a negated errno like the syscall.
    let f: ClockGettime = unsafe { core::mem::transmute(f) };
    Some(unsafe { f(clk, ts) } as i64)
}

/// `gettimeofday` through the vDSO, if it was found.
pub fn gettimeofday(tv: *mut libc::timeval, tz: *mut libc::c_void) -> Option<i64> {
    let f = GETTIMEOFDAY.load(Ordering::Acquire);
    if f == 0 {
        return None;
    }
    // SAFETY: as for clock_gettime.
    let f: Gettimeofday = unsafe { core::mem::transmute(f) };
    Some(unsafe { f(tv, tz) } as i64)
}

/// `time` through the vDSO, if it was found.
pub fn time(t: *mut libc::time_t) -> Option<i64> {
    let f = TIME.load(Ordering::Acquire);
    if f == 0 {
        return None;
    }
    // SAFETY: as for clock_gettime; __vdso_time returns the seconds.
    let f: Time = unsafe { core::mem::transmute(f) };
    Some(unsafe { f(t) } as i64)
}

/// The vDSO's ELF image in memory: its dynamic symbols and where it is
/// loaded relative to its link addresses.
struct Image {
    /// Added to a symbol's value to get its address.
    bias: usize,
    symtab: *const libc::Elf64_Sym,
    symbols: usize,
    strtab: *const u8,
    strtab_len: usize,
}

impl Image {
    /// # Safety
    /// `base` must be the start of a mapped ELF image with section headers.
    unsafe fn at(base: usize) -> Option<Image> {
        let eh = &*(base as *const libc::Elf64_Ehdr);
        if eh.e_ident[..4] != *b"\x7fELF"
            || eh.e_shentsize as usize != core::mem::size_of::<libc::Elf64_Shdr>()
        {
            return None;
        }
        // The first loadable segment's link address maps to `base`.
        let phdrs = (base + eh.e_phoff as usize) as *const libc::Elf64_Phdr;
        let first_load = (0..eh.e_phnum as usize)
            .map(|i| &*phdrs.add(i))
            .find(|p| p.p_type == libc::PT_LOAD)?;
        let bias = base.wrapping_sub(first_load.p_vaddr as usize);
        // Everything read below must lie in the pages of that segment, which
        // the kernel maps whole (the vDSO has one, from offset 0; its section
        // headers follow the segment's bytes in its last page).
        let size = (first_load.p_filesz as usize).next_multiple_of(4096);
        let inside =
            |off: u64, len: u64| first_load.p_offset == 0 && off.saturating_add(len) <= size as u64;
        let shdr_size = core::mem::size_of::<libc::Elf64_Shdr>() as u64;
        if !inside(eh.e_shoff, eh.e_shnum as u64 * shdr_size) {
            return None;
        }
        let shdrs = (base + eh.e_shoff as usize) as *const libc::Elf64_Shdr;
        let dynsym = (0..eh.e_shnum as usize)
            .map(|i| &*shdrs.add(i))
            .find(|s| s.sh_type == SHT_DYNSYM)?;
        if dynsym.sh_link >= eh.e_shnum as u32
            || dynsym.sh_entsize as usize != core::mem::size_of::<libc::Elf64_Sym>()
        {
            return None;
        }
        let strs = &*shdrs.add(dynsym.sh_link as usize);
        if !inside(dynsym.sh_offset, dynsym.sh_size) || !inside(strs.sh_offset, strs.sh_size) {
            return None;
        }
        Some(Image {
            bias,
            symtab: (base + dynsym.sh_offset as usize) as *const libc::Elf64_Sym,
            symbols: (dynsym.sh_size / dynsym.sh_entsize) as usize,
            strtab: (base + strs.sh_offset as usize) as *const u8,
            strtab_len: strs.sh_size as usize,
        })
    }

    /// The address of the defined function `name`.
    ///
    /// # Safety
    /// As for [`Image::at`].
    unsafe fn symbol(&self, name: &[u8]) -> Option<usize> {
        for i in 0..self.symbols {
            let s = &*self.symtab.add(i);
            let at = s.st_name as usize;
            if s.st_shndx == 0 || s.st_value == 0 || at + name.len() >= self.strtab_len {
                continue;
            }
            let candidate = core::slice::from_raw_parts(self.strtab.add(at), name.len() + 1);
            if &candidate[..name.len()] == name && candidate[name.len()] == 0 {
                return Some(self.bias.wrapping_add(s.st_value as usize));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test process has its vDSO advertised as usual: the lookup finds
    /// the clock functions in it, and they tell the time.
    #[test]
    fn finds_the_clock_functions_in_this_process_vdso() {
        init();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        assert_eq!(clock_gettime(libc::CLOCK_REALTIME, &mut ts), Some(0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - ts.tv_sec).abs() < 5,
            "vDSO {} s, now {now} s",
            ts.tv_sec
        );
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        assert_eq!(gettimeofday(&mut tv, core::ptr::null_mut()), Some(0));
        assert!((now - tv.tv_sec).abs() < 5);
        let t = time(core::ptr::null_mut()).expect("__vdso_time");
        assert!((now - t).abs() < 5);
    }
}
