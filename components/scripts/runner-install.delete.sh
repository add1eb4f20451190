#!/usr/bin/env bash
# Deletes the runner's directory (after its service and registration are gone).
# Inputs: RUNNER_NAME RUNNER_DIR DOWNLOAD_DIR RUNNERS_DIR
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${DOWNLOAD_DIR:?}" "${RUNNERS_DIR:?}"
# @include lib.sh

case "$RUNNER_DIR" in
  "$RUNNERS_DIR"/?*) ;;
  *)
    die "refusing to delete $RUNNER_DIR: not under $RUNNERS_DIR" \
      "remove the directory by hand if it is this runner's, then forget the step: pulumi state delete <its URN>" ;;
esac
rm -rf -- "$RUNNER_DIR" "$DOWNLOAD_DIR"
say "$RUNNER_NAME: removed $RUNNER_DIR"
