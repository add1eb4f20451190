#!/usr/bin/env bash
# Removes this stack's Grafana dashboard and provider file, and nothing else in either directory.
# The dashboard goes first (a running provider deletes it from Grafana's database when its file
# is gone), then the provider file is moved aside and a running Grafana restarted (it drops
# dashboards of providers that are no longer configured when it starts), then the moved file is
# deleted; a run killed in between restarts again. The stack's directory is removed if empty.
# Inputs: STACK PROVIDER_FILE DASHBOARD_DIR DASHBOARD_FILE SERVICE LOCK_FILE
set -euo pipefail
: "${STACK:?}" "${PROVIDER_FILE:?}" "${DASHBOARD_DIR:?}" "${DASHBOARD_FILE:?}" "${SERVICE:?}" "${LOCK_FILE:?}"
# @include lib.sh

lock_monitoring_host "$LOCK_FILE"
provider_dir=$(dirname "$PROVIDER_FILE")
tombstone="$provider_dir/.$(basename "$PROVIDER_FILE").runner-fleet-removed"

rm -f -- "$DASHBOARD_DIR/$DASHBOARD_FILE" "$DASHBOARD_DIR/.$DASHBOARD_FILE.runner-fleet-tmp"
if [[ -d "$DASHBOARD_DIR" ]] && ! rmdir -- "$DASHBOARD_DIR" 2>/dev/null; then
  say "left $DASHBOARD_DIR in place: it holds files runner-fleet did not write"
fi
rm -f -- "$provider_dir/.$(basename "$PROVIDER_FILE").runner-fleet-tmp"
if [[ -f "$PROVIDER_FILE" ]]; then
  mv -f -- "$PROVIDER_FILE" "$tombstone"
fi
if [[ -f "$tombstone" ]]; then
  if systemctl is-active --quiet "$SERVICE"; then
    systemctl restart "$SERVICE" ||
      die "restarting $SERVICE failed; the stack's provider file is set aside, and the next run restarts it and removes that file" \
        "read journalctl -u $SERVICE on the monitoring host, fix what it names, then run the destroy again"
    say "restarted $SERVICE: it no longer provisions the stack $STACK dashboard"
  fi
  rm -f -- "$tombstone"
fi
say "removed the stack $STACK dashboard ($DASHBOARD_DIR) and $PROVIDER_FILE"
