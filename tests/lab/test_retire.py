"""Day-2 edges of a runner's registration on real lab hosts: retiring a runner that is running a
job, and rotating or revoking the stack's GitHub credential.

Lab: as in test_fleet.py (lab hosts, the GitHub double on the bridge, the runner stand-in), run
through the executor (lab/executor, the project's imitation of the Pulumi engine). The stack is
the staging-shaped one: two runners on runner-b, so one can be retired while the other stays.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time

import pytest

import components.github_runner
from lab.fleet import STAGING, HostLayout, LabFleet
from lab.github_double import _hash

pytestmark = pytest.mark.lab

STACK = "lab-staging"
HOST = "runner-b"
KEPT, RETIRED = "lab-staging-primary", "lab-staging-extra"
UNIT = f"actions.runner._services.{RETIRED}.service"
WITHOUT_RETIRED = (HostLayout(HOST, "primary", 9103, tuple(r for r in STAGING[0].runners if r[0] != RETIRED)),)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet.start([HOST], state_dir=tmp_path_factory.mktemp("lab-retire")) as lab_fleet:
        yield lab_fleet


@pytest.fixture
def deployed(fleet):
    """The staging-shaped stack deployed with both runners, online, idle, with the lab's credential."""
    for name in (KEPT, RETIRED):
        if name in registrations(fleet):
            fleet.double.set_busy(name, False)
    allow(fleet, fleet.pat)
    report = fleet.run(STACK, STAGING)
    assert report.ok, report.error
    wait_for(lambda: all(r["status"] == "online" for r in fleet.double_state()["runners"]), what="runners online")
    return fleet


def allow(fleet: LabFleet, pat: str) -> None:
    fleet.double._pat_hashes.add(_hash(pat))  # noqa: SLF001 - a credential issued on GitHub


def revoke(fleet: LabFleet, pat: str) -> None:
    fleet.double._pat_hashes.discard(_hash(pat))  # noqa: SLF001 - a credential revoked on GitHub


def wait_for(predicate, timeout: float = 60, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def registrations(fleet: LabFleet) -> dict[str, dict]:
    return {r["name"]: r for r in fleet.double_state()["runners"]}


def on_host(fleet: LabFleet, command: str) -> str:
    return fleet.lab.run_on(HOST, command)[1].strip()


def job_processes(fleet: LabFleet) -> list[str]:
    """PIDs of the retired runner's job process (the stand-in's Runner.Worker, as the real one)."""
    out = on_host(fleet, f"pgrep -x Runner.Worker -a | grep -F '/{RETIRED}/' | cut -d' ' -f1; true")
    return out.split()


def refused_deletes(fleet: LabFleet, since: int) -> list[dict]:
    return [c for c in fleet.double.calls[since:] if c["method"] == "DELETE" and c["status"] == 422]


def in_background(fleet: LabFleet, layout, **kwargs):
    lines: list[str] = []
    result: dict = {}

    def run() -> None:
        result["report"] = fleet.run(STACK, layout, log=lines.append, **kwargs)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, lines, result


def test_retiring_a_busy_runner_waits_for_its_job_then_retires_it(deployed):
    fleet = deployed
    fleet.double.set_busy(RETIRED, True, job="long-build")
    job = wait_for(lambda: job_processes(fleet), what="the job's process on the host")
    calls_before = len(fleet.double.calls)

    thread, _lines, result = in_background(fleet, WITHOUT_RETIRED)
    try:
        wait_for(lambda: refused_deletes(fleet, calls_before), what="a deletion refused while the job runs")
        time.sleep(6)  # several retries while the job runs
        # Nothing was stopped: the job runs, the service is active, the runner still registered.
        assert job_processes(fleet) == job
        assert on_host(fleet, f"systemctl is-active {UNIT}") == "active"
        runner = registrations(fleet)[RETIRED]
        assert runner["busy"] and runner["status"] == "online"
        # Deletion is retried while busy, so it succeeds the moment the job ends (no new job can come).
        assert len(refused_deletes(fleet, calls_before)) >= 3
    finally:
        fleet.double.set_busy(RETIRED, False)  # the job finishes on its own
        thread.join(timeout=240)
    assert not thread.is_alive(), "retirement did not finish after the job ended"
    report = result["report"]
    assert report.ok, report.error
    assert set(report.ops("delete")) >= {f"{RETIRED}-service", f"{RETIRED}-registration", f"{RETIRED}-install"}
    assert set(registrations(fleet)) == {KEPT}
    # The job ended by itself with its result, and was never cancelled.
    journal = on_host(fleet, f"sudo journalctl -u {UNIT} --no-pager -o cat")
    assert "Job long-build completed with result: Succeeded" in journal, journal[-2000:]
    assert "Canceled" not in journal
    # Deregistered (no new job could come) before the service was stopped.
    deleted = [c for c in fleet.double.calls[calls_before:] if c["method"] == "DELETE" and c["status"] == 204]
    assert deleted and deleted[0]["path"].endswith(f"/actions/runners/{runner['id']}")
    assert on_host(fleet, f"systemctl is-active {UNIT}; true") in ("inactive", "unknown")
    assert registrations(fleet)[KEPT]["status"] == "online"


def test_a_retirement_that_times_out_changes_nothing_says_what_to_do_and_can_be_retried(deployed, monkeypatch):
    fleet = deployed
    monkeypatch.setattr(components.github_runner, "RETIRE_TIMEOUT_SECONDS", 8)
    # The stored delete carries the timeout: an up stores the short one (an in-place update).
    report = fleet.run(STACK, STAGING)
    assert report.ok, report.error
    assert f"{RETIRED}-service" in report.ops("update") and report.ops("replace") == []
    wait_for(lambda: registrations(fleet).get(RETIRED, {}).get("status") == "online", what="runner online")
    fleet.double.set_busy(RETIRED, True, job="endless")
    job = wait_for(lambda: job_processes(fleet), what="the job's process on the host")

    started = time.monotonic()
    failed = fleet.run(STACK, WITHOUT_RETIRED)
    elapsed = time.monotonic() - started
    assert not failed.ok
    address = fleet.lab.hosts[HOST].address
    assert (
        f"runner-fleet: FAILED on {address}, step runner-service.retire (runner {RETIRED}): "
        "still running a job after 8 s of waiting"
    ) in failed.error, failed.error
    assert "nothing was stopped or removed" in failed.error
    assert "run the same pulumi command again" in failed.error
    assert re.search(r"running a job; waiting for it to finish \(\d+ s of 8 s\)", failed.error)  # progress
    assert elapsed < 120, f"a retirement bounded at 8 s took {elapsed:.0f} s to fail"
    # Nothing changed: the job, the service, the registration and the state are all still there.
    assert job_processes(fleet) == job
    assert on_host(fleet, f"systemctl is-active {UNIT}") == "active"
    assert registrations(fleet)[RETIRED]["busy"]
    state = json.loads(fleet.state_path(STACK).read_text())
    assert any(r["urn"].endswith(f"::{RETIRED}-service") for r in state["resources"])

    fleet.double.set_busy(RETIRED, False)
    retried = fleet.run(STACK, WITHOUT_RETIRED)
    assert retried.ok, retried.error
    assert set(registrations(fleet)) == {KEPT}


def test_rotated_credential_converges_in_place_with_the_old_one_revoked(deployed):
    fleet = deployed
    before = {n: r["id"] for n, r in registrations(fleet).items()}
    new = "ghp_lab" + secrets.token_hex(16)
    allow(fleet, new)
    revoke(fleet, fleet.pat)
    config = fleet.config(STAGING)
    config["runner-fleet:githubToken"] = new
    calls_before = len(fleet.double.calls)
    try:
        report = fleet.run(STACK, STAGING, config=config)
        assert report.ok, report.error
        assert report.ops("replace") == [] and report.ops("delete") == [] and report.ops("create") == []
        assert {f"{KEPT}-registration", f"{RETIRED}-registration"} <= set(report.ops("update"))
        # The update ran with the new credential and found each registration: no re-registration.
        assert {n: r["id"] for n, r in registrations(fleet).items()} == before
        calls = fleet.double.calls[calls_before:]
        assert not [c for c in calls if c["path"].endswith("/registration-token")]
        assert {c["credential"] for c in calls if "/actions/runners" in c["path"]} == {"pat"}
        wait_for(lambda: all(r["status"] == "online" for r in fleet.double_state()["runners"]), what="online")
        # The state now holds the new credential for later deletes: destroy works with it.
        again = fleet.run(STACK, STAGING, config=config)
        assert again.ok and again.commands_executed == 0
        destroyed = fleet.run(STACK, STAGING, mode="destroy", config=config)
        assert destroyed.ok, destroyed.error
        assert registrations(fleet) == {}
    finally:
        allow(fleet, fleet.pat)
        revoke(fleet, new)


def test_destroy_with_a_revoked_credential_fails_clearly_and_can_be_retried(deployed):
    fleet = deployed
    before = {n: r["id"] for n, r in registrations(fleet).items()}
    revoke(fleet, fleet.pat)
    try:
        failed = fleet.run(STACK, STAGING, mode="destroy")
        assert not failed.ok
        assert "GitHub refused the stack's credential (401" in failed.error, failed.error
        assert "pulumi config set --secret runner-fleet:githubToken" in failed.error
        # Nothing was torn down: registrations, services and the state are intact.
        assert {n: r["id"] for n, r in registrations(fleet).items()} == before
        for name in (KEPT, RETIRED):
            assert on_host(fleet, f"systemctl is-active actions.runner._services.{name}.service") == "active"
        state = json.loads(fleet.state_path(STACK).read_text())
        assert len([r for r in state["resources"] if r["urn"].endswith("-registration")]) == 2
    finally:
        allow(fleet, fleet.pat)
    # What the message says: a valid credential, an up (stores it), then destroy again.
    new = "ghp_lab" + secrets.token_hex(16)
    allow(fleet, new)
    revoke(fleet, fleet.pat)
    config = fleet.config(STAGING)
    config["runner-fleet:githubToken"] = new
    try:
        assert fleet.run(STACK, STAGING, config=config).ok
        destroyed = fleet.run(STACK, STAGING, mode="destroy", config=config)
        assert destroyed.ok, destroyed.error
        assert registrations(fleet) == {}
        assert not json.loads(fleet.state_path(STACK).read_text()).get("resources")
    finally:
        allow(fleet, fleet.pat)
        revoke(fleet, new)
