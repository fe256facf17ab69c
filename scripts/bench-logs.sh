#!/usr/bin/env bash
# Log shipping benchmark (issue 10 deliverable 7): builds the release binaries into
# target/bench (its own target dir, so it never blocks the debug builds), then runs the ignored
# test `bench_log_shipping` in tests/tests/logging.rs: a one-node lab cluster, one container
# writing KEEL_BENCH_LINES (default 300000) lines as fast as it can, timed from its first line
# to the last one in the log store, with the agent's and keel-control's CPU time; then rsyslog
# (Debian's, imfile -> TCP on loopback -> omfile) ships a copy of the same file as the
# reference. Needs root (network namespaces), sqlite3 and rsyslog.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in sqlite3:sqlite3 rsyslogd:rsyslog; do
  if ! command -v "${tool%%:*}" >/dev/null; then
    echo "${tool%%:*} is missing: apt-get install -y ${tool##*:}" >&2
    exit 1
  fi
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/bench}" CARGO_INCREMENTAL=0
cargo build --release --workspace --bins
cargo test --release -p keel-tests --test logging -- --ignored bench_log_shipping --nocapture 2>&1 \
  | tee "${CARGO_TARGET_DIR}/bench-logs.out" | grep -E '^BENCH|^test result|panicked'
