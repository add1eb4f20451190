"""The runner-fleet safeguards, as CrossGuard policies (all mandatory).

What they read: the inputs of pulumi-command's `command:remote:*` resources, because that is
exactly what would run on the hosts. Every fleet script gets its inputs as a block of shell
assignments at its top (components/shell.py):

    sudo -n /bin/bash -c '#!/bin/bash
    # runner-fleet <script>: inputs
    KEY=<shell-quoted value>
    ...
    # runner-fleet: end of inputs
    <script body>' <script>

so a policy parses that block back into {KEY: value} and checks values, not the program's
intentions. The stack name comes from each resource's URN. Resource policies check one command
(host key, checksum, secrets, labels); stack policies check what only the whole stack shows
(roles across hosts, ports on a host).

This module needs only the standard library and pulumi_policy: the engine runs the pack in its
own virtualenv, without the project's modules.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

COMMAND = "command:remote:Command"
REMOTE_PREFIX = "command:remote:"
INPUTS_HEADER = re.compile(r"^# runner-fleet (?P<script>\S+): inputs$")
END_OF_INPUTS = "# runner-fleet: end of inputs"
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
ARTIFACT_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".zip", ".deb", ".rpm")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Credentials that must never appear in a command's text, whatever their value.
SECRET_PATTERNS = (
    re.compile(r"\bgh[opusr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)
# Inputs stored and shown in plain text: no secret may flow into them.
PLAIN_INPUTS = ("create", "update", "delete", "triggers", "environment", "interpreter", "dir", "logging")
# Inputs that carry secrets by design (pulumi-command keeps `connection` secret; the program
# marks stdin secret): the values to look for in the plain inputs.
SECRET_CONNECTION_FIELDS = ("privateKey", "password", "privateKeyPassword")
MIN_SECRET_FRAGMENT = 16

DEFAULT_PRODUCTION_STACKS = ["production"]


# --- reading resources ----------------------------------------------------------------------


def stack_of(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::<type>::<name>` -> stack."""
    parts = urn.split(":", 3)
    return parts[2] if len(parts) > 2 and parts[0] == "urn" else ""


def script_inputs(text: Any) -> tuple[str, dict[str, str]] | None:
    """(script name, its inputs) of a fleet command text; None for any other text."""
    if not isinstance(text, str) or "# runner-fleet" not in text:
        return None
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    for word in words:
        header = next((INPUTS_HEADER.match(line) for line in word.splitlines() if INPUTS_HEADER.match(line)), None)
        if header is None or END_OF_INPUTS not in word:
            continue
        block = word.split(header.group(0), 1)[1].split(END_OF_INPUTS, 1)[0]
        try:
            assignments = shlex.split(block)  # a quoted value may span lines (JSON, unit files)
        except ValueError:
            return None
        values: dict[str, str] = {}
        for assignment in assignments:
            key, sep, value = assignment.partition("=")
            if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
                return None
            values[key] = value
        return header["script"], values
    return None


def script_body(text: Any) -> str:
    """The command text after its inputs block (the script that runs)."""
    if not isinstance(text, str):
        return ""
    try:
        words = shlex.split(text)
    except ValueError:
        return text
    for word in words:
        if END_OF_INPUTS in word:
            return word.split(END_OF_INPUTS, 1)[1]
    return text


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a value (nested maps and lists)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings_in(item)
    elif _is_seq(value):
        for item in value:
            yield from strings_in(item)


def connections(props: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, connection) of a remote resource: its connection and its jump host."""
    conn = props.get("connection")
    if isinstance(conn, Mapping):
        yield "connection", conn
        proxy = conn.get("proxy")
        if isinstance(proxy, Mapping):
            yield "connection.proxy", proxy


def host_key_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "no hostKey: the host key is not checked at all (pin it: ssh-keyscan -t ed25519 ADDRESS)"
    parts = value.split()
    if len(parts) < 2 or parts[0] not in HOST_KEY_TYPES:
        return "hostKey is not an authorized_keys-style public key line ('ssh-ed25519 AAAA...')"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "hostKey's base64 part does not decode"
    size = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    if blob[4 : 4 + size].decode("ascii", "replace") != parts[0]:
        return f"hostKey's data is not a {parts[0]} key"
    return None


def secret_values(props: Mapping[str, Any]) -> list[str]:
    """The secret values a command carries: its connection credentials and its stdin."""
    values = []
    for _, conn in connections(props):
        for name in SECRET_CONNECTION_FIELDS:
            value = conn.get(name)
            if isinstance(value, str) and value:
                values.append(value)
    stdin = props.get("stdin")
    if isinstance(stdin, str) and stdin:
        values.append(stdin)
    return values


def fragments(secret: str) -> list[str]:
    """Parts of a secret worth looking for: the whole value and each long line (a private key
    leaked line by line is still leaked). Short fragments would match ordinary text."""
    parts = {secret.strip()}
    parts.update(line.strip() for line in secret.splitlines())
    return [p for p in parts if len(p) >= MIN_SECRET_FRAGMENT and not p.startswith("-----")]


def port_of(url: str) -> int | None:
    try:
        parts = urlsplit(url)
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None


# --- resource policies ----------------------------------------------------------------------


def _remote(args: ResourceValidationArgs) -> bool:
    return args.resource_type.startswith(REMOTE_PREFIX)


def validate_host_key(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if not _remote(args):
        return
    found = False
    for path, conn in connections(args.props):
        found = True
        problem = host_key_problem(conn.get("hostKey"))
        if problem:
            report_violation(f"{args.name}: {path}: {problem}", None)
    if not found:
        report_violation(f"{args.name}: no connection", None)


def validate_artifact_checksums(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != COMMAND:
        return
    for field in ("create", "update"):
        parsed = script_inputs(args.props.get(field))
        if parsed is None:
            continue
        script, values = parsed
        body = script_body(args.props.get(field))
        for key, value in sorted(values.items()):
            if not key.endswith("_URL") or not urlsplit(value).path.endswith(ARTIFACT_SUFFIXES):
                continue
            sha_key = key[: -len("_URL")] + "_SHA256"
            sha = values.get(sha_key)
            where = f"{args.name} ({script}): {key}={value}"
            if sha is None:
                report_violation(f"{where} is downloaded without {sha_key}", None)
            elif not SHA256.match(sha):
                report_violation(f"{where}: {sha_key} is not a SHA-256 checksum (64 lowercase hex digits)", None)
            elif f"${sha_key}" not in body and f"${{{sha_key}}}" not in body:
                report_violation(f"{where}: the script never checks {sha_key}", None)


def validate_secrets_stay_secret(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if not _remote(args):
        return
    secrets = [f for value in secret_values(args.props) for f in fragments(value)]
    for field in PLAIN_INPUTS:
        if field not in args.props:
            continue
        for text in strings_in(args.props.get(field)):
            if any(fragment in text for fragment in secrets):
                # The message names the input, never the value.
                report_violation(f"{args.name}: a secret (connection credential or stdin) appears in `{field}`", None)
                break
            if any(p.search(text) for p in SECRET_PATTERNS):
                report_violation(f"{args.name}: `{field}` contains a credential (token or private key)", None)
                break
    if isinstance(args.props.get("stdin"), str) and args.props.get("stdin"):
        hidden = set(args.opts.additional_secret_outputs or []) if args.opts else set()
        missing = sorted({"stdout", "stderr"} - hidden)
        if missing:
            report_violation(
                f"{args.name}: has a secret stdin but {', '.join(missing)} not in additional_secret_outputs "
                "(a script that echoes its input would store the secret in plain state)",
                None,
            )


def validate_runner_labels(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != COMMAND:
        return
    parsed = script_inputs(args.props.get("create"))
    if parsed is None or "CUSTOM_LABELS" not in parsed[1]:
        return
    _, values = parsed
    environment = stack_of(args.urn)
    labels = [label for label in values["CUSTOM_LABELS"].split(",") if label]
    if environment.lower() not in {label.lower() for label in labels}:
        name = values.get("RUNNER_NAME", args.name)
        report_violation(
            f"runner {name}: labels {labels} do not include its stack's environment {environment!r}: "
            f"jobs for [self-hosted, {environment}] would not reach it, and it could take another environment's jobs",
            None,
        )


# --- stack policies -------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    name: str
    urn: str
    host: str
    ssh_port: int | None
    script: str
    values: dict[str, str]


def fleet_commands(args: StackValidationArgs) -> list[Command]:
    out = []
    for r in args.resources:
        if r.resource_type != COMMAND:
            continue
        parsed = script_inputs(r.props.get("create"))
        conn = r.props.get("connection")
        if parsed is None or not isinstance(conn, Mapping):
            continue
        port = conn.get("port", 22)  # a number: the engine hands 22 as 22.0
        ssh_port = int(port) if isinstance(port, int | float) and not isinstance(port, bool) else None
        out.append(Command(r.name, r.urn, str(conn.get("host", "")), ssh_port, *parsed))
    return out


def _stack_name(args: StackValidationArgs) -> str:
    for r in args.resources:
        name = stack_of(r.urn)
        if name:
            return name
    return ""


def validate_primary_and_secondary(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    stack = _stack_name(args)
    production = args.get_config().get("productionStacks", DEFAULT_PRODUCTION_STACKS)
    if stack not in production:
        return
    commands = fleet_commands(args)
    roles: dict[str, set[str]] = {}  # role -> addresses
    for c in commands:
        if "TARGETS_JSON" not in c.values:
            continue
        try:
            groups = json.loads(c.values["TARGETS_JSON"])
        except ValueError:
            report_violation(f"{c.name}: TARGETS_JSON is not JSON", c.urn)
            return
        for group in groups if isinstance(groups, list) else []:
            role = (group.get("labels") or {}).get("role")
            for target in group.get("targets") or []:
                roles.setdefault(str(role), set()).add(str(target).rsplit(":", 1)[0].strip("[]"))
    with_runners = {c.host for c in commands if "CUSTOM_LABELS" in c.values}
    primary = roles.get("primary", set()) & with_runners
    secondary = roles.get("secondary", set()) & with_runners
    if not primary:
        report_violation(f"stack {stack}: no primary host with a runner", None)
    if not secondary:
        report_violation(
            f"stack {stack}: no secondary host with a runner: when the primary goes down no runner takes "
            "its jobs (add a host with role: secondary)",
            None,
        )
    if primary and secondary and not any(p != s for p in primary for s in secondary):
        report_violation(f"stack {stack}: the primary and the secondary are the same machine {sorted(primary)}", None)


def validate_exporter_ports(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    commands = fleet_commands(args)
    used: dict[tuple[str, int], list[str]] = {}  # (host, port) -> what listens there

    def hold(host: str, port: int, what: str) -> None:
        holders = used.setdefault((host, port), [])
        if what not in holders:
            holders.append(what)

    for c in commands:
        if c.ssh_port is not None:
            hold(c.host, c.ssh_port, "SSH")
        port = port_of(c.values["PROM_URL"]) if "PROM_URL" in c.values else None
        if port is not None:
            hold(c.host, port, "Prometheus")
    for c in commands:
        if not c.script.startswith("exporter-install") or "PORT" not in c.values:
            continue
        try:
            port = int(c.values["PORT"])
        except ValueError:
            report_violation(f"{c.name}: PORT {c.values['PORT']!r} is not a number", c.urn)
            continue
        holders = used.get((c.host, port), [])
        if holders:
            report_violation(
                f"{c.name}: exporter port {port} on {c.host} is already used by {', '.join(holders)}", c.urn
            )
        hold(c.host, port, c.name)


# --- the pack -------------------------------------------------------------------------------

MANDATORY = EnforcementLevel.MANDATORY

RESOURCE_POLICIES = [
    ResourceValidationPolicy(
        name="connection-pins-host-key",
        description="Every SSH connection (and jump host) pins the host's public key.",
        validate=validate_host_key,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="artifact-pinned-by-sha256",
        description="Every downloaded release artifact has a SHA-256 checksum that the script verifies.",
        validate=validate_artifact_checksums,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="secrets-stay-secret",
        description="No secret reaches a command's text, triggers or environment; secret stdin hides stdout/stderr.",
        validate=validate_secrets_stay_secret,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="runner-labels-include-environment",
        description="Every runner's labels include its stack's environment (the stack name).",
        validate=validate_runner_labels,
        enforcement_level=MANDATORY,
    ),
]

STACK_POLICIES = [
    StackValidationPolicy(
        name="production-primary-and-secondary",
        description="A production stack keeps a primary and a secondary runner host on different machines.",
        validate=validate_primary_and_secondary,
        enforcement_level=MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={
                "productionStacks": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": DEFAULT_PRODUCTION_STACKS,
                }
            }
        ),
    ),
    StackValidationPolicy(
        name="exporter-port-unique-per-host",
        description="No exporter port is used twice on one host (nor SSH's or Prometheus's port there).",
        validate=validate_exporter_ports,
        enforcement_level=MANDATORY,
    ),
]

POLICIES: list[Any] = [*RESOURCE_POLICIES, *STACK_POLICIES]
VALIDATORS: dict[str, Callable[..., None]] = {p.name: p.validate for p in POLICIES}
