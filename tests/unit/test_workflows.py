"""The CI workflows in .github/workflows/: actionlint and zizmor find nothing, and the rules the
README promises hold (pinned actions, least privilege, serialized deploys, approval for
production, deploy jobs that cannot land on one of the fleet's own runners)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI, PROJECT

WORKFLOWS = PROJECT / ".github" / "workflows"
ACTIONLINT_VERSION = "v1.7.12"
DEFAULT_ACTIONLINT = Path(f"/var/cache/runner-fleet-tools/actionlint-{ACTIONLINT_VERSION}/actionlint")
DEPLOYER_LABEL = "runner-fleet-deployer"
STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in PROJECT.glob("Pulumi.*.yaml"))


def actionlint() -> Path | None:
    """$RUNNER_FLEET_ACTIONLINT (test.sh sets it), else the build cache of tools/engine.py."""
    candidates = [os.environ.get("RUNNER_FLEET_ACTIONLINT")]
    try:
        from tools import engine

        candidates.append(str(engine.find("actionlint") or ""))
    except ImportError:
        pass
    candidates.append(str(DEFAULT_ACTIONLINT))
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def zizmor() -> str | None:
    beside = Path(sys.executable).parent / "zizmor"
    return str(beside) if beside.is_file() else shutil.which("zizmor")


needs_actionlint = pytest.mark.skipif(
    actionlint() is None and not IN_CI, reason=f"actionlint {ACTIONLINT_VERSION} not built (tools/)"
)
needs_zizmor = pytest.mark.skipif(zizmor() is None and not IN_CI, reason="zizmor not installed")


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def jobs(name: str) -> dict[str, dict[str, Any]]:
    return load(WORKFLOWS / name)["jobs"]


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith(action + "@")]


def run_actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    tool = actionlint()
    assert tool is not None, f"actionlint {ACTIONLINT_VERSION} is missing: build it with the tools/ script"
    return subprocess.run(
        [str(tool), "-no-color", *map(str, paths)], capture_output=True, text=True, cwd=PROJECT, timeout=120
    )


def run_zizmor(*paths: Path) -> tuple[int, list[dict[str, Any]]]:
    tool = zizmor()
    assert tool is not None, "zizmor is missing: pip install -r requirements-dev.txt"
    proc = subprocess.run(
        [tool, "--offline", "--persona", "pedantic", "--format", "json", "--no-progress", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=120,
    )
    return proc.returncode, json.loads(proc.stdout or "[]")


def test_the_expected_workflows_exist():
    assert {p.name for p in workflow_files()} == {"tests.yml", "preview.yml", "deploy.yml", "drift.yml"}


@needs_actionlint
def test_actionlint_finds_nothing():
    proc = run_actionlint(*workflow_files())
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_actionlint
def test_actionlint_reports_a_broken_workflow(tmp_path: Path):
    """The check above can fail: a workflow with an unknown context and a bad label is refused."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: [self-hosted, no-such-label]\n"
        "    steps:\n      - run: echo ${{ github.no_such_field.x }}\n"
    )
    proc = subprocess.run(
        [str(actionlint()), "-no-color", str(bad)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 1, proc.stdout
    assert "no-such-label" in proc.stdout


@needs_zizmor
def test_zizmor_finds_nothing():
    code, findings = run_zizmor(*workflow_files())
    described = [f"{f['ident']}: {f['desc']} at {f['locations'][0]['symbolic']['key']}" for f in findings]
    assert findings == [], "\n".join(described)
    assert code == 0


@needs_zizmor
def test_zizmor_reports_an_unpinned_action(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "name: bad\non: push\npermissions: {}\njobs:\n  x:\n    name: x\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - uses: actions/checkout@v4\n        with:\n          persist-credentials: false\n"
    )
    code, findings = run_zizmor(bad)
    assert code != 0
    assert "unpinned-uses" in {f["ident"] for f in findings}


def test_every_action_is_pinned_by_commit_with_its_version():
    pinned = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+\.\d+\.\d+\s*$")
    for path in workflow_files():
        for line in path.read_text().splitlines():
            if re.match(r"^\s*(?:-\s+)?uses:", line):
                assert pinned.match(line), f"{path.name}: {line.strip()!r} is not pinned as `owner/repo@<sha> # vX.Y.Z`"


def test_one_version_of_each_action_everywhere():
    seen: dict[str, set[str]] = {}
    for path in workflow_files():
        for action, ref in re.findall(r"uses:\s+([\w.-]+/[\w./-]+)@(\S+)", path.read_text()):
            seen.setdefault(action, set()).add(ref)
    assert {a: refs for a, refs in seen.items() if len(refs) > 1} == {}


def test_permissions_are_least_privilege():
    for path in workflow_files():
        data = load(path)
        top = data.get("permissions")
        assert top is not None, f"{path.name}: no top-level permissions"
        assert top in ({}, {"contents": "read"}), f"{path.name}: top-level permissions {top}"
        for name, job in data["jobs"].items():
            perms = job.get("permissions", top)
            writes = {k for k, v in perms.items() if v == "write"}
            allowed = {"pull-requests"} if path.name == "preview.yml" else set()
            assert writes <= allowed, f"{path.name}:{name} writes {writes}"


def test_unit_tests_run_on_every_pull_request_anywhere():
    data = load(WORKFLOWS / "tests.yml")
    assert "pull_request" in data["on"]
    (job,) = data["jobs"].values()
    assert not str(job["runs-on"]).startswith("[") and "self-hosted" not in str(job["runs-on"])
    assert any(s.get("run", "").strip() == "./test.sh --unit" for s in job["steps"])
    assert "secrets." not in (WORKFLOWS / "tests.yml").read_text()


def _pulumi_steps(name: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for job_name, job in jobs(name).items():
        for step in steps_using(job, "pulumi/actions"):
            out.append((job_name, job, step["with"]))
    return out


def test_preview_of_every_stack_on_pull_requests_with_a_comment_and_the_policy_pack():
    data = load(WORKFLOWS / "preview.yml")
    assert "pull_request" in data["on"]
    (job,) = data["jobs"].values()
    assert sorted(job["strategy"]["matrix"]["stack"]) == STACKS
    (step,) = steps_using(job, "pulumi/actions")
    assert step["with"]["command"] == "preview"
    assert step["with"]["stack-name"] == "${{ matrix.stack }}"
    assert step["with"]["comment-on-pr"] is True
    assert step["with"]["policyPacks"] == "policy"
    # Pull requests from forks get no secrets: the job only runs for this repository's branches.
    assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository"


def test_deploys_staging_on_merge_then_production_behind_approval_serialized_per_stack():
    data = load(WORKFLOWS / "deploy.yml")
    assert data["on"]["push"]["branches"] == ["main"]
    staging, production = data["jobs"]["staging"], data["jobs"]["production"]
    assert production["needs"] == "staging"
    assert staging["environment"] == "staging"
    assert production["environment"] == "production"
    for stack, job in (("staging", staging), ("production", production)):
        assert job["concurrency"] == {"group": f"deploy-{stack}", "cancel-in-progress": False}
        # The action's `up` skips the preview: a preview runs first, so a refused protected delete
        # (the engine refuses it in preview too) stops the job before anything changes.
        preview, up = steps_using(job, "pulumi/actions")
        assert [preview["with"]["command"], up["with"]["command"]] == ["preview", "up"]
        for step in (preview, up):
            assert step["with"]["stack-name"] == stack
            assert step["with"]["policyPacks"] == "policy"


def test_drift_job_previews_every_stack_expecting_no_changes_and_lists_orphans():
    data = load(WORKFLOWS / "drift.yml")
    assert "schedule" in data["on"]
    (job,) = data["jobs"].values()
    assert sorted(job["strategy"]["matrix"]["stack"]) == STACKS
    (step,) = steps_using(job, "pulumi/actions")
    assert step["with"]["command"] == "preview"
    assert step["with"]["expect-no-changes"] is True
    # Its own concurrency group: a queued drift run must never cancel a pending deploy.
    assert not job["concurrency"]["group"].startswith("deploy-")
    orphans = [s for s in job["steps"] if "python -m fleet orphans" in s.get("run", "")]
    assert len(orphans) == 1
    assert orphans[0]["if"] == "${{ !cancelled() }}", "orphans are reported even when the preview found drift"
    # The credential comes through a pipe into --token-file -, never through argv or a variable.
    assert "--token-file -" in orphans[0]["run"]
    assert "GITHUB_TOKEN" not in json.dumps(orphans[0].get("env", {}))


def _committed_runner_labels() -> list[set[str]]:
    out = []
    for stack in STACKS:
        config = yaml.safe_load((PROJECT / f"Pulumi.{stack}.yaml").read_text())["config"]
        for host in config.get("runner-fleet:hosts", []):
            for runner in host.get("runners", []):
                out.append({"self-hosted", "linux", "x64", *(label.lower() for label in runner.get("labels", []))})
    return out


def test_pulumi_jobs_run_on_the_deployer_never_on_a_fleet_runner():
    """GitHub gives a job to a runner carrying every runs-on label. A deploy that landed on a
    runner of the fleet it deploys would restart or deregister its own runner half-way."""
    fleet = _committed_runner_labels()
    assert fleet, "no runner in the committed stacks"
    for name in ("preview.yml", "deploy.yml", "drift.yml"):
        for job_name, job in jobs(name).items():
            labels = {label.lower() for label in job["runs-on"]}
            assert {"self-hosted", DEPLOYER_LABEL} <= labels, f"{name}:{job_name} runs-on {job['runs-on']}"
            for runner in fleet:
                assert not labels <= runner, f"{name}:{job_name} could run on a fleet runner labelled {runner}"


def test_pulumi_cli_version_matches_the_sdk():
    sdk = re.search(r"^pulumi==(\S+)$", (PROJECT / "requirements.txt").read_text(), re.M)
    assert sdk is not None
    for name in ("preview.yml", "deploy.yml", "drift.yml"):
        for job_name, _, inputs in _pulumi_steps(name):
            assert inputs["pulumi-version"] == sdk.group(1), f"{name}:{job_name}"


def test_policy_pack_the_workflows_name_exists():
    assert (PROJECT / "policy" / "PulumiPolicy.yaml").is_file()
    assert (PROJECT / "policy" / "requirements.txt").is_file()
