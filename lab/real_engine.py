"""Drive the real `pulumi` CLI on a throwaway stack of this project, the way a user would.

A `RealStack` is a stack of the runner-fleet project in a work directory of its own, with a
local file backend and passphrase-encrypted secrets. Config is set through the CLI
(`pulumi config set [--secret] [--path]`, via `pulumi.automation`), and the program is the
project's own `__main__.py`, run as an inline automation program: the CLI serves it the language
protocol from this Python process, so no `pulumi-language-python` plugin is needed.

Nothing is downloaded at run time: see `tools.engine.env()`.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from tools import engine

PROJECT = Path(__file__).resolve().parent.parent
PASSPHRASE = "runner-fleet-lab-passphrase"  # noqa: S105 - protects only throwaway lab state


class EngineMissing(RuntimeError):
    """The real CLI is neither built nor installed."""


def _program() -> None:
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    runpy.run_path(str(PROJECT / "__main__.py"), run_name="__main__")


class RealStack:
    """One stack of this project under the real CLI."""

    def __init__(self, work_dir: Path, stack: str, *, program: Callable[[], None] = _program) -> None:
        cli = engine.find("cli")
        if cli is None:
            raise EngineMissing("the Pulumi CLI is not built: run `python -m tools.engine build cli`")
        self.work_dir = work_dir
        self.state_dir = work_dir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.name = stack
        project = yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())
        shutil.copy(PROJECT / "Pulumi.yaml", work_dir / "Pulumi.yaml")
        env = engine.env()
        env.update(
            {
                "PULUMI_BACKEND_URL": f"file://{self.state_dir}",
                "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
                # A dead agent socket fails every command before it dials (REFERENCE §1).
                "SSH_AUTH_SOCK": "",
            }
        )
        self.env = env
        self.workspace = auto.LocalWorkspace(
            work_dir=str(work_dir),
            pulumi_home=env["PULUMI_HOME"],
            env_vars=env,
            pulumi_command=auto.PulumiCommand(root=str(cli.parent.parent), skip_version_check=True),
            project_settings=auto.ProjectSettings(name=project["name"], runtime="python"),
        )
        self.stack = auto.Stack.create_or_select(stack, self.workspace)
        self.stack.workspace.program = program

    # --- config, the way a user sets it ---------------------------------------------

    def set(self, key: str, value: Any, *, secret: bool = False, path: bool = False) -> None:
        """`pulumi config set [--secret] [--path] runner-fleet:KEY VALUE`; structured values as JSON."""
        text = value if isinstance(value, str) else json.dumps(value)
        self.stack.set_config(f"runner-fleet:{key}", auto.ConfigValue(text, secret=secret), path=path)

    def set_object(self, key: str, value: Any) -> None:
        """A structured key (object or list), written into the stack file as YAML, as users do."""
        path = self.work_dir / f"Pulumi.{self.name}.yaml"
        data = yaml.safe_load(path.read_text()) if path.exists() else None
        data = data or {}
        data.setdefault("config", {})[f"runner-fleet:{key}"] = value
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def stack_file(self) -> str:
        return (self.work_dir / f"Pulumi.{self.name}.yaml").read_text()

    # --- engine operations ----------------------------------------------------------

    def up(self, **kwargs: Any) -> auto.UpResult:
        return self.stack.up(color="never", **kwargs)

    def preview(self, **kwargs: Any) -> auto.PreviewResult:
        return self.stack.preview(color="never", **kwargs)

    def destroy(self, **kwargs: Any) -> auto.DestroyResult:
        return self.stack.destroy(color="never", **kwargs)

    def export(self) -> dict[str, Any]:
        return self.stack.export_stack().deployment or {}

    def resource_types(self) -> list[str]:
        return [r["type"] for r in self.export().get("resources", [])]

    def remove(self) -> None:
        self.workspace.remove_stack(self.name, force=True)


def engine_env_for_shell() -> dict[str, str]:
    """For the demo and users: the environment `tools.engine env` prints."""
    return {**os.environ, **engine.env()}
