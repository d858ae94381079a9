//! The access-point table and variable names of a small C program, PIE
//! and not, with and without DWARF; and of a system binary.

mod common;

use std::path::Path;
use std::time::Instant;

use object::{Object, ObjectSymbol};
use reprise_abi::observe::{AccessPoint, ACCESS_READ, ACCESS_WRITE, REG_NONE, REG_RIP};
use reprise_tracee::{access_points, disassemble, Disassembler, Variables};

const PROGRAM: &str = r#"
#include <pthread.h>

struct { long a; const char *volatile p; } conn;
static int arr[8];
struct inner { int x; short y[4]; };
struct outer { long tag; struct inner in[3]; } nested;
int m2[3][4];
/* A definition after a declaration: DW_AT_specification. */
struct pair { int first, second; };
extern struct pair shared;
struct pair shared = {1, 2};

__attribute__((noinline, noclone)) void clear_p(void) { conn.p = 0; }
__attribute__((noinline, noclone)) int read_arr(int i) { return arr[i]; }
__attribute__((noinline, noclone)) long locals(void) {
    volatile long i;
    long s = 0;
    for (i = 0; i < 10; i++)
        s += i;
    return s;
}
__attribute__((noinline, noclone)) int bump(void) {
    static int counter;
    return ++counter;
}

static void *thread(void *arg) {
    (void)arg;
    clear_p();
    return 0;
}

int main(int argc, char **argv) {
    (void)argv;
    pthread_t t;
    pthread_create(&t, 0, thread, 0);
    pthread_join(t, 0);
    arr[argc & 7] = argc;
    return read_arr(argc) + (int)locals() + bump() + nested.in[1].y[2] + m2[1][2]
        + shared.second;
}
"#;

/// Address and size of symbol `name` (or, for function statics, the
/// symbol `name.N` gcc gives them).
fn symbol(exe: &Path, name: &str) -> (u64, u64) {
    let data = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let prefix = format!("{name}.");
    file.symbols()
        .find(|s| {
            s.name().is_ok_and(|n| {
                n == name
                    || n.strip_prefix(&prefix)
                        .is_some_and(|r| r.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .map(|s| (s.address(), s.size()))
        .unwrap_or_else(|| panic!("no symbol {name} in {}", exe.display()))
}

fn points_in(points: &[AccessPoint], (addr, size): (u64, u64)) -> Vec<AccessPoint> {
    points
        .iter()
        .filter(|p| p.vaddr >= addr && p.vaddr < addr + size)
        .copied()
        .collect()
}

fn check_program(exe: &Path, pie: bool) {
    let points = access_points(exe).unwrap();
    assert!(!points.is_empty());
    assert!(points.windows(2).all(|w| w[0].vaddr < w[1].vaddr), "sorted");
    let data = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    assert_eq!(file.kind() == object::ObjectKind::Dynamic, pie);

    // No stack accesses at all; those of `locals` were all there was.
    assert!(
        points.iter().all(|p| p.base != 15 && p.index != 15),
        "{points:#?}"
    );
    let locals = symbol(exe, "locals");
    assert_eq!(points_in(&points, locals), vec![], "locals");

    // Every point's first byte is the file's.
    let text = file.section_by_name(".text").unwrap();
    let text_data = object::ObjectSection::data(&text).unwrap();
    for p in &points {
        let off = (p.vaddr - object::ObjectSection::address(&text)) as usize;
        assert_eq!(text_data[off], p.first_byte, "{p:?}");
        assert!(p.flags & (ACCESS_READ | ACCESS_WRITE) != 0);
        assert!(matches!(p.scale, 1 | 2 | 4 | 8));
    }

    let (conn, _) = symbol(exe, "conn");
    let clear = points_in(&points, symbol(exe, "clear_p"));
    assert_eq!(clear.len(), 1, "{clear:#?}");
    let w = clear[0];
    assert_eq!(w.flags, ACCESS_WRITE);
    assert_eq!(w.base, REG_RIP);
    assert_eq!(w.index, REG_NONE);
    assert_eq!(w.size, 8);
    assert_eq!(
        (w.vaddr + u64::from(w.len)).wrapping_add(w.disp as u64),
        conn + 8
    );
    let text = disassemble(exe, w.vaddr).unwrap();
    assert!(text.starts_with("mov "), "{text}");
    assert!(text.contains("qword ptr"), "{text}");

    // arr[i]: 4 bytes read, indexed by the argument (rdi) scaled by 4.
    let (arr, _) = symbol(exe, "arr");
    let read = points_in(&points, symbol(exe, "read_arr"));
    assert_eq!(read.len(), 1, "{read:#?}");
    let r = read[0];
    assert_eq!((r.flags, r.size, r.scale), (ACCESS_READ, 4, 4), "{r:?}");
    assert_ne!(r.index, REG_NONE);
    if !pie {
        // Absolute: arr(,%rdi,4).
        assert_eq!((r.base, r.disp as u64), (REG_NONE, arr), "{r:?}");
    }

    // ++counter: a read-modify-write or a read and a write.
    let (counter, _) = symbol(exe, "counter");
    let bump = points_in(&points, symbol(exe, "bump"));
    let flags = bump.iter().fold(0, |f, p| {
        assert_eq!(p.base, REG_RIP);
        assert_eq!(
            (p.vaddr + u64::from(p.len)).wrapping_add(p.disp as u64),
            counter
        );
        f | p.flags
    });
    assert_eq!(flags, ACCESS_READ | ACCESS_WRITE, "{bump:#?}");

    let d = Disassembler::open(exe).unwrap();
    assert!(d.text_at(locals.0).is_some());
    assert_eq!(d.text_at(0), None);
    assert!(disassemble(exe, 0).is_err());
}

fn check_names(exe: &Path, dwarf: bool) {
    let vars = Variables::load(exe).unwrap();
    let (conn, _) = symbol(exe, "conn");
    let (arr, _) = symbol(exe, "arr");
    let (nested, _) = symbol(exe, "nested");
    let (m2, _) = symbol(exe, "m2");
    let (counter, _) = symbol(exe, "counter");
    let (shared, _) = symbol(exe, "shared");
    let d = |a| vars.describe(a).unwrap_or_default();
    if dwarf {
        assert_eq!(d(conn), "conn.a");
        assert_eq!(d(conn + 3), "conn.a+3");
        assert_eq!(d(conn + 8), "conn.p");
        assert_eq!(d(arr), "arr[0]");
        assert_eq!(d(arr + 12), "arr[3]");
        assert_eq!(d(arr + 13), "arr[3]+1");
        assert_eq!(d(nested + 8 + 12 + 4 + 2 * 2), "nested.in[1].y[2]");
        assert_eq!(d(m2 + (4 + 2) * 4), "m2[1][2]");
        assert_eq!(d(counter), "counter");
        assert_eq!(d(shared + 4), "shared.second");
    } else {
        assert_eq!(d(conn + 8), "conn+8");
        assert_eq!(d(arr + 12), "arr+12");
        assert!(d(counter).starts_with("counter"), "{}", d(counter));
        assert_eq!(d(shared + 4), "shared+4");
    }
    // Past arr: something else or nothing.
    assert!(!d(arr + 32).starts_with("arr"), "{}", d(arr + 32));
    assert_eq!(vars.describe(0), None);
}

#[test]
fn pie_with_dwarf() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile(dir.path(), "prog", PROGRAM, &["-g", "-O1", "-fPIE", "-pie"]);
    check_program(&exe, true);
    check_names(&exe, true);
}

#[test]
fn non_pie_with_dwarf() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile(
        dir.path(),
        "prog",
        PROGRAM,
        &["-g", "-O1", "-fno-pie", "-no-pie"],
    );
    check_program(&exe, false);
    check_names(&exe, true);
}

#[test]
fn symbols_without_dwarf() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile(dir.path(), "prog", PROGRAM, &["-O1"]);
    check_program(&exe, true);
    check_names(&exe, false);
}

#[test]
fn system_binaries() {
    for path in ["/usr/bin/xz", "/bin/ls"] {
        let path = Path::new(path);
        if !path.exists() {
            continue;
        }
        let t = Instant::now();
        let points = access_points(path).unwrap();
        let decoded = t.elapsed();
        let t = Instant::now();
        let vars = Variables::load(path).unwrap();
        let loaded = t.elapsed();
        eprintln!(
            "{}: {} access points in {decoded:?}; {} variables in {loaded:?}",
            path.display(),
            points.len(),
            vars.len()
        );
        assert!(!points.is_empty());
        assert!(points.iter().all(|p| p.base != 15 && p.size > 0));
        let d = Disassembler::open(path).unwrap();
        for p in points.iter().step_by(points.len() / 50 + 1) {
            assert!(d.text_at(p.vaddr).is_some());
        }
    }
}
