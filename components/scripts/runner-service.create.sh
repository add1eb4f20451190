#!/usr/bin/env bash
# Installs and starts the runner's systemd service (svc.sh), records the runner for the metrics
# collector, and waits until the runner itself reports that it is listening for jobs.
# Inputs: RUNNER_NAME RUNNER_DIR RUNNER_USER UNIT_DIR UNIT METRICS_CONF METRICS_CONF_CONTENT
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${RUNNER_USER:?}" "${UNIT_DIR:?}" "${UNIT:?}" "${METRICS_CONF:?}"
: "${METRICS_CONF_CONTENT:?}"
# @include lib.sh

# svc.sh names the unit and records the name in .service; that record is the truth (UNIT is
# what it is expected to be, e.g. for the stack outputs).
unit=""
[[ -f "$RUNNER_DIR/.service" ]] && unit=$(cat "$RUNNER_DIR/.service")
if [[ -z "$unit" || ! -f "$UNIT_DIR/$unit" ]]; then
  say "$RUNNER_NAME: installing service $UNIT"
  (cd "$RUNNER_DIR" && timeout 120 ./svc.sh install "$RUNNER_USER") </dev/null
  unit=$(cat "$RUNNER_DIR/.service")
fi
[[ "$unit" == "$UNIT" ]] || say "$RUNNER_NAME: note: svc.sh named the service $unit (expected $UNIT)"
systemctl enable --quiet "$unit"
systemctl start "$unit"

if write_if_changed "$METRICS_CONF" 0644 "${METRICS_CONF_CONTENT/"unit=$UNIT"/"unit=$unit"}"; then
  say "$RUNNER_NAME: metrics collector configured ($METRICS_CONF)"
fi

listening() { systemctl is-active --quiet "$unit" && runner_reports_online "$RUNNER_DIR"; }
if wait_for 120 listening; then
  say "$RUNNER_NAME: service $unit active; runner listening for jobs"
  exit 0
fi
log=$(newest_diag_log "$RUNNER_DIR")
echo "runner-fleet: $RUNNER_NAME: not listening for jobs after 120 s; service: $(systemctl is-active "$unit" || true)" >&2
[[ -n "$log" ]] && tail -n 20 "$log" >&2
exit 1
