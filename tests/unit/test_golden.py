"""The exact command text of representative commands of the production stack, as reviewed.
A change to a script, its inputs or its quoting shows up here as a diff to review; regenerate
with `UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden.py`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import completed_stack_config, run_program, unwrap

GOLDEN = Path(__file__).parent / "golden"
CASES = [
    ("dell-r640-01-runner-registration", "create"),
    ("dell-r640-01-runner-registration", "delete"),
    ("Serotonin-paws360-exporter-install", "create"),
    ("prometheus-target-file", "create"),
    ("prometheus-scrape-job", "create"),
]


@pytest.fixture(scope="module")
def production():
    return run_program(completed_stack_config("production"), "production")


@pytest.mark.parametrize(("resource", "field"), CASES)
def test_rendered_command_matches_golden(production, resource, field):
    text = unwrap(production.by_name(resource).inputs)[field]
    path = GOLDEN / f"{resource}.{field}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path.name} differs; review and regenerate with UPDATE_GOLDEN=1"
