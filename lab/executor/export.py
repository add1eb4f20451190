"""`python -m lab.executor export --state FILE`: the executor's state as `pulumi stack export` prints it.

The state file already holds Pulumi checkpoint-shaped resources; this wraps them in the
export document (`{"version": 3, "deployment": {"manifest", "secrets_providers", "resources"}}`)
with the stack resource first, carrying the stack outputs, as the Pulumi CLI does. Secrets stay
as they are in the file: `{"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
"ciphertext": ...}`, the shape `pulumi stack export` without `--show-secrets` gives, so a reader
of the export sees what it would see from the real CLI and nothing more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.executor.engine import STATE_VERSION

STACK_TYPE = "pulumi:pulumi:Stack"
# Keys the engine writes even when empty; `pulumi stack export` leaves empty ones out.
_OMIT_EMPTY = (
    "id",
    "parent",
    "provider",
    "dependencies",
    "propertyDependencies",
    "additionalSecretOutputs",
    "ignoreChanges",
    "replaceOnChanges",
)
_OMIT_FALSE = ("protect", "deleteBeforeReplace", "retainOnDelete", "delete")


def export_document(state_path: Path) -> dict[str, Any]:
    """The export document of the state at `state_path` (an absent file is an empty stack)."""
    data: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    if data and data.get("version") != STATE_VERSION:
        raise ValueError(f"state {state_path}: unsupported version {data.get('version')!r}")
    project = str(data.get("project", "runner-fleet"))
    stack = str(data.get("stack", state_path.stem))
    stack_urn = f"urn:pulumi:{stack}::{project}::{STACK_TYPE}::{project}-{stack}"
    resources: list[dict[str, Any]] = []
    if data:
        resources.append({"urn": stack_urn, "custom": False, "type": STACK_TYPE, "outputs": data.get("outputs", {})})
    for raw in data.get("resources", []):
        resource = {
            k: v for k, v in raw.items() if not (k in _OMIT_EMPTY and not v) and not (k in _OMIT_FALSE and v is False)
        }
        resources.append(resource)
    provider = data.get("secretsProvider") or {}
    return {
        "version": 3,
        "deployment": {
            "manifest": {"time": data.get("updated", ""), "magic": "", "version": "lab-executor"},
            "secrets_providers": {
                "type": provider.get("type", "none"),
                "state": {k: v for k, v in provider.items() if k != "type"},
            },
            "resources": resources,
        },
    }


def write_export(state_path: Path, out: Any) -> None:
    json.dump(export_document(state_path), out, indent=4)
    out.write("\n")
