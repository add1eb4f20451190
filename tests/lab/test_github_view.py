"""GitHub's view of the runners, on the lab's monitoring host and its real Prometheus (Debian's
package), deployed by the program through the executor (lab/executor, the project's imitation of
the engine; not the Pulumi CLI).

One scenario, in the order a user meets it: the stack deployed with a separate read-only view
credential while the scope holds more than 100 registrations (pagination); the declared runner
online in GitHub's view, the undeclared registrations orphans; the runner disconnected in the
double goes to 0 in Prometheus; a newer actions/runner release makes the pinned version one
release behind; an exhausted rate limit is counted and its remaining 0 exported; the credential
file is root's 0600 and the token is nowhere else on the host; the unit's exposure; the destroy
takes exactly the collector's pieces out.
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
import urllib.parse

import pytest

from lab.fleet import MONITOR, HostLayout, LabFleet

pytestmark = pytest.mark.lab

STACK = "lab"
RUNNER = "lab-view-a"
LAYOUT = (HostLayout("runner-a", "primary", 9102, ((RUNNER, ("self-hosted", "Linux", "X64", "production")),)),)
UNDECLARED = 120
UNIT = f"runner-fleet-{STACK}-github-view.service"
TOKEN_FILE = f"/etc/runner-fleet/{STACK}/github-view/token"
TARGET_FILE = f"/etc/prometheus/runner-fleet/runner-fleet-{STACK}.github-view.json"
JOB = 'job="github-runner-github"'


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet.start(["runner-a"], state_dir=tmp_path_factory.mktemp("lab-github-view")) as lab_fleet:
        yield lab_fleet


def on_monitor(fleet: LabFleet, command: str) -> str:
    rc, out, err = fleet.lab.run_on(MONITOR, f"sudo bash -c {shlex.quote(command)}")
    assert rc == 0, f"{command}: {err}"
    return out


def query(fleet: LabFleet, expr: str) -> list[dict]:
    q = urllib.parse.quote(expr)
    return json.loads(on_monitor(fleet, f"curl -fsS 'http://127.0.0.1:9090/api/v1/query?query={q}'"))["data"]["result"]


def value(fleet: LabFleet, expr: str) -> float | None:
    result = query(fleet, expr)
    return float(result[0]["value"][1]) if result else None


def wait_value(fleet: LabFleet, expr: str, want, timeout: float, what: str) -> float:
    started = time.monotonic()
    while True:
        got = value(fleet, expr)
        if got is not None and want(got):
            took = time.monotonic() - started
            print(f"github view: {what} in Prometheus after {took:.0f} s")
            return took
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: {expr} is {got} after {timeout:.0f} s")
        time.sleep(2)


def test_github_view_in_the_lab(fleet):
    double = fleet.double
    assert double is not None
    view_token = "github_pat_lab" + secrets.token_hex(20)
    double.add_read_pat(view_token)
    # The pinned version, released ten days ago; the scope holds more than a page of registrations.
    pinned = fleet.artifacts["runner"]["version"]
    double.add_release(pinned, published_at=time.time() - 10 * 86400)
    for i in range(UNDECLARED):
        double.add_runner(f"elsewhere-{i:03d}", repo="lab-owner/fleet")
    config = fleet.config(LAYOUT)
    config["runner-fleet:githubViewToken"] = view_token

    started = time.monotonic()
    report = fleet.run(STACK, LAYOUT, config=config)
    assert report.ok, report.error
    print(f"github view: deploy (1 runner host + monitoring host) {time.monotonic() - started:.0f} s")

    # Online in GitHub's view, every page listed, the others orphans, job label from the target group.
    wait_value(fleet, f'github_runner_github_online{{{JOB},runner="{RUNNER}"}}', lambda v: v == 1, 90, "online")
    [target] = [t for t in fleet.prometheus_targets() if t["labels"].get("job") == "github-runner-github"]
    assert target["labels"]["role"] == "github-view" and target["labels"]["environment"] == STACK
    assert target["labels"]["host"] == fleet.lab.hosts[MONITOR].address
    assert value(fleet, f"count(github_runner_github_orphan{{{JOB}}})") == UNDECLARED
    listing = [c for c in double.calls if c["path"].endswith("/actions/runners") and c["credential"] == "read-pat"]
    assert {"1", "2"} <= {c["query"].get("page") for c in listing}, "both pages listed"
    viewer = [c for c in double.calls if c["credential"] == "read-pat"]
    assert {c["method"] for c in viewer} == {"GET"}, "the collector only reads"
    assert value(fleet, f'github_runner_version_behind_releases{{{JOB},version="{pinned}"}}') == 0
    assert value(fleet, f"github_runner_github_rate_limit_limit{{{JOB}}}") == 5000

    # Disconnected in the double while its service runs; a newer release announced meanwhile.
    double.set_connected(RUNNER, False)
    double.add_release("9.999.0")
    wait_value(fleet, f'github_runner_github_online{{{JOB},runner="{RUNNER}"}}', lambda v: v == 0, 90, "offline")
    wait_value(
        fleet, f'github_runner_version_behind_releases{{{JOB},version="{pinned}"}}', lambda v: v == 1, 90, "1 behind"
    )
    assert value(fleet, f'github_runner_latest_release_info{{{JOB},version="9.999.0"}}') == 1
    double.set_connected(RUNNER, True)

    # An exhausted rate limit: counted, remaining 0, the last listing still served.
    before = value(fleet, f'github_runner_github_errors_total{{{JOB},reason="rate_limited"}}')
    assert before == 0
    double.rate_limit(45)
    wait_value(
        fleet, f'github_runner_github_errors_total{{{JOB},reason="rate_limited"}}', lambda v: v >= 1, 75, "rate limited"
    )
    wait_value(fleet, f"github_runner_github_rate_limit_remaining{{{JOB}}}", lambda v: v == 0, 30, "remaining 0")
    assert value(fleet, f'github_runner_github_registered{{{JOB},runner="{RUNNER}"}}') == 1
    double.rate_limit(0)

    # The credential: root's, 0600, and nowhere else (files, journal, process table, unit, state).
    assert on_monitor(fleet, f"stat -c '%U %G %a' {TOKEN_FILE}").strip() == "root root 600"
    # The searches read the token from its own file (`grep -f`): a token in their command line
    # would land in sudo's journal entry and in the process table, and be found there.
    hits = on_monitor(
        fleet,
        f"grep -rlF -f {TOKEN_FILE} /etc /opt /var/lib /var/log /root /home /tmp 2>/dev/null"
        f" | grep -vxF {TOKEN_FILE} || true",
    )
    assert hits.strip() == "", f"the view token is in {hits}"
    assert on_monitor(fleet, f"journalctl --no-pager -o cat | grep -cF -f {TOKEN_FILE} || true").strip() == "0"
    procs = on_monitor(
        fleet, f"cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | grep -caF -f {TOKEN_FILE} || true"
    )
    assert procs.strip() == "0"
    unit_file = on_monitor(fleet, f"systemctl cat {UNIT}")
    assert "LoadCredential=token:" in unit_file and view_token not in unit_file
    rc, _, _ = fleet.lab.run_on(MONITOR, f"cat {TOKEN_FILE}")
    assert rc != 0, "the login user cannot read the credential"
    assert view_token not in fleet.state_path(STACK).read_text(), "the executor's state keeps it encrypted"
    exposure = on_monitor(fleet, f"systemd-analyze security {UNIT} --no-pager 2>&1 | tail -n 1")
    print(f"github view: systemd-analyze security {UNIT}: {exposure.strip()}")

    # Destroy: the collector's target group, unit, program, config and credential go; Prometheus stays.
    report = fleet.run(STACK, LAYOUT, mode="destroy", config=config)
    assert report.ok, report.error
    left = on_monitor(
        fleet,
        f"ls -d {TOKEN_FILE} {TARGET_FILE} /etc/systemd/system/{UNIT}"
        f" /opt/runner-fleet/{STACK}/bin/github-view 2>&1 || true",
    )
    assert "No such file" in left and left.count("No such file") == 4, left
    assert on_monitor(fleet, f"systemctl is-active {UNIT} || true").strip() in ("inactive", "unknown")
    assert on_monitor(fleet, "systemctl is-active prometheus").strip() == "active"
