"""GitHubRunner: one runner instance on a host: release, registration, service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from components import layout, shell
from components.arch import ARCH_LABEL, Arch
from components.remote import Machine, Script

DEFAULT_LABELS = ("self-hosted", "linux")
# How long retiring a runner waits for the job it is running before it fails (and changes nothing).
RETIRE_TIMEOUT_SECONDS = 1800


@dataclass(frozen=True)
class RunnerScope:
    """The repository or organization runners register to, as the scripts need it."""

    registration_url: str  # config.sh --url
    api_url: str  # REST API base
    scope_path: str  # REST path prefix of the runner endpoints (repos/o/r or orgs/o)
    credential: pulumi.Input[str]  # secret: the GitHub credential, sent on stdin only


@dataclass(frozen=True)
class RunnerRelease:
    """The pinned actions/runner tarball for the host's architecture."""

    version: str
    url: str
    sha256: str


@dataclass(frozen=True)
class GitHubRunnerArgs:
    stack: str
    runner_name: str
    unit: str  # the service name svc.sh derives from the scope (for outputs and the collector)
    runner_user: str
    arch: Arch
    labels: tuple[str, ...]  # as configured (defaults may be among them)
    group: str | None
    release: RunnerRelease
    scope: RunnerScope


def custom_labels(labels: Sequence[str], arch: Arch) -> list[str]:
    """Labels to set through the REST API: the configured ones minus the runner's defaults
    (self-hosted, Linux, X64/ARM64), which the runner always carries as read-only labels."""
    defaults = {*DEFAULT_LABELS, ARCH_LABEL[arch].lower()}
    return [label for label in labels if label.lower() not in defaults]


def all_labels(labels: Sequence[str], arch: Arch) -> list[str]:
    return ["self-hosted", "Linux", ARCH_LABEL[arch], *custom_labels(labels, arch)]


@dataclass(frozen=True)
class ScriptAfter(Script):
    """`first`, then (only if it succeeded) this script, in one command: the delete of a step
    that must retire something before it removes it."""

    first: Script | None = None

    def text(self) -> str:
        own = super().text()
        return f"{self.first.text()} && {own}" if self.first else own


class GitHubRunner(pulumi.ComponentResource):
    """A self-hosted runner registered to the stack's repository or organization.

    Children (each a remote command on the runner's host):
    - `{name}-install`: downloads the pinned actions/runner release, verifies its SHA-256 before
      extracting, upgrades in place when the version changes; delete removes the directory.
    - `{name}-registration`: registers once: root mints a one-hour registration token from the
      GitHub credential on stdin and config.sh (as the runner user) gets only that token; root
      sets exactly the configured labels through the REST API, so a label change is an in-place
      update. Delete deregisters (REST, as root) and removes every configured-state file.
      Replaced delete-before-replace, so an old delete can never remove a new registration.
    - `{name}-service`: installs and starts `actions.runner.<scope>.<name>.service` and waits for
      the runner to report that it listens for jobs. Its delete (the first of the runner's steps
      to be deleted) retires the runner first: it deregisters it on GitHub the moment it is idle,
      waiting for a running job up to RETIRE_TIMEOUT_SECONDS, then stops and uninstalls the
      service. It carries the credential on stdin for that (and only root reads it).
    """

    TYPE = "fleet:actions:GitHubRunner"

    def __init__(
        self,
        name: str,
        args: GitHubRunnerArgs,
        *,
        machine: Machine,
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        stack, scope, runner = args.stack, args.scope, args.runner_name
        user = args.runner_user
        directory = layout.runner_dir(stack, runner)
        download = layout.runner_download_dir(stack, runner)
        unit = args.unit
        labels = custom_labels(args.labels, args.arch)

        self.install = machine.command(
            f"{name}-install",
            parent=self,
            create=Script(
                "runner-install.create.sh",
                {
                    "RUNNER_NAME": runner,
                    "RUNNER_DIR": directory,
                    "DOWNLOAD_DIR": download,
                    "RELEASE_MARKER": layout.RELEASE_MARKER,
                    "RUNNER_USER": user,
                    "RUNNER_VERSION": args.release.version,
                    "RUNNER_URL": args.release.url,
                    "RUNNER_SHA256": args.release.sha256,
                },
            ),
            delete=Script(
                "runner-install.delete.sh",
                {
                    "RUNNER_NAME": runner,
                    "RUNNER_DIR": directory,
                    "DOWNLOAD_DIR": download,
                    "RUNNERS_DIR": layout.runners_root(stack),
                },
            ),
            triggers=[directory],
            depends_on=depends_on,
        )
        identity = [runner, scope.registration_url, directory, args.group or "", user]
        self.registration = machine.command(
            f"{name}-registration",
            parent=self,
            create=Script(
                "runner-registration.create.sh",
                {
                    "RUNNER_NAME": runner,
                    "RUNNER_DIR": directory,
                    "RUNNER_USER": user,
                    "REGISTRATION_URL": scope.registration_url,
                    "API_URL": scope.api_url,
                    "SCOPE_PATH": scope.scope_path,
                    "CUSTOM_LABELS": ",".join(labels),
                    "RUNNER_GROUP": args.group or "",
                    "DISABLE_UPDATE": True,
                    "UNIT_DIR": layout.SYSTEMD_DIR,
                },
            ),
            delete=Script(
                "runner-registration.delete.sh",
                {
                    "RUNNER_NAME": runner,
                    "RUNNER_DIR": directory,
                    "API_URL": scope.api_url,
                    "SCOPE_PATH": scope.scope_path,
                },
            ),
            stdin=scope.credential,
            triggers=identity,
            depends_on=[self.install],
            delete_before_replace=True,
        )
        conf = layout.metrics_conf(stack, runner)
        conf_content = shell.host_file(
            "runner.conf.tmpl",
            {
                "name": runner,
                "dir": directory,
                "unit": unit,
                "version": args.release.version,
                "labels": ",".join(all_labels(args.labels, args.arch)),
            },
        )
        self.service = machine.command(
            f"{name}-service",
            parent=self,
            create=Script(
                "runner-service.create.sh",
                {
                    "RUNNER_NAME": runner,
                    "RUNNER_DIR": directory,
                    "RUNNER_USER": user,
                    "UNIT_DIR": layout.SYSTEMD_DIR,
                    "UNIT": unit,
                    "METRICS_CONF": conf,
                    "METRICS_CONF_CONTENT": conf_content,
                    "SPOOL_DIR": layout.runner_spool(stack, runner),
                    "HOOKS_DIR": layout.runner_hooks_dir(stack, runner),
                    "HOOK_SCRIPT": shell.host_file_text("runner-hook.sh"),
                },
            ),
            delete=ScriptAfter(
                "runner-service.delete.sh",
                {
                    "RUNNER_NAME": runner,
                    "RUNNER_DIR": directory,
                    "UNIT_DIR": layout.SYSTEMD_DIR,
                    "UNIT": unit,
                    "METRICS_CONF": conf,
                    "SPOOL_DIR": layout.runner_spool(stack, runner),
                    "HOOKS_DIR": layout.runner_hooks_dir(stack, runner),
                },
                first=Script(
                    "runner-service.retire.sh",
                    {
                        "HOST": machine.endpoint.address,
                        "RUNNER_NAME": runner,
                        "RUNNER_DIR": directory,
                        "API_URL": scope.api_url,
                        "SCOPE_PATH": scope.scope_path,
                        "RETIRE_TIMEOUT": RETIRE_TIMEOUT_SECONDS,
                    },
                ),
            ),
            stdin=scope.credential,
            triggers=[*identity, unit],
            depends_on=[self.registration],
            delete_before_replace=True,
        )
        self.runner_name = runner
        self.unit = unit
        self.labels = all_labels(args.labels, args.arch)
        self.register_outputs({"name": runner, "unit": unit, "labels": self.labels, "directory": directory})
