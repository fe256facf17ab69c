#!/usr/bin/env bash
# keel-shim on real cgroup v2: boot a Debian kernel with virtme-ng (no KVM needed; this
# machine's filesystem is the VM's root over 9p) and run keel-shim's cgroup tests there.
# The CI host itself is hybrid (v1 controllers), so this is the only place v2 is exercised.
#
# Needs (installed by .ci/packages.d/shim.txt and shim.pip): qemu-system-x86, kmod,
# busybox-static, virtme-ng. Downloads the kernel package into /var/cache/keel-ci.
# Exits non-zero when anything is missing or any test fails.
set -euo pipefail
VM_NAME=shim-cgroupv2-vm
# shellcheck source=scripts/lib/vm.sh
source "$(dirname "$0")/../lib/vm.sh"
vm_setup

# 1. Build the test binary on the host (the VM only runs it).
TESTBIN="$(vm_test_binary keel-shim cgroups)"
cargo build -p keel-shim --bin keel-shim >/dev/null 2>&1 || fail "cargo build -p keel-shim failed"

# 2. Run it inside the VM on cgroup v2; sockets and FIFOs need a tmpfs (9p refuses them).
OUT="$(mktemp -d -t keel-vm.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
cat > "$OUT/inner.sh" <<EOF
#!/bin/bash
set -u
if [ "\$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || { echo "no cgroup2" > "$OUT/result.txt"; echo 1 > "$OUT/rc"; exit 0; }
fi
mkdir -p /run/keeltmp && mount -t tmpfs tmpfs /run/keeltmp
cd "$REPO/shim"
echo "cgroup: \$(stat -fc %T /sys/fs/cgroup) controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)" > "$OUT/result.txt"
TMPDIR=/run/keeltmp "$TESTBIN" --test-threads=1 >> "$OUT/result.txt" 2>&1
echo \$? > "$OUT/rc"
EOF
vm_run 900 "$OUT"
vm_verdict "$OUT" "keel-shim cgroup tests"
