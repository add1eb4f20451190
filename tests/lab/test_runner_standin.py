"""The runner stand-in (the tarball lab.artifacts builds) held to actions/runner's source.

Two kinds of test:
- unmarked: the stand-in's rules checked locally against a temp directory, most of them in-process
  (the listener's file is loaded as a module, its clock replaced by a fake one), some as
  subprocesses with fake `ldd`/`ldconfig` or a fake listener; no GitHub double, no lab host;
- `lab`-marked: the stand-in run as the unprivileged user `nobody` against the GitHub double on a
  loopback address at port 80 (the real config.sh drops any port from --url when it builds the REST
  URL, so the double must answer on the default port): registration, refusals, run.sh's
  online/busy/offline behaviour and log lines, removal, token expiry, the service host.
Each test names the actions/runner source file whose rule it holds the stand-in to.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from lab.artifacts import STANDIN_DIR, build_runner_tarball
from lab.github_double import GitHubDouble
from tests.conftest import IN_CI

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0 and not IN_CI, reason="runs the stand-in as user nobody: needs root")
LAB = [pytest.mark.lab, ROOT_ONLY]


def lab(test: Callable[..., Any]) -> Callable[..., Any]:
    for mark in LAB:
        test = mark(test)
    return test


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


def loopback_address() -> str:
    """A random 127.x.y.z: the double must listen on port 80 (see the module docstring), and a
    fresh loopback address keeps concurrent runs from competing for it."""
    return f"127.{random.randint(16, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"  # noqa: S311


@pytest.fixture
def double() -> Iterator[GitHubDouble]:
    d = GitHubDouble(host=loopback_address(), port=80, pats={PAT}, repos={REPO}, offline_after=OFFLINE_AFTER).start()
    yield d
    d.stop()


def github_url(double: GitHubDouble) -> str:
    """The URL config.sh gets: the double's address without the (default) port."""
    return f"http://{double.host}"


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
    args = ["./config.sh", "--unattended", "--url", f"{github_url(double)}/{REPO}", "--name", name, "--work", "_work"]
    args += extra
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


@lab
def test_config_refuses_root_and_svc_refuses_non_root(double: GitHubDouble, install: Callable[[str], Path]) -> None:
    runner_dir = install("root")
    args = ["./config.sh", "--unattended", "--url", f"{github_url(double)}/{REPO}", "--token", "unused"]
    result = run_as_nobody(runner_dir, args, as_root=True)
    assert result.returncode == 1 and result.stdout.strip() == "Must not run with sudo"
    assert not (runner_dir / ".runner").exists() and double.calls == []

    assert configure(double, runner_dir, "svc-check").returncode == 0
    svc = run_as_nobody(runner_dir, ["./svc.sh", "install", "nobody"])
    assert svc.returncode == 1 and svc.stdout.strip() == "Must run as sudo"
    assert 'SVC_NAME="actions.runner.octo-org-octo-repo.svc-check.service"' in (runner_dir / "svc.sh").read_text()


@lab
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
    # Runner.Common/ConfigurationStore.cs RunnerSettings; isHostedServer only when false (not github.com)
    assert list(settings) == [
        "isHostedServer",
        "agentId",
        "agentName",
        "poolId",
        "poolName",
        "serverUrl",
        "gitHubUrl",
        "workFolder",
    ]
    assert settings["isHostedServer"] is False
    assert settings["agentId"] == runner["id"] and settings["gitHubUrl"] == f"{github_url(double)}/{REPO}"
    creds = json.loads((runner_dir / ".credentials").read_text(encoding="utf-8-sig"))
    assert creds["scheme"] == "OAuth" and creds["data"]["clientId"]
    assert creds["data"]["requireFipsCryptography"] == "True", "ConfigurationManager.cs: the default is true"
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


@lab
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
        ["./config.sh", "--url", f"{github_url(double)}/{REPO}", "--work", "_work"],
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


@lab
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
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
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
    # MessageListener.cs: the next attempt comes after a random 15-30 s back-off, not at once
    wait_for(
        lambda: re.search(rf"WRITE LINE: {UTC_U}: Runner reconnected\.$", diag_log(runner_dir), re.M),
        timeout=45,
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
    wait_for(lambda: not workers_in(runner_dir), timeout=15, what="the orphaned worker to exit")
    double.set_busy("runner-live", False)


@lab
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


@lab
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
    args = ["./config.sh", "--unattended", "--url", f"{github_url(double)}/{REPO}", "--name", "late"]
    result = run_as_nobody(runner_dir, args, {"ACTIONS_RUNNER_INPUT_TOKEN": token})
    assert result.returncode == 1
    api = f"{github_url(double)}/api/v3"
    assert f"Http response code: NotFound from 'POST {api}/actions/runner-registration'" in result.stderr
    assert "Response status code does not indicate success: 404 (Not Found)." in result.stderr
    assert token not in output(result) and not (runner_dir / ".runner").exists()
    assert runners(double, "late") == []


@lab
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
        env={"PATH": "/usr/bin:/bin"},
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


# --- the stand-in's rules, checked locally (no double, no lab host) --------------------------

LISTENER_FILE = STANDIN_DIR / "bin" / "Runner.Listener"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[types.ModuleType]:
    """bin/Runner.Listener loaded as a module, its runner root a temp directory and its clock a
    fake one (SLEEP records the waits instead of waiting)."""
    loader = importlib.machinery.SourceFileLoader("runner_standin_listener", str(LISTENER_FILE))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    root = tmp_path / "runner"
    (root / "bin").mkdir(parents=True)
    module.ROOT = root
    module.SLEPT = []
    module.SLEEP = module.SLEPT.append
    saved = dict(os.environ)
    yield module
    os.environ.clear()
    os.environ.update(saved)


def trace_text(module: types.ModuleType) -> str:
    return "".join(p.read_text() for p in sorted((module.ROOT / "_diag").glob("Runner_*.log")))


def write_registration(module: types.ModuleType, **extra: Any) -> dict[str, Any]:
    settings = {
        "agentId": 7,
        "agentName": "r1",
        "poolId": 1,
        "poolName": "Default",
        "serverUrl": "http://10.0.0.1/o-r",
        "gitHubUrl": "http://10.0.0.1/o/r",
        "workFolder": "_work",
        **extra,
    }
    module.write_bom_json(module.ROOT / ".runner", settings)
    module.write_bom_json(
        module.ROOT / ".credentials",
        {"scheme": "OAuth", "data": {"clientId": "c1", "authorizationUrl": "http://10.0.0.1/t"}},
    )
    module.write_bom_json(module.ROOT / ".credentials_rsaparams", {"standinSecret": "s3cret-value"}, 0o600)
    return settings


def test_migrated_files_count_as_configured_and_removal_deletes_them(standin: types.ModuleType) -> None:
    """Runner.Common/ConfigurationStore.cs (v2.323.0+): IsConfigured is `.runner` OR `.runner_migrated`,
    HasCredentials `.credentials` OR `.credentials_migrated`; DeleteSettings/DeleteCredential remove both."""
    root = standin.ROOT
    term = standin.Terminal(standin.Trace())
    for name in (".runner", ".runner_migrated"):
        (root / name).write_text("{}")
        assert standin.is_configured()
        cmd = standin.Command(["configure", "--unattended", "--url", "http://10.0.0.1/o/r"])
        with pytest.raises(standin.Fatal, match="already configured"):
            standin.configure(cmd, term, standin.Trace())
        (root / name).unlink()
    assert not standin.is_configured()
    for name in (".credentials", ".credentials_migrated"):
        (root / name).write_text("{}")
        assert standin.has_credentials()
        (root / name).unlink()

    state = (".runner", ".runner_migrated", ".credentials", ".credentials_migrated", ".credentials_rsaparams")
    for name in (*state, ".env", ".path"):
        (root / name).write_text("{}")
    standin.delete_local_config(term)
    assert not any((root / name).exists() for name in state)
    assert (root / ".env").exists() and (root / ".path").exists(), "remove leaves .env/.path, as the real one"


def test_run_prefers_migrated_settings_and_oauth_migrated_credentials(standin: types.ModuleType) -> None:
    """Runner.Listener/Runner.cs RunAsync tries `.runner_migrated` first; CredentialManager.cs
    LoadCredentials prefers `.credentials_migrated` when its scheme is OAuth."""
    write_registration(standin)
    standin.write_bom_json(
        standin.ROOT / ".runner_migrated",
        {
            "agentId": 7,
            "agentName": "r1",
            "poolId": 1,
            "serverUrl": "http://10.0.0.1/o-r",
            "useV2Flow": True,
            "serverUrlV2": "http://10.0.0.1/_broker/o-r",
            "gitHubUrl": "http://10.0.0.1/o/r",
            "workFolder": "_work",
        },
    )
    standin.write_bom_json(
        standin.ROOT / ".credentials_migrated", {"scheme": "OAuth", "data": {"clientId": "c2", "authorizationUrl": "x"}}
    )
    assert standin.load_credentials()["data"]["clientId"] == "c2"
    urls: list[str] = []

    def fake_http(method: str, url: str, auth: str | None = None, body: Any = None, timeout: float = 0) -> Any:
        urls.append(f"{method} {url}")
        if method == "POST":
            return 200, {"sessionId": "s1", "pollSeconds": 1}
        raise standin.HttpError(method, url, 404, '{"message": "gone"}', "")

    standin.http = fake_http
    rc = standin.run(standin.Command(["run"]), standin.Terminal(standin.Trace()), standin.Trace())
    assert rc == 0  # 404 while polling: "no longer exists", local files cleaned up
    assert urls[0] == "POST http://10.0.0.1/_broker/o-r/_apis/standin/v1/sessions"
    assert not standin.is_configured() and not standin.has_credentials()


def test_only_migrated_settings_is_configured_but_run_exits_retryable(
    standin: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """ConfigurationStore.cs GetSettings reads `.runner` only: with just `.runner_migrated` the
    runner is "configured", the read fails, and Program.cs exits 2 (the service host relaunches)."""
    write_registration(standin)
    (standin.ROOT / ".runner").rename(standin.ROOT / ".runner_migrated")
    assert standin.main(["run"]) == 2
    assert "An error occurred: Value cannot be null. (Parameter 'configuredSettings')" in capsys.readouterr().err


def test_session_conflict_is_retried_every_30_s_for_4_minutes_then_exit_5(standin: types.ModuleType) -> None:
    """Runner.Listener/MessageListener.cs: a conflict is retried every 30 s (_sessionCreationRetryInterval)
    until count x 30 s reaches 4 minutes (_sessionConflictRetryLimit): 8 attempts, 7 waits; then
    CreateSessionResult.SessionConflict, which Runner.cs returns as exit code 5."""
    write_registration(standin)
    attempts: list[str] = []

    def conflict(method: str, url: str, auth: str | None = None, body: Any = None, timeout: float = 0) -> Any:
        attempts.append(url)
        raise standin.HttpError(method, url, 409, '{"message": "A session for this runner already exists."}', "")

    standin.http = conflict
    assert standin.main(["run"]) == 5
    assert len(attempts) == 8 and standin.SLEPT == [30.0] * 7
    log = trace_text(standin)
    assert log.count("WRITE ERROR: A session for this runner already exists.") == 8
    assert log.count("Runner connect error: A session for this runner already exists.. Retrying") == 1
    assert "WRITE ERROR: Stop retry on SessionConflictException after retried for 240 seconds." in log
    assert "WRITE ERROR: Failed to create session. A session for this runner already exists." in log
    assert "Listening for Jobs" not in log


def test_a_conflict_that_clears_goes_on_listening(standin: types.ModuleType) -> None:
    write_registration(standin)
    answers = iter([409, 409, 200])

    def sometimes(method: str, url: str, auth: str | None = None, body: Any = None, timeout: float = 0) -> Any:
        if method == "POST":
            status = next(answers)
            if status == 409:
                raise standin.HttpError(
                    method, url, 409, '{"message": "A session for this runner already exists."}', ""
                )
            return 200, {"sessionId": "s1", "pollSeconds": 1}
        raise standin.HttpError(method, url, 404, '{"message": "gone"}', "")

    standin.http = sometimes
    assert standin.main(["run"]) == 0
    assert standin.SLEPT == [30.0, 30.0]
    log = trace_text(standin)
    assert "Runner reconnected." in log and log.count("Listening for Jobs") == 1


def test_lost_connection_backs_off_15_to_30_s_then_30_to_60_s(standin: types.ModuleType) -> None:
    """MessageListener.cs GetNextMessageAsync: random back-off in [15, 30] s for the first five
    consecutive errors, [30, 60] s after; the connect error is written once; a 401 is not retried
    (Program.cs: exit 2)."""
    write_registration(standin)
    polls = iter(["down"] * 7 + ["unauthorized"])

    def flaky(method: str, url: str, auth: str | None = None, body: Any = None, timeout: float = 0) -> Any:
        if method == "POST":
            return 200, {"sessionId": "s1", "pollSeconds": 1}
        if method == "DELETE":
            return 204, None
        if next(polls) == "down":
            raise standin.ConnectError("Connection refused (10.0.0.1:80)")
        raise standin.HttpError(method, url, 401, '{"message": "Unauthorized"}', "")

    standin.http = flaky
    assert standin.main(["run"]) == 2
    waits = standin.SLEPT
    assert len(waits) == 7
    assert all(15 <= w <= 30 for w in waits[:5]) and all(30 <= w <= 60 for w in waits[5:])
    assert trace_text(standin).count("Runner connect error: Connection refused") == 1


def test_diag_log_rolls_over_at_runner_logsize_and_listening_stays_behind(standin: types.ModuleType) -> None:
    """Runner.Common/HostTraceListener.cs + HostContext.cs: RUNNER_LOGSIZE is in MB (default 8); past
    it the trace goes on in a new Runner_<utc>.log; "Listening for Jobs" (Runner.cs) is written once per
    session, so after a roll-over the newest log no longer has it."""
    assert standin.Trace().page_bytes == 8 * 1024 * 1024
    os.environ["RUNNER_LOGSIZE"] = "not a number"
    assert standin.Trace().page_bytes == 8 * 1024 * 1024
    os.environ["RUNNER_LOGSIZE"] = "0"
    assert standin.Trace().page_bytes == 0, "0 turns paging off"
    os.environ["RUNNER_LOGSIZE"] = "1"
    trace = standin.Trace()
    term = standin.Terminal(trace)
    first = trace.path
    term.line(f"{standin.utc_u()}: Listening for Jobs")
    line = "x" * 1000
    for _ in range(1000):  # 1000 x ~1040 bytes: just under 1 MiB
        trace.info("MessageListener", line)
    assert trace.path == first
    time.sleep(1.1)  # the next file is named after the current second
    for _ in range(100):
        trace.info("MessageListener", line)
    assert trace.path != first
    assert "Listening for Jobs" in first.read_text() and "Listening for Jobs" not in trace.path.read_text()
    assert first.stat().st_size > 1024 * 1024


def test_diag_logs_older_than_the_retention_are_deleted(standin: types.ModuleType) -> None:
    """HostTraceListener.cs CreatePageLogWriter: `Runner*.log` last written more than
    RUNNER_LOGRETENTION days ago (default 30) are deleted whenever a log file is opened."""
    diag = standin.ROOT / "_diag"
    diag.mkdir()
    now = time.time()
    ages = {"Runner_20200101-000000-utc.log": 31, "Runner_20200201-000000-utc.log": 29, "Worker_x.log": 40}
    for name, days in ages.items():
        (diag / name).write_text("old\n")
        os.utime(diag / name, (now - days * 86400, now - days * 86400))
    os.environ["RUNNER_LOGRETENTION"] = "0"
    standin.Trace()
    assert all((diag / n).exists() for n in ages), "0 days: nothing is deleted"
    del os.environ["RUNNER_LOGRETENTION"]
    standin.Trace()
    assert not (diag / "Runner_20200101-000000-utc.log").exists()
    assert (diag / "Runner_20200201-000000-utc.log").exists() and (diag / "Worker_x.log").exists()


def test_env_file_sets_the_environment_first(standin: types.ModuleType) -> None:
    """Runner.Listener/Program.cs LoadAndSetEnv: `.env` lines become environment variables before
    the trace starts, so `.env` can set RUNNER_LOGSIZE."""
    (standin.ROOT / ".env").write_text("LANG=C.UTF-8\nRUNNER_LOGSIZE=3\nnot-a-pair\n")
    standin.load_env()
    assert os.environ["RUNNER_LOGSIZE"] == "3" and standin.Trace().page_bytes == 3 * 1024 * 1024


def test_rest_urls_drop_the_port_of_the_github_url(standin: types.ModuleType) -> None:
    """Configuration/ConfigurationManager.cs GetJITRunnerTokenAsync/GetTenantCredential and
    RunnerDotcomServer.cs build the API URL from UriBuilder.Host: the port of --url is dropped."""
    assert standin.api_base("http://10.249.31.1:8931/o/r") == "http://10.249.31.1/api/v3"
    assert standin.api_base("https://ghes.example.com:8443/o") == "https://ghes.example.com/api/v3"
    assert standin.api_base("https://github.com/o/r") == "https://api.github.com"
    assert standin.api_base("https://acme.ghe.com/o") == "https://api.acme.ghe.com"
    assert standin.entity_url("http://h:81/o/r") == "http://h/api/v3/repos/o/r/actions"
    assert standin.entity_url("http://h/o") == "http://h/api/v3/orgs/o/actions"
    assert standin.entity_url("http://h/enterprises/e") == "http://h/api/v3/enterprises/e/actions"
    # the GHES check compares authorities, ports included (UriUtility.IsSubdomainOf)
    assert standin.is_subdomain_of(standin.authority("http://h:80/x"), standin.authority("http://h/o/r"))
    assert not standin.is_subdomain_of(standin.authority("http://h/x"), standin.authority("http://h:8931/o/r"))


def test_service_names_follow_the_runner_including_ghes_and_truncation(standin: types.ModuleType) -> None:
    """Configuration/ServiceControlManager.cs CalculateServiceName with SystemdControlManager.cs's
    pattern; ConfigurationStore.cs RepoOrOrgName: the GitHub URL's path only for
    *.githubusercontent.com services, else the first path segment of the service URL."""
    dotcom = {"serverUrl": "https://pipelines.actions.githubusercontent.com/abc", "gitHubUrl": "https://github.com/o/r"}
    assert standin.service_names({**dotcom, "agentName": "r 1"})[0] == "actions.runner.o-r.r 1.service"
    ghes = {"serverUrl": "https://ghes.example/_services/pipelines/xyz", "gitHubUrl": "https://ghes.example/o/r"}
    assert standin.service_names({**ghes, "agentName": "r1"})[0] == "actions.runner._services.r1.service"
    assert standin.service_names({**ghes, "agentName": "r1"})[1] == "GitHub Actions Runner (_services.r1)"
    long_repo = {"serverUrl": "https://x.githubusercontent.com/a", "gitHubUrl": "https://github.com/" + "o" * 80 + "/r"}
    name = standin.service_names({**long_repo, "agentName": "n" * 100})[0]
    assert len(name) <= 150 and re.fullmatch(r"actions\.runner\.o{70}\.n+-\d{4}\.service", name)
    assert 1000 <= int(name.rsplit("-", 1)[1].split(".")[0]) <= 9998
    assert standin.service_names({**long_repo, "agentName": "n"})[0] == f"actions.runner.{'o' * 80}-r.n.service"
    huge_repo = {**long_repo, "gitHubUrl": "https://github.com/" + "o" * 140 + "/r"}
    short = standin.service_names({**huge_repo, "agentName": "n"})[0]
    assert re.fullmatch(r"actions\.runner\.o{70}\.n-\d{4}\.service", short), "owner/repo alone is cut to 70"


def test_unit_template_is_the_real_runners() -> None:
    """src/Misc/layoutbin/actions.runner.service.template: KillMode=process, TimeoutStopSec=5min
    and no Restart= (a listener that exits stays down; children of a stopped runner survive)."""
    text = (STANDIN_DIR / "bin" / "actions.runner.service.template").read_text()
    assert text.splitlines() == [
        "[Unit]",
        "Description={{Description}}",
        "After=network-online.target",
        "",
        "[Service]",
        "ExecStart={{RunnerRoot}}/runsvc.sh",
        "User={{User}}",
        "WorkingDirectory={{RunnerRoot}}",
        "KillMode=process",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=5min",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]


@pytest.fixture
def unpacked(tmp_path: Path) -> Path:
    """The stand-in tarball unpacked into a world-traversable temp directory."""
    base = Path(tempfile.mkdtemp(prefix="rflab-standin-unit-"))
    base.chmod(0o755)
    tarball = build_runner_tarball(base / "artifacts", VERSION)
    target = base / "runner"
    target.mkdir()
    with tarfile.open(tarball["path"]) as tar:
        tar.extractall(target, filter="tar")
    yield target
    shutil.rmtree(base, ignore_errors=True)


def fake_tools(where: Path, **scripts: str) -> str:
    where.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (where / name).write_text(f"#!/bin/sh\n{body}\n")
        (where / name).chmod(0o755)
    return f"{where}:/usr/bin:/bin:/usr/sbin:/sbin"


def config_sh(runner_dir: Path, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "LANG": "C.UTF-8", "RUNNER_ALLOW_RUNASROOT": "1"}
    return subprocess.run(
        ["./config.sh", *args], cwd=runner_dir, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_config_sh_checks_native_dependencies_first(unpacked: Path, tmp_path: Path) -> None:
    """src/Misc/layoutroot/config.sh: ldd on the native libraries, then libicu through
    `ldconfig -NXv`; a missing one exits 1 with the real message before the listener runs."""
    no_icu = fake_tools(tmp_path / "no-icu", ldconfig="echo 'libc.so.6 -> libc.so.6'")
    result = config_sh(unpacked, no_icu, "--version")
    assert result.returncode == 1
    assert result.stdout.splitlines()[-2:] == [
        "Libicu's dependencies is missing for Dotnet Core 6.0",
        "Execute sudo ./bin/installdependencies.sh to install any missing Dotnet Core 6.0 dependencies.",
    ]
    assert not (unpacked / "_diag").exists() and not (unpacked / ".path").exists(), "the listener never ran"

    missing_lib = fake_tools(tmp_path / "no-stdcxx", ldd="echo '\tlibstdc++.so.6 => not found'")
    result = config_sh(unpacked, missing_lib, "--version")
    assert result.returncode == 1
    assert "Dependencies is missing for Dotnet Core 6.0" in result.stdout and "not found" in result.stdout

    with_icu = fake_tools(tmp_path / "icu", ldconfig="echo '\tlibicuuc.so.72 -> libicuuc.so.72.1'")
    result = config_sh(unpacked, with_icu, "--version")
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == VERSION
    (unpacked / "bin" / "installdependencies.sh").stat()  # shipped, as config.sh's message says


@lab
def test_every_directory_up_to_root_must_be_listable(unpacked: Path) -> None:
    """Runner.Listener/Program.cs + Runner.Sdk/Util/IOUtil.cs ValidateExecutePermission: the runner
    root and each parent must be listable by the runner user, else exit 1 before any command."""
    subprocess.run(["chown", "-R", "nobody:nogroup", str(unpacked)], check=True)
    parent = unpacked.parent
    parent.chmod(0o711)  # searchable, not listable
    try:
        result = subprocess.run(
            [*NOBODY, "./bin/Runner.Listener", "--version"],
            cwd=unpacked,
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin"},
            check=False,
        )
    finally:
        parent.chmod(0o755)
    assert result.returncode == 1
    assert (
        f"An error occurred: Permission to read the directory contents is required for '{unpacked}' and each "
        f"directory up the hierarchy. Access to the path '{parent}' is denied." in result.stderr
    )


FAKE_LISTENER = """#!/bin/bash
# exits with the next code of $CODES (one per launch); "signal" kills itself; "trap" waits for SIGINT
n=$(cat "$0.count" 2>/dev/null || echo 0); echo $((n + 1)) > "$0.count"
codes=($CODES); code=${codes[$n]:-0}
echo "launch $((n + 1)) args: $*"
case $code in
  signal) kill -KILL $$ ;;
  trap) trap 'echo "got INT"; exit 0' INT; echo "Listening for Jobs"; while :; do sleep 0.1; done ;;
  *) exit "$code" ;;
esac
"""


def service_host(unpacked: Path, codes: str, **env: str) -> subprocess.Popen[str]:
    listener = unpacked / "bin" / "Runner.Listener"
    listener.write_text(FAKE_LISTENER)
    listener.chmod(0o755)
    return subprocess.Popen(
        ["./bin/RunnerService"],
        cwd=unpacked,
        env={"PATH": "/usr/bin:/bin", "CODES": codes, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    ("codes", "env", "launches", "said"),
    [
        ("1", {}, 1, "Runner listener exit with terminated error, stop the service, no retry needed."),
        ("5", {}, 1, "Runner listener exit with Session Conflict error, stop the service, no retry needed."),
        ("2 0", {}, 2, "Runner listener exit with retryable error, re-launch runner in 5 seconds."),
        ("signal 0", {}, 2, "Runner listener exited with error code null"),
        (
            "7 7 0",
            {"GITHUB_ACTIONS_SERVICE_EXIT_AFTER_N_FAILURES": "2"},
            2,
            "Runner listener exit with undefined return code, exiting service after 2 consecutive failures",
        ),
    ],
)
def test_service_host_relaunches_only_on_its_retryable_codes(
    unpacked: Path, codes: str, env: dict[str, str], launches: int, said: str
) -> None:
    """src/Misc/layoutbin/RunnerService.js (runsvc.sh's child): 0, 1 and 5 stop the service; 2-4 and
    unknown codes (a killed listener included) relaunch it after 5 s; the host then exits 0."""
    started = time.monotonic()
    host = service_host(unpacked, codes, **env)
    out, _ = host.communicate(timeout=60)
    assert host.returncode == 0, out
    assert out.count("Starting Runner listener with startup type: service") == launches
    assert "args: run --startuptype service" in out and said in out
    assert (unpacked / "bin" / "Runner.Listener.count").read_text().strip() == str(launches)
    assert time.monotonic() - started >= 5 * (launches - 1) - 0.5, "the relaunch waits 5 s"


def test_service_host_passes_a_stop_on_as_sigint_and_does_not_relaunch(unpacked: Path) -> None:
    host = service_host(unpacked, "trap")
    assert host.stdout is not None
    for line in host.stdout:
        if "Listening for Jobs" in line:
            break
    host.send_signal(signal.SIGTERM)
    out, _ = host.communicate(timeout=30)
    assert host.returncode == 0
    for text in ("Shutting down runner listener", "Sending SIGINT to runner listener to stop", "got INT"):
        assert text in out
    assert "Starting Runner listener" not in out, "no relaunch after a stop"


# --- against the GitHub double (lab-marked) ---------------------------------------------------


@lab
def test_the_port_in_the_url_is_ignored_for_rest_calls(double: GitHubDouble, install: Callable[[str], Path]) -> None:
    """ConfigurationManager.cs builds `{scheme}://{host}/api/v3` from --url without its port: a URL
    naming :8931 still reaches the double on :80 (nothing listens on 8931), and the GHES check then
    refuses the runner service URL, whose authority lacks that port."""
    runner_dir = install("port")
    args = ["./config.sh", "--unattended", "--url", f"http://{double.host}:8931/{REPO}", "--name", "p1"]
    result = run_as_nobody(runner_dir, args, {"ACTIONS_RUNNER_INPUT_PAT": PAT})
    assert result.returncode == 1, output(result)
    assert [(c["method"], c["path"]) for c in double.calls[:2]] == [
        ("POST", f"/api/v3/repos/{REPO}/actions/runners/registration-token"),
        ("POST", "/api/v3/actions/runner-registration"),
    ]
    assert "GitHub Actions is not properly configured in GHES. GHES url: " in result.stderr
    assert not (runner_dir / ".runner").exists()


@lab
def test_runner_admin_flow_registers_listens_and_removes_through_rest(
    double: GitHubDouble, install: Callable[[str], Path], processes: list[subprocess.Popen[bytes]]
) -> None:
    """`use_v2_flow: true` in the runner-registration answer (CredentialManager.cs GitHubAuthResult):
    ConfigurationManager.cs then uses RunnerDotcomServer.cs's REST calls with `RemoteAuth <token>`,
    stores useRunnerAdminFlow/useV2Flow/serverUrlV2, and listens at serverUrlV2 (Runner.cs)."""
    double.runner_admin_flow = True
    runner_dir = install("admin")
    result = configure(double, runner_dir, "admin-1", "--labels", "gpu")
    assert result.returncode == 0, output(result)
    assert "\u221a Runner successfully added" in result.stdout and "Runner connection is good" not in result.stdout
    assert [(c["method"], c["path"], c["credential"]) for c in double.calls] == [
        ("POST", f"/api/v3/repos/{REPO}/actions/runners/registration-token", "pat"),
        ("POST", "/api/v3/actions/runner-registration", "registration-token"),
        ("GET", f"/api/v3/repos/{REPO}/actions/runner-groups", "registration-token"),
        ("GET", f"/api/v3/repos/{REPO}/actions/runners", "registration-token"),
        ("POST", "/api/v3/actions/runners/register", "registration-token"),
    ]
    settings = json.loads((runner_dir / ".runner").read_text(encoding="utf-8-sig"))
    assert settings["useV2Flow"] is True and settings["useRunnerAdminFlow"] is True
    assert settings["serverUrlV2"] and settings["serverUrlV2"] != settings["serverUrl"]
    (runner,) = runners(double, "admin-1")
    assert settings["agentId"] == runner["id"] and [lb["name"] for lb in runner["labels"]][-1] == "gpu"

    again = install("admin-again")
    replaced = configure(double, again, "admin-1", "--replace")
    assert replaced.returncode == 0 and "\u221a Successfully replaced the runner" in replaced.stdout
    assert [r["id"] for r in runners(double, "admin-1")] == [runner["id"]]

    before = len(double.calls)
    listener = subprocess.Popen(
        [*NOBODY, "./run.sh"],
        cwd=again,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin"},
    )
    processes.append(listener)
    wait_for(lambda: runners(double, "admin-1")[0]["status"] == "online", what="online through the broker URL")
    broker_path = urlsplit(settings["serverUrlV2"]).path
    assert any(c["path"].startswith(broker_path) for c in double.calls[before:])
    listener.send_signal(signal.SIGTERM)
    assert listener.wait(timeout=15) == 0

    removed = run_as_nobody(again, ["./config.sh", "remove"], {"ACTIONS_RUNNER_INPUT_PAT": PAT})
    assert removed.returncode == 0, output(removed)
    assert runners(double, "admin-1") == []
    deletes = [c for c in double.calls if c["method"] == "DELETE" and "/actions/runners/" in c["path"]]
    assert deletes and deletes[-1]["credential"] == "remove-token"
    assert not any(c["path"] == "/api/v3/actions/runner-registration" for c in double.calls[-3:])


SVC_SCRIPT = """set -u; exec 2>&1
mount -t tmpfs tmpfs /etc/systemd/system
unit=/etc/systemd/system/{unit}
step() {{ echo "== $1"; shift; "$@"; echo "rc=$?"; }}
step install-nobody ./svc.sh install nobody
cat "$unit"; echo "mode=$(stat -c %a "$unit") service=$(cat .service) runsvc=$(stat -c %U:%a runsvc.sh)"
step install-again ./svc.sh install nobody
step status ./svc.sh status
step uninstall ./svc.sh uninstall
test -e "$unit" || echo "unit gone"; test -e .service || echo ".service gone"
step status-missing ./svc.sh status
step install-nouser env -u SUDO_USER ./svc.sh install
grep '^User=' "$unit"
"""


@lab
def test_svc_sh_installs_the_template_and_behaves_as_the_original(unpacked: Path, tmp_path: Path) -> None:
    """src/Misc/layoutbin/systemd.svc.sh.template, run in a private mount namespace (a tmpfs over
    /etc/systemd/system) with a recording `systemctl` whose `status` answers 3 (inactive)."""
    standin = load_listener_module(unpacked)
    settings = {"serverUrl": "http://10.0.0.1/o-r", "gitHubUrl": "http://10.0.0.1/o/r", "agentName": "svc-1"}
    standin.generate_svc_sh(settings)
    unit = "actions.runner.o-r.svc-1.service"
    calls = tmp_path / "systemctl.calls"
    path = fake_tools(
        tmp_path / "bin",
        systemctl=f'echo "$@" >> {calls}; [ "$1" = --no-pager ] && exit 3; exit 0',
    )
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", SVC_SCRIPT.format(unit=unit)],
        cwd=unpacked,
        env={"PATH": path, "SUDO_USER": "nobody"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = result.stdout + result.stderr
    template = (STANDIN_DIR / "bin" / "actions.runner.service.template").read_text()
    expected = (
        template.replace("{{User}}", "nobody")
        .replace("{{Description}}", "GitHub Actions Runner (o-r.svc-1)")
        .replace("{{RunnerRoot}}", str(unpacked))
    )
    assert expected in out, out
    assert f"mode=664 service={unit} runsvc=nobody:755" in out
    assert "== install-again\nCreating launch runner in /etc/systemd/system/" in out
    assert f"Failed: error: exists /etc/systemd/system/{unit}\nrc=1" in out
    assert re.search(r"== status\n\n/etc/systemd/system/\S+\nrc=0", out), "an inactive unit's status still exits 0"
    assert "unit gone" in out and ".service gone" in out
    assert "== status-missing\n\nnot installed\n\nrc=1" in out
    assert "Run as uid: 0" in out and "\nUser=\n" in out, "no user: root's uid, an empty User="
    recorded = calls.read_text()
    assert f"enable {unit}" in recorded and f"disable {unit}" in recorded and f"stop {unit}" in recorded
    assert (Path("/etc/systemd/system") / unit).exists() is False, "nothing reached the real /etc"


def load_listener_module(root: Path) -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader("runner_standin_svc", str(root / "bin" / "Runner.Listener"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    module.ROOT = root
    return module
