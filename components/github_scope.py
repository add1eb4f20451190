"""GitHubScope: the GitHub side of the fleet, through pulumi-github."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_github as github


@dataclass(frozen=True)
class RunnerGroup:
    """An organization runner group to create."""

    name: str
    visibility: Literal["all", "selected", "private"] = "all"


@dataclass(frozen=True)
class GitHubScopeArgs:
    credential: pulumi.Input[str]  # secret: the stack's GitHub credential
    owner: str  # the repository's owner or the organization
    api_url: str  # REST API base, without a trailing slash
    repository: str | None  # owner/name, or None for an organization
    organization: str | None
    registration_url: str  # for the component's outputs
    check_access: bool = True
    runner_groups: tuple[RunnerGroup, ...] = ()


class GitHubScope(pulumi.ComponentResource):
    """The repository or organization the runners register to.

    Children:
    - `{name}-provider`: a pulumi-github provider using the stack's GitHub credential, created
      only when the stack needs it (the access check or runner groups): with neither, the stack
      never loads pulumi-github's plugin, so it deploys where that plugin is not installed.
    - `{name}-group-<group>`: one ActionsRunnerGroup per configured organization runner group.

    With `github.checkAccess` (default on), every preview and update first checks, through
    pulumi-github invokes, that the repository or organization exists and that the credential
    may manage its runners (minting a registration token succeeds). The token is discarded: no
    resource input ever depends on it, so an unchanged stack previews no changes.
    """

    TYPE = "fleet:actions:GitHubScope"

    def __init__(self, name: str, args: GitHubScopeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, opts)
        self.provider: github.Provider | None = None
        self.groups: list[github.ActionsRunnerGroup] = []
        if not (args.check_access or args.runner_groups):
            self.register_outputs({"scope": args.registration_url, "groups": []})
            return
        self.provider = github.Provider(
            f"{name}-provider",
            token=args.credential,
            owner=args.owner,
            base_url=args.api_url + "/",
            opts=pulumi.ResourceOptions(parent=self),
        )
        invoke = pulumi.InvokeOptions(provider=self.provider)
        if args.check_access:
            if args.repository:
                github.get_repository(full_name=args.repository, opts=invoke)
                github.get_actions_registration_token(repository=args.repository.split("/")[1], opts=invoke)
            elif args.organization:
                github.get_organization(name=args.organization, opts=invoke)
                github.get_actions_organization_registration_token(opts=invoke)
        self.groups = [
            github.ActionsRunnerGroup(
                f"{name}-group-{group.name}",
                name=group.name,
                visibility=group.visibility,
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
            )
            for group in args.runner_groups
        ]
        self.register_outputs({"scope": args.registration_url, "groups": [g.name for g in args.runner_groups]})
