"""The program's own scripts (components/scripts, rendered as the program renders them) run
against the runner stand-in, which follows actions/runner v2.336.0's source, and the GitHub double.

Each test is a rule of the real runner that the scripts do not handle yet. They are strict xfails:
they fail today, and the day the program is fixed they XPASS, which strict mode reports as a
failure, so the marker is removed together with the fix. No lab host is involved (the scripts run
locally as root, the runner as `nobody`), but they need root, so they carry the lab mark.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import platform
import random
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.shell import render
from lab.artifacts import STANDIN_DIR, build_runner_tarball
from lab.github_double import GitHubDouble
from tests.conftest import IN_CI

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 and not IN_CI, reason="runs the stand-in as user nobody: needs root"),
]

PAT = "ghp_fidelityTESTpat0123456789abcdefXYZ"
REPO = "octo-org/octo-repo"
VERSION = "2.336.0"
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
STATE_FILES = (".runner", ".runner_migrated", ".credentials", ".credentials_migrated", ".credentials_rsaparams")


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rflab-fidelity-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tarball(base: Path) -> dict[str, Any]:
    return build_runner_tarball(base / "artifacts", VERSION)


@pytest.fixture
def double() -> Iterator[GitHubDouble]:
    # port 80 on a fresh loopback address: config.sh drops any port from the URL (see test_runner_standin)
    host = f"127.{random.randint(16, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"  # noqa: S311
    d = GitHubDouble(host=host, port=80, pats={PAT}, repos={REPO}).start()
    yield d
    d.stop()


@pytest.fixture
def runner_dir(base: Path, tarball: dict[str, Any]) -> Path:
    target = base / f"runner-{time.monotonic_ns()}"
    target.mkdir()
    with tarfile.open(tarball["path"]) as tar:
        tar.extractall(target, filter="tar")
    subprocess.run(["chown", "-R", "nobody:nogroup", str(target)], check=True)
    return target


def url(double: GitHubDouble) -> str:
    return f"http://{double.host}"


def configure(double: GitHubDouble, runner_dir: Path, name: str) -> None:
    result = subprocess.run(
        [*NOBODY, "./config.sh", "--unattended", "--url", f"{url(double)}/{REPO}", "--name", name],
        cwd=runner_dir,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "ACTIONS_RUNNER_INPUT_PAT": PAT},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def migrate(runner_dir: Path) -> None:
    """What Runner.Listener/RunnerConfigUpdater.cs leaves after the service refreshed the runner's
    configuration: `.runner_migrated` and `.credentials_migrated` next to the originals."""
    for name in (".runner", ".credentials"):
        shutil.copy2(runner_dir / name, runner_dir / f"{name}_migrated")


def run_script(name: str, variables: dict[str, Any], path: str = "/usr/bin:/bin:/usr/sbin:/sbin", stdin: str = ""):
    return subprocess.run(
        ["bash", "-c", render(name, variables), name],
        input=stdin,
        env={"PATH": path, "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def runner_id(runner_dir: Path) -> int:
    return json.loads((runner_dir / ".runner").read_text(encoding="utf-8-sig"))["agentId"]


def api(double: GitHubDouble, method: str, path: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - the double's http URL
        f"{double.api_url}/{path}", method=method, headers={"Authorization": f"Bearer {PAT}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the double's http URL
        return response.status


def registration_inputs(double: GitHubDouble, runner_dir: Path, name: str, unit_dir: Path) -> dict[str, Any]:
    return {
        "RUNNER_NAME": name,
        "RUNNER_DIR": str(runner_dir),
        "RUNNER_USER": "nobody",
        "REGISTRATION_URL": f"{url(double)}/{REPO}",
        "API_URL": f"{url(double)}/api/v3",
        "SCOPE_PATH": f"repos/{REPO}",
        "CUSTOM_LABELS": "",
        "RUNNER_GROUP": "",
        "DISABLE_UPDATE": False,
        "UNIT_DIR": str(unit_dir),
    }


def test_reregistration_after_github_dropped_a_migrated_runner(
    double: GitHubDouble, runner_dir: Path, tmp_path: Path
) -> None:
    configure(double, runner_dir, "fid-1")
    migrate(runner_dir)
    assert api(double, "DELETE", f"repos/{REPO}/actions/runners/{runner_id(runner_dir)}") == 204
    result = run_script(
        "runner-registration.create.sh", registration_inputs(double, runner_dir, "fid-1", tmp_path), stdin=PAT + "\n"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r["name"] for r in double.state()["runners"]] == ["fid-1"]


def test_deregistration_leaves_no_configured_state(double: GitHubDouble, runner_dir: Path) -> None:
    configure(double, runner_dir, "fid-2")
    migrate(runner_dir)
    inputs = {
        "RUNNER_NAME": "fid-2",
        "RUNNER_DIR": str(runner_dir),
        "API_URL": f"{url(double)}/api/v3",
        "SCOPE_PATH": f"repos/{REPO}",
    }
    result = run_script("runner-registration.delete.sh", inputs, stdin=PAT + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert double.state()["runners"] == []
    left = [name for name in STATE_FILES if (runner_dir / name).exists()]
    assert left == [], f"configured-state files left behind: {left}"


def load_standin(root: Path) -> Any:
    loader = importlib.machinery.SourceFileLoader(
        "fidelity_standin_listener", str(STANDIN_DIR / "bin" / "Runner.Listener")
    )
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    module.ROOT = root
    return module


def test_online_check_survives_a_log_rollover(tmp_path: Path) -> None:
    root = tmp_path / "runner"
    (root / "bin").mkdir(parents=True)
    standin = load_standin(root)
    trace = standin.Trace()
    term = standin.Terminal(trace)
    # what a listening runner's session writes (Runner.cs), then ordinary trace lines past 8 MB
    term.line(f"Current runner version: '{VERSION}'")
    term.line(f"{standin.utc_u()}: Listening for Jobs")
    first = trace.path
    filler = "Message received from session: no message" + "." * 960
    for _ in range(8000):  # ~8.3 MB: just under the 8 MiB page
        trace.info("MessageListener", filler)
    time.sleep(1.1)
    for _ in range(200):
        trace.info("MessageListener", filler)
    assert trace.path != first, "the stand-in rolled its log over"
    lib = Path(__file__).resolve().parents[2] / "components" / "scripts" / "lib.sh"
    check = subprocess.run(
        ["bash", "-c", 'source "$1"; runner_reports_online "$2"', "lib", str(lib), str(root)], check=False, timeout=30
    )
    assert check.returncode == 0, "a connected, listening runner is reported offline after a log roll-over"


def start_listener(runner_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*NOBODY, "./run.sh"],
        cwd=runner_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin"},
    )


def wait_until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_a_live_runner_whose_log_rolled_is_online(double: GitHubDouble, runner_dir: Path) -> None:
    """The roll-over on a live stand-in: RUNNER_LOGSIZE=1 (MB, from `.env`, Program.cs/HostContext.cs)
    and a job whose name is over 1 MiB, so the page fills at the "Running job:" line."""
    configure(double, runner_dir, "fid-roll")
    with (runner_dir / ".env").open("a") as env:
        env.write("RUNNER_LOGSIZE=1\n")
    listener = start_listener(runner_dir)
    try:
        wait_until(lambda: double.runner("fid-roll")["status"] == "online")
        time.sleep(1.1)  # the next page is named after a later second
        before = set((runner_dir / "_diag").glob("Runner_*.log"))
        double.set_busy("fid-roll", True, job="big-" + "x" * (1100 * 1024))
        wait_until(lambda: set((runner_dir / "_diag").glob("Runner_*.log")) - before)  # the new page
        assert double.runner("fid-roll")["status"] == "online" and double.runner("fid-roll")["busy"]
        lib = Path(__file__).resolve().parents[2] / "components" / "scripts" / "lib.sh"
        check = subprocess.run(
            ["bash", "-c", 'source "$1"; runner_reports_online "$2"', "lib", str(lib), str(runner_dir)],
            check=False,
            timeout=30,
        )
        assert check.returncode == 0, "an online, busy runner is reported offline after its log rolled over"
    finally:
        listener.terminate()
        listener.wait(timeout=30)


def test_preflight_names_a_missing_libicu(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ldconfig").write_text("#!/bin/sh\necho 'libc.so.6 -> libc.so.6'\n")
    (fake / "ldconfig").chmod(0o755)
    inputs = {
        "HOST_NAME": "fidelity",
        "EXPECTED_ARCH": platform.machine(),
        "MIN_DISK_MB": 1,
        "INSTALL_ROOT": str(tmp_path),
        "INSTALL_DEPENDENCIES": "false",
        "DEPENDENCY_TIMEOUT": 900,
    }
    result = run_script("host-preflight.create.sh", inputs, path=f"{fake}:/usr/bin:/bin:/usr/sbin:/sbin")
    assert result.returncode != 0 and "libicu" in result.stderr, result.stdout + result.stderr


def test_destroying_one_ghes_stack_leaves_the_other_stacks_unit(
    double: GitHubDouble, base: Path, tarball: dict[str, Any], tmp_path: Path, runner_dir: Path
) -> None:
    unit = "actions.runner._services.shared.service"
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    (unit_dir / unit).write_text("[Service]\nExecStart=/opt/runner-fleet/stack-one/runners/shared/runsvc.sh\n")
    calls = tmp_path / "systemctl.calls"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake / "systemctl").chmod(0o755)
    # stack two: its runner directory never got a service (svc.sh install refused: the unit exists)
    inputs = {
        "RUNNER_NAME": "shared",
        "RUNNER_DIR": str(runner_dir),
        "UNIT_DIR": str(unit_dir),
        "UNIT": unit,
        "METRICS_CONF": str(tmp_path / "shared.conf"),
        "SPOOL_DIR": str(tmp_path / "spool" / "shared"),
        "HOOKS_DIR": str(tmp_path / "hooks"),
    }
    result = run_script("runner-service.delete.sh", inputs, path=f"{fake}:/usr/bin:/bin:/usr/sbin:/sbin")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (unit_dir / unit).exists(), "stack one's unit was removed by stack two's destroy"
    assert not calls.exists() or f"stop {unit}" not in calls.read_text()
