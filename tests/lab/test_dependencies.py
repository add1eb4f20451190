"""The runner's native dependencies on a real lab host (Debian 12): missing libicu is named with
the key that installs it; with hosts[].installDependencies the preflight goes to apt-get.

Lab: one runner host and the monitoring host, through the executor (lab/executor, the project's
imitation of the Pulumi engine), not the Pulumi CLI. The lab hosts have no route out and the
image carries no package lists, so apt-get cannot reach Debian's archive here: the install itself
is tested against a fake apt that records its calls (tests/unit/test_preflight.py); this module
shows what a host without package access gets: a bounded, clear failure before anything else runs.
"""

from __future__ import annotations

import time

import pytest

from lab.fleet import PRODUCTION, LabFleet

pytestmark = pytest.mark.lab

HOST = "runner-a"
LAYOUT = PRODUCTION[:1]
HIDE_ICU = "sudo -n sh -c 'mkdir -p /root/icu-aside && mv /usr/lib/*-linux-gnu/libicu* /root/icu-aside/ && ldconfig'"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet.start([HOST], state_dir=tmp_path_factory.mktemp("lab-deps")) as lab_fleet:
        rc, _, err = lab_fleet.lab.run_on(HOST, HIDE_ICU)
        assert rc == 0, err
        yield lab_fleet


def deploy(fleet: LabFleet, install: bool):
    config = fleet.config(LAYOUT)
    config["runner-fleet:hosts"][0]["installDependencies"] = install
    started = time.monotonic()
    report = fleet.run("lab-deps", LAYOUT, config=config, log=lambda line: None)
    seconds = time.monotonic() - started
    print(f"installDependencies={install}: {report.summary()} [{seconds:.1f}s]")
    return report, seconds


def ran_on_host(report) -> set[str]:
    return {e.name for e in report.executions if e.ran and e.name.startswith((HOST, "lab-primary"))}


def test_missing_libicu_fails_the_preflight_naming_the_key_and_nothing_else_runs(fleet):
    report, _ = deploy(fleet, install=False)
    assert not report.ok
    assert "the runner's native dependency libicu is missing" in report.error
    assert f"set runner-fleet:hosts[].installDependencies: true for host {HOST}" in report.error
    assert ran_on_host(report) == {f"{HOST}-preflight"}


def test_with_the_key_and_no_package_access_the_preflight_fails_bounded_and_says_why(fleet):
    report, seconds = deploy(fleet, install=True)
    assert not report.ok
    assert f"runner-fleet: host {HOST}: installing the runner's native dependencies with apt-get" in report.error
    tail = report.error[-3000:]
    assert "apt-get could not refresh the package lists (exit 100" in report.error, tail
    assert "check the host's package sources (hosts[].installDependencies)" in report.error, tail
    assert ran_on_host(report) == {f"{HOST}-preflight"}
    assert seconds < 120
    # dpkg's own state is as it was: nothing half-installed to finish.
    rc, out, _ = fleet.lab.run_on(HOST, "dpkg --audit; echo rc=$?")
    assert out.strip().endswith("rc=0") and "half" not in out
