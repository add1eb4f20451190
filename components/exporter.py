"""ExporterService: this stack's metrics endpoint on one host (node exporter + runner metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from components import layout, shell
from components.remote import Machine, Script


@dataclass(frozen=True)
class ExporterArgs:
    """What one host's exporter needs: the stack, where it listens, and the pinned release."""

    stack: str
    host_name: str  # in progress and error messages
    address: str  # the scrape target's address
    port: int
    version: str
    url: str  # of the release tarball for the host's architecture
    sha256: str


def exporter_unit_content(stack: str, version: str, port: int) -> str:
    """host_files/node-exporter.service.tmpl for this stack."""
    return shell.host_file(
        "node-exporter.service.tmpl",
        {
            "stack": stack,
            "binary": layout.exporter_binary(stack, version),
            "port": port,
            "textfile_dir": layout.textfile_dir(stack),
        },
    )


def collector_units_content(stack: str) -> tuple[str, str]:
    """host_files/runner-metrics.service.tmpl and .timer.tmpl for this stack."""
    service_name, _ = layout.collector_units(stack)
    service = shell.host_file(
        "runner-metrics.service.tmpl",
        {
            "stack": stack,
            "collector": layout.collector_path(stack),
            "conf_dir": layout.metrics_conf_dir(stack),
            "metrics_file": layout.metrics_file(stack),
            "textfile_dir": layout.textfile_dir(stack),
            "spool_dir": layout.spool_root(stack),
        },
    )
    timer = shell.host_file("runner-metrics.timer.tmpl", {"stack": stack, "service_unit": service_name})
    return service, timer


class ExporterService(pulumi.ComponentResource):
    """The stack's exporter on a host, owned by exactly one stack (its own port and unit).

    Children:
    - `{name}-install`: the pinned node exporter release (SHA-256 verified) under a hardened
      unit `runner-fleet-<stack>-node-exporter.service` on the configured port, with the
      textfile collector reading `/var/lib/runner-fleet/<stack>/textfile`.
    - `{name}-runner-metrics`: a 15 s timer that writes per-runner gauges (service active,
      online and busy as the runner reports them, info with name/version/labels) for the
      textfile collector.
    """

    TYPE = "fleet:monitoring:ExporterService"

    def __init__(
        self,
        name: str,
        args: ExporterArgs,
        *,
        machine: Machine,
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        stack = args.stack
        unit = layout.exporter_unit(stack)
        self.install = machine.command(
            f"{name}-install",
            parent=self,
            create=Script(
                "exporter-install.create.sh",
                {
                    "HOST_NAME": args.host_name,
                    "EXPORTER_VERSION": args.version,
                    "EXPORTER_URL": args.url,
                    "EXPORTER_SHA256": args.sha256,
                    "EXPORTER_DIR": layout.exporter_dir(stack),
                    "RELEASE_MARKER": layout.RELEASE_MARKER,
                    "TEXTFILE_DIR": layout.textfile_dir(stack),
                    "PORT": args.port,
                    "UNIT_DIR": layout.SYSTEMD_DIR,
                    "UNIT": unit,
                    "UNIT_CONTENT": exporter_unit_content(stack, args.version, args.port),
                },
            ),
            delete=Script(
                "exporter-install.delete.sh",
                {
                    "HOST_NAME": args.host_name,
                    "EXPORTER_DIR": layout.exporter_dir(stack),
                    "TEXTFILE_DIR": layout.textfile_dir(stack),
                    "UNIT_DIR": layout.SYSTEMD_DIR,
                    "UNIT": unit,
                },
            ),
            triggers=[unit],
            depends_on=depends_on,
        )
        service_unit, timer_unit = layout.collector_units(stack)
        service_content, timer_content = collector_units_content(stack)
        common: dict[str, shell.Value] = {
            "HOST_NAME": args.host_name,
            "COLLECTOR_PATH": layout.collector_path(stack),
            "UNIT_DIR": layout.SYSTEMD_DIR,
            "SERVICE_UNIT": service_unit,
            "TIMER_UNIT": timer_unit,
            "CONF_DIR": layout.metrics_conf_dir(stack),
            "METRICS_FILE": layout.metrics_file(stack),
            "SPOOL_ROOT": layout.spool_root(stack),
        }
        self.runner_metrics = machine.command(
            f"{name}-runner-metrics",
            parent=self,
            create=Script(
                "exporter-runner-metrics.create.sh",
                {
                    **common,
                    "TEXTFILE_DIR": layout.textfile_dir(stack),
                    "COLLECTOR": shell.host_file_text("runner-metrics.sh"),
                    "SERVICE_CONTENT": service_content,
                    "TIMER_CONTENT": timer_content,
                },
            ),
            delete=Script("exporter-runner-metrics.delete.sh", common),
            triggers=[timer_unit],
            depends_on=[self.install],
        )
        self.url = f"http://{args.address}:{args.port}/metrics"
        self.target = f"{args.address}:{args.port}"
        self.register_outputs({"url": self.url, "unit": unit})
