#!/usr/bin/env bash
# The stats collector on real cgroup v2: boot a Debian kernel with virtme-ng (no KVM needed;
# this machine's filesystem is the VM's root over 9p) and run keel-agent's stats_cgroup root
# test there (CPU rate, working set, OOM kill, pids, netns traffic, Prometheus text). The CI
# host is hybrid (v1 controllers), where the same test runs in `cargo test`.
#
# Needs (installed by .ci/packages.d/shim.txt, stats.txt and shim.pip): qemu-system-x86, kmod,
# busybox-static, iproute2, iputils-ping, virtme-ng. Downloads the kernel package into /var/cache/keel-ci.
# Exits non-zero when anything is missing or any test fails.
set -euo pipefail
VM_NAME=stats-cgroupv2-vm
# shellcheck source=scripts/lib/vm.sh
source "$(dirname "$0")/../lib/vm.sh"
vm_setup

# 1. Build the test binary on the host (the VM only runs it).
TESTBIN="$(vm_test_binary keel-agent stats_cgroup)"

# 2. Run it inside the VM on cgroup v2; sockets and FIFOs need a tmpfs (9p refuses them).
OUT="$(mktemp -d -t keel-stats-vm.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
cat > "$OUT/inner.sh" <<EOF
#!/bin/bash
set -u
if [ "\$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || { echo "no cgroup2" > "$OUT/result.txt"; echo 1 > "$OUT/rc"; exit 0; }
fi
mkdir -p /run/keeltmp && mount -t tmpfs tmpfs /run/keeltmp
# The test links two network namespaces with a veth pair: its module is not loaded at boot,
# and the VM's module tree may not have it, so load a copy from the shared folder.
modprobe veth > "$OUT/modprobe.txt" 2>&1 || insmod "$OUT/veth.ko" >> "$OUT/modprobe.txt" 2>&1 || true
cd "$REPO/agent"
echo "cgroup: \$(stat -fc %T /sys/fs/cgroup) controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)" > "$OUT/result.txt"
TMPDIR=/run/keeltmp "$TESTBIN" --test-threads=1 --nocapture >> "$OUT/result.txt" 2>&1
echo \$? > "$OUT/rc"
EOF
cp "$KDIR/lib/modules/$KVER/kernel/drivers/net/veth.ko" "$OUT/veth.ko" || fail "veth.ko missing from $KDIR"
vm_run 900 "$OUT"
cat "$OUT/modprobe.txt" 2>/dev/null || true
vm_verdict "$OUT" "keel-agent stats tests"
