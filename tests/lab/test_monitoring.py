"""The monitoring host's side of the program on the lab's real Prometheus (Debian's package) and
real Alertmanager, through the executor (lab/executor, the project's imitation of the engine).

What a user would see: the alert rules deployed and loaded next to their own prometheus.yml,
a changed job setting reaching the running Prometheus, a prometheus.yml broken by hand reported
with promtool's words while Prometheus keeps serving, a stopped Prometheus reported as not
running, a host that is down not keeping the others unmonitored, and a dead runner's
RunnerServiceDown notification reaching a webhook receiver within the 120 s budget.
Each scenario asks the `deployed` fixture for the production-shaped stack and runs alone.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from lab.fleet import MONITOR, PRODUCTION, PROJECT_DIR, LabFleet

pytestmark = pytest.mark.lab

STACK = "lab"
JOB = "github-runner-health"
CONFIG = "/etc/prometheus/prometheus.yml"
RULES_FILE = f"/etc/prometheus/runner-fleet-{JOB}.rules.yml"
PRIMARY_UNIT = "actions.runner._services.lab-primary.service"
RECEIVER_PORT = 9095
ALERTMANAGER_CONFIG = "/etc/prometheus/alertmanager.yml"
ALERTMANAGER_UNIT = "prometheus-alertmanager"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet.start(["runner-a", "runner-b"], state_dir=tmp_path_factory.mktemp("lab-monitoring")) as lab_fleet:
        yield lab_fleet


@pytest.fixture(scope="module")
def debian_config(fleet) -> str:
    """The monitoring host's prometheus.yml as the package installed it, before any deploy."""
    return on_monitor(fleet, f"cat {CONFIG}")


@pytest.fixture
def deployed(fleet, debian_config):
    """The production-shaped stack deployed in its committed shape, Prometheus running and its
    prometheus.yml valid (nothing runs if it already is)."""
    on_monitor(fleet, "systemctl start prometheus")
    assert_ok(fleet.run(STACK, PRODUCTION))
    return fleet


def on_monitor(fleet: LabFleet, command: str, check: bool = True) -> str:
    rc, out, err = fleet.lab.run_on(MONITOR, f"sudo bash -c {shlex.quote(command)}")
    if check:
        assert rc == 0, f"{command}: {err}"
    return out


def prom_api(fleet: LabFleet, path: str) -> dict:
    return json.loads(on_monitor(fleet, f"curl -fsS 'http://127.0.0.1:9090{path}'"))["data"]


def prom_metric(fleet: LabFleet, name: str) -> float:
    out = on_monitor(fleet, f"curl -fsS http://127.0.0.1:9090/metrics | awk '$1 == \"{name}\" {{print $2}}'")
    return float(out.strip())


def assert_ok(report) -> None:
    assert report.ok, report.error


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def with_prometheus(fleet: LabFleet, **settings) -> dict:
    config = fleet.config(PRODUCTION)
    config["runner-fleet:prometheus"] = {**config["runner-fleet:prometheus"], **settings}
    return config


def job_scrape_interval(fleet: LabFleet) -> str:
    """The job's scrape_interval in the configuration the running Prometheus has loaded."""
    loaded = yaml.safe_load(prom_api(fleet, "/api/v1/status/config")["yaml"])
    return next(job["scrape_interval"] for job in loaded["scrape_configs"] if job["job_name"] == JOB)


def loaded_alerts(fleet: LabFleet) -> set[str]:
    groups = prom_api(fleet, "/api/v1/rules")["groups"]
    ours = [g for g in groups if g["file"] == RULES_FILE]
    return {rule["name"] for g in ours for rule in g["rules"] if rule["type"] == "alerting"}


def job_targets(fleet: LabFleet) -> dict[str, dict]:
    return {t["labels"]["host"]: t for t in fleet.prometheus_targets() if t["scrapePool"] == JOB}


def test_rules_are_deployed_beside_the_users_config_and_loaded(deployed, debian_config):
    fleet = deployed
    config = on_monitor(fleet, f"cat {CONFIG}").splitlines()
    # Every line of Debian's file is still there, in order; the job and one rules entry added.
    it = iter(config)
    assert all(line in it for line in debian_config.splitlines())
    assert [line.strip().split()[1] for line in config if RULES_FILE in line] == [RULES_FILE]
    on_monitor(fleet, f"promtool check config {CONFIG} && promtool check rules {RULES_FILE}")
    shipped = (PROJECT_DIR / "monitoring" / "runner-fleet-alerts.yml").read_text()
    assert on_monitor(fleet, f"cat {RULES_FILE}") == shipped
    assert on_monitor(fleet, f"stat -c '%U %a' {RULES_FILE}").strip() == "root 644"
    # Loaded by the running Prometheus, once (one file for every stack the job scrapes).
    alerts = loaded_alerts(fleet)
    assert {"RunnerServiceDown", "NoHealthyRunner", "RunnerHostUnreachable"} <= alerts
    groups = [g for g in prom_api(fleet, "/api/v1/rules")["groups"] if g["name"] == "runner-fleet"]
    assert len(groups) == 1
    assert prom_metric(fleet, "prometheus_config_last_reload_successful") == 1
    again = fleet.run(STACK, PRODUCTION)
    assert_ok(again)
    assert again.commands_executed == 0


def test_a_changed_scrape_interval_reaches_the_running_prometheus(deployed):
    fleet = deployed
    assert job_scrape_interval(fleet) == "15s"
    started = time.monotonic()
    report = fleet.run(STACK, PRODUCTION, config=with_prometheus(fleet, scrapeInterval="10s"))
    assert_ok(report)
    assert report.ops("update") == ["prometheus-scrape-job"]
    step = next(o for o in report.operations if o.name == "prometheus-scrape-job")
    print(f"\nscrapeInterval 15s -> 10s: scrape-job step {step.seconds:.1f} s (validate, move, reload, confirm)")
    assert job_scrape_interval(fleet) == "10s"
    print(f"running config has 10s {time.monotonic() - started:.1f} s after the deploy started")
    assert on_monitor(fleet, f"grep -c 'scrape_interval: 10s' {CONFIG}").strip() == "1"
    assert_ok(fleet.run(STACK, PRODUCTION))
    assert job_scrape_interval(fleet) == "15s"


def test_a_hand_broken_config_fails_the_deploy_with_promtools_message_and_prometheus_keeps_serving(deployed):
    fleet = deployed
    on_monitor(fleet, f"cp -p {CONFIG} /root/prometheus.yml.good")
    try:
        on_monitor(fleet, f"sed -i 's/^  evaluation_interval: 15s/  evaluation_interval: often/' {CONFIG}")
        broken = on_monitor(fleet, f"sha256sum {CONFIG}")
        report = fleet.run(STACK, PRODUCTION, config=with_prometheus(fleet, scrapeInterval="10s"))
        assert not report.ok
        assert "promtool rejects /etc/prometheus/prometheus.yml as it is on the host" in report.error
        assert "often" in report.error  # promtool's own message
        assert on_monitor(fleet, f"sha256sum {CONFIG}") == broken  # never overwritten
        # Prometheus still serves what it loaded: the old job settings, the rules, the targets.
        assert job_scrape_interval(fleet) == "15s"
        assert "RunnerServiceDown" in loaded_alerts(fleet)
        wait_for(lambda: all(t["health"] == "up" for t in job_targets(fleet).values()), 60, "targets up")
    finally:
        on_monitor(fleet, f"mv -f /root/prometheus.yml.good {CONFIG}")
    assert_ok(fleet.run(STACK, PRODUCTION, config=with_prometheus(fleet, scrapeInterval="10s")))
    assert job_scrape_interval(fleet) == "10s"
    assert_ok(fleet.run(STACK, PRODUCTION))


def test_prometheus_down_is_reported_as_not_running(deployed):
    fleet = deployed
    on_monitor(fleet, "systemctl stop prometheus")
    try:
        report = fleet.run(STACK, PRODUCTION, config=with_prometheus(fleet, scrapeInterval="10s"))
        assert not report.ok
        # The step's own line says so (the error also carries the script text the engine prints).
        assert "runner-fleet: FAILED on " in report.error
        assert ": Prometheus is not running on the monitoring host (prometheus is inactive)" in report.error
        assert "runner-fleet: promtool" not in report.error
    finally:
        on_monitor(fleet, "systemctl start prometheus")
    wait_for(lambda: on_monitor(fleet, "curl -fsS http://127.0.0.1:9090/-/ready", check=False), 60, "Prometheus ready")
    assert_ok(fleet.run(STACK, PRODUCTION))
    assert job_scrape_interval(fleet) == "15s"


def _bridge_port(host: str) -> str:
    return f"vb-{host}"


def test_a_host_that_is_down_does_not_keep_the_others_unmonitored(fleet, debian_config):
    """Cold deploy with runner-b's link down: runner-b's steps fail, the target file is written
    anyway and Prometheus scrapes runner-a while runner-b shows as a down target."""
    on_monitor(fleet, "systemctl start prometheus")
    if fleet.state_path(STACK).exists() and json.loads(fleet.state_path(STACK).read_text()).get("resources"):
        assert_ok(fleet.run(STACK, PRODUCTION, mode="destroy"))
    subprocess.run(["ip", "link", "set", _bridge_port("runner-b"), "down"], check=True)
    try:
        started = time.monotonic()
        report = fleet.run(STACK, PRODUCTION)
        elapsed = time.monotonic() - started
        assert not report.ok and "runner-b" in report.error
        print(f"\ncold deploy with runner-b unreachable: failed after {elapsed:.0f} s; {report.summary()}")
        target_step = next(o for o in report.operations if o.name == "prometheus-target-file")
        assert target_step.ok and target_step.op == "create", target_step.error
        assert "runner-fleet-lab.json" in on_monitor(fleet, "ls /etc/prometheus/runner-fleet")
        targets = wait_for(
            lambda: (t := job_targets(fleet)) and t.get("runner-a", {}).get("health") == "up" and t,
            90,
            "runner-a scraped",
        )
        assert set(targets) == {"runner-a", "runner-b"}
        assert targets["runner-b"]["health"] in ("down", "unknown")
    finally:
        subprocess.run(["ip", "link", "set", _bridge_port("runner-b"), "up"], check=True)
    wait_for(lambda: fleet.lab.run_on("runner-b", "true")[0] == 0, 60, "runner-b reachable")
    assert_ok(fleet.run(STACK, PRODUCTION))
    wait_for(
        lambda: [t["health"] for t in job_targets(fleet).values()] == ["up", "up"], 90, "both targets up after return"
    )


# --- alerts reach a person ---------------------------------------------------------------------


class Receiver:
    """A webhook receiver on the lab bridge: records every notification Alertmanager posts."""

    def __init__(self, host: str, port: int) -> None:
        self.notifications: list[tuple[float, str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.notifications.append((time.monotonic(), self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def first(self, since: float, alertname: str, status: str, **labels: str) -> float | None:
        """When the first notification after `since` carried `alertname` in `status` with `labels`."""
        for at, _path, body in self.notifications:
            if at < since:
                continue
            for alert in body.get("alerts", []):
                have = alert["labels"]
                if (
                    alert["status"] == status
                    and have.get("alertname") == alertname
                    and all(have.get(k) == v for k, v in labels.items())
                ):
                    return at
        return None


@pytest.fixture(scope="module")
def receiver(fleet):
    """Debian's Alertmanager on the monitoring host with the repository's runner-fleet route
    (monitoring/alertmanager/runner-fleet.yml), its webhooks pointed at a receiver on the bridge.
    The lab sets this up, not the program: the user's Alertmanager and routes are theirs."""
    server = Receiver(fleet.lab.bridge_address, RECEIVER_PORT)
    example = (PROJECT_DIR / "monitoring" / "alertmanager" / "runner-fleet.yml").read_text()
    config = example.replace("http://127.0.0.1:9095", f"http://{fleet.lab.bridge_address}:{RECEIVER_PORT}")
    assert config != example
    rc, _, err = fleet.lab.run_on(
        MONITOR,
        f"sudo tee {ALERTMANAGER_CONFIG} >/dev/null && sudo amtool check-config {ALERTMANAGER_CONFIG} "
        f"&& sudo systemctl restart {ALERTMANAGER_UNIT}",
        stdin=config,
    )
    assert rc == 0, err
    wait_for(
        lambda: on_monitor(fleet, "curl -fsS http://127.0.0.1:9093/-/ready", check=False), 60, "Alertmanager ready"
    )
    # Debian's prometheus.yml already sends alerts to localhost:9093.
    wait_for(
        lambda: prom_api(fleet, "/api/v1/alertmanagers")["activeAlertmanagers"], 60, "Prometheus sees Alertmanager"
    )
    yield server
    server.stop()


def firing(fleet: LabFleet, alertname: str) -> list[dict]:
    return [a for a in prom_api(fleet, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == alertname]


def test_a_dead_runner_notifies_a_person_within_120_s_and_resolves(deployed, receiver):
    fleet = deployed
    on_monitor(fleet, "systemctl start prometheus")
    wait_for(
        lambda: all(t["health"] == "up" for t in job_targets(fleet).values()) and len(job_targets(fleet)) == 2,
        90,
        "targets up",
    )
    # Healthy to begin with: nothing about the primary is pending or firing.
    wait_for(lambda: not firing(fleet, "RunnerServiceDown"), 120, "no RunnerServiceDown before the fault")

    t0 = time.monotonic()
    rc, _, err = fleet.lab.run_on("runner-a", f"sudo systemctl stop {PRIMARY_UNIT}")
    assert rc == 0, err
    try:
        at = wait_for(
            lambda: receiver.first(t0, "RunnerServiceDown", "firing", runner="lab-primary", environment=STACK),
            240,
            "RunnerServiceDown notification",
        )
        detection = at - t0
        print(f"\ndead runner -> RunnerServiceDown notification at the webhook: {detection:.1f} s (goal <= 120 s)")
        body = next(b for t, _, b in receiver.notifications if t == at)
        alert = next(a for a in body["alerts"] if a["labels"]["alertname"] == "RunnerServiceDown")
        assert alert["labels"]["role"] == "primary" and alert["labels"]["host"] == "runner-a"
        assert "systemctl status" in alert["annotations"]["check_first"]
        assert detection <= 120
    finally:
        t1 = time.monotonic()
        rc, _, err = fleet.lab.run_on("runner-a", f"sudo systemctl start {PRIMARY_UNIT}")
        assert rc == 0, err
    resolved = wait_for(
        lambda: receiver.first(t1, "RunnerServiceDown", "resolved", runner="lab-primary"), 240, "resolved notification"
    )
    print(f"runner back -> resolved notification: {resolved - t1:.1f} s")


def test_a_30_s_restart_notifies_nobody(deployed, receiver):
    fleet = deployed
    wait_for(lambda: not firing(fleet, "RunnerServiceDown"), 180, "no RunnerServiceDown before the restart")
    t0 = time.monotonic()
    rc, _, err = fleet.lab.run_on(
        "runner-a", f"sudo systemctl stop {PRIMARY_UNIT} && sleep 30 && sudo systemctl start {PRIMARY_UNIT}"
    )
    assert rc == 0, err
    time.sleep(120)  # past the longest time a dead runner takes to notify
    false_alarms = [
        name
        for name in ("RunnerServiceDown", "RunnerNotListening")
        if receiver.first(t0, name, "firing", runner="lab-primary")
    ] + (["NoHealthyRunner"] if receiver.first(t0, "NoHealthyRunner", "firing", environment=STACK) else [])
    print(f"\n30 s restart of lab-primary: false alarms {len(false_alarms)} {false_alarms}")
    assert false_alarms == []


def test_destroying_the_last_stack_takes_the_rules_out_and_keeps_the_job(deployed):
    fleet = deployed
    assert_ok(fleet.run(STACK, PRODUCTION, mode="destroy"))
    assert on_monitor(fleet, f"ls {RULES_FILE} 2>&1; true").strip().endswith("No such file or directory")
    assert RULES_FILE not in on_monitor(fleet, f"cat {CONFIG}")
    assert on_monitor(fleet, f"grep -c 'job_name: {JOB}' {CONFIG}").strip() == "1"
    on_monitor(fleet, f"promtool check config {CONFIG}")
    wait_for(lambda: not loaded_alerts(fleet), 30, "rules unloaded")
