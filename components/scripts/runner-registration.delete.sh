#!/usr/bin/env bash
# Removes the runner's registration from GitHub and every configured-state file of the runner.
# Root calls the REST API with the credential from stdin (the same DELETE `config.sh remove` makes
# in the runner-admin flow), so no token reaches the runner user; this works for either flow.
# A busy runner is waited for (GitHub refuses to delete it); the service step's delete has already
# waited for its job and deregistered it in the usual order, so this is the fallback.
# Idempotent: a runner GitHub no longer knows counts as removed.
# Inputs: RUNNER_NAME RUNNER_DIR API_URL SCOPE_PATH
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${API_URL:?}" "${SCOPE_PATH:?}"
# @include lib.sh
read_secret

id=""
for state in "$RUNNER_DIR/.runner_migrated" "$RUNNER_DIR/.runner"; do
  [[ -z "$id" && -f "$state" ]] && id=$(runner_field "$state" agentId)
done
if [[ -z "$id" ]]; then
  github_api GET "$SCOPE_PATH/actions/runners?name=$RUNNER_NAME&per_page=100"
  [[ "$API_STATUS" == 200 ]] || github_fail "listing runners named $RUNNER_NAME"
  id=$(printf '%s' "$API_BODY" | tr -d '\n' |
    sed -n 's/.*"runners"[[:space:]]*:[[:space:]]*\[[[:space:]]*{[[:space:]]*"id"[[:space:]]*:[[:space:]]*\([0-9]*\).*/\1/p')
fi

if [[ -n "$id" ]]; then
  for attempt in $(seq 1 60); do
    github_api DELETE "$SCOPE_PATH/actions/runners/$id"
    case "$API_STATUS" in
      204 | 404) break ;;
      422) say "$RUNNER_NAME: runner $id is busy; retrying ($attempt/60)"; sleep 5 ;;
      *) github_fail "removing runner $id" ;;
    esac
  done
  [[ "$API_STATUS" == 204 || "$API_STATUS" == 404 ]] ||
    die "runner $id stayed busy for 5 minutes; nothing was removed" \
      "let its job finish (or cancel it on GitHub), then run the same pulumi command again"
  say "$RUNNER_NAME: runner $id removed from GitHub"
else
  say "$RUNNER_NAME: no registration found on GitHub"
fi
remove_runner_state "$RUNNER_DIR"
