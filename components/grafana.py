"""GrafanaDashboard: the stack's dashboard and its Grafana provisioning file on the monitoring host.

Optional: built only when the stack config has a `runner-fleet:grafana` section. Grafana itself
is the user's (installed, configured, its Prometheus data source set up); the program writes only
what Grafana's file provisioning reads, per stack, so two stacks on one monitoring host never
share a file and a destroy removes exactly this stack's.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi

from components import layout, shell
from components.remote import Machine, Script

# The job name the committed dashboard's queries select (README "Dashboard").
DEFAULT_JOB = "github-runner-health"
FOLDER = "runner-fleet"


@dataclass(frozen=True)
class GrafanaDashboardArgs:
    """Where this stack's dashboard goes on the monitoring host, and what it is."""

    stack: str
    provisioning_dir: str  # Grafana's [paths] provisioning
    dashboards_dir: str  # the stack's directory `runner-fleet-<stack>` is made in it
    service: str  # Grafana's systemd unit, restarted when the provider file changes
    dashboard: str  # the dashboard JSON (dashboard_json)


def dashboard_json(model: dict[str, Any], *, stack: str, job_name: str) -> str:
    """The committed dashboard (monitoring/grafana/runner-fleet.json) made this stack's: its own
    uid and title (Grafana refuses a uid twice, and a title twice in a folder), the queries on
    the configured scrape job, and the environment variable opening on this stack (every
    environment stays selectable). Deterministic, so an unchanged stack changes nothing."""
    board = copy.deepcopy(model)
    name = layout.grafana_name(stack)
    board["uid"] = name
    board["title"] = f"runner-fleet {stack}"
    board.pop("id", None)
    selector = re.compile(r'job="' + re.escape(DEFAULT_JOB) + '"')
    wanted = f'job="{job_name}"'

    def retarget(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (selector.sub(wanted, v) if k in ("expr", "query") and isinstance(v, str) else retarget(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [retarget(v) for v in node]
        return node

    board = retarget(board)
    for variable in board["templating"]["list"]:
        if variable["name"] == "environment":
            variable["current"] = {"selected": True, "text": [stack], "value": [stack]}
    return json.dumps(board, indent=2, sort_keys=True)


def provider_yaml(stack: str, dashboard_dir: str) -> str:
    """host_files/grafana-dashboards.yaml.tmpl for this stack."""
    return shell.host_file(
        "grafana-dashboards.yaml.tmpl",
        {"stack": stack, "name": layout.grafana_name(stack), "folder": FOLDER, "path": dashboard_dir},
    )


class GrafanaDashboard(pulumi.ComponentResource):
    """What the stack puts into the monitoring host's Grafana provisioning.

    Child `{name}-dashboard`: writes `<dashboardsDir>/runner-fleet-<stack>/runner-fleet.json`,
    then `<provisioningDir>/dashboards/runner-fleet-<stack>.yaml` (a dashboards provider with
    that directory as its path), each through a temporary file renamed into place; unchanged
    files are not touched. Grafana reads a provider file only when it starts, so a new or
    changed one restarts Grafana's service if it is running; a changed dashboard is read by
    the running provider within its update interval. Delete removes the dashboard (the running
    provider then deletes it from Grafana), its directory and the provider file, and restarts
    a running Grafana (which drops the provider at start). Nothing else in either directory is
    touched. A changed directory is a replacement that deletes the old files first.
    """

    TYPE = "fleet:monitoring:GrafanaDashboard"

    def __init__(
        self,
        name: str,
        args: GrafanaDashboardArgs,
        *,
        machine: Machine,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        dashboard_dir = layout.grafana_dashboard_dir(args.dashboards_dir, args.stack)
        provider_file = layout.grafana_provider_file(args.provisioning_dir, args.stack)
        self.provider = provider_yaml(args.stack, dashboard_dir)
        files = {
            "STACK": args.stack,
            "PROVIDER_FILE": provider_file,
            "DASHBOARD_DIR": dashboard_dir,
            "DASHBOARD_FILE": layout.DASHBOARD_FILE,
            "SERVICE": args.service,
            "LOCK_FILE": layout.PROMETHEUS_LOCK,
        }
        self.dashboard = machine.command(
            f"{name}-dashboard",
            parent=self,
            create=Script(
                "grafana-dashboard.create.sh",
                {**files, "PROVIDER_YAML": self.provider, "DASHBOARD_JSON": args.dashboard},
            ),
            delete=Script("grafana-dashboard.delete.sh", files),
            triggers=[provider_file, dashboard_dir],
            delete_before_replace=True,
        )
        self.provider_file = provider_file
        self.dashboard_path = f"{dashboard_dir}/{layout.DASHBOARD_FILE}"
        self.uid = layout.grafana_name(args.stack)
        self.register_outputs(
            {"providerFile": provider_file, "dashboardFile": self.dashboard_path, "dashboardUid": self.uid}
        )
