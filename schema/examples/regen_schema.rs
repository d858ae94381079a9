//! Regenerates `schema/src/trace_capnp.rs` from `schema/trace.capnp`.
//!
//! Usage: `cargo run -p reprise-schema --example regen_schema -- OUT_DIR`
//! (`scripts/regen-schema.sh` runs it and copies the result into place).
//! Needs the `capnp` tool on PATH.

use std::path::PathBuf;

fn main() {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            eprintln!("usage: regen_schema OUT_DIR");
            std::process::exit(2)
        });
    let schema_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = capnpc::CompilerCommand::new()
        .src_prefix(&schema_dir)
        .file(schema_dir.join("trace.capnp"))
        .output_path(&out)
        .run()
    {
        eprintln!("regen_schema: capnp compile failed: {e}");
        std::process::exit(1);
    }
    println!("{}", out.join("trace_capnp.rs").display());
}
