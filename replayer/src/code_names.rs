//! Names of the program's code addresses (function and block entries of
//! the `func` and `bb` sketches): `bump at race.c:4`. Runs are recorded
//! and replayed with address-space randomisation off, so a position-
//! independent executable sits at the kernel's fixed base.

use std::path::Path;

/// Where Linux maps a position-independent executable when randomisation
/// is off (x86-64).
const PIE_BASE: u64 = 0x5555_5555_4000;

pub struct CodeNames {
    loader: Option<addr2line::Loader>,
    bias: u64,
}

impl CodeNames {
    pub fn open(program: &Path) -> CodeNames {
        // ELF e_type at byte 16: 3 is ET_DYN (position independent).
        let pie = std::fs::File::open(program)
            .and_then(|mut f| {
                use std::io::Read;
                let mut h = [0u8; 18];
                f.read_exact(&mut h).map(|_| h)
            })
            .is_ok_and(|h| h[16] == 3);
        CodeNames {
            loader: addr2line::Loader::new(program).ok(),
            bias: if pie { PIE_BASE } else { 0 },
        }
    }

    /// `function at file:line` (or the function alone, or None) for a
    /// code address of the running program.
    pub fn name(&self, addr: u64) -> Option<String> {
        let l = self.loader.as_ref()?;
        let probe = addr.checked_sub(self.bias)?;
        let mut function = None;
        if let Ok(mut frames) = l.find_frames(probe) {
            if let Ok(Some(f)) = frames.next() {
                function = f
                    .function
                    .as_ref()
                    .and_then(|n| n.demangle().ok())
                    .map(|n| n.into_owned());
            }
        }
        let function = function.or_else(|| l.find_symbol(probe).map(str::to_string))?;
        match l.find_location(probe) {
            Ok(Some(loc)) if loc.line.is_some() => {
                let file = loc
                    .file
                    .map(|f| {
                        Path::new(f)
                            .file_name()
                            .map_or(f.to_string(), |n| n.to_string_lossy().into_owned())
                    })
                    .unwrap_or_default();
                Some(format!("{function} at {file}:{}", loc.line.unwrap_or(0)))
            }
            _ => Some(function),
        }
    }

    /// `text` with each `function_entry(0x…)` / `block(0x…)` followed by
    /// the address's name: the agent's divergence messages carry addresses.
    pub fn annotate(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = ["function_entry(0x", "block(0x"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min()
        {
            let (at, plen) = i;
            let hex_start = at + plen;
            let hex_len = rest[hex_start..]
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(rest.len() - hex_start);
            let end = hex_start + hex_len;
            out.push_str(&rest[..end]);
            if let Some(n) = u64::from_str_radix(&rest[hex_start..end], 16)
                .ok()
                .and_then(|a| self.name(a))
            {
                out.push(' ');
                out.push_str(&n);
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }
}
