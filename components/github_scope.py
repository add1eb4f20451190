"""GitHubScope: the GitHub side of the fleet, through pulumi-github."""

from __future__ import annotations

import pulumi
import pulumi_github as github

from fleet.config import FleetConfig


class GitHubScope(pulumi.ComponentResource):
    """The repository or organization the runners register to.

    Children:
    - `{name}-provider`: a pulumi-github provider using the stack's GitHub credential.
    - `{name}-group-<group>`: one ActionsRunnerGroup per configured organization runner group.

    With `github.checkAccess` (default on), every preview and update first checks, through
    pulumi-github invokes, that the repository or organization exists and that the credential
    may manage its runners (minting a registration token succeeds). The token is discarded: no
    resource input ever depends on it, so an unchanged stack previews no changes.
    """

    TYPE = "fleet:actions:GitHubScope"

    def __init__(self, name: str, *, fleet: FleetConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, opts)
        settings = fleet.github
        self.provider = github.Provider(
            f"{name}-provider",
            token=fleet.secrets.github_token,
            owner=settings.owner,
            base_url=settings.effective_api_url + "/",
            opts=pulumi.ResourceOptions(parent=self),
        )
        invoke = pulumi.InvokeOptions(provider=self.provider)
        if settings.check_access:
            if settings.repository:
                github.get_repository(full_name=settings.repository, opts=invoke)
                github.get_actions_registration_token(repository=settings.repository.split("/")[1], opts=invoke)
            else:
                github.get_organization(name=settings.organization, opts=invoke)
                github.get_actions_organization_registration_token(opts=invoke)
        self.groups = [
            github.ActionsRunnerGroup(
                f"{name}-group-{group.name}",
                name=group.name,
                visibility=group.visibility,
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
            )
            for group in settings.runner_groups
        ]
        self.register_outputs({"scope": settings.registration_url, "groups": [g.name for g in settings.runner_groups]})
