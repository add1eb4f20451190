"""GitHubView: GitHub's own view of the stack's runners, collected on the monitoring host.

A small collector (host_files/github-view.py, Python standard library only) lists the stack's
scope from the GitHub API every 30 s with a read-only credential of its own and serves the
families of monitoring/METRICS.md section 2 to Prometheus; see README "Alerts", "GitHub's view".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi

from components import layout, shell
from components.remote import Machine, Script

POLL_INTERVAL = 30  # seconds; the alert windows assume it (METRICS.md section 2)
RELEASES_REPO = "actions/runner"


@dataclass(frozen=True)
class GitHubViewArgs:
    """What the collector lists, with which credential, and where Prometheus finds it."""

    stack: str
    api_url: str  # REST base (https://api.github.com, or GHES's <server>/api/v3)
    scope_path: str  # repos/<owner>/<repo> | orgs/<org>
    runners: tuple[str, ...]  # every runner name the stack declares
    versions: tuple[str, ...]  # the runner versions the stack pins
    credential: pulumi.Input[str]  # secret: the read-only view token, sent on stdin only
    port: int  # the collector's port on 127.0.0.1
    targets_dir: str  # Prometheus's file_sd directory (prometheus.targetsDir)
    host: str  # the monitoring host's name in the target's `host` label


def config_json(args: GitHubViewArgs) -> str:
    """The collector's config file: no secret in it (the credential has its own file)."""
    return json.dumps(
        {
            "stack": args.stack,
            "api_url": args.api_url,
            "scope_path": args.scope_path,
            "runners": sorted(args.runners),
            "versions": sorted(set(args.versions)),
            "interval": POLL_INTERVAL,
            "releases_repo": RELEASES_REPO,
            "listen_address": "127.0.0.1",
            "listen_port": args.port,
            "token_file": layout.github_view_token(args.stack),
            "declared_glob": layout.github_view_configs_glob(),
        },
        indent=2,
        sort_keys=True,
    )


def target_json(args: GitHubViewArgs) -> str:
    """The file_sd target group. It sets `job` itself: Prometheus takes job_name only for a
    target whose labels have no `job`, so the series are job="github-runner-github" although
    the stack's scrape job reads the file."""
    group = {
        "targets": [f"127.0.0.1:{args.port}"],
        "labels": {
            "job": layout.GITHUB_VIEW_JOB,
            "environment": args.stack,
            "role": "github-view",
            "host": args.host,
        },
    }
    return json.dumps([group], indent=2, sort_keys=True)


def unit_content(stack: str) -> str:
    return shell.host_file(
        "github-view.service.tmpl",
        {
            "stack": stack,
            "collector": layout.github_view_collector(stack),
            "config": layout.github_view_config(stack),
            "token_file": layout.github_view_token(stack),
        },
    )


class GitHubView(pulumi.ComponentResource):
    """The stack's GitHub-view collector on the monitoring host.

    Children:
    - `{name}-collector`: the credential in a root-only file (0600, from stdin), the collector
      and its config, the hardened unit `runner-fleet-<stack>-github-view.service` (a dynamic
      user that gets the credential through LoadCredential), and the target group
      `<targetsDir>/runner-fleet-<stack>.github-view.json`. Delete removes exactly these.
    """

    TYPE = "fleet:monitoring:GitHubView"

    def __init__(
        self,
        name: str,
        args: GitHubViewArgs,
        *,
        machine: Machine,
        depends_on: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        stack = args.stack
        unit = layout.github_view_unit(stack)
        common: dict[str, shell.Value] = {
            "STACK": stack,
            "COLLECTOR_PATH": layout.github_view_collector(stack),
            "CONFIG_DIR": layout.github_view_dir(stack),
            "UNIT_DIR": layout.SYSTEMD_DIR,
            "UNIT": unit,
            "TARGETS_DIR": args.targets_dir,
            "TARGET_FILE": layout.github_view_target_file(stack),
            "LOCK_FILE": layout.PROMETHEUS_LOCK,
        }
        self.collector = machine.command(
            f"{name}-collector",
            parent=self,
            create=Script(
                "github-view-collector.create.sh",
                {
                    **common,
                    "COLLECTOR": shell.host_file_text("github-view.py"),
                    "CONFIG_FILE": layout.github_view_config(stack),
                    "CONFIG_JSON": config_json(args),
                    "TOKEN_FILE": layout.github_view_token(stack),
                    "UNIT_CONTENT": unit_content(stack),
                    "PORT": args.port,
                    "TARGET_JSON": target_json(args),
                },
            ),
            delete=Script("github-view-collector.delete.sh", common),
            stdin=args.credential,
            triggers=[unit, f"{args.targets_dir}/{layout.github_view_target_file(stack)}"],
            depends_on=depends_on or [],
        )
        self.url = f"http://127.0.0.1:{args.port}/metrics"
        self.unit = unit
        self.register_outputs({"unit": unit, "url": self.url})
