#!/usr/bin/env bash
# Publishes this stack's file_sd target file. The candidate is validated with promtool first and
# renamed into place atomically (file_sd picks it up without a reload); a rejected file leaves
# the previous one untouched. The file lists every configured host whether its exporter is up or
# not (a host that is down shows as a down target, which RunnerHostUnreachable reports), so this
# step never waits on a host. Then it checks that Prometheus can use it: running (else "not
# running"; the file is read when it starts), prometheus.yml still accepted by promtool, and every
# target listed in the job within 90 s (else the job does not read the file). Whether each target
# is up is reported, never waited for.
# Inputs: STACK TARGETS_DIR TARGETS_GLOB TARGET_FILE TARGETS_JSON PROMTOOL PROM_URL JOB_NAME EXPECT
#         LOCK_FILE SERVICE CONFIG_PATH
set -euo pipefail
: "${STACK:?}" "${TARGETS_DIR:?}" "${TARGETS_GLOB:?}" "${TARGET_FILE:?}" "${TARGETS_JSON:?}" "${PROMTOOL:?}"
: "${PROM_URL:?}" "${JOB_NAME:?}" "${EXPECT:?}" "${LOCK_FILE:?}" "${SERVICE:?}" "${CONFIG_PATH:?}"
# @include lib.sh

lock_monitoring_host "$LOCK_FILE"
# Scratch directories of a run killed half-way (the lock makes this run the only one using them).
rm -rf -- "$TARGETS_DIR"/.runner-fleet-*

final="$TARGETS_DIR/$TARGET_FILE"
if [[ -f "$final" && "$(cat "$final")" == "$(printf '%s' "$TARGETS_JSON")" ]]; then
  say "$final unchanged"
else
  install -d -m 0755 "$TARGETS_DIR"
  # A hidden directory beside the live files: same filesystem for the rename, and not matched
  # by the job's *.json glob.
  work=$(mktemp -d "$TARGETS_DIR/.runner-fleet-XXXXXX")
  trap 'rm -rf -- "$work"' EXIT
  printf '%s\n' "$TARGETS_JSON" >"$work/$TARGET_FILE"
  printf 'scrape_configs:\n  - job_name: runner-fleet-validate\n    file_sd_configs:\n      - files: ["%s"]\n' \
    "$work/$TARGET_FILE" >"$work/validate.yml"
  if ! check=$("$PROMTOOL" check config "$work/validate.yml" 2>&1); then
    die "promtool rejected the target file for stack $STACK; $final is unchanged" \
      "fix the hosts' addresses and exporter ports in the stack config where promtool says (above), then pulumi up" \
      "$check"
  fi
  chmod 0644 "$work/$TARGET_FILE"
  mv -f "$work/$TARGET_FILE" "$final"
  say "wrote $final"
fi

if ! systemctl is-active --quiet "$SERVICE"; then
  die "Prometheus is not running on the monitoring host ($SERVICE is $(systemctl is-active "$SERVICE" 2>/dev/null || true)); $final is in place and is read when it starts" \
    "start it (systemctl start $SERVICE; journalctl -u $SERVICE says why it stopped), then run again"
fi
if ! check=$("$PROMTOOL" check config "$CONFIG_PATH" 2>&1); then
  die "$final is in place and Prometheus serves it, but promtool rejects $CONFIG_PATH as it is on the host (changed by hand?): Prometheus would not reload or restart with it" \
    "fix $CONFIG_PATH where promtool says (above), then run again" "$check"
fi

targets=""
# Sets `missing` to the expected targets Prometheus does not list yet (`targets`: one line per
# active target of the job, as Prometheus's JSON has it).
all_listed() {
  local target
  targets=$(curl -fsS --max-time 5 "$PROM_URL/api/v1/targets?state=active" 2>/dev/null | tr -d '\n' |
    sed 's/},{"discoveredLabels"/}\n{"discoveredLabels"/g' | grep -F "\"scrapePool\":\"$JOB_NAME\"" || true)
  missing=""
  for target in $EXPECT; do
    [[ "$targets" == *"\"scrapeUrl\":\"http://$target/metrics\""* ]] || missing="$missing $target"
  done
  [[ -z "$missing" ]]
}
wait_for 90 all_listed ||
  die "Prometheus did not pick up$missing within 90 s" \
    "check that job '$JOB_NAME' in $CONFIG_PATH reads $TARGETS_GLOB (curl $PROM_URL/api/v1/targets), then run again"

# health TARGET: up, down or unknown (not scraped yet), with Prometheus's last error if any.
health() {
  local line state error
  line=$(grep -F "\"scrapeUrl\":\"http://$1/metrics\"" <<<"$targets" | head -n 1)
  state=$(sed -n 's/.*"health":"\([a-z]*\)".*/\1/p' <<<"$line")
  error=$(sed -n 's/.*"lastError":"\([^"]*\)".*/\1/p' <<<"$line")
  printf '%s%s' "${state:-unknown}" "${error:+ ($error)}"
}
up=()
not_up=()
for target in $EXPECT; do
  state=$(health "$target")
  if [[ "$state" == up ]]; then up+=("$target"); else not_up+=("$target: $state"); fi
done
say "Prometheus job '$JOB_NAME' lists every target of stack $STACK; up: ${up[*]:-none}"
if ((${#not_up[@]} > 0)); then
  say "not up yet (an exporter being installed, or a host that is down; RunnerHostUnreachable fires if it stays so):"
  printf '  %s\n' "${not_up[@]}"
fi
