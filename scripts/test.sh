#!/usr/bin/env bash
# The README's test command: lint, every unit and integration tier, then the extra tiers in
# scripts/test.d/ (cgroup v2 VM, ...). Run as root: the root tiers create namespaces,
# cgroups, mounts and iptables chains and remove them again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the root test tiers need root; run: sudo bash scripts/test.sh" >&2
  exit 1
fi
bash scripts/install-deps.sh
# One build from scratch: incremental artifacts would only fill the disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked --bins
cargo test --workspace --locked -- --test-threads="${KEEL_TEST_THREADS:-2}"
for extra in scripts/test.d/*.sh; do
  [ -e "$extra" ] || continue
  echo "== $extra"
  bash "$extra"
done
