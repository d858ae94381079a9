#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds the
# workspace (the agent library must exist before the CLI tests run), runs
# every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --locked
cargo test --workspace --locked -- --test-threads=2
