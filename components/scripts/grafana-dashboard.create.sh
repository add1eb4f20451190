#!/usr/bin/env bash
# Provisions this stack's Grafana dashboard: the dashboard JSON in the stack's own directory,
# then the dashboards provider file that points Grafana at it. Each file goes through a temporary
# file beside it (named so that Grafana reads neither: it loads *.json from the dashboard
# directory and *.yaml/*.yml from the provider directory) renamed into place; an unchanged file
# is not touched. Grafana reads provider files only when it starts, so a running Grafana that
# started before the provider file was last written is restarted (also after a run killed
# between the write and the restart); a changed dashboard is read by the running provider
# within its updateIntervalSeconds. A Grafana that is not running reads both when it starts.
# Inputs: STACK PROVIDER_FILE PROVIDER_YAML DASHBOARD_DIR DASHBOARD_FILE DASHBOARD_JSON SERVICE
#         LOCK_FILE
set -euo pipefail
: "${STACK:?}" "${PROVIDER_FILE:?}" "${PROVIDER_YAML:?}" "${DASHBOARD_DIR:?}" "${DASHBOARD_FILE:?}"
: "${DASHBOARD_JSON:?}" "${SERVICE:?}" "${LOCK_FILE:?}"
# @include lib.sh

lock_monitoring_host "$LOCK_FILE"
umask 022
provider_dir=$(dirname "$PROVIDER_FILE")
provisioning_dir=$(dirname "$provider_dir")
scratch() { printf '%s/.%s.runner-fleet-tmp' "$(dirname "$1")" "$(basename "$1")"; }
tombstone="$provider_dir/.$(basename "$PROVIDER_FILE").runner-fleet-removed"

[[ -d "$provisioning_dir" ]] ||
  die "Grafana's provisioning directory $provisioning_dir does not exist on the monitoring host; nothing was written" \
    "install Grafana there, or set runner-fleet:grafana.provisioningDir to its [paths] provisioning setting, then pulumi up"

# put FILE CONTENT: FILE replaced atomically when its content differs; returns 1 if unchanged.
put() {
  local file=$1 content=$2 tmp
  tmp=$(scratch "$file")
  rm -f -- "$tmp"
  if [[ -f "$file" && "$(cat "$file")" == "$(printf '%s' "$content")" ]]; then
    return 1
  fi
  printf '%s\n' "$content" >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$file"
}

# The stack's directory is its own (mode reset); the directories above it are left as they are.
mkdir -p -- "$(dirname "$DASHBOARD_DIR")" "$provider_dir"
install -d -m 0755 "$DASHBOARD_DIR"
if put "$DASHBOARD_DIR/$DASHBOARD_FILE" "$DASHBOARD_JSON"; then
  say "wrote $DASHBOARD_DIR/$DASHBOARD_FILE"
else
  say "$DASHBOARD_DIR/$DASHBOARD_FILE unchanged"
fi
if put "$PROVIDER_FILE" "$PROVIDER_YAML"; then
  say "wrote $PROVIDER_FILE"
else
  say "$PROVIDER_FILE unchanged"
fi
rm -f -- "$tombstone"

if ! systemctl is-active --quiet "$SERVICE"; then
  say "Grafana ($SERVICE) is not running on the monitoring host; it loads the stack $STACK dashboard when it starts"
  exit 0
fi
started=$(systemctl show --value -p ActiveEnterTimestamp "$SERVICE")
started=$(date -d "$started" +%s 2>/dev/null || echo 0)
if (($(stat -c %Y "$PROVIDER_FILE") >= started)); then
  systemctl restart "$SERVICE" ||
    die "restarting $SERVICE failed; the dashboard files are in place and are read when it starts" \
      "read journalctl -u $SERVICE on the monitoring host, fix what it names, then run again"
  say "restarted $SERVICE: Grafana reads dashboard provider files when it starts"
else
  say "$SERVICE has loaded $PROVIDER_FILE"
fi
