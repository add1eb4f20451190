"""How every component reaches a machine: a pinned-key SSH connection and one command factory.

All remote work goes through `Machine.command`, so every command gets the same guarantees:
the host key is pinned, the host identity is a trigger (a moved host is a replacement that
runs `delete` on the old machine, not an update that silently abandons it), nothing is sent
as `environment` (a stock sshd refuses it), secrets go on stdin only and make stdout/stderr
secret, and no previous output is pushed through setenv on delete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from components import shell


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect; `identity` is what triggers a replacement when it changes."""

    address: str
    port: int
    user: str
    host_key: str
    jump: Endpoint | None = None

    @property
    def identity(self) -> str:
        via = f" via {self.jump.identity}" if self.jump else ""
        return f"{self.user}@{self.address}:{self.port}{via}"


def connection(endpoint: Endpoint, private_key: pulumi.Input[str]) -> remote.ConnectionArgs:
    proxy = None
    if endpoint.jump is not None:
        proxy = remote.ProxyConnectionArgs(
            host=endpoint.jump.address,
            port=endpoint.jump.port,
            user=endpoint.jump.user,
            host_key=endpoint.jump.host_key,
            private_key=private_key,
        )
    return remote.ConnectionArgs(
        host=endpoint.address,
        port=endpoint.port,
        user=endpoint.user,
        host_key=endpoint.host_key,
        private_key=private_key,
        proxy=proxy,
        # Fail a deploy to an unreachable host in about a minute instead of the default ten dials.
        dial_error_limit=4,
        per_dial_timeout=15,
    )


@dataclass(frozen=True)
class Script:
    """A script from components/scripts/ (`<child>.create.sh` / `<child>.delete.sh`) with its inputs."""

    name: str
    variables: Mapping[str, shell.Value]
    sudo: bool = True

    def text(self) -> str:
        return shell.command(self.name, self.variables, sudo=self.sudo)


@dataclass(frozen=True)
class Machine:
    """One machine and the key to reach it: what a component needs to run commands there.
    The program builds it from config; components hand it on to their child components."""

    endpoint: Endpoint
    private_key: pulumi.Input[str]

    def command(
        self,
        resource_name: str,
        *,
        parent: pulumi.Resource,
        create: Script,
        delete: Script | None = None,
        stdin: pulumi.Input[str] | None = None,
        triggers: Sequence[str] = (),
        depends_on: Sequence[pulumi.Resource] = (),
        delete_before_replace: bool = False,
    ) -> remote.Command:
        """One remote command, a child of `parent`, with the project's safety rules applied."""
        secret_outputs = ["stdout", "stderr"] if stdin is not None else []
        return remote.Command(
            resource_name,
            connection=connection(self.endpoint, self.private_key),
            create=create.text(),
            delete=delete.text() if delete else None,
            stdin=stdin,
            triggers=[self.endpoint.identity, *triggers],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=parent,
                depends_on=list(depends_on),
                delete_before_replace=delete_before_replace,
                additional_secret_outputs=secret_outputs,
            ),
        )
