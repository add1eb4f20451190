#!/usr/bin/env bash
# Removes this stack's node exporter: unit, binary and textfile directory. Other stacks'
# exporters on the same host are separate units on other ports and stay untouched.
# Inputs: HOST_NAME EXPORTER_DIR TEXTFILE_DIR UNIT_DIR UNIT
set -euo pipefail
: "${HOST_NAME:?}" "${EXPORTER_DIR:?}" "${TEXTFILE_DIR:?}" "${UNIT_DIR:?}" "${UNIT:?}"
# @include lib.sh

if remove_unit "$UNIT_DIR" "$UNIT"; then
  systemctl daemon-reload
fi
rm -rf -- "$EXPORTER_DIR" "$TEXTFILE_DIR"
say "$HOST_NAME: node exporter $UNIT removed"
