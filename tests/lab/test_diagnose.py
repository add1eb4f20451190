"""`runner-fleet diagnose` on a deployed lab fleet with one runner broken on purpose at a time.

The state comes from the executor (`python -m lab.executor export`), as for verify. Each break
is one a user meets: the service stopped, the work disk full (a 1 MiB tmpfs over `_work`,
filled), libicu gone from the loader's cache, the registration deleted on the GitHub double
(the runner's credential no longer accepted). Each is named as the most likely cause for that
runner, with its evidence; the break that a deploy cannot repair (the deleted registration)
runs last.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lab.fleet import LAB_REPO, PROJECT_DIR, LabFleet
from tests.lab import test_fleet as scenarios
from tests.lab.test_fleet import PROD, registrations, wait_for
from tests.lab.test_verify import SECONDARY_UNIT, config_file, sudo

pytestmark = pytest.mark.lab

# The lab and the deployed production-shaped stack of test_fleet.py's fixtures.
fleet, no_staging, production = scenarios.fleet, scenarios.no_staging, scenarios.production

SECONDARY_DIR = f"/opt/runner-fleet/{PROD}/runners/lab-secondary"


def run_diagnose(lab_fleet: LabFleet, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    export = subprocess.run(
        [sys.executable, "-m", "lab.executor", "export", "--state", str(lab_fleet.state_path(PROD))],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    done = subprocess.run(
        [
            sys.executable, "-m", "fleet", "diagnose", "--stack", PROD, "--state", "-",
            "--config-file", str(config_file(lab_fleet, tmp_path)), "--ssh-key", str(lab_fleet.lab.private_key_path),
            "--token-file", str(lab_fleet.state_dir / "github-pat"), "--timeout", "5", *extra,
        ],
        cwd=PROJECT_DIR, input=export.stdout, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    for secret in (lab_fleet.pat, lab_fleet.lab.private_key.splitlines()[1]):
        assert secret not in done.stdout + done.stderr
    report = json.loads(done.stdout) if "--json" in extra else {"text": done.stdout}
    return done.returncode, report, done.stderr


def first_cause_of(report: dict[str, Any], runner: str) -> dict[str, Any]:
    return next(c for c in report["causes"] if c["subject"] == runner)


def nsenter(lab_fleet: LabFleet, host: str, *argv: str) -> None:
    pid = lab_fleet.lab.init_pid(host)
    assert pid
    subprocess.run(["nsenter", "-t", str(pid), "-a", *argv], check=True, capture_output=True)


def test_healthy_fleet_has_no_problem(production, tmp_path):
    code, report, err = run_diagnose(production, tmp_path)
    assert code == 0, report["text"] + err
    assert report["text"].startswith(f"stack {PROD}: no problem found on 2 host(s)")
    assert "runner lab-primary: service active/running" in report["text"]
    assert "github: online" in report["text"]


def test_stopped_service_is_named(production, tmp_path):
    sudo(production, "runner-b", f"systemctl stop {SECONDARY_UNIT}")
    try:
        code, report, _ = run_diagnose(production, tmp_path, "--host", "runner-b", "--json")
    finally:
        sudo(production, "runner-b", f"systemctl start {SECONDARY_UNIT}")
        wait_for(lambda: registrations(production)["lab-secondary"]["status"] == "online", 90, what="online")
    assert code == 1
    assert list(report["hosts"]) == ["runner-b"]
    cause = report["causes"][0]
    assert (cause["host"], cause["subject"], cause["cause"]) == (
        "runner-b",
        "lab-secondary",
        "the runner service is not running",
    )
    assert any(SECONDARY_UNIT in line and "inactive" in line for line in cause["evidence"])


def test_full_work_disk_is_named(production, tmp_path):
    work = f"{SECONDARY_DIR}/_work"
    sudo(production, "runner-b", f"mkdir -p {work}")
    nsenter(production, "runner-b", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", work)
    try:
        nsenter(production, "runner-b", "sh", "-c", f"dd if=/dev/zero of={work}/fill bs=64k 2>/dev/null; true")
        code, report, _ = run_diagnose(production, tmp_path, "--json")
    finally:
        nsenter(production, "runner-b", "umount", work)
    assert code == 1
    cause = first_cause_of(report, "lab-secondary")
    assert cause["cause"] == "the runner's work disk is full"
    assert cause["evidence"][0].startswith(f"{work}: 100% used")
    assert [c["subject"] for c in report["causes"]] == ["lab-secondary"]


def test_missing_libicu_is_named(production, tmp_path):
    hide = "mkdir -p /root/icu-aside && mv /usr/lib/*-linux-gnu/libicu* /root/icu-aside/ && ldconfig"
    sudo(production, "runner-a", hide)
    try:
        code, report, _ = run_diagnose(production, tmp_path, "--json")
    finally:
        sudo(
            production,
            "runner-a",
            "mv /root/icu-aside/* /usr/lib/x86_64-linux-gnu/ && rmdir /root/icu-aside && ldconfig",
        )
    assert code == 1
    cause = first_cause_of(report, "lab-primary")
    assert cause["cause"] == "a native dependency of the runner is missing (libicu)"
    assert "ldconfig lists no libicu" in cause["evidence"]
    assert report["hosts"]["runner-a"]["runners"]["lab-primary"]["libicu_entries"] == 0


def test_deleted_registration_is_named_first(production, tmp_path):
    runner = registrations(production)["lab-secondary"]
    assert production.double is not None
    request = urllib.request.Request(  # noqa: S310 - the lab's double
        f"{production.double.api_url}/repos/{LAB_REPO}/actions/runners/{runner['id']}",
        method="DELETE",
        headers={"Authorization": f"Bearer {production.pat}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the lab's double
        assert response.status == 204
    code, report, _ = run_diagnose(production, tmp_path, "--json")
    assert code == 1
    cause = report["causes"][0]
    assert (cause["subject"], cause["cause"]) == (
        "lab-secondary",
        "the runner's registration was deleted or its credential revoked on GitHub",
    )
    assert "GitHub: no registration of this name" in cause["evidence"]
