#!/usr/bin/env bash
# Installs and starts the runner's systemd service (svc.sh) with runner-fleet's restart and stop
# behaviour (a drop-in), records the runner for the metrics collector, and waits until the runner
# itself reports that it is listening for jobs. Converges after a kill at any point: svc.sh writes
# the unit, then copies runsvc.sh, enables the unit and writes the `.service` marker last, so a
# unit of this directory without the marker is an install to redo.
# Job hooks (monitoring/METRICS.md §3): HOOK_SCRIPT installed as HOOKS_DIR/job-started.sh and
# job-completed.sh, named in the runner's .env (which the listener reads at start, so a changed
# .env restarts the service) with the runner's spool SPOOL_DIR, root-owned and sticky, to which
# only the runner user's group may add records.
# Inputs: RUNNER_NAME RUNNER_DIR RUNNER_USER UNIT_DIR UNIT METRICS_CONF METRICS_CONF_CONTENT
#         SPOOL_DIR HOOKS_DIR HOOK_SCRIPT
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${RUNNER_USER:?}" "${UNIT_DIR:?}" "${UNIT:?}" "${METRICS_CONF:?}"
: "${METRICS_CONF_CONTENT:?}" "${SPOOL_DIR:?}" "${HOOKS_DIR:?}" "${HOOK_SCRIPT:?}"
# @include lib.sh

# svc.sh names the unit and records the name in .service; that record is the truth (UNIT is
# what it is expected to be, e.g. for the stack outputs).
marker="$RUNNER_DIR/.service"
unit=$UNIT
if [[ -s "$marker" ]]; then unit=$(<"$marker"); fi
unit_file="$UNIT_DIR/$unit"
# A unit of that name for another directory is another runner's (on GitHub Enterprise Server
# every runner's unit is actions.runner._services.<name>.service, whatever its scope or stack).
owner=$(unit_runner_dir "$unit_file")
if [[ -f "$unit_file" && "$owner" != "$RUNNER_DIR" ]]; then
  die "cannot install service $unit: that unit already runs the runner in ${owner:-another directory}, not $RUNNER_DIR (another stack or runner on this host with the same runner name; on GitHub Enterprise Server every runner's unit is actions.runner._services.<name>.service)" \
    "give one of the two runners another name in its stack config, then pulumi up"
fi
if [[ -f "$unit_file" && ! -s "$marker" ]]; then
  say "$RUNNER_NAME: redoing the interrupted install of service $unit"
  (cd "$RUNNER_DIR" && timeout 120 ./svc.sh uninstall) </dev/null
fi
if [[ ! -f "$unit_file" ]]; then
  say "$RUNNER_NAME: installing service $UNIT"
  rm -f -- "$marker" # a marker whose unit is gone (an uninstall cut short)
  (cd "$RUNNER_DIR" && timeout 120 ./svc.sh install "$RUNNER_USER") </dev/null
  unit=$(<"$marker")
  unit_file="$UNIT_DIR/$unit"
fi
[[ "$unit" == "$UNIT" ]] || say "$RUNNER_NAME: note: svc.sh named the service $unit (expected $UNIT)"
dropin=$(runner_unit_dropin "$unit_file")
if write_if_changed "$dropin" 0644 "$(runner_unit_dropin_content)"; then
  say "$RUNNER_NAME: service $unit restarts on failure and stops within 60 s ($dropin)"
fi

install -d -m 0755 "$(dirname "$SPOOL_DIR")" "$HOOKS_DIR"
install -d -m 1770 -o root -g "$(id -gn "$RUNNER_USER")" "$SPOOL_DIR"
for hook in job-started.sh job-completed.sh; do
  write_if_changed "$HOOKS_DIR/$hook" 0755 "$HOOK_SCRIPT" || true
done
# The runner's .env: its other lines kept, the hook lines replaced; owner and mode kept (config.sh
# made it as the runner user). Written beside it and renamed, so a kill leaves the old or the new.
env_file="$RUNNER_DIR/.env"
env_now=$(cat -- "$env_file" 2>/dev/null || true)
env_want=$(
  grep -v -E '^(ACTIONS_RUNNER_HOOK_JOB_STARTED|ACTIONS_RUNNER_HOOK_JOB_COMPLETED|RUNNER_FLEET_JOB_SPOOL)=' \
    <<<"$env_now" | grep -v '^$' || true
  echo "ACTIONS_RUNNER_HOOK_JOB_STARTED=$HOOKS_DIR/job-started.sh"
  echo "ACTIONS_RUNNER_HOOK_JOB_COMPLETED=$HOOKS_DIR/job-completed.sh"
  echo "RUNNER_FLEET_JOB_SPOOL=$SPOOL_DIR"
)
env_changed=false
if [[ "$env_now" != "$env_want" ]]; then
  printf '%s\n' "$env_want" >"$env_file.runner-fleet.tmp"
  if [[ -f "$env_file" ]]; then
    chmod --reference="$env_file" "$env_file.runner-fleet.tmp"
  else
    chmod 0644 "$env_file.runner-fleet.tmp"
  fi
  chown "$RUNNER_USER:" "$env_file.runner-fleet.tmp"
  mv -f -- "$env_file.runner-fleet.tmp" "$env_file"
  env_changed=true
  say "$RUNNER_NAME: job hooks set in $env_file (records to $SPOOL_DIR)"
fi

# Always: a run killed between writing the drop-in and reloading must not leave systemd behind.
systemctl daemon-reload
systemctl enable --quiet "$unit"
if [[ "$env_changed" == true ]] && systemctl is-active --quiet "$unit"; then
  say "$RUNNER_NAME: restarting service $unit: the listener reads .env only at start"
  systemctl restart "$unit"
else
  systemctl start "$unit"
fi

if write_if_changed "$METRICS_CONF" 0644 "${METRICS_CONF_CONTENT/"unit=$UNIT"/"unit=$unit"}"; then
  say "$RUNNER_NAME: metrics collector configured ($METRICS_CONF)"
fi

listening() { systemctl is-active --quiet "$unit" && runner_reports_online "$RUNNER_DIR" "$unit"; }
if wait_for 120 listening; then
  say "$RUNNER_NAME: service $unit active; runner listening for jobs"
  exit 0
fi
log=$(newest_diag_log "$RUNNER_DIR")
die "the runner is not listening for jobs after 120 s (service $unit: $(systemctl is-active "$unit" || true))" \
  "read the runner's log above (${log:-no _diag/Runner_*.log yet}; journalctl -u $unit), fix what it names, then run again" \
  "$(if [[ -n "$log" ]]; then tail -n 20 "$log"; fi)"
