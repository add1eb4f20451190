"""The root collector's side of the job hooks (monitoring/METRICS.md §1 and §3), run locally.

components/host_files/runner-metrics.sh runs against a temporary configuration, spool and
textfile directory, with `systemctl` stubbed: the spool records a runner user could write
(valid ones, and every kind of forgery or junk) go in, the exposition comes out, and that
exposition must pass `promtool check metrics`, carry exactly the contract's buckets and labels,
count what it refused by reason, and never take a label from a record. The job hook
(components/host_files/runner-hook.sh.tmpl) runs here too, against a stub of GitHub's jobs API.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from components import shell
from tests.unit.test_scripts import _fake_service, _stub

QUEUE_LE = ["5", "15", "30", "60", "120", "300", "600", "1800", "3600", "+Inf"]
DURATION_LE = ["30", "60", "120", "300", "600", "1200", "1800", "3600", "7200", "21600", "+Inf"]
OUTCOMES = ["succeeded", "failed", "cancelled", "unknown"]
REASONS = ["malformed", "too_large", "stale", "duplicate", "spool_full"]
RUNNERS = ["prod-a", "prod-b"]

needs_promtool = pytest.mark.skipif(
    subprocess.run(["which", "promtool"], capture_output=True, check=False).returncode != 0,
    reason="promtool not installed",
)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the spool directories are root-owned, as on a host")


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Host:
    """A host's collector files in a temporary directory: conf, spool, textfile, stub bin."""

    def __init__(self, root: Path, active: dict[str, int] | None = None):
        self.root = root
        self.conf = root / "conf"
        self.spool = root / "spool"
        self.textfile = root / "textfile"
        self.bin = root / "bin"
        for d in (self.conf, self.spool, self.textfile, self.bin):
            d.mkdir(parents=True)
        self.out = self.textfile / "runner-fleet-runners.prom"
        pids = " ".join(f"{unit}) echo {pid};;" for unit, pid in (active or {}).items())
        units = "|".join(active or {}) or "none"
        _stub(
            self.bin,
            "systemctl",
            'case "$1" in\n'
            f'  is-active) case "$3" in {units}) exit 0;; esac; exit 3;;\n'
            f'  show) case "$5" in {pids} *) echo 0;; esac;;\n'
            "esac\n",
        )
        for name in RUNNERS:
            self.add_runner(name)
        self.seq = 0

    def add_runner(self, name: str) -> None:
        (self.root / name / "_diag").mkdir(parents=True)
        (self.conf / f"{name}.conf").write_text(
            f"name={name}\ndir={self.root / name}\nunit={name}.service\n"
            "version=2.334.0\nlabels=self-hosted,production\n"
        )
        d = self.spool / name
        d.mkdir()
        os.chmod(d, 0o1770)  # noqa: S103 - root-owned, sticky, the runner group may add entries

    def record(self, runner: str, event: str, data: Any, raw: bytes | None = None, name: str | None = None) -> Path:
        self.seq += 1
        path = self.spool / runner / (name or f"{int(time.time() * 1000) + self.seq}-{event}-r{self.seq:04d}.json")
        path.write_bytes(raw if raw is not None else json.dumps(data).encode())
        return path

    def collect(self) -> dict[str, str]:
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        script = shell.host_file_text("runner-metrics.sh")
        subprocess.run(
            ["bash", "-c", script, "runner-metrics", str(self.conf), str(self.out), str(self.spool)],
            env=env,
            check=True,
            timeout=120,
        )
        self.text = self.out.read_text()
        return {
            line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1]
            for line in self.text.splitlines()
            if not line.startswith("#")
        }

    def lint(self) -> None:
        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=self.text, capture_output=True, text=True, check=False
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def started(job: int, created: datetime, start: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "event": "started",
        "job_id": job,
        "run_id": 7,
        "created_at": iso(created),
        "started_at": iso(start),
        **extra,
    }


def completed(job: int, start: datetime, end: datetime, outcome: str = "succeeded") -> dict[str, Any]:
    return {
        "event": "completed",
        "job_id": job,
        "run_id": 7,
        "started_at": iso(start),
        "completed_at": iso(end),
        "outcome": outcome,
    }


def q(runner: str, le: str) -> str:
    return f'github_runner_job_queue_seconds_bucket{{runner="{runner}",le="{le}"}}'


def d(runner: str, outcome: str, le: str) -> str:
    return f'github_runner_job_duration_seconds_bucket{{runner="{runner}",outcome="{outcome}",le="{le}"}}'


def rejected(runner: str, reason: str) -> str:
    return f'github_runner_job_spool_rejected_total{{runner="{runner}",reason="{reason}"}}'


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@needs_promtool
def test_first_collection_exports_every_series_with_zero_counts(host: Host):
    values = host.collect()
    host.lint()
    for runner in RUNNERS:
        assert [values[q(runner, le)] for le in QUEUE_LE] == ["0"] * len(QUEUE_LE)
        assert values[f'github_runner_job_queue_seconds_count{{runner="{runner}"}}'] == "0"
        assert values[f'github_runner_job_queue_seconds_sum{{runner="{runner}"}}'] == "0.000"
        for outcome in OUTCOMES:
            assert [values[d(runner, outcome, le)] for le in DURATION_LE] == ["0"] * len(DURATION_LE)
            assert values[f'github_runner_job_duration_seconds_count{{runner="{runner}",outcome="{outcome}"}}'] == "0"
        for reason in REASONS:
            assert values[rejected(runner, reason)] == "0"
        assert values[f'github_runner_version_deprecated{{runner="{runner}"}}'] == "0"
    # Exactly the contract's buckets: no other le value, the families typed as METRICS.md says.
    les = set(re.findall(r'le="([^"]+)"', host.text))
    assert les == set(QUEUE_LE) | set(DURATION_LE)
    assert "# TYPE github_runner_job_queue_seconds histogram" in host.text
    assert "# TYPE github_runner_job_duration_seconds histogram" in host.text
    assert "# TYPE github_runner_job_spool_rejected_total counter" in host.text
    # The state file sits beside the textfile and is not a .prom file the exporter would serve.
    assert sorted(p.name for p in host.textfile.iterdir()) == [
        "runner-fleet-runners.prom",
        "runner-fleet-runners.state",
    ]


@needs_root
@needs_promtool
def test_valid_records_land_in_the_runner_of_their_directory_and_are_deleted(host: Host):
    now = datetime.now(UTC).replace(microsecond=0)
    created, start, end = now - timedelta(seconds=400), now - timedelta(seconds=360), now - timedelta(seconds=10)
    host.record("prod-a", "started", started(11, created, start))  # queued 40 s
    host.record("prod-a", "completed", completed(11, start, end, "failed"))  # ran 350 s
    # A record that names another runner or adds a label of its own is refused (unknown key):
    # the runner label comes from the directory only.
    host.record("prod-b", "started", started(12, now - timedelta(seconds=3), now - timedelta(seconds=2)))
    values = host.collect()
    host.lint()
    assert [values[q("prod-a", le)] for le in QUEUE_LE] == ["0", "0", "0", "1", "1", "1", "1", "1", "1", "1"]
    assert values['github_runner_job_queue_seconds_sum{runner="prod-a"}'] == "40.000"
    assert values[d("prod-a", "failed", "300")] == "0"
    assert values[d("prod-a", "failed", "600")] == "1"
    assert values['github_runner_job_duration_seconds_sum{runner="prod-a",outcome="failed"}'] == "350.000"
    assert values[d("prod-a", "succeeded", "+Inf")] == "0"
    assert values[q("prod-b", "5")] == "1"
    assert values[q("prod-a", "+Inf")] == "1", "prod-b's job is not prod-a's"
    assert list((host.spool / "prod-a").iterdir()) == [] and list((host.spool / "prod-b").iterdir()) == []
    for runner in RUNNERS:
        for reason in REASONS:
            assert values[rejected(runner, reason)] == "0"
    # Counts only grow, from the state file, and an already counted job event is a duplicate.
    host.record("prod-a", "started", started(11, created, start))
    host.record("prod-a", "started", started(13, now - timedelta(seconds=7000), now - timedelta(seconds=1)))
    values = host.collect()
    assert values[q("prod-a", "+Inf")] == "2"
    assert values[q("prod-a", "3600")] == "1", "a 6999 s wait is above the last finite bucket"
    assert values[rejected("prod-a", "duplicate")] == "1"


@needs_root
@needs_promtool
def test_forged_oversized_stale_and_linked_records_are_refused_and_counted(host: Host, tmp_path: Path):
    now = datetime.now(UTC).replace(microsecond=0)
    ok_start = now - timedelta(seconds=5)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(started(99, ok_start, ok_start)))
    secret = tmp_path / "root-only"
    secret.write_text("not for the runner user\n")
    os.chmod(secret, 0o600)
    a = "prod-a"
    cases: dict[str, list[Path]] = {"malformed": [], "too_large": [], "stale": []}
    m = cases["malformed"]
    m.append(host.record(a, "started", None, raw=b"{not json"))
    m.append(host.record(a, "started", None, raw=b""))
    m.append(host.record(a, "started", None, raw=b'{"event": "started", "job_id": 1,}'))
    m.append(host.record(a, "started", None, raw=b"\x00\x01\x02"))
    m.append(host.record(a, "started", started(1, ok_start, ok_start, runner="prod-b")))  # label injection
    m.append(host.record(a, "completed", {**completed(2, ok_start, now), "outcome": 'x",runner="evil'}))
    m.append(host.record(a, "completed", {**completed(3, ok_start, now), "outcome": "exploded"}))
    m.append(host.record(a, "started", started(10**20, ok_start, ok_start)))  # huge job id
    m.append(host.record(a, "started", {**started(4, ok_start, ok_start), "job_id": -4}))
    m.append(host.record(a, "started", {**started(5, ok_start, ok_start), "job_id": 1.5}))
    m.append(host.record(a, "started", {**started(6, ok_start, ok_start), "created_at": "9999-12-31T23:59:59Z"}))
    m.append(host.record(a, "started", started(7, now + timedelta(hours=2), now + timedelta(hours=2))))  # future
    m.append(host.record(a, "started", started(8, now, now - timedelta(seconds=60))))  # created after start
    m.append(host.record(a, "completed", completed(9, now, now - timedelta(seconds=60))))  # ends before start
    m.append(host.record(a, "completed", started(10, ok_start, ok_start)))  # name and event disagree
    m.append(host.record(a, "started", {"event": "started", "job_id": 11}))  # no timestamps
    m.append(host.record(a, "started", {**started(12, ok_start, ok_start), "started_at": "yesterday"}))
    m.append(host.record(a, "started", started(13, ok_start, ok_start), name="13-started-bad name.json"))
    m.append(host.record(a, "started", started(14, ok_start, ok_start), name="notes.txt"))
    link = host.spool / a / f"{int(time.time() * 1000)}-started-link1.json"
    link.symlink_to(outside)
    m.append(link)
    leak = host.spool / a / f"{int(time.time() * 1000)}-started-link2.json"
    leak.symlink_to(secret)
    m.append(leak)
    fifo = host.spool / a / f"{int(time.time() * 1000)}-started-fifo1.json"
    os.mkfifo(fifo)
    m.append(fifo)
    subdir = host.spool / a / f"{int(time.time() * 1000)}-started-dir01.json"
    subdir.mkdir()
    m.append(subdir)
    big = {**started(20, ok_start, ok_start)}
    cases["too_large"].append(host.record(a, "started", None, raw=json.dumps(big).encode() + b" " * 1024))
    cases["too_large"].append(host.record(a, "started", None, raw=b"{" + b"9" * 50_000_000))
    old = now - timedelta(hours=25)
    cases["stale"].append(host.record(a, "started", started(21, old, old)))
    cases["stale"].append(host.record(a, "completed", completed(22, old, old + timedelta(seconds=30))))
    values = host.collect()
    host.lint()
    for reason, paths in cases.items():
        assert values[rejected(a, reason)] == str(len(paths)), reason
        for path in paths:
            assert not os.path.lexists(path), f"{path.name} ({reason}) left in the spool"
    assert values[q(a, "+Inf")] == "0", "nothing refused reached the histogram"
    assert values[q("prod-b", "+Inf")] == "0"
    for reason in REASONS:
        assert values[rejected("prod-b", reason)] == "0", "prod-a's junk is not prod-b's"
    assert outside.exists() and secret.read_text() == "not for the runner user\n", "link targets untouched"
    # Nothing from a record reaches the exposition: only the declared runners and fixed values.
    assert set(re.findall(r'runner="([^"]*)"', host.text)) == set(RUNNERS)
    assert set(re.findall(r'outcome="([^"]*)"', host.text)) == set(OUTCOMES)
    assert "evil" not in host.text and "not for the runner user" not in host.text


@needs_root
def test_a_spool_beyond_its_cap_is_cut_to_1000_records(host: Host):
    now = datetime.now(UTC).replace(microsecond=0)
    spool = host.spool / "prod-b"
    base = int(time.time() * 1000)
    for i in range(1005):
        (spool / f"{base + i}-started-c{i:05d}.json").write_text(json.dumps(started(1000 + i, now, now)))
    (spool / "dropped").write_text("7\n")  # the hook's note that it found the spool full
    t0 = time.monotonic()
    values = host.collect()
    took = time.monotonic() - t0
    print(f"collector over a full spool (1006 entries), first run: {took:.1f} s")
    # Beyond 1000 records (the newest, by name) and the hook's note: refused at once; of the
    # rest, 200 are judged per collection, which bounds its time.
    assert values[rejected("prod-b", "spool_full")] == "6"
    assert values[q("prod-b", "+Inf")] == "200"
    runs = 1
    while any(spool.iterdir()):
        values = host.collect()
        runs += 1
        assert runs <= 5
    assert values[q("prod-b", "+Inf")] == "1000"
    assert values[rejected("prod-b", "spool_full")] == "6"
    assert took < 20, "a collection must finish well within the timer's 15 s and the unit's 60 s limit"


@needs_root
def test_a_spool_directory_replaced_by_a_link_is_not_read(host: Host, tmp_path: Path):
    """The runner user cannot replace its spool directory (its parent is root's), but should one
    be a link or owned by someone else, the collector leaves it alone."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    now = datetime.now(UTC).replace(microsecond=0)
    victim = elsewhere / f"{int(time.time() * 1000)}-started-x0001.json"
    victim.write_text(json.dumps(started(1, now, now)))
    (host.spool / "prod-a").rmdir()
    (host.spool / "prod-a").symlink_to(elsewhere)
    values = host.collect()
    assert values[q("prod-a", "+Inf")] == "0"
    assert victim.exists()


def test_version_deprecated_comes_from_the_running_listeners_newest_log(tmp_path: Path):
    services = {
        "prod-a.service": _fake_service(tmp_path / "a-svc", "Runner.Listener"),
        "prod-b.service": _fake_service(tmp_path / "b-svc", "Runner.Listener"),
    }
    try:
        host = Host(tmp_path / "host", {unit: proc.pid for unit, proc in services.items()})
        # Runner.Listener/Program.cs: "An error occurred: {e.Message}" with GitHub's message.
        (host.root / "prod-a" / "_diag" / "Runner_20261201-090000-utc.log").write_text(
            "[2026-12-01 09:00:00Z INFO Terminal] WRITE LINE: 2026-12-01 09:00:00Z: Listening for Jobs\n"
            "[2026-12-01 09:00:01Z ERR  Terminal] WRITE ERROR: An error occurred: Runner version v2.296.2 is "
            "deprecated and cannot receive messages.\n"
        )
        (host.root / "prod-b" / "_diag" / "Runner_20261201-090000-utc.log").write_text(
            "[2026-12-01 09:00:00Z INFO Terminal] WRITE LINE: 2026-12-01 09:00:00Z: Listening for Jobs\n"
        )
        values = host.collect()
        assert values['github_runner_version_deprecated{runner="prod-a"}'] == "1"
        assert values['github_runner_version_deprecated{runner="prod-b"}'] == "0"
    finally:
        for proc in services.values():
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
    # A stopped service says nothing, whatever its last log said.
    stopped = Host(tmp_path / "stopped")
    (stopped.root / "prod-a" / "_diag" / "Runner_20261201-090000-utc.log").write_text(
        "An error occurred: Runner version v2.296.2 is deprecated and cannot receive messages.\n"
    )
    assert stopped.collect()['github_runner_version_deprecated{runner="prod-a"}'] == "0"


class JobsApi:
    """GitHub's "list jobs for a workflow run attempt" for one run, on a local port."""

    def __init__(self, jobs: list[dict[str, Any]], status: int = 200):
        self.jobs, self.status, self.paths = jobs, status, []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.paths.append(self.path)
                body = json.dumps({"total_count": len(api.jobs), "jobs": api.jobs}).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v3"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_hook(tmp_path: Path, event: str, spool: Path, api_url: str, runner: str = "prod-a") -> str:
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    hook = hooks / f"job-{event}.sh"
    hook.write_text(shell.host_file_text("runner-hook.sh"))
    env = {
        "PATH": os.environ["PATH"],
        "RUNNER_FLEET_JOB_SPOOL": str(spool),
        "GITHUB_API_URL": api_url,
        "GITHUB_REPOSITORY": "example-org/app",
        "GITHUB_RUN_ID": "456",
        "GITHUB_RUN_ATTEMPT": "1",
        "RUNNER_NAME": runner,
    }
    # As actions/runner runs a .sh hook: bash -e <path> (JobHookProvider.cs, ScriptHandler).
    done = subprocess.run(["bash", "-e", str(hook)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, "a hook must never fail the job"
    return done.stdout + done.stderr


@needs_root
def test_the_job_hooks_record_the_jobs_own_data_and_the_collector_takes_it(host: Host, tmp_path: Path):
    now = datetime.now(UTC).replace(microsecond=0)
    created, start = now - timedelta(seconds=95), now - timedelta(seconds=20)
    job = {
        "id": 789,
        "run_id": 456,
        "status": "in_progress",
        "conclusion": None,
        "created_at": iso(created),
        "started_at": iso(start),
        "runner_name": "prod-a",
        "steps": [{"name": "Set up job", "status": "completed", "conclusion": "success"}],
    }
    other = {**job, "id": 790, "runner_name": "prod-b", "created_at": iso(now - timedelta(seconds=1))}
    api = JobsApi([other, job])
    try:
        spool = host.spool / "prod-a"
        out = run_hook(tmp_path, "started", spool, api.url)
        assert api.paths[0] == "/api/v3/repos/example-org/app/actions/runs/456/attempts/1/jobs?per_page=100&page=1"
        (record,) = [p for p in spool.iterdir()]
        assert re.fullmatch(r"\d{13}-started-[a-z0-9]{12}\.json", record.name), record.name
        assert json.loads(record.read_text()) == {
            "event": "started",
            "job_id": 789,
            "run_id": 456,
            "created_at": iso(created),
            "started_at": iso(start),
        }, out
        job["steps"].append({"name": "build", "status": "completed", "conclusion": "failure"})
        run_hook(tmp_path, "completed", spool, api.url)
        values = host.collect()
    finally:
        api.close()
    assert values[q("prod-a", "60")] == "0" and values[q("prod-a", "120")] == "1"  # waited 75 s
    assert values['github_runner_job_queue_seconds_sum{runner="prod-a"}'] == "75.000"
    assert values['github_runner_job_duration_seconds_count{runner="prod-a",outcome="failed"}'] == "1"
    assert values[rejected("prod-a", "malformed")] == "0"
    assert list(spool.iterdir()) == []


@needs_root
def test_a_hook_without_job_data_or_room_records_nothing_and_passes(host: Host, tmp_path: Path):
    spool = host.spool / "prod-a"
    api = JobsApi([], status=404)  # a private repository answers 404 without a credential
    try:
        out = run_hook(tmp_path, "started", spool, api.url)
    finally:
        api.close()
    assert "nothing recorded" in out
    assert list(spool.iterdir()) == []
    out = run_hook(tmp_path, "started", spool, "http://127.0.0.1:9")  # nothing listens
    assert "nothing recorded" in out and list(spool.iterdir()) == []
    for i in range(1000):
        (spool / f"{1_700_000_000_000 + i}-started-f{i:05d}.json").write_text("{}")
    out = run_hook(tmp_path, "completed", spool, "http://127.0.0.1:9")
    assert "spool full" in out
    assert (spool / "dropped").exists()
    values = host.collect()
    assert values[rejected("prod-a", "spool_full")] == "1"
    out = run_hook(tmp_path, "started", tmp_path / "missing", "http://127.0.0.1:9")
    assert "no spool directory" in out


@needs_root
def test_times_with_an_offset_count_as_the_same_instant(host: Host):
    now = datetime.now(UTC).replace(microsecond=0)
    created = (now - timedelta(seconds=50)).astimezone(timezone(timedelta(hours=2))).isoformat()
    start = (now - timedelta(seconds=10)).astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat()
    assert created.endswith("+02:00") and start.endswith("-05:30")
    record = {"event": "started", "job_id": 5, "run_id": 7, "created_at": created, "started_at": start}
    host.record("prod-a", "started", record)
    values = host.collect()
    assert values['github_runner_job_queue_seconds_sum{runner="prod-a"}'] == "40.000"
    assert values[rejected("prod-a", "malformed")] == "0"
