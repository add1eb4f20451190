#!/usr/bin/env bash
# Creates the stack's dedicated, non-root runner user and its install root. Idempotent.
# Inputs: RUNNER_USER INSTALL_ROOT STATE_ROOT RUNNER_HOME RUNNERS_DIR
set -euo pipefail
: "${RUNNER_USER:?}" "${INSTALL_ROOT:?}" "${STATE_ROOT:?}" "${RUNNER_HOME:?}" "${RUNNERS_DIR:?}"
# @include lib.sh

install -d -m 0755 -o root -g root "$INSTALL_ROOT" "$STATE_ROOT"
if ! id -u "$RUNNER_USER" >/dev/null 2>&1; then
  useradd --system --user-group --create-home --home-dir "$RUNNER_HOME" --shell /bin/bash \
    --comment "runner-fleet GitHub Actions runner" "$RUNNER_USER"
  say "created user $RUNNER_USER"
else
  say "user $RUNNER_USER exists"
fi
install -d -m 0750 -o "$RUNNER_USER" -g "$RUNNER_USER" "$RUNNER_HOME"
install -d -m 0755 -o root -g root "$RUNNERS_DIR"
