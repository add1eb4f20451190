#!/usr/bin/env bash
# Deletes the runner's directory (after its service and registration are gone).
# Inputs: RUNNER_NAME RUNNER_DIR INSTALL_ROOT
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${INSTALL_ROOT:?}"
# @include lib.sh

case "$RUNNER_DIR" in
  "$INSTALL_ROOT"/runners/?*) ;;
  *) die "refusing to delete $RUNNER_DIR: not under $INSTALL_ROOT/runners" ;;
esac
rm -rf -- "$RUNNER_DIR" "$RUNNER_DIR.download"
say "$RUNNER_NAME: removed $RUNNER_DIR"
