"""GitHubRunner: one runner instance on a host: release, registration, service."""

from __future__ import annotations

import pulumi

from components import layout
from components.remote import Endpoint, Machine, Script
from fleet.config import ARCH_LABEL, FleetConfig, HostSpec, RunnerSpec

DEFAULT_LABELS = ("self-hosted", "linux")


def custom_labels(spec: RunnerSpec, arch: str) -> list[str]:
    """Labels to set through the REST API: the configured ones minus the runner's defaults
    (self-hosted, Linux, X64/ARM64), which the runner always carries as read-only labels."""
    defaults = {*DEFAULT_LABELS, ARCH_LABEL[arch].lower()}
    return [label for label in spec.labels if label.lower() not in defaults]


def all_labels(spec: RunnerSpec, arch: str) -> list[str]:
    return ["self-hosted", "Linux", ARCH_LABEL[arch], *custom_labels(spec, arch)]


class GitHubRunner(pulumi.ComponentResource):
    """A self-hosted runner registered to the stack's repository or organization.

    Children (each a remote command on the runner's host):
    - `{name}-install`: downloads the pinned actions/runner release, verifies its SHA-256 before
      extracting, upgrades in place when the version changes; delete removes the directory.
    - `{name}-registration`: registers once with the GitHub credential from stdin (config.sh
      --pat) and sets exactly the configured labels through the REST API; a label change is an
      in-place update. Delete deregisters. Replaced delete-before-replace, so an old delete can
      never remove a new registration of the same name.
    - `{name}-service`: installs and starts `actions.runner.<scope>.<name>.service` and waits for
      the runner to report that it listens for jobs; delete stops and uninstalls it.
    """

    TYPE = "fleet:actions:GitHubRunner"

    def __init__(
        self,
        name: str,
        *,
        spec: RunnerSpec,
        host: HostSpec,
        fleet: FleetConfig,
        endpoint: Endpoint,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        stack, github = fleet.stack, fleet.github
        machine = Machine(self, endpoint, fleet.secrets.ssh_private_key)
        token = fleet.secrets.github_token
        user = fleet.runner_user(host)
        directory = layout.runner_dir(stack, spec.name)
        unit = layout.runner_unit(
            github.repository, github.organization, spec.name, dotcom=github.server_url == "https://github.com"
        )
        labels = custom_labels(spec, host.arch)

        self.install = machine.command(
            f"{name}-install",
            create=Script(
                "runner-install.sh",
                {
                    "RUNNER_NAME": spec.name,
                    "RUNNER_DIR": directory,
                    "RUNNER_USER": user,
                    "RUNNER_VERSION": fleet.runner.version,
                    "RUNNER_URL": fleet.runner.url(host.arch),
                    "RUNNER_SHA256": fleet.runner.checksum(host.arch),
                },
            ),
            delete=Script(
                "runner-uninstall.sh",
                {"RUNNER_NAME": spec.name, "RUNNER_DIR": directory, "INSTALL_ROOT": layout.install_root(stack)},
            ),
            triggers=[directory],
            depends_on=depends_on,
        )
        identity = [spec.name, github.registration_url, directory, spec.group or "", user]
        self.registration = machine.command(
            f"{name}-registration",
            create=Script(
                "runner-register.sh",
                {
                    "RUNNER_NAME": spec.name,
                    "RUNNER_DIR": directory,
                    "RUNNER_USER": user,
                    "REGISTRATION_URL": github.registration_url,
                    "API_URL": github.effective_api_url,
                    "SCOPE_PATH": github.scope_path,
                    "CUSTOM_LABELS": ",".join(labels),
                    "RUNNER_GROUP": spec.group or "",
                    "DISABLE_UPDATE": True,
                },
            ),
            delete=Script(
                "runner-deregister.sh",
                {
                    "RUNNER_NAME": spec.name,
                    "RUNNER_DIR": directory,
                    "API_URL": github.effective_api_url,
                    "SCOPE_PATH": github.scope_path,
                },
            ),
            stdin=token,
            triggers=identity,
            depends_on=[self.install],
            delete_before_replace=True,
        )
        conf = layout.metrics_conf_dir(stack) + f"/{spec.name}.conf"
        conf_content = "\n".join(
            [
                f"name={spec.name}",
                f"dir={directory}",
                f"unit={unit}",
                f"version={fleet.runner.version}",
                f"labels={','.join(all_labels(spec, host.arch))}",
            ]
        )
        self.service = machine.command(
            f"{name}-service",
            create=Script(
                "runner-service.sh",
                {
                    "RUNNER_NAME": spec.name,
                    "RUNNER_DIR": directory,
                    "RUNNER_USER": user,
                    "UNIT": unit,
                    "METRICS_CONF": conf,
                    "METRICS_CONF_CONTENT": conf_content,
                },
            ),
            delete=Script(
                "runner-service-delete.sh",
                {"RUNNER_NAME": spec.name, "RUNNER_DIR": directory, "UNIT": unit, "METRICS_CONF": conf},
            ),
            triggers=[*identity, unit],
            depends_on=[self.registration],
            delete_before_replace=True,
        )
        self.runner_name = spec.name
        self.unit = unit
        self.labels = all_labels(spec, host.arch)
        self.register_outputs({"name": spec.name, "unit": unit, "labels": self.labels, "directory": directory})
