#!/usr/bin/env bash
# The main job on a bundled bug: record runs of a buggy multithreaded
# program until one fails, replay the trace until the failure reproduces
# (the feedback strategy flips the races the sketch did not record), show
# the root-cause report, then replay the saved schedule once more: one
# attempt.
#
# The bug: testbugs/programs/mysql_3596_procinfo.c, an atomicity violation
# (MySQL #3596: SHOW PROCESSLIST checks thd->proc_info for NULL, then uses
# it, while the connection thread sets it to NULL in between), which
# crashes with SIGSEGV in some runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --workspace --locked
# Where cargo put it (CARGO_TARGET_DIR moves the target directory).
reprise=${CARGO_TARGET_DIR:-$PWD/target}/release/reprise
[ -x "$reprise" ] || { echo "demo: $reprise was not built" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export REPRISE_TRACE_DIR="$work/traces"
cc -g -O1 -pthread testbugs/programs/mysql_3596_procinfo.c -o "$work/mysql_3596_procinfo"

for try in 1 2 3 4 5; do
    echo "== recording runs of mysql_3596_procinfo until one fails (at most 200)"
    # reprise exits with the failing run's status (0: none failed).
    if "$reprise" record --until-failure 200 "$work/mysql_3596_procinfo" 300 2000 >/dev/null 2>"$work/record.err"; then
        tail -n 1 "$work/record.err" >&2
        exit 1
    fi
    tail -n 2 "$work/record.err"
    echo
    echo "== replaying the trace until the failure reproduces"
    if "$reprise" replay --max-attempts 10; then
        echo
        echo "== replaying again: the saved schedule reproduces it in one attempt"
        "$reprise" replay --max-attempts 1
        exit 0
    fi
    echo "(not reproduced from this recording within 10 attempts; recording another failing run)"
    echo
done
exit 1
