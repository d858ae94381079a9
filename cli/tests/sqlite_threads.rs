//! SQLite (Debian's libsqlite3) in multi-threaded mode: four threads, each
//! with its own connection to one database file (its default rollback
//! journal), insert and read in transactions, retrying when it is busy.
//! What each thread reads depends on how the threads interleaved; the
//! replay, with no database at all (every read of the file comes from the
//! trace), must give the same answers.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::stderr;

const LIMIT: Duration = Duration::from_secs(120);
const PROGRAM: &str = include_str!("programs/sqlite_threads.c");

#[test]
fn sqlite_threads_replay_what_each_thread_read() {
    assert!(
        PathBuf::from("/usr/include/sqlite3.h").exists(),
        "libsqlite3-dev is missing: scripts/setup.sh installs it"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let src = root.join("sqlite_threads.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = root.join("sqlite_threads");
    // The library after the source that uses it.
    let st = std::process::Command::new("gcc")
        .args(["-O1", "-g", "-pthread"])
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg("-lsqlite3")
        .status()
        .expect("gcc is needed to build test programs");
    assert!(st.success(), "gcc failed for sqlite_threads.c");
    for k in 0..2 {
        let db = root.join(format!("orders{k}.db"));
        let trace = root.join(format!("sqlite{k}.trace"));
        let o = common::record(root, &trace, &exe, &[db.to_str().unwrap(), "4", "100"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let printed = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(printed.contains("orders 400 total 619800"), "{printed}");
        for _ in 0..2 {
            let out = common::replays_as_recorded(root, &trace, &[], LIMIT);
            // Every thread read what it read in the recording.
            assert!(
                out.starts_with(&printed),
                "recorded:\n{printed}\nreplayed:\n{out}"
            );
        }
    }
}
