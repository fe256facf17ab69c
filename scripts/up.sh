#!/usr/bin/env bash
# Sets up and runs Keel on this machine: builds the binaries, initialises a control plane in
# /var/lib/keel/control (once), starts `keel-control serve` in the background, waits until
# kubectl can talk to it, then joins this machine as a control-plane node (`keel-agent` in
# /var/lib/keel/agent, once) and starts the agent, so pods run here too (KEEL_NO_AGENT=1 skips
# the agent). Re-running it restarts both with the same cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${KEEL_DATA_DIR:-/var/lib/keel/control}
LISTEN=${KEEL_LISTEN:-0.0.0.0:6443}
LOG=${KEEL_LOG:-/var/log/keel-control.log}
AGENT_DIR=${KEEL_AGENT_DIR:-/var/lib/keel/agent}
AGENT_LOG=${KEEL_AGENT_LOG:-/var/log/keel-agent.log}
if [ "$(id -u)" != 0 ]; then
  echo "scripts/up.sh: run as root (it writes $DATA_DIR and installs to /usr/local/bin): sudo bash scripts/up.sh" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "scripts/up.sh: cargo is missing; install Rust (rustup) first" >&2; exit 1; }
echo "== building Keel (release)"
cargo build --release --locked --bins
install -m 0755 target/release/keel-control target/release/keel-agent target/release/keel-shim /usr/local/bin/
for p in keel-bridge keel-host-local keel-loopback; do
  [ -x "target/release/$p" ] && install -m 0755 "target/release/$p" /usr/local/bin/
done
if [ ! -f "$DATA_DIR/config.json" ]; then
  echo "== initialising the control plane in $DATA_DIR"
  keel-control init --data-dir "$DATA_DIR" --listen "$LISTEN" ${KEEL_ADVERTISE_ADDRESS:+--advertise-address "$KEEL_ADVERTISE_ADDRESS"}
fi
if [ -f "$DATA_DIR/serve.pid" ] && kill -0 "$(cat "$DATA_DIR/serve.pid")" 2>/dev/null; then
  echo "== stopping the running keel-control ($(cat "$DATA_DIR/serve.pid"))"
  kill "$(cat "$DATA_DIR/serve.pid")"
  while kill -0 "$(cat "$DATA_DIR/serve.pid")" 2>/dev/null; do sleep 0.2; done
fi
echo "== starting keel-control serve (log: $LOG)"
nohup keel-control serve --data-dir "$DATA_DIR" >>"$LOG" 2>&1 &
echo $! >"$DATA_DIR/serve.pid"
export KUBECONFIG="$DATA_DIR/admin.kubeconfig"
ready=0
for _ in $(seq 1 100); do
  if kubectl --request-timeout=2s get --raw /readyz >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
if [ "$ready" != 1 ]; then
  echo "scripts/up.sh: keel-control did not become ready; see $LOG" >&2
  tail -20 "$LOG" >&2
  exit 1
fi
if [ "${KEEL_NO_AGENT:-}" != 1 ]; then
  if [ -f "$AGENT_DIR/agent.pid" ] && kill -0 "$(cat "$AGENT_DIR/agent.pid")" 2>/dev/null; then
    echo "== stopping the running keel-agent ($(cat "$AGENT_DIR/agent.pid")); its containers keep running"
    kill "$(cat "$AGENT_DIR/agent.pid")"
    while kill -0 "$(cat "$AGENT_DIR/agent.pid")" 2>/dev/null; do sleep 0.2; done
  fi
  if [ ! -f "$AGENT_DIR/config.json" ]; then
    echo "== joining this machine as a control-plane node (state in $AGENT_DIR)"
    join=$(keel-control token create --print-join-command --data-dir "$DATA_DIR" | grep '^keel-agent join' | tail -1)
    # shellcheck disable=SC2086
    ${join} --control-plane --root-dir "$AGENT_DIR" --no-start ${KEEL_REGISTRY_CONFIG:+--registry-config "$KEEL_REGISTRY_CONFIG"}
  fi
  echo "== starting keel-agent run (log: $AGENT_LOG)"
  mkdir -p "$AGENT_DIR"
  nohup keel-agent run --root-dir "$AGENT_DIR" >>"$AGENT_LOG" 2>&1 &
  echo $! >"$AGENT_DIR/agent.pid"
  for _ in $(seq 1 150); do
    kubectl get nodes --no-headers 2>/dev/null | grep -q ' Ready ' && break
    sleep 0.2
  done
  # A lone control-plane node also runs the pods (kubeadm's single-node advice; k3s does the
  # same): drop the NoSchedule taint while no worker has joined.
  if [ "$(kubectl get nodes --no-headers 2>/dev/null | wc -l)" = 1 ]; then
    node=$(kubectl get nodes --no-headers | awk '{print $1}')
    kubectl taint nodes "$node" node-role.kubernetes.io/control-plane:NoSchedule- >/dev/null 2>&1 || true
  fi
fi
echo "== Keel is up. Try:"
echo "   export KUBECONFIG=$KUBECONFIG"
echo "   kubectl get nodes -o wide; kubectl run web --image=nginx:1.14 --port 80; kubectl get pods -o wide"
echo "   join a worker: keel-control token create --print-join-command --data-dir $DATA_DIR"
echo "   (images come from the registries in --registry-config: KEEL_REGISTRY_CONFIG=/etc/keel/registries.yaml)"
exit 0
