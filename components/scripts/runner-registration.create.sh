#!/usr/bin/env bash
# Registers the runner with GitHub (once) and converges its labels to exactly the configured set.
# The GitHub credential comes on stdin and stays with root: root mints a one-hour registration
# token from it through the REST API (curl reads the Authorization header from a file descriptor)
# and config.sh, which runs as the runner user, gets only that token (ACTIONS_RUNNER_INPUT_TOKEN).
# The token can register a runner in this scope and nothing else, and expires within the hour;
# the credential itself is never in a process the runner user (or a job) can read. config.sh
# follows whichever registration flow GitHub answers with (runner service, or runner admin).
# Labels change in place through the REST API, as root: no re-registration, no second runner.
# Inputs: RUNNER_NAME RUNNER_DIR RUNNER_USER REGISTRATION_URL API_URL SCOPE_PATH
#         CUSTOM_LABELS (comma-separated) RUNNER_GROUP (may be empty) DISABLE_UPDATE UNIT_DIR
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${RUNNER_USER:?}" "${REGISTRATION_URL:?}" "${API_URL:?}" "${SCOPE_PATH:?}"
: "${CUSTOM_LABELS?}" "${RUNNER_GROUP?}" "${DISABLE_UPDATE:?}" "${UNIT_DIR:?}"
# @include lib.sh
read_secret

runner_file="$RUNNER_DIR/.runner"
registered=false
if runner_configured "$RUNNER_DIR"; then
  # The runner reads .runner_migrated first when it exists (Runner.cs): so does this check.
  state=$runner_file
  [[ -f "$RUNNER_DIR/.runner_migrated" ]] && state="$RUNNER_DIR/.runner_migrated"
  id=$(runner_field "$state" agentId)
  name=$(runner_field "$state" agentName)
  url=$(runner_field "$state" gitHubUrl)
  if [[ "$name" == "$RUNNER_NAME" && "${url%/}" == "$REGISTRATION_URL" && -n "$id" ]]; then
    github_api GET "$SCOPE_PATH/actions/runners/$id"
    case "$API_STATUS" in
      200) registered=true ;;
      404) say "$RUNNER_NAME: registration $id no longer exists on GitHub; registering again" ;;
      *) github_fail "checking runner $id" ;;
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
  # Stale local state (a half-finished earlier run, or a registration GitHub dropped): every
  # file that makes config.sh say "already configured" (ConfigurationStore.cs, v2.323.0 on).
  remove_runner_state "$RUNNER_DIR"
  github_api POST "$SCOPE_PATH/actions/runners/registration-token"
  [[ "$API_STATUS" == 201 ]] || github_fail "minting a registration token"
  token=$(json_string "$API_BODY" token)
  [[ -n "$token" ]] ||
    die "GitHub's registration-token answer ($API_STATUS) has no token" \
      "check that github.serverUrl/apiUrl point at GitHub (or GitHub Enterprise Server), then run again"
  args=(--unattended --replace --url "$REGISTRATION_URL" --name "$RUNNER_NAME" --work _work)
  [[ -n "$CUSTOM_LABELS" ]] && args+=(--labels "$CUSTOM_LABELS")
  [[ -n "$RUNNER_GROUP" ]] && args+=(--runnergroup "$RUNNER_GROUP")
  [[ "$DISABLE_UPDATE" == true ]] && args+=(--disableupdate)
  say "$RUNNER_NAME: registering at $REGISTRATION_URL"
  # Only the one-hour registration token reaches the runner user's processes; GITHUB_TOKEN is a
  # shell variable, never exported, so no child of this script has it in its environment.
  (cd "$RUNNER_DIR" && ACTIONS_RUNNER_INPUT_TOKEN="$token" timeout 300 \
    runuser -u "$RUNNER_USER" -- ./config.sh "${args[@]}") </dev/null
  unset token
  id=$(runner_field "$runner_file" agentId)
  [[ -n "$id" ]] ||
    die "config.sh finished but $runner_file has no agentId" \
      "read config.sh's output above and the newest $RUNNER_DIR/_diag/Runner_*.log, then run again"
  # An installed service runs the new registration (it may have stopped when GitHub dropped
  # the old one); on a first deploy the service step installs and starts it.
  if [[ -n "$unit" && -f "$UNIT_DIR/$unit" ]]; then
    systemctl start "$unit"
  fi
fi
# The runner's own credential (.credentials_rsaparams is its private key) is for the runner user
# alone; config.sh leaves .runner and .credentials readable by everyone. On every run: a run
# killed between config.sh and here leaves a registration the next run keeps as it is.
for file in .runner .credentials .credentials_rsaparams; do
  if [[ -f "$RUNNER_DIR/$file" ]]; then chmod 0600 "$RUNNER_DIR/$file"; fi
done

if [[ -n "$CUSTOM_LABELS" ]]; then
  labels_json="\"${CUSTOM_LABELS//,/\",\"}\""
  github_api PUT "$SCOPE_PATH/actions/runners/$id/labels" "{\"labels\":[$labels_json]}"
else
  github_api DELETE "$SCOPE_PATH/actions/runners/$id/labels"
fi
[[ "$API_STATUS" == 200 ]] || github_fail "setting the labels of runner $id"
say "$RUNNER_NAME: registered as runner $id with custom labels [${CUSTOM_LABELS}]"
