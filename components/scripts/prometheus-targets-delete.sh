#!/usr/bin/env bash
# Removes this stack's target file and nothing else: the job and other stacks' files stay.
# Inputs: STACK TARGETS_DIR TARGET_FILE
set -euo pipefail
: "${STACK:?}" "${TARGETS_DIR:?}" "${TARGET_FILE:?}"
# @include lib.sh

exec 9>/run/lock/runner-fleet-prometheus.lock
timeout 300 flock 9 || die "timed out waiting for another runner-fleet deploy on this host"
rm -f -- "$TARGETS_DIR/$TARGET_FILE"
say "removed $TARGETS_DIR/$TARGET_FILE (stack $STACK)"
