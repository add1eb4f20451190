"""Rendering of what the components put on hosts: the remote scripts in components/scripts/
into command text, and the files in components/host_files/ into their content.

A script gets its inputs as shell variable assignments prepended to its text, every value
through `shlex.quote`; the result runs as `sudo -n /bin/bash -c '<script>'` (or `/bin/sh` for
the preflight, which must be able to say that bash or sudo is missing). The command text never
holds a secret: secrets travel on stdin.

A host file template (`*.tmpl`) is a `string.Template`; its `##` lines are notes for the reader
and never reach the host. Every placeholder must be given and every value must be a plain token
(letters, digits and `._/:@+,=*-`), so no value can end a systemd line, start a YAML comment, or
carry a systemd `%` specifier or a shell `$`.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping
from functools import cache
from pathlib import Path

COMPONENTS_DIR = Path(__file__).resolve().parent
SCRIPTS_DIR = COMPONENTS_DIR / "scripts"
HOST_FILES_DIR = COMPONENTS_DIR / "host_files"
_VAR_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._/:@+,=*-]+$")

INCLUDE = "# @include lib.sh\n"
END_OF_INPUTS = "# runner-fleet: end of inputs"

Value = str | int | bool


def _with_lib(text: str) -> str:
    if INCLUDE in text:
        text = text.replace(INCLUDE, (SCRIPTS_DIR / "lib.sh").read_text(), 1)
    return text


@cache
def script_text(name: str) -> str:
    """A script of components/scripts/ with the shared helpers of lib.sh pasted in at its include line."""
    return _with_lib((SCRIPTS_DIR / name).read_text())


def render(name: str, variables: Mapping[str, Value]) -> str:
    """The script `name` with its inputs assigned right after its shebang."""
    text = script_text(name)
    shebang, _, body = text.partition("\n") if text.startswith("#!") else ("", "", text)
    lines = [shebang] if shebang else []
    lines.append(f"# runner-fleet {name}: inputs")
    for key in sorted(variables):
        if not _VAR_RE.match(key):
            raise ValueError(f"bad script variable name {key!r}")
        value = variables[key]
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"{key}={shlex.quote(str(value))}")
    lines.append(END_OF_INPUTS)
    return "\n".join(lines) + "\n" + body


def command(name: str, variables: Mapping[str, Value], *, sudo: bool = True) -> str:
    """Command text for pulumi-command: the login shell runs it with `-c`."""
    rendered = render(name, variables)
    if sudo:
        return f"sudo -n /bin/bash -c {shlex.quote(rendered)} {shlex.quote(name)}"
    return f"/bin/sh -c {shlex.quote(rendered)} {shlex.quote(name)}"


@cache
def host_file_text(name: str) -> str:
    """A file of components/host_files/ as it is (scripts get lib.sh pasted in)."""
    return _with_lib((HOST_FILES_DIR / name).read_text())


@cache
def _template(name: str) -> string.Template:
    lines = host_file_text(name).splitlines(keepends=True)
    return string.Template("".join(line for line in lines if not line.startswith("##")))


def template_fields(name: str) -> set[str]:
    """The placeholders of the template `name`."""
    return set(_template(name).get_identifiers())


def host_file(name: str, values: Mapping[str, Value]) -> str:
    """The template `name` of components/host_files/ filled in; no trailing newline (the
    scripts' write_if_changed adds one)."""
    wanted = template_fields(name)
    if set(values) != wanted:
        raise ValueError(
            f"{name}: placeholders {sorted(wanted)}, given {sorted(values)}"
            f" (missing {sorted(wanted - set(values))}, unknown {sorted(set(values) - wanted)})"
        )
    checked: dict[str, str] = {}
    for key, value in values.items():
        text = str(value)
        if not _TOKEN_RE.match(text):
            raise ValueError(f"{name}: value {text!r} for ${key} is not a plain token (letters, digits, ._/:@+,=*-)")
        checked[key] = text
    return _template(name).substitute(checked).rstrip("\n")
