#!/usr/bin/env bash
# Removes the stack's runner user and its (now empty) directories. Runs after every runner of
# the stack on this host is gone; other stacks' users and files are not touched.
# Inputs: RUNNER_USER INSTALL_ROOT STATE_ROOT RUNNER_HOME RUNNERS_DIR
set -euo pipefail
: "${RUNNER_USER:?}" "${INSTALL_ROOT:?}" "${STATE_ROOT:?}" "${RUNNER_HOME:?}" "${RUNNERS_DIR:?}"
# @include lib.sh

if id -u "$RUNNER_USER" >/dev/null 2>&1; then
  # --force: a job process left behind by the runner's KillMode=process must not block removal.
  userdel --force "$RUNNER_USER"
  say "removed user $RUNNER_USER"
fi
rm -rf -- "${RUNNER_HOME:?}"
rmdir --ignore-fail-on-non-empty -- "$RUNNERS_DIR" "$INSTALL_ROOT" "$STATE_ROOT" 2>/dev/null || true
