# shellcheck shell=bash
# Helpers included (by the renderer, at the '# @include lib.sh' line) into every bash script.

say() { printf 'runner-fleet: %s\n' "$*"; }

# die CAUSE ACTION [DETAIL]: how every failure a script foresees ends (README "When a step
# fails"). DETAIL, another tool's own words (promtool's output, a block to add by hand), goes to
# stderr first; the last line the step prints is always the one failure_line writes:
#   runner-fleet: FAILED on HOST, step STEP: CAUSE. To fix: ACTION
die() {
  if [[ -n "${3:-}" ]]; then printf '%s\n' "$3" >&2; fi
  failure_line "${1:-}" "${2:-}" >&2
  exit 1
}

# failure_line CAUSE ACTION: the one-line format, defined here only. HOST is the stack's name
# for the machine (HOST_NAME or HOST) when the step has it, else the machine's hostname; STEP is the
# script ($0, as shell.command runs it) and the runner it acts for. Newlines become spaces.
failure_line() {
  local cause=${1:-} action=${2:-} step=${0##*/} host=${HOST_NAME:-${HOST:-}}
  step=${step%.sh}
  if [[ -n "${RUNNER_NAME:-}" ]]; then step+=" (runner $RUNNER_NAME)"; fi
  if [[ -z "$host" ]]; then host=$(uname -n 2>/dev/null || echo 'this host'); fi
  cause=${cause//$'\n'/ }
  cause=${cause%.}
  action=${action//$'\n'/ }
  action=${action%.}
  printf 'runner-fleet: FAILED on %s, step %s: %s. To fix: %s.\n' "$host" "$step" "${cause:-unknown}" \
    "${action:-read the lines above, fix what they name, then run the same pulumi command again}"
}

# Failures nobody foresaw (a command under `set -e` failing) end with the same line, naming the
# command and its exit status (124: killed by its `timeout`). errtrace (-E) lets the trap see a
# failure inside a function too; it fires exactly where `set -e` ends the script (never for a
# command tested by if, ||, && or inside a command substitution, where -e does not apply).
on_unforeseen_failure() {
  local status=$1 line=$2 command=$3 what
  [[ $- == *e* ]] || return 0
  what="\`${command:0:160}\` failed with exit status $status at line $line"
  if [[ "$status" == 124 ]]; then what="\`${command:0:160}\` timed out (line $line)"; fi
  failure_line "$what" "read the lines above, fix what they name, then run the same pulumi command again" >&2
}
set -E
trap 'on_unforeseen_failure $? $LINENO "$BASH_COMMAND"' ERR

# write_if_changed PATH MODE CONTENT: atomic replace; returns 0 if the file changed, 1 if not.
write_if_changed() {
  local path=$1 mode=$2 content=$3
  # Both sides through $(...), so trailing newlines never count as a change.
  if [[ -f "$path" ]] && [[ "$(cat "$path")" == "$(printf '%s' "$content")" ]]; then
    return 1
  fi
  # Callers test this function's status, which turns `set -e` off inside it: the steps are
  # chained, and a failed one removes the temporary file and fails the script.
  if ! { install -d -m 0755 "$(dirname "$path")" &&
    printf '%s\n' "$content" >"$path.runner-fleet.tmp" &&
    chmod "$mode" "$path.runner-fleet.tmp" &&
    mv -f "$path.runner-fleet.tmp" "$path"; }; then
    rm -f -- "$path.runner-fleet.tmp"
    die "could not write $path" "check that $(dirname "$path") is writable on that host (disk, mount, permissions), then run the same pulumi command again"
  fi
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
    die "$who: checksum mismatch for $url: expected $sha256, got $got; nothing was installed" \
      "check the version and sha256 in the stack config against the release's published checksums (a changed file on the server is a reason to stop)"
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
  timeout 300 flock 9 ||
    die "timed out after 300 s waiting for another runner-fleet deploy on this host (lock $1)" \
      "let the other deploy finish (or end it if it hangs: fuser $1 shows its process), then run again"
}

# remove_unit UNIT_DIR UNIT: stops, disables and deletes a unit this stack wrote; returns 0 if
# there was one (the caller reloads systemd), 1 if not.
# A unit that does not stop keeps its file (removing it would leave the unit running, or failed,
# with no file a later run could find), so the next run stops it again.
remove_unit() {
  local file="$1/$2"
  if [[ ! -f "$file" ]]; then
    # Gone already (a run stopped after removing it): forget a failed record systemd may keep.
    systemctl reset-failed "$2" 2>/dev/null || true
    return 1
  fi
  timeout 60 systemctl stop "$2" ||
    die "could not stop $2 (its file $file stays, so the next run stops it again)" \
      "see journalctl -u $2 for why it does not stop, then run the same pulumi command again"
  systemctl disable --quiet "$2" 2>/dev/null || true
  # Callers test this function's status (`if remove_unit …`), which turns `set -e` off inside it:
  # every step that matters checks its own result.
  rm -f -- "$file" ||
    die "could not remove $file" "check that $1 is writable on that host (disk, mount, permissions), then run the same pulumi command again"
  systemctl reset-failed "$2" 2>/dev/null || true
}

# read_secret: the GitHub credential arrives as the first line of stdin, never in argv or env.
read_secret() {
  GITHUB_TOKEN=""
  IFS= read -r GITHUB_TOKEN || true
  [[ -n "$GITHUB_TOKEN" ]] ||
    die "no GitHub credential arrived on stdin" \
      "set it (pulumi config set --secret runner-fleet:githubToken TOKEN), then run again"
}

# github_api METHOD PATH [JSON]: sets API_STATUS and API_BODY (globals the caller reads). The token reaches curl through a
# file descriptor, so it never appears in a process listing.
# The body and the status come back on stdout (status last), so a kill leaves no temporary file.
# shellcheck disable=SC2034
github_api() {
  local method=$1 path=$2 data=${3:-} out
  local args=(-sS -w '\n%{http_code}' -X "$method" --connect-timeout 20 --max-time 60
    -H 'Accept: application/vnd.github+json' -H 'X-GitHub-Api-Version: 2022-11-28')
  if [[ -n "$data" ]]; then
    args+=(-H 'Content-Type: application/json' --data "$data")
  fi
  if out=$(curl "${args[@]}" -H @<(printf 'Authorization: Bearer %s\n' "$GITHUB_TOKEN") "$API_URL/$path"); then
    API_STATUS=${out##*$'\n'}
  else
    API_STATUS=000
  fi
  API_BODY=${out%$'\n'*}
  if [[ "$API_BODY" == "$out" ]]; then API_BODY=""; fi
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

# Runner log lines that say what the listener's session is doing (Runner.cs, MessageListener.cs,
# JobDispatcher.cs): the last one of them, across every log page of the current listener, is the
# runner's own view of its state. "Listening for Jobs" is written once per session and the log
# rolls to a new page every RUNNER_LOGSIZE MB, so no single page is enough.
runner_online_events='Listening for Jobs|Runner reconnected|Running job:|completed with result'
runner_offline_events='Runner connect error|Exiting\.\.\.|no longer exists on the server|Failed to create (a )?session|A session for this runner already exists'

# unit_pids UNIT COMM: the PIDs of UNIT's processes (its main process and every descendant,
# from /proc) whose kernel name is COMM, one a line; nothing when the unit has no main process.
unit_pids() {
  local main f stat pid rest ppid
  main=$(systemctl show -p MainPID --value "$1" 2>/dev/null) || return 0
  [[ "$main" =~ ^[1-9][0-9]*$ ]] || return 0
  local -A parent=() comm=()
  for f in /proc/[0-9]*/stat; do
    stat=$(cat -- "$f" 2>/dev/null) || continue
    pid=${stat%% *}
    rest=${stat##*) }
    read -r _ ppid _ <<<"$rest"
    parent[$pid]=$ppid
    stat=${stat#* (}
    comm[$pid]=${stat%) *}
  done
  local -a queue=("$main")
  local -A seen=(["$main"]=1)
  while ((${#queue[@]})); do
    pid=${queue[0]}
    queue=("${queue[@]:1}")
    if [[ "${comm[$pid]:-}" == "$2" ]]; then echo "$pid"; fi
    for f in "${!parent[@]}"; do
      if [[ "${parent[$f]}" == "$pid" && -z "${seen[$f]:-}" ]]; then
        seen[$f]=1
        queue+=("$f")
      fi
    done
  done
}

# runner_last_event DIR [SINCE]: the newest session event in DIR's _diag/Runner_*.log pages
# (pages last written at or after the epoch second SINCE), reading pages newest first.
runner_last_event() {
  local since=${2:-0} page last
  local -a pages=()
  mapfile -t pages < <(find "$1/_diag" -maxdepth 1 -name 'Runner_*.log' -newermt "@$since" 2>/dev/null | sort -r)
  for page in "${pages[@]}"; do
    last=$(grep -a -o -E "$runner_online_events|$runner_offline_events" "$page" | tail -n1 || true)
    if [[ -n "$last" ]]; then
      printf '%s\n' "$last"
      return 0
    fi
  done
}

# runner_listener_since UNIT: the start (epoch seconds, minus 2 for rounding) of the newest
# Runner.Listener in UNIT; fails when the unit has none (the listener died or never started).
runner_listener_since() {
  local pid stat hz up started newest=""
  local -a fields
  hz=$(getconf CLK_TCK)
  for pid in $(unit_pids "$1" Runner.Listener); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    read -r -a fields <<<"${stat##*) }"
    started=$((fields[19] / hz)) # proc(5) field 22, starttime: clock ticks after boot
    if [[ -z "$newest" || "$started" -gt "$newest" ]]; then newest=$started; fi
  done
  [[ -n "$newest" ]] || return 1
  read -r up _ </proc/uptime
  echo $(($(date +%s) - ${up%.*} + newest - 2))
}

# runner_reports_online DIR [UNIT]: 0 when the runner says it is connected and listening. With
# UNIT: a Runner.Listener runs in the unit and the last event its log pages hold says so (older
# listeners' pages and the service's earlier runs do not count); a listener up for over an hour
# whose pages hold no event at all had its "Listening for Jobs" page deleted by the runner's log
# retention (RUNNER_LOGRETENTION days after the page rolled) and said nothing wrong since.
# Without UNIT: the last event of all of DIR's pages.
runner_reports_online() {
  local since=0 last
  if [[ -n "${2:-}" ]]; then
    since=$(runner_listener_since "$2") || return 1
  fi
  last=$(runner_last_event "$1" "$since")
  if [[ -z "$last" && -n "${2:-}" ]]; then
    (($(date +%s) - since > 3600))
    return
  fi
  [[ -n "$last" ]] && [[ "$last" =~ ^($runner_online_events)$ ]]
}

# runner_reports_busy DIR [UNIT]: 0 when the runner has a job in progress. With UNIT: a
# Runner.Worker (the per-job process) runs in the unit; without: the last event says so.
runner_reports_busy() {
  if [[ -n "${2:-}" ]]; then
    [[ -n "$(unit_pids "$2" Runner.Worker)" ]]
    return
  fi
  [[ "$(runner_last_event "$1")" == "Running job:" ]]
}

# unit_runner_dir UNIT_FILE: the runner directory a runner unit belongs to: its WorkingDirectory=,
# else the directory of its ExecStart= program; empty when there is no such file or setting.
unit_runner_dir() {
  local file=$1 dir=""
  [[ -f "$file" ]] || return 0
  dir=$(sed -n 's/^[[:space:]]*WorkingDirectory=[[:space:]]*//p' "$file" | tail -n1)
  if [[ -z "$dir" ]]; then
    dir=$(sed -n 's/^[[:space:]]*ExecStart=[-@:+!]*//p' "$file" | tail -n1)
    dir=${dir%% *}
    if [[ "$dir" == */* ]]; then dir=${dir%/*}; else dir=""; fi
  fi
  printf '%s' "${dir%/}"
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
      die "GitHub refused the stack's credential ($API_STATUS ${message:-no message}) while $1" \
        "restore a valid credential: pulumi config set --secret runner-fleet:githubToken TOKEN, then pulumi up (a destroy or retirement uses the credential stored by the last successful up), then run again" ;;
    000)
      die "GitHub's API at $API_URL did not answer while $1" \
        "check that this host reaches $API_URL (DNS, proxy, firewall), then run again" ;;
    *)
      die "GitHub answered $API_STATUS (${message:-$API_BODY}) while $1" \
        "if GitHub's answer names a problem, fix it; else wait for GitHub (githubstatus.com) and run again" ;;
  esac
}

# The runner unit's drop-in, beside the unit svc.sh writes (runner-service.create.sh writes it,
# runner-service.delete.sh removes it). svc.sh's unit has KillMode=process, TimeoutStopSec=5min
# and no Restart= (actions.runner.service.template): a dead service host stays down and a stop
# leaves a job's processes behind.
runner_unit_dropin() { printf '%s.d/runner-fleet.conf' "$1"; } # runner_unit_dropin UNIT_FILE
runner_unit_dropin_content() {
  cat <<'DROPIN'
# Written by runner-fleet: how the runner's service restarts and stops.
[Service]
# A service host that dies (crash, OOM kill, killed by hand) is started again. A runner that ends
# its own service (registration deleted, session conflict: exit 0 from RunnerService) is not.
Restart=on-failure
RestartSec=15s
# SIGTERM reaches runsvc.sh only, which the runner turns into an orderly end of the session and
# of a job in progress (RunnerService gives the listener 30 s, then kills it); whatever is left
# once runsvc.sh has exited, a job's processes included, is killed (SIGKILL to the whole unit).
KillMode=mixed
KillSignal=SIGTERM
# The whole stop, a job in progress included, is bounded: at 60 s everything left is killed.
TimeoutStopSec=60s
DROPIN
}
