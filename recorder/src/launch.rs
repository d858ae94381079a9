//! Launching a program with the agent: finding it, checking that the agent
//! can be injected into it, and starting it with ASLR off.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::RecordError;
use reprise_abi::AT_REPRISE_VDSO;

/// Finds `program` the way a shell would: a path if it contains a slash,
/// else the first executable of that name in `$PATH`.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf, RecordError> {
    let p = Path::new(program);
    let candidate = if program.as_bytes().contains(&b'/') {
        Some(p.to_path_buf())
    } else {
        std::env::var_os("PATH")
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"))
            .as_bytes()
            .split(|&b| b == b':')
            .map(|d| Path::new(OsStr::from_bytes(if d.is_empty() { b"." } else { d })).join(p))
            .find(|c| is_executable(c))
    };
    let Some(path) = candidate else {
        return Err(RecordError::ProgramNotFound(program.to_os_string()));
    };
    if !path.exists() {
        return Err(RecordError::ProgramNotFound(program.to_os_string()));
    }
    if path.is_dir() || !is_executable(&path) {
        return Err(RecordError::NotExecutable(path));
    }
    let abs = std::fs::canonicalize(&path)
        .map_err(|_| RecordError::ProgramNotFound(program.to_os_string()))?;
    check_injectable(&abs)?;
    Ok(abs)
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The agent is injected with `LD_PRELOAD`, which only the dynamic loader
/// honours: a static or 32-bit executable cannot be recorded.
fn check_injectable(path: &Path) -> Result<(), RecordError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RecordError::Io(format!("cannot read {}: {e}", path.display())))?;
    if bytes.starts_with(b"#!") {
        return Ok(()); // a script: its interpreter is what runs
    }
    if !bytes.starts_with(b"\x7fELF") {
        return Err(RecordError::NotExecutable(path.to_path_buf()));
    }
    if bytes.get(4) != Some(&2) || bytes.get(18..20) != Some(&[0x3e, 0][..]) {
        return Err(RecordError::Unsupported {
            path: path.to_path_buf(),
            why: "not an x86-64 ELF executable".into(),
        });
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    if bytes.len() < 64 {
        return Err(RecordError::NotExecutable(path.to_path_buf()));
    }
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    let has_interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= bytes.len()
            && u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) == 3
    });
    if !has_interp {
        return Err(RecordError::Unsupported {
            path: path.to_path_buf(),
            why: "it is statically linked, and reprise injects its agent with LD_PRELOAD; rebuild it dynamically linked".into(),
        });
    }
    Ok(())
}

/// Where the agent library is: `$REPRISE_AGENT`, else next to the running
/// `reprise` binary (or one level up, for test binaries in `deps/`).
pub fn find_agent() -> Result<PathBuf, RecordError> {
    const NAME: &str = "libreprise_preload.so";
    if let Some(p) = std::env::var_os(reprise_abi::ENV_AGENT) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(RecordError::AgentMissing(p))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| RecordError::Io(format!("cannot find reprise itself: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    for c in [
        dir.join(NAME),
        dir.join("..").join(NAME),
        dir.join("../lib/reprise").join(NAME),
    ] {
        if c.is_file() {
            return std::fs::canonicalize(&c).map_err(|e| RecordError::Io(e.to_string()));
        }
    }
    Err(RecordError::AgentMissing(dir.join(NAME)))
}

/// The environment the program sees: the caller's, plus the agent.
pub fn agent_env(
    base: &[(OsString, OsString)],
    agent: &Path,
    control: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = base
        .iter()
        .filter(|(k, _)| {
            k != "LD_PRELOAD" && k != reprise_abi::ENV_CONTROL && k != reprise_abi::func_plan::ENV
        })
        .cloned()
        .collect();
    let mut preload = agent.as_os_str().to_os_string();
    if let Some((_, old)) = base.iter().find(|(k, _)| k == "LD_PRELOAD") {
        if !old.is_empty() {
            preload.push(":");
            preload.push(old);
        }
    }
    env.push(("LD_PRELOAD".into(), preload));
    env.push((
        reprise_abi::ENV_CONTROL.into(),
        control.as_os_str().to_os_string(),
    ));
    env
}

/// Starts `program` with `argv` (argv[0] included) and exactly `env`, ASLR
/// off, dying with reprise if reprise dies. `hide_vdso`: see [`hide_vdso`].
pub fn spawn(
    program: &Path,
    argv: &[OsString],
    env: &[(OsString, OsString)],
    cwd: &Path,
    hide_vdso: bool,
) -> Result<Child, RecordError> {
    spawn_with(program, argv, env, cwd, None, hide_vdso)
}

/// [`spawn`], with the program's stdin, stdout and stderr given (the
/// replayer keeps each attempt's output apart).
pub fn spawn_with(
    program: &Path,
    argv: &[OsString],
    env: &[(OsString, OsString)],
    cwd: &Path,
    stdio: Option<[std::process::Stdio; 3]>,
    hide_vdso: bool,
) -> Result<Child, RecordError> {
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(program);
    cmd.arg0(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd);
    if let Some([i, o, e]) = stdio {
        cmd.stdin(i).stdout(o).stderr(e);
    }
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions.
    unsafe {
        cmd.pre_exec(move || {
            libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            if hide_vdso && libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| RecordError::Spawn {
        path: program.to_path_buf(),
        why: e.to_string(),
    })?;
    if hide_vdso {
        if let Err(why) = hide_vdso_at_exec(child.id() as libc::pid_t) {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            return Err(RecordError::Spawn {
                path: program.to_path_buf(),
                why: format!("cannot hide the vDSO from it: {why}"),
            });
        }
    }
    Ok(child)
}

/// The program stopped right after `execve` (it asked to be traced): its
/// auxiliary vector's `AT_SYSINFO_EHDR` becomes [`AT_REPRISE_VDSO`], so the
/// dynamic loader does not use the vDSO and glibc asks the kernel for the
/// time with real `clock_gettime` syscalls — which the agent traps, records
/// and replays, even when glibc reads the clock internally (temporary file
/// names). The agent's own clock wrappers still call the vDSO, found there.
/// Then the program runs on, untraced. One ptrace stop per program.
fn hide_vdso_at_exec(pid: libc::pid_t) -> Result<(), String> {
    const AT_NULL: u64 = 0;
    const AT_SYSINFO_EHDR: u64 = 33;
    let mut status = 0;
    // SAFETY: waitpid/ptrace on our own traced child; memory is read and
    // written with PEEKDATA/POKEDATA at addresses inside its stack,
    // walking the layout the kernel builds at exec (argc, argv, NULL,
    // envp, NULL, auxv pairs up to AT_NULL).
    unsafe {
        if libc::waitpid(pid, &mut status, 0) != pid {
            return Err(std::io::Error::last_os_error().to_string());
        }
        if !libc::WIFSTOPPED(status) {
            return Err("it did not stop at exec".into());
        }
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        if libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs as *mut _) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let peek = |addr: u64| -> u64 {
            *libc::__errno_location() = 0;
            libc::ptrace(libc::PTRACE_PEEKDATA, pid, addr, 0) as u64
        };
        let mut p = regs.rsp;
        let argc = peek(p);
        p += 8 * (argc + 2);
        while peek(p) != 0 {
            p += 8;
        }
        p += 8;
        for _ in 0..64 {
            let kind = peek(p);
            if kind == AT_NULL {
                break;
            }
            if kind == AT_SYSINFO_EHDR
                && libc::ptrace(libc::PTRACE_POKEDATA, pid, p, AT_REPRISE_VDSO) != 0
            {
                return Err(std::io::Error::last_os_error().to_string());
            }
            p += 16;
        }
        if libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(())
}
