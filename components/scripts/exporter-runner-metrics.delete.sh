#!/usr/bin/env bash
# Removes this stack's runner metrics collector.
# Inputs: HOST_NAME COLLECTOR_PATH UNIT_DIR SERVICE_UNIT TIMER_UNIT CONF_DIR METRICS_FILE SPOOL_ROOT
set -euo pipefail
: "${HOST_NAME:?}" "${COLLECTOR_PATH:?}" "${UNIT_DIR:?}" "${SERVICE_UNIT:?}" "${TIMER_UNIT:?}" "${CONF_DIR:?}"
: "${METRICS_FILE:?}" "${SPOOL_ROOT:?}"
# @include lib.sh

for unit in "$TIMER_UNIT" "$SERVICE_UNIT"; do
  remove_unit "$UNIT_DIR" "$unit" || true
done
systemctl daemon-reload
# The collector's state (job histogram counts) beside the metrics file goes with it.
rm -f -- "$COLLECTOR_PATH" "$METRICS_FILE" "${METRICS_FILE%.prom}.state" "${METRICS_FILE%.prom}.state.tmp"
# Directories of this stack that are empty now (other stacks' directories are never touched).
rmdir --ignore-fail-on-non-empty -- "$CONF_DIR" "$(dirname "$CONF_DIR")" "$(dirname "$COLLECTOR_PATH")" \
  "$SPOOL_ROOT" 2>/dev/null || true
say "$HOST_NAME: runner metrics collector removed"
