"""Where a stack's pieces live on a host, and every other name the scripts share.

Every path and unit name carries the stack name, so two stacks on one machine never manage the
same file, service or port. This module is the one place such a name is spelled: the scripts get
each one as an input (see components/shell.py), never as a literal of their own.
"""

from __future__ import annotations

from typing import Final

ROOT: Final = "/opt/runner-fleet"
STATE: Final = "/var/lib/runner-fleet"
ETC: Final = "/etc/runner-fleet"
# Where the scripts write the units they own and look for the units svc.sh writes.
SYSTEMD_DIR: Final = "/etc/systemd/system"
# Serializes every stack's deploys on the monitoring host (prometheus.yml and target files).
PROMETHEUS_LOCK: Final = "/run/lock/runner-fleet-prometheus.lock"
# Written last into a release directory: the checksum (exporter) or version+checksum+user
# (runner) it holds, so a re-run after a kill starts over and an unchanged re-run does nothing.
RELEASE_MARKER: Final = ".runner-fleet-release"
# The runner metrics file in the textfile collector's directory.
METRICS_FILE: Final = "runner-fleet-runners.prom"


def install_root(stack: str) -> str:
    return f"{ROOT}/{stack}"


def state_root(stack: str) -> str:
    return f"{STATE}/{stack}"


def runner_home(stack: str) -> str:
    """The stack runner user's home directory."""
    return f"{state_root(stack)}/home"


def runners_root(stack: str) -> str:
    return f"{install_root(stack)}/runners"


def runner_dir(stack: str, runner: str) -> str:
    return f"{runners_root(stack)}/{runner}"


def runner_download_dir(stack: str, runner: str) -> str:
    """Scratch space of a runner download, beside (not inside) the runner's directory."""
    return f"{runner_dir(stack, runner)}.download"


def exporter_dir(stack: str) -> str:
    return f"{install_root(stack)}/node-exporter"


def exporter_binary(stack: str, version: str) -> str:
    return f"{exporter_dir(stack)}/{version}/node_exporter"


def textfile_dir(stack: str) -> str:
    return f"{state_root(stack)}/textfile"


def metrics_file(stack: str) -> str:
    return f"{textfile_dir(stack)}/{METRICS_FILE}"


def metrics_conf_dir(stack: str) -> str:
    return f"{ETC}/{stack}/runners"


def metrics_conf(stack: str, runner: str) -> str:
    """The collector's record of one runner (name, directory, unit, version, labels)."""
    return f"{metrics_conf_dir(stack)}/{runner}.conf"


def collector_path(stack: str) -> str:
    return f"{install_root(stack)}/bin/runner-metrics"


def spool_root(stack: str) -> str:
    """Root-owned (0755): one spool directory per runner below it (monitoring/METRICS.md §3)."""
    return f"{state_root(stack)}/spool"


def runner_spool(stack: str, runner: str) -> str:
    """Where the runner's job hooks leave their records: root-owned, sticky, the runner user's
    group may add entries (1770); the collector reads and deletes them."""
    return f"{spool_root(stack)}/{runner}"


def runner_hooks_dir(stack: str, runner: str) -> str:
    """The runner's job hooks (job-started.sh, job-completed.sh), root-owned, named in its .env."""
    return f"{install_root(stack)}/hooks/{runner}"


def exporter_unit(stack: str) -> str:
    return f"runner-fleet-{stack}-node-exporter.service"


def collector_units(stack: str) -> tuple[str, str]:
    base = f"runner-fleet-{stack}-runner-metrics"
    return f"{base}.service", f"{base}.timer"


def target_file(stack: str) -> str:
    return f"runner-fleet-{stack}.json"


def targets_glob(targets_dir: str) -> str:
    """What the shared scrape job reads: every stack's target file in the directory."""
    return f"{targets_dir}/*.json"


def rules_file(config_path: str, job_name: str) -> str:
    """runner-fleet's alert rules for the job, beside prometheus.yml; one file for every stack the
    job scrapes (per-stack copies would record runner_fleet:runner_healthy twice)."""
    directory = config_path.rsplit("/", 1)[0] or "/"
    return f"{directory.rstrip('/')}/runner-fleet-{job_name}.rules.yml"


# Grafana (optional, `runner-fleet:grafana`): each stack provisions its own dashboard, so a
# destroy removes exactly that stack's provider file and dashboard directory.
DASHBOARD_FILE: Final = "runner-fleet.json"
# Grafana refuses a dashboard uid longer than this.
GRAFANA_UID_MAX: Final = 40


def grafana_name(stack: str) -> str:
    """The stack's dashboard uid, provider name and directory name: unique per stack, stable."""
    return f"runner-fleet-{stack}"


def grafana_provider_file(provisioning_dir: str, stack: str) -> str:
    """The dashboards provider Grafana reads at start (`<paths.provisioning>/dashboards/*.yaml`)."""
    return f"{provisioning_dir.rstrip('/')}/dashboards/{grafana_name(stack)}.yaml"


def grafana_dashboard_dir(dashboards_dir: str, stack: str) -> str:
    """The provider's `options.path`: holds the stack's dashboard JSON and nothing else."""
    return f"{dashboards_dir.rstrip('/')}/{grafana_name(stack)}"


# The GitHub-view collector on the monitoring host (optional, `runner-fleet:githubViewToken`).
# Its job label: the target group sets it, so the series carry job="github-runner-github"
# whatever the stack's scrape job is called (monitoring/METRICS.md section 2).
GITHUB_VIEW_JOB: Final = "github-runner-github"


def github_view_unit(stack: str) -> str:
    return f"runner-fleet-{stack}-github-view.service"


def github_view_collector(stack: str) -> str:
    return f"{install_root(stack)}/bin/github-view"


def github_view_dir(stack: str) -> str:
    """Root-owned: the collector's config (0644) and its credential (0600)."""
    return f"{ETC}/{stack}/github-view"


def github_view_config(stack: str) -> str:
    return f"{github_view_dir(stack)}/config.json"


def github_view_token(stack: str) -> str:
    return f"{github_view_dir(stack)}/token"


def github_view_configs_glob() -> str:
    """Every stack's collector config on the monitoring host: their runners are not orphans."""
    return f"{ETC}/*/github-view/config.json"


def github_view_target_file(stack: str) -> str:
    """Beside the stack's target file in targetsDir; a '.' no stack name has, so it cannot be
    another stack's target file."""
    return f"runner-fleet-{stack}.github-view.json"
