#!/usr/bin/env bash
# Installs what reprise needs to build and test, when missing: a C compiler
# for the test programs, Cap'n Proto's compiler (for the schema freshness
# test), z3's library, and the tools the benchmarks and tests record
# (pigz, pbzip2, xz; memcached, nginx and redis-server, run as servers;
# libsqlite3-dev, driven by threads), and Chromium
# (the report tests render the HTML report headless). Rust itself comes from rustup (https://rustup.rs).
set -euo pipefail

need=()
command -v gcc    >/dev/null 2>&1 || need+=(gcc)
command -v g++    >/dev/null 2>&1 || need+=(g++)
command -v capnp  >/dev/null 2>&1 || need+=(capnproto)
command -v pigz   >/dev/null 2>&1 || need+=(pigz)
command -v pbzip2 >/dev/null 2>&1 || need+=(pbzip2)
command -v xz     >/dev/null 2>&1 || need+=(xz-utils)
[ -e /usr/include/z3.h ] || need+=(libz3-dev)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Servers the tests record under a client's load (cli/tests/debian_servers.rs).
[ -x /usr/bin/memcached ] || need+=(memcached)
[ -x /usr/sbin/nginx ]    || need+=(nginx)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
# SQLite's library, driven by many threads (cli/tests/sqlite_threads.rs).
[ -e /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing: install Rust with rustup (https://rustup.rs), then run this again" >&2
    exit 1
fi
