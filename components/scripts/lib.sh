# shellcheck shell=bash
# Helpers included (by the renderer, at the '# @include lib.sh' line) into every bash script.

say() { printf 'runner-fleet: %s\n' "$*"; }
die() { printf 'runner-fleet: %s\n' "$*" >&2; exit 1; }

# write_if_changed PATH MODE CONTENT: atomic replace; returns 0 if the file changed, 1 if not.
write_if_changed() {
  local path=$1 mode=$2 content=$3
  # Both sides through $(...), so trailing newlines never count as a change.
  if [[ -f "$path" ]] && [[ "$(cat "$path")" == "$(printf '%s' "$content")" ]]; then
    return 1
  fi
  install -d -m 0755 "$(dirname "$path")"
  printf '%s\n' "$content" >"$path.runner-fleet.tmp"
  chmod "$mode" "$path.runner-fleet.tmp"
  mv -f "$path.runner-fleet.tmp" "$path"
  return 0
}

# download_verified WHO WHAT URL SHA256 FILE: downloads URL to FILE and dies, having installed
# nothing, unless its SHA-256 is SHA256.
download_verified() {
  local who=$1 what=$2 url=$3 sha256=$4 file=$5 got
  say "$who: downloading $what from $url"
  timeout 600 curl -fsSL --retry 3 --retry-delay 2 --connect-timeout 20 -o "$file" "$url"
  got=$(sha256sum "$file" | cut -d' ' -f1)
  [[ "$got" == "$sha256" ]] ||
    die "$who: checksum mismatch for $url: expected $sha256, got $got; nothing was installed"
}

# wait_for SECONDS COMMAND...: runs COMMAND about once a second until it succeeds; returns 1 if
# it did not within SECONDS tries.
wait_for() {
  local tries=$1
  shift
  for _ in $(seq 1 "$tries"); do
    "$@" && return 0
    sleep 1
  done
  return 1
}

# lock_monitoring_host LOCK_FILE: both stacks may touch the monitoring host at once; holds the
# lock (file descriptor 9) until the script exits.
lock_monitoring_host() {
  exec 9>"$1"
  timeout 300 flock 9 || die "timed out waiting for another runner-fleet deploy on this host"
}

# remove_unit UNIT_DIR UNIT: stops, disables and deletes a unit this stack wrote; returns 0 if
# there was one (the caller reloads systemd), 1 if not.
remove_unit() {
  local file="$1/$2"
  [[ -f "$file" ]] || return 1
  timeout 60 systemctl stop "$2" || true
  systemctl disable --quiet "$2" 2>/dev/null || true
  rm -f -- "$file"
}

# read_secret: the GitHub credential arrives as the first line of stdin, never in argv or env.
read_secret() {
  GITHUB_TOKEN=""
  IFS= read -r GITHUB_TOKEN || true
  [[ -n "$GITHUB_TOKEN" ]] || die "no GitHub credential on stdin"
}

# github_api METHOD PATH [JSON]: sets API_STATUS and API_BODY (globals the caller reads). The token reaches curl through a
# file descriptor, so it never appears in a process listing.
# shellcheck disable=SC2034
github_api() {
  local method=$1 path=$2 data=${3:-} body
  body=$(mktemp)
  local args=(-sS -o "$body" -w '%{http_code}' -X "$method" --connect-timeout 20 --max-time 60
    -H 'Accept: application/vnd.github+json' -H 'X-GitHub-Api-Version: 2022-11-28')
  if [[ -n "$data" ]]; then
    args+=(-H 'Content-Type: application/json' --data "$data")
  fi
  API_STATUS=$(curl "${args[@]}" -H @<(printf 'Authorization: Bearer %s\n' "$GITHUB_TOKEN") \
    "$API_URL/$path") || API_STATUS=000
  API_BODY=$(cat "$body")
  rm -f "$body"
}

# runner_field FILE KEY: a scalar from the runner's .runner JSON (it starts with a UTF-8 BOM).
runner_field() {
  sed -e '1s/^\xEF\xBB\xBF//' "$1" | tr -d '\n' |
    grep -o -i "\"$2\"[[:space:]]*:[[:space:]]*\(\"[^\"]*\"\|[0-9]*\)" | head -n1 |
    sed -e 's/^[^:]*:[[:space:]]*//' -e 's/^"//' -e 's/"$//'
}

# newest_diag_log DIR: the runner's current listener log.
newest_diag_log() {
  find "$1/_diag" -maxdepth 1 -name 'Runner_*.log' -printf '%T@ %p\n' 2>/dev/null |
    sort -n | tail -n1 | cut -d' ' -f2-
}

# runner_reports_online DIR: 0 when the runner's own log says it is connected and listening.
runner_reports_online() {
  local log last
  log=$(newest_diag_log "$1")
  [[ -n "$log" ]] || return 1
  last=$(grep -E 'Listening for Jobs|Runner reconnected|Running job:|completed with result|Runner connect error' "$log" | tail -n1)
  [[ -n "$last" && "$last" != *"Runner connect error"* ]]
}

# runner_configured DIR: 0 when the runner in DIR is configured and has credentials, as the runner
# itself decides it: since v2.323.0 `.runner` or `.runner_migrated`, and `.credentials` or
# `.credentials_migrated` (Runner.Common/ConfigurationStore.cs).
runner_configured() {
  [[ -f "$1/.runner" || -f "$1/.runner_migrated" ]] && [[ -f "$1/.credentials" || -f "$1/.credentials_migrated" ]]
}

# remove_runner_state DIR: deletes every configured-state file of actions/runner (either one of
# the original and the migrated copy makes config.sh say "already configured"), as `config.sh
# remove --local` does.
remove_runner_state() {
  local file
  for file in .runner .runner_migrated .credentials .credentials_migrated .credentials_rsaparams; do
    rm -f -- "${1:?}/$file"
  done
}

# json_string JSON KEY: the first string value of KEY in a JSON text (GitHub's token answers).
json_string() {
  printf '%s' "$1" | tr -d '\n' | grep -o "\"$2\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" | head -n1 |
    sed -e 's/^[^:]*:[[:space:]]*"//' -e 's/"$//'
}

# github_fail WHAT: dies with what GitHub answered to WHAT (API_STATUS, API_BODY) and what to do.
github_fail() {
  local message
  message=$(json_string "$API_BODY" message)
  case "$API_STATUS" in
    401 | 403)
      die "$RUNNER_NAME: GitHub refused the stack's credential ($API_STATUS ${message:-no message}) while $1." \
        "Restore a valid one: pulumi config set --secret runner-fleet:githubToken, then pulumi up" \
        "(a destroy or retirement uses the credential stored by the last successful up), then run again" ;;
    000) die "$RUNNER_NAME: GitHub's API at $API_URL did not answer while $1; check the network and run again" ;;
    *) die "$RUNNER_NAME: GitHub answered $API_STATUS (${message:-$API_BODY}) while $1" ;;
  esac
}
