"""PrometheusTargets: the stack's file_sd target file on the monitoring host, and the scrape job
that reads every stack's target files."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi

from components import layout
from components.remote import Machine, Script
from components.runner_host import endpoint_for
from fleet.config import FleetConfig


@dataclass(frozen=True)
class ScrapeTarget:
    """One exporter to scrape, with the labels Prometheus attaches to its series."""

    address: str  # host:port
    host: str
    role: str
    runners: tuple[str, ...]


def targets_json(stack: str, targets: list[ScrapeTarget]) -> str:
    """The file_sd file: one target group per exporter. Environment and role live here, not in
    the exporter, so a machine serving two stacks reports each under its own environment."""
    groups = [
        {
            "targets": [t.address],
            "labels": {
                "environment": stack,
                "role": t.role,
                "host": t.host,
                "runners": ",".join(t.runners),
            },
        }
        for t in sorted(targets, key=lambda t: t.host)
    ]
    return json.dumps(groups, indent=2, sort_keys=True)


def job_block(job_name: str, targets_dir: str, scrape_interval: str) -> str:
    """The scrape job, as YAML text inserted into the user's prometheus.yml when missing."""
    return "\n".join(
        [
            f"# Added by runner-fleet: scrapes the runner exporters listed in {targets_dir}/<stack>.json.",
            f"- job_name: {job_name}",
            f"  scrape_interval: {scrape_interval}",
            "  file_sd_configs:",
            "    - files:",
            f"        - {targets_dir}/*.json",
            "      refresh_interval: 1m",
        ]
    )


class PrometheusTargets(pulumi.ComponentResource):
    """What the stack puts on the monitoring host.

    Children:
    - `{name}-scrape-job`: ensures (or, with manageConfig false, only checks) that
      prometheus.yml has the job reading `<targetsDir>/*.json`; promtool-validated, atomic,
      reload only after validation. The job is shared by all stacks and never deleted.
    - `{name}-target-file`: `<targetsDir>/runner-fleet-<stack>.json`, promtool-validated and
      renamed into place; waits until Prometheus lists every target. Delete removes only it.
    """

    TYPE = "fleet:monitoring:PrometheusTargets"

    def __init__(
        self,
        name: str,
        *,
        fleet: FleetConfig,
        targets: list[ScrapeTarget],
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        prom = fleet.prometheus
        endpoint = endpoint_for(prom.address, prom.ssh_port, prom.ssh_user, prom.host_key, prom.jump_host)
        machine = Machine(self, endpoint, fleet.secrets.ssh_private_key)
        prom_url = f"http://127.0.0.1:{prom.port}"
        self.scrape_job = machine.command(
            f"{name}-scrape-job",
            create=Script(
                "prometheus-job.sh",
                {
                    "CONFIG_PATH": prom.config_path,
                    "TARGETS_DIR": prom.targets_dir,
                    "JOB_NAME": prom.job_name,
                    "JOB_BLOCK": job_block(prom.job_name, prom.targets_dir, prom.scrape_interval),
                    "MANAGE_CONFIG": prom.manage_config,
                    "SERVICE": prom.service,
                    "PROMTOOL": prom.promtool,
                    "PROM_URL": prom_url,
                },
            ),
        )
        target_file = layout.target_file(fleet.stack)
        self.content = targets_json(fleet.stack, targets)
        self.target_file = machine.command(
            f"{name}-target-file",
            create=Script(
                "prometheus-targets.sh",
                {
                    "STACK": fleet.stack,
                    "TARGETS_DIR": prom.targets_dir,
                    "TARGET_FILE": target_file,
                    "TARGETS_JSON": self.content,
                    "PROMTOOL": prom.promtool,
                    "PROM_URL": prom_url,
                    "JOB_NAME": prom.job_name,
                    "EXPECT": " ".join(sorted(t.address for t in targets)),
                },
            ),
            delete=Script(
                "prometheus-targets-delete.sh",
                {"STACK": fleet.stack, "TARGETS_DIR": prom.targets_dir, "TARGET_FILE": target_file},
            ),
            triggers=[f"{prom.targets_dir}/{target_file}"],
            depends_on=[self.scrape_job, *depends_on],
        )
        self.path = f"{prom.targets_dir}/{target_file}"
        self.register_outputs({"targetFile": self.path, "job": prom.job_name})
