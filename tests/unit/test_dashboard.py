"""The Grafana dashboard: generated, provisionable, bound to the datasource variable, and every
query valid PromQL (promtool's parser) that returns data from series shaped like the fleet's."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring import dashboard, rule_tests
from monitoring.rule_tests import GH_PROD, PROD_A, PROD_B, Host, Series
from tests.conftest import PROJECT, needs

PROVIDER = PROJECT / "monitoring" / "grafana" / "provisioning" / "dashboards" / "runner-fleet.yaml"
METRICS = PROJECT / "monitoring" / "METRICS.md"
# Grafana's variables as a provisioned dashboard expands them with "All" environments selected.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$environment": "production|staging"}


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(dashboard.OUTPUT.read_text())


def test_committed_json_is_the_generator_output():
    assert dashboard.OUTPUT.read_text() == dashboard.render(), "run: python -m monitoring.dashboard"


def test_stable_uid_and_title(committed):
    assert committed["uid"] == "runner-fleet"
    assert committed["title"] == "runner-fleet"
    assert "id" not in committed or committed["id"] is None


def test_only_the_datasource_variable_is_used(committed):
    text = json.dumps(committed)
    assert "DS_PROMETHEUS" not in text and "__inputs" not in committed
    variables = {v["name"]: v for v in committed["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    refs = [p["datasource"] for p in dashboard.panels(committed) if p["type"] != "row"]
    refs += [t["datasource"] for p in dashboard.panels(committed) for t in p.get("targets", [])]
    refs += [v["datasource"] for v in committed["templating"]["list"] if "datasource" in v]
    assert refs and all(ref == {"type": "prometheus", "uid": "${datasource}"} for ref in refs), refs


def test_panels_cover_the_fleet(committed):
    by_title = {p.get("title"): p["type"] for p in dashboard.panels(committed)}
    assert {
        "Hosts up": "stat",
        "Runners online": "stat",
        "Runners busy": "stat",
        "Runners offline": "stat",
        "Runner state (host's view)": "state-timeline",
        "Runner state (GitHub's view)": "state-timeline",
        "Job wait for a runner (p50, p95)": "timeseries",
        "CPU busy": "timeseries",
        "Memory available": "timeseries",
        "Disk free and 4 h forecast": "timeseries",
        "Metric age": "timeseries",
        "Pinned version superseded for": "stat",
    }.items() <= by_title.items()
    wait = next(p for p in dashboard.panels(committed) if p.get("title") == "Job wait for a runner (p50, p95)")
    assert [t["expr"].split(",")[0] for t in wait["targets"]] == ["histogram_quantile(0.5", "histogram_quantile(0.95"]
    disk = next(p for p in dashboard.panels(committed) if p.get("title") == "Disk free and 4 h forecast")
    assert any(t["expr"].startswith("predict_linear(") for t in disk["targets"])
    ids = [p["gridPos"] for p in dashboard.panels(committed)]
    assert len({(g["x"], g["y"]) for g in ids}) == len(ids), "panels overlap"


def test_provisioning_file_points_grafana_at_the_dashboard_directory():
    spec = yaml.safe_load(PROVIDER.read_text())
    assert spec["apiVersion"] == 1
    [provider] = spec["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]).is_absolute()
    assert provider["allowUiUpdates"] is False


def test_every_family_a_query_reads_is_in_the_contract():
    contract = METRICS.read_text()
    node_families = {
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes",
    }
    for expr in dashboard.queries():
        for name in re.findall(r"\b((?:github_runner|node|runner_fleet)[a-zA-Z0-9_:]*)", expr):
            if name.startswith("node_"):
                assert name in node_families, (name, expr)
            else:
                family = re.sub(r"_(bucket|count|sum)$", "", name)
                assert f"`{family}`" in contract, (name, expr)


def promql(expr: str) -> str:
    """A dashboard query as Prometheus runs it: Grafana's variables expanded, label_values()
    reduced to its series selector."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    m = re.fullmatch(r"label_values\((.*), \w+\)", expr)
    return m.group(1) if m else expr


def query_rules(tmp_path: Path) -> Path:
    """Each query as an alert that fires while the query returns anything."""
    rules = [
        {"alert": f"DashboardQuery{i}", "expr": f"count({promql(q)}) > 0"} for i, q in enumerate(dashboard.queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "interval": "15s", "rules": rules}]}))
    return path


@needs("promtool")
def test_every_query_is_valid_promql(tmp_path):
    result = subprocess.run(
        ["promtool", "check", "rules", str(query_rules(tmp_path))], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(dashboard.queries())} rules found" in result.stdout


def fleet_series(n: int) -> list[Host | Series]:
    """Ten minutes of a busy production fleet: every family the dashboard reads."""
    a = Host(PROD_A, n).runner("alpha-1")
    b = Host(PROD_B, n).runner("beta-1")
    a.add("github_runner_busy", [0, 1] * (n // 2) + [1] * (n % 2), runner="alpha-1")
    b.add("github_runner_busy", [0] * n, runner="beta-1")
    jobs = list(range(n))  # one job per scrape: waited 40 s, ran 200 s, succeeded
    for le in ["5", "15", "30", "60", "120", "300", "600", "1800", "3600", "+Inf"]:
        a.add("github_runner_job_queue_seconds_bucket", jobs if float(le) >= 40 else [0] * n, runner="alpha-1", le=le)
    for le in ["30", "60", "120", "300", "600", "1200", "1800", "3600", "7200", "21600", "+Inf"]:
        counts = jobs if float(le) >= 200 else [0] * n
        a.add("github_runner_job_duration_seconds_bucket", counts, runner="alpha-1", outcome="succeeded", le=le)
    a.add("github_runner_job_duration_seconds_count", jobs, runner="alpha-1", outcome="succeeded")
    for host in (a, b):
        host.add("node_cpu_seconds_total", [10 * i for i in range(n)], cpu="0", mode="idle")
        host.add("node_memory_MemAvailable_bytes", [4e9] * n)
        host.add("node_memory_MemTotal_bytes", [8e9] * n)
        root = {"device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/"}
        host.add("node_filesystem_avail_bytes", [50e9 - 1e6 * i for i in range(n)], **root)
    view = Host(GH_PROD, n)
    view.series.clear()
    view.add("github_runner_github_last_success_timestamp_seconds", rule_tests.times(n))
    for runner in ("alpha-1", "beta-1"):
        view.add("github_runner_github_online", [1] * n, runner=runner)
        view.add("github_runner_github_busy", [0] * n, runner=runner)
    view.add("github_runner_latest_release_info", [1] * n, version="2.331.0")
    view.add("github_runner_version_update_available_timestamp_seconds", [-3 * 86400] * n, version="2.330.0")
    return [a, b, view]


@needs("promtool")
def test_every_query_returns_data_from_a_fleet(tmp_path):
    n = 41
    scenario = rule_tests.Scenario("dashboard", n, fleet_series(n), {})
    names = [f"DashboardQuery{i}" for i in range(len(dashboard.queries()))]
    spec = {
        "rule_files": [str(rule_tests.RULES), str(query_rules(tmp_path))],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": scenario.input_series(),
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": name, "exp_alerts": [{"exp_labels": {}}]} for name in names
                ],
            }
        ],
    }
    path = tmp_path / "dashboard-test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False)
    failing = sorted(set(re.findall(r"alertname: (DashboardQuery\d+)", result.stdout + result.stderr)))
    queries = dashboard.queries()
    assert result.returncode == 0, [queries[int(f.removeprefix("DashboardQuery"))] for f in failing] or result.stderr


def test_committed_json_decodes_as_the_sdks_dashboard_model(committed):
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel

    register_default_plugins()
    decoded = DashboardModel.from_json(committed)
    assert decoded.uid == "runner-fleet"
    assert [p.type_val for p in decoded.panels] == [p["type"] for p in committed["panels"]]
