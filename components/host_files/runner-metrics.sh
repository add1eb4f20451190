#!/usr/bin/env bash
# Runner metrics for the node exporter's textfile collector, run every 15 s by a systemd timer.
# One gauge per runner and metric, so a runner whose service vanished still shows up as 0.
# "online": a Runner.Listener runs in the runner's unit and the last session event across the log
# pages it wrote says connected and listening (the log rolls every RUNNER_LOGSIZE MB and
# "Listening for Jobs" is written once per session, so no single page is enough); "busy": a
# Runner.Worker, the runner's per-job process, runs in the unit. Both survive log roll-over and
# listener restarts (lib.sh runner_reports_online / runner_reports_busy).
# "version deprecated": the newest log page of the running listener carries the message GitHub's
# runner service sends a runner too old to take jobs ("Runner version v2.296.2 is deprecated and
# cannot receive messages.": the AccessDeniedException that Runner.Listener/Program.cs prints as
# "An error occurred: <message>" and traces to _diag).
# Job wait and duration (monitoring/METRICS.md §3): the job hooks, which run as the runner user,
# leave one record per job event in SPOOL_DIR/<runner>/; this collector is the only reader. It
# trusts nothing in a record: it reads at most 1 KiB without following links or blocking, parses
# a flat JSON object of known keys, checks the event, the timestamps' order and age, and that the
# job's event was not counted before; the runner comes from the directory, never from the record.
# Accepted records feed the histograms, everything else one counter per reason; each record is
# deleted once its outcome is in the state file. The histogram counts live in a root-owned state
# file beside the textfile (STATE: METRICS_FILE without .prom, plus .state).
# Installed by exporter-runner-metrics.create.sh; the unit (runner-metrics.service.tmpl) passes
# the arguments. Arguments: CONF_DIR METRICS_FILE [SPOOL_DIR]
set -euo pipefail
export LC_ALL=C # byte semantics for sizes and patterns
# @include lib.sh
conf_dir=${1:?conf dir}
out=${2:?metrics file}
spool_dir=${3:-}
state_file="${out%.prom}.state"

escape() { local v=${1//\\/\\\\}; v=${v//\"/\\\"}; printf '%s' "${v//$'\n'/\\n}"; }

# Histogram buckets (upper bounds in seconds, +Inf implied), exactly as METRICS.md §1 lists them.
queue_buckets=(5 15 30 60 120 300 600 1800 3600)
duration_buckets=(30 60 120 300 600 1200 1800 3600 7200 21600)
outcomes=(succeeded failed cancelled unknown)
reasons=(malformed too_large stale duplicate spool_full)
max_record_bytes=1024
max_records=1000
max_per_run=200 # judged per runner and collection (the rest waits): bounds a collection's time
max_age_ms=$((24 * 3600 * 1000))
max_future_ms=$((300 * 1000)) # clock skew a record may have ahead of this host
max_seen=20000                 # per runner: (job_id, event) pairs remembered for de-duplication

declare -a names=() active=() online=() busy=() info=() deprecated=()
shopt -s nullglob
for conf in "$conf_dir"/*.conf; do
  name="" dir="" unit="" version="" labels=""
  while IFS='=' read -r key value; do
    case "$key" in
      name) name=$value ;; dir) dir=$value ;; unit) unit=$value ;;
      version) version=$value ;; labels) labels=$value ;;
    esac
  done <"$conf"
  [[ -n "$name" && -n "$dir" && -n "$unit" ]] || continue
  a=0 o=0 b=0 dep=0
  if systemctl is-active --quiet "$unit"; then
    a=1
    if runner_reports_online "$dir" "$unit"; then o=1; fi
    if runner_reports_busy "$dir" "$unit"; then b=1; fi
    if since=$(runner_listener_since "$unit"); then
      log=$(newest_diag_log "$dir")
      if [[ -n "$log" && $(stat -c %Y -- "$log") -ge $since ]] &&
        grep -a -q -E 'Runner version v[0-9][0-9A-Za-z.+-]* is deprecated' -- "$log"; then
        dep=1
      fi
    fi
  fi
  names+=("$name") active+=("$a") online+=("$o") busy+=("$b") deprecated+=("$dep")
  n=$(escape "$name")
  info+=("runner=\"$n\",version=\"$(escape "$version")\",labels=\"$(escape "$labels")\",unit=\"$(escape "$unit")\"")
done

# --- state: histogram counts, rejections, counted job events --------------------------------
declare -A hist=() rejected=() seen=()
# hist[q|RUNNER] / hist[d|RUNNER|OUTCOME] = "SUM_MS COUNT B1 B2 ..." (cumulative bucket counts)
# rejected[RUNNER|REASON] = N; seen[RUNNER|JOB_ID|EVENT] = epoch ms of the event
if [[ -f "$state_file" && ! -L "$state_file" ]]; then
  while read -r kind a b c rest; do
    case "$kind" in
      q) hist["q|$a"]="$b $c $rest" ;;
      d) hist["d|$a|$b"]="$c $rest" ;;
      r) rejected["$a|$b"]=$c ;;
      s) seen["$a|$b|$c"]=$rest ;;
    esac
  done <"$state_file"
fi
zeros() { local z="0 0" _; for _ in "${@}"; do z+=" 0"; done; printf '%s' "$z"; }
for n in "${names[@]}"; do
  [[ -n "${hist["q|$n"]:-}" ]] || hist["q|$n"]=$(zeros "${queue_buckets[@]}")
  for oc in "${outcomes[@]}"; do
    [[ -n "${hist["d|$n|$oc"]:-}" ]] || hist["d|$n|$oc"]=$(zeros "${duration_buckets[@]}")
  done
  for r in "${reasons[@]}"; do
    [[ -n "${rejected["$n|$r"]:-}" ]] || rejected["$n|$r"]=0
  done
done

# observe KEY MS BUCKET...: one observation of MS milliseconds into hist[KEY].
observe() {
  local key=$1 ms=$2 i
  shift 2
  local -a h
  read -r -a h <<<"${hist[$key]}"
  h[0]=$((h[0] + ms)) h[1]=$((h[1] + 1))
  i=2
  for le in "$@"; do
    if ((ms <= le * 1000)); then h[i]=$((h[i] + 1)); fi
    i=$((i + 1))
  done
  hist[$key]="${h[*]}"
}

# iso_ms TEXT: epoch milliseconds of an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.fff] then Z or
# +HH:MM/-HH:MM; GitHub writes Z) in $iso_ms_value; fails for anything else. Pure arithmetic
# (days from the civil date), no date(1).
iso_ms() {
  local re='^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.([0-9]{1,9}))?(Z|([+-])([0-9]{2}):([0-9]{2}))$'
  [[ "$1" =~ $re ]] || return 1
  local offset=0
  if [[ "${BASH_REMATCH[9]}" != Z ]]; then
    ((10#${BASH_REMATCH[11]} <= 23 && 10#${BASH_REMATCH[12]} <= 59)) || return 1
    offset=$(((10#${BASH_REMATCH[11]} * 60 + 10#${BASH_REMATCH[12]}) * 60 * 1000))
    [[ "${BASH_REMATCH[10]}" == + ]] || offset=$((-offset))
  fi
  local y=$((10#${BASH_REMATCH[1]})) m=$((10#${BASH_REMATCH[2]})) d=$((10#${BASH_REMATCH[3]}))
  local hh=$((10#${BASH_REMATCH[4]})) mm=$((10#${BASH_REMATCH[5]})) ss=$((10#${BASH_REMATCH[6]}))
  local frac=${BASH_REMATCH[8]:-0}
  frac=${frac}000
  frac=$((10#${frac:0:3}))
  ((y >= 1970 && m >= 1 && m <= 12 && d >= 1 && d <= 31 && hh <= 23 && mm <= 59 && ss <= 60)) || return 1
  local yy=$((m <= 2 ? y - 1 : y))
  local era=$((yy / 400)) yoe=$((yy % 400))
  local doy=$(((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1))
  local doe=$((yoe * 365 + yoe / 4 - yoe / 100 + doy))
  local days=$((era * 146097 + doe - 719468))
  iso_ms_value=$((((days * 24 + hh) * 60 + mm) * 60 * 1000 + ss * 1000 + frac - offset))
}

# parse_record TEXT: the keys and values of a flat JSON object into rec[]; fails unless every
# member is a known key with a short plain string, a small integer or null, each key once.
declare -A rec=()
parse_record() {
  rec=()
  local text=$1 body part
  local member='^[[:space:]]*"([a-z_]{1,16})"[[:space:]]*:[[:space:]]*("([A-Za-z0-9:._+-]{0,40})"|([0-9]{1,15})|null)[[:space:]]*$'
  [[ "$text" =~ ^[[:space:]]*\{(.*)\}[[:space:]]*$ ]] || return 1
  body=${BASH_REMATCH[1]}
  [[ "$body" == *[![:space:]]* && ! "$body" =~ ,[[:space:]]*$ && "$body" != *$'\1'* ]] || return 1
  local -a parts
  IFS=',' read -r -d '' -a parts < <(printf '%s\0' "$body") || true
  for part in "${parts[@]}"; do
    [[ "$part" =~ $member ]] || return 1
    local key=${BASH_REMATCH[1]}
    case "$key" in
      event | job_id | run_id | run_attempt | created_at | started_at | completed_at | outcome) ;;
      *) return 1 ;;
    esac
    [[ -z "${rec[$key]+x}" ]] || return 1
    if [[ -n "${BASH_REMATCH[4]}" ]]; then
      rec[$key]=$((10#${BASH_REMATCH[4]}))
    elif [[ "${BASH_REMATCH[2]}" == null ]]; then
      rec[$key]=""
    else
      rec[$key]=${BASH_REMATCH[3]}
    fi
  done
}

now_ms=$(date +%s%3N)

# judge RUNNER FILE_NAME: the outcome of one record in $verdict (accepted or a reason); accepted
# records are observed into the histograms.
judge() {
  local runner=$1 file=$2 text size
  verdict=malformed
  [[ "$file" =~ ^[0-9]{1,15}-(started|completed)-[A-Za-z0-9]{1,32}\.json$ ]] || return 0
  local named=${BASH_REMATCH[1]}
  # Read without following a link and without blocking on a FIFO: at most one byte past the cap.
  # The x keeps trailing newlines in the count; a NUL byte makes the record malformed.
  text=$(dd if="$spool/$file" iflag=nofollow,nonblock,fullblock bs=$((max_record_bytes + 1)) count=1 \
    status=none 2>/dev/null | tr '\0' '\1' && echo x) || return 0
  text=${text%x}
  [[ -f "$spool/$file" && ! -L "$spool/$file" ]] || return 0
  size=${#text}
  if ((size > max_record_bytes)); then
    verdict=too_large
    return 0
  fi
  parse_record "$text" || return 0
  [[ "${rec[event]:-}" == "$named" && -n "${rec[job_id]:-}" ]] || return 0
  local created started completed event_ms
  iso_ms "${rec[started_at]:-}" || return 0
  started=$iso_ms_value
  if [[ "$named" == started ]]; then
    iso_ms "${rec[created_at]:-}" || return 0
    created=$iso_ms_value
    ((created <= started)) || return 0
    event_ms=$started
  else
    iso_ms "${rec[completed_at]:-}" || return 0
    completed=$iso_ms_value
    ((started <= completed)) || return 0
    case "${rec[outcome]:-}" in succeeded | failed | cancelled | unknown) ;; *) return 0 ;; esac
    event_ms=$completed
  fi
  ((event_ms <= now_ms + max_future_ms)) || return 0
  if ((now_ms - event_ms > max_age_ms)); then
    verdict=stale
    return 0
  fi
  local key="$runner|${rec[job_id]}|$named"
  if [[ -n "${seen[$key]:-}" ]]; then
    verdict=duplicate
    return 0
  fi
  seen[$key]=$event_ms
  if [[ "$named" == started ]]; then
    observe "q|$runner" $((started - created)) "${queue_buckets[@]}"
  else
    observe "d|$runner|${rec[outcome]}" $((completed - started)) "${duration_buckets[@]}"
  fi
  verdict=accepted
}

declare -a consumed=()
if [[ -n "$spool_dir" && -d "$spool_dir" && ! -L "$spool_dir" ]]; then
  for n in "${names[@]}"; do
    spool="$spool_dir/$n"
    # Only the directory the program made: a real directory, owned by root (the runner user may
    # add entries to it, never replace it).
    [[ -d "$spool" && ! -L "$spool" && "$(stat -c %u -- "$spool")" == 0 ]] || continue
    mapfile -d '' -t entries < <(find "$spool" -mindepth 1 -maxdepth 1 -printf '%f\0' | sort -z)
    count=0 judged=0
    for file in "${entries[@]}"; do
      count=$((count + 1))
      if ((count > max_records)); then
        verdict=spool_full
      elif ((judged >= max_per_run)); then
        continue
      elif [[ "$file" == .* ]] && (($(date +%s) - $(stat -c %Y -- "$spool/$file" 2>/dev/null || echo 0) < 60)); then
        continue # a record the hook is writing (it renames it into place)
      elif [[ "$file" == dropped ]]; then
        # The hook's note that it dropped records at a full spool: counts once per collection.
        verdict=spool_full
      else
        judged=$((judged + 1))
        judge "$n" "$file"
      fi
      [[ "$verdict" == accepted ]] || rejected["$n|$verdict"]=$((${rejected["$n|$verdict"]:-0} + 1))
      consumed+=("$spool/$file")
    done
  done
fi

# Forget counted events once no record of them can be accepted any more (older than the age
# limit), and beyond max_seen per runner, the oldest first.
declare -A per_runner=()
for key in "${!seen[@]}"; do
  if ((now_ms - ${seen[$key]} > max_age_ms + 3600 * 1000)); then
    unset 'seen[$key]'
  else
    per_runner[${key%%|*}]=$((${per_runner[${key%%|*}]:-0} + 1))
  fi
done
for n in "${!per_runner[@]}"; do
  excess=$((per_runner[$n] - max_seen))
  ((excess > 0)) || continue
  while read -r _ key; do
    unset 'seen[$key]'
  done < <(for key in "${!seen[@]}"; do
    [[ "$key" == "$n|"* ]] && printf '%s %s\n' "${seen[$key]}" "$key"
  done | sort -n | head -n "$excess")
done

# The state first (written, then renamed), the records' deletion after: a collection killed in
# between leaves records the next run counts as duplicates, never twice.
declare -A declared=()
for n in "${names[@]}"; do declared[$n]=1; done
{
  for key in "${!hist[@]}"; do
    IFS='|' read -r kind r oc <<<"$key"
    [[ -n "${declared[$r]:-}" ]] || continue
    if [[ "$kind" == q ]]; then echo "q $r ${hist[$key]}"; else echo "d $r $oc ${hist[$key]}"; fi
  done
  for key in "${!rejected[@]}"; do
    IFS='|' read -r r reason <<<"$key"
    echo "r $r $reason ${rejected[$key]}"
  done
  for key in "${!seen[@]}"; do
    IFS='|' read -r r job event <<<"$key"
    echo "s $r $job $event ${seen[$key]}"
  done
} >"$state_file.tmp"
mv -f "$state_file.tmp" "$state_file"
for path in "${consumed[@]}"; do
  rm -rf -- "$path" 2>/dev/null || true
done

# family NAME HELP VALUES-ARRAY: one gauge family, one sample per runner.
family() {
  local -n values=$3
  printf '# HELP %s %s\n# TYPE %s gauge\n' "$1" "$2" "$1"
  for i in "${!names[@]}"; do
    printf '%s{%s} %s\n' "$1" "${labels_of[$i]}" "${values[$i]}"
  done
}

# histogram NAME KEY LABELS BUCKET...: the _bucket, _sum and _count samples of hist[KEY].
histogram() {
  local name=$1 key=$2 labels=$3 i=2
  shift 3
  local -a h
  read -r -a h <<<"${hist[$key]}"
  for le in "$@"; do
    printf '%s_bucket{%s,le="%s"} %s\n' "$name" "$labels" "$le" "${h[$i]}"
    i=$((i + 1))
  done
  printf '%s_bucket{%s,le="+Inf"} %s\n' "$name" "$labels" "${h[1]}"
  printf '%s_sum{%s} %d.%03d\n' "$name" "$labels" $((h[0] / 1000)) $((h[0] % 1000))
  printf '%s_count{%s} %s\n' "$name" "$labels" "${h[1]}"
}

labels_of=()
for n in "${names[@]}"; do labels_of+=("runner=\"$(escape "$n")\""); done
ones=()
for i in "${!names[@]}"; do ones+=(1); done
{
  family github_runner_service_active "Whether the runner's systemd service is active (1) or not (0)." active
  family github_runner_online "Whether the runner reports itself connected to GitHub and listening (1) or not (0)." online
  family github_runner_busy "Whether the runner reports a job in progress (1) or not (0)." busy
  family github_runner_version_deprecated "Whether the running runner's log says GitHub deprecated its version (1) or not (0)." deprecated
  saved_labels=("${labels_of[@]}")
  labels_of=("${info[@]}")
  family github_runner_info "Runner metadata (name, version, labels, unit); always 1." ones
  labels_of=("${saved_labels[@]}")
  printf '# HELP github_runner_job_queue_seconds %s\n' "Seconds from a job's creation to its start on the runner, from the job hooks."
  printf '# TYPE github_runner_job_queue_seconds histogram\n'
  for i in "${!names[@]}"; do
    histogram github_runner_job_queue_seconds "q|${names[$i]}" "${labels_of[$i]}" "${queue_buckets[@]}"
  done
  printf '# HELP github_runner_job_duration_seconds %s\n' "Seconds from a job's start to its completion on the runner, from the job hooks."
  printf '# TYPE github_runner_job_duration_seconds histogram\n'
  for i in "${!names[@]}"; do
    for oc in "${outcomes[@]}"; do
      histogram github_runner_job_duration_seconds "d|${names[$i]}|$oc" "${labels_of[$i]},outcome=\"$oc\"" \
        "${duration_buckets[@]}"
    done
  done
  printf '# HELP github_runner_job_spool_rejected_total %s\n' "Job hook records the collector refused, by reason."
  printf '# TYPE github_runner_job_spool_rejected_total counter\n'
  for i in "${!names[@]}"; do
    for r in "${reasons[@]}"; do
      printf 'github_runner_job_spool_rejected_total{%s,reason="%s"} %s\n' "${labels_of[$i]}" "$r" \
        "${rejected["${names[$i]}|$r"]}"
    done
  done
  printf '# HELP github_runner_metrics_last_run_timestamp_seconds %s\n' "When the runner metrics were last collected."
  printf '# TYPE github_runner_metrics_last_run_timestamp_seconds gauge\n'
  printf 'github_runner_metrics_last_run_timestamp_seconds %s\n' "$(date +%s)"
} >"$out.tmp"
mv -f "$out.tmp" "$out"
