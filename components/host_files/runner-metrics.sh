#!/usr/bin/env bash
# Runner metrics for the node exporter's textfile collector, run every 15 s by a systemd timer.
# One gauge per runner and metric, so a runner whose service vanished still shows up as 0.
# "online": a Runner.Listener runs in the runner's unit and the last session event across the log
# pages it wrote says connected and listening (the log rolls every RUNNER_LOGSIZE MB and
# "Listening for Jobs" is written once per session, so no single page is enough); "busy": a
# Runner.Worker, the runner's per-job process, runs in the unit. Both survive log roll-over and
# listener restarts (lib.sh runner_reports_online / runner_reports_busy).
# Installed by exporter-runner-metrics.create.sh; the unit (runner-metrics.service.tmpl) passes
# the arguments. Arguments: CONF_DIR METRICS_FILE
set -euo pipefail
# @include lib.sh
conf_dir=${1:?conf dir}
out=${2:?metrics file}

escape() { local v=${1//\\/\\\\}; v=${v//\"/\\\"}; printf '%s' "${v//$'\n'/\\n}"; }

declare -a names=() active=() online=() busy=() info=()
shopt -s nullglob
for conf in "$conf_dir"/*.conf; do
  name="" dir="" unit="" version="" labels=""
  while IFS='=' read -r key value; do
    case "$key" in
      name) name=$value ;; dir) dir=$value ;; unit) unit=$value ;;
      version) version=$value ;; labels) labels=$value ;;
    esac
  done <"$conf"
  [[ -n "$name" && -n "$dir" && -n "$unit" ]] || continue
  a=0 o=0 b=0
  if systemctl is-active --quiet "$unit"; then
    a=1
    if runner_reports_online "$dir" "$unit"; then o=1; fi
    if runner_reports_busy "$dir" "$unit"; then b=1; fi
  fi
  n=$(escape "$name")
  names+=("$n") active+=("$a") online+=("$o") busy+=("$b")
  info+=("runner=\"$n\",version=\"$(escape "$version")\",labels=\"$(escape "$labels")\",unit=\"$(escape "$unit")\"")
done

# family NAME HELP VALUES-ARRAY: one gauge family, one sample per runner.
family() {
  local -n values=$3
  printf '# HELP %s %s\n# TYPE %s gauge\n' "$1" "$2" "$1"
  for i in "${!names[@]}"; do
    printf '%s{%s} %s\n' "$1" "${labels_of[$i]}" "${values[$i]}"
  done
}

labels_of=()
for n in "${names[@]}"; do labels_of+=("runner=\"$n\""); done
ones=()
for i in "${!names[@]}"; do ones+=(1); done
{
  family github_runner_service_active "Whether the runner's systemd service is active (1) or not (0)." active
  family github_runner_online "Whether the runner reports itself connected to GitHub and listening (1) or not (0)." online
  family github_runner_busy "Whether the runner reports a job in progress (1) or not (0)." busy
  labels_of=("${info[@]}")
  family github_runner_info "Runner metadata (name, version, labels, unit); always 1." ones
  printf '# HELP github_runner_metrics_last_run_timestamp_seconds %s\n' "When the runner metrics were last collected."
  printf '# TYPE github_runner_metrics_last_run_timestamp_seconds gauge\n'
  printf 'github_runner_metrics_last_run_timestamp_seconds %s\n' "$(date +%s)"
} >"$out.tmp"
mv -f "$out.tmp" "$out"
