"""The runner stand-in (the tarball lab.artifacts builds), run locally as the unprivileged user
`nobody` against the GitHub double on 127.0.0.1: registration with a PAT, the refusals the fleet
relies on, run.sh's online/busy/offline behaviour and diag log lines, removal, token expiry.

Needs root (to run as another user and to test the root refusal), so it carries the lab mark;
no network namespace or lab host is involved. svc.sh's install/start need systemd: the lab tests
those on real hosts; here only its root check runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.artifacts import build_runner_tarball
from lab.github_double import GitHubDouble
from tests.conftest import IN_CI

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 and not IN_CI, reason="runs the stand-in as user nobody: needs root"),
]

PAT = "ghp_standinTESTpat0123456789abcdefXYZ"
REPO = "octo-org/octo-repo"
VERSION = "2.329.0"
OFFLINE_AFTER = 1.0
UTC_U = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
FLEET_LIB = Path(__file__).resolve().parents[2] / "components" / "scripts" / "lib.sh"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are 0700 root, which nobody cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="rflab-standin-"))
    base.chmod(0o755)
    yield base
    # Listeners/workers this module started and a failed test left behind (e.g. runsvc.sh killed
    # before it could pass the stop on): found by their working directory, ended by PID.
    for pid in standin_processes_under(base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def tarball(workdir: Path) -> dict[str, Any]:
    return build_runner_tarball(workdir / "artifacts", VERSION)


@pytest.fixture
def double() -> Iterator[GitHubDouble]:
    d = GitHubDouble(pats={PAT}, repos={REPO}, offline_after=OFFLINE_AFTER).start()
    yield d
    d.stop()


@pytest.fixture
def install(workdir: Path, tarball: dict[str, Any]) -> Callable[[str], Path]:
    """A fresh runner directory owned by nobody, unpacked from the stand-in tarball."""
    counter = iter(range(1000))

    def make(name: str) -> Path:
        target = workdir / f"{name}-{next(counter)}-{time.monotonic_ns()}"
        target.mkdir()
        with tarfile.open(tarball["path"]) as tar:
            tar.extractall(target, filter="tar")
        subprocess.run(["chown", "-R", "nobody:nogroup", str(target)], check=True)
        return target

    return make


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Listeners this test started; any still running at the end are killed by PID."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()  # runsvc.sh passes it on; run.sh is the listener itself
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def run_as_nobody(
    runner_dir: Path, args: list[str], env: dict[str, str] | None = None, as_root: bool = False
) -> subprocess.CompletedProcess[str]:
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "RUNNER_STANDIN_RETRY_SECONDS": "0.2",
    }
    full_env.update(env or {})
    return subprocess.run(
        ([] if as_root else NOBODY) + args,
        cwd=runner_dir,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def configure(
    double: GitHubDouble, runner_dir: Path, name: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["./config.sh", "--unattended", "--url", f"{double.url}/{REPO}", "--name", name, "--work", "_work", *extra]
    return run_as_nobody(runner_dir, args, {"ACTIONS_RUNNER_INPUT_PAT": PAT, **(env or {})})


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def runners(double: GitHubDouble, name: str | None = None) -> list[dict[str, Any]]:
    return [r for r in double.state()["runners"] if name is None or r["name"] == name]


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def diag_log(runner_dir: Path) -> str:
    """The newest Runner_*.log, as the fleet's metrics collector picks it."""
    logs = sorted((runner_dir / "_diag").glob("Runner_*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1].read_text() if logs else ""


def workers_in(runner_dir: Path) -> list[int]:
    """PIDs of processes named Runner.Worker (comm, like `pgrep -x`) started from runner_dir."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if comm == "Runner.Worker" and any(str(runner_dir).encode() in part for part in cmdline):
            found.append(int(proc.name))
    return found


def fleet_lib(function: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Call one of the fleet's own shell helpers (components/scripts/lib.sh) on the stand-in's files."""
    script = f'source "$1"; shift; {function} "$@"'
    return subprocess.run(
        ["bash", "-c", script, "lib", str(FLEET_LIB), *args], capture_output=True, text=True, timeout=30
    )


def standin_processes_under(base: Path, names: tuple[str, ...] = ("Runner.Listener", "Runner.Worker")) -> list[int]:
    """PIDs of stand-in processes (by comm) whose working directory is base or below it."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "comm").read_text().strip() not in names:
                continue
            cwd = Path(os.readlink(proc / "cwd").removesuffix(" (deleted)"))
        except OSError:
            continue
        if cwd == base or base in cwd.parents:
            found.append(int(proc.name))
    return found


def listeners_in(runner_dir: Path) -> list[int]:
    """Listeners working in runner_dir (runsvc.sh starts it by a relative path, so the working
    directory identifies it, not the command line)."""
    return standin_processes_under(runner_dir, ("Runner.Listener",))


def all_text_under(root: Path) -> str:
    return "\n".join(p.read_bytes().decode(errors="replace") for p in root.rglob("*") if p.is_file())


def test_config_refuses_root_and_svc_refuses_non_root(double: GitHubDouble, install: Callable[[str], Path]) -> None:
    runner_dir = install("root")
    args = ["./config.sh", "--unattended", "--url", f"{double.url}/{REPO}", "--token", "unused"]
    result = run_as_nobody(runner_dir, args, as_root=True)
    assert result.returncode == 1 and result.stdout.strip() == "Must not run with sudo"
    assert not (runner_dir / ".runner").exists() and double.calls == []

    assert configure(double, runner_dir, "svc-check").returncode == 0
    svc = run_as_nobody(runner_dir, ["./svc.sh", "install", "nobody"])
    assert svc.returncode == 1 and svc.stdout.strip() == "Must run as sudo"
    assert 'SVC_NAME="actions.runner.octo-org-octo-repo.svc-check.service"' in (runner_dir / "svc.sh").read_text()


def test_config_with_pat_registers_and_writes_the_runner_files(
    double: GitHubDouble, install: Callable[[str], Path]
) -> None:
    runner_dir = install("pat")
    result = configure(double, runner_dir, "lab-runner-1", env={"ACTIONS_RUNNER_INPUT_LABELS": "gpu,Big,gpu"})
    assert result.returncode == 0, output(result)
    assert "\u221a Runner successfully added" in result.stdout and "\u221a Settings Saved." in result.stdout

    (runner,) = runners(double, "lab-runner-1")
    assert [(lb["name"], lb["type"]) for lb in runner["labels"]] == [
        ("self-hosted", "read-only"),
        ("Linux", "read-only"),
        ("X64", "read-only"),
        ("gpu", "custom"),
        ("Big", "custom"),
    ]
    assert (runner["version"], runner["status"], runner["scope"]) == (VERSION, "offline", f"repos/{REPO}")

    raw = (runner_dir / ".runner").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), ".runner starts with a UTF-8 BOM"
    settings = json.loads(raw.decode("utf-8-sig"))
    assert list(settings) == ["agentId", "agentName", "poolId", "poolName", "serverUrl", "gitHubUrl", "workFolder"]
    assert settings["agentId"] == runner["id"] and settings["gitHubUrl"] == f"{double.url}/{REPO}"
    creds = json.loads((runner_dir / ".credentials").read_text(encoding="utf-8-sig"))
    assert creds["scheme"] == "OAuth" and creds["data"]["clientId"]
    assert (runner_dir / ".credentials_rsaparams").stat().st_mode & 0o777 == 0o600
    assert (runner_dir / ".path").read_text().strip() == os.environ.get("PATH", "/usr/bin:/bin")
    assert "LANG=C.UTF-8" in (runner_dir / ".env").read_text()
    assert all((runner_dir / f).stat().st_uid == 65534 for f in (".runner", ".credentials", ".env", ".path"))

    # The PAT went through the environment only: not in output, files, logs or the call record.
    assert PAT not in output(result) and PAT not in all_text_under(runner_dir)
    assert PAT not in json.dumps(double.calls)
    assert [(c["method"], c["path"], c["credential"]) for c in double.calls[:2]] == [
        ("POST", f"/api/v3/repos/{REPO}/actions/runners/registration-token", "pat"),
        ("POST", "/api/v3/actions/runner-registration", "registration-token"),
    ]

    again = configure(double, runner_dir, "lab-runner-1")
    assert again.returncode == 1
    assert (
        "Cannot configure the runner because it is already configured. To reconfigure the runner, "
        "run 'config.cmd remove' or './config.sh remove' first."
    ) in again.stderr


def test_same_name_needs_replace_and_replace_keeps_one_registration(
    double: GitHubDouble, install: Callable[[str], Path], processes: list[subprocess.Popen[bytes]]
) -> None:
    first, second = install("dup-a"), install("dup-b")
    assert configure(double, first, "dup").returncode == 0
    (original,) = runners(double, "dup")

    refused = configure(double, second, "dup")
    assert refused.returncode == 1 and "A runner exists with the same name dup." in refused.stderr
    assert not (second / ".runner").exists()

    replaced = run_as_nobody(
        second,
        ["./config.sh", "--url", f"{double.url}/{REPO}", "--work", "_work"],
        {
            "ACTIONS_RUNNER_INPUT_PAT": PAT,
            "ACTIONS_RUNNER_INPUT_NAME": "dup",
            "ACTIONS_RUNNER_INPUT_UNATTENDED": "true",
            "ACTIONS_RUNNER_INPUT_REPLACE": "true",
        },
    )
    assert replaced.returncode == 0, output(replaced)
    assert "\u221a Successfully replaced the runner" in replaced.stdout
    (now,) = runners(double, "dup")
    assert now["id"] == original["id"], "replace keeps the registration (same id)"

    # The first directory's credential was replaced: its listener is told the registration is gone.
    stale = run_as_nobody(first, ["./run.sh"])
    assert stale.returncode == 1
    assert "Failed to create a session. The runner registration has been deleted from the server" in stale.stderr


def test_run_sh_online_busy_reconnect_and_stop(
    double: GitHubDouble, install: Callable[[str], Path], processes: list[subprocess.Popen[bytes]]
) -> None:
    runner_dir = install("run")
    assert configure(double, runner_dir, "runner-live", "--labels", "deploy").returncode == 0
    stdout_file = runner_dir.parent / f"{runner_dir.name}.stdout"

    def start() -> subprocess.Popen[bytes]:
        with stdout_file.open("ab") as out:
            proc = subprocess.Popen(
                [*NOBODY, "./run.sh"],
                cwd=runner_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUNNER_STANDIN_RETRY_SECONDS": "0.2"},
            )
        processes.append(proc)
        return proc

    def status() -> str:
        return runners(double, "runner-live")[0]["status"]

    listener = start()
    wait_for(lambda: status() == "online", what="runner online")
    log = wait_for(lambda: "Listening for Jobs" in diag_log(runner_dir) and diag_log(runner_dir), what="listening")
    assert re.search(rf"^\[{UTC_U} INFO Terminal\] WRITE LINE: Current runner version: '{VERSION}'$", log, re.M)
    assert re.search(rf"^\[{UTC_U} INFO Terminal\] WRITE LINE: {UTC_U}: Listening for Jobs$", log, re.M)
    assert "\u221a Connected to GitHub" in stdout_file.read_text(), "console only, as the real Terminal does"
    assert fleet_lib("runner_reports_online", str(runner_dir)).returncode == 0
    assert fleet_lib("runner_field", str(runner_dir / ".runner"), "agentId").stdout.strip() == str(
        runners(double, "runner-live")[0]["id"]
    )

    double.set_busy("runner-live", True, job="deploy site")
    wait_for(lambda: "Running job: deploy site" in diag_log(runner_dir), what="Running job")
    assert re.search(rf"WRITE LINE: {UTC_U}: Running job: deploy site$", diag_log(runner_dir), re.M)
    (worker,) = wait_for(lambda: workers_in(runner_dir), what="a Runner.Worker process")
    assert Path(f"/proc/{worker}/status").read_text().count("65534") >= 2, "the worker runs as the runner user"
    double.set_busy("runner-live", False)
    wait_for(lambda: "Job deploy site completed with result: Succeeded" in diag_log(runner_dir), what="completed")
    wait_for(lambda: not workers_in(runner_dir), what="the worker to exit")

    double.set_connected("runner-live", False)
    wait_for(lambda: "Runner connect error" in diag_log(runner_dir), what="connect error")
    assert re.search(
        rf"^\[{UTC_U} ERR  Terminal\] WRITE ERROR: {UTC_U}: Runner connect error: .+\. Retrying until reconnected\.$",
        diag_log(runner_dir),
        re.M,
    )
    assert status() == "offline"
    assert fleet_lib("runner_reports_online", str(runner_dir)).returncode == 1, "the fleet sees the connect error"
    double.set_connected("runner-live", True)
    wait_for(
        lambda: re.search(rf"WRITE LINE: {UTC_U}: Runner reconnected\.$", diag_log(runner_dir), re.M),
        what="reconnected",
    )
    wait_for(lambda: status() == "online", what="online again")
    assert fleet_lib("runner_reports_online", str(runner_dir)).returncode == 0

    # SIGTERM: the listener ends its session (offline at once) and exits 0.
    listener.send_signal(signal.SIGTERM)
    assert listener.wait(timeout=10) == 0
    assert status() == "offline"

    # SIGKILL mid-job: no session end, so the double turns it offline after OFFLINE_AFTER seconds;
    # the orphaned worker notices its listener is gone and exits.
    listener = start()
    wait_for(lambda: status() == "online", what="runner online after restart")
    double.set_busy("runner-live", True, job="long job")
    wait_for(lambda: workers_in(runner_dir), what="a worker for the second job")
    listener.kill()
    listener.wait(timeout=10)
    killed_at = time.monotonic()
    assert status() == "online", "a runner killed without goodbye stays online until its session times out"
    wait_for(lambda: status() == "offline", timeout=OFFLINE_AFTER + 5, what="offline after the timeout")
    assert time.monotonic() - killed_at >= OFFLINE_AFTER * 0.5
    wait_for(lambda: not workers_in(runner_dir), timeout=5, what="the orphaned worker to exit")
    double.set_busy("runner-live", False)


def test_remove_with_pat_refuses_an_installed_service_and_local_only_removal(
    double: GitHubDouble, install: Callable[[str], Path]
) -> None:
    runner_dir = install("remove")
    assert configure(double, runner_dir, "to-remove").returncode == 0
    registration_files = (".runner", ".credentials", ".credentials_rsaparams")

    (runner_dir / ".service").write_text("actions.runner.octo-org-octo-repo.to-remove.service\n")
    refused = run_as_nobody(runner_dir, ["./config.sh", "remove"], {"ACTIONS_RUNNER_INPUT_PAT": PAT})
    assert refused.returncode == 1
    assert "Removing service" in refused.stdout and "Uninstall service first" in refused.stderr
    assert runners(double, "to-remove") and all((runner_dir / f).exists() for f in registration_files)
    (runner_dir / ".service").unlink()

    removed = run_as_nobody(runner_dir, ["./config.sh", "remove"], {"ACTIONS_RUNNER_INPUT_PAT": PAT})
    assert removed.returncode == 0, output(removed)
    assert "\u221a Runner removed successfully" in removed.stdout
    assert runners(double, "to-remove") == []
    assert not any((runner_dir / f).exists() for f in registration_files)
    assert [c["credential"] for c in double.calls if c["path"].endswith("/remove-token")] == ["pat"]
    assert PAT not in output(removed)

    local = install("remove-local")
    assert configure(double, local, "local-only").returncode == 0
    result = run_as_nobody(local, ["./config.sh", "remove", "--local"])
    assert result.returncode == 0 and "\u221a Removed .runner" in result.stdout
    assert not any((local / f).exists() for f in registration_files)
    assert runners(double, "local-only"), "--local leaves the registration on GitHub"


def test_expired_registration_token_is_refused_like_github(
    double: GitHubDouble, install: Callable[[str], Path]
) -> None:
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - the double's http URL
        f"{double.api_url}/repos/{REPO}/actions/runners/registration-token",
        method="POST",
        headers={"Authorization": f"Bearer {PAT}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the double's http URL
        token = json.load(response)["token"]
    double.clock.advance(3601)

    runner_dir = install("expired")
    args = ["./config.sh", "--unattended", "--url", f"{double.url}/{REPO}", "--name", "late"]
    result = run_as_nobody(runner_dir, args, {"ACTIONS_RUNNER_INPUT_TOKEN": token})
    assert result.returncode == 1
    assert f"Http response code: NotFound from 'POST {double.api_url}/actions/runner-registration'" in result.stderr
    assert "Response status code does not indicate success: 404 (Not Found)." in result.stderr
    assert token not in output(result) and not (runner_dir / ".runner").exists()
    assert runners(double, "late") == []


def test_runsvc_passes_sigterm_on_to_the_listener(
    double: GitHubDouble, install: Callable[[str], Path], processes: list[subprocess.Popen[bytes]]
) -> None:
    """systemd (KillMode=process) signals only the unit's main process, runsvc.sh: it must pass the
    stop on to the listener, which ends its session and exits."""
    runner_dir = install("runsvc")
    assert configure(double, runner_dir, "as-service").returncode == 0
    service = subprocess.Popen(
        [*NOBODY, "./bin/runsvc.sh"],
        cwd=runner_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "RUNNER_STANDIN_RETRY_SECONDS": "0.2"},
    )
    processes.append(service)
    wait_for(lambda: runners(double, "as-service")[0]["status"] == "online", what="online as a service")
    assert listeners_in(runner_dir), "the listener runs as runsvc.sh's child"
    service.send_signal(signal.SIGTERM)
    assert service.wait(timeout=10) == 0
    out = service.stdout.read().decode() if service.stdout else ""
    assert "Starting Runner listener with startup type: service" in out and "Exiting..." in out
    assert runners(double, "as-service")[0]["status"] == "offline"
    assert not listeners_in(runner_dir)
