//! The committed generated code must match trace.capnp.

use std::path::Path;
use std::process::Command;

/// Drops the `// ...` header lines (they name the capnp tool's version).
fn body(s: &str) -> String {
    s.lines()
        .skip_while(|l| l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn generated_code_is_fresh() {
    if Command::new("capnp").arg("--version").output().is_err() {
        println!("SKIPPED generated_code_is_fresh: the `capnp` tool is not installed");
        return;
    }
    let schema_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    capnpc::CompilerCommand::new()
        .src_prefix(schema_dir)
        .file(schema_dir.join("trace.capnp"))
        .output_path(tmp.path())
        .run()
        .expect("capnp compile");
    let fresh = std::fs::read_to_string(tmp.path().join("trace_capnp.rs")).unwrap();
    let committed = std::fs::read_to_string(schema_dir.join("src/trace_capnp.rs")).unwrap();
    assert!(
        body(&fresh) == body(&committed),
        "schema/src/trace_capnp.rs is stale: run scripts/regen-schema.sh and commit the result"
    );
}
