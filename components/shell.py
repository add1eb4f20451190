"""Rendering of the remote scripts in components/scripts/ into command text.

A script gets its inputs as shell variable assignments prepended to its text, every value
through `shlex.quote`; the result runs as `sudo -n /bin/bash -c '<script>'` (or `/bin/sh` for
the preflight, which must be able to say that bash or sudo is missing). The command text never
holds a secret: secrets travel on stdin.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
_VAR_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


INCLUDE = "# @include lib.sh\n"
END_OF_INPUTS = "# runner-fleet: end of inputs"


@cache
def script_text(name: str) -> str:
    """A script with the shared helpers of lib.sh pasted in at its include line."""
    text = (SCRIPTS_DIR / name).read_text()
    if INCLUDE in text:
        text = text.replace(INCLUDE, (SCRIPTS_DIR / "lib.sh").read_text(), 1)
    return text


def render(name: str, variables: dict[str, str | int | bool]) -> str:
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


def command(name: str, variables: dict[str, str | int | bool], *, sudo: bool = True) -> str:
    """Command text for pulumi-command: the login shell runs it with `-c`."""
    rendered = render(name, variables)
    if sudo:
        return f"sudo -n /bin/bash -c {shlex.quote(rendered)} {shlex.quote(name)}"
    return f"/bin/sh -c {shlex.quote(rendered)} {shlex.quote(name)}"
