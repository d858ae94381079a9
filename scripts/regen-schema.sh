#!/bin/sh
# Regenerates schema/src/trace_capnp.rs from schema/trace.capnp with the
# capnpc crate. Run after editing trace.capnp, and commit the result.
# Needs the Cap'n Proto tool `capnp` on PATH.
set -eu
cd "$(dirname "$0")/.."
command -v capnp >/dev/null 2>&1 || { echo "regen-schema: capnp is not installed (apt-get install capnproto)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run -q -p reprise-schema --example regen_schema -- "$tmp" >/dev/null
cp "$tmp/trace_capnp.rs" schema/src/trace_capnp.rs
echo "regenerated schema/src/trace_capnp.rs"
