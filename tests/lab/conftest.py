"""tests/lab: the GitHub double's conformance tally, printed at the end of every run that checked it
(`N of M double responses valid against GitHub's description`), whatever pytest's verbosity."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

_TALLY = pytest.StashKey[dict[str, Any]]()


def new_tally() -> dict[str, Any]:
    return {"valid": 0, "checked": 0, "deliberate": Counter(), "undescribed": Counter()}


@pytest.fixture(scope="session")
def conformance_tally(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Filled by tests/lab/test_github_conformance.py: responses checked, valid, and the named
    differences and undescribed calls among the rest."""
    return request.config.stash.setdefault(_TALLY, new_tally())


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    tally = config.stash.get(_TALLY, None)
    if not tally or not tally["checked"]:
        return
    tr = terminalreporter
    tr.write_sep("-", "GitHub double conformance")
    tr.write_line(f"{tally['valid']} of {tally['checked']} double responses valid against GitHub's description")
    for name, count in sorted(tally["deliberate"].items()):
        tr.write_line(f"  deliberate difference ×{count}: {name}")
    for name, count in sorted(tally["undescribed"].items()):
        tr.write_line(f"  not in the description ×{count}: {name}")
