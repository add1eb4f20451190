#!/usr/bin/env bash
# runner-fleet job hook: one record per job event into the runner's spool (monitoring/METRICS.md §3).
# Installed twice per runner, as job-started.sh and job-completed.sh (the event is the file's
# name), and named in the runner's .env by ACTIONS_RUNNER_HOOK_JOB_STARTED / _COMPLETED, beside
# RUNNER_FLEET_JOB_SPOOL (the runner's spool directory). actions/runner runs it as the runner user
# with `bash -e <file>`, synchronously, with no timeout, and fails the job on a non-zero exit
# (src/Runner.Worker/JobHookProvider.cs, JobExtension.cs; docs/adrs/1751-runner-job-hooks.md):
# so every step here is bounded and the script always exits 0; a record it cannot make is a
# line in the job's "Set up runner"/"Complete runner" step, never a failed job.
#
# What a hook knows (ScriptHandler.cs, GitHubContext.cs): the GITHUB_* variables of the job
# (GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT, GITHUB_JOB — the job's key
# in the workflow, not its id), RUNNER_NAME, and the triggering event's payload; not the job's
# token (github.token is not exported to the environment) and not the job's creation time. That
# comes from the job's own data: GitHub's "list jobs for a workflow run attempt" answer, where the
# job this runner is running has its id, created_at and started_at (and its steps' conclusions
# while it runs). The call carries no credential: it answers for public repositories (and GHES
# instances that allow it); where it does not, the hook records nothing and says so.
#
# The record is written under a dot-name and renamed into place, so the collector never reads
# half a record; beyond 1000 records the hook only leaves the file `dropped`.
set +e
event=${0##*/}
event=${event%.sh}
event=${event#job-}
spool=${RUNNER_FLEET_JOB_SPOOL:-}
note() { echo "runner-fleet job hook ($event): $*"; }

main() {
  [[ "$event" == started || "$event" == completed ]] || {
    note "unknown hook name $0"
    return
  }
  [[ -n "$spool" && -d "$spool" && -w "$spool" ]] || {
    note "no spool directory (RUNNER_FLEET_JOB_SPOOL=$spool); nothing recorded"
    return
  }
  local count
  count=$(find "$spool" -mindepth 1 -maxdepth 1 2>/dev/null | head -n 1001 | wc -l)
  if ((count >= 1000)); then
    : >>"$spool/dropped"
    note "spool full (1000 records); this job's $event record is dropped"
    return
  fi
  command -v python3 >/dev/null || {
    note "python3 not found; nothing recorded"
    return
  }
  local now
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local url="${GITHUB_API_URL:-}/repos/${GITHUB_REPOSITORY:-}/actions/runs/${GITHUB_RUN_ID:-}/attempts/${GITHUB_RUN_ATTEMPT:-1}/jobs"
  local record
  record=$(
    HOOK_EVENT=$event HOOK_NOW=$now HOOK_URL=$url timeout 30 python3 -c '
import json, os, sys, urllib.request
event, now, url, me = os.environ["HOOK_EVENT"], os.environ["HOOK_NOW"], os.environ["HOOK_URL"], os.environ.get("RUNNER_NAME", "")
job = None
for page in range(1, 11):  # the jobs of one run attempt, 100 a page
    req = urllib.request.Request(f"{url}?per_page=100&page={page}", headers={
        "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "runner-fleet-job-hook"})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            data = json.load(answer)
    except Exception as e:
        sys.exit(f"job data unavailable ({url}): {e}")
    jobs = data.get("jobs") or []
    mine = [j for j in jobs if j.get("runner_name") == me and j.get("status") == "in_progress"]
    if mine:
        job = mine[0]
        break
    if len(jobs) < 100:
        break
if job is None:
    sys.exit(f"no job in progress on runner {me!r} in {url}")
rec = {"event": event, "job_id": int(job["id"]), "run_id": int(job["run_id"])}
if event == "started":
    rec.update(created_at=job["created_at"], started_at=job["started_at"])
else:
    conclusions = {s.get("conclusion") for s in job.get("steps") or []}
    outcome = ("failed" if "failure" in conclusions else "cancelled" if "cancelled" in conclusions
               else "succeeded" if conclusions and conclusions <= {"success", "skipped", None} else "unknown")
    rec.update(started_at=job["started_at"], completed_at=now, outcome=outcome)
print(json.dumps(rec))
'
  ) || {
    note "nothing recorded"
    return
  }
  local ms tmp name
  ms=$(date +%s%3N)
  name="$ms-$event-$(tr -dc 'a-z0-9' </dev/urandom 2>/dev/null | head -c 12).json"
  tmp="$spool/.$name"
  if printf '%s\n' "$record" >"$tmp" && mv -f -- "$tmp" "$spool/$name"; then
    note "recorded $record"
  else
    rm -f -- "$tmp"
    note "could not write to $spool"
  fi
}

main 2>&1
exit 0
