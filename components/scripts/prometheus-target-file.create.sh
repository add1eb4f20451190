#!/usr/bin/env bash
# Publishes this stack's file_sd target file. The candidate is validated with promtool first and
# renamed into place atomically (file_sd picks it up without a reload); a rejected file leaves
# the previous one untouched. Then waits until Prometheus lists every target in the job.
# Inputs: STACK TARGETS_DIR TARGETS_GLOB TARGET_FILE TARGETS_JSON PROMTOOL PROM_URL JOB_NAME EXPECT
#         LOCK_FILE
set -euo pipefail
: "${STACK:?}" "${TARGETS_DIR:?}" "${TARGETS_GLOB:?}" "${TARGET_FILE:?}" "${TARGETS_JSON:?}" "${PROMTOOL:?}"
: "${PROM_URL:?}" "${JOB_NAME:?}" "${EXPECT:?}" "${LOCK_FILE:?}"
# @include lib.sh

lock_monitoring_host "$LOCK_FILE"

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
    die "promtool rejected the target file for stack $STACK; $final is unchanged:
$check"
  fi
  chmod 0644 "$work/$TARGET_FILE"
  mv -f "$work/$TARGET_FILE" "$final"
  say "wrote $final"
fi

# Sets `missing` to the expected targets Prometheus does not list yet.
all_scraped() {
  local targets target
  targets=$(curl -fsS --max-time 5 "$PROM_URL/api/v1/targets?state=active" 2>/dev/null | tr -d ' \n' || true)
  missing=""
  for target in $EXPECT; do
    [[ "$targets" == *"\"scrapePool\":\"$JOB_NAME\""* && "$targets" == *"\"scrapeUrl\":\"http://$target/metrics\""* ]] ||
      missing="$missing $target"
  done
  [[ -z "$missing" ]]
}
if wait_for 90 all_scraped; then
  say "Prometheus job '$JOB_NAME' scrapes:$(printf ' %s' $EXPECT)"
  exit 0
fi
die "Prometheus did not pick up$missing within 90 s; is job '$JOB_NAME' reading $TARGETS_GLOB?"
