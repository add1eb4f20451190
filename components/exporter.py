"""ExporterService: this stack's metrics endpoint on one host (node exporter + runner metrics)."""

from __future__ import annotations

import pulumi

from components import layout, shell
from components.remote import Endpoint, Machine, Script
from fleet.config import FleetConfig, HostSpec


def exporter_unit_content(stack: str, version: str, port: int) -> str:
    """A hardened unit: no privileges, read-only system, only the textfile dir readable. The
    systemd collector stays off (it needs D-Bus, which the sandbox denies): the runner gauges
    from the textfile collector say more, and also for units that vanished."""
    binary = f"{layout.exporter_dir(stack)}/{version}/node_exporter"
    textfile = layout.textfile_dir(stack)
    return f"""[Unit]
Description=runner-fleet node exporter ({stack} stack)
Documentation=https://github.com/prometheus/node_exporter
After=network-online.target
Wants=network-online.target

[Service]
ExecStart={binary} --web.listen-address=:{port} --collector.textfile.directory={textfile} --no-collector.systemd
Restart=on-failure
RestartSec=5
DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
CapabilityBoundingSet=
SystemCallArchitectures=native
ReadOnlyPaths={textfile}

[Install]
WantedBy=multi-user.target"""


def collector_units_content(stack: str) -> tuple[str, str]:
    """A oneshot service run every 15 s by a timer: a dead runner shows within ~30 s in Prometheus."""
    service_name, timer_name = layout.collector_units(stack)
    service = f"""[Unit]
Description=runner-fleet runner metrics ({stack} stack)

[Service]
Type=oneshot
ExecStart=/bin/bash {layout.collector_path(stack)} {layout.metrics_conf_dir(stack)} {layout.textfile_dir(stack)}
TimeoutStartSec=60
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
ReadWritePaths={layout.textfile_dir(stack)}"""
    timer = f"""[Unit]
Description=Collect runner-fleet runner metrics every 15 s ({stack} stack)

[Timer]
OnBootSec=15s
OnUnitActiveSec=15s
AccuracySec=1s
Unit={service_name}

[Install]
WantedBy=timers.target"""
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
        *,
        host: HostSpec,
        fleet: FleetConfig,
        endpoint: Endpoint,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        stack, exporter = fleet.stack, fleet.exporter
        machine = Machine(self, endpoint, fleet.secrets.ssh_private_key)
        unit = layout.exporter_unit(stack)
        self.install = machine.command(
            f"{name}-install",
            create=Script(
                "exporter-install.sh",
                {
                    "HOST_NAME": host.name,
                    "EXPORTER_VERSION": exporter.version,
                    "EXPORTER_URL": exporter.url(host.arch),
                    "EXPORTER_SHA256": exporter.checksum(host.arch),
                    "EXPORTER_DIR": layout.exporter_dir(stack),
                    "TEXTFILE_DIR": layout.textfile_dir(stack),
                    "PORT": host.exporter_port,
                    "UNIT": unit,
                    "UNIT_CONTENT": exporter_unit_content(stack, exporter.version, host.exporter_port),
                },
            ),
            delete=Script(
                "exporter-uninstall.sh",
                {
                    "HOST_NAME": host.name,
                    "EXPORTER_DIR": layout.exporter_dir(stack),
                    "TEXTFILE_DIR": layout.textfile_dir(stack),
                    "UNIT": unit,
                },
            ),
            triggers=[unit],
            depends_on=depends_on,
        )
        service_unit, timer_unit = layout.collector_units(stack)
        service_content, timer_content = collector_units_content(stack)
        common = {
            "HOST_NAME": host.name,
            "COLLECTOR_PATH": layout.collector_path(stack),
            "SERVICE_UNIT": service_unit,
            "TIMER_UNIT": timer_unit,
            "CONF_DIR": layout.metrics_conf_dir(stack),
            "TEXTFILE_DIR": layout.textfile_dir(stack),
        }
        self.runner_metrics = machine.command(
            f"{name}-runner-metrics",
            create=Script(
                "runner-metrics-install.sh",
                {
                    **common,
                    "COLLECTOR": shell.script_text("runner-metrics.sh"),
                    "SERVICE_CONTENT": service_content,
                    "TIMER_CONTENT": timer_content,
                },
            ),
            delete=Script("runner-metrics-uninstall.sh", common),
            triggers=[timer_unit],
            depends_on=[self.install],
        )
        self.url = f"http://{host.address}:{host.exporter_port}/metrics"
        self.target = f"{host.address}:{host.exporter_port}"
        self.register_outputs({"url": self.url, "unit": unit})
