"""Production protection on real lab hosts: removing a protected host is refused and changes
nothing on it or on GitHub; the documented step (hosts[].protect: false, deploy, then remove the
host) retires it cleanly; a staging stack removes a host with no step at all.

Lab: as in test_fleet.py (lab hosts, the GitHub double on the bridge, the runner stand-in), run
through the executor (lab/executor, the project's imitation of the Pulumi engine, which follows
pkg/resource/deploy's protect rules: tests/lab/test_executor_protect.py), not the Pulumi CLI.
The stacks are named `production` and `staging`, so protection comes from the program's default.
"""

from __future__ import annotations

import json
import time

import pytest

from lab.executor import run_program
from lab.fleet import PRODUCTION, PROJECT_DIR, SECRET_KEYS, HostLayout, LabFleet

pytestmark = pytest.mark.lab

KEPT, RETIRED = PRODUCTION[0], PRODUCTION[1]  # runner-a (primary), runner-b (secondary)
RETIRED_RUNNER = RETIRED.runners[0][0]
KEPT_RUNNER = KEPT.runners[0][0]
SNAPSHOT = (
    "find /opt/runner-fleet /etc/runner-fleet /var/lib/runner-fleet /etc/systemd/system -type f "
    "-not -path '*/_diag/*' -not -path '*/_work/*' -not -name '*.prom' -print0 2>/dev/null "
    "| sort -z | xargs -0 -r sha256sum; "
    "systemctl list-units --all --plain --no-legend 'actions.runner.*' 'runner-fleet-*' | awk '{print $1, $3, $4}'; "
    "id -u github-runner-STACK 2>&1; true"
)
STAGING_LAYOUT = (
    HostLayout("runner-a", "primary", 9105, (("lab-st-a", ("self-hosted", "Linux", "X64", "staging", "primary")),)),
    HostLayout("runner-b", "secondary", 9106, (("lab-st-b", ("self-hosted", "Linux", "X64", "staging", "secondary")),)),
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet.start(["runner-a", "runner-b"], state_dir=tmp_path_factory.mktemp("lab-protect")) as lab_fleet:
        yield lab_fleet


def up(fleet: LabFleet, stack: str, config: dict, *, mode: str = "up", preview_first: bool = False):
    started = time.monotonic()
    report = run_program(
        project_dir=PROJECT_DIR,
        stack=stack,
        config=config,
        secret_keys=SECRET_KEYS,
        state_path=fleet.state_path(stack),
        mode=mode,
        preview_first=preview_first,
        log=lambda line: None,
    )
    how = " (preview first)" if preview_first else ""
    print(f"{stack} {mode}{how}: {report.summary()} [{time.monotonic() - started:.1f}s]")
    return report


def snapshot(fleet: LabFleet, host: str, stack: str) -> str:
    return fleet.lab.run_on(host, SNAPSHOT.replace("STACK", stack))[1]


def registrations(fleet: LabFleet) -> dict[str, dict]:
    return {r["name"]: r for r in fleet.double_state()["runners"]}


def target_file(fleet: LabFleet, stack: str) -> str:
    return fleet.lab.run_on("monitor", f"cat /etc/prometheus/runner-fleet/runner-fleet-{stack}.json")[1]


def protect_in_state(fleet: LabFleet, stack: str) -> dict[str, bool]:
    state = json.loads(fleet.state_path(stack).read_text())
    return {r["urn"].rsplit("::", 1)[-1]: bool(r.get("protect")) for r in state["resources"]}


def wait_online(fleet: LabFleet, names: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while {n for n, r in registrations(fleet).items() if r["status"] == "online"} < names:
        assert time.monotonic() < deadline, f"runners {sorted(names)} not online: {registrations(fleet)}"
        time.sleep(0.5)


def test_removing_a_production_host_is_refused_until_the_documented_step_then_it_retires(fleet):
    full = fleet.config(PRODUCTION)
    assert up(fleet, "production", full).ok
    assert all(protect_in_state(fleet, "production").values())
    wait_online(fleet, {KEPT_RUNNER, RETIRED_RUNNER})
    host_before = snapshot(fleet, RETIRED.host, "production")
    assert RETIRED_RUNNER in host_before  # the runner's files and unit are there to be compared
    runners_before = {n: r["id"] for n, r in registrations(fleet).items()}
    targets_before = target_file(fleet, "production")
    fleet.double.clear_calls()

    without = fleet.config((KEPT,))
    # `pulumi up` as the CLI runs it: the preview refuses, nothing runs anywhere.
    report = up(fleet, "production", without, preview_first=True)
    assert not report.ok
    assert report.error.startswith("preview failed: ")
    assert report.executions == []
    refused = [e for e in report.errors if "cannot be deleted\nbecause it is protected" in e]
    assert refused and len(refused) == len(report.errors)
    assert all("`pulumi state unprotect 'urn:pulumi:production::runner-fleet::" in e for e in refused)
    assert target_file(fleet, "production") == targets_before

    # `pulumi up --skip-preview` (Automation API, pulumi/actions): the program's updates run
    # first (the target file drops the host), then every delete on the host is refused.
    report = up(fleet, "production", without)
    assert not report.ok
    assert refused == [e for e in report.errors]  # the same resources, the same words
    assert {e.name for e in report.executions} == {"prometheus-target-file"}
    assert snapshot(fleet, RETIRED.host, "production") == host_before
    assert {n: r["id"] for n, r in registrations(fleet).items()} == runners_before
    assert [c for c in fleet.double.calls if c["method"] != "GET" and "/actions/runners" in c["path"]] == []
    wait_online(fleet, {KEPT_RUNNER, RETIRED_RUNNER})

    # The documented step: hosts[].protect: false for that host, deploy (nothing runs on it).
    step = fleet.config(PRODUCTION)
    step["runner-fleet:hosts"][1]["protect"] = False
    report = up(fleet, "production", step)
    assert report.ok, report.error
    assert {e.target.split("@")[1].rsplit(":", 1)[0] for e in report.executions} <= {fleet.lab.hosts["monitor"].address}
    protect = protect_in_state(fleet, "production")
    assert protect[RETIRED.host] is False and protect[f"{RETIRED_RUNNER}-registration"] is False
    assert protect[KEPT.host] is True and protect[f"{KEPT_RUNNER}-registration"] is True
    assert snapshot(fleet, RETIRED.host, "production") == host_before
    assert target_file(fleet, "production") == targets_before

    # Then removing the host retires it: registration gone, nothing left of the stack on it.
    report = up(fleet, "production", without)
    assert report.ok, report.error
    assert set(registrations(fleet)) == {KEPT_RUNNER}
    leftover = snapshot(fleet, RETIRED.host, "production")
    assert RETIRED_RUNNER not in leftover and "runner-fleet-production" not in leftover
    assert "no such user" in leftover
    wait_online(fleet, {KEPT_RUNNER})

    # A protected stack cannot be destroyed either; runner-fleet:protect: false first.
    report = up(fleet, "production", without, mode="destroy")
    assert not report.ok and all("because it is protected" in e for e in report.errors)
    assert set(registrations(fleet)) == {KEPT_RUNNER}
    off = {**without, "runner-fleet:protect": False}
    assert up(fleet, "production", off).ok
    assert up(fleet, "production", off, mode="destroy").ok
    assert registrations(fleet) == {}


def test_a_staging_stack_removes_a_host_without_any_step(fleet):
    config = fleet.config(STAGING_LAYOUT)
    assert up(fleet, "staging", config).ok
    assert not any(protect_in_state(fleet, "staging").values())
    report = up(fleet, "staging", fleet.config(STAGING_LAYOUT[:1]), preview_first=True)
    assert report.ok, report.error
    assert set(registrations(fleet)) == {"lab-st-a"}
    assert "lab-st-b" not in snapshot(fleet, "runner-b", "staging")
    assert up(fleet, "staging", fleet.config(STAGING_LAYOUT[:1]), mode="destroy").ok
    assert registrations(fleet) == {}
