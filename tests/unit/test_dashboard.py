"""The Grafana dashboard: generated, provisionable, bound to the datasource variable, and every
query valid PromQL (promtool's parser) that returns data from series shaped like the fleet's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from components import grafana, layout, shell
from monitoring import dashboard, rule_tests
from monitoring.rule_tests import GH_PROD, PROD_A, PROD_B, Series
from monitoring.rule_tests import Host as FleetHost
from tests.conftest import PROJECT, completed_stack_config, inner_scripts, needs, run_program, unwrap

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


def fleet_series(n: int) -> list[FleetHost | Series]:
    """Ten minutes of a busy production fleet: every family the dashboard reads."""
    a = FleetHost(PROD_A, n).runner("alpha-1")
    b = FleetHost(PROD_B, n).runner("beta-1")
    a.add("github_runner_busy", [0, 1] * (n // 2) + [1] * (n % 2), runner="alpha-1")
    b.add("github_runner_busy", [0] * n, runner="beta-1")
    jobs = list(range(n))  # one job per scrape: waited 40 s, ran 200 s, succeeded
    for le in ["5", "15", "30", "60", "120", "300", "600", "1800", "3600", "+Inf"]:
        a.add("github_runner_job_queue_seconds_bucket", jobs if float(le) >= 40 else [0] * n, runner="alpha-1", le=le)
    for le in ["30", "60", "120", "300", "600", "1200", "1800", "3600", "7200", "21600", "+Inf"]:
        counts = jobs if float(le) >= 200 else [0] * n
        a.add("github_runner_job_duration_seconds_bucket", counts, runner="alpha-1", outcome="succeeded", le=le)
    a.add("github_runner_job_duration_seconds_count", jobs, runner="alpha-1", outcome="succeeded")
    for host, runner in ((a, "alpha-1"), (b, "beta-1")):
        host.add("github_runner_version_deprecated", [0] * n, runner=runner)
        host.add("node_cpu_seconds_total", [10 * i for i in range(n)], cpu="0", mode="idle")
        host.add("node_memory_MemAvailable_bytes", [4e9] * n)
        host.add("node_memory_MemTotal_bytes", [8e9] * n)
        root = {"device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/"}
        host.add("node_filesystem_avail_bytes", [50e9 - 1e6 * i for i in range(n)], **root)
    view = FleetHost(GH_PROD, n)
    view.series.clear()
    view.add("github_runner_github_last_success_timestamp_seconds", rule_tests.times(n))
    for runner in ("alpha-1", "beta-1"):
        view.add("github_runner_github_online", [1] * n, runner=runner)
        view.add("github_runner_github_busy", [0] * n, runner=runner)
    view.add("github_runner_latest_release_info", [1] * n, version="2.331.0")
    view.add("github_runner_version_update_available_timestamp_seconds", [-3 * 86400] * n, version="2.330.0")
    view.add("github_runner_version_behind_releases", [1] * n, version="2.330.0")
    view.add("github_runner_github_rate_limit_remaining", [4990] * n)
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


# --- provisioning: what the program writes to the monitoring host -------------------------

# Grafana's documented dashboards provider fields (docs/sources/administration/provisioning,
# "Dashboards"; pkg/services/provisioning/dashboards/config_reader.go reads apiVersion 1).
PROVIDER_FIELDS = {
    "name": str,
    "orgId": int,
    "folder": str,
    "folderUid": str,
    "type": str,
    "disableDeletion": bool,
    "updateIntervalSeconds": int,
    "allowUiUpdates": bool,
    "options": dict,
}
PROVIDER_OPTIONS = {"path": str, "foldersFromFilesStructure": bool}
GRAFANA_CONFIG = {"provisioningDir": "/etc/grafana/provisioning"}


def assert_grafana_provider_file(text: str) -> dict:
    """The provider file as Grafana's file provisioning reads it: apiVersion 1, providers with
    only documented fields of the documented types, a unique name, the file type, an absolute
    path, and folders that foldersFromFilesStructure does not contradict. Returns the provider."""
    spec = yaml.safe_load(text)
    assert set(spec) == {"apiVersion", "providers"}, spec
    assert spec["apiVersion"] == 1
    [provider] = spec["providers"]
    assert set(provider) <= set(PROVIDER_FIELDS), set(provider) - set(PROVIDER_FIELDS)
    for key, kind in PROVIDER_FIELDS.items():
        if key in provider:
            assert type(provider[key]) is kind, (key, provider[key])
    assert set(provider["options"]) <= set(PROVIDER_OPTIONS)
    for key, kind in PROVIDER_OPTIONS.items():
        if key in provider["options"]:
            assert type(provider["options"][key]) is kind, (key, provider["options"][key])
    assert provider["name"] and provider.get("type", "file") == "file"
    assert provider.get("orgId", 1) >= 1 and provider.get("updateIntervalSeconds", 10) > 0
    path = provider["options"]["path"]
    assert Path(path).is_absolute() and "$" not in text, "Grafana expands $VAR in provider values"
    if provider["options"].get("foldersFromFilesStructure"):
        assert not provider.get("folder") and not provider.get("folderUid"), "Grafana ignores folders then"
    return provider


def test_committed_provisioning_file_has_grafanas_documented_shape():
    provider = assert_grafana_provider_file(PROVIDER.read_text())
    assert provider["allowUiUpdates"] is False


def test_provider_file_shape_check_refuses_what_grafana_would_not_read():
    good = grafana.provider_yaml("production", "/var/lib/grafana/dashboards/runner-fleet-production")
    assert_grafana_provider_file(good)
    for bad in (
        good.replace("apiVersion: 1", "apiVersion: 2"),
        good.replace("orgId: 1", "orgId: one"),
        good.replace("disableDeletion: false", "disableDeletion: 'no'"),
        good.replace("updateIntervalSeconds: 60", "updateInterval: 60"),
        good.replace("path: /var", "path: var"),
        good.replace("providers:", "provider:"),
    ):
        with pytest.raises(AssertionError):
            assert_grafana_provider_file(bad)


def grafana_stack(stack: str = "production", **grafana_config) -> dict:
    config = completed_stack_config(stack)
    config["grafana"] = {**GRAFANA_CONFIG, **grafana_config}
    return config


def test_no_grafana_section_deploys_no_dashboard():
    run = run_program(completed_stack_config("production"), "production")
    assert not [r for r in run.resources if "grafana" in r.name.lower()]
    assert "grafanaDashboard" not in run.outputs


def test_the_program_provisions_the_stacks_own_dashboard_on_the_monitoring_host():
    run = run_program(grafana_stack(), "production")
    component = run.by_name("grafana")
    assert component.type == "fleet:monitoring:GrafanaDashboard"
    command = run.by_name("grafana-dashboard")
    assert command.parent == component.urn
    inputs = unwrap(command.inputs)
    scrape = unwrap(run.by_name("prometheus-scrape-job").inputs)
    assert inputs["connection"] == scrape["connection"], "not on the monitoring host"
    provider_file = "/etc/grafana/provisioning/dashboards/runner-fleet-production.yaml"
    dashboard_dir = "/var/lib/grafana/dashboards/runner-fleet-production"
    assert inputs["triggers"][1:] == [provider_file, dashboard_dir]
    assert command.delete_before_replace, "a moved directory: the old files go before the new ones"
    [create] = inner_scripts(inputs["create"])
    provider = assert_grafana_provider_file(script_variable(create, "PROVIDER_YAML"))
    assert provider["name"] == "runner-fleet-production" and provider["options"]["path"] == dashboard_dir
    assert provider["folder"] == "runner-fleet" and "folderUid" not in provider
    board = json.loads(script_variable(create, "DASHBOARD_JSON"))
    assert board["uid"] == "runner-fleet-production" and board["title"] == "runner-fleet production"
    assert run.outputs["grafanaDashboard"] == {
        "uid": "runner-fleet-production",
        "dashboardFile": f"{dashboard_dir}/runner-fleet.json",
        "providerFile": provider_file,
    }
    [delete] = inner_scripts(inputs["delete"])
    assert script_variable(delete, "PROVIDER_FILE") == provider_file
    assert "DASHBOARD_JSON" not in delete.split(shell.END_OF_INPUTS)[0]


def test_two_stacks_on_one_grafana_never_share_a_uid_title_provider_or_file():
    seen: dict[str, set[str]] = {"uid": set(), "title": set(), "name": set(), "path": set()}
    for stack in ("production", "staging"):
        create = inner_scripts(
            unwrap(run_program(grafana_stack(stack), stack).by_name("grafana-dashboard").inputs)["create"]
        )[0]
        board = json.loads(script_variable(create, "DASHBOARD_JSON"))
        provider = yaml.safe_load(script_variable(create, "PROVIDER_YAML"))["providers"][0]
        for key, value in (
            ("uid", board["uid"]),
            ("title", board["title"]),
            ("name", provider["name"]),
            ("path", script_variable(create, "PROVIDER_FILE")),
        ):
            assert value not in seen[key], (key, value)
            seen[key].add(value)


def test_the_deployed_dashboard_is_the_committed_one_made_the_stacks(committed):
    text = grafana.dashboard_json(committed, stack="staging", job_name="runners")
    board = json.loads(text)
    assert text == grafana.dashboard_json(committed, stack="staging", job_name="runners"), "not deterministic"
    assert "github-runner-health" not in text
    exprs = dashboard.queries(board)
    assert exprs == [q.replace('job="github-runner-health"', 'job="runners"') for q in dashboard.queries(committed)]
    assert any('job="runners"' in q for q in exprs)
    environment = next(v for v in board["templating"]["list"] if v["name"] == "environment")
    assert environment["current"]["value"] == ["staging"] and environment["includeAll"] and environment["multi"]
    rest = {k: v for k, v in board.items() if k not in ("uid", "title", "templating", "panels")}
    assert rest == {k: v for k, v in committed.items() if k not in ("uid", "title", "templating", "panels")}
    assert len(board["panels"]) == len(committed["panels"])
    assert len(grafana.dashboard_json(committed, stack="production", job_name="github-runner-health")) < 100_000, (
        "a command's text is one argument (Linux caps one at 128 KiB)"
    )


def script_variable(script: str, name: str) -> str:
    header = script.split(shell.END_OF_INPUTS, 1)[0]
    out = subprocess.run(["bash", "-c", f'{header}\nprintf %s "${name}"'], capture_output=True, text=True, check=True)
    return out.stdout


# --- the scripts, run locally against a stub systemctl ------------------------------------


class Host:
    """A directory standing in for the monitoring host, with a systemctl that records what it
    was asked and a Grafana unit that is running or not."""

    def __init__(self, root: Path, running: bool = True) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.log = root / "systemctl.log"
        self.state = root / "grafana-started"  # holds the unit's start time while it runs
        systemctl = self.bin / "systemctl"
        systemctl.write_text(
            "#!/bin/bash\n"
            f'echo "$*" >>{self.log}\n'
            f"state={self.state}\n"
            'case "$1" in\n'
            "  is-active) [[ -f $state ]];;\n"
            '  show) date -d "@$(cat "$state")" "+%a %Y-%m-%d %H:%M:%S %Z";;\n'
            '  restart) sleep 1; date +%s >"$state";;\n'
            "esac\n"
        )
        systemctl.chmod(0o755)
        (root / "etc/grafana/provisioning/dashboards").mkdir(parents=True)
        (root / "var/lib/grafana").mkdir(parents=True)
        if running:
            self.state.write_text(str(int(time.time()) - 3600))

    def inputs(self, stack: str = "lab", dashboard: str = '{"uid": "runner-fleet-lab"}') -> dict[str, str]:
        dashboard_dir = layout.grafana_dashboard_dir(str(self.root / "var/lib/grafana/dashboards"), stack)
        return {
            "STACK": stack,
            "PROVIDER_FILE": layout.grafana_provider_file(str(self.root / "etc/grafana/provisioning"), stack),
            "PROVIDER_YAML": grafana.provider_yaml(stack, dashboard_dir),
            "DASHBOARD_DIR": dashboard_dir,
            "DASHBOARD_FILE": layout.DASHBOARD_FILE,
            "DASHBOARD_JSON": dashboard,
            "SERVICE": "grafana-server",
            "LOCK_FILE": str(self.root / "lock"),
        }

    def run(self, script: str, inputs: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if script.endswith("delete.sh"):
            inputs = {k: v for k, v in inputs.items() if k not in ("PROVIDER_YAML", "DASHBOARD_JSON")}
        self.log.write_text("")
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        result = subprocess.run(
            ["bash", "-c", shell.render(script, inputs)], env=env, capture_output=True, text=True, check=False
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def restarts(self) -> int:
        return self.log.read_text().splitlines().count("restart grafana-server")

    def files(self) -> dict[str, str]:
        return {
            str(p.relative_to(self.root)): f"{p.stat().st_mode & 0o777:o}"
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and p.parent != self.bin and p not in (self.log, self.state, self.root / "lock")
        }


CREATE = "grafana-dashboard.create.sh"
DELETE = "grafana-dashboard.delete.sh"
PROVIDER_PATH = "etc/grafana/provisioning/dashboards/runner-fleet-lab.yaml"
DASHBOARD_PATH = "var/lib/grafana/dashboards/runner-fleet-lab/runner-fleet.json"


def test_create_writes_both_files_restarts_a_running_grafana_once_and_is_idempotent(tmp_path):
    host = Host(tmp_path)
    inputs = host.inputs()
    host.run(CREATE, inputs)
    assert host.files() == {PROVIDER_PATH: "644", DASHBOARD_PATH: "644"}
    assert (tmp_path / DASHBOARD_PATH).read_text() == inputs["DASHBOARD_JSON"] + "\n"
    assert_grafana_provider_file((tmp_path / PROVIDER_PATH).read_text())
    assert f"{(tmp_path / DASHBOARD_PATH).parent.stat().st_mode & 0o777:o}" == "755"
    assert host.restarts() == 1
    mtimes = [(tmp_path / p).stat().st_mtime_ns for p in (PROVIDER_PATH, DASHBOARD_PATH)]
    again = host.run(CREATE, inputs)
    assert host.restarts() == 0 and "unchanged" in again.stdout
    assert [(tmp_path / p).stat().st_mtime_ns for p in (PROVIDER_PATH, DASHBOARD_PATH)] == mtimes
    # A changed dashboard is rewritten; the running provider reads it, no restart.
    host.run(CREATE, {**inputs, "DASHBOARD_JSON": '{"uid": "runner-fleet-lab", "version": 2}'})
    assert host.restarts() == 0
    assert "version" in (tmp_path / DASHBOARD_PATH).read_text()


def test_create_without_grafanas_provisioning_directory_writes_nothing(tmp_path):
    host = Host(tmp_path)
    shutil.rmtree(tmp_path / "etc/grafana")
    result = host.run(CREATE, host.inputs(), check=False)
    assert result.returncode != 0
    assert "provisioning directory" in result.stderr and "grafana.provisioningDir" in result.stderr
    assert host.files() == {} and host.restarts() == 0


def test_a_grafana_that_is_not_running_is_not_started(tmp_path):
    host = Host(tmp_path, running=False)
    result = host.run(CREATE, host.inputs())
    assert host.restarts() == 0 and "not running" in result.stdout
    assert set(host.files()) == {PROVIDER_PATH, DASHBOARD_PATH}


def test_a_run_killed_before_the_restart_restarts_on_the_next_run(tmp_path):
    """The provider was written but Grafana not restarted (killed, or Grafana started only
    now, before the file): the next run restarts it although no file changes."""
    host = Host(tmp_path, running=False)
    inputs = host.inputs()
    host.run(CREATE, inputs)
    host.state.write_text(str(int(time.time()) - 600))  # Grafana up since before the file
    host.run(CREATE, inputs)
    assert host.restarts() == 1
    host.run(CREATE, inputs)
    assert host.restarts() == 0


def test_delete_removes_only_the_stacks_files_and_restarts_grafana(tmp_path):
    host = Host(tmp_path)
    host.run(CREATE, host.inputs())
    host.run(CREATE, host.inputs("other"))
    foreign = tmp_path / "etc/grafana/provisioning/dashboards/users.yaml"
    foreign.write_text("apiVersion: 1\nproviders: []\n")
    mine_too = tmp_path / "var/lib/grafana/dashboards/users.json"
    mine_too.write_text("{}")
    host.run(DELETE, host.inputs())
    assert host.restarts() == 1
    assert set(host.files()) == {
        "etc/grafana/provisioning/dashboards/users.yaml",
        "etc/grafana/provisioning/dashboards/runner-fleet-other.yaml",
        "var/lib/grafana/dashboards/users.json",
        "var/lib/grafana/dashboards/runner-fleet-other/runner-fleet.json",
    }
    assert not (tmp_path / DASHBOARD_PATH).parent.exists()
    again = host.run(DELETE, host.inputs())
    assert again.returncode == 0 and host.restarts() == 0


def test_a_delete_killed_after_moving_the_provider_aside_restarts_on_the_next_run(tmp_path):
    host = Host(tmp_path)
    host.run(CREATE, host.inputs())
    provider = tmp_path / PROVIDER_PATH
    provider.rename(provider.with_name(f".{provider.name}.runner-fleet-removed"))  # the kill point
    host.run(DELETE, host.inputs())
    assert host.restarts() == 1 and host.files() == {}


def test_a_delete_keeps_a_stack_directory_holding_someone_elses_file(tmp_path):
    host = Host(tmp_path)
    host.run(CREATE, host.inputs())
    extra = (tmp_path / DASHBOARD_PATH).parent / "notes.json"
    extra.write_text("{}")
    result = host.run(DELETE, host.inputs())
    assert extra.exists() and "left" in result.stdout
    assert not (tmp_path / DASHBOARD_PATH).exists() and not (tmp_path / PROVIDER_PATH).exists()


@needs("promtool")
def test_disk_panel_shows_real_filesystems_and_an_overlay_root_but_no_container_layers(tmp_path):
    """A runner host that is a container has an overlay root (the lab's nspawn hosts do); Docker
    jobs add overlay mounts that are layers, not disks."""
    disk = next(p for p in dashboard.panels(dashboard.model()) if p.get("title") == "Disk free and 4 h forecast")
    [free, forecast] = [promql(t["expr"]) for t in disk["targets"]]
    target = 'job="github-runner-health",environment="production",host="a",instance="a:9102"'
    mounts = {"/": "overlay", "/data": "ext4", "/var/lib/docker/overlay2/abc/merged": "overlay", "/run": "tmpfs"}
    series = [
        {
            "series": f'node_filesystem_avail_bytes{{{target},device="d{i}",fstype="{fstype}",mountpoint="{mount}"}}',
            "values": "100-1x20",
        }
        for i, (mount, fstype) in enumerate(mounts.items())
    ]
    spec = {
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": f"count by (mountpoint) ({expr})",
                        "eval_time": "4m",
                        "exp_samples": [
                            {"labels": '{mountpoint="/"}', "value": 1},
                            {"labels": '{mountpoint="/data"}', "value": 1},
                        ],
                    }
                    for expr in (free, forecast)
                ],
            }
        ],
    }
    path = tmp_path / "disk.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
