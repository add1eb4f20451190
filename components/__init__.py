"""The fleet's Pulumi components: one per module, each a ComponentResource whose remote work runs
as pulumi_command remote commands with scripts from components/scripts/."""

from components.exporter import ExporterService
from components.github_runner import GitHubRunner
from components.github_scope import GitHubScope
from components.prometheus_targets import PrometheusTargets
from components.runner_host import RunnerHost

__all__ = ["ExporterService", "GitHubRunner", "GitHubScope", "PrometheusTargets", "RunnerHost"]
