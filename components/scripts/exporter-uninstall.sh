#!/usr/bin/env bash
# Removes this stack's node exporter: unit, binary and textfile directory. Other stacks'
# exporters on the same host are separate units on other ports and stay untouched.
# Inputs: HOST_NAME EXPORTER_DIR TEXTFILE_DIR UNIT
set -euo pipefail
: "${HOST_NAME:?}" "${EXPORTER_DIR:?}" "${TEXTFILE_DIR:?}" "${UNIT:?}"
# @include lib.sh

if [[ -f "/etc/systemd/system/$UNIT" ]]; then
  timeout 60 systemctl stop "$UNIT" || true
  systemctl disable --quiet "$UNIT" || true
  rm -f -- "/etc/systemd/system/$UNIT"
  systemctl daemon-reload
fi
rm -rf -- "$EXPORTER_DIR" "$TEXTFILE_DIR"
say "$HOST_NAME: node exporter $UNIT removed"
