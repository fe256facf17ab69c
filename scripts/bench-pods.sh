#!/bin/bash
# Pod startup benchmark (issue 8): one control plane and one agent, each in its own network
# namespace (keelbench-cp, keelbench-node), release binaries, the test image imported into the
# agent's store first (image cached). Prints pod_bench's JSON plus agent and supervisor memory.
#   sudo bash scripts/bench-pods.sh [PODS]
# STATS_WAIT=70 HOLD=90 waits 70 s after the pods run (every pod through several stats
# housekeeping passes and one disk walk), reads /stats/summary and /metrics/cadvisor from the
# agent as the API server does, then samples memory (docs/benchmarks/stats.md).
set -euo pipefail
PODS=${1:-100}
STATS_WAIT=${STATS_WAIT:-2}
HOLD=${HOLD:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/keelbench.XXXXXX)
B=$ROOT/target/release
CP=keelbench-cp; NODE=keelbench-node; NODE_NAME=keelbench
cleanup() {
  set +e
  # Let the agent remove every pod first (it tears down netns, cgroups and mounts itself).
  if [ -n "${K:-}" ]; then
    $K delete deploy --all --wait=false >/dev/null 2>&1
    $K delete pods --all --grace-period=0 --wait=false >/dev/null 2>&1
    for _ in $(seq 300); do [ -z "$(ls "$W/agent/pods" 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  [ -n "${AGENT_PID:-}" ] && kill "$AGENT_PID" 2>/dev/null
  [ -n "${CONTROL_PID:-}" ] && kill "$CONTROL_PID" 2>/dev/null
  # Whatever is left: containers through the runtime, then the node's rules, mounts, cgroups.
  for id in $(cat "$W"/agent/pods/*/record.json 2>/dev/null | grep -o '"id": "[0-9a-f]*"' | cut -d'"' -f4); do
    "$B/keel-shim" delete --force "$id" 2>/dev/null
  done
  nsenter --net=/run/netns/$NODE "$B/keel-agent" cleanup --root-dir "$W/agent" >/dev/null 2>&1
  ip netns pids $NODE 2>/dev/null | xargs -r kill -9
  ip netns del $NODE 2>/dev/null; ip netns del $CP 2>/dev/null
  grep -E " ($W|/run/keel/$NODE_NAME)" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$W" "/run/keel/$NODE_NAME"
  for c in /sys/fs/cgroup/*/keel/$NODE_NAME /sys/fs/cgroup/keel/$NODE_NAME; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
}
trap cleanup EXIT
(cd "$ROOT" && cargo build --release -p keel-control -p keel-agent -p keel-shim -p keel-cni --bins --example pod_bench >&2)

# The image: busybox httpd serving "Welcome to nginx!", imported as docker.io/library/nginx:1.14.
cd "$W"
umoci init --layout img >/dev/null && umoci new --image img:1.14
umoci unpack --image img:1.14 bundle >/dev/null
mkdir -p bundle/rootfs/bin bundle/rootfs/www
cp /bin/busybox bundle/rootfs/bin/busybox
for a in sh httpd; do ln -s busybox bundle/rootfs/bin/$a; done
echo '<h1>Welcome to nginx!</h1>' > bundle/rootfs/www/index.html
umoci repack --image img:1.14 bundle >/dev/null
umoci config --image img:1.14 --config.entrypoint /bin/httpd --config.cmd=-f --config.cmd=-p --config.cmd=80 --config.cmd=-h --config.cmd=/www
(cd img && tar cf ../img.tar .)
"$B/keel-shim" image --image-root "$W/agent/images" import img.tar --name docker.io/library/nginx >/dev/null

ip netns add $CP; ip netns add $NODE
ip -n $CP link add kb-cp type veth peer name kb-node
ip -n $CP link set kb-node netns $NODE
ip -n $CP addr add 192.168.78.1/24 dev kb-cp; ip -n $CP link set kb-cp up; ip -n $CP link set lo up
ip -n $NODE addr add 192.168.78.2/24 dev kb-node; ip -n $NODE link set kb-node up; ip -n $NODE link set lo up
ip -n $NODE route add default via 192.168.78.1
nsenter --net=/run/netns/$CP "$B/keel-control" init --data-dir "$W/control" --advertise-address 192.168.78.1 --listen 192.168.78.1:6443 > "$W/init.txt"
nsenter --net=/run/netns/$CP "$B/keel-control" serve --data-dir "$W/control" > "$W/control.log" 2>&1 &
CONTROL_PID=$!
JOIN=$(grep '^keel-agent join' "$W/init.txt" | tail -1 | sed 's/^keel-agent join //')
for _ in $(seq 50); do nsenter --net=/run/netns/$CP curl -sk https://192.168.78.1:6443/healthz >/dev/null && break; sleep 0.2; done
# shellcheck disable=SC2086
# Memory pressure only (as the test lab does): a shared development disk can sit under
# kubelet's nodefs.available<10% default, and DiskPressure would keep every pod out.
nsenter --net=/run/netns/$NODE "$B/keel-agent" join $JOIN --node-name $NODE_NAME --root-dir "$W/agent" --eviction-hard 'memory.available<100Mi' > "$W/agent.log" 2>&1 &
AGENT_PID=$!
K="nsenter --net=/run/netns/$CP kubectl --kubeconfig $W/control/admin.kubeconfig"
for _ in $(seq 100); do $K get nodes 2>/dev/null | grep -q ' Ready' && break; sleep 0.3; done
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
APID=$(pgrep -f "keel-agent join .*--root-dir $W/agent" | head -1)
sleep 2
echo "{\"agent_rss_kib_0_pods\": $(rss "$APID")}"
nsenter --net=/run/netns/$CP "$B/examples/pod_bench" --kubeconfig "$W/control/admin.kubeconfig" --image nginx:1.14 --pods "$PODS" --hold "$HOLD" > "$W/bench.out" 2>&1 &
BENCH=$!
for _ in $(seq 1200); do grep -q p50_ms "$W/bench.out" && break; sleep 0.5; done
sleep "$STATS_WAIT"
head -1 "$W/bench.out"
if [ "$STATS_WAIT" -gt 2 ]; then
  C=$W/control
  get() { nsenter --net=/run/netns/$CP curl -sf --cacert "$C/ca.crt" --cert "$C/apiserver-kubelet-client.crt" --key "$C/apiserver-kubelet-client.key" "https://192.168.78.2:10250$1"; }
  echo "{\"summary_pods\": $(get /stats/summary | grep -c '"podRef"'), \"cadvisor_lines\": $(get /metrics/cadvisor | wc -l), \"agent_hwm_kib\": $(awk '/VmHWM/{print $2}' "/proc/$APID/status")}"
fi
SUP=0; N=0
for p in $(pgrep -f "^$B/keel-shim|keel-shim --root"); do r=$(rss "$p" 2>/dev/null || echo 0); SUP=$((SUP + r)); N=$((N + 1)); done
echo "{\"agent_rss_kib_${PODS}_pods\": $(rss "$APID"), \"supervisors\": $N, \"supervisor_rss_kib_total\": $SUP}"
wait $BENCH || { cat "$W/bench.out"; exit 1; }
tail -1 "$W/bench.out"
