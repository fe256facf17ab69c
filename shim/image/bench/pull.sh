#!/usr/bin/env bash
# Benchmark: `keel-image pull` (fetch, verify, unpack) of a generated 5-layer ~100 MB image from a
# local docker-registry, against `skopeo copy` to an OCI layout followed by `umoci unpack` of the
# same image in the same run; then the time to mount a container rootfs from cached layers.
# Usage (root): cargo build --release -p keel-image && bash shim/image/bench/pull.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
KEEL=${KEEL:-$PWD/target/release/keel-image}
RUNS=${RUNS:-5}
MOUNTS=${MOUNTS:-20}
for bin in docker-registry skopeo umoci python3; do
  command -v "$bin" >/dev/null || { echo "missing $bin: apt-get install -y docker-registry skopeo umoci python3" >&2; exit 1; }
done
[ -x "$KEEL" ] || { echo "missing $KEEL: cargo build --release -p keel-image" >&2; exit 1; }

work=$(mktemp -d /var/tmp/keel-image-bench.XXXXXX)
registry_pid=
cleanup() {
  set +e
  for m in $(awk -v w="$work" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m"; done
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & registry_pid=$!
for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done

echo "== generating a 5-layer image (10 MiB random + ~10 MiB text per layer, ~1100 files per layer)"
umoci init --layout "$work/src" >/dev/null
umoci new --image "$work/src:img" >/dev/null
for i in 1 2 3 4 5; do
  umoci unpack --image "$work/src:img" "$work/bundle" >/dev/null
  d="$work/bundle/rootfs/layer$i"; mkdir -p "$d/bin" "$d/data" "$d/text"
  cp /bin/busybox "$d/bin/"
  head -c 10M /dev/urandom | split -b 100k - "$d/data/blob-"
  seq $((i * 1000000)) $((i * 1000000 + 1300000)) | split -l 1300 - "$d/text/lines-"
  umoci repack --image "$work/src:img" "$work/bundle" >/dev/null
  rm -rf "$work/bundle"
done
umoci config --image "$work/src:img" --config.cmd /layer1/bin/busybox >/dev/null
ref="127.0.0.1:$port/bench/img:1"
skopeo copy -q --dest-tls-verify=false "oci:$work/src:img" "docker://$ref"
du -sh "$work/registry" | awk '{print "registry storage (compressed layers): " $1}'
printf 'mirrors:\n  "127.0.0.1:%s":\n    endpoint: ["http://127.0.0.1:%s"]\n' "$port" "$port" > "$work/registries.yaml"

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$work/keel.times"; : > "$work/ref.times"
for run in $(seq "$RUNS"); do
  t0=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/ref-$run:img"
  umoci unpack --image "$work/ref-$run:img" "$work/ref-$run-bundle" >/dev/null
  t1=$(now)
  "$KEEL" --root "$work/keel-$run" pull "$ref" --registry-config "$work/registries.yaml" >/dev/null 2>&1
  t2=$(now)
  awk "BEGIN {print $t1 - $t0}" >> "$work/ref.times"
  awk "BEGIN {print $t2 - $t1}" >> "$work/keel.times"
  printf 'run %d: skopeo+umoci %.3f s, keel-image %.3f s\n' "$run" "$(tail -1 "$work/ref.times")" "$(tail -1 "$work/keel.times")"
  [ "$run" -gt 1 ] && rm -rf "$work/ref-$run" "$work/ref-$run-bundle" "$work/keel-$run"
done
keel=$(median < "$work/keel.times"); reftime=$(median < "$work/ref.times")
printf 'median: keel-image %.3f s, skopeo copy + umoci unpack %.3f s, ratio %.2fx\n' "$keel" "$reftime" "$(awk "BEGIN {print $keel / $reftime}")"

echo "== rootfs mount from cached layers ($MOUNTS mounts)"
: > "$work/mount.times"
for j in $(seq "$MOUNTS"); do
  "$KEEL" --root "$work/keel-1" mount "bench-$j" "$ref" | sed -n 's/.* in \([0-9.]*\) ms$/\1/p' >> "$work/mount.times"
done
for j in $(seq "$MOUNTS"); do "$KEEL" --root "$work/keel-1" unmount "bench-$j" >/dev/null; done
printf 'mount median %.2f ms, max %.2f ms\n' "$(median < "$work/mount.times")" "$(sort -n "$work/mount.times" | tail -1)"
