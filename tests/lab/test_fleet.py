"""The program's remote commands carried out on real lab hosts, end to end.

Lab: two runner hosts and a monitoring host running Debian's prometheus package, the GitHub
double on the lab bridge, the runner stand-in and the real node exporter served by the double.
The executor (lab/executor: the project's imitation of the Pulumi engine, not the Pulumi CLI)
runs __main__.py under Pulumi mocks and executes every remote.Command over SSH as pulumi-command
would. The lab is shared by the module's scenarios, but none depends on another having run: each
asks a fixture for the stacks it starts from (`production` converges the production-shaped
stack, `fresh` destroys it first), so `pytest tests/lab/test_fleet.py -k relabel` works alone on
a fresh lab.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from lab.artifacts import build_artifacts
from lab.fleet import PRODUCTION, PROJECT_DIR, SECRET_KEYS, STAGING, LabFleet

pytestmark = pytest.mark.lab

PROD, STAGE = "lab", "lab-staging"
RUNNER_UNITS = {
    "lab-primary": ("runner-a", "actions.runner._services.lab-primary.service"),
    "lab-secondary": ("runner-b", "actions.runner._services.lab-secondary.service"),
}
STAGING_UNIT = ("runner-b", "actions.runner._services.lab-staging-primary.service")
SNAPSHOT = (
    "find /opt/runner-fleet /etc/runner-fleet /etc/systemd/system /etc/prometheus -type f "
    "-not -path '*/_diag/*' -not -path '*/_work/*' -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum; "
    "systemctl list-units --all --plain --no-legend 'actions.runner.*' 'runner-fleet-*' | awk '{print $1, $3, $4}'; "
    "id -u github-runner-lab 2>/dev/null; id -u github-runner-lab-staging 2>/dev/null; true"
)


# The code that deployed the stacks before components took typed args and scripts were renamed:
# the upgrade scenario deploys with it, then upgrades with the code under test.
PREVIOUS_RELEASE = "65262e7"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet.start(["runner-a", "runner-b"], state_dir=tmp_path_factory.mktemp("lab")) as lab_fleet:
        yield lab_fleet


def has_resources(fleet: LabFleet, stack: str) -> bool:
    path = fleet.state_path(stack)
    return path.exists() and bool(json.loads(path.read_text()).get("resources"))


@pytest.fixture
def no_staging(fleet):
    """The staging-shaped stack not deployed (destroyed if an earlier scenario left it)."""
    if has_resources(fleet, STAGE):
        assert_ok(fleet.run(STAGE, STAGING, mode="destroy"))
    return fleet


@pytest.fixture
def production(fleet, no_staging):
    """The production-shaped stack deployed in its committed shape (nothing runs if it already is)."""
    assert_ok(fleet.run(PROD, PRODUCTION))
    return fleet


@pytest.fixture
def fresh(fleet, no_staging):
    """Neither stack deployed: production destroyed if an earlier scenario deployed it."""
    if has_resources(fleet, PROD):
        assert_ok(fleet.run(PROD, PRODUCTION, mode="destroy"))
    return fleet


def wait_for(predicate, timeout: float = 60, interval: float = 1, what: str = "condition"):
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


def custom_labels(runner: dict) -> list[str]:
    return sorted(label["name"] for label in runner["labels"] if label["type"] == "custom")


def all_labels(runner: dict) -> list[str]:
    return sorted(label["name"] for label in runner["labels"])


def scrape(fleet: LabFleet, host: str, port: int) -> str:
    rc, out, err = fleet.lab.run_on(host, f"curl -fsS http://127.0.0.1:{port}/metrics")
    assert rc == 0, err
    return out


def snapshot(fleet: LabFleet) -> dict[str, str]:
    return {name: fleet.lab.run_on(name, SNAPSHOT)[1] for name in fleet.lab.hosts}


def assert_ok(report) -> None:
    assert report.ok, report.error


def test_cold_deploy_registers_every_runner_online_and_monitored_without_leaking_the_credential(fresh):
    fleet = fresh
    report = fleet.run(PROD, PRODUCTION)
    assert_ok(report)
    assert report.commands_executed == len(report.ops("create"))
    # Registered with exactly the configured labels, online.
    runners = registrations(fleet)
    assert set(runners) == {"lab-primary", "lab-secondary"}
    assert all_labels(runners["lab-primary"]) == sorted(["self-hosted", "Linux", "X64", "production", "primary"])
    assert custom_labels(runners["lab-secondary"]) == ["production", "secondary"]
    wait_for(lambda: all(r["status"] == "online" for r in registrations(fleet).values()), what="runners online")
    # Services active and enabled; run as the stack's non-root user.
    for name, (host, unit) in RUNNER_UNITS.items():
        rc, out, _ = fleet.lab.run_on(host, f"systemctl is-active {unit}; systemctl is-enabled {unit}")
        assert out.split() == ["active", "enabled"], (name, out)
        rc, out, _ = fleet.lab.run_on(host, f"systemctl show -p User --value {unit}")
        assert out.strip() == "github-runner-lab"
    # Exporters answer on their ports; their output passes promtool check metrics.
    for host, port, runner in (("runner-a", 9102, "lab-primary"), ("runner-b", 9101, "lab-secondary")):
        metrics = scrape(fleet, host, port)
        assert "node_cpu_seconds_total" in metrics and "node_memory_MemAvailable_bytes" in metrics
        assert "node_filesystem_avail_bytes" in metrics
        assert f'github_runner_service_active{{runner="{runner}"}} 1' in metrics
        assert f'github_runner_online{{runner="{runner}"}} 1' in metrics
        assert f'github_runner_busy{{runner="{runner}"}} 0' in metrics
        info = re.search(rf'^github_runner_info{{([^}}]*runner="{runner}"[^}}]*)}} 1$', metrics, re.M)
        assert info and f'version="{fleet.artifacts["runner"]["version"]}"' in info.group(1)
        assert 'labels="self-hosted,Linux,X64,production,' in info.group(1)
        if shutil.which("promtool"):
            # The whole page parses; promtool's style linter flags only node exporter's own
            # upstream names (node_memory_MemAvailable_bytes...), never ours.
            lint = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True)
            findings = lint.stdout + lint.stderr
            assert "error while linting" not in findings, findings
            assert "github_runner" not in findings, findings
            # Our textfile on its own passes the linter without a single finding.
            rc, ours, _ = fleet.lab.run_on(host, "cat /var/lib/runner-fleet/lab/textfile/runner-fleet-runners.prom")
            strict = subprocess.run(["promtool", "check", "metrics"], input=ours, capture_output=True, text=True)
            assert rc == 0 and strict.returncode == 0, strict.stdout + strict.stderr

    # The GitHub credential was used on every host, and stored nowhere there (nor in plain state).
    def files_containing(host: str, text: str) -> str:
        search = "sudo grep -rlF -f /dev/stdin /etc /opt /home /root /tmp /var/lib/runner-fleet /var/log; true"
        return fleet.lab.run_on(host, search, stdin=text + "\n")[1].strip()

    assert "/etc/runner-fleet/lab/runners/lab-primary.conf" in files_containing("runner-a", "dir=/opt/runner-fleet")
    for host in fleet.lab.hosts:
        assert files_containing(host, fleet.pat) == "", host
        # The patterns come on fd 3: inside a pipe, grep's own stdin is the journal.
        journal = "sudo bash -c 'exec 3<&0; journalctl --no-pager | grep -cF -f /dev/fd/3; true'"
        assert fleet.lab.run_on(host, journal, stdin="Accepted publickey\n")[1].strip() != "0", host  # it can see
        assert fleet.lab.run_on(host, journal, stdin=fleet.pat + "\n")[1].strip() == "0", host
    assert fleet.pat.encode() not in fleet.state_path(PROD).read_bytes()

    # Prometheus scrapes every exporter, up, with its labels, under the job github-runner-health.
    def targets_up():
        targets = [t for t in fleet.prometheus_targets() if t["scrapePool"] == "github-runner-health"]
        return len(targets) == 2 and all(t["health"] == "up" for t in targets) and targets

    targets = wait_for(targets_up, timeout=90, what="targets up")
    by_host = {t["labels"]["host"]: t["labels"] for t in targets}
    assert by_host["runner-a"]["environment"] == PROD and by_host["runner-a"]["role"] == "primary"
    assert by_host["runner-b"]["role"] == "secondary" and by_host["runner-b"]["runners"] == "lab-secondary"
    assert {t["labels"]["job"] for t in targets} == {"github-runner-health"}


def test_busy_runner_is_reported_busy_then_idle(production):
    fleet = production
    fleet.double.set_busy("lab-primary", True)
    try:
        wait_for(
            lambda: 'github_runner_busy{runner="lab-primary"} 1' in scrape(fleet, "runner-a", 9102),
            timeout=60,
            what="busy gauge",
        )
    finally:
        fleet.double.set_busy("lab-primary", False)
    wait_for(
        lambda: 'github_runner_busy{runner="lab-primary"} 0' in scrape(fleet, "runner-a", 9102),
        timeout=60,
        what="idle gauge",
    )


def test_unchanged_rerun_executes_nothing_and_changes_nothing(production):
    fleet = production
    before_hosts = snapshot(fleet)
    before_runners = {n: (r["id"], all_labels(r)) for n, r in registrations(fleet).items()}
    calls_before = len(fleet.double.calls)
    report = fleet.run(PROD, PRODUCTION)
    assert_ok(report)
    assert report.commands_executed == 0
    assert report.ops("create") == report.ops("update") == report.ops("replace") == report.ops("delete") == []
    assert snapshot(fleet) == before_hosts
    assert {n: (r["id"], all_labels(r)) for n, r in registrations(fleet).items()} == before_runners
    runner_api_calls = [c for c in fleet.double.calls[calls_before:] if "/actions/runners" in c["path"]]
    assert [c for c in runner_api_calls if c["method"] != "GET"] == []


def test_relabel_keeps_one_registration_online_with_exactly_the_new_labels(production):
    fleet = production
    relabeled = tuple(
        layout.__class__(
            layout.host,
            layout.role,
            layout.exporter_port,
            tuple(
                (name, ("production", "secondary", "gpu") if name == "lab-secondary" else labels)
                for name, labels in layout.runners
            ),
        )
        for layout in PRODUCTION
    )
    before = registrations(fleet)["lab-secondary"]
    calls_before = len(fleet.double.calls)
    report = fleet.run(PROD, relabeled)
    assert_ok(report)
    assert report.ops("replace") == [] and report.ops("delete") == []
    assert "lab-secondary-registration" in report.ops("update")
    runners = [r for r in fleet.double_state()["runners"] if r["name"] == "lab-secondary"]
    assert len(runners) == 1
    assert runners[0]["id"] == before["id"]
    assert custom_labels(runners[0]) == ["gpu", "production", "secondary"]
    assert runners[0]["status"] == "online"
    new_calls = fleet.double.calls[calls_before:]
    assert not [c for c in new_calls if c["method"] == "DELETE" and "/labels" not in c["path"]]
    # And back: the same in-place update the other way.
    assert_ok(fleet.run(PROD, PRODUCTION))
    assert custom_labels(registrations(fleet)["lab-secondary"]) == ["production", "secondary"]


def with_runner(fleet: LabFleet, version: str, sha256: str) -> dict:
    config = fleet.config(PRODUCTION)
    config["runner-fleet:runner"] = {**config["runner-fleet:runner"], "version": version, "sha256": {"x64": sha256}}
    return config


def installed_release(fleet: LabFleet, host: str, runner: str) -> str:
    rc, out, err = fleet.lab.run_on(host, f"sudo cat /opt/runner-fleet/lab/runners/{runner}/.runner-fleet-release")
    assert rc == 0, err
    return out.split()[0]


def test_upgrade_days_later_checksum_first_then_in_place(production):
    """Two days on (every token minted at creation expired): a wrong checksum changes nothing;
    the right one upgrades in place, keeping the registration."""
    fleet = production
    fleet.double.clock.advance(2 * 24 * 3600)
    old_version = fleet.artifacts["runner"]["version"]
    new = build_artifacts(fleet.state_dir / "artifacts", runner_version="2.330.0")["runner"]
    before = {n: r["id"] for n, r in registrations(fleet).items()}

    bad = fleet.run(PROD, PRODUCTION, config=with_runner(fleet, new["version"], "0" * 64))
    assert not bad.ok and "checksum mismatch" in bad.error and "nothing was installed" in bad.error
    for name, (host, unit) in RUNNER_UNITS.items():
        assert installed_release(fleet, host, name) == old_version
        assert fleet.lab.run_on(host, f"systemctl is-active {unit}")[1].strip() == "active"

    good = fleet.run(PROD, PRODUCTION, config=with_runner(fleet, new["version"], new["sha256"]))
    assert_ok(good)
    assert good.ops("replace") == [] and good.ops("delete") == []
    assert {"lab-primary-install", "lab-secondary-install"} <= set(good.ops("update"))
    assert {n: r["id"] for n, r in registrations(fleet).items()} == before
    for name, (host, _unit) in RUNNER_UNITS.items():
        assert installed_release(fleet, host, name) == new["version"]
    wait_for(lambda: all(r["status"] == "online" for r in registrations(fleet).values()), what="online after upgrade")
    wait_for(
        lambda: f'version="{new["version"]}"' in scrape(fleet, "runner-a", 9102), timeout=60, what="new version metric"
    )
    # Back to the pinned version: a downgrade is an in-place update too.
    assert_ok(fleet.run(PROD, PRODUCTION))
    assert installed_release(fleet, "runner-a", "lab-primary") == old_version


def test_reregisters_when_github_dropped_the_runner(production):
    """GitHub removes runners offline for 14 days. The next update of that runner notices the
    404 and registers it again, weeks after every creation-time token expired."""
    fleet = production
    fleet.double.clock.advance(15 * 24 * 3600)
    dropped = registrations(fleet)["lab-secondary"]
    request = urllib.request.Request(  # noqa: S310 - the lab's double
        f"{fleet.double_url}/api/v3/repos/lab-owner/fleet/actions/runners/{dropped['id']}",
        method="DELETE",
        headers={"Authorization": f"Bearer {fleet.pat}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 204
    assert "lab-secondary" not in registrations(fleet)

    relabeled = fleet.config(PRODUCTION)
    relabeled["runner-fleet:hosts"][1]["runners"][0]["labels"] = ["production", "secondary", "gpu"]
    report = fleet.run(PROD, PRODUCTION, config=relabeled)
    assert_ok(report)
    # The service's update rewrites the collector's record of the labels (github_runner_info).
    assert sorted(report.ops("update")) == ["lab-secondary-registration", "lab-secondary-service"]
    runner = wait_for(
        lambda: (r := registrations(fleet).get("lab-secondary")) and r["status"] == "online" and r,
        what="re-registered runner online",
    )
    assert runner["id"] != dropped["id"]
    assert custom_labels(runner) == ["gpu", "production", "secondary"]
    assert_ok(fleet.run(PROD, PRODUCTION))
    assert custom_labels(registrations(fleet)["lab-secondary"]) == ["production", "secondary"]


def test_both_stacks_on_one_machine_then_destroying_staging_leaves_production_intact(production):
    fleet = production
    assert_ok(fleet.run(STAGE, STAGING))
    host, unit = STAGING_UNIT
    runners = registrations(fleet)
    # Two runner instances of one stack on one host, next to production's runner there.
    assert custom_labels(runners["lab-staging-primary"]) == ["primary", "staging"]
    assert custom_labels(runners["lab-staging-extra"]) == ["large", "primary", "staging"]
    staging_metrics = scrape(fleet, host, 9103)
    for name in ("lab-staging-primary", "lab-staging-extra"):
        assert staging_metrics.count(f'github_runner_online{{runner="{name}"}} 1') == 1
    # Each stack's exporter reports only its own runners.
    assert "lab-staging" not in scrape(fleet, "runner-b", 9101)
    wait_for(
        lambda: len([t for t in fleet.prometheus_targets() if t["scrapePool"] == "github-runner-health"]) == 3,
        timeout=90,
        what="three targets",
    )
    production_before = snapshot(fleet)

    report = fleet.run(STAGE, STAGING, mode="destroy")
    assert_ok(report)
    runners = registrations(fleet)
    assert set(runners) == {"lab-primary", "lab-secondary"}
    rc, out, _ = fleet.lab.run_on(
        host,
        f"systemctl is-active {unit}; ls /opt/runner-fleet; id github-runner-lab-staging 2>&1; "
        "ls /etc/systemd/system | grep -c runner-fleet-lab-staging",
    )
    assert "lab-staging" not in out.split()  # /opt/runner-fleet/lab-staging is gone
    assert "no such user" in out
    rc, out, _ = fleet.lab.run_on("monitor", "ls /etc/prometheus/runner-fleet")
    assert out.split() == ["runner-fleet-lab.json"]
    # Production untouched: runners online, exporters answering, targets up.
    assert snapshot(fleet)["runner-a"] == production_before["runner-a"]
    for h, u in RUNNER_UNITS.values():
        assert fleet.lab.run_on(h, f"systemctl is-active {u}")[1].strip() == "active"
    # (eventually: a listener may be between two long-polls of a busy double at this instant)
    wait_for(
        lambda: 'github_runner_online{runner="lab-secondary"} 1' in scrape(fleet, "runner-b", 9101),
        timeout=30,
        what="production's secondary online",
    )
    wait_for(
        lambda: [t["health"] for t in fleet.prometheus_targets() if t["scrapePool"] == "github-runner-health"]
        == ["up", "up"],
        timeout=90,
        what="production targets only",
    )
    assert all(r["status"] == "online" for r in registrations(fleet).values())


def test_destroy_days_later_deregisters_everything_and_leaves_only_the_shared_job(production):
    """Every token minted at creation has long expired; deregistration still works."""
    fleet = production
    fleet.double.clock.advance(3 * 24 * 3600)
    report = fleet.run(PROD, PRODUCTION, mode="destroy")
    assert_ok(report)
    assert registrations(fleet) == {}
    for host in ("runner-a", "runner-b"):
        rc, out, _ = fleet.lab.run_on(
            host, "ls /opt/runner-fleet /etc/runner-fleet 2>&1; ls /etc/systemd/system | grep -E 'actions|runner-fleet'"
        )
        assert "lab" not in out.split(), out
    rc, out, _ = fleet.lab.run_on(
        "monitor", "ls /etc/prometheus/runner-fleet; grep -c github-runner-health /etc/prometheus/prometheus.yml"
    )
    assert out.split() == ["1"]  # no target files left; the shared job stays
    state = json.loads(fleet.state_path(PROD).read_text())
    assert not state.get("resources")


def test_unfit_host_fails_fast_with_every_reason(fleet):
    """The preflight lists every problem and nothing else runs on that host."""
    config = fleet.config(PRODUCTION[:1])
    config["runner-fleet:hosts"][0]["minDiskMb"] = 10**9
    report = fleet.run("lab-unfit", PRODUCTION[:1], config=config)
    assert not report.ok
    assert "host runner-a is not fit to carry runners" in report.error
    assert "MB needed (hosts[].minDiskMb)" in report.error
    ran = {e.name for e in report.executions if e.ran}
    assert "runner-a-preflight" in ran
    assert not {n for n in ran if n.startswith(("runner-a-runner-user", "runner-a-exporter", "lab-primary-"))}
    rc, out, _ = fleet.lab.run_on("runner-a", "ls /opt/runner-fleet 2>&1; id github-runner-lab-unfit 2>&1")
    assert "lab-unfit" not in out.split() and "no such user" in out


def previous_release(destination: Path) -> Path:
    """The project as of PREVIOUS_RELEASE, exported with `git archive` (the repository is only read)."""
    archive = destination.with_suffix(".tar")
    exported = subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), PREVIOUS_RELEASE],
        cwd=PROJECT_DIR,
        check=False,
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, f"needs the history back to {PREVIOUS_RELEASE} (a full clone): {exported.stderr}"
    destination.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
    archive.unlink()
    return destination


def deploy_with(project: Path, fleet: LabFleet, stack: str, tmp_path: Path) -> dict:
    """`pulumi up` of another checkout's program with the executor, in a process of its own (so its
    `components` and `fleet` packages are the ones imported); returns the run report."""
    config = fleet.config(PRODUCTION)
    # The previous release knew no github.allowInsecureHttp (it accepted http without it).
    del config["runner-fleet:github"]["allowInsecureHttp"]
    config_file = tmp_path / "config.json"
    config_file.touch(mode=0o600)
    config_file.write_text(json.dumps({"config": config, "secretKeys": sorted(SECRET_KEYS)}))
    report_file = tmp_path / "report.json"
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lab.executor",
                "up",
                "--project",
                str(project),
                "--stack",
                stack,
                "--config-file",
                str(config_file),
                "--state",
                str(fleet.state_path(stack)),
                "--report",
                str(report_file),
            ],
            cwd=PROJECT_DIR,
            env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        config_file.unlink()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(report_file.read_text())


def test_stack_deployed_by_the_previous_release_upgrades_without_replacing_or_deleting_anything(fresh, tmp_path):
    """The same URNs (type tokens, names, parents) as the previous release, so an existing stack
    upgrades in place: commands whose script was renamed or gained inputs are updates (their
    create runs again, idempotently); nothing is created, replaced or deleted, and every runner
    keeps its registration."""
    fleet = fresh
    old = deploy_with(previous_release(tmp_path / "previous"), fleet, PROD, tmp_path)
    assert old["ok"], old["error"]
    old_urns = sorted(o["urn"] for o in old["operations"] if o["op"] == "create")
    before = {n: r["id"] for n, r in registrations(fleet).items()}
    assert set(before) == {"lab-primary", "lab-secondary"}

    report = fleet.run(PROD, PRODUCTION)
    assert_ok(report)
    assert report.counts()["create"] == report.counts()["replace"] == report.counts()["delete"] == 0, report.summary()
    assert sorted(o.urn for o in report.operations) == old_urns
    assert "lab-secondary-registration" in report.ops("update")  # its script was renamed
    assert {n: r["id"] for n, r in registrations(fleet).items()} == before
    wait_for(lambda: all(r["status"] == "online" for r in registrations(fleet).values()), what="online after upgrade")
    for host, port, runner in (("runner-a", 9102, "lab-primary"), ("runner-b", 9101, "lab-secondary")):
        wait_for(
            lambda h=host, p=port, r=runner: f'github_runner_online{{runner="{r}"}} 1' in scrape(fleet, h, p),
            timeout=60,
            what=f"{runner} metrics from the upgraded collector",
        )
    again = fleet.run(PROD, PRODUCTION)
    assert_ok(again)
    assert again.commands_executed == 0
