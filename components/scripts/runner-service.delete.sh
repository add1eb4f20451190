#!/usr/bin/env bash
# Stops and uninstalls the runner's service and forgets it in the metrics collector.
# Inputs: RUNNER_NAME RUNNER_DIR UNIT_DIR UNIT METRICS_CONF
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${UNIT_DIR:?}" "${UNIT:?}" "${METRICS_CONF:?}"
# @include lib.sh

rm -f -- "$METRICS_CONF"
unit=$UNIT
if [[ -s "$RUNNER_DIR/.service" ]]; then unit=$(cat "$RUNNER_DIR/.service"); fi
unit_file="$UNIT_DIR/$unit"
if [[ -f "$unit_file" ]]; then
  timeout 330 systemctl stop "$unit" || true
  if [[ -x "$RUNNER_DIR/svc.sh" ]]; then
    (cd "$RUNNER_DIR" && timeout 120 ./svc.sh uninstall) </dev/null || true
  fi
  if [[ -f "$unit_file" ]]; then
    systemctl disable --quiet "$unit" || true
    rm -f -- "$unit_file"
    systemctl daemon-reload
  fi
  say "$RUNNER_NAME: service $unit removed"
fi
rm -f -- "$RUNNER_DIR/.service"
