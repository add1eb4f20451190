#!/usr/bin/env bash
# Makes sure the monitoring host's Prometheus has the scrape job that reads the fleet's target
# files. When the stack manages the config, a missing job is inserted as text at the end of
# scrape_configs (the user's other jobs and comments stay as they are), the candidate is
# validated with promtool beside the live file, moved into place atomically, and Prometheus is
# reloaded only then. When the config is managed elsewhere, the job is only checked for.
# Inputs: CONFIG_PATH TARGETS_DIR TARGETS_GLOB JOB_NAME JOB_BLOCK MANAGE_CONFIG SERVICE PROMTOOL
#         PROM_URL LOCK_FILE
set -euo pipefail
: "${CONFIG_PATH:?}" "${TARGETS_DIR:?}" "${TARGETS_GLOB:?}" "${JOB_NAME:?}" "${JOB_BLOCK:?}" "${MANAGE_CONFIG:?}"
: "${SERVICE:?}" "${PROMTOOL:?}" "${PROM_URL:?}" "${LOCK_FILE:?}"
# @include lib.sh

lock_monitoring_host "$LOCK_FILE"

[[ -f "$CONFIG_PATH" ]] || die "Prometheus configuration $CONFIG_PATH does not exist"
command -v "$PROMTOOL" >/dev/null || die "promtool ($PROMTOOL) is not installed on the monitoring host"
install -d -m 0755 "$TARGETS_DIR"

glob=$TARGETS_GLOB
if grep -Eq "^[[:space:]]*-?[[:space:]]*job_name:[[:space:]]*[\"']?${JOB_NAME}[\"']?[[:space:]]*(#.*)?$" "$CONFIG_PATH"; then
  grep -Fq "$glob" "$CONFIG_PATH" ||
    die "job '$JOB_NAME' exists in $CONFIG_PATH but does not read $glob; add it to the job's file_sd_configs files"
  # The file has it; does the running Prometheus? (An earlier run may have been killed between
  # moving the file into place and the reload.)
  running=$(curl -fsS --max-time 5 "$PROM_URL/api/v1/status/config" 2>/dev/null || true)
  if [[ -n "$running" && "$running" != *"job_name: $JOB_NAME"* ]]; then
    check=$("$PROMTOOL" check config "$CONFIG_PATH" 2>&1) || die "promtool rejects $CONFIG_PATH; not reloading:
$check"
    systemctl reload "$SERVICE"
    say "Prometheus job '$JOB_NAME' present in $CONFIG_PATH; Prometheus reloaded to pick it up"
    exit 0
  fi
  say "Prometheus job '$JOB_NAME' present in $CONFIG_PATH"
  exit 0
fi
if [[ "$MANAGE_CONFIG" != true ]]; then
  die "Prometheus job '$JOB_NAME' is missing from $CONFIG_PATH (prometheus.manageConfig is false); add:
$JOB_BLOCK"
fi

mapfile -t lines <"$CONFIG_PATH"
start=-1
for i in "${!lines[@]}"; do
  if [[ "${lines[$i]}" =~ ^scrape_configs:[[:space:]]*(#.*)?$ ]]; then start=$i; break; fi
  if [[ "${lines[$i]}" =~ ^scrape_configs: ]]; then
    die "scrape_configs in $CONFIG_PATH is written inline; add the job by hand:
$JOB_BLOCK"
  fi
done

candidate="$(dirname "$CONFIG_PATH")/.$(basename "$CONFIG_PATH").runner-fleet.tmp"
trap 'rm -f -- "$candidate"' EXIT
if [[ "$start" -lt 0 ]]; then
  { cat "$CONFIG_PATH"; printf '\nscrape_configs:\n'; printf '%s\n' "$JOB_BLOCK" | sed 's/^/  /'; } >"$candidate"
else
  # The list's item indentation, and its end: the next top-level key (with the comments and
  # blank lines just above it, which belong to that key).
  indent="  "
  end=${#lines[@]}
  for ((j = start + 1; j < ${#lines[@]}; j++)); do
    if [[ "${lines[$j]}" =~ ^[^[:space:]#-] ]]; then end=$j; break; fi
  done
  for ((j = start + 1; j < end; j++)); do
    if [[ "${lines[$j]}" =~ ^([[:space:]]*)-[[:space:]] ]]; then indent=${BASH_REMATCH[1]}; break; fi
  done
  insert=$end
  while ((insert > start + 1)) && [[ "${lines[$((insert - 1))]}" =~ ^(#.*)?[[:space:]]*$ ]]; do
    insert=$((insert - 1))
  done
  {
    printf '%s\n' "${lines[@]:0:insert}"
    printf '\n'
    printf '%s\n' "$JOB_BLOCK" | sed "s/^/$indent/"
    if ((insert < ${#lines[@]})); then printf '%s\n' "${lines[@]:insert}"; fi
  } >"$candidate"
fi
chmod --reference="$CONFIG_PATH" "$candidate"
chown --reference="$CONFIG_PATH" "$candidate"
if ! check=$("$PROMTOOL" check config "$candidate" 2>&1); then
  die "promtool rejected the configuration with job '$JOB_NAME' added; $CONFIG_PATH is unchanged:
$check"
fi

reload_stamp() { curl -fsS --max-time 5 "$PROM_URL/metrics" | awk '/^prometheus_config_last_reload_success_timestamp_seconds/ {print $2}'; }
reload_ok() { curl -fsS --max-time 5 "$PROM_URL/metrics" | awk '/^prometheus_config_last_reload_successful / {print $2}'; }
before=$(reload_stamp || true)
backup=$(mktemp)
cp -p "$CONFIG_PATH" "$backup"
mv -f "$candidate" "$CONFIG_PATH"
systemctl reload "$SERVICE"
for _ in $(seq 1 30); do
  sleep 1
  now=$(reload_stamp || true)
  if [[ -n "$now" && "$now" != "$before" && "$(reload_ok || true)" == 1 ]]; then
    rm -f -- "$backup"
    say "added job '$JOB_NAME' to $CONFIG_PATH; Prometheus reloaded"
    exit 0
  fi
done
cp -p "$backup" "$CONFIG_PATH"
rm -f -- "$backup"
systemctl reload "$SERVICE" || true
die "Prometheus did not confirm a successful reload within 30 s; $CONFIG_PATH was restored"
