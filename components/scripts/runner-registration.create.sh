#!/usr/bin/env bash
# Registers the runner with GitHub (once) and converges its labels to exactly the configured set.
# The credential (a PAT or fine-grained token) comes on stdin; config.sh gets it through
# ACTIONS_RUNNER_INPUT_PAT and mints its own short-lived registration token, so this works the
# same on the first deploy and on a relabel months later. Labels change in place through the
# REST API: no re-registration, no second runner, no window where the old one is deleted.
# Inputs: RUNNER_NAME RUNNER_DIR RUNNER_USER REGISTRATION_URL API_URL SCOPE_PATH
#         CUSTOM_LABELS (comma-separated) RUNNER_GROUP (may be empty) DISABLE_UPDATE UNIT_DIR
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${RUNNER_USER:?}" "${REGISTRATION_URL:?}" "${API_URL:?}" "${SCOPE_PATH:?}"
: "${CUSTOM_LABELS?}" "${RUNNER_GROUP?}" "${DISABLE_UPDATE:?}" "${UNIT_DIR:?}"
# @include lib.sh
read_secret

runner_file="$RUNNER_DIR/.runner"
registered=false
if [[ -f "$runner_file" && -f "$RUNNER_DIR/.credentials" ]]; then
  id=$(runner_field "$runner_file" agentId)
  name=$(runner_field "$runner_file" agentName)
  url=$(runner_field "$runner_file" gitHubUrl)
  if [[ "$name" == "$RUNNER_NAME" && "${url%/}" == "$REGISTRATION_URL" && -n "$id" ]]; then
    github_api GET "$SCOPE_PATH/actions/runners/$id"
    case "$API_STATUS" in
      200) registered=true ;;
      404) say "$RUNNER_NAME: registration $id no longer exists on GitHub; registering again" ;;
      *) die "$RUNNER_NAME: GitHub answered $API_STATUS for runner $id: $API_BODY" ;;
    esac
  else
    say "$RUNNER_NAME: local registration is for '$name' at '$url'; registering again"
  fi
fi

if [[ "$registered" != true ]]; then
  unit=""
  [[ -f "$RUNNER_DIR/.service" ]] && unit=$(cat "$RUNNER_DIR/.service")
  if [[ -n "$unit" ]] && systemctl is-active --quiet "$unit"; then
    timeout 330 systemctl stop "$unit"
  fi
  # Stale local state (a half-finished earlier run, or a registration GitHub dropped).
  rm -f -- "$runner_file" "$RUNNER_DIR/.credentials" "$RUNNER_DIR/.credentials_rsaparams"
  args=(--unattended --replace --url "$REGISTRATION_URL" --name "$RUNNER_NAME" --work _work)
  [[ -n "$CUSTOM_LABELS" ]] && args+=(--labels "$CUSTOM_LABELS")
  [[ -n "$RUNNER_GROUP" ]] && args+=(--runnergroup "$RUNNER_GROUP")
  [[ "$DISABLE_UPDATE" == true ]] && args+=(--disableupdate)
  say "$RUNNER_NAME: registering at $REGISTRATION_URL"
  (cd "$RUNNER_DIR" && ACTIONS_RUNNER_INPUT_PAT="$GITHUB_TOKEN" timeout 300 \
    runuser -u "$RUNNER_USER" -- ./config.sh "${args[@]}") </dev/null
  id=$(runner_field "$runner_file" agentId)
  [[ -n "$id" ]] || die "$RUNNER_NAME: config.sh finished but $runner_file has no agentId"
  # An installed service runs the new registration (it may have stopped when GitHub dropped
  # the old one); on a first deploy the service step installs and starts it.
  if [[ -n "$unit" && -f "$UNIT_DIR/$unit" ]]; then
    systemctl start "$unit"
  fi
fi

if [[ -n "$CUSTOM_LABELS" ]]; then
  labels_json="\"${CUSTOM_LABELS//,/\",\"}\""
  github_api PUT "$SCOPE_PATH/actions/runners/$id/labels" "{\"labels\":[$labels_json]}"
else
  github_api DELETE "$SCOPE_PATH/actions/runners/$id/labels"
fi
[[ "$API_STATUS" == 200 ]] || die "$RUNNER_NAME: setting labels failed ($API_STATUS): $API_BODY"
say "$RUNNER_NAME: registered as runner $id with custom labels [${CUSTOM_LABELS}]"
