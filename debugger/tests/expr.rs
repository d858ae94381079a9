//! Expressions against a real stopped process: a small C program compiled
//! here with `gcc -g -O0`, stopped by its own `raise(SIGSTOP)` inside a
//! function with locals.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use reprise_debugger::dwarf::{FrameContext, Program};
use reprise_debugger::expr::{evaluate, parse, EvalError, Evaluation};
use reprise_tracee::{snapshot_threads, MemoryMap, ProcessMemory, Symbolizer};

const PROGRAM: &str = r#"
#include <signal.h>
#include <stdlib.h>

enum color { RED, GREEN = 5, BLUE };
struct inner { int x; long y; };
struct outer {
    int id;
    struct inner inner;
    int arr[4];
    char name[8];
    unsigned flag : 3;
    int neg : 4;
};
struct node { int value; struct node *next; };

int g = 7;
long big = -1234567890123L;
char *msg = "hello";
int arr[5] = {10, 20, 30, 40, 50};
struct outer s = { 1, { 3, 99 }, {1, 2, 3, 4}, "abc", 5, -3 };
struct outer *sp = &s;
struct node *list;
struct node *nullp;
enum color col = BLUE;
int n = 3;
int *p = &g;
int values[20];
unsigned char uc = 200;
double ratio = 2.5;
static int file_static = 11;
int length = 4;
int grid[2][3] = {{1, 2, 3}, {4, 5, 6}};

static int work(int param, const char *label) {
    int local = param * 2;
    long total = 0;
    for (int i = 0; i < 3; i++)
        total += i;
    struct inner in = { local, total };
    raise(SIGSTOP);
    return local + in.x + (int)total + label[0];
}

int main(void) {
    struct node *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    b->value = 42;
    b->next = 0;
    a->value = 41;
    a->next = b;
    list = a;
    for (int i = 0; i < 20; i++)
        values[i] = i * i;
    return work(21, "lbl") == 0;
}
"#;

/// The compiled program, stopped; killed (and reaped) on drop, and by a
/// watchdog if the test takes too long.
struct Stopped {
    pid: i32,
    exe: PathBuf,
    done: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.pid), None);
    }
}

fn start() -> Stopped {
    start_with(PROGRAM, "-O0")
}

fn start_with(source: &str, opt: &str) -> Stopped {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("prog.c");
    std::fs::write(&src, source).unwrap();
    let exe = dir.path().join("prog");
    let out = Command::new("gcc")
        .args(["-g", opt, "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("gcc is needed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Reaped with waitpid by `Stopped`'s drop, not through the `Child`.
    #[allow(clippy::zombie_processes)]
    let pid = Command::new(&exe)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
        .id() as i32;
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = done.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !watchdog.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let stopped = Stopped {
        pid,
        exe,
        done,
        _dir: dir,
    };
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WUNTRACED)).unwrap() {
        WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
        other => panic!("child did not stop: {other:?}"),
    }
    stopped
}

fn load(child: &Stopped) -> Program {
    let mut program = Program::load(&child.exe).unwrap();
    let maps = MemoryMap::for_pid(child.pid).unwrap();
    let bias = program
        .load_bias_in(&maps)
        .expect("the executable is mapped");
    program.set_load_bias(bias);
    program
}

fn eval(
    program: &Program,
    frame: Option<&FrameContext>,
    mem: &ProcessMemory,
    text: &str,
) -> Result<Evaluation, EvalError> {
    let expr = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    evaluate(program, &expr, frame, mem)
}

fn show(
    program: &Program,
    frame: Option<&FrameContext>,
    mem: &ProcessMemory,
    text: &str,
) -> String {
    match eval(program, frame, mem, text) {
        Ok(e) => e.value.to_string(),
        Err(e) => panic!("{text}: {e}"),
    }
}

fn err(program: &Program, frame: Option<&FrameContext>, mem: &ProcessMemory, text: &str) -> String {
    match eval(program, frame, mem, text) {
        Ok(e) => panic!("{text} evaluated to {}", e.value),
        Err(e) => e.to_string(),
    }
}

#[test]
fn globals_of_a_stopped_process() {
    let child = start();
    let program = load(&child);
    let mem = ProcessMemory::new(child.pid);
    let show = |t: &str| show(&program, None, &mem, t);
    assert_eq!(show("g"), "7");
    assert_eq!(show("big"), "-1234567890123");
    assert_eq!(show("arr[2] + 1"), "31");
    assert_eq!(show("*p"), "7");
    assert_eq!(show("&g == p"), "1");
    assert_eq!(show("list->next->value"), "42");
    assert_eq!(show("(*list).value"), "41");
    assert_eq!(show("s.inner.x == 3 && n > 2"), "1");
    assert_eq!(
        show("s.inner.x == 4 && *(int *)0"),
        "0",
        "&& short-circuits"
    );
    assert_eq!(show("n > 2 || *(int *)0"), "1", "|| short-circuits");
    assert_eq!(show("sp->arr[3] * 10 - 1"), "39");
    assert_eq!(show("col"), "BLUE");
    assert_eq!(show("col == BLUE"), "1");
    assert_eq!(show("GREEN + 1"), "6");
    assert_eq!(show("*(arr + 2)"), "30");
    assert_eq!(show("&arr[4] - &arr[1]"), "3");
    assert_eq!(show("grid[1][2]"), "6");
    assert_eq!(show("uc"), "200 '\\310'");
    assert_eq!(show("ratio * 2"), "5");
    assert_eq!(show("file_static"), "11");
    assert_eq!(show("-n"), "-3");
    assert_eq!(show("~0u"), "4294967295");
    assert_eq!(show("!nullp"), "1");
    assert_eq!(show("(1 << 4) | 3"), "19");
    assert_eq!(show("7 % 4 ^ 1"), "2");
    assert_eq!(show("sizeof(struct node)"), "16");
    assert_eq!(show("s.name"), "\"abc\"");
    assert_eq!(show("'A'"), "65 'A'");
    assert_eq!(
        show("s"),
        "{id = 1, inner = {x = 3, y = 99}, arr = {1, 2, 3, 4}, name = \"abc\", flag = 5, neg = -3}"
    );
    assert_eq!(show("*sp"), show("s"));
    let values = show("values");
    assert!(
        values.starts_with("{0, 1, 4, 9,") && values.ends_with("225, ...}"),
        "{values}"
    );

    // char * prints with its string; pointer arithmetic is scaled.
    let m = show("msg");
    assert!(m.starts_with("0x") && m.ends_with(" -> \"hello\""), "{m}");
    let p0 = eval(&program, None, &mem, "p")
        .unwrap()
        .value
        .as_i128()
        .unwrap();
    let p1 = eval(&program, None, &mem, "p + 1")
        .unwrap()
        .value
        .as_i128()
        .unwrap();
    assert_eq!(p1 - p0, 4);
    let addr = eval(&program, None, &mem, "&g").unwrap().value;
    assert_eq!(addr.as_i128(), Some(p0));
    assert_eq!(addr.type_name(), "int *");

    // Types.
    let ty = |t: &str| eval(&program, None, &mem, t).unwrap().value.type_name();
    assert_eq!(ty("sp"), "struct outer *");
    assert_eq!(ty("big"), "long");
    assert_eq!(ty("s.arr"), "int[4]");
    assert_eq!(ty("grid"), "int[2][3]");
    assert_eq!(ty("msg"), "char *");
    assert_eq!(ty("col"), "enum color");
    assert_eq!(ty("big + 1"), "long");

    // What was read: the three links of the chain, nothing else.
    let ev = eval(&program, None, &mem, "list->next->value").unwrap();
    assert_eq!(ev.reads.len(), 3, "{:?}", ev.reads);
    assert_eq!(ev.reads[0].1, 8);
    assert_eq!(ev.reads[2].1, 4);
    assert_eq!(eval(&program, None, &mem, "&g").unwrap().reads, vec![]);
    let truth = eval(&program, None, &mem, "n > 2").unwrap().value;
    assert_eq!(truth.is_true(), Some(true));
}

#[test]
fn errors_are_one_clear_line() {
    let child = start();
    let program = load(&child);
    let mem = ProcessMemory::new(child.pid);
    let err = |t: &str| err(&program, None, &mem, t);
    let e = err("lenght");
    assert!(
        e.starts_with("no variable \"lenght\" here; in scope: "),
        "{e}"
    );
    assert!(e.ends_with("(did you mean \"length\"?)"), "{e}");
    assert_eq!(err("10 / (n - 3)"), "division by zero");
    assert_eq!(err("n % 0"), "division by zero");
    assert_eq!(err("*(int *)16"), "cannot read 4 bytes at 0x10");
    assert_eq!(err("nullp->value"), "cannot read 4 bytes at 0x0");
    assert_eq!(
        err("*g"),
        "cannot dereference a value of type int: it is not a pointer"
    );
    assert_eq!(
        err("s.nope"),
        "struct outer has no field \"nope\"; its fields: id, inner, arr, name, flag, neg"
    );
    assert_eq!(err("sp->inner.z").lines().count(), 1);
    assert!(err("g.x").contains("struct or union"));
    assert!(err("&(g + 1)").starts_with("cannot take the address"));
    assert!(err("(struct nothing *)p").contains("no type named"));
    assert!(err("s + 1").starts_with("\"s\" is a struct outer"));

    let e = parse("n > 2 &&").unwrap_err();
    assert_eq!(e.to_string(), "column 9: expected an expression after '&&'");
    assert_eq!(parse("s.inner.x = 3").unwrap_err().column, 11);
    assert_eq!(parse("arr[2").unwrap_err().column, 6);
}

/// The frame of `work` in the stopped thread, from the unwinder: its
/// registers, and as CFA the rsp of the frame above it (its caller's).
fn frame_of(program: &Program, pid: i32, function: &str) -> FrameContext {
    let threads = snapshot_threads(pid).unwrap();
    let maps = MemoryMap::for_pid(pid).unwrap();
    let mem = ProcessMemory::new(pid);
    let frames = Symbolizer::new().unwind(&threads[0].regs, &mem, &maps);
    let i = (0..frames.len())
        .find(|&i| {
            let f = FrameContext::from_unwound(&frames, i).unwrap();
            program.function_at(f.pc) == Some(function)
        })
        .unwrap_or_else(|| panic!("no frame of {function} in {frames:#?}"));
    FrameContext::from_unwound(&frames, i).unwrap()
}

#[test]
fn locals_of_a_stopped_frame() {
    let child = start();
    let program = load(&child);
    let mem = ProcessMemory::new(child.pid);
    let frame = frame_of(&program, child.pid, "work");
    let f = Some(&frame);
    assert_eq!(show(&program, f, &mem, "param"), "21");
    assert_eq!(show(&program, f, &mem, "local"), "42");
    assert_eq!(show(&program, f, &mem, "total"), "3");
    assert_eq!(show(&program, f, &mem, "in"), "{x = 42, y = 3}");
    assert_eq!(show(&program, f, &mem, "in.x + param"), "63");
    assert_eq!(show(&program, f, &mem, "g + local"), "49");
    let l = show(&program, f, &mem, "label");
    assert!(l.ends_with(" -> \"lbl\""), "{l}");
    assert_eq!(
        eval(&program, f, &mem, "label").unwrap().value.type_name(),
        "const char *"
    );

    // Locals come first, innermost scope first; `i` ended with its loop.
    let names = program.names_in_scope(f);
    assert_eq!(&names[..5], ["param", "label", "local", "total", "in"]);
    assert!(names.contains(&"g".to_string()) && !names.contains(&"i".to_string()));
    let e = err(&program, f, &mem, "locl");
    assert!(
        e.starts_with("no variable \"locl\" here; in scope: param, label, local"),
        "{e}"
    );
    assert!(e.ends_with("(did you mean \"local\"?)"), "{e}");
    // Without a frame, locals are not visible.
    assert!(err(&program, None, &mem, "local").starts_with("no variable \"local\""));
    assert!(Path::new(program.path()).exists());
}

/// Optimised code: parameters and locals in callee-saved registers or
/// location lists, recovered through the unwinder's registers.
const OPTIMISED: &str = r#"
#include <signal.h>
int gv = 5;
__attribute__((noinline)) int hot(int k, int *q) {
    int acc = k * 3;
    raise(SIGSTOP);
    return acc + *q + k;
}
int main(int argc, char **argv) { return hot(argc + 6, &gv); }
"#;

#[test]
fn locals_of_optimised_code() {
    let child = start_with(OPTIMISED, "-O2");
    let program = load(&child);
    let mem = ProcessMemory::new(child.pid);
    let frame = frame_of(&program, child.pid, "hot");
    let f = Some(&frame);
    assert_eq!(show(&program, f, &mem, "k"), "7");
    assert_eq!(show(&program, f, &mem, "*q + gv"), "10");
    // gcc keeps `acc` today; were it optimised out, say so, never fail.
    match eval(&program, f, &mem, "acc") {
        Ok(v) => assert!(["21", "<optimized out>"].contains(&v.value.to_string().as_str())),
        Err(e) => assert!(e.to_string().contains("optimized out"), "{e}"),
    }
}
