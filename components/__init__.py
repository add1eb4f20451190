"""The fleet's Pulumi components: one per module, each a ComponentResource taking one typed args
object, whose remote work runs as pulumi_command remote commands with scripts from
components/scripts/ and files from components/host_files/. Nothing here reads stack config:
fleet/program.py builds the args."""

from components.exporter import ExporterService
from components.github_runner import GitHubRunner
from components.github_scope import GitHubScope
from components.prometheus_targets import PrometheusTargets
from components.runner_host import RunnerHost

__all__ = ["ExporterService", "GitHubRunner", "GitHubScope", "PrometheusTargets", "RunnerHost"]
