"""The shipped alert rules under Debian's promtool: valid, and every alert's firing time,
silence and resolution as monitoring/tests/runner-fleet-alerts.test.yml pins them (generated
from the scenarios in monitoring/rule_tests.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring import rule_tests
from tests.conftest import PROJECT, needs

RULES = rule_tests.RULES
TEST_FILE = rule_tests.TEST_FILE
pytestmark = needs("promtool")


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)  # noqa: S506 (the safe loader, in C)


@pytest.fixture(scope="module")
def test_spec() -> dict:
    return load(TEST_FILE)


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, check=False, timeout=120)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alert_section() -> str:
    text = (PROJECT / "README.md").read_text()
    return text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]


def test_rules_pass_promtool_check():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_committed_rule_tests_are_the_generated_ones():
    assert TEST_FILE.read_text() == rule_tests.render(), "run: python -m monitoring.rule_tests"


def test_rule_tests_pass():
    result = promtool("test", "rules", str(TEST_FILE))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_every_alert_fires_at_a_pinned_step_and_resolves(test_spec):
    """For every alert some scenario checks it silent one evaluation step before it fires,
    firing at that step, and silent again after it resolves."""
    pinned, resolved = set(), set()
    for test in test_spec["tests"]:
        by_alert: dict[str, dict[int, set]] = {}
        for check in test["alert_rule_test"]:
            seconds = int(check["eval_time"].removesuffix("s"))
            instances = {tuple(sorted(a["exp_labels"].items())) for a in check["exp_alerts"]}
            by_alert.setdefault(check["alertname"], {})[seconds] = instances
        for alert, steps in by_alert.items():
            for t, now in steps.items():
                before = steps.get(t - rule_tests.STEP)
                if before is not None and now - before:
                    pinned.add(alert)
                if before is not None and before - now:
                    resolved.add(alert)
    assert set(rule_tests.ALERTS) - pinned == set()
    assert set(rule_tests.ALERTS) - resolved == set()


def test_silence_scenarios_cover_every_runner_state_alert(test_spec):
    quiet = [t for t in test_spec["tests"] if "stay silent" in t["name"]]
    assert {t["name"] for t in quiet} >= {
        "30 s restarts stay silent (samples 0 s after each evaluation)",
        "30 s restarts stay silent (samples 5 s after each evaluation)",
        "30 s restarts stay silent (samples 10 s after each evaluation)",
        "single missed scrapes stay silent",
    }
    for test in quiet:
        checked = {c["alertname"] for c in test["alert_rule_test"]}
        assert checked >= set(rule_tests.RUNNER_STATE), test["name"]
        assert all(c["exp_alerts"] == [] for c in test["alert_rule_test"]), test["name"]
        steps = sorted({int(c["eval_time"].removesuffix("s")) for c in test["alert_rule_test"]})
        assert set(range(0, 301, rule_tests.STEP)) <= set(steps), test["name"]


def test_a_later_firing_time_fails_the_tests(tmp_path):
    """The tests can fail: with every alert's `for:` 15 s longer, promtool reports every alert."""
    spec = yaml.safe_load(RULES.read_text())
    for group in spec["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                seconds = rule_seconds(rule.get("for", "0s")) + rule_tests.STEP
                rule["for"] = f"{seconds}s"
    shifted = tmp_path / RULES.name
    shifted.write_text(yaml.safe_dump(spec, sort_keys=False))
    path = tmp_path / "tests.yml"
    path.write_text(
        TEST_FILE.read_text().replace("rule_files: [../runner-fleet-alerts.yml]", f"rule_files: [{shifted}]")
    )
    assert path.read_text() != TEST_FILE.read_text()
    result = promtool("test", "rules", str(path))
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+), time:", result.stdout + result.stderr))
    assert failed == set(rule_tests.ALERTS)


def rule_seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


@pytest.fixture(scope="module")
def scenarios() -> list[rule_tests.Scenario]:
    return rule_tests.scenarios()


@pytest.mark.parametrize("alert", rule_tests.ALERTS)
def test_alert_is_labelled_annotated_and_documented(alert, scenarios):
    rule = rule_tests.RULE_SET[alert]
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert set(rule["annotations"]) == {"summary", "check_first", "runbook"}
    assert rule["annotations"]["runbook"] == f"README.md, Alerts: {alert}"
    assert re.search(rf"^#### {alert}\n", alert_section(), re.M), f"README Alerts has no runbook for {alert}"
    # Every instance the scenarios expect carries environment and role, so routing and
    # silences can match on them.
    for scenario in scenarios:
        for firing in scenario.expect.get(alert, []):
            labels = rule_tests.expected(alert, firing.labels)["exp_labels"]
            assert {"environment", "role", "severity"} <= set(labels), (scenario.name, labels)


def test_readme_runbooks_name_only_shipped_alerts():
    documented = set(re.findall(r"^#### (\w+)$", alert_section(), re.M))
    assert documented == set(rule_tests.ALERTS)


ALERTMANAGER = PROJECT / "monitoring" / "alertmanager" / "runner-fleet.yml"


@needs("amtool")
def test_alertmanager_example_is_valid():
    result = subprocess.run(
        ["amtool", "check-config", str(ALERTMANAGER)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs("amtool")
@pytest.mark.parametrize("alert", rule_tests.ALERTS)
def test_every_alert_reaches_a_runner_fleet_receiver_within_the_budget(alert):
    """Routed by amtool itself to the runner-fleet receivers, whose group_wait keeps the dead-
    runner budget (92 s to firing + group_wait <= 120 s; the rules file's header)."""
    severity = rule_tests.RULE_SET[alert]["labels"]["severity"]
    result = subprocess.run(
        [
            "amtool",
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"alertname={alert}",
            f"severity={severity}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    receiver = result.stdout.strip()
    assert receiver == ("runner-fleet-page" if severity == "critical" else "runner-fleet")
    route = next(
        r for r in yaml.safe_load(ALERTMANAGER.read_text())["route"]["routes"] if r["receiver"] == "runner-fleet"
    )
    waits = [route["group_wait"]] + [r["group_wait"] for r in route.get("routes", []) if r["receiver"] == receiver]
    assert 92 + rule_seconds(waits[-1]) <= 120


def test_alertmanager_inhibitions_name_shipped_alerts():
    spec = yaml.safe_load(ALERTMANAGER.read_text())
    names = set()
    for rule in spec["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            m = re.fullmatch(r'alertname=~?"(.*)"', matcher)
            if m:
                names |= set(m.group(1).split("|"))
    assert names and names <= set(rule_tests.ALERTS)


def test_every_family_the_rules_read_is_in_the_contract():
    contract = (PROJECT / "monitoring" / "METRICS.md").read_text()
    node = {
        "node_filesystem_avail_bytes",
        "node_filesystem_size_bytes",
        "node_filesystem_readonly",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_textfile_scrape_error",
    }
    read = set()
    for rule in rules():
        read |= set(re.findall(r"\b((?:github_runner|node|runner_fleet)[a-zA-Z0-9_:]*)", rule["expr"]))
    assert read
    for name in read:
        if name.startswith("node_"):
            assert name in node, name
        else:
            assert f"`{re.sub(r'_(bucket|count|sum)$', '', name)}`" in contract, name
