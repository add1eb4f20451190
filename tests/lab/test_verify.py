"""`runner-fleet verify` against a deployed lab fleet: in sync, then one tamper at a time.

The lab stack is deployed by the executor (lab/executor, the project's imitation of the engine),
whose state `python -m lab.executor export` writes in `pulumi stack export` format: verify gets
exactly what an operator pipes into it from the Pulumi CLI. Verify runs as the operator runs it
(`python -m fleet verify`, the lab key as --ssh-key, the double's credential as --token-file),
connects to the lab hosts over SSH with the pinned host keys and asks the GitHub double. Each
tamper is undone by hand afterwards: a deploy would not undo it, which is the point.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.fleet import LAB_REPO, MONITOR, PRODUCTION, PROJECT_DIR, LabFleet
from tests.lab.test_fleet import PROD, fleet, no_staging, production, registrations, wait_for  # noqa: F401

pytestmark = pytest.mark.lab

EXPORTER_UNIT = f"/etc/systemd/system/runner-fleet-{PROD}-node-exporter.service"
LISTENER = f"/opt/runner-fleet/{PROD}/runners/lab-primary/bin/Runner.Listener"
TARGET_FILE = f"/etc/prometheus/runner-fleet/runner-fleet-{PROD}.json"
SECONDARY_UNIT = "actions.runner._services.lab-secondary.service"


def config_file(lab_fleet: LabFleet, directory: Path, change=None) -> Path:
    """The lab stack's config as Pulumi.<stack>.yaml holds it: non-secret keys in plain text."""
    config = {
        k: v
        for k, v in lab_fleet.config(PRODUCTION).items()
        if k not in ("runner-fleet:githubToken", "runner-fleet:sshPrivateKey")
    }
    config["runner-fleet:githubToken"] = {"secure": "v1:AAAAnot-a-real-ciphertext"}
    if change:
        change(config)
    path = directory / f"Pulumi.{PROD}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def run_verify(lab_fleet: LabFleet, tmp_path: Path, *extra: str, change=None) -> tuple[int, dict[str, Any], str]:
    """`python -m lab.executor export | python -m fleet verify --state - --json`: (code, report, stderr)."""
    export = subprocess.run(
        [sys.executable, "-m", "lab.executor", "export", "--state", str(lab_fleet.state_path(PROD))],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(export.stdout)["deployment"]["resources"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleet",
            "verify",
            "--stack",
            PROD,
            "--state",
            "-",
            "--config-file",
            str(config_file(lab_fleet, tmp_path, change)),
            "--ssh-key",
            str(lab_fleet.lab.private_key_path),
            "--token-file",
            str(lab_fleet.state_dir / "github-pat"),
            "--cache-dir",
            str(lab_fleet.state_dir / "verify-cache"),
            "--timeout",
            "5",
            "--json",
            *extra,
        ],
        cwd=PROJECT_DIR,
        input=export.stdout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    for secret in (lab_fleet.pat, lab_fleet.lab.private_key.splitlines()[1]):
        assert secret not in done.stdout + done.stderr
    report = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, report, done.stderr


def diffs(report: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    return {(d["host"], d["object"]): (d["expected"], d["found"]) for d in report["differences"]}


def sudo(lab_fleet: LabFleet, host: str, command: str) -> str:
    rc, out, err = lab_fleet.lab.run_on(host, f"sudo -n bash -c {shlex.quote(command)}")
    assert rc == 0, err
    return out


def sha256_on(lab_fleet: LabFleet, host: str, path: str) -> str:
    return sudo(lab_fleet, host, f"sha256sum {path} | cut -d' ' -f1").strip()


def set_labels(lab_fleet: LabFleet, runner_id: int, labels: list[str]) -> None:
    assert lab_fleet.double is not None
    request = urllib.request.Request(  # noqa: S310 - the lab's double
        f"{lab_fleet.double.api_url}/repos/{LAB_REPO}/actions/runners/{runner_id}/labels",
        data=json.dumps({"labels": labels}).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {lab_fleet.pat}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the lab's double
        assert response.status == 200


@pytest.fixture
def clean(production, tmp_path):  # noqa: F811 - the fixture of test_fleet.py
    """The deployed production-shaped stack, verified in sync before a test tampers with it."""
    code, report, err = run_verify(production, tmp_path)
    assert (code, report["status"], report["differences"], report["unchecked"]) == (0, "in sync", [], []), err
    assert set(report["hosts"]) == {"runner-a", "runner-b", f"monitoring host {production.lab.hosts[MONITOR].address}"}
    return production


def test_clean_fleet_is_in_sync_and_says_so_in_text(clean, tmp_path):
    # The text report, from the state file given by name.
    state = tmp_path / "export.json"
    subprocess.run(
        [sys.executable, "-m", "lab.executor", "export", "--state", str(clean.state_path(PROD)), "--file", str(state)],
        cwd=PROJECT_DIR,
        check=True,
    )
    done = subprocess.run(
        [
            sys.executable, "-m", "fleet", "verify", "--stack", PROD, "--state", str(state),
            "--config-file", str(config_file(clean, tmp_path)), "--ssh-key", str(clean.lab.private_key_path),
            "--token-file", str(clean.state_dir / "github-pat"), "--cache-dir", str(clean.state_dir / "verify-cache"),
        ],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"stack {PROD}: in sync (3 host(s),")
    assert "checking runner-a" in done.stderr


def test_edited_unit_is_drift(clean, tmp_path):
    before = sha256_on(clean, "runner-a", EXPORTER_UNIT)
    sudo(
        clean,
        "runner-a",
        f"cp -p {EXPORTER_UNIT} {EXPORTER_UNIT}.keep && echo 'Environment=EDITED=1' >> {EXPORTER_UNIT}",
    )
    try:
        after = sha256_on(clean, "runner-a", EXPORTER_UNIT)
        code, report, _ = run_verify(clean, tmp_path)
    finally:
        sudo(clean, "runner-a", f"mv -f {EXPORTER_UNIT}.keep {EXPORTER_UNIT}")
    assert code == 1 and report["status"] == "drifted"
    # Hashes as write_if_changed compares (trailing newline dropped): the raw file hash differs
    # from the expected one, but the found one is the edited file's.
    (key,) = diffs(report)
    assert key == ("runner-a", f"unit {EXPORTER_UNIT}")
    expected, found = diffs(report)[key]
    assert expected.startswith("sha256 ") and found.startswith("sha256 ") and expected != found
    assert before != after


def test_stopped_service_is_drift(clean, tmp_path):
    sudo(clean, "runner-b", f"systemctl stop {SECONDARY_UNIT}")
    try:
        code, report, _ = run_verify(clean, tmp_path)
    finally:
        sudo(clean, "runner-b", f"systemctl start {SECONDARY_UNIT}")
        wait_for(lambda: registrations(clean)["lab-secondary"]["status"] == "online", 90, what="lab-secondary online")
    assert code == 1
    found = diffs(report)
    assert found[("runner-b", f"service {SECONDARY_UNIT}")] == ("enabled and active", "enabled, inactive")
    # The stopped runner is offline on GitHub too; nothing else differs.
    assert set(found) <= {
        ("runner-b", f"service {SECONDARY_UNIT}"),
        ("runner-b", "runner lab-secondary on GitHub: status"),
    }


def test_labels_changed_on_github_are_drift(clean, tmp_path):
    runner = registrations(clean)["lab-primary"]
    custom = [label["name"] for label in runner["labels"] if label["type"] == "custom"]
    set_labels(clean, runner["id"], [*custom, "gpu"])
    try:
        code, report, _ = run_verify(clean, tmp_path)
    finally:
        set_labels(clean, runner["id"], custom)
    assert code == 1
    assert diffs(report) == {
        ("runner-a", "runner lab-primary on GitHub: labels"): (
            "Linux,primary,production,self-hosted,X64",
            "gpu,Linux,primary,production,self-hosted,X64",
        )
    }


def test_deleted_target_file_is_drift(clean, tmp_path):
    monitor = f"monitoring host {clean.lab.hosts[MONITOR].address}"
    sudo(clean, MONITOR, f"mv {TARGET_FILE} /root/target-file.keep")
    try:
        code, report, _ = run_verify(clean, tmp_path)
    finally:
        sudo(clean, MONITOR, f"mv /root/target-file.keep {TARGET_FILE}")
    assert code == 1
    (item,) = diffs(report).items()
    assert item[0] == (monitor, f"target file {TARGET_FILE}")
    assert item[1][0].startswith("sha256 ") and item[1][1] == "missing"


def test_replaced_runner_binary_is_drift(clean, tmp_path):
    before = sha256_on(clean, "runner-a", LISTENER)
    sudo(clean, "runner-a", f"cp -p {LISTENER} /root/listener.keep && printf '\\0' >> {LISTENER}")
    try:
        after = sha256_on(clean, "runner-a", LISTENER)
        code, report, _ = run_verify(clean, tmp_path)
    finally:
        sudo(clean, "runner-a", f"cp -p /root/listener.keep {LISTENER} && rm -f /root/listener.keep")
    assert code == 1
    assert diffs(report) == {
        ("runner-a", f"runner lab-primary file {LISTENER}"): (f"sha256 {before}", f"sha256 {after}")
    }


def test_unreachable_host_and_unpinned_key_are_not_checked(clean, tmp_path):
    # A host whose sshd is down: exit 3, the others still checked.
    pid = clean.lab.init_pid("runner-b")
    assert pid
    active = subprocess.run(
        ["nsenter", "-t", str(pid), "-a", "systemctl", "is-active", "ssh.socket", "ssh.service"],
        capture_output=True,
        text=True,
    ).stdout.split()
    units = [u for u, state in zip(["ssh.socket", "ssh.service"], active, strict=False) if state == "active"]
    subprocess.run(["nsenter", "-t", str(pid), "-a", "systemctl", "stop", "ssh.socket", "ssh.service"], check=False)
    try:
        code, report, _ = run_verify(clean, tmp_path)
    finally:
        subprocess.run(["nsenter", "-t", str(pid), "-a", "systemctl", "start", *units], check=True)
    assert code == 3 and report["status"] == "incomplete"
    assert [(u["host"], u["object"]) for u in report["unchecked"]] == [("runner-b", "host")]
    assert "connect" in report["unchecked"][0]["reason"].lower()
    assert report["differences"] == []

    # A host showing a key other than the pinned one is refused, never trusted.
    def pin_monitor_key(config):
        config["runner-fleet:hosts"][0]["hostKey"] = clean.lab.hosts[MONITOR].host_key

    code, report, _ = run_verify(clean, tmp_path, change=pin_monitor_key)
    assert code == 3
    assert [(u["host"], u["object"]) for u in report["unchecked"]] == [("runner-a", "host")]
    assert "pinned" in report["unchecked"][0]["reason"]
