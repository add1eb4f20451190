"""A small Pulumi engine for the lab: run the program under mocks, diff against a local state file,
and carry out `command:remote:Command` resources over SSH as pulumi-command 1.2.1 would.

The program runs unchanged (`runpy` of `<project>/__main__.py`) under `pulumi.runtime.set_mocks`
with `ExecutorMonitor`, so the program's own data flow, `depends_on` and the SDK's concurrency
decide the order: a resource's registration reaches the engine only after everything it depends
on has finished, and independent registrations arrive concurrently on the event loop's executor
(64 threads here, instead of the default min(32, cpus+4)).

Engine rules reproduced (pkg/resource/deploy in pulumi, pulumi-go-provider infer, pulumi-command):
- diff of old vs new *inputs* (after provider defaults and `ignore_changes`, which puts the old
  value back with the engine's `PropertyPath.Reset` rules); no change -> same (outputs from state);
  a change under `triggers` (pulumi-command's replaceOnChanges) or a `replace_on_changes` path ->
  replace, else update (`update` text if set, else `create`);
- replace is create-before-delete: the new create runs at once, the original is kept as pending
  delete and deleted after the program, with the other deletes; `delete_before_replace` deletes
  the original first;
- a failed create saves nothing, a failed update keeps the old state, a failed delete keeps the
  resource; after a failure no new step starts, in-flight ones finish, nothing is deleted;
- resources no longer declared, and replaced originals, are deleted after the program in reverse
  dependency order (independent deletes in parallel); dependencies are the request's
  `dependencies` (explicit `depends_on`, components expanded to their descendants, and the
  resources whose Outputs flowed into inputs), the parent, and an explicit provider;
- `protect`, as pkg/resource/deploy does it (pulumi/pulumi at pkg/v3.259; the CLI here is v3.274):
  a request without `protect` is unprotected (step_generator.go: a nil goal.Protect is false; the
  SDK itself copies a parent's protect to its children); deleting a protected resource fails
  with deleteProtectedError's text (step.go, DeleteStep.Apply, also in a preview) and the
  deployment goes on past it (step_executor.go cancelDueToError, since pkg/v3.150): the other
  deletes still run, except the resources the refused one depends on, transitively
  (deployment_executor.go performPostSteps: erroredDeps); replacing a resource protected in
  the state and in the program fails at once, before anything else starts (step_generator.go:
  "unable to replace resource"; a preview reports it and goes on); a replacement's delete of
  the original is never refused (DeleteStep.replacing); `retain_on_delete` skips the provider
  delete. Not reproduced: the replacement chain of delete-before-replace dependents.
- `run_program(..., preview_first=True)` is `pulumi up` as the CLI runs it by default (a preview,
  then the update only if the preview succeeded); without it, `pulumi up --skip-preview` as the
  Automation API and pulumi/actions run it.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
import logging
import os
import runpy
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.executor.mocks import (
    ExecutorMocks,
    ExecutorMonitor,
    InvokeAnswer,
    RegistrationArgs,
    default_invokes,
)
from lab.executor.ssh import (
    RemoteCommandError,
    SSHTransport,
    Transport,
    connection_from_inputs,
    go_quote,
    run_command,
)

COMMAND = "command:remote:Command"
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105 - Pulumi's secret signature, not a secret
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 - Pulumi's secret signature, not a secret
STATE_VERSION = 1
REGISTER_THREADS = 64
DELETE_THREADS = 32

Log = Callable[[str], None]


# --- values ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    """A secret value (the whole subtree is secret)."""

    value: Any


class _Unknown:
    """A value not known during preview."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()


def from_rpc(value: Any) -> Any:
    """SDK-deserialized value -> executor value (Secret / UNKNOWN markers, None-valued keys dropped)."""
    from pulumi.output import Unknown
    from pulumi.runtime import rpc

    if isinstance(value, Unknown) or value == rpc.UNKNOWN:
        return UNKNOWN
    if rpc.is_rpc_secret(value):
        return Secret(from_rpc(rpc.unwrap_rpc_secret(value)))
    if isinstance(value, dict):
        return {k: from_rpc(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [from_rpc(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def to_rpc(value: Any) -> Any:
    """Executor value -> what the mock monitor serializes back to the SDK."""
    from pulumi.runtime import rpc

    if value is UNKNOWN:
        return rpc.UNKNOWN
    if isinstance(value, Secret):
        return rpc.wrap_rpc_secret(to_rpc(value.value))
    if isinstance(value, dict):
        return {k: to_rpc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_rpc(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """Strip secret markers (for diffing and for carrying the command out)."""
    if isinstance(value, Secret):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def has_unknown(value: Any) -> bool:
    """True when a preview value still contains an unknown."""
    if value is UNKNOWN:
        return True
    if isinstance(value, Secret):
        return has_unknown(value.value)
    if isinstance(value, dict):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unknown(v) for v in value)
    return False


# Connection fields that are not sensitive although the provider marks the whole connection secret:
# redacting host names or user names everywhere would only make the progress log unreadable.
_NOT_SENSITIVE = {"host", "port", "user", "hostKey", "dialErrorLimit", "perDialTimeout", "agentSocketPath"}


def secret_strings(value: Any, inside: bool = False) -> Iterable[str]:
    """Every sensitive string leaf under a Secret, for redaction."""
    if isinstance(value, Secret):
        yield from secret_strings(value.value, True)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not (inside and k in _NOT_SENSITIVE):
                yield from secret_strings(v, inside)
    elif isinstance(value, list):
        for v in value:
            yield from secret_strings(v, inside)
    elif inside and isinstance(value, str):
        yield value


def _same(a: Any, b: Any) -> bool:
    if a is UNKNOWN or b is UNKNOWN:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


# --- property paths (pulumi sdk/go/common/resource/property_path.go) -------------------------------

PathElement = str | int


def parse_path(text: str) -> list[PathElement]:
    """Parse `a.b[0]["c.d"].*` into elements (`*` is a wildcard)."""
    elements: list[PathElement] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == ".":
            i += 1
            continue
        if ch == "[":
            end = text.find("]", i)
            if i + 1 < n and text[i + 1] == '"':
                j = i + 2
                buf = []
                while j < n and text[j] != '"':
                    if text[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(text[j])
                    j += 1
                if j + 1 >= n or text[j + 1] != "]":
                    raise ValueError(f"invalid property path {text!r}")
                elements.append("".join(buf))
                i = j + 2
                continue
            if end < 0:
                raise ValueError(f"invalid property path {text!r}")
            inner = text[i + 1 : end]
            elements.append("*" if inner == "*" else int(inner))
            i = end + 1
            continue
        j = i
        while j < n and text[j] not in ".[":
            j += 1
        elements.append(text[i:j])
        i = j
    if not elements:
        raise ValueError(f"invalid property path {text!r}")
    return elements


def path_contains(pattern: list[PathElement], other: list[PathElement]) -> bool:
    """`PropertyPath.Contains`: `pattern` is a prefix of `other`, `*` matching any key."""
    if len(other) < len(pattern):
        return False
    for p, o in zip(pattern, other, strict=False):
        if isinstance(p, int):
            if not isinstance(o, int) or o != p:
                return False
        elif p != "*" and (not isinstance(o, str) or o != p):
            return False
    return True


def _secret_if(value: Any, wrap: bool) -> Any:
    value = copy.deepcopy(value)
    return Secret(value) if wrap and not isinstance(value, Secret) else value


def _reset(path: list[PathElement], old: Any, new: Any, old_secret: bool, new_secret: bool) -> bool:
    """`PropertyPath.reset`: put old's value at `path` into `new` (in place); False = path error."""
    if not path:
        return False
    if isinstance(old, Secret):
        old, old_secret = old.value, True
    if isinstance(new, Secret):
        new, new_secret = new.value, True
    key = path[0]
    if isinstance(key, int):
        if key < 0:
            return False
        old_list, new_list = isinstance(old, list), isinstance(new, list)
        if len(path) == 1:
            if not old_list and not new_list:
                return True
            if not old_list or not new_list:
                return False
            if key >= len(old) and key >= len(new):
                return True
            if key >= len(old) or key >= len(new):
                return False
            new[key] = _secret_if(old[key], old_secret and not new_secret)
            return True
        if not old_list or not new_list:
            return not old_list and not new_list
        if key >= len(old) or key >= len(new):
            return False
        return _reset(path[1:], old[key], new[key], old_secret, new_secret)
    if key == "*":
        if len(path) == 1:
            if isinstance(new, dict):
                if isinstance(old, dict):
                    for k, v in old.items():
                        new[k] = _secret_if(v, old_secret and not new_secret)
                    for k in [k for k in new if k not in old]:
                        del new[k]
                return True
            if isinstance(new, list):
                if isinstance(old, list):
                    if len(old) != len(new):
                        return False
                    for i, v in enumerate(old):
                        new[i] = _secret_if(v, old_secret and not new_secret)
                return True
            return False
        if isinstance(old, dict) and isinstance(new, dict):
            for k in old:
                if k not in new:
                    return False
                if not _reset(path[1:], old[k], new[k], old_secret, new_secret):
                    return False
            return True
        if isinstance(old, list) and isinstance(new, list):
            if len(old) != len(new):
                return False
            return all(_reset(path[1:], o, v, old_secret, new_secret) for o, v in zip(old, new, strict=True))
        return False
    if len(path) == 1:
        if isinstance(old, dict) and key in old:
            if not isinstance(new, dict):
                return False
            new[key] = _secret_if(old[key], old_secret and not new_secret)
        elif isinstance(new, dict):
            new.pop(key, None)
        return True
    if not isinstance(old, dict) or not isinstance(new, dict):
        return not isinstance(old, dict) and not isinstance(new, dict)
    has_old, has_new = key in old, key in new
    if has_old and not has_new:
        return False
    if not has_old and not has_new:
        return True
    return _reset(path[1:], old.get(key), new[key], old_secret, new_secret)


def process_ignore_changes(news: dict[str, Any], olds: dict[str, Any], ignore_changes: list[str]) -> dict[str, Any]:
    """The engine's `processIgnoreChanges`: ignored paths keep their old values."""
    result = copy.deepcopy(news)
    invalid = []
    for text in ignore_changes:
        try:
            path = parse_path(text)
        except ValueError:
            continue
        if not _reset(path, olds, result, False, False):
            invalid.append(text)
    if invalid:
        raise ValueError(
            "cannot ignore changes to the following properties because one or more elements of the path are "
            f"missing: {', '.join(invalid)!r}"
        )
    return result


def diff_paths(old: Any, new: Any, prefix: list[PathElement] | None = None) -> list[list[PathElement]]:
    """Changed paths between old and new inputs, like the detailed diff (secretness ignored)."""
    prefix = prefix or []
    if isinstance(old, Secret):
        old = old.value
    if isinstance(new, Secret):
        new = new.value
    if new is UNKNOWN or old is UNKNOWN:
        return [prefix]
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[list[PathElement]] = []
        for key in sorted(set(old) | set(new)):
            if key.startswith("__"):
                continue
            if key not in old or key not in new:
                out.append([*prefix, key])
            else:
                out.extend(diff_paths(old[key], new[key], [*prefix, key]))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            if i >= len(old) or i >= len(new):
                out.append([*prefix, i])
            else:
                out.extend(diff_paths(old[i], new[i], [*prefix, i]))
        return out
    return [] if _same(old, new) else [prefix]


def format_path(path: list[PathElement]) -> str:
    """Render a path the way Pulumi prints it."""
    out = ""
    for element in path:
        if isinstance(element, int):
            out += f"[{element}]"
        elif element.replace("_", "a").isalnum() and element != "*":
            out += ("." if out else "") + element
        else:
            out += f'["{element}"]'
    return out


def _command_defaults(inputs: dict[str, Any]) -> dict[str, Any]:
    """Provider `Check` defaults on the connection (and proxy): user root, port 22, limits."""
    defaults = {"user": "root", "port": 22, "dialErrorLimit": 10, "perDialTimeout": 15}

    def fill(conn: Any) -> Any:
        if isinstance(conn, Secret):
            return Secret(fill(conn.value))
        if not isinstance(conn, dict):
            return conn
        filled = {**{k: v for k, v in defaults.items() if k not in conn}, **conn}
        if "proxy" in filled:
            filled["proxy"] = fill(filled["proxy"])
        return filled

    if "connection" in inputs:
        inputs = {**inputs, "connection": fill(inputs["connection"])}
    return inputs


# --- state -----------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One resource in the state file (the shape of a Pulumi checkpoint resource)."""

    urn: str
    type: str
    custom: bool
    id: str | None
    parent: str | None
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    provider: str | None
    protect: bool
    delete_before_replace: bool
    retain_on_delete: bool
    ignore_changes: list[str]
    additional_secret_outputs: list[str]
    replace_on_changes: list[str]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    pending_delete: bool = False

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    def depends_on(self) -> set[str]:
        """URNs this resource depends on (it must be deleted before any of them)."""
        deps = set(self.dependencies)
        for urns in self.property_dependencies.values():
            deps.update(urns)
        if self.parent:
            deps.add(self.parent)
        if self.provider and "::" in self.provider:
            deps.add(self.provider.rsplit("::", 1)[0])
        deps.discard("")
        deps.discard(self.urn)
        return deps


class StateStore:
    """Our local backend: one JSON file, secrets encrypted with a key file next to it (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.key_path = self.path.with_name(self.path.name + ".key")
        self._fernet: Any = None

    def _cipher(self, create: bool) -> Any:
        from cryptography.fernet import Fernet

        if self._fernet is None:
            if not self.key_path.exists():
                if not create:
                    raise RuntimeError(f"state {self.path} holds secrets but its key file {self.key_path} is missing")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(Fernet.generate_key())
            self._fernet = Fernet(self.key_path.read_bytes().strip())
        return self._fernet

    def _encode(self, value: Any) -> Any:
        if isinstance(value, Secret):
            token = self._cipher(True).encrypt(json.dumps(plain(value.value)).encode()).decode()
            return {SECRET_SIG_KEY: SECRET_SIG, "ciphertext": token}
        if isinstance(value, dict):
            return {k: self._encode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._encode(v) for v in value]
        return None if value is UNKNOWN else value

    def _decode(self, value: Any) -> Any:
        if isinstance(value, dict):
            if value.get(SECRET_SIG_KEY) == SECRET_SIG:
                return Secret(json.loads(self._cipher(False).decrypt(value["ciphertext"].encode())))
            return {k: self._decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._decode(v) for v in value]
        return value

    def load(self) -> tuple[list[Entry], dict[str, Any]]:
        """Entries and stack outputs; an absent file is an empty stack."""
        if not self.path.exists():
            return [], {}
        data = json.loads(self.path.read_text())
        if data.get("version") != STATE_VERSION:
            raise RuntimeError(f"state {self.path}: unsupported version {data.get('version')!r}")
        entries = []
        for raw in data.get("resources", []):
            entries.append(
                Entry(
                    urn=raw["urn"],
                    type=raw["type"],
                    custom=raw["custom"],
                    id=raw.get("id"),
                    parent=raw.get("parent"),
                    dependencies=list(raw.get("dependencies", [])),
                    property_dependencies=dict(raw.get("propertyDependencies", {})),
                    provider=raw.get("provider"),
                    protect=bool(raw.get("protect", False)),
                    delete_before_replace=bool(raw.get("deleteBeforeReplace", False)),
                    retain_on_delete=bool(raw.get("retainOnDelete", False)),
                    ignore_changes=list(raw.get("ignoreChanges", [])),
                    additional_secret_outputs=list(raw.get("additionalSecretOutputs", [])),
                    replace_on_changes=list(raw.get("replaceOnChanges", [])),
                    inputs=self._decode(raw.get("inputs", {})),
                    outputs=self._decode(raw.get("outputs", {})),
                    pending_delete=bool(raw.get("delete", False)),
                )
            )
        return entries, self._decode(data.get("outputs", {}))

    def save(self, project: str, stack: str, entries: list[Entry], outputs: dict[str, Any]) -> None:
        """Write atomically (temp file in the same directory, fsync, rename), mode 0600."""
        resources = []
        for e in entries:
            raw: dict[str, Any] = {
                "urn": e.urn,
                "type": e.type,
                "custom": e.custom,
                "id": e.id,
                "parent": e.parent,
                "dependencies": e.dependencies,
                "propertyDependencies": e.property_dependencies,
                "provider": e.provider,
                "protect": e.protect,
                "deleteBeforeReplace": e.delete_before_replace,
                "retainOnDelete": e.retain_on_delete,
                "ignoreChanges": e.ignore_changes,
                "additionalSecretOutputs": e.additional_secret_outputs,
                "replaceOnChanges": e.replace_on_changes,
                "inputs": self._encode(e.inputs),
                "outputs": self._encode(e.outputs),
            }
            if e.pending_delete:
                raw["delete"] = True
            resources.append(raw)
        document = {
            "version": STATE_VERSION,
            "project": project,
            "stack": stack,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "secretsProvider": {"type": "fernet", "keyFile": self.key_path.name},
            "resources": resources,
            "outputs": self._encode(outputs),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle, indent=2, sort_keys=False)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- report ----------------------------------------------------------------------------------------


@dataclass
class Operation:
    """One step of a run: what happened to a resource, how long it took, what it printed."""

    urn: str
    type: str
    name: str
    op: str  # same | create | update | replace | delete
    seconds: float = 0.0
    stdout: str | None = None
    stderr: str | None = None
    ok: bool = True
    error: str | None = None
    replaced_original: bool = False  # this delete removes the original of a replaced resource
    planned: bool = False  # preview: computed, not carried out


@dataclass
class Execution:
    """One remote command run over the transport."""

    urn: str
    name: str
    kind: str  # create | update | delete
    target: str
    ok: bool
    ran: bool  # exec'd on the host (False: dial, auth or setenv failed before)
    seconds: float


@dataclass
class RunReport:
    """What `run_program` did."""

    mode: str
    ok: bool = True
    error: str | None = None  # the first failure (the only one unless deletes were refused as protected)
    errors: list[str] = field(default_factory=list)  # every failure, as the engine's diagnostics list them
    operations: list[Operation] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)
    wall_seconds: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    invokes: list[str] = field(default_factory=list)

    @property
    def commands_executed(self) -> int:
        """Remote commands actually exec'd over SSH (failed ones included; refused dials not)."""
        return sum(1 for e in self.executions if e.ran)

    def counts(self) -> dict[str, int]:
        """Operations per kind; deletes of replaced originals are part of their replace."""
        counts = {op: 0 for op in ("same", "create", "update", "replace", "delete")}
        for operation in self.operations:
            if operation.ok and not operation.replaced_original:
                counts[operation.op] += 1
        return counts

    def ops(self, op: str, type: str | None = "command:remote:Command") -> list[str]:  # noqa: A002
        """Names of resources (of `type`, None = any) with the given operation, for tests and demos."""
        return [
            o.name
            for o in self.operations
            if o.op == op and not o.replaced_original and (type is None or o.type == type)
        ]

    def summary(self) -> str:
        """One line: counts, commands run, wall time."""
        c = self.counts()
        planned = self.mode == "preview" or bool(self.operations) and all(o.planned for o in self.operations)
        verb = "would be " if planned else ""
        parts = [
            f"{c['create']} {verb}created",
            f"{c['update']} {verb}updated",
            f"{c['replace']} {verb}replaced",
            f"{c['delete']} {verb}deleted",
            f"{c['same']} unchanged",
        ]
        status = "ok" if self.ok else "FAILED"
        return (
            f"{self.mode} {status}: "
            + ", ".join(parts)
            + f"; {self.commands_executed} remote commands; {self.wall_seconds:.1f}s"
        )


class Redactor:
    """Replaces known secret strings with [secret] in anything printed or reported."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: Any, secret: bool = False) -> None:
        strings = list(secret_strings(Secret(value) if secret else value))
        with self._lock:
            for text in strings:
                if len(text) >= 4:
                    self._values.add(text)
                for line in text.splitlines():
                    if len(line.strip()) >= 16:
                        self._values.add(line.strip())

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            text = text.replace(value, "[secret]")
        return text


class ResourceFailed(Exception):
    """A step failed; raised into the program so dependents never run."""


class DeleteProtected(ResourceFailed):
    """A delete refused because the resource is protected: the deployment goes on past it."""


def delete_protected_message(urn: str) -> str:
    """pkg/resource/deploy/step.go deleteProtectedError.Error() (urn.Quote(): single quotes off Windows)."""
    return (
        f"resource {go_quote(urn)} cannot be deleted\n"
        "because it is protected. To unprotect the resource, either remove the `protect` flag from the "
        "resource in your Pulumi program and run `pulumi up`, or use the command:\n"
        f"`pulumi state unprotect '{urn}'`"
    )


def replace_protected_message(urn: str) -> str:
    """pkg/resource/deploy/step_generator.go, a replacement of a resource protected in state and program."""
    return (
        f"unable to replace resource {go_quote(urn)}\n"
        "as it is currently marked for protection. To unprotect the resource, remove the `protect` flag "
        "from the resource in your Pulumi program and run `pulumi up`"
    )


class DeploymentCancelled(Exception):
    """An earlier step failed; no new step starts."""


_SYMBOL = {"create": "+", "update": "~", "replace": "+-", "delete": "-", "same": " "}


# --- the engine ------------------------------------------------------------------------------------


class Engine:
    """Decides and carries out each resource's step; keeps the state file in step with it."""

    def __init__(
        self,
        *,
        store: StateStore,
        project: str,
        stack: str,
        entries: list[Entry],
        stack_outputs: dict[str, Any],
        transport: Transport,
        preview: bool,
        log: Log,
        redactor: Redactor,
        report: RunReport,
    ) -> None:
        self.store = store
        self.project = project
        self.stack = stack
        self.entries = entries
        self.stack_outputs = stack_outputs
        self.transport = transport
        self.preview = preview
        self._log = log
        self.redact = redactor
        self.report = report
        self.seen: set[str] = set()
        self.protect_by_urn: dict[str, bool] = {}
        self.failures: list[tuple[str, str]] = []
        self.cancelled = False
        self.lock = threading.RLock()
        self._log_lock = threading.Lock()
        for entry in entries:
            redactor.add(entry.inputs)
            redactor.add(entry.outputs)

    # logging and bookkeeping ---------------------------------------------------------------------

    def log(self, line: str) -> None:
        with self._log_lock:
            self._log(self.redact(line) or "")

    def _label(self, op: str, name: str, replaced_original: bool = False) -> str:
        symbol = "--" if replaced_original else _SYMBOL[op]
        word = "delete-original" if replaced_original else op
        return f"{symbol:>2} {word:<8} {name}"

    def _record(self, operation: Operation) -> None:
        with self.lock:
            self.report.operations.append(operation)

    def _save(self) -> None:
        if self.preview:
            return
        with self.lock:
            self.store.save(self.project, self.stack, self.entries, self.stack_outputs)

    def _live(self, urn: str) -> Entry | None:
        for entry in self.entries:
            if entry.urn == urn and not entry.pending_delete:
                return entry
        return None

    def _put(self, entry: Entry, replacing: Entry | None) -> None:
        with self.lock:
            index = next((i for i, e in enumerate(self.entries) if e is replacing), None)
            if index is not None:
                self.entries[index] = entry
            else:
                self.entries.append(entry)
            self._save()

    def _fail(self, operation: Operation, message: str, *, cancel: bool = True) -> ResourceFailed:
        message = self.redact(message) or ""
        operation.ok = False
        operation.error = message
        with self.lock:
            self.failures.append((operation.urn, message))
            if cancel:
                self.cancelled = True
        self._record(operation)
        self.log(
            f"{self._label(operation.op, operation.name, operation.replaced_original)}  "
            f"FAILED after {operation.seconds:.1f}s\n{message}"
        )
        return ResourceFailed(f"{operation.name}: {message}")

    def _warn(self, message: str) -> None:
        self.log(f"   warning: {message}")

    # carrying out commands -----------------------------------------------------------------------

    def _run_remote(
        self, urn: str, kind: str, inputs: dict[str, Any], text: str, previous: dict[str, Any]
    ) -> tuple[str, str]:
        values = plain(inputs)
        connection_value = values.get("connection")
        if not isinstance(connection_value, dict):
            raise RemoteCommandError("missing required property 'connection'")
        connection = connection_from_inputs(connection_value)
        started = time.monotonic()
        ok = False
        ran = False
        try:
            stdout, stderr = run_command(
                self.transport,
                connection,
                text,
                stdin=values.get("stdin"),
                environment=values.get("environment"),
                add_previous_output_in_env=values.get("addPreviousOutputInEnv"),
                previous_stdout=str(plain(previous.get("stdout", "")) or ""),
                previous_stderr=str(plain(previous.get("stderr", "")) or ""),
                warn=self._warn,
            )
            ok = ran = True
            return stdout, stderr
        except RemoteCommandError as exc:
            ran = exc.ran
            raise
        finally:
            with self.lock:
                self.report.executions.append(
                    Execution(
                        urn, urn.rsplit("::", 1)[-1], kind, connection.describe(), ok, ran, time.monotonic() - started
                    )
                )

    def _outputs(self, inputs: dict[str, Any], secret_outputs: list[str], stdout: Any, stderr: Any) -> dict[str, Any]:
        outputs = {**copy.deepcopy(inputs), "stdout": stdout, "stderr": stderr}
        for key in secret_outputs:
            if key in outputs and not isinstance(outputs[key], Secret):
                outputs[key] = Secret(outputs[key])
        return outputs

    @staticmethod
    def _shown(value: Any) -> str | None:
        if isinstance(value, Secret):
            return "[secret]"
        if value is UNKNOWN or value is None:
            return None
        return str(value)

    # registration --------------------------------------------------------------------------------

    def register(self, args: RegistrationArgs) -> tuple[str | None, dict[str, Any]]:
        """Called (on an executor thread) for every resource the program declares."""
        with self.lock:
            if self.cancelled:
                raise DeploymentCancelled(f"{args.name}: not started, an earlier resource failed")
            if args.urn in self.seen:
                raise ResourceFailed(f"Duplicate resource URN '{args.urn}'")
            self.seen.add(args.urn)
            old = self._live(args.urn)
            # The SDK already gave a child its parent's protect; the engine reads a missing one as false.
            protect = bool(args.protect)
            self.protect_by_urn[args.urn] = protect
        news = from_rpc(args.inputs)
        self.redact.add(news)
        entry = Entry(
            urn=args.urn,
            type=args.typ,
            custom=bool(args.custom),
            id=None,
            parent=args.parent,
            dependencies=args.dependencies,
            property_dependencies=args.property_dependencies,
            provider=args.provider,
            protect=protect,
            delete_before_replace=args.delete_before_replace,
            retain_on_delete=args.retain_on_delete,
            ignore_changes=args.ignore_changes,
            additional_secret_outputs=args.additional_secret_outputs,
            replace_on_changes=args.replace_on_changes,
            inputs=news,
            outputs={},
        )
        if not entry.custom:
            return self._register_component(entry, old)
        if entry.type.startswith("command:") and entry.type != COMMAND:
            operation = Operation(entry.urn, entry.type, entry.name, "create" if old is None else "update")
            raise self._fail(operation, f"the executor does not carry out {entry.type} resources")
        return self._register_custom(entry, old)

    def _register_component(self, entry: Entry, old: Entry | None) -> tuple[str | None, dict[str, Any]]:
        op = "create" if old is None else "same"
        self._put(entry, old)
        self._record(Operation(entry.urn, entry.type, entry.name, op, planned=self.preview))
        if op != "same":
            self.log(f"{self._label(op, entry.name)}  ({entry.type})")
        return None, {}

    def _plan(self, entry: Entry, old: Entry | None) -> tuple[str, list[list[PathElement]]]:
        if entry.type == COMMAND:
            entry.inputs = _command_defaults(entry.inputs)
        if old is None:
            return "create", []
        entry.inputs = process_ignore_changes(entry.inputs, old.inputs, entry.ignore_changes)
        changed = diff_paths(old.inputs, entry.inputs)
        if not changed:
            return "same", []
        patterns = [parse_path(p) for p in entry.replace_on_changes]
        for path in changed:
            if entry.type == COMMAND and path and path[0] == "triggers":
                return "replace", changed
            if any(path_contains(p, path) or path_contains(path, p) for p in patterns):
                return "replace", changed
        return "update", changed

    def _register_custom(self, entry: Entry, old: Entry | None) -> tuple[str | None, dict[str, Any]]:
        operation = Operation(entry.urn, entry.type, entry.name, "create", planned=self.preview)
        try:
            op, changed = self._plan(entry, old)
        except ValueError as exc:
            raise self._fail(operation, str(exc)) from None
        operation.op = op
        is_command = entry.type == COMMAND
        if op == "same" and old is not None:
            entry.id = old.id
            entry.outputs = old.outputs
            self._put(entry, old)
            self._record(operation)
            operation.stdout = self._shown(old.outputs.get("stdout")) if is_command else None
            operation.stderr = self._shown(old.outputs.get("stderr")) if is_command else None
            return entry.id, to_rpc(entry.outputs)
        if op == "replace" and old is not None and old.protect and entry.protect:
            message = replace_protected_message(entry.urn)
            if not self.preview:
                raise self._fail(operation, message)  # the engine bails at once
            # A preview reports it and goes on, so every problem shows; the preview fails.
            self._fail(operation, message, cancel=False)
        detail = f" [{', '.join(format_path(p) for p in changed)}]" if changed else ""
        if self.preview:
            return self._preview_step(entry, old, operation, detail, record=operation.ok)
        self.log(f"{self._label(op, entry.name)} ...{detail}")
        started = time.monotonic()
        try:
            if op == "replace" and old is not None and (old.delete_before_replace or entry.delete_before_replace):
                self._delete_entry(old, replaced_original=True)
            entry.id = old.id if (op == "update" and old is not None) else f"{entry.name}-{secrets.token_hex(4)}"
            if is_command:
                self._carry_out_command(entry, old, op)
            else:
                entry.outputs = self._outputs(entry.inputs, entry.additional_secret_outputs, None, None)
                entry.outputs.pop("stdout")
                entry.outputs.pop("stderr")
        except ResourceFailed:
            raise  # the delete of a delete-before-replace original failed and was reported
        except RemoteCommandError as exc:
            operation.seconds = time.monotonic() - started
            raise self._fail(operation, str(exc)) from None
        operation.seconds = time.monotonic() - started
        with self.lock:
            if op == "update":
                self._put(entry, old)
            else:
                if op == "replace" and old is not None and any(e is old for e in self.entries):
                    old.pending_delete = True  # create-before-delete: deleted after the program
                self._put(entry, None)
        self.redact.add(entry.outputs)
        if is_command:
            operation.stdout = self._shown(entry.outputs.get("stdout"))
            operation.stderr = self._shown(entry.outputs.get("stderr"))
        self._record(operation)
        self.log(f"{self._label(op, entry.name)}  {operation.seconds:.1f}s")
        return entry.id, to_rpc(entry.outputs)

    def _carry_out_command(self, entry: Entry, old: Entry | None, op: str) -> None:
        values = plain(entry.inputs)
        if op == "update" and old is not None:
            previous = old.outputs
            text = values.get("update") or values.get("create")
            stdout: Any = old.outputs.get("stdout", "")
            stderr: Any = old.outputs.get("stderr", "")
        else:
            previous = {}
            text = values.get("create")
            stdout, stderr = "", ""
        if text:
            kind = "update" if op == "update" else "create"
            stdout, stderr = self._run_remote(entry.urn, kind, entry.inputs, text, previous)
        entry.outputs = self._outputs(entry.inputs, entry.additional_secret_outputs, plain(stdout), plain(stderr))

    def _preview_step(
        self, entry: Entry, old: Entry | None, operation: Operation, detail: str, *, record: bool = True
    ) -> tuple[str | None, dict[str, Any]]:
        entry.id = old.id if old is not None and operation.op == "update" else None
        if entry.type == COMMAND:
            if operation.op == "update" and old is not None:
                stdout, stderr = plain(old.outputs.get("stdout", "")), plain(old.outputs.get("stderr", ""))
            else:
                stdout, stderr = UNKNOWN, UNKNOWN
            outputs = self._outputs(entry.inputs, entry.additional_secret_outputs, stdout, stderr)
        else:
            outputs = self._outputs(entry.inputs, entry.additional_secret_outputs, None, None)
            outputs.pop("stdout")
            outputs.pop("stderr")
        if record:
            self._record(operation)
            self.log(f"{self._label(operation.op, entry.name)}{detail}")
        return entry.id or "", to_rpc(outputs)

    # deletes -------------------------------------------------------------------------------------

    def _delete_entry(self, entry: Entry, *, replaced_original: bool) -> None:
        """Delete one resource (runs its stored `delete`); raises ResourceFailed on failure."""
        operation = Operation(
            entry.urn, entry.type, entry.name, "delete", replaced_original=replaced_original, planned=self.preview
        )
        if entry.protect and not replaced_original:
            failure = self._fail(operation, delete_protected_message(entry.urn), cancel=False)
            raise DeleteProtected(str(failure))
        if self.preview:
            self._record(operation)
            self.log(self._label("delete", entry.name, replaced_original))
            return
        values = plain(entry.inputs)
        text = values.get("delete") if entry.type == COMMAND and not entry.retain_on_delete else None
        started = time.monotonic()
        if text:
            self.log(f"{self._label('delete', entry.name, replaced_original)} ...")
            try:
                stdout, stderr = self._run_remote(entry.urn, "delete", entry.inputs, text, entry.outputs)
            except RemoteCommandError as exc:
                operation.seconds = time.monotonic() - started
                raise self._fail(operation, str(exc)) from None
            operation.stdout = "[secret]" if isinstance(entry.outputs.get("stdout"), Secret) else stdout
            operation.stderr = "[secret]" if isinstance(entry.outputs.get("stderr"), Secret) else stderr
        operation.seconds = time.monotonic() - started
        with self.lock:
            self.entries[:] = [e for e in self.entries if e is not entry]
            self._save()
        self._record(operation)
        self.log(f"{self._label('delete', entry.name, replaced_original)}  {operation.seconds:.1f}s")

    def delete_all(self, doomed: list[Entry]) -> bool:
        """Delete `doomed` in reverse dependency order, independent ones in parallel; False on failure.

        A refused protected delete does not stop the others (the engine continues past
        deleteProtectedError); what the refused resource depends on, transitively, is never
        attempted (it still has a dependent). Any other failure starts nothing new.
        """
        if not doomed:
            return True
        urns = {id(e): e.urn for e in doomed}
        # blockers[x] = entries that must be deleted before x (those depending on x).
        blockers: dict[int, set[int]] = {id(e): set() for e in doomed}
        for x in doomed:
            for y in doomed:
                if x is not y and urns[id(x)] in y.depends_on():
                    blockers[id(x)].add(id(y))
        by_id = {id(e): e for e in doomed}
        done: set[int] = set()
        started: set[int] = set()
        refused: set[int] = set()  # refused, or left because something that goes first was refused
        failed = False

        def leave_dependencies() -> None:
            """The engine's erroredDeps: everything a refused resource depends on stays."""
            changed = True
            while changed:
                changed = False
                for i in by_id:
                    if i not in refused and i not in started and blockers[i] & refused:
                        refused.add(i)
                        started.add(i)
                        changed = True

        def next_ready(running: bool = False) -> list[int]:
            leave_dependencies()
            ready = [i for i in by_id if i not in started and blockers[i] <= done]
            if not ready and not running and len(started) < len(doomed):
                ready = [i for i in by_id if i not in started][:1]  # a cycle: break it
            return ready

        if self.preview:
            while True:
                ready = next_ready()
                if not ready:
                    break
                for i in ready:
                    started.add(i)
                    try:
                        self._delete_entry(by_id[i], replaced_original=by_id[i].pending_delete)
                    except DeleteProtected:
                        refused.add(i)
                        failed = True
                        continue
                    except ResourceFailed:
                        return False
                    done.add(i)
            return not failed
        cancelled = False
        with ThreadPoolExecutor(max_workers=DELETE_THREADS, thread_name_prefix="delete") as pool:
            running: dict[Future[None], int] = {}
            while True:
                if not cancelled:
                    for i in next_ready(running=bool(running)):
                        started.add(i)
                        entry = by_id[i]
                        running[pool.submit(self._delete_entry, entry, replaced_original=entry.pending_delete)] = i
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    try:
                        future.result()
                        done.add(i)
                    except DeleteProtected:
                        refused.add(i)
                        failed = True
                    except ResourceFailed:
                        failed = cancelled = True
        return not failed

    def deletes_after_program(self) -> list[Entry]:
        """Resources not declared by this run, and originals of create-before-delete replacements."""
        with self.lock:
            return [e for e in self.entries if e.pending_delete or e.urn not in self.seen]


# --- running the program ---------------------------------------------------------------------------


class _LogHandler(logging.Handler):
    """Routes the SDK's engine log (warnings and errors) to the run log, redacted."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(level=logging.WARNING)
        self.engine = engine

    def emit(self, record: logging.LogRecord) -> None:
        self.engine.log(f"   {record.levelname.lower()}: {record.getMessage()}")


def _config_strings(config: Mapping[str, Any]) -> dict[str, str]:
    """Config as the engine passes it: strings, structured values as JSON."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}


def _project_name(project_dir: Path) -> str:
    manifest = project_dir / "Pulumi.yaml"
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            if line.startswith("name:"):
                return line.split(":", 1)[1].strip().strip("'\"")
    return "runner-fleet"


@dataclass
class _ProgramResult:
    error: BaseException | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)


def _run_program_isolated(
    main: Path,
    project: str,
    stack: str,
    preview: bool,
    config: dict[str, str],
    secret_keys: list[str],
    mocks: ExecutorMocks,
    monitor: ExecutorMonitor,
    logger: logging.Logger,
) -> _ProgramResult:
    """Run the program on its own thread, event loop, executor and an empty contextvars context.

    The SDK keeps its settings, config, root stack and RPC bookkeeping in context variables;
    a fresh context per run is what makes back-to-back runs independent.
    """
    result = _ProgramResult()

    def body() -> None:
        import pulumi
        from pulumi.runtime import config as runtime_config
        from pulumi.runtime import settings
        from pulumi.runtime.mocks import set_mocks
        from pulumi.runtime.stack import run_pulumi_func

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_default_executor(ThreadPoolExecutor(max_workers=REGISTER_THREADS, thread_name_prefix="register"))
        saved_cwd = os.getcwd()
        saved_path = list(sys.path)
        try:
            settings.reset_options(project=project, stack=stack, preview=preview)
            runtime_config.set_all_config(dict(config), list(secret_keys))
            set_mocks(mocks, project=project, stack=stack, preview=preview, logger=logger, monitor=monitor)
            sys.path.insert(0, str(main.parent))
            os.chdir(main.parent)
            try:
                loop.run_until_complete(run_pulumi_func(lambda: runpy.run_path(str(main), run_name="__main__")))
            except BaseException as exc:  # noqa: BLE001 - reported, never re-raised past the thread
                result.error = exc
                return
            root = settings.get_root_resource()
            exported = dict(getattr(root, "outputs", {}) or {})

            async def collect() -> None:
                for key, value in exported.items():
                    output = pulumi.Output.from_input(value)
                    known = await output.is_known()
                    result.outputs[key] = from_rpc(await output.future()) if known else None
                    if await output.is_secret():
                        result.secret_outputs.add(key)

            loop.run_until_complete(collect())
        finally:
            os.chdir(saved_cwd)
            sys.path[:] = saved_path
            try:
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                asyncio.set_event_loop(None)

    thread = threading.Thread(target=lambda: contextvars.Context().run(body), name="pulumi-program", daemon=True)
    thread.start()
    thread.join()
    return result


def _describe_exception(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_program(
    project_dir: Path,
    stack: str,
    config: Mapping[str, Any],
    secret_keys: Iterable[str],
    state_path: Path,
    mode: str = "up",
    invokes: Mapping[str, InvokeAnswer] | None = None,
    log: Log = print,
    transport: Transport | None = None,
    preview_first: bool = False,
) -> RunReport:
    """Run the Pulumi program in `project_dir` for `stack` and carry out (or plan) its steps.

    mode: "up" (run, diff, execute, delete what is gone), "preview" (plan only, nothing runs,
    the state file is not written), "destroy" (delete everything in state; the program is not run).
    `config` maps "project:key" to values (structured values as Python objects); `secret_keys`
    names the secret ones. `invokes` overrides answers to provider functions by token.
    `transport` replaces the SSH transport (tests). `preview_first` (up only): preview first
    and go on only if the preview succeeded, as `pulumi up` does without `--skip-preview`;
    without it the run is `pulumi up --skip-preview` (the Automation API, pulumi/actions).
    """
    if mode not in ("up", "preview", "destroy"):
        raise ValueError(f"mode must be up, preview or destroy, not {mode!r}")
    if preview_first and mode == "up":
        first = run_program(project_dir, stack, config, secret_keys, state_path, "preview", invokes, log, transport)
        if not first.ok:
            first.mode = mode
            first.error = f"preview failed: {first.error}"
            return first
    started = time.monotonic()
    project_dir = Path(project_dir)
    project = _project_name(project_dir)
    report = RunReport(mode=mode)
    redactor = Redactor()
    secret_key_list = sorted(set(secret_keys))
    for key in secret_key_list:
        if key in config:
            redactor.add(config[key], secret=True)
    store = StateStore(Path(state_path))
    preview = mode == "preview"
    try:
        entries, stack_outputs = store.load()
    except Exception as exc:  # noqa: BLE001 - a bad state file is a failed run, not a crash
        report.ok = False
        report.error = f"cannot read state: {_describe_exception(exc)}"
        log(report.error)
        return report
    engine = Engine(
        store=store,
        project=project,
        stack=stack,
        entries=entries,
        stack_outputs=stack_outputs,
        transport=transport or SSHTransport(),
        preview=preview,
        log=log,
        redactor=redactor,
        report=report,
    )
    engine.log(f"{mode} {project}/{stack}: {len(entries)} resources in state")
    try:
        if mode == "destroy":
            ok = engine.delete_all(list(entries))
            if ok:
                engine.stack_outputs = {}
                engine._save()
        else:
            ok = _up(engine, project_dir, project, stack, preview, config, secret_key_list, invokes, redactor, report)
    finally:
        report.wall_seconds = time.monotonic() - started
    if engine.failures:
        report.ok = False
        report.errors = [
            redactor(f"{urn.rsplit('::', 1)[-1]} ({urn.split('::')[2].split('$')[-1]}): {message}") or ""
            for urn, message in engine.failures
        ]
        report.error = report.errors[0]
    elif not ok:
        report.ok = False
    report.error = redactor(report.error)
    if report.error:
        engine.log(f"error: {report.error}")
    for key in sorted(report.outputs):
        shown = "[secret]" if key in report.secret_outputs else json.dumps(report.outputs[key])
        engine.log(f"output {key}: {shown}")
    engine.log(report.summary())
    return report


def _up(
    engine: Engine,
    project_dir: Path,
    project: str,
    stack: str,
    preview: bool,
    config: Mapping[str, Any],
    secret_keys: list[str],
    invokes: Mapping[str, InvokeAnswer] | None,
    redactor: Redactor,
    report: RunReport,
) -> bool:
    config_strings = _config_strings(config)
    answers = default_invokes(config_strings)
    answers.update(invokes or {})
    mocks = ExecutorMocks(engine, answers)
    monitor = ExecutorMonitor(mocks)
    logger = logging.getLogger(f"lab.executor.program.{id(engine)}")
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    handler = _LogHandler(engine)
    logger.addHandler(handler)
    try:
        result = _run_program_isolated(
            project_dir / "__main__.py", project, stack, preview, config_strings, secret_keys, mocks, monitor, logger
        )
    finally:
        logger.removeHandler(handler)
    report.invokes = list(mocks.calls)
    if result.error is not None:
        if not engine.failures:
            report.ok = False
            report.error = redactor(f"program failed: {_describe_exception(result.error)}")
        return False
    if engine.failures:
        return False
    for key in result.secret_outputs:
        redactor.add(result.outputs.get(key), secret=True)
    report.outputs = result.outputs
    report.secret_outputs = result.secret_outputs
    ok = engine.delete_all(engine.deletes_after_program())
    if ok and not preview:
        engine.stack_outputs = {
            key: Secret(value) if key in result.secret_outputs else value for key, value in result.outputs.items()
        }
        engine._save()
    return ok
