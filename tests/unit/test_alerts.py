"""The shipped alert rules, evaluated by `promtool test rules` on synthetic series shaped like
the fleet's real metrics and target labels."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.conftest import needs

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "runner-fleet-alerts.yml"
pytestmark = needs("promtool")

LABELS = 'job="github-runner-health", environment="production", host="{host}", role="{role}", instance="{inst}"'
PRIMARY = LABELS.format(host="Serotonin-paws360", role="primary", inst="192.168.0.13:9102")
SECONDARY = LABELS.format(host="dell-r640-01-runner", role="secondary", inst="192.168.0.51:9101")


def expected(alertname: str, labels: dict[str, str]) -> dict:
    """An expected alert: the rule's own labels plus `labels`, annotations rendered from the
    rule's templates (promtool compares annotations exactly)."""
    rule = next(
        r for group in yaml.safe_load(RULES.read_text())["groups"] for r in group["rules"] if r["alert"] == alertname
    )
    all_labels = {**rule.get("labels", {}), **labels}

    def render(text: str) -> str:
        return re.sub(r"{{ \$labels\.(\w+) }}", lambda m: all_labels[m.group(1)], text)

    return {"exp_labels": all_labels, "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()}}


def run_rule_tests(tmp_path: Path, tests: list[dict]) -> subprocess.CompletedProcess:
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "15s", "tests": tests}
    path = tmp_path / "tests.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False)


def test_rules_are_valid():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dead_primary_is_reported_within_five_minutes_and_secondary_takes_over(tmp_path):
    # Primary online for 1 minute, then offline; secondary online throughout. 15 s samples.
    tests = [
        {
            "interval": "15s",
            "input_series": [
                {"series": f'github_runner_online{{{PRIMARY}, runner="Serotonin-paws360"}}', "values": "1x3 0x40"},
                {"series": f'github_runner_online{{{SECONDARY}, runner="dell-r640-01-runner"}}', "values": "1x44"},
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "RunnerOffline", "exp_alerts": []},
                {
                    "eval_time": "4m",
                    "alertname": "RunnerOffline",
                    "exp_alerts": [
                        expected(
                            "RunnerOffline",
                            {
                                "job": "github-runner-health",
                                "environment": "production",
                                "host": "Serotonin-paws360",
                                "role": "primary",
                                "instance": "192.168.0.13:9102",
                                "runner": "Serotonin-paws360",
                            },
                        )
                    ],
                },
                {"eval_time": "4m", "alertname": "NoRunnerOnline", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "RunningOnSecondaryOnly", "exp_alerts": []},
                {
                    "eval_time": "7m",
                    "alertname": "RunningOnSecondaryOnly",
                    "exp_alerts": [expected("RunningOnSecondaryOnly", {"environment": "production"})],
                },
            ],
        }
    ]
    result = run_rule_tests(tmp_path, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_whole_environment_down_and_exporter_down(tmp_path):
    tests = [
        {
            "interval": "15s",
            "input_series": [
                {"series": f'github_runner_online{{{PRIMARY}, runner="Serotonin-paws360"}}', "values": "0x20"},
                {"series": f'github_runner_online{{{SECONDARY}, runner="dell-r640-01-runner"}}', "values": "0x20"},
                {"series": f"up{{{SECONDARY}}}", "values": "1 0x20"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "3m",
                    "alertname": "NoRunnerOnline",
                    "exp_alerts": [expected("NoRunnerOnline", {"environment": "production"})],
                },
                {
                    "eval_time": "3m",
                    "alertname": "RunnerExporterDown",
                    "exp_alerts": [
                        expected(
                            "RunnerExporterDown",
                            {
                                "job": "github-runner-health",
                                "environment": "production",
                                "host": "dell-r640-01-runner",
                                "role": "secondary",
                                "instance": "192.168.0.51:9101",
                            },
                        )
                    ],
                },
            ],
        }
    ]
    result = run_rule_tests(tmp_path, tests)
    assert result.returncode == 0, result.stdout + result.stderr
