#!/usr/bin/env bash
# Installs the Debian and PyPI packages the test tiers need, as each part lists them in
# .ci/packages.d/<part>.txt and .ci/packages.d/<part>.pip. Does nothing when all are present,
# so scripts/test.sh can call it on every run and a fresh machine needs no other step.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
list() { cat .ci/packages.d/*."$1" 2>/dev/null | sed 's/#.*//' | tr -s ' \n' '\n' | sed '/^$/d' | sort -u; }
missing=()
for p in $(list txt); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
missing=()
for p in $(list pip); do
  python3 -m pip show -q "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing PyPI packages: ${missing[*]}"
  python3 -m pip install -q "${missing[@]}"
fi
