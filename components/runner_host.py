"""RunnerHost: one machine of the fleet, with everything this stack puts on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from components import layout, shell
from components.arch import UNAME_ARCH, Arch
from components.exporter import ExporterArgs, ExporterService
from components.github_runner import GitHubRunner, GitHubRunnerArgs
from components.remote import Machine, Script

# How long the preflight may spend installing the runner's native dependencies (apt-get update,
# then the packages) before it fails, leaving the rest to the next run.
DEPENDENCY_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class RunnerHostArgs:
    stack: str
    host_name: str
    arch: Arch
    min_disk_mb: int
    runner_user: str
    exporter: ExporterArgs
    runners: tuple[GitHubRunnerArgs, ...]
    install_dependencies: bool = False  # the preflight installs libicu & co. with apt-get


class RunnerHost(pulumi.ComponentResource):
    """A machine carrying runners.

    Children:
    - `{name}-preflight`: fails fast, listing every reason, when the host is unfit
      (not Linux/systemd, wrong arch, no passwordless sudo, too little disk, missing tools, the
      runner's native dependencies missing); with `install_dependencies` it first installs
      those with apt-get, bounded by DEPENDENCY_TIMEOUT_SECONDS.

    Protection comes from `opts` (the program sets `protect` from the stack config): every
    child inherits it, so a protected host can be neither deleted nor replaced by the engine.
    - `{name}-runner-user`: the stack's dedicated non-root runner user and install root.
    - `{name}-exporter` (ExporterService): this stack's node exporter and runner metrics.
    - one GitHubRunner per configured runner instance.
    """

    TYPE = "fleet:machines:RunnerHost"

    def __init__(
        self,
        name: str,
        args: RunnerHostArgs,
        *,
        machine: Machine,
        github_dependencies: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        stack = args.stack
        self.machine = machine

        self.preflight = machine.command(
            f"{name}-preflight",
            parent=self,
            create=Script(
                "host-preflight.create.sh",
                {
                    "HOST_NAME": args.host_name,
                    "EXPECTED_ARCH": UNAME_ARCH[args.arch],
                    "MIN_DISK_MB": args.min_disk_mb,
                    "INSTALL_ROOT": layout.install_root(stack),
                    "INSTALL_DEPENDENCIES": args.install_dependencies,
                    "DEPENDENCY_TIMEOUT": DEPENDENCY_TIMEOUT_SECONDS,
                },
                sudo=False,
            ),
        )
        user_vars: dict[str, shell.Value] = {
            "RUNNER_USER": args.runner_user,
            "INSTALL_ROOT": layout.install_root(stack),
            "STATE_ROOT": layout.state_root(stack),
            "RUNNER_HOME": layout.runner_home(stack),
            "RUNNERS_DIR": layout.runners_root(stack),
        }
        self.runner_user = machine.command(
            f"{name}-runner-user",
            parent=self,
            create=Script("host-runner-user.create.sh", user_vars),
            delete=Script("host-runner-user.delete.sh", user_vars),
            triggers=[args.runner_user],
            depends_on=[self.preflight],
        )
        self.exporter = ExporterService(
            f"{name}-exporter",
            args.exporter,
            machine=machine,
            depends_on=[self.runner_user],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.runners = [
            GitHubRunner(
                runner.runner_name,
                runner,
                machine=machine,
                depends_on=[self.runner_user, *github_dependencies],
                opts=pulumi.ResourceOptions(parent=self),
            )
            for runner in args.runners
        ]
        self.address = machine.endpoint.address
        self.register_outputs(
            {
                "address": self.address,
                "exporterUrl": self.exporter.url,
                "runners": [runner.runner_name for runner in self.runners],
            }
        )
