#!/usr/bin/env bash
# The reference walkthrough in a namespace lab, in one command (as root):
#
#   sudo bash scripts/lab.sh          # build, start the lab, run the walkthrough, remove the lab
#   sudo bash scripts/lab.sh --keep   # ... and leave the lab running to try kubectl yourself
#   sudo bash scripts/lab.sh --down   # remove a kept lab
#
# The lab is what tests/tests/walkthrough.rs uses: network namespaces named keellab-* on one
# bridge (192.168.56.0/24, like a Vagrant private network): `registry` (.5, Debian's
# docker-registry with images built from busybox-static, mirrored as docker.io and
# hub.test.com), `master` (.10, keel-control and an agent with the control-plane role),
# `worker01` (.11) and `worker02` (.12). Nothing touches this host's own network namespace;
# state lives in $KEEL_LAB_DIR (default /var/lib/keel-lab).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${KEEL_LAB_DIR:-/var/lib/keel-lab}
MODE=run
case "${1:-}" in
  "") ;;
  --keep) MODE=keep ;;
  --down) MODE=down ;;
  *) echo "usage: sudo bash scripts/lab.sh [--keep|--down]" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "scripts/lab.sh: the lab creates network namespaces, mounts and cgroups; run: sudo bash scripts/lab.sh" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "scripts/lab.sh: cargo is missing; install Rust (rustup) first" >&2; exit 1; }
LAB=target/debug/examples/lab

if [ "$MODE" = down ]; then
  [ -x "$LAB" ] || cargo build -q -p keel-tests --example lab
  "$LAB" down --dir "$DIR"
  exit 0
fi

# Debian packages the lab needs (the tests' list), then kubectl.
missing=()
for p in $(sed 's/#.*//' .ci/packages.d/tests.txt); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
KUBECTL=$(command -v kubectl || true)
[ -n "$KUBECTL" ] || { echo "scripts/lab.sh: kubectl is missing; install it (https://kubernetes.io/docs/tasks/tools/)" >&2; exit 1; }

echo "== building Keel"
cargo build -q --workspace --bins
cargo build -q -p keel-tests --example lab

echo "== starting the lab in $DIR (namespaces keellab-*)"
# Its own session: the lab's processes outlive this script and a Ctrl-C typed later.
setsid --wait "$LAB" up --dir "$DIR"
# shellcheck disable=SC1091
. "$DIR/env"
export KUBECONFIG
# kubectl and curl as on the control-plane machine.
on_master() { nsenter --net="/run/netns/$KEEL_LAB_NETNS" -- "$@"; }
# On a failure: what the cluster looks like and the end of every log; then the lab goes
# (or stays, with --keep).
finish() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "== the walkthrough failed; the cluster now:" >&2
    on_master "$KUBECTL" get pods -A -o wide >&2 || true
    on_master "$KUBECTL" get events -A --sort-by=.lastTimestamp >&2 || true
    for log in "$DIR"/*.log; do echo "--- $log" >&2; tail -n 15 "$log" >&2; done
  fi
  if [ "$MODE" = run ]; then
    echo "== removing the lab"
    "$LAB" down --dir "$DIR" >/dev/null
  elif [ "$rc" != 0 ]; then
    echo "== the lab stays up (--keep); remove it with: sudo bash scripts/lab.sh --down" >&2
  fi
}
trap finish EXIT
k() { echo "\$ kubectl $*"; on_master "$KUBECTL" "$@"; echo; }
# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then echo "timed out after ${secs}s waiting for $what" >&2; return 1; fi
    sleep 1
  done
}
phase_is() { [ "$(on_master "$KUBECTL" get pod "$1" -o jsonpath='{.status.phase}')" = "$2" ]; }
replicas_running() {
  [ "$(on_master "$KUBECTL" get pods -l "$1" -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Running$')" = "$2" ]
}

k get nodes -o wide
k run web --image=nginx:1.14 --port 80
wait_for "pod web to run" 120 phase_is web Running
k get pods -o wide
IP=$(on_master "$KUBECTL" get pod web -o jsonpath='{.status.podIP}')
echo "\$ curl http://$IP/"
wait_for "the page" 30 on_master curl -sf -m 5 "http://$IP/"
on_master curl -s -m 5 "http://$IP/"; echo
k logs web
k create deploy web2 --image=hub.test.com/nginx --replicas=2
wait_for "two web2 pods to run" 120 replicas_running app=web2 2
k get pods -o wide

if [ "$MODE" = keep ]; then
  cat <<EOF
== The lab stays up. kubectl runs on the control-plane machine (its network namespace):
   sudo nsenter --net=/run/netns/$KEEL_LAB_NETNS -- kubectl --kubeconfig $KUBECONFIG get pods -o wide
   alias k='sudo nsenter --net=/run/netns/$KEEL_LAB_NETNS -- kubectl --kubeconfig $KUBECONFIG'
   Logs: $DIR/*.log. Registry: $KEEL_LAB_REGISTRY (mirrors docker.io and hub.test.com).
== Remove it with: sudo bash scripts/lab.sh --down
EOF
fi
