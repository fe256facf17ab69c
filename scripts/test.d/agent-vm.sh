#!/usr/bin/env bash
# The one-node walkthrough and the monitoring test on real cgroup v2: boot a Debian kernel with
# virtme-ng (no KVM needed; this machine's filesystem is the VM's root over 9p) and run
# keel-tests' one_node test there (keel-control, an agent and Debian's docker-registry in a lab
# namespace, a pod with limits Running and serving its page, memory.max / cpu.max of its pod
# cgroup), then its monitoring test on one node (kubectl top with a CPU burner and 220 MiB held, the
# summary's working set and network counters, /metrics/cadvisor parsed). The CI host itself is
# hybrid (v1 controllers), so this is where the agent's v2 cgroups and stats are exercised.
#
# Needs (.ci/packages.d/tests.txt and tests.pip): qemu-system-x86, kmod, busybox-static,
# docker-registry, umoci, skopeo, curl, virtme-ng, and kubectl. The kernel package is downloaded
# into /var/cache/keel-ci by scripts/lib/vm.sh. Exits non-zero on any failure.
set -euo pipefail
VM_NAME=agent-vm
# shellcheck source=scripts/lib/vm.sh
source "$(dirname "$0")/../lib/vm.sh"
vm_setup

# 1. Everything is built on the host; the VM's root (this filesystem over 9p) is read-only.
cargo build --workspace --bins >/dev/null 2>&1 || fail "cargo build --workspace --bins failed"
TESTBIN="$(vm_test_binary keel-tests one_node)"
MONBIN="$(vm_test_binary keel-tests monitoring)"
cargo build -p keel-tests --example lab >/dev/null 2>&1 || fail "cargo build -p keel-tests --example lab failed"
LAYOUT="$("${CARGO_TARGET_DIR:-target}/debug/examples/lab" images)" || fail "building the test images failed"
IMAGE_CACHE="$(dirname "$(dirname "$LAYOUT")")"

# 2. Run it inside the VM on cgroup v2; sockets, FIFOs, the lab folder (agent root, shim
#    state, registry storage) live on a tmpfs (9p refuses special files).
OUT="$(mktemp -d -t keel-agent-vm.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
cat > "$OUT/inner.sh" <<EOF
#!/bin/bash
set -u
if [ "\$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || { echo "no cgroup2" > "$OUT/result.txt"; echo 1 > "$OUT/rc"; exit 0; }
fi
# The lab's and the pods' network parts: bridge, veth, overlay, nf_tables, NAT.
for m in bridge veth overlay nf_tables nft_compat nft_chain_nat nf_nat nf_conntrack xt_MASQUERADE xt_conntrack xt_comment xt_mark iptable_nat iptable_filter br_netfilter; do
  modprobe -q "\$m" 2>/dev/null || true
done
# The pod cgroups need the cpu and memory controllers below the root.
echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
mkdir -p /run/keeltmp && mount -t tmpfs tmpfs /run/keeltmp
echo "cgroup: \$(stat -fc %T /sys/fs/cgroup) controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)" > "$OUT/result.txt"
cd "$REPO/tests"
export HOME=/run/keeltmp TMPDIR=/run/keeltmp KEEL_IMAGE_CACHE="$IMAGE_CACHE" KEEL_TIMEOUT_SCALE=\${KEEL_TIMEOUT_SCALE:-4}
# monitoring.rs on the master alone: a second agent under emulation only adds minutes.
export KEEL_MONITORING_ONE_NODE=1
rc=0
for bin in "$TESTBIN" "$MONBIN"; do
  start=\$(date +%s)
  "\$bin" --test-threads=1 --nocapture >> "$OUT/result.txt" 2>&1 || rc=1
  echo "\$(basename "\$bin"): \$(( \$(date +%s) - start )) s" >> "$OUT/result.txt"
done
echo \$rc > "$OUT/rc"
EOF
vm_run 1800 "$OUT" --cpus 2 --rodir="/usr/lib/modules=$KDIR/lib/modules"
vm_verdict "$OUT" "the one-node walkthrough and the monitoring test"
