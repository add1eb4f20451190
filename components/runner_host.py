"""RunnerHost: one machine of the fleet, with everything this stack puts on it."""

from __future__ import annotations

import pulumi

from components import layout
from components.exporter import ExporterService
from components.github_runner import GitHubRunner
from components.remote import Endpoint, Machine, Script
from fleet.config import UNAME_ARCH, FleetConfig, HostSpec, JumpHost


def endpoint_for(address: str, port: int, user: str, host_key: str, jump: JumpHost | None) -> Endpoint:
    via = Endpoint(jump.address, jump.ssh_port, jump.ssh_user, jump.host_key) if jump else None
    return Endpoint(address, port, user, host_key, via)


class RunnerHost(pulumi.ComponentResource):
    """A machine carrying runners.

    Children:
    - `{name}-preflight`: fails fast, listing every reason, when the host is unfit
      (not Linux/systemd, wrong arch, no passwordless sudo, too little disk, missing tools).
    - `{name}-runner-user`: the stack's dedicated non-root runner user and install root.
    - `{name}-exporter` (ExporterService): this stack's node exporter and runner metrics.
    - one GitHubRunner per configured runner instance.
    """

    TYPE = "fleet:machines:RunnerHost"

    def __init__(
        self,
        name: str,
        *,
        host: HostSpec,
        fleet: FleetConfig,
        github_dependencies: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        stack = fleet.stack
        self.endpoint = endpoint_for(host.address, host.ssh_port, host.ssh_user, host.host_key, host.jump_host)
        machine = Machine(self, self.endpoint, fleet.secrets.ssh_private_key)
        user = fleet.runner_user(host)

        self.preflight = machine.command(
            f"{name}-preflight",
            create=Script(
                "preflight.sh",
                {
                    "HOST_NAME": host.name,
                    "EXPECTED_ARCH": UNAME_ARCH[host.arch],
                    "MIN_DISK_MB": host.min_disk_mb,
                    "INSTALL_ROOT": layout.install_root(stack),
                },
                sudo=False,
            ),
        )
        user_vars = {
            "RUNNER_USER": user,
            "INSTALL_ROOT": layout.install_root(stack),
            "STATE_ROOT": layout.state_root(stack),
        }
        self.runner_user = machine.command(
            f"{name}-runner-user",
            create=Script("runner-user.sh", user_vars),
            delete=Script("runner-user-delete.sh", user_vars),
            triggers=[user],
            depends_on=[self.preflight],
        )
        self.exporter = ExporterService(
            f"{name}-exporter",
            host=host,
            fleet=fleet,
            endpoint=self.endpoint,
            depends_on=[self.runner_user],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.runners = [
            GitHubRunner(
                spec.name,
                spec=spec,
                host=host,
                fleet=fleet,
                endpoint=self.endpoint,
                depends_on=[self.runner_user, *(github_dependencies or [])],
                opts=pulumi.ResourceOptions(parent=self),
            )
            for spec in host.runners
        ]
        self.address = host.address
        self.register_outputs(
            {
                "address": host.address,
                "exporterUrl": self.exporter.url,
                "runners": [runner.runner_name for runner in self.runners],
            }
        )
