#!/usr/bin/env bash
# The main job on a bundled bug: record runs of a buggy multithreaded
# program (pbzip2 0.9.4's FIFO use-after-free, testbugs/programs/
# pbzip2_094_fifo.c) until one fails, then show the failure report.
# Replay is not implemented yet (see README, "What does not work yet").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --workspace --locked
reprise=target/release/reprise

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export REPRISE_TRACE_DIR="$work/traces"
gcc -g -O1 -pthread testbugs/programs/pbzip2_094_fifo.c -o "$work/pbzip2_094_fifo"

echo "== recording runs of pbzip2_094_fifo until one fails (at most 100)"
for i in $(seq 1 100); do
    if "$reprise" record "$work/pbzip2_094_fifo" 24 200 0 >/dev/null 2>"$work/record.err"; then
        continue
    fi
    echo "run $i failed under record:"
    tail -n 1 "$work/record.err"
    echo
    echo "== the recorded trace"
    "$reprise" ls
    echo
    echo "== its failure report (reprise dump, last lines)"
    "$reprise" dump | tail -n 20
    exit 0
done
echo "no failing run in 100 recordings" >&2
exit 1
