"""Where a stack's pieces live on a host. Every path and unit name carries the stack name, so
two stacks on one machine never manage the same file, service or port."""

from __future__ import annotations

import re

ROOT = "/opt/runner-fleet"
STATE = "/var/lib/runner-fleet"
ETC = "/etc/runner-fleet"


def install_root(stack: str) -> str:
    return f"{ROOT}/{stack}"


def state_root(stack: str) -> str:
    return f"{STATE}/{stack}"


def runner_dir(stack: str, runner: str) -> str:
    return f"{install_root(stack)}/runners/{runner}"


def exporter_dir(stack: str) -> str:
    return f"{install_root(stack)}/node-exporter"


def textfile_dir(stack: str) -> str:
    return f"{state_root(stack)}/textfile"


def metrics_conf_dir(stack: str) -> str:
    return f"{ETC}/{stack}/runners"


def collector_path(stack: str) -> str:
    return f"{install_root(stack)}/bin/runner-metrics"


def exporter_unit(stack: str) -> str:
    return f"runner-fleet-{stack}-node-exporter.service"


def collector_units(stack: str) -> tuple[str, str]:
    base = f"runner-fleet-{stack}-runner-metrics"
    return f"{base}.service", f"{base}.timer"


def target_file(stack: str) -> str:
    return f"runner-fleet-{stack}.json"


def runner_unit(owner_and_repo: str | None, organization: str | None, runner: str, *, dotcom: bool = True) -> str:
    """The unit name actions/runner's svc.sh derives: on github.com from the scope
    (repository: owner-repo; organization: org); on GitHub Enterprise Server from the first path
    segment of the runner service URL, `_services`. The scripts read the name svc.sh actually
    recorded in the runner's `.service` file; this is the expected name for outputs."""
    scope = "_services" if not dotcom else (organization or (owner_and_repo or "").replace("/", "-"))
    name = f"actions.runner.{scope}.{runner}"
    return re.sub(r"[^0-9A-Za-z._-]", "-", name) + ".service"
