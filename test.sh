#!/usr/bin/env bash
# Sets up everything the tests need and runs them: Debian packages, the venv, the cached lab
# image, then the unit suite and the lab suite (real hosts). Needs root for apt and nspawn.
#   ./test.sh          everything
#   ./test.sh --unit   only the fast unit suite
set -euo pipefail
cd "$(dirname "$0")"

unit_only=false
[[ "${1:-}" == "--unit" ]] && unit_only=true

packages=(shellcheck prometheus python3-venv)
$unit_only || packages+=(systemd-container debootstrap zstd iproute2 openssh-client openssh-server ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $EUID -eq 0 ]] || { echo "test.sh: missing packages ${missing[*]}; run as root to install them" >&2; exit 1; }
  echo "test.sh: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -x .venv/bin/python ]] || ! cmp -s requirements-dev.txt .venv/.requirements-dev.txt; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  cp requirements-dev.txt .venv/.requirements-dev.txt
fi

.venv/bin/ruff check .

if $unit_only; then
  exec .venv/bin/python -m pytest tests/unit tests/lab -m "not lab"
fi
[[ $EUID -eq 0 ]] || { echo "test.sh: the lab needs root (systemd-nspawn, bridge); use --unit otherwise" >&2; exit 1; }
# Whatever happens, leave no lab behind.
trap '.venv/bin/python -m lab.hosts down >/dev/null 2>&1 || true' EXIT
# The lab serves Debian's node exporter, fetched with `apt-get download`: it needs package lists.
if ! apt-cache policy prometheus-node-exporter 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update -q
fi
.venv/bin/python -m lab.hosts build
.venv/bin/python -m pytest tests/unit tests/lab
