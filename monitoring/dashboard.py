"""The runner-fleet Grafana dashboard, built with grafana-foundation-sdk (Grafana 11.6 schema).

    python -m monitoring.dashboard           # rewrites monitoring/grafana/runner-fleet.json
    python -m monitoring.dashboard --check   # exit 1 if the committed JSON is not this output

The dashboard has a fixed uid (links and provisioning keep working across edits) and reaches
Prometheus through the `datasource` template variable, so a provisioned copy works with whatever
Prometheus data source the Grafana has (`${DS_PROMETHEUS}` inputs only work on UI import).
Every query reads the families of monitoring/METRICS.md; QUERIES lists them for the tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "grafana" / "runner-fleet.json"
UID = "runner-fleet"
TITLE = "runner-fleet"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

HEALTH = 'job="github-runner-health", environment=~"$environment"'
GITHUB = 'environment=~"$environment"'
REAL_FS = 'fstype!~"tmpfs|ramfs|devtmpfs|overlay|squashfs|nsfs|autofs|fuse.*"'


def query(expr: str, legend: str, ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    return q.instant() if instant else q.range()


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(v, c) for v, c in steps])


def summary_stat(title: str, expr: str, description: str, colors: ThresholdsConfig) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, "{{environment}}", instant=True))
        .thresholds(colors)
        .height(4)
        .span(4)
    )


GREEN = thresholds((None, "green"))
ZERO_IS_RED = thresholds((None, "red"), (1, "green"))
NONZERO_IS_RED = thresholds((None, "green"), (1, "red"))


def fleet_summary() -> list[stat.Panel]:
    per_env_zero = f"0 * group by (environment) (up{{{HEALTH}}})"
    return [
        summary_stat(
            "Hosts up",
            f"sum by (environment) (up{{{HEALTH}}})",
            "Exporters Prometheus scraped successfully, per environment.",
            ZERO_IS_RED,
        ),
        summary_stat(
            "Runners healthy",
            f'sum by (environment) (runner_fleet:runner_healthy{{environment=~"$environment"}}) or {per_env_zero}',
            "Listening, metrics fresh, not offline in GitHub's view (recording rule runner_fleet:runner_healthy).",
            ZERO_IS_RED,
        ),
        summary_stat(
            "Runners online",
            f"sum by (environment) (github_runner_online{{{HEALTH}}})",
            "Runners whose own log says they are connected and listening.",
            ZERO_IS_RED,
        ),
        summary_stat(
            "Runners busy",
            f"sum by (environment) (github_runner_busy{{{HEALTH}}})",
            "Runners running a job now.",
            GREEN,
        ),
        summary_stat(
            "Runners offline",
            f"sum by (environment) (1 - github_runner_online{{{HEALTH}}})",
            "Runners that are not listening (service stopped or not connected).",
            NONZERO_IS_RED,
        ),
        summary_stat(
            "Offline as GitHub sees it",
            f"sum by (environment) (1 - github_runner_github_online{{{GITHUB}}})",
            "Declared runners GitHub lists offline or not at all (GitHub-view collector).",
            NONZERO_IS_RED,
        ),
    ]


RUNNER_STATES = ValueMap(
    {
        "0": ValueMappingResult(text="service down", color="red", index=0),
        "1": ValueMappingResult(text="not listening", color="orange", index=1),
        "2": ValueMappingResult(text="idle", color="green", index=2),
        "3": ValueMappingResult(text="busy", color="blue", index=3),
    }
)
GITHUB_STATES = ValueMap(
    {
        "0": ValueMappingResult(text="offline", color="red", index=0),
        "1": ValueMappingResult(text="idle", color="green", index=1),
        "2": ValueMappingResult(text="busy", color="blue", index=2),
    }
)


def runner_timelines() -> list[statetimeline.Panel]:
    host_view = (
        f"github_runner_service_active{{{HEALTH}}} + github_runner_online{{{HEALTH}}} + github_runner_busy{{{HEALTH}}}"
    )
    github_view = f"github_runner_github_online{{{GITHUB}}} + github_runner_github_busy{{{GITHUB}}}"
    return [
        statetimeline.Panel()
        .title("Runner state (host's view)")
        .description("Per runner: service down, running but not listening, idle, busy.")
        .datasource(DATASOURCE)
        .with_target(query(host_view, "{{environment}} {{runner}}"))
        .mappings([RUNNER_STATES])
        .height(8)
        .span(12),
        statetimeline.Panel()
        .title("Runner state (GitHub's view)")
        .description("Per declared runner, as the GitHub API lists it: offline, idle, busy.")
        .datasource(DATASOURCE)
        .with_target(query(github_view, "{{environment}} {{runner}}"))
        .mappings([GITHUB_STATES])
        .height(8)
        .span(12),
    ]


def quantile(q: float, family: str) -> str:
    return f"histogram_quantile({q}, sum by (environment, le) (rate({family}_bucket{{{HEALTH}}}[$__rate_interval])))"


def jobs() -> list[timeseries.Panel]:
    wait = "github_runner_job_queue_seconds"
    duration = "github_runner_job_duration_seconds"
    return [
        timeseries.Panel()
        .title("Job wait for a runner (p50, p95)")
        .description("Job created to job started, from the job hooks. The alert fires past 5 minutes.")
        .datasource(DATASOURCE)
        .with_target(query(quantile(0.5, wait), "{{environment}} p50", "A"))
        .with_target(query(quantile(0.95, wait), "{{environment}} p95", "B"))
        .unit("s")
        .min(0)
        .height(8)
        .span(8),
        timeseries.Panel()
        .title("Job duration (p50, p95)")
        .datasource(DATASOURCE)
        .with_target(query(quantile(0.5, duration), "{{environment}} p50", "A"))
        .with_target(query(quantile(0.95, duration), "{{environment}} p95", "B"))
        .unit("s")
        .min(0)
        .height(8)
        .span(8),
        timeseries.Panel()
        .title("Jobs completed by outcome")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f"sum by (environment, outcome) (increase({duration}_count{{{HEALTH}}}[$__rate_interval]))",
                "{{environment}} {{outcome}}",
            )
        )
        .min(0)
        .height(8)
        .span(8),
    ]


def hosts() -> list[timeseries.Panel]:
    cpu = f'1 - avg by (environment, host) (rate(node_cpu_seconds_total{{{HEALTH}, mode="idle"}}[$__rate_interval]))'
    memory = f"node_memory_MemAvailable_bytes{{{HEALTH}}} / node_memory_MemTotal_bytes{{{HEALTH}}}"
    # Real filesystems, and the root filesystem whatever its type: a runner host that is itself a
    # container (LXC, nspawn, Docker) has an overlay root, while overlay mounts elsewhere are
    # container layers (Docker jobs) that would crowd the panel.
    real = f"node_filesystem_avail_bytes{{{HEALTH}, {REAL_FS}}}"
    root = f'node_filesystem_avail_bytes{{{HEALTH}, mountpoint="/"}}'
    avail = f"{real} or {root}"
    forecast = f"predict_linear({real}[1h], 4 * 3600) or predict_linear({root}[1h], 4 * 3600)"
    return [
        timeseries.Panel()
        .title("CPU busy")
        .datasource(DATASOURCE)
        .with_target(query(cpu, "{{environment}} {{host}}"))
        .unit("percentunit")
        .min(0)
        .max(1)
        .height(8)
        .span(8),
        timeseries.Panel()
        .title("Memory available")
        .description("The memory-pressure alert fires below 10% for 5 minutes.")
        .datasource(DATASOURCE)
        .with_target(query(memory, "{{environment}} {{host}}"))
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "red"), (0.1, "green")))
        .height(8)
        .span(8),
        timeseries.Panel()
        .title("Disk free and 4 h forecast")
        .description(
            "Free bytes per filesystem (and the root filesystem whatever its type), and where the last "
            "hour's trend puts it in 4 hours."
        )
        .datasource(DATASOURCE)
        .with_target(query(avail, "{{environment}} {{host}} {{mountpoint}}", "A"))
        .with_target(query(forecast, "{{environment}} {{host}} {{mountpoint}} in 4 h", "B"))
        .unit("bytes")
        .height(8)
        .span(8),
    ]


CURRENT = ValueMap({"0": ValueMappingResult(text="current", color="green", index=0)})


def freshness_and_versions() -> list[timeseries.Panel | table.Panel | stat.Panel]:
    superseded = f"time() - github_runner_version_update_available_timestamp_seconds{{{GITHUB}}}"
    # A version that is the newest has no update-available sample: 0 ("current") instead of nothing.
    current = f"0 * (github_runner_version_behind_releases{{{GITHUB}}} == 0)"
    return [
        timeseries.Panel()
        .title("Metric age")
        .description("Seconds since the host collector ran and since the GitHub view's last complete listing.")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f"time() - github_runner_metrics_last_run_timestamp_seconds{{{HEALTH}}}",
                "{{environment}} {{host}} collector",
                "A",
            )
        )
        .with_target(
            query(
                f"time() - github_runner_github_last_success_timestamp_seconds{{{GITHUB}}}",
                "{{environment}} GitHub view",
                "B",
            )
        )
        .unit("s")
        .min(0)
        .thresholds(thresholds((None, "green"), (90, "red")))
        .height(8)
        .span(8),
        stat.Panel()
        .title("Pinned version superseded for")
        .description("Time since a newer runner release appeared; GitHub refuses the version about 30 days after.")
        .datasource(DATASOURCE)
        .with_target(query(f"({superseded}) or ({current})", "{{environment}} {{version}}", instant=True))
        .unit("s")
        .mappings([CURRENT])
        .thresholds(thresholds((None, "green"), (14 * 86400, "orange"), (21 * 86400, "red")))
        .no_value("no GitHub view")
        .height(8)
        .span(8),
        table.Panel()
        .title("Runner versions")
        .description("Pinned version per runner, and the newest release.")
        .datasource(DATASOURCE)
        .with_target(query(f"github_runner_info{{{HEALTH}}}", "", "A", instant=True).format(PromQueryFormat.TABLE))
        .with_target(query("github_runner_latest_release_info", "", "B", instant=True).format(PromQueryFormat.TABLE))
        .height(8)
        .span(8),
        stat.Panel()
        .title("Releases behind the newest")
        .description("Per pinned version: how many actions/runner releases are newer (GitHub-view collector).")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f"max by (environment, version) (github_runner_version_behind_releases{{{GITHUB}}})",
                "{{environment}} {{version}}",
                instant=True,
            )
        )
        .thresholds(thresholds((None, "green"), (1, "orange"), (3, "red")))
        .height(4)
        .span(8),
        stat.Panel()
        .title("Version deprecated (runner's log)")
        .description("Runners whose log says GitHub deprecated their version: it refuses them soon.")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f"sum by (environment) (github_runner_version_deprecated{{{HEALTH}}})", "{{environment}}", instant=True
            )
        )
        .thresholds(NONZERO_IS_RED)
        .height(4)
        .span(8),
        stat.Panel()
        .title("GitHub API requests left")
        .description("X-RateLimit-Remaining of the GitHub view's last answer; at 0 the listing backs off.")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f"min by (environment) (github_runner_github_rate_limit_remaining{{{GITHUB}}})",
                "{{environment}}",
                instant=True,
            )
        )
        .thresholds(thresholds((None, "red"), (100, "orange"), (1000, "green")))
        .height(4)
        .span(8),
    ]


def build() -> Dashboard:
    environment = (
        QueryVariable("environment")
        .label("Environment")
        .datasource(DATASOURCE)
        .query('label_values(up{job="github-runner-health"}, environment)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )
    datasource = (
        DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(VariableOption(selected=True, text="default", value="default"))
    )
    board = (
        Dashboard(TITLE)
        .uid(UID)
        .description("Self-hosted GitHub Actions runners deployed by runner-fleet: health, jobs, hosts, versions.")
        .tags(["runner-fleet", "github-actions"])
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource)
        .with_variable(environment)
        .with_row(Row("Fleet summary"))
    )
    for panel in fleet_summary():
        board = board.with_panel(panel)
    board = board.with_row(Row("Runners"))
    for panel in runner_timelines():
        board = board.with_panel(panel)
    board = board.with_row(Row("Jobs"))
    for panel in jobs():
        board = board.with_panel(panel)
    board = board.with_row(Row("Hosts"))
    for panel in hosts():
        board = board.with_panel(panel)
    board = board.with_row(Row("Freshness and versions"))
    for panel in freshness_and_versions():
        board = board.with_panel(panel)
    return board


def model() -> dict:
    """The dashboard as Grafana's JSON model (a plain dict)."""
    return json.loads(JSONEncoder(sort_keys=True).encode(build().build()))


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict | None = None) -> list[str]:
    """Every PromQL expression the dashboard runs: panel targets and query variables."""
    dashboard = dashboard or model()
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            q = variable["query"]
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def render() -> str:
    return json.dumps(model(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        return 0 if OUTPUT.exists() and OUTPUT.read_text() == text else 1
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
