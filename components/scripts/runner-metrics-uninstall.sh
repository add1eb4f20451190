#!/usr/bin/env bash
# Removes this stack's runner metrics collector.
# Inputs: HOST_NAME COLLECTOR_PATH SERVICE_UNIT TIMER_UNIT CONF_DIR TEXTFILE_DIR
set -euo pipefail
: "${HOST_NAME:?}" "${COLLECTOR_PATH:?}" "${SERVICE_UNIT:?}" "${TIMER_UNIT:?}" "${CONF_DIR:?}" "${TEXTFILE_DIR:?}"
# @include lib.sh

for unit in "$TIMER_UNIT" "$SERVICE_UNIT"; do
  if [[ -f "/etc/systemd/system/$unit" ]]; then
    timeout 60 systemctl stop "$unit" || true
    systemctl disable --quiet "$unit" 2>/dev/null || true
    rm -f -- "/etc/systemd/system/$unit"
  fi
done
systemctl daemon-reload
rm -f -- "$COLLECTOR_PATH" "$TEXTFILE_DIR/runner-fleet-runners.prom"
# Directories of this stack that are empty now (other stacks' directories are never touched).
rmdir --ignore-fail-on-non-empty -- "$CONF_DIR" "$(dirname "$CONF_DIR")" "$(dirname "$COLLECTOR_PATH")" 2>/dev/null || true
say "$HOST_NAME: runner metrics collector removed"
