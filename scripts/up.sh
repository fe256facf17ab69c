#!/usr/bin/env bash
# Sets up and runs Keel on this machine: builds the binaries, initialises a control plane in
# /var/lib/keel/control (once), starts `keel-control serve` in the background and waits until
# kubectl can talk to it. Re-running it restarts the server with the same cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${KEEL_DATA_DIR:-/var/lib/keel/control}
LISTEN=${KEEL_LISTEN:-0.0.0.0:6443}
LOG=${KEEL_LOG:-/var/log/keel-control.log}
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
for _ in $(seq 1 100); do
  if kubectl --request-timeout=2s get --raw /readyz >/dev/null 2>&1; then
    echo "== Keel is up. Try:"
    echo "   export KUBECONFIG=$KUBECONFIG"
    echo "   kubectl get nodes -o wide; kubectl run web --image=nginx:1.14 --port 80; kubectl get pods -o wide"
    echo "   join a worker: keel-control token create --print-join-command --data-dir $DATA_DIR"
    exit 0
  fi
  sleep 0.2
done
echo "scripts/up.sh: keel-control did not become ready; see $LOG" >&2
tail -20 "$LOG" >&2
exit 1
