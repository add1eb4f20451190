#!/usr/bin/env bash
# The demo: ./demo.sh up | down   (needs root: systemd-nspawn and a bridge). See README "The lab".
set -euo pipefail
cd "$(dirname "$0")"
[[ -x .venv/bin/python ]] || { python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt; }
exec .venv/bin/python -m lab.demo "${1:-up}"
