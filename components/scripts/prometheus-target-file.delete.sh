#!/usr/bin/env bash
# Removes this stack's target file and nothing else: the job and other stacks' files stay.
# Inputs: STACK TARGETS_DIR TARGET_FILE LOCK_FILE
set -euo pipefail
: "${STACK:?}" "${TARGETS_DIR:?}" "${TARGET_FILE:?}" "${LOCK_FILE:?}"
# @include lib.sh

lock_monitoring_host "$LOCK_FILE"
rm -f -- "$TARGETS_DIR/$TARGET_FILE"
say "removed $TARGETS_DIR/$TARGET_FILE (stack $STACK)"
