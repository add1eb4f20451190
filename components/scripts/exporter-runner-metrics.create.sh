#!/usr/bin/env bash
# Installs the runner metrics collector (script + oneshot service + 15 s timer) for this stack
# and runs it once, so the exporter serves runner metrics as soon as the deploy finishes.
# SPOOL_ROOT holds one job-hook spool per runner (runner-service.create.sh makes each).
# Inputs: HOST_NAME COLLECTOR_PATH COLLECTOR UNIT_DIR SERVICE_UNIT SERVICE_CONTENT TIMER_UNIT
#         TIMER_CONTENT CONF_DIR TEXTFILE_DIR METRICS_FILE SPOOL_ROOT
set -euo pipefail
: "${HOST_NAME:?}" "${COLLECTOR_PATH:?}" "${COLLECTOR:?}" "${UNIT_DIR:?}" "${SERVICE_UNIT:?}" "${SERVICE_CONTENT:?}"
: "${TIMER_UNIT:?}" "${TIMER_CONTENT:?}" "${CONF_DIR:?}" "${TEXTFILE_DIR:?}" "${METRICS_FILE:?}" "${SPOOL_ROOT:?}"
# @include lib.sh

install -d -m 0755 "$CONF_DIR" "$TEXTFILE_DIR" "$SPOOL_ROOT"
write_if_changed "$COLLECTOR_PATH" 0755 "$COLLECTOR" || true
write_if_changed "$UNIT_DIR/$SERVICE_UNIT" 0644 "$SERVICE_CONTENT" || true
write_if_changed "$UNIT_DIR/$TIMER_UNIT" 0644 "$TIMER_CONTENT" || true
# Always: a run killed between writing a unit and reloading must not leave systemd behind.
systemctl daemon-reload
systemctl enable --quiet "$TIMER_UNIT"
systemctl start "$TIMER_UNIT"
timeout 60 systemctl start "$SERVICE_UNIT" ||
  die "the runner metrics collector ($SERVICE_UNIT) failed" \
    "read its journal above (journalctl -u $SERVICE_UNIT), fix what it names, then run again" \
    "$(journalctl -u "$SERVICE_UNIT" -n 10 --no-pager 2>&1)"
[[ -s "$METRICS_FILE" ]] ||
  die "the runner metrics collector ran but wrote no metrics to $METRICS_FILE" \
    "check that $TEXTFILE_DIR is writable and not full (df -h $TEXTFILE_DIR), then run again"
say "$HOST_NAME: runner metrics collected every 15 s ($TIMER_UNIT)"
