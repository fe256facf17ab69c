#!/usr/bin/env bash
# supervisor.sh - keel-shim's own supervisor path, measured the way shared/bench/shim_rss.sh
# measures conmon and containerd-shim-runc-v2 (those tools expect a runtime whose init is
# re-parented to them, which keel-shim's supervised init is not, so they cannot drive it).
#
# Usage (root): shim/bench/supervisor.sh [-n RESIDENT] [-i CYCLES] [KEEL_SHIM_BINARY]
#   create-with-supervisor latency (create --cri-log, until the pid file exists), start,
#   `kill KILL` -> exit.json written, and RSS/PSS of RESIDENT supervisors whose containers
#   print a line every second into CRI logs.
set -u
export LC_ALL=C
N=10; IT=20
while [ $# -gt 0 ]; do
  case "$1" in -n) N="$2"; shift 2;; -i) IT="$2"; shift 2;; *) break;; esac
done
RT="$(readlink -f "${1:-target/release/keel-shim}")"
[ -x "$RT" ] || { echo "keel-shim binary $RT not found; cargo build --release -p keel-shim" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
command -v busybox >/dev/null && command -v jq >/dev/null || { echo "needs busybox-static and jq" >&2; exit 2; }
W="$(mktemp -d -t ksup.XXXXXX)"; CG="/ksup-$$"; S="$W/st"
cleanup() {
  for id in $("$RT" --root "$S" list -q 2>/dev/null); do "$RT" --root "$S" delete -f "$id" >/dev/null 2>&1; done
  for d in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    case "$d" in *process_api*) continue;; esac
    [ -d "$d${CG#/}" ] && find "$d${CG#/}" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  rm -rf "$W"
}
trap cleanup EXIT; trap 'exit 130' INT TERM
R="$W/rootfs"; mkdir -p "$R"/{bin,proc,sys,dev,tmp,etc}
cp "$(command -v busybox)" "$R/bin/busybox"
for a in $(busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
mkdir -p "$W/spec"; ( cd "$W/spec" && runc spec )
mk() { local b="$W/b-$1"; mkdir -p "$b"
  jq --arg r "$R" --arg cg "$CG/$1" --argjson a "$2" '.root.path=$r | .root.readonly=true | .process.terminal=false | .process.args=$a | .linux.cgroupsPath=$cg' "$W/spec/config.json" > "$b/config.json"; echo "$b"; }
ms_since() { awk -v a="$1" -v b="${EPOCHREALTIME/./}" 'BEGIN{printf "%.2f\n",(b-a)/1000}'; }
stats() { sort -n | awk 'NF{v[++n]=$1} END{if(!n){print "no samples"; exit}; m=(n%2)?v[(n+1)/2]:(v[n/2]+v[n/2+1])/2; printf "n=%d median=%.1f min=%.1f max=%.1f\n",n,m,v[1],v[n]}'; }
kb() { awk -v k="$2" '$1==k":"{print $2}' "/proc/$1/status"; }
pss() { awk '/^Pss:/{print $2}' "/proc/$1/smaps_rollup"; }

lc=(); ls_=(); lk=()
for i in $(seq "$IT"); do
  id="l$i"; b="$(mk "$id" '["/bin/sleep","3600"]')"
  t=${EPOCHREALTIME/./}
  "$RT" --root "$S" create --cri-log "$W/$id.log" --pid-file "$b/pid" --bundle "$b" "$id" </dev/null >/dev/null 2>>"$W/err" || { tail -2 "$W/err"; exit 1; }
  lc+=("$(ms_since "$t")")
  t=${EPOCHREALTIME/./}; "$RT" --root "$S" start "$id"; ls_+=("$(ms_since "$t")")
  t=${EPOCHREALTIME/./}; "$RT" --root "$S" kill "$id" KILL
  for _ in $(seq 5000); do [ -f "$S/$id/exit.json" ] && break; sleep 0.001; done
  lk+=("$(ms_since "$t")")
  "$RT" --root "$S" delete -f "$id"
done
echo "create with supervisor + CRI log (until pid file)	$(printf '%s\n' "${lc[@]}" | stats)"
echo "start through the supervisor	$(printf '%s\n' "${ls_[@]}" | stats)"
echo "kill KILL -> exit.json written	$(printf '%s\n' "${lk[@]}" | stats)"

pids=()
for i in $(seq "$N"); do
  id="m$i"; b="$(mk "$id" '["/bin/sh","-c","while true; do echo tick; sleep 1; done"]')"
  "$RT" --root "$S" run -d --cri-log "$W/$id.log" --bundle "$b" "$id" </dev/null >/dev/null
  pids+=("$(jq -r .supervisor_pid "$S/$id/state.json")")
done
sleep 2
rs=0; ps_=0
for p in "${pids[@]}"; do rs=$((rs + $(kb "$p" VmRSS))); ps_=$((ps_ + $(pss "$p"))); done
echo "supervisor VmRSS (one)	$(kb "${pids[0]}" VmRSS) kB"
echo "supervisor Pss (one)	$(pss "${pids[0]}") kB"
echo "supervisor VmRSS (sum of ${#pids[@]})	$rs kB"
echo "supervisor Pss (sum of ${#pids[@]})	$ps_ kB"
echo "supervisor threads	$(kb "${pids[0]}" Threads)"
echo "CRI log sample:"; head -2 "$W/m1.log"
