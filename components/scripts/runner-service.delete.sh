#!/usr/bin/env bash
# Stops and uninstalls the runner's service and forgets it in the metrics collector. Only a unit
# that runs this runner directory is touched: on GitHub Enterprise Server another stack's runner
# of the same name has the same unit name.
# Inputs: RUNNER_NAME RUNNER_DIR UNIT_DIR UNIT METRICS_CONF SPOOL_DIR HOOKS_DIR
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${UNIT_DIR:?}" "${UNIT:?}" "${METRICS_CONF:?}" "${SPOOL_DIR:?}" "${HOOKS_DIR:?}"
# @include lib.sh

rm -f -- "$METRICS_CONF"
marker="$RUNNER_DIR/.service"
unit=$UNIT
if [[ -s "$marker" ]]; then unit=$(<"$marker"); fi
unit_file="$UNIT_DIR/$unit"
owner=$(unit_runner_dir "$unit_file")
reload=false
if [[ -f "$unit_file" && "$owner" == "$RUNNER_DIR" ]]; then
  timeout 330 systemctl stop "$unit" || true
  if [[ -x "$RUNNER_DIR/svc.sh" ]]; then
    (cd "$RUNNER_DIR" && timeout 120 ./svc.sh uninstall) </dev/null || true
  fi
  if [[ -f "$unit_file" ]]; then
    systemctl disable --quiet "$unit" || true
    rm -f -- "$unit_file"
  fi
  reload=true
  say "$RUNNER_NAME: service $unit removed"
elif [[ -f "$unit_file" ]]; then
  say "$RUNNER_NAME: leaving service $unit alone: it runs the runner in ${owner:-another directory}, not $RUNNER_DIR"
fi
# The drop-in goes with the unit (never while another directory's unit of that name is there).
if [[ ! -f "$unit_file" && -d "$unit_file.d" ]]; then
  dropin=$(runner_unit_dropin "$unit_file")
  rm -f -- "$dropin" "$dropin.runner-fleet.tmp"
  rmdir --ignore-fail-on-non-empty -- "$unit_file.d"
  reload=true
fi
if [[ "$reload" == true ]]; then
  systemctl daemon-reload
  # A runner that exited on its own after retirement leaves a "failed" record behind its
  # removed unit; systemd keeps it until told to forget it.
  systemctl reset-failed "$unit" 2>/dev/null || true
fi
rm -f -- "$marker"
# The runner's job hooks and the records they left that the collector has not read.
rm -rf -- "$SPOOL_DIR" "$HOOKS_DIR"
# Their parents once empty, and the collector's directories of this stack: the collector's delete
# removes them too, but it runs in parallel with this one (or, after an interrupted destroy, in
# an earlier run), so whichever comes last finds them empty.
rmdir --ignore-fail-on-non-empty -- "$(dirname "$HOOKS_DIR")" "$(dirname "$SPOOL_DIR")" \
  "$(dirname "$METRICS_CONF")" "$(dirname "$(dirname "$METRICS_CONF")")" 2>/dev/null || true
