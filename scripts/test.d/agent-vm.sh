#!/usr/bin/env bash
# The one-node walkthrough on real cgroup v2: boot a Debian kernel with virtme-ng (no KVM
# needed; this machine's filesystem is the VM's root over 9p) and run keel-tests' one_node test
# there: keel-control, an agent and Debian's docker-registry in a lab namespace, a pod with
# limits Running and serving its page, and memory.max / cpu.max of its pod cgroup. The CI host
# itself is hybrid (v1 controllers), so this is where the agent's v2 cgroups are exercised.
#
# Needs (.ci/packages.d/tests.txt and tests.pip): qemu-system-x86, kmod, busybox-static,
# docker-registry, umoci, skopeo, curl, virtme-ng, and kubectl. The kernel package is downloaded
# into /var/cache/keel-ci (shared with shim-cgroupv2-vm.sh). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$(pwd)"
CACHE=/var/cache/keel-ci
mkdir -p "$CACHE"

fail() { echo "agent-vm: $*" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 missing: apt-get install -y qemu-system-x86"
command -v depmod >/dev/null || fail "depmod missing: apt-get install -y kmod"
command -v vng >/dev/null || fail "vng missing: pip install virtme-ng"
[ -x /bin/busybox ] || fail "/bin/busybox missing: apt-get install -y busybox-static"

# 1. A Debian kernel (the -cloud- flavour lacks drivers virtme-ng needs), cached as in
#    shim-cgroupv2-vm.sh.
PKG="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
[ -n "$PKG" ] || fail "cannot resolve linux-image-amd64 (run apt-get update)"
KVER="${PKG#linux-image-}"
DEB="$(ls "$CACHE"/"$PKG"_*.deb 2>/dev/null | head -1 || true)"
if [ -z "$DEB" ]; then
  (cd "$CACHE" && apt-get download "$PKG") || fail "apt-get download $PKG failed"
  DEB="$(ls "$CACHE"/"$PKG"_*.deb | head -1)"
fi
KDIR="$CACHE/$PKG"
if [ ! -e "$KDIR/boot/vmlinuz-$KVER" ]; then
  rm -rf "$KDIR"; mkdir -p "$KDIR"
  dpkg-deb -x "$DEB" "$KDIR"
fi
# virtme-ng hides /lib/modules inside the VM behind an empty tmpfs (and /var/cache too); the
# VM gets this copy there (--rodir), so it needs its own module index.
[ -f "$KDIR/lib/modules/$KVER/modules.dep" ] || depmod -b "$KDIR" "$KVER"
if [ ! -d "/lib/modules/$KVER" ]; then
  mkdir -p /lib/modules
  cp -a "$KDIR/lib/modules/$KVER" "/lib/modules/$KVER"
  depmod "$KVER"
fi

# 2. Everything is built on the host; the VM's root (this filesystem over 9p) is read-only.
cargo build --workspace --bins >/dev/null 2>&1 || fail "cargo build --workspace --bins failed"
TESTBIN="$(cargo test -p keel-tests --test one_node --no-run --message-format=json 2>/dev/null \
  | grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
[ -x "$TESTBIN" ] || fail "could not build the keel-tests one_node test binary"
cargo build -p keel-tests --example lab >/dev/null 2>&1 || fail "cargo build -p keel-tests --example lab failed"
LAYOUT="$("${CARGO_TARGET_DIR:-target}/debug/examples/lab" images)" || fail "building the test images failed"
IMAGE_CACHE="$(dirname "$(dirname "$LAYOUT")")"

# 3. Run it inside the VM on cgroup v2; sockets, FIFOs, the lab folder (agent root, shim
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
HOME=/run/keeltmp TMPDIR=/run/keeltmp KEEL_IMAGE_CACHE="$IMAGE_CACHE" KEEL_TIMEOUT_SCALE=\${KEEL_TIMEOUT_SCALE:-4} \
  "$TESTBIN" --test-threads=1 --nocapture >> "$OUT/result.txt" 2>&1
echo \$? > "$OUT/rc"
EOF
chmod +x "$OUT/inner.sh"
# The VM's console goes to a file of its own (qemu reopens its output from the start).
timeout 1800 vng --run "$KDIR/boot/vmlinuz-$KVER" --disable-kvm --force-9p -m 2G --cpus 2 \
  --rodir="/usr/lib/modules=$KDIR/lib/modules" --rwdir "$OUT" --exec "$OUT/inner.sh" </dev/null >"$OUT/vng.log" 2>&1 || true
[ -f "$OUT/rc" ] || tail -n 40 "$OUT/vng.log"
cat "$OUT/result.txt" 2>/dev/null || true
RC="$(cat "$OUT/rc" 2>/dev/null || echo 1)"
grep -q "cgroup: cgroup2fs" "$OUT/result.txt" 2>/dev/null || fail "the VM did not run on cgroup v2"
[ "$RC" = 0 ] || fail "the one-node walkthrough failed on cgroup v2 (rc=$RC)"
echo "agent-vm: the one-node walkthrough passed on cgroup v2"
