//! The `func` and `bb` sketches need a program built to call the agent: at
//! each function entry (`-finstrument-functions`: `__cyg_profile_func_enter`)
//! or basic block (`-fsanitize-coverage=trace-pc`: `__sanitizer_cov_trace_pc`).
//! The agent defines those hooks; a program that does not call them would
//! record a `sys` sketch under a richer name, so it is refused, with how to
//! rebuild it.

use std::path::Path;

use reprise_schema::SketchLevel;

use crate::RecordError;

/// The hook a level needs the program to call, and how to build it in
/// (`lib_dir`: where `libreprise_cov.so` is, next to the agent). `func`
/// needs none: an unmodified program's entries are patched instead.
pub fn hook(level: SketchLevel, lib_dir: &Path) -> Option<(&'static str, String)> {
    match level {
        SketchLevel::Bb => Some((
            "__sanitizer_cov_trace_pc",
            format!(
                "it was not built with -fsanitize-coverage=trace-pc: rebuild it with that flag and link the hook's stub (-L{0} -Wl,-rpath,{0} -lreprise_cov), or record a func or sys sketch",
                lib_dir.display()
            ),
        )),
        SketchLevel::Sync | SketchLevel::Sys | SketchLevel::Func => None,
    }
}

/// The plan to patch `program`'s function entries (its file's `bytes`),
/// for a `func` sketch of a program built without `-finstrument-functions`
/// (None otherwise).
pub fn func_entry_plan(
    program: &Path,
    bytes: &[u8],
    level: SketchLevel,
) -> Result<Option<crate::func_patch::FuncPlan>, RecordError> {
    if level != SketchLevel::Func || names_symbol(bytes, "__cyg_profile_func_enter") {
        return Ok(None);
    }
    match crate::func_patch::plan(program, bytes)? {
        Some(p) if p.patched > 0 => Ok(Some(p)),
        _ => Err(RecordError::NotInstrumented {
            path: program.to_path_buf(),
            level,
            how: "it has no symbol table to find its functions in (stripped?) and was not built with -finstrument-functions: rebuild it unstripped or with that flag, or record a sys sketch".into(),
        }),
    }
}

/// True if the ELF file's bytes name `symbol` (a call to an undefined
/// function keeps its name in `.dynstr`; a stripped program keeps it too).
pub fn names_symbol(bytes: &[u8], symbol: &str) -> bool {
    let mut needle = symbol.as_bytes().to_vec();
    needle.push(0);
    bytes.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// Refuses a `bb` sketch of a program (its file's `bytes`) that does not
/// call its hook.
pub fn check(
    program: &Path,
    bytes: &[u8],
    level: SketchLevel,
    agent: &Path,
) -> Result<(), RecordError> {
    let lib_dir = agent.parent().unwrap_or(Path::new("."));
    let Some((symbol, how)) = hook(level, lib_dir) else {
        return Ok(());
    };
    if names_symbol(bytes, symbol) {
        Ok(())
    } else {
        Err(RecordError::NotInstrumented {
            path: program.to_path_buf(),
            level,
            how,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_counts_only_whole() {
        assert!(names_symbol(
            b"\0__sanitizer_cov_trace_pc\0x",
            "__sanitizer_cov_trace_pc"
        ));
        assert!(!names_symbol(
            b"\0__sanitizer_cov_trace_pc_guard\0",
            "__sanitizer_cov_trace_pc"
        ));
        assert!(hook(SketchLevel::Sys, Path::new("/x")).is_none());
        assert!(hook(SketchLevel::Func, Path::new("/x")).is_none());
        let (_, how) = hook(SketchLevel::Bb, Path::new("/opt/reprise")).unwrap();
        assert!(how.contains("-L/opt/reprise -Wl,-rpath,/opt/reprise -lreprise_cov"));
    }
}
