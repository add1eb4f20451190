#!/usr/bin/env bash
# Removes the runner's registration from GitHub and its local registration files.
# Uses the REST API with the credential from stdin, retrying while GitHub reports the runner busy.
# Idempotent: a runner GitHub no longer knows counts as removed.
# Inputs: RUNNER_NAME RUNNER_DIR API_URL SCOPE_PATH
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${API_URL:?}" "${SCOPE_PATH:?}"
# @include lib.sh
read_secret

runner_file="$RUNNER_DIR/.runner"
id=""
[[ -f "$runner_file" ]] && id=$(runner_field "$runner_file" agentId)
if [[ -z "$id" ]]; then
  github_api GET "$SCOPE_PATH/actions/runners?name=$RUNNER_NAME&per_page=100"
  [[ "$API_STATUS" == 200 ]] || die "$RUNNER_NAME: listing runners failed ($API_STATUS): $API_BODY"
  id=$(printf '%s' "$API_BODY" | tr -d '\n' |
    sed -n 's/.*"runners"[[:space:]]*:[[:space:]]*\[[[:space:]]*{[[:space:]]*"id"[[:space:]]*:[[:space:]]*\([0-9]*\).*/\1/p')
fi

if [[ -n "$id" ]]; then
  for attempt in $(seq 1 60); do
    github_api DELETE "$SCOPE_PATH/actions/runners/$id"
    case "$API_STATUS" in
      204 | 404) break ;;
      422) say "$RUNNER_NAME: runner $id is busy; retrying ($attempt/60)"; sleep 5 ;;
      *) die "$RUNNER_NAME: removing runner $id failed ($API_STATUS): $API_BODY" ;;
    esac
  done
  [[ "$API_STATUS" == 204 || "$API_STATUS" == 404 ]] || die "$RUNNER_NAME: runner $id stayed busy for 5 minutes"
  say "$RUNNER_NAME: runner $id removed from GitHub"
else
  say "$RUNNER_NAME: no registration found on GitHub"
fi
rm -f -- "$runner_file" "$RUNNER_DIR/.credentials" "$RUNNER_DIR/.credentials_rsaparams"
