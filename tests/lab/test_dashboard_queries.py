"""The dashboard the program deploys, queried the way Grafana queries it, against the lab's real
Prometheus (Debian's package) on the monitoring host. The stack is deployed through the executor
(lab/executor, the project's imitation of the engine; not the Pulumi CLI).

Grafana itself is not in Debian's archive, so the lab cannot run it: the test checks the files
Grafana would read (the provider file against Grafana's documented fields, the dashboard JSON as
the program renders it) and then does what Grafana's Prometheus data source does with each
panel target of the deployed copy: resolve the datasource variable, expand `$environment`,
`$__interval` and `$__rate_interval` as pkg/promlib/models/query.go does, and send the query to
`/api/v1/query` (instant targets) or `/api/v1/query_range` (the others, start and end aligned to
the step). Every target must answer without error and with at least one finite value, with the
environment variable at its default (the stack) and at "All".

A target whose producer is not in the lab yet is a strict xfail naming that producer, so it can
neither pass silently now nor stay marked once the producer lands. Prints panel → series count.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from components import grafana, layout
from fleet import config as fleet_config
from lab.fleet import LAB_REPO, MONITOR, PRODUCTION, PROJECT_DIR, LabFleet
from lab.github_double import GitHubDouble
from monitoring import dashboard

pytestmark = pytest.mark.lab

STACK = "lab"
JOB = "github-runner-health"
PROVISIONING_DIR = "/etc/grafana/provisioning"
DASHBOARDS_DIR = "/var/lib/grafana/dashboards"
PROVIDER_FILE = layout.grafana_provider_file(PROVISIONING_DIR, STACK)
DASHBOARD_FILE = f"{layout.grafana_dashboard_dir(DASHBOARDS_DIR, STACK)}/{layout.DASHBOARD_FILE}"
PROM = "http://127.0.0.1:9090"

# Grafana's Prometheus data source as a user sets it up for this Prometheus: its "Scrape
# interval" equal to the job's (15 s, the lab's prometheus.scrapeInterval; also Grafana's default).
SCRAPE_SECONDS = 15
# The checked time range, ending now, and a panel's maxDataPoints (its width in pixels).
RANGE_SECONDS = 15 * 60
MAX_DATA_POINTS = 1000
SAFE_RESOLUTION = 11000  # query.go: safeResolution

# Producers that are not part of every lab yet, by the families they export (METRICS.md).
GITHUB_VIEW = "GitHub-view collector (METRICS.md §2): runner-fleet:githubViewToken"
JOB_HOOKS = "job hooks' histograms (METRICS.md §3) fed by jobs the GitHub double dispatches"
# The lab's hosts run on an overlay root and have no other disk; node_exporter's default
# --collector.filesystem.fs-types-exclude drops overlay, so they export no node_filesystem_*
# series at all (test_the_lab_hosts_have_no_disk_node_exporter_reports checks that premise).
LAB_DISKS = "node_exporter's filesystem series: the lab's hosts have only an overlay root, which it excludes"
PRODUCER_FAMILIES = {
    LAB_DISKS: re.compile(r"\bnode_filesystem_"),
    GITHUB_VIEW: re.compile(
        r"\bgithub_runner_(github_|latest_release_|version_update_available_|version_behind_releases)"
    ),
    JOB_HOOKS: re.compile(r"\bgithub_runner_job_(queue|duration)_seconds"),
}
LANDED = {
    LAB_DISKS: False,
    GITHUB_VIEW: "githubViewToken" in fleet_config.KNOWN_KEYS and hasattr(GitHubDouble, "add_read_pat"),
    JOB_HOOKS: hasattr(GitHubDouble, "queue_job") and (PROJECT_DIR / "components/host_files/runner-hook.sh").exists(),
}


@dataclass(frozen=True)
class Target:
    panel: str
    ref: str
    expr: str
    instant: bool

    @property
    def id(self) -> str:
        return f"{self.panel} [{self.ref}]"


def targets(board: dict[str, Any]) -> list[Target]:
    return [
        Target(p["title"], t["refId"], t["expr"], bool(t.get("instant")))
        for p in dashboard.panels(board)
        for t in p.get("targets", [])
    ]


COMMITTED = json.loads(dashboard.OUTPUT.read_text())


def missing_producers(expr: str) -> list[str]:
    return [name for name, family in PRODUCER_FAMILIES.items() if family.search(expr) and not LANDED[name]]


def target_params() -> list[Any]:
    params = []
    for target in targets(COMMITTED):
        missing = missing_producers(target.expr)
        marks = (
            [pytest.mark.xfail(strict=True, reason="producer not deployed in the lab yet: " + "; ".join(missing))]
            if missing
            else []
        )
        params.append(pytest.param(target, id=target.id, marks=marks))
    return params


# --- Grafana's variable expansion (pkg/promlib/models/query.go, intervalv2) ---------------


def go_duration(seconds: int) -> str:
    """Go's time.Duration.String() for whole seconds, as query.go writes $__rate_interval."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def grafana_interval(range_seconds: int) -> int:
    """intervalCalculator.Calculate with the data source's scrape interval as minimum. Only the
    case where range/maxDataPoints is below the minimum is implemented (no rounding table)."""
    calculated = range_seconds / MAX_DATA_POINTS
    assert calculated < SCRAPE_SECONDS, "the checked range would need Grafana's interval rounding"
    safe = range_seconds / SAFE_RESOLUTION
    return max(SCRAPE_SECONDS, math.ceil(safe))


def expand(expr: str, environment: list[str], step: int) -> str:
    """The expression as Grafana sends it: `$environment` as Grafana formats a multi-value
    variable for Prometheus (one value as is, several as `(a|b)`, regex-escaped), then the
    built-in interval variables."""
    values = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in environment]
    env = values[0] if len(values) == 1 else "(" + "|".join(values) + ")"
    expr = expr.replace("${environment}", env).replace("$environment", env)
    rate_interval = max(step + SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)
    expr = expr.replace("$__rate_interval", go_duration(rate_interval))
    expr = expr.replace("$__interval", f"{step}s")
    assert "$" not in expr, f"a variable Grafana would expand is left: {expr}"
    return expr


# --- the lab -----------------------------------------------------------------------------


def on_monitor(fleet: LabFleet, command: str) -> str:
    rc, out, err = fleet.lab.run_on(MONITOR, f"sudo bash -c {shlex.quote(command)}")
    assert rc == 0, f"{command}: {err}"
    return out


def prom_get(fleet: LabFleet, path: str, **params: str) -> dict[str, Any]:
    """One Prometheus API call on the monitoring host; its JSON whatever the HTTP status (a bad
    query is a 400 with `error`)."""
    args = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    return json.loads(on_monitor(fleet, f"curl -sS -G {args} {PROM}{path}"))


def instant_value(fleet: LabFleet, expr: str) -> float | None:
    answer = prom_get(fleet, "/api/v1/query", query=expr)
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for(predicate, timeout: float, what: str, interval: float = 2.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


@dataclass
class Deployed:
    fleet: LabFleet
    board: dict[str, Any]
    config: dict[str, Any]
    environments: list[str]
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rows: list[tuple[str, str, str, int, int]] = field(default_factory=list)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, request):
    started = time.monotonic()
    with LabFleet.start(["runner-a", "runner-b"], state_dir=tmp_path_factory.mktemp("lab-dashboard")) as fleet:
        figures = {"lab up": time.monotonic() - started}
        # Grafana's package creates its provisioning directory; Grafana is not installable here.
        on_monitor(fleet, f"install -d -m 0755 {PROVISIONING_DIR} && ! systemctl cat grafana-server >/dev/null 2>&1")
        config = fleet.config(PRODUCTION)
        config["runner-fleet:grafana"] = {"provisioningDir": PROVISIONING_DIR}
        double = fleet.double
        assert double is not None
        if LANDED[GITHUB_VIEW]:
            view_token = "github_pat_lab" + secrets.token_hex(20)
            double.add_read_pat(view_token)
            config["runner-fleet:githubViewToken"] = view_token
            # The pinned version, then a newer release: the version-age panels have a value.
            double.add_release(fleet.artifacts["runner"]["version"], published_at=time.time() - 20 * 86400)
            double.add_release("9.999.0", published_at=time.time() - 2 * 86400)
        t = time.monotonic()
        report = fleet.run(STACK, PRODUCTION, config=config)
        assert report.ok, report.error
        figures["deploy"] = time.monotonic() - t
        board = json.loads(on_monitor(fleet, f"cat {DASHBOARD_FILE}"))
        state = Deployed(fleet, board, config, [STACK], figures)
        t = time.monotonic()
        wait_for(
            lambda: instant_value(fleet, f'count(count_over_time(up{{job="{JOB}"}}[1m]) >= 3)') == 2,
            120,
            "three scrapes of both exporters",
        )
        wait_for(
            lambda: instant_value(fleet, f'count(github_runner_online{{job="{JOB}"}} == 1)') == 2, 90, "both online"
        )
        figures["scrapes"] = time.monotonic() - t
        answer = prom_get(fleet, "/api/v1/label/environment/values", **{"match[]": f'up{{job="{JOB}"}}'})
        state.environments = sorted(answer["data"])
        disks = prom_get(fleet, "/api/v1/query", query=f'node_filesystem_avail_bytes{{job="{JOB}"}}')
        state.notes.append(
            "filesystems node_exporter reports: "
            + ", ".join(
                sorted({f"{r['metric']['mountpoint']} ({r['metric']['fstype']})" for r in disks["data"]["result"]})
            )
        )
        if LANDED[JOB_HOOKS]:
            t = time.monotonic()
            job = double.queue_job(LAB_REPO, ["self-hosted", "production"], name="dashboard build", duration=3)
            wait_for(lambda: double.job(job["id"])["status"] == "completed", 90, "the job to complete")
            try:
                for family in ("github_runner_job_queue_seconds_count", "github_runner_job_duration_seconds_count"):
                    wait_for(
                        lambda f=family: (instant_value(fleet, f'sum(increase({f}{{job="{JOB}"}}[5m]))') or 0) > 0,
                        90,
                        f"{family} to count the job",
                    )
                    # A range query's last step is up to one step before now: wait until a step
                    # after the count's increase has passed, as a user of the panel would.
                    wait_for(
                        lambda f=family: (
                            instant_value(fleet, f'sum(increase({f}{{job="{JOB}"}}[1m] offset {SCRAPE_SECONDS}s))') or 0
                        )
                        > 0,
                        60,
                        f"{family}'s increase one step back",
                    )
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the job: {double.job(job['id'])}; {job_diagnostics(fleet)}") from None
            figures["job"] = time.monotonic() - t
        if LANDED[GITHUB_VIEW]:
            t = time.monotonic()
            wait_for(
                lambda: instant_value(fleet, f'count(github_runner_github_online{{environment="{STACK}"}} == 1)') == 2,
                90,
                "both runners online in GitHub's view",
            )
            wait_for(
                lambda: instant_value(fleet, f'count(github_runner_version_behind_releases{{environment="{STACK}"}})')
                is not None,
                90,
                "the version families",
            )
            figures["github view"] = time.monotonic() - t
        yield state
        write_table(request, state)


def job_diagnostics(fleet: LabFleet) -> str:
    """What the hosts and Prometheus hold of the job histograms, for a failure message."""
    out = []
    for host in ("runner-a", "runner-b"):
        _, text, _ = fleet.lab.run_on(
            host,
            'sudo bash -c \'grep -h "_count\\|rejected" /var/lib/runner-fleet/lab/textfile/*.prom; '
            "ls -la /var/lib/runner-fleet/lab/spool/*'",
        )
        out.append(f"{host}: {text}")
    series = prom_get(fleet, "/api/v1/query", query=f'github_runner_job_queue_seconds_count{{job="{JOB}"}}[5m]')
    out.append(f"Prometheus: {series['data']['result']}")
    return "\n".join(out)


def write_table(request, state: Deployed) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not state.rows:
        return
    with capture.global_and_fixture_disabled():
        _write_table(reporter, state)


def _write_table(reporter, state: Deployed) -> None:
    reporter.ensure_newline()
    reporter.write_sep("-", "dashboard queries on the lab's Prometheus")
    reporter.write_line("  ".join(f"{k} {v:.0f} s" for k, v in state.figures.items()))
    for note in state.notes:
        reporter.write_line(note)
    width = max(len(r[0]) for r in state.rows)
    reporter.write_line(f"{'panel [ref]':<{width}}  {'kind':<7} {'environment':<11} series  finite")
    for panel, kind, env, series, finite in state.rows:
        reporter.write_line(f"{panel:<{width}}  {kind:<7} {env:<11} {series:>6}  {finite:>6}")


# --- tests -------------------------------------------------------------------------------


def test_the_monitoring_host_holds_the_stacks_dashboard_and_provider(deployed):
    fleet = deployed.fleet
    assert deployed.board == json.loads(grafana.dashboard_json(COMMITTED, stack=STACK, job_name=JOB))
    assert targets(deployed.board) == [
        Target(t.panel, t.ref, t.expr.replace('job="github-runner-health"', f'job="{JOB}"'), t.instant)
        for t in targets(COMMITTED)
    ]
    provider = yaml.safe_load(on_monitor(fleet, f"cat {PROVIDER_FILE}"))
    [entry] = provider["providers"]
    assert provider["apiVersion"] == 1
    assert entry["name"] == f"runner-fleet-{STACK}" and entry["type"] == "file"
    assert entry["options"]["path"] == DASHBOARD_FILE.rsplit("/", 1)[0]
    modes = on_monitor(fleet, f"stat -c '%U %a %n' {PROVIDER_FILE} {DASHBOARD_FILE} {entry['options']['path']}")
    assert [line.split()[:2] for line in modes.splitlines()] == [["root", "644"], ["root", "644"], ["root", "755"]]
    leftovers = on_monitor(fleet, f"find {PROVISIONING_DIR} {DASHBOARDS_DIR} -name '.*runner-fleet*'")
    assert leftovers == "", leftovers
    # Unchanged, a second deploy runs nothing on the monitoring host.
    again = fleet.run(STACK, PRODUCTION, config=deployed.config)
    assert again.ok, again.error
    assert again.commands_executed == 0


def test_every_target_uses_the_datasource_variable_bound_to_this_prometheus(deployed):
    variables = {v["name"]: v for v in deployed.board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in dashboard.panels(deployed.board):
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    # The one data source the variable resolves to in the lab: this Prometheus, ready.
    assert on_monitor(deployed.fleet, f"curl -fsS {PROM}/-/ready").strip()


def test_the_environment_variable_lists_the_stack(deployed):
    """label_values(<selector>, environment): Grafana asks /api/v1/label/environment/values."""
    [variable] = [v for v in deployed.board["templating"]["list"] if v["name"] == "environment"]
    m = re.fullmatch(r"label_values\((.*), environment\)", variable["query"])
    assert m, variable["query"]
    now = time.time()
    answer = prom_get(
        deployed.fleet,
        "/api/v1/label/environment/values",
        **{"match[]": m.group(1), "start": str(now - RANGE_SECONDS), "end": str(now)},
    )
    assert answer["status"] == "success", answer
    assert STACK in answer["data"]
    assert variable["current"]["value"] == [STACK]
    assert deployed.environments == sorted(answer["data"])


@pytest.mark.parametrize("target", target_params())
def test_every_panel_query_runs_and_returns_data(deployed, target):
    [deployed_target] = [t for t in targets(deployed.board) if t.id == target.id]
    step = grafana_interval(RANGE_SECONDS)
    for label, environment in (("default", [STACK]), ("All", deployed.environments)):
        expr = expand(deployed_target.expr, environment, step)
        now = time.time()
        if target.instant:
            answer = prom_get(deployed.fleet, "/api/v1/query", query=expr, time=f"{now:.3f}")
        else:
            # query.go's AlignTimeRange: start and end rounded down to a multiple of the step.
            end = math.floor(now / step) * step
            start = math.floor((now - RANGE_SECONDS) / step) * step
            answer = prom_get(
                deployed.fleet, "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step)
            )
        assert answer.get("status") == "success", f"{expr}: {answer.get('errorType')}: {answer.get('error')}"
        result = answer["data"]["result"]
        values = (
            [float(s["value"][1]) for s in result]
            if target.instant
            else [float(v) for s in result for _, v in s["values"]]
        )
        finite = sum(1 for v in values if math.isfinite(v))
        deployed.rows.append((target.id, "instant" if target.instant else "range", label, len(result), finite))
        assert result, f"no series: {expr}"
        assert finite, f"only NaN/Inf values: {expr}"


def test_the_lab_hosts_have_no_disk_node_exporter_reports(deployed):
    """The premise of the disk panel's xfail: when the lab gives its hosts a real filesystem this
    fails, and the xfail goes."""
    fleet = deployed.fleet
    reported = prom_get(fleet, "/api/v1/query", query=f'node_filesystem_avail_bytes{{job="{JOB}"}}')["data"]["result"]
    kinds = {(r["metric"]["fstype"], r["metric"]["mountpoint"]) for r in reported}
    assert all(re.fullmatch(dashboard.REAL_FS.split('"')[1], fstype) for fstype, _ in kinds), kinds
    assert "/" not in {mountpoint for _, mountpoint in kinds}, kinds
    for host in ("runner-a", "runner-b"):
        rc, out, err = deployed.fleet.lab.run_on(host, "findmnt -n -o FSTYPE /")
        assert rc == 0, err
        assert out.strip() == "overlay", out


def test_destroy_removes_the_stacks_dashboard_and_provider(deployed):
    fleet = deployed.fleet
    on_monitor(fleet, f"echo '{{}}' >{DASHBOARDS_DIR}/users.json")  # the user's, beside the stack's
    report = fleet.run(STACK, PRODUCTION, mode="destroy", config=deployed.config)
    assert report.ok, report.error
    left = on_monitor(fleet, f"find {PROVISIONING_DIR} {DASHBOARDS_DIR} -mindepth 1 | sort").split()
    assert left == [f"{PROVISIONING_DIR}/dashboards", f"{DASHBOARDS_DIR}/users.json"], left
