#!/usr/bin/env bash
# Installs and starts the runner's systemd service (svc.sh), records the runner for the metrics
# collector, and waits until the runner itself reports that it is listening for jobs.
# Inputs: RUNNER_NAME RUNNER_DIR RUNNER_USER UNIT METRICS_CONF METRICS_CONF_CONTENT
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${RUNNER_USER:?}" "${UNIT:?}" "${METRICS_CONF:?}" "${METRICS_CONF_CONTENT:?}"
# @include lib.sh

if [[ ! -f "/etc/systemd/system/$UNIT" ]]; then
  say "$RUNNER_NAME: installing service $UNIT"
  (cd "$RUNNER_DIR" && timeout 120 ./svc.sh install "$RUNNER_USER") </dev/null
fi
actual=$(cat "$RUNNER_DIR/.service")
[[ "$actual" == "$UNIT" ]] || die "$RUNNER_NAME: svc.sh installed $actual, expected $UNIT"
systemctl enable --quiet "$UNIT"
systemctl start "$UNIT"

if write_if_changed "$METRICS_CONF" 0644 "$METRICS_CONF_CONTENT"; then
  say "$RUNNER_NAME: metrics collector configured ($METRICS_CONF)"
fi

for _ in $(seq 1 120); do
  if systemctl is-active --quiet "$UNIT" && runner_reports_online "$RUNNER_DIR"; then
    say "$RUNNER_NAME: service $UNIT active; runner listening for jobs"
    exit 0
  fi
  sleep 1
done
log=$(newest_diag_log "$RUNNER_DIR")
echo "runner-fleet: $RUNNER_NAME: not listening for jobs after 120 s; service: $(systemctl is-active "$UNIT" || true)" >&2
[[ -n "$log" ]] && tail -n 20 "$log" >&2
exit 1
