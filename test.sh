#!/usr/bin/env bash
# Sets up everything the tests need and runs them: Debian packages, the venv, the real Pulumi CLI
# and actionlint (built from Go modules, cached by version), the cached lab image, then the unit
# suite, the real-engine suite and the lab suite (real hosts). Needs root for apt and nspawn.
#   ./test.sh          everything
#   ./test.sh --unit   only the fast unit suite
set -euo pipefail
cd "$(dirname "$0")"

unit_only=false
[[ "${1:-}" == "--unit" ]] && unit_only=true

packages=(shellcheck prometheus prometheus-alertmanager python3-venv)
$unit_only || packages+=(systemd-container debootstrap zstd iproute2 openssh-client openssh-server ca-certificates)
# npm comes with the machine's Node.js; Debian's npm only where it is missing.
command -v npm >/dev/null || packages+=(npm)
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
.venv/bin/ruff format --check .
.venv/bin/mypy

# GitHub's REST description for the double's conformance tests (npm, pinned in lab/openapi.py; cached).
.venv/bin/python -m lab.openapi install >/dev/null

# Go tools, cached by version under $RUNNER_FLEET_ENGINE_CACHE; a cold build prints progress.
# Without Go, outside CI, the workflow checks skip and say why; under CI a missing tool fails.
.venv/bin/python -m tools.engine build actionlint || [[ -z "${CI:-}" ]]
export RUNNER_FLEET_ACTIONLINT
RUNNER_FLEET_ACTIONLINT=$(.venv/bin/python -c 'from tools import engine; print(engine.find("actionlint"))')

# The unit suite on every core; the lab's self-tests and scenarios one at a time (one lab).
.venv/bin/python -m pytest -n auto tests/unit
if $unit_only; then
  exec .venv/bin/python -m pytest tests/lab -m "not lab"
fi

# The real engine (a cold build takes minutes: it prints what it downloads and compiles).
.venv/bin/python -m tools.engine build cli
# pulumi-command's provider module is not served by the Go module proxy here (README "The lab"):
# say so on every run rather than fall back quietly. The lab's remote commands run through
# lab/executor until it is served; `tools.engine build` then installs it and this line goes quiet.
if ! .venv/bin/python -m tools.engine build command-provider; then
  echo "test.sh: pulumi-resource-command is not available: the lab runs the program's remote commands" \
       "through lab/executor (an imitation of the engine), not through pulumi up" >&2
fi
[[ $EUID -eq 0 ]] || { echo "test.sh: the lab needs root (systemd-nspawn, bridge); use --unit otherwise" >&2; exit 1; }
# Whatever happens, leave no lab behind.
trap '.venv/bin/python -m lab.hosts down >/dev/null 2>&1 || true' EXIT
# The lab serves Debian's node exporter, fetched with `apt-get download`: it needs package lists.
if ! apt-cache policy prometheus-node-exporter 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update -q
fi
.venv/bin/python -m lab.hosts build
.venv/bin/python -m pytest tests/engine tests/lab
