#!/usr/bin/env bash
# compare.sh - run ../shared/bench/cni_baseline.sh on the reference plugins and on ours in
# the same session, interleaved ROUNDS times, and print the medians and our/reference ratios.
#
# Usage (root):  cni/bench/compare.sh [RUNS] [ROUNDS]
#   BASELINE=/path/to/cni_baseline.sh  (default: /work/shared/bench/cni_baseline.sh)
#   REFDIR=/usr/lib/cni                (Debian containernetworking-plugins)
# Raw outputs go to target/cni-bench/.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-50}; ROUNDS=${2:-2}
BASELINE=${BASELINE:-/work/shared/bench/cni_baseline.sh}
REFDIR=${REFDIR:-/usr/lib/cni}
OUT=target/cni-bench
[[ $EUID -eq 0 ]] || { echo "needs root" >&2; exit 2; }
[[ -x $REFDIR/bridge ]] || { echo "reference plugins missing: apt-get install -y containernetworking-plugins" >&2; exit 2; }
cargo build -p keel-cni --release --bins
mkdir -p "$OUT/bin"
cp target/release/keel-bridge target/release/keel-host-local target/release/keel-loopback "$OUT/bin/"
for r in $(seq 1 "$ROUNDS"); do
  bash "$BASELINE" "$REFDIR" "$RUNS" > "$OUT/reference-$r.txt" 2>&1
  PLUGIN=keel-bridge IPAM=keel-host-local bash "$BASELINE" "$OUT/bin" "$RUNS" > "$OUT/keel-$r.txt" 2>&1
done
# median column of "  NAME  n median p90 min max" lines, per variant
med() { awk -v v="$2" -v k="$3" '/^variant/ {cur=$2} cur==v && $1==k {print $3}' "$1"; }
printf "%-6s %-10s %12s %12s %8s\n" variant op reference_us keel_us ratio
for v in plain masq; do
  for op in ADD CHECK DEL DEL-again VERSION; do
    for r in $(seq 1 "$ROUNDS"); do
      a=$(med "$OUT/reference-$r.txt" "$v" "$op"); b=$(med "$OUT/keel-$r.txt" "$v" "$op")
      printf "%-6s %-10s %12s %12s %8s\n" "$v" "$op" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN {if (a>0) printf "%.2f", b/a}')"
    done
  done
done
