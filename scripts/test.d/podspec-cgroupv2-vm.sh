#!/usr/bin/env bash
# keel-podspec on real cgroup v2: boot a Debian kernel with virtme-ng (no KVM needed; this
# machine's filesystem is the VM's root over 9p) and run the podspec bundle test there (pod
# cgroup under the QoS tree with memory.max/cpu.max, a container run by keel-shim inside it,
# the OOM kill). The CI host itself is hybrid (v1 controllers), so v2 is exercised only here.
#
# Needs (installed by .ci/packages.d/shim.txt, podspec.txt and shim.pip): qemu-system-x86, kmod,
# busybox-static, virtme-ng. Downloads the kernel package into /var/cache/keel-ci.
# Exits non-zero when anything is missing or any test fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$(pwd)"
CACHE=/var/cache/keel-ci
mkdir -p "$CACHE"

fail() { echo "podspec-cgroupv2-vm: $*" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 missing: apt-get install -y qemu-system-x86"
command -v depmod >/dev/null || fail "depmod missing: apt-get install -y kmod"
command -v vng >/dev/null || fail "vng missing: pip install virtme-ng"
[ -x /bin/busybox ] || fail "/bin/busybox missing: apt-get install -y busybox-static"

# 1. A Debian kernel (the -cloud- flavour lacks drivers virtme-ng needs).
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
if [ ! -d "/lib/modules/$KVER" ]; then
  mkdir -p /lib/modules
  cp -a "$KDIR/lib/modules/$KVER" "/lib/modules/$KVER"
  depmod "$KVER"
fi

# 2. Build the test binary on the host (the VM only runs it).
# Only the test target's artifact: the keel-shim binary is built too and may come last.
TESTBIN="$(cargo test -p keel-podspec --test bundle --no-run --message-format=json 2>/dev/null \
  | grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
[ -x "$TESTBIN" ] || fail "could not build the keel-podspec bundle test binary"
cargo build -p keel-shim --bin keel-shim >/dev/null 2>&1 || fail "cargo build -p keel-shim failed"

# 3. Run it inside the VM on cgroup v2; sockets and FIFOs need a tmpfs (9p refuses them).
OUT="$(mktemp -d -t keel-vm.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
cat > "$OUT/inner.sh" <<EOF
#!/bin/bash
set -u
if [ "\$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || { echo "no cgroup2" > "$OUT/result.txt"; echo 1 > "$OUT/rc"; exit 0; }
fi
mkdir -p /run/keeltmp && mount -t tmpfs tmpfs /run/keeltmp
cd "$REPO/agent/podspec"
echo "cgroup: \$(stat -fc %T /sys/fs/cgroup) controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)" > "$OUT/result.txt"
${CARGO_TARGET_DIR:+CARGO_TARGET_DIR="$CARGO_TARGET_DIR"} TMPDIR=/run/keeltmp "$TESTBIN" --test-threads=1 >> "$OUT/result.txt" 2>&1
echo \$? > "$OUT/rc"
EOF
chmod +x "$OUT/inner.sh"
# The VM's console goes to a file of its own: qemu reopens its output from the start, which
# would overwrite the caller's log when that is a file.
timeout 900 vng --run "$KDIR/boot/vmlinuz-$KVER" --disable-kvm --force-9p -m 2G \
  --rwdir "$OUT" --exec "$OUT/inner.sh" </dev/null >"$OUT/vng.log" 2>&1 || true
[ -f "$OUT/rc" ] || tail -n 40 "$OUT/vng.log"
cat "$OUT/result.txt" 2>/dev/null || true
RC="$(cat "$OUT/rc" 2>/dev/null || echo 1)"
grep -q "cgroup: cgroup2fs" "$OUT/result.txt" 2>/dev/null || fail "the VM did not run on cgroup v2"
[ "$RC" = 0 ] || fail "keel-podspec bundle test failed on cgroup v2 (rc=$RC)"
echo "podspec-cgroupv2-vm: keel-podspec bundle test passed on cgroup v2"
