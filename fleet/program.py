"""Builds the fleet's components from a validated configuration.

The one module of the Pulumi program that reads the config models: it turns them into each component's typed
args and the `Machine` each component reaches its host through. Components never import
`fleet.config`, so each can be built and tested on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi

from components.exporter import ExporterArgs
from components.github_runner import GitHubRunnerArgs, RunnerRelease, RunnerScope
from components.github_scope import GitHubScope, GitHubScopeArgs, RunnerGroup
from components.github_view import GitHubView, GitHubViewArgs
from components.grafana import GrafanaDashboard, GrafanaDashboardArgs, dashboard_json
from components.prometheus_targets import PrometheusTargets, PrometheusTargetsArgs, ScrapeTarget
from components.remote import Endpoint, Machine
from components.runner_host import RunnerHost, RunnerHostArgs
from fleet.config import FleetConfig, HostSpec, PrometheusSpec
from fleet.hostkeys import MONITORING_HOST, ReachCheck

# The alert rules the program deploys (README "Alerts"), written for the default job name.
RULES_PATH = Path(__file__).resolve().parent.parent / "monitoring" / "runner-fleet-alerts.yml"
DEFAULT_JOB = "github-runner-health"
# The dashboard the program provisions when the stack config has a grafana section (README "Dashboard").
DASHBOARD_PATH = RULES_PATH.parent / "grafana" / "runner-fleet.json"


def alert_rules(job_name: str) -> str:
    """The rules file for the job the stack configures (prometheus.jobName)."""
    return RULES_PATH.read_text().replace(DEFAULT_JOB, job_name)


@dataclass
class Fleet:
    scope: GitHubScope
    hosts: list[RunnerHost]
    prometheus: PrometheusTargets
    github_view: GitHubView | None = None
    grafana: GrafanaDashboard | None = None


def machine(fleet: FleetConfig, spec: HostSpec | PrometheusSpec) -> Machine:
    """A runner host or the monitoring host, reached with the stack's SSH key (and jump host)."""
    jump = spec.jump_host
    via = Endpoint(jump.address, jump.ssh_port, jump.ssh_user, jump.host_key) if jump else None
    return Machine(
        Endpoint(spec.address, spec.ssh_port, spec.ssh_user, spec.host_key, via),
        fleet.secrets.ssh_private_key,
    )


def scope_args(fleet: FleetConfig) -> GitHubScopeArgs:
    github = fleet.github
    return GitHubScopeArgs(
        credential=fleet.secrets.github_token,
        owner=github.owner,
        api_url=github.effective_api_url,
        repository=github.repository,
        organization=github.organization,
        registration_url=github.registration_url,
        check_access=github.check_access,
        runner_groups=tuple(RunnerGroup(g.name, g.visibility) for g in github.runner_groups),
    )


def runner_scope(fleet: FleetConfig) -> RunnerScope:
    github = fleet.github
    return RunnerScope(
        registration_url=github.registration_url,
        api_url=github.effective_api_url,
        scope_path=github.scope_path,
        credential=fleet.secrets.github_token,
    )


def host_args(fleet: FleetConfig, host: HostSpec) -> RunnerHostArgs:
    user = fleet.runner_user(host)
    release = RunnerRelease(fleet.runner.version, fleet.runner.url(host.arch), fleet.runner.checksum(host.arch))
    scope = runner_scope(fleet)
    return RunnerHostArgs(
        stack=fleet.stack,
        host_name=host.name,
        arch=host.arch,
        min_disk_mb=host.min_disk_mb,
        install_dependencies=host.install_dependencies,
        runner_user=user,
        exporter=ExporterArgs(
            stack=fleet.stack,
            host_name=host.name,
            address=host.address,
            port=host.exporter_port,
            version=fleet.exporter.version,
            url=fleet.exporter.url(host.arch),
            sha256=fleet.exporter.checksum(host.arch),
        ),
        runners=tuple(
            GitHubRunnerArgs(
                stack=fleet.stack,
                runner_name=spec.name,
                unit=fleet.github.runner_unit(spec.name),
                runner_user=user,
                arch=host.arch,
                labels=spec.labels,
                group=spec.group,
                release=release,
                scope=scope,
            )
            for spec in host.runners
        ),
    )


def exporter_target(args: ExporterArgs) -> str:
    """A host's exporter as a scrape target: what its ExporterService's `target` is."""
    return f"{args.address}:{args.port}"


def prometheus_args(fleet: FleetConfig, targets: tuple[ScrapeTarget, ...]) -> PrometheusTargetsArgs:
    prom = fleet.prometheus
    return PrometheusTargetsArgs(
        stack=fleet.stack,
        port=prom.port,
        config_path=prom.config_path,
        targets_dir=prom.targets_dir,
        job_name=prom.job_name,
        scrape_interval=prom.scrape_interval,
        manage_config=prom.manage_config,
        service=prom.service,
        promtool=prom.promtool,
        targets=targets,
        rules=alert_rules(prom.job_name),
    )


def grafana_args(fleet: FleetConfig) -> GrafanaDashboardArgs | None:
    grafana = fleet.grafana
    if grafana is None:
        return None
    model = json.loads(DASHBOARD_PATH.read_text())
    return GrafanaDashboardArgs(
        stack=fleet.stack,
        provisioning_dir=grafana.provisioning_dir,
        dashboards_dir=grafana.dashboards_dir,
        service=grafana.service,
        dashboard=dashboard_json(model, stack=fleet.stack, job_name=fleet.prometheus.job_name),
    )


def protected(protect: bool) -> pulumi.ResourceOptions:
    """`protect` on a component: the SDK hands it down to every child, so with it the engine
    refuses to delete or replace anything of that component (README "Safeguards")."""
    return pulumi.ResourceOptions(protect=protect)


def unprotected_hosts_notice(fleet: FleetConfig) -> list[str]:
    """One line per host that `hosts[].protect: false` leaves unprotected in a protected stack."""
    return [
        f"runner-fleet: host {host.name} is not protected (runner-fleet:hosts[{i}].protect: false): "
        "removing it from runner-fleet:hosts, or a change that replaces it, now retires its runners; "
        "remove the key again to protect it"
        for i, host in enumerate(fleet.hosts)
        if fleet.protect and not fleet.host_protected(host)
    ]


def github_view_args(fleet: FleetConfig) -> GitHubViewArgs | None:
    """The GitHub-view collector's args, or None without runner-fleet:githubViewToken."""
    token = fleet.secrets.github_view_token
    if token is None:
        return None
    return GitHubViewArgs(
        stack=fleet.stack,
        api_url=fleet.github.effective_api_url,
        scope_path=fleet.github.scope_path,
        runners=tuple(runner.name for host in fleet.hosts for runner in host.runners),
        versions=(fleet.runner.version,),
        credential=token,
        port=fleet.prometheus.github_view_port,
        targets_dir=fleet.prometheus.targets_dir,
        host=fleet.prometheus.address,
    )


def build_github_view(fleet: FleetConfig, prometheus: PrometheusTargets) -> GitHubView | None:
    """On the monitoring host, after the scrape job (which creates targetsDir; a destroy then
    removes the collector's target group before the job step looks for stacks that are left)."""
    args = github_view_args(fleet)
    if args is None:
        return None
    return GitHubView(
        "github-view",
        args,
        machine=machine(fleet, fleet.prometheus),
        depends_on=[prometheus.scrape_job],
        opts=protected(fleet.protect),
    )


def build_fleet(fleet: FleetConfig, reach: ReachCheck | None = None) -> Fleet:
    """The components of the stack. `reach` is the check before deploying (fleet/hostkeys.py): a
    runner host it refused gets no component in this run (the monitoring host's still list it), a
    refused monitoring host ends the run before its components; the program then fails
    (__main__.py), so the engine keeps the refused machines' state as it is and deletes nothing
    (deletes come only after a complete program), while every other machine is deployed."""
    for line in unprotected_hosts_notice(fleet):
        pulumi.log.warn(line)
    scope = GitHubScope("github", scope_args(fleet), opts=protected(fleet.protect))
    hosts = [
        RunnerHost(
            host.name,
            host_args(fleet, host),
            machine=machine(fleet, host),
            github_dependencies=list(scope.groups),
            opts=protected(fleet.host_protected(host)),
        )
        for host in fleet.hosts
        if reach is None or not reach.refuses(host.name)
    ]
    if reach is not None and reach.refuses(MONITORING_HOST):
        reach.raise_if_refused()
    # Every configured host, a refused one too: Prometheus keeps scraping it (and alerting).
    targets = tuple(
        ScrapeTarget(
            address=exporter_target(host_args(fleet, spec).exporter),
            host=spec.name,
            role=spec.role,
            runners=tuple(r.name for r in spec.runners),
        )
        for spec in fleet.hosts
    )
    prometheus = PrometheusTargets(
        "prometheus",
        prometheus_args(fleet, targets),
        machine=machine(fleet, fleet.prometheus),
        opts=protected(fleet.protect),
    )
    dashboard_args = grafana_args(fleet)
    grafana = (
        None
        if dashboard_args is None
        else GrafanaDashboard(
            "grafana", dashboard_args, machine=machine(fleet, fleet.prometheus), opts=protected(fleet.protect)
        )
    )
    view = build_github_view(fleet, prometheus)
    return Fleet(scope=scope, hosts=hosts, prometheus=prometheus, github_view=view, grafana=grafana)


def export_outputs(fleet: FleetConfig, built: Fleet) -> None:
    pulumi.export(
        "runners",
        {
            runner.runner_name: {"host": host.address, "unit": runner.unit, "labels": runner.labels}
            for host in built.hosts
            for runner in host.runners
        },
    )
    pulumi.export("exporters", {spec.name: h.exporter.url for h, spec in zip(built.hosts, fleet.hosts, strict=True)})
    pulumi.export("prometheusTargetFile", built.prometheus.path)
    pulumi.export("scrapeJob", fleet.prometheus.job_name)
    pulumi.export("alertRulesFile", built.prometheus.rules_file)
    if built.github_view is not None:
        pulumi.export("githubView", {"unit": built.github_view.unit, "url": built.github_view.url})
    if built.grafana is not None:
        pulumi.export(
            "grafanaDashboard",
            {
                "uid": built.grafana.uid,
                "dashboardFile": built.grafana.dashboard_path,
                "providerFile": built.grafana.provider_file,
            },
        )
