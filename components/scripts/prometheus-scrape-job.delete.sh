#!/usr/bin/env bash
# Runs when a stack is destroyed, after its target file is gone. The job and the alert rules are
# shared by every stack the job scrapes: while another stack's target file remains in TARGETS_DIR
# both stay. The last stack takes the rules out (so RunnerTargetsMissing does not fire for a fleet
# that no longer exists): its rule_files entry first (a validated candidate moved into place),
# then the file, then Prometheus is reloaded. The job stays in prometheus.yml (with no target
# files it scrapes nothing); so does a `rule_files:` key the deploy added. With manageConfig
# false the entry is the user's, so the rules file stays too (promtool refuses a rule_files
# entry without its file) and the message says what to remove.
# Inputs: TARGETS_DIR JOB_NAME RULES_FILE CONFIG_PATH MANAGE_CONFIG SERVICE PROMTOOL PROM_URL
#         LOCK_FILE
set -euo pipefail
: "${TARGETS_DIR:?}" "${JOB_NAME:?}" "${RULES_FILE:?}" "${CONFIG_PATH:?}" "${MANAGE_CONFIG:?}" "${SERVICE:?}"
: "${PROMTOOL:?}" "${PROM_URL:?}" "${LOCK_FILE:?}"
# @include lib.sh

lock_monitoring_host "$LOCK_FILE"

shopt -s nullglob
others=("$TARGETS_DIR"/*.json)
if ((${#others[@]} > 0)); then
  say "job '$JOB_NAME' and alert rules $RULES_FILE stay: other stacks' target files remain (${others[*]##*/})"
  exit 0
fi
candidate="$(dirname "$CONFIG_PATH")/.$(basename "$CONFIG_PATH").runner-fleet.tmp"
rm -f -- "$candidate" "$(dirname "$RULES_FILE")/.$(basename "$RULES_FILE").runner-fleet."{tmp,bak}
trap 'rm -f -- "$candidate"' EXIT
if [[ "$MANAGE_CONFIG" != true ]]; then
  [[ -f "$RULES_FILE" ]] &&
    say "no stack left in job '$JOB_NAME'; $RULES_FILE stays while $CONFIG_PATH lists it (prometheus.manageConfig is false): remove both by hand"
  exit 0
fi

# shellcheck disable=SC2016 # a sed expression, not a shell one
quoted=$(printf '%s' "$RULES_FILE" | sed 's/[][\.*^$()+?{}|/]/\\&/g')
entry_re="^[[:space:]]*-[[:space:]]+[\"']?${quoted}[\"']?[[:space:]]*(#.*)?$"
if [[ -f "$CONFIG_PATH" ]] && grep -Eq "$entry_re" "$CONFIG_PATH"; then
  grep -Ev "$entry_re" "$CONFIG_PATH" >"$candidate" || true
  chmod --reference="$CONFIG_PATH" "$candidate"
  chown --reference="$CONFIG_PATH" "$candidate"
  if ! check=$("$PROMTOOL" check config "$candidate" 2>&1); then
    die "no stack left in job '$JOB_NAME', but promtool rejects $CONFIG_PATH without runner-fleet's rules entry (changed by hand?); nothing was removed" \
      "fix $CONFIG_PATH where promtool says (above), then run the destroy again" "$check"
  fi
  mv -f "$candidate" "$CONFIG_PATH"
fi
if [[ ! -f "$RULES_FILE" ]]; then
  say "no stack left in job '$JOB_NAME'; alert rules already removed"
  exit 0
fi
rm -f -- "$RULES_FILE"
if systemctl is-active --quiet "$SERVICE"; then
  # Prometheus drops the targets of a removed target file at its next discovery update (within
  # seconds); a reload before that keeps them listed for good: the file discovery it restarts
  # never saw the file, so nothing ever removes them. No target file is left, so wait for none.
  job_listed() {
    local page
    page=$(curl -fsS --max-time 5 "$PROM_URL/api/v1/targets?state=active" 2>/dev/null || true)
    [[ "$page" == *"\"scrapePool\":\"$JOB_NAME\""* ]]
  }
  for _ in $(seq 1 30); do
    job_listed || break
    sleep 1
  done
  systemctl reload "$SERVICE"
  say "removed $RULES_FILE and its rule_files entry (no stack left in job '$JOB_NAME'); Prometheus reloaded; the job stays in $CONFIG_PATH"
else
  say "removed $RULES_FILE and its rule_files entry (no stack left in job '$JOB_NAME'); Prometheus is not running"
fi
