# Shared by the cgroup v2 VM tiers in scripts/test.d/ (sourced, not run): the prerequisites,
# a Debian kernel for virtme-ng (downloaded once into /var/cache/keel-ci), the host-built test
# binary, the VM run and its verdict. The caller sets `set -euo pipefail` and VM_NAME first.
#
# After `vm_setup`: REPO (the checkout), PKG, KVER and KDIR (the unpacked kernel package).

fail() { echo "$VM_NAME: $*" >&2; exit 1; }

vm_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.."
  REPO="$(pwd)"
  local cache=/var/cache/keel-ci
  mkdir -p "$cache"
  command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 missing: apt-get install -y qemu-system-x86"
  command -v depmod >/dev/null || fail "depmod missing: apt-get install -y kmod"
  command -v vng >/dev/null || fail "vng missing: pip install virtme-ng"
  [ -x /bin/busybox ] || fail "/bin/busybox missing: apt-get install -y busybox-static"

  # A Debian kernel (the -cloud- flavour lacks drivers virtme-ng needs).
  PKG="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
  [ -n "$PKG" ] || fail "cannot resolve linux-image-amd64 (run apt-get update)"
  KVER="${PKG#linux-image-}"
  local deb
  deb="$(ls "$cache"/"$PKG"_*.deb 2>/dev/null | head -1 || true)"
  if [ -z "$deb" ]; then
    (cd "$cache" && apt-get download "$PKG") || fail "apt-get download $PKG failed"
    deb="$(ls "$cache"/"$PKG"_*.deb | head -1)"
  fi
  KDIR="$cache/$PKG"
  if [ ! -e "$KDIR/boot/vmlinuz-$KVER" ]; then
    rm -rf "$KDIR"; mkdir -p "$KDIR"
    dpkg-deb -x "$deb" "$KDIR"
  fi
  # virtme-ng hides /lib/modules inside the VM behind an empty tmpfs; a tier that needs modules
  # hands this copy in with --rodir, so it carries its own module index.
  [ -f "$KDIR/lib/modules/$KVER/modules.dep" ] || depmod -b "$KDIR" "$KVER"
  if [ ! -d "/lib/modules/$KVER" ]; then
    mkdir -p /lib/modules
    cp -a "$KDIR/lib/modules/$KVER" "/lib/modules/$KVER"
    depmod "$KVER"
  fi
}

# vm_test_binary PACKAGE TEST: builds the integration test TEST of PACKAGE on the host (the VM
# only runs it) and prints its path. Only the test target's artifact: binaries built alongside
# may come last in cargo's messages.
vm_test_binary() {
  local bin
  bin="$(cargo test -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null \
    | grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
  [ -x "$bin" ] || fail "could not build the $1 $2 test binary"
  echo "$bin"
}

# vm_run SECONDS OUT [vng flags...]: boots the kernel with OUT shared read-write and runs
# OUT/inner.sh, which writes OUT/result.txt and OUT/rc. The VM's console goes to a file of its
# own: qemu reopens its output from the start, which would overwrite the caller's log.
vm_run() {
  local seconds="$1" out="$2"
  shift 2
  chmod +x "$out/inner.sh"
  timeout "$seconds" vng --run "$KDIR/boot/vmlinuz-$KVER" --disable-kvm --force-9p -m 2G "$@" \
    --rwdir "$out" --exec "$out/inner.sh" </dev/null >"$out/vng.log" 2>&1 || true
  [ -f "$out/rc" ] || tail -n 40 "$out/vng.log"
}

# vm_verdict OUT WHAT: prints the results and fails unless the VM ran on cgroup v2 and rc is 0.
vm_verdict() {
  local out="$1" what="$2" rc
  cat "$out/result.txt" 2>/dev/null || true
  rc="$(cat "$out/rc" 2>/dev/null || echo 1)"
  grep -q "cgroup: cgroup2fs" "$out/result.txt" 2>/dev/null || fail "the VM did not run on cgroup v2"
  [ "$rc" = 0 ] || fail "$what failed on cgroup v2 (rc=$rc)"
  echo "$VM_NAME: $what passed on cgroup v2"
}
