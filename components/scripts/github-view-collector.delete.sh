#!/usr/bin/env bash
# Removes the stack's GitHub-view collector from the monitoring host: its target group first
# (under the monitoring host's lock), then the unit, the program, its config and its credential.
# Other stacks' collectors and files are never touched.
# Inputs: STACK COLLECTOR_PATH CONFIG_DIR UNIT_DIR UNIT TARGETS_DIR TARGET_FILE LOCK_FILE
set -euo pipefail
: "${STACK:?}" "${COLLECTOR_PATH:?}" "${CONFIG_DIR:?}" "${UNIT_DIR:?}" "${UNIT:?}" "${TARGETS_DIR:?}"
: "${TARGET_FILE:?}" "${LOCK_FILE:?}"
# @include lib.sh

lock_monitoring_host "$LOCK_FILE"
rm -f -- "$TARGETS_DIR/$TARGET_FILE" "$TARGETS_DIR/$TARGET_FILE.runner-fleet.tmp"
remove_unit "$UNIT_DIR" "$UNIT" || true
rm -f -- "$UNIT_DIR/$UNIT.runner-fleet.tmp"
systemctl daemon-reload
rm -rf -- "$CONFIG_DIR"
rm -f -- "$COLLECTOR_PATH" "$COLLECTOR_PATH.runner-fleet.tmp"
# This stack's directories that are empty now.
rmdir --ignore-fail-on-non-empty -- "$(dirname "$CONFIG_DIR")" "$(dirname "$COLLECTOR_PATH")" \
  "$(dirname "$(dirname "$COLLECTOR_PATH")")" 2>/dev/null || true
say "GitHub-view collector of stack $STACK removed"
