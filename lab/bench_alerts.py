"""Benchmark: time from fault to notification through the lab's real Prometheus + Alertmanager and a
webhook receiver on the lab bridge. Prints figures, asserts nothing.

    flock /tmp/runner-fleet-lab.lock .venv/bin/python -m lab.bench_alerts

The production-shaped stack (primary runner-a, secondary runner-b) is deployed through the executor
(lab/executor, the project's imitation of the engine) with the GitHub-view collector; Alertmanager
gets the repository's route (monitoring/alertmanager/runner-fleet.yml). Faults, one after another,
each undone and the alerts left to clear before the next:
- the primary's service stopped (RunnerServiceDown; goal <= 120 s);
- the primary disconnected from the GitHub double while its service runs (RunnerNotListening from
  the host's log, RunnerDisconnected from GitHub's view);
- both production runners stopped (NoHealthyRunner);
- a newer runner release announced, published 22 days ago (RunnerVersionBehind, `for: 10m`: the
  benchmark waits up to 15 minutes for it);
- the primary restarted with 30 s down: notifications seen (false alarms; goal 0).
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from typing import Any

from lab.fleet import MONITOR, PRODUCTION, PROJECT_DIR, LabFleet
from tests.lab.test_monitoring import ALERTMANAGER_CONFIG, ALERTMANAGER_UNIT, RECEIVER_PORT, Receiver

STACK = "lab"
UNITS = {
    "runner-a": "actions.runner._services.lab-primary.service",
    "runner-b": "actions.runner._services.lab-secondary.service",
}
WATCHED = ("RunnerServiceDown", "RunnerNotListening", "RunnerDisconnected", "NoHealthyRunner", "RunningOnSecondaryOnly")


def sh(fleet: LabFleet, host: str, command: str) -> str:
    rc, out, err = fleet.lab.run_on(host, f"sudo bash -c {shlex.quote(command)}")
    if rc != 0:
        raise SystemExit(f"{host}: {command}: {err}")
    return out


def firing(fleet: LabFleet) -> list[str]:
    alerts = json.loads(sh(fleet, MONITOR, "curl -fsS http://127.0.0.1:9090/api/v1/alerts"))["data"]["alerts"]
    return sorted(
        {a["labels"]["alertname"] for a in alerts if a["labels"]["alertname"] in WATCHED + ("RunnerVersionBehind",)}
    )


def wait(predicate: Any, timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def notified(
    receiver: Receiver, since: float, names: tuple[str, ...], timeout: float, **labels: str
) -> dict[str, float]:
    """Seconds from `since` to the first firing notification of each of `names` seen within timeout."""
    seen: dict[str, float] = {}

    def check() -> bool:
        for name in names:
            if name not in seen:
                at = receiver.first(since, name, "firing", **labels)
                if at is not None:
                    seen[name] = at - since
        return len(seen) == len(names)

    wait(check, timeout)
    return seen


def quiet(fleet: LabFleet, timeout: float = 240) -> float:
    started = time.monotonic()
    wait(lambda: not firing(fleet), timeout, 2)
    return time.monotonic() - started


def main() -> int:
    results: list[tuple[str, str]] = []
    started = time.monotonic()
    with LabFleet.start(["runner-a", "runner-b"], log=lambda *_: None) as fleet:
        double = fleet.double
        if double is None:
            raise SystemExit("the benchmark needs the in-process GitHub double")
        view_token = "github_pat_lab" + secrets.token_hex(20)
        double.add_read_pat(view_token)
        pinned = fleet.artifacts["runner"]["version"]
        double.add_release(pinned, published_at=time.time() - 10 * 86400)
        config = fleet.config(PRODUCTION)
        config["runner-fleet:githubViewToken"] = view_token
        report = fleet.run(STACK, PRODUCTION, config=config, log=lambda *_: None)
        if not report.ok:
            raise SystemExit(f"deploy failed: {report.error}")
        receiver = Receiver(fleet.lab.bridge_address, RECEIVER_PORT)
        example = (PROJECT_DIR / "monitoring" / "alertmanager" / "runner-fleet.yml").read_text()
        am = example.replace("http://127.0.0.1:9095", f"http://{fleet.lab.bridge_address}:{RECEIVER_PORT}")
        rc, _, err = fleet.lab.run_on(
            MONITOR,
            f"sudo tee {ALERTMANAGER_CONFIG} >/dev/null && sudo amtool check-config {ALERTMANAGER_CONFIG} "
            f"&& sudo systemctl restart {ALERTMANAGER_UNIT}",
            stdin=am,
        )
        if rc != 0:
            raise SystemExit(f"alertmanager: {err}")
        print(f"lab up, stack deployed, Alertmanager routed: {time.monotonic() - started:.0f} s")
        print(f"healthy (no alert firing) after {quiet(fleet):.0f} s more")

        t0 = time.monotonic()
        sh(fleet, "runner-a", f"systemctl stop {UNITS['runner-a']}")
        got = notified(receiver, t0, ("RunnerServiceDown",), 240, runner="lab-primary")
        results.append(("service stopped -> RunnerServiceDown", f"{got.get('RunnerServiceDown', float('nan')):.0f} s"))
        sh(fleet, "runner-a", f"systemctl start {UNITS['runner-a']}")
        quiet(fleet)

        t0 = time.monotonic()
        double.set_connected("lab-primary", False)
        got = notified(receiver, t0, ("RunnerNotListening", "RunnerDisconnected"), 240, runner="lab-primary")
        for name in ("RunnerNotListening", "RunnerDisconnected"):
            results.append((f"disconnected, service running -> {name}", f"{got.get(name, float('nan')):.0f} s"))
        double.set_connected("lab-primary", True)
        quiet(fleet)

        t0 = time.monotonic()
        for host, unit in UNITS.items():
            sh(fleet, host, f"systemctl stop {unit}")
        got = notified(receiver, t0, ("NoHealthyRunner",), 240, environment=STACK)
        results.append(
            ("both production runners stopped -> NoHealthyRunner", f"{got.get('NoHealthyRunner', float('nan')):.0f} s")
        )
        for host, unit in UNITS.items():
            sh(fleet, host, f"systemctl start {unit}")
        quiet(fleet)

        t0 = time.monotonic()
        double.add_release("9.999.0", published_at=time.time() - 22 * 86400)
        got = notified(receiver, t0, ("RunnerVersionBehind",), 900)  # the rule waits for: 10m
        results.append(
            (
                "newer release announced (22 days old) -> RunnerVersionBehind",
                f"{got.get('RunnerVersionBehind', float('nan')):.0f} s",
            )
        )

        t0 = time.monotonic()
        sh(fleet, "runner-a", f"systemctl stop {UNITS['runner-a']} && sleep 30 && systemctl start {UNITS['runner-a']}")
        time.sleep(120)
        false_alarms = [name for name in WATCHED if receiver.first(t0, name, "firing") is not None]
        results.append(("30 s restart of the primary: false alarms", f"{len(false_alarms)} {false_alarms}"))
        receiver.stop()
    print("\nfault -> notification at the webhook receiver (goal <= 120 s for a dead runner):")
    for what, figure in results:
        print(f"  {what:<62} {figure}")
    print(f"benchmark wall time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
