"""Shared Pulumi mock harness: run the real program (__main__.py) for a stack config and record
every resource registration with its options, every invoke, and the stack outputs."""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import os
import runpy
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

# Under CI (CI=true) nothing may be skipped for a missing tool or privilege: test.sh installs
# every tool, so a skip there would hide a broken setup. Locally, tests without the tool skip.
IN_CI = bool(os.environ.get("CI"))


def needs(tool: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(tool) is None and not IN_CI, reason=f"{tool} not installed")


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0 and not IN_CI, reason="needs root")


SENTINEL_TOKEN = "ghp_SENTINELtoken0123456789abcdefSENTINEL"
SENTINEL_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nSENTINELkeyMATERIAL0123456789SENTINEL\n-----END OPENSSH PRIVATE KEY-----\n"
)
SECRET_KEYS = ["runner-fleet:githubToken", "runner-fleet:sshPrivateKey"]


def fake_host_key(seed: str) -> str:
    """A well-formed ssh-ed25519 public key line, different per seed."""
    kind = b"ssh-ed25519"
    key = hashlib.sha256(seed.encode()).digest()
    blob = len(kind).to_bytes(4, "big") + kind + len(key).to_bytes(4, "big") + key
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def committed_stack_config(stack: str) -> dict[str, Any]:
    """The `runner-fleet:*` keys of Pulumi.<stack>.yaml, without the namespace."""
    data = yaml.safe_load((PROJECT / f"Pulumi.{stack}.yaml").read_text())
    return {k.split(":", 1)[1]: v for k, v in data["config"].items()}


def completed_stack_config(stack: str) -> dict[str, Any]:
    """A committed stack file plus what a user sets with `pulumi config set`: host keys, secrets."""
    config = copy.deepcopy(committed_stack_config(stack))
    for host in config["hosts"]:
        host["hostKey"] = fake_host_key(host["address"])
    config["prometheus"]["hostKey"] = fake_host_key(config["prometheus"]["address"])
    config["githubToken"] = SENTINEL_TOKEN
    config["sshPrivateKey"] = SENTINEL_KEY
    return config


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def unwrap(value: Any) -> Any:
    if is_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def plain_parts(value: Any) -> Any:
    """The value with every secret-wrapped part removed: what would be stored in plain text."""
    if is_secret(value):
        return "[secret]"
    if isinstance(value, dict):
        return {k: plain_parts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_parts(v) for v in value]
    return value


def inner_script(command_text: str) -> str:
    """The script a command text runs: the argument of `-c` in `sudo -n /bin/bash -c '...' NAME`."""
    argv = shlex.split(command_text)
    return argv[argv.index("-c") + 1]


def inner_scripts(command_text: str) -> list[str]:
    """Every script a command text runs, in order (a retirement script runs before a delete)."""
    argv = shlex.split(command_text)
    return [argv[i + 1] for i, word in enumerate(argv) if word == "-c"]


@dataclass
class Registration:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str
    urn: str
    dependencies: list[str]
    delete_before_replace: bool
    additional_secret_outputs: list[str]
    outputs: dict[str, Any] = field(default_factory=dict)
    protect: bool | None = None  # the request's protect (None: not set)


class RecordingMocks(pulumi.runtime.Mocks):
    """Returns inputs as outputs (plus command stdout/stderr) and hands out a new registration
    token on every invoke, as pulumi-github does on every real run."""

    def __init__(self, token_prefix: str = "AAAA") -> None:
        self.calls: list[pulumi_mocks.MockCallArgs] = []
        self.outputs: dict[str, dict[str, Any]] = {}
        self._counter = itertools.count(1)
        self.token_prefix = token_prefix

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "command:remote:Command":
            state.update({"stdout": f"ran {args.name}", "stderr": ""})
        self.outputs[args.name] = state
        return f"{args.name}-id", state

    def call(self, args: pulumi_mocks.MockCallArgs):
        self.calls.append(args)
        if args.token.endswith("RegistrationToken"):
            return {"token": f"{self.token_prefix}{next(self._counter):06d}", "expiresAt": 1795000000, "id": "token"}
        if args.token == "github:index/getRepository:getRepository":
            return {"fullName": args.args.get("fullName"), "name": args.args.get("fullName", "/").split("/")[1]}
        if args.token == "github:index/getOrganization:getOrganization":
            return {"name": args.args.get("name"), "login": args.args.get("name")}
        return {}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Keeps each RegisterResource request: the options (parent, dependencies,
    deleteBeforeReplace, additionalSecretOutputs) are visible only there."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.requests: list[Any] = []

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        self.requests.append(request)
        return super().RegisterResource(request)


@dataclass
class ProgramRun:
    resources: list[Registration]
    calls: list[pulumi_mocks.MockCallArgs]
    outputs: dict[str, Any]

    def by_name(self, name: str) -> Registration:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"{name}: {len(matches)} resources"
        return matches[0]

    def commands(self) -> list[Registration]:
        return [r for r in self.resources if r.type == "command:remote:Command"]


def run_program(config: dict[str, Any], stack: str, *, token_prefix: str = "AAAA", secret_keys=None) -> ProgramRun:
    """Run __main__.py under mocks with `config` (keys without the namespace)."""
    flat = {
        f"runner-fleet:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in config.items()
    }

    def program() -> None:
        runpy.run_path(str(PROJECT / "__main__.py"), run_name="__main__")

    return run_under_mocks(
        program,
        stack,
        config=flat,
        secret_keys=SECRET_KEYS if secret_keys is None else secret_keys,
        token_prefix=token_prefix,
    )


def run_under_mocks(
    program: Callable[[], None],
    stack: str = "test",
    *,
    config: dict[str, str] | None = None,
    secret_keys: list[str] | None = None,
    token_prefix: str = "AAAA",
) -> ProgramRun:
    """Run `program` (anything that registers resources: the whole program, or one component
    built from its args) under recording mocks, with `config` as the stack's raw config."""
    mocks = RecordingMocks(token_prefix)
    monitor = RecordingMonitor(mocks)
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()
    pulumi.runtime.settings.ROOT.set(None)  # a fresh Stack resource named after this stack
    pulumi.runtime.set_mocks(mocks, project="runner-fleet", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config or {}, secret_keys or [])
    exports: dict[str, Any] = {}

    def body():
        program()
        root = pulumi.runtime.settings.get_root_resource()
        outputs = getattr(root, "outputs", {}) or {}
        return pulumi.Output.from_input(outputs).apply(exports.update)

    _sync_await(run_pulumi_func(lambda: _sync_await(pulumi.Output.from_input(body()).future())))
    resources = []
    for request in monitor.requests:
        if request.type == "pulumi:pulumi:Stack":
            continue
        resources.append(
            Registration(
                type=request.type,
                name=request.name,
                inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                parent=request.parent,
                urn=monitor.make_urn(request.parent, request.type, request.name),
                dependencies=list(request.dependencies),
                delete_before_replace=request.deleteBeforeReplace,
                additional_secret_outputs=list(request.additionalSecretOutputs),
                outputs=mocks.outputs.get(request.name, {}),
                protect=request.protect if request.HasField("protect") else None,
            )
        )
    return ProgramRun(resources=resources, calls=mocks.calls, outputs=exports)


@pytest.fixture(autouse=True)
def _reset_pulumi_config():
    yield
    pulumi.runtime.set_all_config({}, [])
