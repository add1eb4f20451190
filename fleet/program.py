"""Builds the fleet's components from a validated configuration."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components import GitHubScope, PrometheusTargets, RunnerHost
from components.prometheus_targets import ScrapeTarget
from fleet.config import FleetConfig


@dataclass
class Fleet:
    scope: GitHubScope
    hosts: list[RunnerHost]
    prometheus: PrometheusTargets


def build_fleet(fleet: FleetConfig) -> Fleet:
    scope = GitHubScope("github", fleet=fleet)
    hosts = [
        RunnerHost(host.name, host=host, fleet=fleet, github_dependencies=list(scope.groups)) for host in fleet.hosts
    ]
    targets = [
        ScrapeTarget(
            address=h.exporter.target,
            host=spec.name,
            role=spec.role,
            runners=tuple(r.name for r in spec.runners),
        )
        for h, spec in zip(hosts, fleet.hosts, strict=True)
    ]
    prometheus = PrometheusTargets(
        "prometheus",
        fleet=fleet,
        targets=targets,
        depends_on=[h.exporter.runner_metrics for h in hosts],
    )
    return Fleet(scope=scope, hosts=hosts, prometheus=prometheus)


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
