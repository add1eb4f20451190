#!/usr/bin/env bash
# Retires the runner before its service is stopped (it runs first in the service step's delete):
# ends its registration on GitHub the moment it is idle, so it takes no new job, waits for the job
# it is running (bounded, reported), and never stops or kills anything itself.
# GitHub refuses to delete a runner while it runs a job (422) and a runner runs one job at a time,
# so the deletion is retried every 2 s: the first one after the job ends succeeds, and from then
# on GitHub gives the runner nothing. The listener sees its registration gone, removes its local
# configuration and exits; the service step's delete then stops and uninstalls the service.
# On timeout nothing has changed: the runner keeps its registration, service and job, and the
# next run (up or destroy) tries again. The credential comes on stdin and stays with root.
# Inputs: HOST RUNNER_NAME RUNNER_DIR API_URL SCOPE_PATH RETIRE_TIMEOUT (seconds)
set -euo pipefail
: "${HOST:?}" "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${API_URL:?}" "${SCOPE_PATH:?}" "${RETIRE_TIMEOUT:?}"
# @include lib.sh
read_secret

id=""
for state in "$RUNNER_DIR/.runner_migrated" "$RUNNER_DIR/.runner"; do
  [[ -z "$id" && -f "$state" ]] && id=$(runner_field "$state" agentId)
done
if [[ -z "$id" ]]; then
  say "$RUNNER_NAME: no local registration on $HOST; nothing to retire"
  exit 0
fi

started=$SECONDS
reported=-1
while true; do
  github_api DELETE "$SCOPE_PATH/actions/runners/$id"
  waited=$((SECONDS - started))
  case "$API_STATUS" in
    204 | 404) break ;;
    422) ;;
    *) github_fail "retiring runner $id on $HOST" ;;
  esac
  if ((waited >= RETIRE_TIMEOUT)); then
    die "still running a job after ${RETIRE_TIMEOUT} s of waiting; nothing was stopped or removed (the runner keeps its registration and its job)" \
      "let the job finish, or cancel it on GitHub, then run the same pulumi command again"
  fi
  if ((reported < 0 || waited - reported >= 30)); then
    say "$RUNNER_NAME on $HOST: running a job; waiting for it to finish (${waited} s of ${RETIRE_TIMEOUT} s)"
    reported=$waited
  fi
  sleep 2
done
say "$RUNNER_NAME on $HOST: runner $id removed from GitHub after ${waited} s; it takes no new job"
