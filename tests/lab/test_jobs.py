"""Jobs through the GitHub double: dispatch as GitHub does it, the job hooks' records, failover.

Two parts, both `lab`-marked:
- on loopback (no lab host, root needed: the stand-in runs as `nobody`): the double dispatches a
  queued job to an idle runner with every label of its runs-on, case-insensitively; the runner
  stand-in runs it with the program's job hooks (components/host_files/runner-hook.sh) named in
  its .env, the hooks leave their records in a root-owned spool, and the program's collector
  (components/host_files/runner-metrics.sh) turns them into the queue and duration histograms;
- in the lab (the production-shaped stack deployed through the executor, real Prometheus): with
  both production runners up a `[self-hosted, production]` job runs on one of them and its wait
  and duration reach Prometheus; the primary stopped, the next job runs on the secondary and
  RunningOnSecondaryOnly fires; both stopped, a job waits, NoHealthyRunner fires, and the job runs
  as soon as the primary is back; a staging job is never given to a production-only runner.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components import shell
from lab.fleet import LAB_REPO, MONITOR, PRODUCTION, LabFleet
from lab.github_double import GitHubDouble
from tests.lab.test_runner_standin import (  # noqa: F401 - fixtures used by the loopback test
    NOBODY,
    REPO,
    configure,
    double,
    install,
    lab,
    processes,
    runners,
    tarball,
    wait_for,
    workdir,
)

pytestmark = pytest.mark.lab

STACK = "lab"
JOB = "github-runner-health"
UNITS = {"lab-primary": "actions.runner._services.lab-primary.service"}
UNITS["lab-secondary"] = "actions.runner._services.lab-secondary.service"
HOSTS = {"lab-primary": "runner-a", "lab-secondary": "runner-b"}


# --- on loopback: dispatch, hooks, spool, collector ------------------------------------------


def collect(conf: Path, out: Path, spool: Path) -> dict[str, str]:
    script = shell.host_file_text("runner-metrics.sh")
    subprocess.run(["bash", "-c", script, "runner-metrics", str(conf), str(out), str(spool)], check=True, timeout=60)
    return {
        line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1]
        for line in out.read_text().splitlines()
        if line and not line.startswith("#")
    }


@lab
def test_a_queued_job_goes_to_a_matching_idle_runner_whose_hooks_fill_the_spool(
    double: GitHubDouble,  # noqa: F811 - the fixture
    install: Callable[[str], Path],  # noqa: F811
    processes: list[subprocess.Popen[bytes]],  # noqa: F811
    workdir: Path,  # noqa: F811
) -> None:
    base = workdir / f"jobs-{time.monotonic_ns()}"
    spool_root, hooks, conf, textfile = base / "spool", base / "hooks", base / "conf", base / "textfile"
    for d in (spool_root, hooks, conf, textfile):
        d.mkdir(parents=True)
    base.chmod(0o755)
    spool_root.chmod(0o755)
    hooks.chmod(0o755)
    for name in ("job-started.sh", "job-completed.sh"):
        (hooks / name).write_text(shell.host_file_text("runner-hook.sh"))
        (hooks / name).chmod(0o755)
    dirs: dict[str, Path] = {}
    for name, labels in (("prod-one", "production,primary"), ("stage-one", "staging")):
        runner_dir = install(name)
        assert configure(double, runner_dir, name, "--labels", labels).returncode == 0
        spool = spool_root / name
        spool.mkdir()
        os.chown(spool, 0, 65534)
        spool.chmod(0o1770)
        # What runner-service.create.sh writes into the runner's .env.
        with (runner_dir / ".env").open("a") as env:
            env.write(
                f"ACTIONS_RUNNER_HOOK_JOB_STARTED={hooks}/job-started.sh\n"
                f"ACTIONS_RUNNER_HOOK_JOB_COMPLETED={hooks}/job-completed.sh\n"
                f"RUNNER_FLEET_JOB_SPOOL={spool}\n"
            )
        (conf / f"{name}.conf").write_text(f"name={name}\ndir={runner_dir}\nunit={name}.service\nversion=x\nlabels=x\n")
        proc = subprocess.Popen(
            [*NOBODY, "./run.sh"],
            cwd=runner_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        processes.append(proc)
        dirs[name] = runner_dir
    wait_for(lambda: all(r["status"] == "online" for r in runners(double)), what="both runners online")

    # Labels match case-insensitively, and every one of runs-on must be there.
    impossible = double.queue_job(REPO, ["self-hosted", "production", "gpu"], name="needs a gpu")
    staging = double.queue_job(REPO, ["Self-Hosted", "STAGING"], name="staging build", duration=0.5)
    prod = double.queue_job(REPO, ["self-hosted", "Production"], name="prod build", duration=2, result="failure")
    done = wait_for(
        lambda: all(double.job(j["id"])["status"] == "completed" for j in (staging, prod)),
        timeout=30,
        what="both jobs done",
    )
    assert done
    assert double.job(staging["id"])["runner_name"] == "stage-one"
    assert double.job(prod["id"])["runner_name"] == "prod-one"
    assert double.job(prod["id"])["conclusion"] == "failure"
    assert double.job(impossible["id"])["status"] == "queued", "no runner has every label"
    assert double.job(impossible["id"])["runner_name"] is None
    assert not any(r["busy"] for r in runners(double))
    worker_log = "".join(p.read_text() for p in (dirs["prod-one"] / "_diag").glob("Worker_*.log"))
    assert "job started hook has been configured" in worker_log and "recorded {" in worker_log, worker_log

    records = {p.name: p.read_text() for p in (spool_root / "prod-one").iterdir()}
    values = collect(conf, textfile / "runner-fleet-runners.prom", spool_root)
    rejected = {k: v for k, v in values.items() if "rejected" in k and v != "0"}
    assert not rejected, (rejected, records)
    assert values['github_runner_job_queue_seconds_count{runner="prod-one"}'] == "1"
    assert values['github_runner_job_queue_seconds_count{runner="stage-one"}'] == "1"
    assert values['github_runner_job_duration_seconds_count{runner="prod-one",outcome="failed"}'] == "1"
    assert values['github_runner_job_duration_seconds_count{runner="stage-one",outcome="succeeded"}'] == "1"
    duration = float(values['github_runner_job_duration_seconds_sum{runner="prod-one",outcome="failed"}'])
    assert 1 <= duration <= 10, duration
    assert all(values[k] == "0" for k in values if k.startswith("github_runner_job_spool_rejected_total"))
    assert not any((spool_root / "prod-one").iterdir()), "the collector deleted what it read"


# --- in the lab: failover ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[LabFleet]:
    with LabFleet.start(["runner-a", "runner-b"], state_dir=tmp_path_factory.mktemp("lab-jobs")) as lab_fleet:
        report = lab_fleet.run(STACK, PRODUCTION)
        assert report.ok, report.error
        yield lab_fleet


def on_monitor(fleet: LabFleet, command: str) -> str:
    rc, out, err = fleet.lab.run_on(MONITOR, f"curl -fsS {command}")
    assert rc == 0, err
    return out


def query(fleet: LabFleet, expr: str) -> list[dict[str, Any]]:
    from urllib.parse import quote

    answer = json.loads(on_monitor(fleet, f"'http://127.0.0.1:9090/api/v1/query?query={quote(expr)}'"))
    return answer["data"]["result"]


def scalar(fleet: LabFleet, expr: str) -> float:
    result = query(fleet, expr)
    return float(result[0]["value"][1]) if result else 0.0


def firing(fleet: LabFleet, alertname: str) -> bool:
    alerts = json.loads(on_monitor(fleet, "http://127.0.0.1:9090/api/v1/alerts"))["data"]["alerts"]
    return any(a["labels"]["alertname"] == alertname and a["state"] == "firing" for a in alerts)


def service(fleet: LabFleet, runner: str, action: str) -> None:
    rc, _, err = fleet.lab.run_on(HOSTS[runner], f"sudo systemctl {action} {UNITS[runner]}")
    assert rc == 0, err


def api(fleet: LabFleet) -> Any:
    assert fleet.double is not None
    return fleet.double


def run_job(fleet: LabFleet, labels: list[str], name: str, timeout: float = 60) -> dict[str, Any]:
    job = api(fleet).queue_job(LAB_REPO, labels, name=name, duration=3)
    return wait_for(lambda: (j := api(fleet).job(job["id"]))["status"] == "completed" and j, timeout=timeout, what=name)


def test_jobs_fail_over_from_primary_to_secondary_and_wait_when_no_runner_is_left(fleet: LabFleet):
    t_start = time.monotonic()
    wait_for(lambda: scalar(fleet, f'count(github_runner_online{{job="{JOB}"}} == 1)') == 2, 120, "both online")
    # A staging job is never given to a production-only runner, however long it waits.
    staging = api(fleet).queue_job(LAB_REPO, ["self-hosted", "staging"], name="staging build")
    first = run_job(fleet, ["self-hosted", "production"], "prod build 1")
    assert first["runner_name"] in ("lab-primary", "lab-secondary")
    print(f"\nboth up: job ran on {first['runner_name']}, waited {first['queue_seconds']:.1f} s")
    # Its wait and duration reach the lab's Prometheus histograms.
    wait_for(
        lambda: scalar(fleet, f'sum(github_runner_job_duration_seconds_count{{job="{JOB}",outcome="succeeded"}})') >= 1,
        90,
        "the job's duration in Prometheus",
    )
    assert scalar(fleet, f'sum(github_runner_job_queue_seconds_count{{job="{JOB}"}})') >= 1
    assert scalar(fleet, f'sum(github_runner_job_queue_seconds_bucket{{job="{JOB}",le=~"5(\\\\.0)?"}})') >= 1
    assert scalar(fleet, f'sum(github_runner_job_spool_rejected_total{{job="{JOB}"}})') == 0

    # The primary stops: the next job runs on the secondary, and the fleet says it runs on it only.
    service(fleet, "lab-primary", "stop")
    t_stop = time.monotonic()
    second = run_job(fleet, ["self-hosted", "production"], "prod build 2")
    assert second["runner_name"] == "lab-secondary"
    wait_for(lambda: firing(fleet, "RunningOnSecondaryOnly"), 180, "RunningOnSecondaryOnly firing")
    print(f"primary stopped: job ran on the secondary; RunningOnSecondaryOnly firing {time.monotonic() - t_stop:.0f} s")

    # Both stopped: the job waits, NoHealthyRunner fires, and the job runs once the primary is back.
    service(fleet, "lab-secondary", "stop")
    t_both = time.monotonic()
    waiting = api(fleet).queue_job(LAB_REPO, ["self-hosted", "production"], name="prod build 3", duration=3)
    wait_for(lambda: firing(fleet, "NoHealthyRunner"), 180, "NoHealthyRunner firing")
    print(f"both stopped: NoHealthyRunner firing {time.monotonic() - t_both:.0f} s")
    assert api(fleet).job(waiting["id"])["status"] == "queued"
    waited = time.monotonic() - t_both
    service(fleet, "lab-primary", "start")
    t_back = time.monotonic()
    ran = wait_for(
        lambda: (j := api(fleet).job(waiting["id"]))["status"] == "completed" and j, 120, "the waiting job to run"
    )
    assert ran["runner_name"] == "lab-primary"
    print(
        f"primary back: the waiting job started {ran['queue_seconds']:.0f} s after it was queued, "
        f"{time.monotonic() - t_back:.0f} s after the start command"
    )
    assert ran["queue_seconds"] >= waited
    service(fleet, "lab-secondary", "start")
    # Its long wait is in the histogram too: in a bucket above 60 s.
    wait_for(
        lambda: scalar(fleet, f'sum(github_runner_job_queue_seconds_count{{job="{JOB}"}})') >= 3, 90, "three waits"
    )
    assert scalar(fleet, f'sum(github_runner_job_queue_seconds_bucket{{job="{JOB}",le=~"60(\\\\.0)?"}})') <= 2
    assert api(fleet).job(staging["id"])["status"] == "queued", "no staging runner: the staging job still waits"
    print(f"failover scenario: {time.monotonic() - t_start:.0f} s")
