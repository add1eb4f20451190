"""PrometheusTargets: the stack's file_sd target file on the monitoring host, and the scrape job
and alert rules shared by every stack the job scrapes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from components import layout, shell
from components.remote import Machine, Script


@dataclass(frozen=True)
class ScrapeTarget:
    """One exporter to scrape, with the labels Prometheus attaches to its series."""

    address: str  # host:port
    host: str
    role: str
    runners: tuple[str, ...]


@dataclass(frozen=True)
class PrometheusTargetsArgs:
    """The monitoring host's Prometheus as this stack uses it, and the exporters to scrape."""

    stack: str
    port: int  # Prometheus HTTP port, queried on 127.0.0.1 there
    config_path: str
    targets_dir: str
    job_name: str
    scrape_interval: str
    manage_config: bool
    service: str
    promtool: str
    targets: tuple[ScrapeTarget, ...]
    rules: str  # the alert rules file's text, selecting the series of `job_name`


def targets_json(stack: str, targets: Sequence[ScrapeTarget]) -> str:
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
    """host_files/prometheus-scrape-job.yml.tmpl: the YAML inserted into prometheus.yml when missing."""
    return shell.host_file(
        "prometheus-scrape-job.yml.tmpl",
        {
            "job_name": job_name,
            "targets_dir": targets_dir,
            "targets_glob": layout.targets_glob(targets_dir),
            "scrape_interval": scrape_interval,
        },
    )


class PrometheusTargets(pulumi.ComponentResource):
    """What the stack puts on the monitoring host.

    Children:
    - `{name}-scrape-job`: converges (or, with manageConfig false, only checks) prometheus.yml
      to have the job reading `<targetsDir>/*.json` with the configured settings and the alert
      rules file under rule_files, and writes the rules file; promtool-validated, atomic, reload
      only after validation and confirmed. Shared by every stack the job scrapes: its delete
      takes the rules out (entry and file) only when no other stack's target file is left;
      the job stays.
    - `{name}-target-file`: `<targetsDir>/runner-fleet-<stack>.json`, promtool-validated and
      renamed into place; checks that Prometheus lists every target and reports which are up.
      It depends on the job only, never on the hosts' exporters: a host that is down must not
      keep the others unmonitored. Delete removes only it.
    """

    TYPE = "fleet:monitoring:PrometheusTargets"

    def __init__(
        self,
        name: str,
        args: PrometheusTargetsArgs,
        *,
        machine: Machine,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        prom_url = f"http://127.0.0.1:{args.port}"
        glob = layout.targets_glob(args.targets_dir)
        rules_file = layout.rules_file(args.config_path, args.job_name)
        self.scrape_job = machine.command(
            f"{name}-scrape-job",
            parent=self,
            create=Script(
                "prometheus-scrape-job.create.sh",
                {
                    "CONFIG_PATH": args.config_path,
                    "TARGETS_DIR": args.targets_dir,
                    "TARGETS_GLOB": glob,
                    "JOB_NAME": args.job_name,
                    "JOB_BLOCK": job_block(args.job_name, args.targets_dir, args.scrape_interval),
                    "MANAGE_CONFIG": args.manage_config,
                    "SERVICE": args.service,
                    "PROMTOOL": args.promtool,
                    "PROM_URL": prom_url,
                    "LOCK_FILE": layout.PROMETHEUS_LOCK,
                    "RULES_FILE": rules_file,
                    "RULES": args.rules.rstrip("\n"),
                },
            ),
            delete=Script(
                "prometheus-scrape-job.delete.sh",
                {
                    "TARGETS_DIR": args.targets_dir,
                    "JOB_NAME": args.job_name,
                    "RULES_FILE": rules_file,
                    "CONFIG_PATH": args.config_path,
                    "MANAGE_CONFIG": args.manage_config,
                    "SERVICE": args.service,
                    "PROMTOOL": args.promtool,
                    "PROM_URL": prom_url,
                    "LOCK_FILE": layout.PROMETHEUS_LOCK,
                },
            ),
        )
        target_file = layout.target_file(args.stack)
        self.content = targets_json(args.stack, args.targets)
        self.target_file = machine.command(
            f"{name}-target-file",
            parent=self,
            create=Script(
                "prometheus-target-file.create.sh",
                {
                    "STACK": args.stack,
                    "TARGETS_DIR": args.targets_dir,
                    "TARGETS_GLOB": glob,
                    "TARGET_FILE": target_file,
                    "TARGETS_JSON": self.content,
                    "PROMTOOL": args.promtool,
                    "PROM_URL": prom_url,
                    "JOB_NAME": args.job_name,
                    "EXPECT": " ".join(sorted(t.address for t in args.targets)),
                    "LOCK_FILE": layout.PROMETHEUS_LOCK,
                    "SERVICE": args.service,
                    "CONFIG_PATH": args.config_path,
                },
            ),
            delete=Script(
                "prometheus-target-file.delete.sh",
                {
                    "STACK": args.stack,
                    "TARGETS_DIR": args.targets_dir,
                    "TARGET_FILE": target_file,
                    "LOCK_FILE": layout.PROMETHEUS_LOCK,
                },
            ),
            triggers=[f"{args.targets_dir}/{target_file}"],
            depends_on=[self.scrape_job],
        )
        self.path = f"{args.targets_dir}/{target_file}"
        self.rules_file = rules_file
        self.register_outputs({"targetFile": self.path, "job": args.job_name, "rulesFile": rules_file})
