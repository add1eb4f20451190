#!/usr/bin/env bash
# Converges the monitoring host's Prometheus to what the stack configures: the scrape job that
# reads every stack's target files, and runner-fleet's alert rules file listed under rule_files.
#
# Order: promtool must accept the live prometheus.yml as it is (a file broken by hand is
# reported with promtool's message and never edited), Prometheus must be running (else "not
# running", not a job problem). Then the candidates are built beside the live files: the rules
# (`promtool check rules`) and, when the stack manages the config, prometheus.yml with the job
# block set to the configured one (inserted if missing, rewritten if its settings differ; the
# user's other jobs and comments stay as they are) and the rules file added to rule_files.
# The checked rules go into place first (Prometheus reads them only on a reload) so that
# `promtool check config` of the candidate sees them; if it fails they are put back. Only then
# is prometheus.yml moved into place, atomically, Prometheus reloaded and the reload confirmed,
# or both files are put back as they were and reloaded again.
# With nothing to change, a reload is still done when a file is newer than Prometheus's last
# successful reload (an earlier run killed between the move and the reload).
# When the config is managed elsewhere, the job and the rule_files entry are only checked for.
# Inputs: CONFIG_PATH TARGETS_DIR TARGETS_GLOB JOB_NAME JOB_BLOCK MANAGE_CONFIG SERVICE PROMTOOL
#         PROM_URL LOCK_FILE RULES_FILE RULES
set -euo pipefail
: "${CONFIG_PATH:?}" "${TARGETS_DIR:?}" "${TARGETS_GLOB:?}" "${JOB_NAME:?}" "${JOB_BLOCK:?}" "${MANAGE_CONFIG:?}"
: "${SERVICE:?}" "${PROMTOOL:?}" "${PROM_URL:?}" "${LOCK_FILE:?}" "${RULES_FILE:?}" "${RULES:?}"
# @include lib.sh

lock_monitoring_host "$LOCK_FILE"

[[ -f "$CONFIG_PATH" ]] ||
  die "Prometheus configuration $CONFIG_PATH does not exist" \
    "set prometheus.configPath to the file your Prometheus reads (or install Prometheus there), then pulumi up"
command -v "$PROMTOOL" >/dev/null ||
  die "promtool ($PROMTOOL) is not installed on the monitoring host" \
    "install it (Debian: it comes with the prometheus package) or set prometheus.promtool to its path, then pulumi up"
# Before any reload: file_sd watches the directory it is given, so it has to exist when the job
# is loaded (else new target files wait for the job's refresh_interval).
install -d -m 0755 "$TARGETS_DIR"

hidden() { printf '%s/.%s.runner-fleet.%s' "$(dirname "$1")" "$(basename "$1")" "$2"; }
candidate=$(hidden "$CONFIG_PATH" tmp)
backup=$(hidden "$CONFIG_PATH" bak)
rules_candidate=$(hidden "$RULES_FILE" tmp)
rules_backup=$(hidden "$RULES_FILE" bak)
# Leftovers of a run killed half-way (the lock makes this run the only one using these names).
rm -f -- "$candidate" "$backup" "$rules_candidate" "$rules_backup"
trap 'rm -f -- "$candidate" "$backup" "$rules_candidate" "$rules_backup"' EXIT

if ! check=$("$PROMTOOL" check config "$CONFIG_PATH" 2>&1); then
  die "promtool rejects $CONFIG_PATH as it is on the host (changed by hand?); this deploy changed nothing and Prometheus keeps serving the configuration it loaded last, but would not reload or restart with this file" \
    "fix $CONFIG_PATH where promtool says (above), then run again" "$check"
fi
if ! systemctl is-active --quiet "$SERVICE"; then
  die "Prometheus is not running on the monitoring host ($SERVICE is $(systemctl is-active "$SERVICE" 2>/dev/null || true)); this deploy changed nothing" \
    "start it (systemctl start $SERVICE; journalctl -u $SERVICE says why it stopped), then run again"
fi
metric() { curl -fsS --max-time 5 "$PROM_URL/metrics" 2>/dev/null | awk -v m="$1" '$1 == m {print $2}'; }
stamp=$(metric prometheus_config_last_reload_success_timestamp_seconds || true)
[[ -n "$stamp" ]] ||
  die "Prometheus ($SERVICE) is running but does not answer on $PROM_URL" \
    "set prometheus.port to the port it listens on (ss -ltnp on the monitoring host), then pulumi up"

# --- the rules -------------------------------------------------------------------------------
printf '%s\n' "$RULES" >"$rules_candidate"
chmod 0644 "$rules_candidate"
if ! check=$("$PROMTOOL" check rules "$rules_candidate" 2>&1); then
  die "promtool rejected runner-fleet's alert rules; $RULES_FILE is unchanged and the previous rules keep serving" \
    "fix monitoring/runner-fleet-alerts.yml where promtool says (above), then pulumi up" "$check"
fi
rules_changed=false
[[ -f "$RULES_FILE" ]] && cmp -s "$rules_candidate" "$RULES_FILE" || rules_changed=true

# --- prometheus.yml --------------------------------------------------------------------------
mapfile -t lines <"$CONFIG_PATH"
out=("${lines[@]}")
# shellcheck disable=SC2016 # a sed expression, not a shell one
regex_quote() { printf '%s' "$1" | sed 's/[][\.*^$()+?{}|/]/\\&/g'; }
job_re="^([[:space:]]*)-[[:space:]]+job_name:[[:space:]]*[\"']?$(regex_quote "$JOB_NAME")[\"']?[[:space:]]*(#.*)?$"
any_job_re="^[[:space:]]*-?[[:space:]]*job_name:[[:space:]]*[\"']?$(regex_quote "$JOB_NAME")[\"']?[[:space:]]*(#.*)?$"
rule_item_re="^[[:space:]]*-[[:space:]]+[\"']?$(regex_quote "$RULES_FILE")[\"']?[[:space:]]*(#.*)?$"

# top_key KEY: sets `key_at` to the line of the top-level KEY in `out` (-1 if none) and
# `key_end` to the line of the next top-level key (or the end); dies on a flow-style value.
top_key() {
  local j
  key_at=-1
  key_end=${#out[@]}
  for j in "${!out[@]}"; do
    if [[ "${out[$j]}" =~ ^$1:[[:space:]]*(#.*)?$ ]]; then key_at=$j; break; fi
    if [[ "${out[$j]}" =~ ^$1:[[:space:]]*[^[:space:]#] ]]; then
      die "$1 in $CONFIG_PATH is written inline (a flow list), which the deploy does not edit" \
        "add the lines above to $1 in $CONFIG_PATH by hand, then run again" "$2"
    fi
  done
  ((key_at >= 0)) || return 0
  for ((j = key_at + 1; j < ${#out[@]}; j++)); do
    if [[ "${out[$j]}" =~ ^[^[:space:]#-] ]]; then key_end=$j; break; fi
  done
}
# tail_of START END: where to append to a section: before the comments and blank lines just
# above the next key (they belong to that key).
tail_of() {
  local at=$2
  while ((at > $1 + 1)) && [[ "${out[$((at - 1))]}" =~ ^(#.*)?[[:space:]]*$ ]]; do at=$((at - 1)); done
  printf '%s' "$at"
}
# item_indent START END: the indentation of the section's list items ("  " if it has none).
item_indent() {
  local j
  for ((j = $1 + 1; j < $2; j++)); do
    if [[ "${out[$j]}" =~ ^([[:space:]]*)-[[:space:]] ]]; then printf '%s' "${BASH_REMATCH[1]}"; return; fi
  done
  printf '  '
}
# splice AT COUNT LINE...: replaces COUNT lines of `out` from AT with the LINEs.
splice() {
  local at=$1 count=$2
  shift 2
  out=("${out[@]:0:at}" "$@" "${out[@]:at+count}")
}

mapfile -t block <<<"${JOB_BLOCK%$'\n'}"
rule_line="- $RULES_FILE  # runner-fleet's alert rules, shared by every stack on this host"
if [[ "$MANAGE_CONFIG" != true ]]; then
  grep -Eq "$any_job_re" "$CONFIG_PATH" ||
    die "Prometheus job '$JOB_NAME' is missing from $CONFIG_PATH (prometheus.manageConfig is false)" \
      "add the job above to scrape_configs in $CONFIG_PATH (or set prometheus.manageConfig: true), then run again" \
      "$JOB_BLOCK"
  grep -Fq "$TARGETS_GLOB" "$CONFIG_PATH" ||
    die "job '$JOB_NAME' in $CONFIG_PATH does not read $TARGETS_GLOB (prometheus.manageConfig is false)" \
      "add $TARGETS_GLOB to the job's file_sd_configs files, then run again"
  grep -Eq "$rule_item_re" "$CONFIG_PATH" ||
    die "$CONFIG_PATH does not list runner-fleet's alert rules (prometheus.manageConfig is false)" \
      "add the line above to rule_files in $CONFIG_PATH, then run again" "  $rule_line"
else
  top_key scrape_configs "$JOB_BLOCK"
  if ((key_at < 0)); then
    out+=("" "scrape_configs:")
    for line in "${block[@]}"; do out+=("  $line"); done
  else
    start=-1
    for ((j = key_at + 1; j < key_end; j++)); do
      if [[ "${out[$j]}" =~ $job_re ]]; then start=$j; indent=${BASH_REMATCH[1]}; break; fi
      if [[ "${out[$j]}" =~ $any_job_re ]]; then
        die "job '$JOB_NAME' in $CONFIG_PATH does not start its list item with job_name, so the deploy cannot tell where it ends" \
          "replace that job in $CONFIG_PATH by hand with the block above, then run again" "$JOB_BLOCK"
      fi
    done
    if ((start < 0)); then
      indent=$(item_indent "$key_at" "$key_end")
      at=$(tail_of "$key_at" "$key_end")
      wanted=("")
      for line in "${block[@]}"; do wanted+=("$indent$line"); done
      splice "$at" 0 "${wanted[@]}"
    else
      # The item ends at the next line indented no deeper than its dash (the next job, a
      # comment of the next job, or the next top-level key); blank lines before that stay.
      end=$key_end
      for ((j = start + 1; j < key_end; j++)); do
        if [[ "${out[$j]}" =~ ^${indent}[^[:space:]] || "${out[$j]}" =~ ^[^[:space:]] ]] ||
          { [[ "${out[$j]}" =~ ^([[:space:]]*)[^[:space:]] ]] && ((${#BASH_REMATCH[1]} < ${#indent})); }; then
          end=$j
          break
        fi
      done
      while ((end > start + 1)) && [[ "${out[$((end - 1))]}" =~ ^[[:space:]]*$ ]]; do end=$((end - 1)); done
      wanted=()
      for line in "${block[@]}"; do wanted+=("$indent$line"); done
      # The block's own leading comment lines, when the item already has them above it.
      lead=0
      while [[ "${block[$lead]}" == \#* ]]; do lead=$((lead + 1)); done
      from=$start
      if ((start - lead > key_at)); then
        same=true
        for ((k = 0; k < lead; k++)); do
          [[ "${out[$((start - lead + k))]}" == "${wanted[$k]}" ]] || same=false
        done
        [[ "$same" == true ]] && from=$((start - lead))
      fi
      splice "$from" $((end - from)) "${wanted[@]}"
    fi
  fi

  top_key rule_files "  $rule_line"
  if ((key_at < 0)); then
    out+=("" "rule_files:" "  $rule_line")
  else
    present=false
    for ((j = key_at + 1; j < key_end; j++)); do
      [[ "${out[$j]}" =~ $rule_item_re ]] && present=true
    done
    if [[ "$present" != true ]]; then
      indent=$(item_indent "$key_at" "$key_end")
      splice "$(tail_of "$key_at" "$key_end")" 0 "$indent$rule_line"
    fi
  fi
fi

config_changed=false
if [[ "$(printf '%s\n' "${out[@]}")" != "$(printf '%s\n' "${lines[@]}")" ]]; then
  config_changed=true
  printf '%s\n' "${out[@]}" >"$candidate"
  chmod --reference="$CONFIG_PATH" "$candidate"
  chown --reference="$CONFIG_PATH" "$candidate"
fi

# --- apply -----------------------------------------------------------------------------------
newer_than_reload() { [[ -f "$1" ]] && awk -v m="$(stat -c %.9Y "$1")" -v s="$stamp" 'BEGIN {exit !(m > s)}'; }
# reload_confirmed: reloads Prometheus and waits until it reports a successful reload newer
# than `stamp` (a failed reload keeps the previous configuration and rules serving).
reload_confirmed() {
  local ok_before now ok
  ok_before=$(metric prometheus_config_last_reload_successful || true)
  systemctl reload "$SERVICE"
  for _ in $(seq 1 30); do
    sleep 1
    now=$(metric prometheus_config_last_reload_success_timestamp_seconds || true)
    ok=$(metric prometheus_config_last_reload_successful || true)
    [[ -n "$now" && "$now" != "$stamp" && "$ok" == 1 ]] && return 0
    [[ "$ok_before" == 1 && "$ok" == 0 ]] && return 1
  done
  return 1
}

if [[ "$config_changed" != true && "$rules_changed" != true ]]; then
  if newer_than_reload "$CONFIG_PATH" || newer_than_reload "$RULES_FILE"; then
    reload_confirmed ||
      die "Prometheus did not confirm a successful reload within 30 s" \
        "read journalctl -u $SERVICE on the monitoring host, fix what it names, then run again"
    say "Prometheus job '$JOB_NAME' and alert rules $RULES_FILE as configured; Prometheus reloaded to pick them up"
  else
    say "Prometheus job '$JOB_NAME' and alert rules $RULES_FILE as configured"
  fi
  exit 0
fi

had_rules=false
[[ -f "$RULES_FILE" ]] && had_rules=true
put_back_rules() {
  [[ "$rules_changed" == true ]] || return 0
  if [[ "$had_rules" == true ]]; then mv -f "$rules_backup" "$RULES_FILE"; else rm -f -- "$RULES_FILE"; fi
}
if [[ "$rules_changed" == true ]]; then
  [[ "$had_rules" == true ]] && cp -p "$RULES_FILE" "$rules_backup"
  mv -f "$rules_candidate" "$RULES_FILE"
fi
checked=$CONFIG_PATH
[[ "$config_changed" == true ]] && checked=$candidate
if ! check=$("$PROMTOOL" check config "$checked" 2>&1); then
  put_back_rules
  die "promtool rejected the configuration with job '$JOB_NAME' and the alert rules as configured; $CONFIG_PATH and $RULES_FILE are unchanged" \
    "fix the prometheus settings of the stack config (or $CONFIG_PATH) where promtool says (above), then run again" \
    "$check"
fi
if [[ "$config_changed" == true ]]; then
  cp -p "$CONFIG_PATH" "$backup"
  mv -f "$candidate" "$CONFIG_PATH"
fi
if reload_confirmed; then
  what=()
  [[ "$config_changed" == true ]] && what+=("$CONFIG_PATH (job '$JOB_NAME', rule_files)")
  [[ "$rules_changed" == true ]] && what+=("$RULES_FILE")
  say "updated ${what[*]}; Prometheus reloaded"
  exit 0
fi
[[ "$config_changed" == true ]] && mv -f "$backup" "$CONFIG_PATH"
put_back_rules
systemctl reload "$SERVICE" || true
die "Prometheus did not confirm a successful reload within 30 s; $CONFIG_PATH and $RULES_FILE were put back as they were" \
  "read journalctl -u $SERVICE on the monitoring host, fix what it names, then run again"
