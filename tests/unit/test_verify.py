"""`runner-fleet verify`: reading what a stack deployed, comparing hosts with it, and the CLI.

The state is the program's own commands (run under mocks with the completed production config)
in `pulumi stack export` shape, secrets as ciphertext. A host is a directory tree the real probe
script runs against under bash (its path, unit and HTTP look-ups pointed into the tree), holding
what a correct deploy writes; each test then changes one thing on it, as drift would.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import shell
from fleet import cli, verify
from fleet.github_api import ApiError, Runner
from tests.conftest import SENTINEL_KEY, SENTINEL_TOKEN, completed_stack_config, is_secret, run_program

STACK = "production"
SIG = "1b47061264138c4ac30d75fd1eb44270"


def _encrypt(value: Any) -> Any:
    if is_secret(value):
        return {verify.SECRET_SIG_KEY: SIG, "ciphertext": "v1:" + hashlib.sha256(repr(value).encode()).hexdigest()}
    if isinstance(value, dict):
        return {k: _encrypt(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encrypt(v) for v in value]
    return value


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return completed_stack_config(STACK)


@pytest.fixture(scope="module")
def export_text(config) -> str:
    run = run_program(config, STACK)
    resources = [
        {"urn": r.urn, "custom": True, "type": r.type, "inputs": _encrypt(r.inputs), "outputs": _encrypt(r.outputs)}
        for r in run.resources
    ]
    return json.dumps({"version": 3, "deployment": {"manifest": {}, "resources": resources}})


@pytest.fixture
def config_file(tmp_path, config) -> Path:
    plain = {f"runner-fleet:{k}": v for k, v in config.items() if k not in ("githubToken", "sshPrivateKey")}
    plain["runner-fleet:githubToken"] = {"secure": "v1:AAAA"}
    path = tmp_path / f"Pulumi.{STACK}.yaml"
    path.write_text(yaml.safe_dump({"config": plain}))
    return path


# --- a fake fleet: host trees the real probe runs against ------------------------------------------

OVERRIDES = r"""
eval "$(declare -f h | sed '1s/^h /_h /')"; h() { _h "$ROOT/$1"; }
eval "$(declare -f x | sed '1s/^x /_x /')"; x() { _x "$ROOT/$1"; }
eval "$(declare -f c | sed '1s/^c /_c /')"; c() { _c "$ROOT/$1" "$2"; }
u() { cat "$ROOT/.units/$1" 2>/dev/null || echo "not-found inactive"; }
curl() {
  local url=${*: -1}; local port=${url#http://127.0.0.1:}; port=${port%%/*}
  if [ -f "$ROOT/.listening/$port" ]; then printf 200; else printf 000; fi
}
"""


class Fleet:
    """Hosts as directory trees with what a correct deploy put there, and GitHub's runners."""

    def __init__(self, tmp: Path, deployed: list[verify.Deployed], endpoints: dict[str, verify.Endpoint]):
        self.tmp = tmp
        self.roots = {e.name: tmp / "hosts" / e.name.replace(" ", "_") for e in endpoints.values()}
        self.unreachable: set[str] = set()
        self.runners: dict[tuple[str, str], list[Runner]] = {}
        self.github_down = False
        self.tarballs: dict[tuple[str, str], Path] = {}
        self.fetched: list[str] = []
        for d in deployed:
            root = self.roots[endpoints[d.identity].name]
            for check in verify.host_checks(d):
                self._deploy(root, check)
            reg = verify.registration_check(d, endpoints[d.identity].arch)
            if reg:
                runner = Runner(len(self.runners) + 1, reg.name, "online", False, reg.labels)
                self.runners.setdefault((reg.api_url, reg.scope_path), []).append(runner)

    def _deploy(self, root: Path, check: verify.Check) -> None:
        if isinstance(check, verify.FileCheck):
            pass  # content written by write_files() below (the check holds only its hash)
        elif isinstance(check, verify.UnitCheck):
            self.write(root, f".units/{check.unit}", "enabled active")
        elif isinstance(check, verify.ExporterCheck):
            self.write(root, f".listening/{check.port}", "")
        elif isinstance(check, verify.ContainsCheck):
            self.write(root, check.path, "scrape_configs:\n  - job_name: github-runner-health\n")
        elif isinstance(check, verify.ReleaseCheck):
            tarball = self.tarball(check)
            with tarfile.open(tarball) as tar:
                for member in tar:
                    if member.isfile():
                        rel = "/".join(member.name.split("/")[check.strip :])
                        handle = tar.extractfile(member)
                        assert handle is not None
                        self.write(root, f"{check.root}/{rel}", handle.read().decode())

    def tarball(self, check: verify.ReleaseCheck) -> Path:
        key = (check.url, check.sha256)
        if key not in self.tarballs:
            path = self.tmp / f"release-{len(self.tarballs)}.tar.gz"
            top = "node_exporter-1.0.linux-amd64/" if check.strip else ""
            files = (
                {"node_exporter": "#!exporter\n"}
                if check.strip
                else {
                    "bin/Runner.Listener": "listener binary\n",
                    "bin/Runner.Worker": "worker binary\n",
                    "config.sh": "#!/bin/bash\n",
                }
            )
            with tarfile.open(path, "w:gz") as tar:
                for name, text in files.items():
                    data = text.encode()
                    info = tarfile.TarInfo(top + name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            self.tarballs[key] = path
        return self.tarballs[key]

    @staticmethod
    def write(root: Path, rel: str, text: str) -> None:
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def path(self, host: str, absolute: str) -> Path:
        return self.roots[host] / absolute.lstrip("/")

    # the injected sides of verify()
    def ssh(self, endpoint: verify.Endpoint, script: str) -> str:
        if endpoint.name in self.unreachable:
            raise verify.Unreachable(f"{endpoint.address}:{endpoint.port}: Connection refused")
        assert script.startswith(verify.PROBE_PRELUDE)
        script = verify.PROBE_PRELUDE + OVERRIDES + script[len(verify.PROBE_PRELUDE) :]
        root = self.roots[endpoint.name]
        root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["bash", "-s"],
            input=script,
            capture_output=True,
            text=True,
            env={"ROOT": str(root), "PATH": "/usr/bin:/bin"},
            check=True,
        )
        return done.stdout

    def list_runners(self, api_url: str, scope_path: str) -> list[Runner]:
        if self.github_down:
            raise ApiError(0, f"cannot reach {api_url}: Connection refused", "GET", scope_path)
        return list(self.runners.get((api_url, scope_path), []))

    def fetch(self, url: str, sha256: str) -> Path:
        self.fetched.append(url)
        return next(p for (u, s), p in self.tarballs.items() if u == url and s == sha256)


def write_files(fleet: Fleet, deployed: list[verify.Deployed], endpoints: dict[str, verify.Endpoint]) -> None:
    """The files whose content comes from command inputs, as write_if_changed writes them."""
    pairs = {
        "exporter-install.create.sh": [("{UNIT_DIR}/{UNIT}", "UNIT_CONTENT")],
        "exporter-runner-metrics.create.sh": [
            ("{COLLECTOR_PATH}", "COLLECTOR"),
            ("{UNIT_DIR}/{SERVICE_UNIT}", "SERVICE_CONTENT"),
            ("{UNIT_DIR}/{TIMER_UNIT}", "TIMER_CONTENT"),
        ],
        "runner-service.create.sh": [("{METRICS_CONF}", "METRICS_CONF_CONTENT")],
        "prometheus-target-file.create.sh": [("{TARGETS_DIR}/{TARGET_FILE}", "TARGETS_JSON")],
        "prometheus-scrape-job.create.sh": [("{RULES_FILE}", "RULES")],
    }
    for d in deployed:
        for path, key in pairs.get(d.script, []):
            fleet.write(fleet.roots[endpoints[d.identity].name], path.format(**d.inputs), d.inputs[key] + "\n")


@pytest.fixture
def world(tmp_path, export_text, config_file):
    deployed = verify.read_export(export_text)
    endpoints = verify.read_endpoints(config_file)
    fleet = Fleet(tmp_path, deployed, endpoints)
    write_files(fleet, deployed, endpoints)
    return fleet, deployed, endpoints


def run(world) -> verify.Report:
    fleet, deployed, endpoints = world
    return verify.verify(STACK, deployed, endpoints, ssh=fleet.ssh, runners=fleet.list_runners, fetch=fleet.fetch)


def only(report: verify.Report) -> verify.Difference:
    assert len(report.differences) == 1, report.differences
    return report.differences[0]


PRIMARY = "Serotonin-paws360"
SECONDARY = "dell-r640-01-runner"
EXPORTER_UNIT = f"/etc/systemd/system/runner-fleet-{STACK}-node-exporter.service"


# --- reading the state -------------------------------------------------------------------------------


def test_command_inputs_read_back_exactly_as_rendered():
    values = {"A": "plain", "B": "two\nlines 'quoted' \"double\" $HOME `x`", "C": "", "D": True}
    text = shell.command("runner-service.create.sh", values)
    script, inputs = verify.parse_command(text)
    assert script == "runner-service.create.sh"
    assert inputs == {"A": "plain", "B": values["B"], "C": "", "D": "true"}
    assert verify.parse_command("echo hello") is None
    assert verify.parse_command({"ciphertext": "x"}) is None


def test_export_yields_every_fleet_command_with_its_host(export_text, config_file):
    deployed = verify.read_export(export_text)
    scripts = sorted({d.script for d in deployed})
    assert "runner-install.create.sh" in scripts and "prometheus-target-file.create.sh" in scripts
    endpoints = verify.read_endpoints(config_file)
    assert {d.identity for d in deployed} <= set(endpoints)
    assert {endpoints[d.identity].name for d in deployed} == {PRIMARY, SECONDARY, "monitoring host 192.168.0.200"}


def test_export_that_is_not_one_is_a_usage_error():
    with pytest.raises(verify.VerifyError, match="pulumi stack export"):
        verify.read_export("not json")
    with pytest.raises(verify.VerifyError, match="no deployment"):
        verify.read_export('{"version": 3}')


def test_a_host_the_config_no_longer_lists_is_a_usage_error(tmp_path, export_text, config):
    plain = {f"runner-fleet:{k}": v for k, v in config.items() if k not in ("githubToken", "sshPrivateKey")}
    plain["runner-fleet:hosts"] = plain["runner-fleet:hosts"][:1]
    path = tmp_path / "Pulumi.production.yaml"
    path.write_text(yaml.safe_dump({"config": plain}))
    with pytest.raises(verify.VerifyError, match="does not list"):
        verify.verify(
            STACK,
            verify.read_export(export_text),
            verify.read_endpoints(path),
            ssh=lambda *a: "",
            runners=None,
            fetch=lambda *a: Path(),
        )


# --- comparing ---------------------------------------------------------------------------------------


def test_clean_fleet_is_in_sync(world):
    report = run(world)
    assert report.differences == [] and report.unchecked == []
    assert report.exit_code == 0
    assert report.checked > 20
    assert sorted(report.hosts) == sorted([PRIMARY, SECONDARY, "monitoring host 192.168.0.200"])


def test_trailing_newlines_are_not_drift(world):
    fleet = world[0]
    path = fleet.path(PRIMARY, EXPORTER_UNIT)
    path.write_text(path.read_text() + "\n\n")
    assert run(world).exit_code == 0


def test_edited_unit_is_reported_with_both_hashes(world):
    fleet = world[0]
    path = fleet.path(PRIMARY, EXPORTER_UNIT)
    before = path.read_text()
    path.write_text(before.replace("ExecStart=", "ExecStart=/bin/true #"))
    report = run(world)
    d = only(report)
    assert (d.host, d.object) == (PRIMARY, f"unit {EXPORTER_UNIT}")
    assert d.expected == f"sha256 {verify.content_sha256(before)}"
    assert d.found == f"sha256 {verify.content_sha256(path.read_text())}"
    assert report.exit_code == 1


def test_stopped_service_is_reported(world):
    fleet = world[0]
    unit = "actions.runner.rmnanney-PAWS360.dell-r640-01-runner.service"
    fleet.path(SECONDARY, f".units/{unit}").write_text("enabled inactive")
    d = only(run(world))
    assert (d.host, d.object, d.expected, d.found) == (
        SECONDARY,
        f"service {unit}",
        "enabled and active",
        "enabled, inactive",
    )


def test_deleted_target_file_is_reported(world):
    fleet = world[0]
    monitor = "monitoring host 192.168.0.200"
    target = f"/etc/prometheus/runner-fleet/runner-fleet-{STACK}.json"
    fleet.path(monitor, target).unlink()
    d = only(run(world))
    assert (d.host, d.object, d.found) == (monitor, f"target file {target}", "missing")


def test_edited_alert_rules_are_reported(world):
    fleet, deployed, _ = world
    (job,) = [d for d in deployed if d.script == "prometheus-scrape-job.create.sh"]
    rules = job.inputs["RULES_FILE"]
    path = fleet.path("monitoring host 192.168.0.200", rules)
    path.write_text(path.read_text().replace("for:", "for: 1h #", 1))
    d = only(run(world))
    assert (d.object, d.found) == (f"rules file {rules}", f"sha256 {verify.content_sha256(path.read_text())}")


def test_replaced_runner_binary_is_reported(world):
    fleet = world[0]
    listener = f"/opt/runner-fleet/{STACK}/runners/{PRIMARY}/bin/Runner.Listener"
    path = fleet.path(PRIMARY, listener)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    with path.open("ab") as handle:
        handle.write(b"\0")
    d = only(run(world))
    assert (d.host, d.object) == (PRIMARY, f"runner {PRIMARY} file {listener}")
    assert d.resource.endswith(f"::{PRIMARY}-install")
    assert d.expected == f"sha256 {expected}"
    assert d.found == f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}"


def test_removed_runner_file_and_dead_exporter_are_reported(world):
    fleet = world[0]
    fleet.path(SECONDARY, f"/opt/runner-fleet/{STACK}/runners/{SECONDARY}/bin/Runner.Worker").unlink()
    fleet.path(SECONDARY, ".listening/9101").unlink()
    found = {(d.object, d.found) for d in run(world).differences}
    assert found == {
        (f"runner {SECONDARY} file /opt/runner-fleet/{STACK}/runners/{SECONDARY}/bin/Runner.Worker", "missing"),
        ("exporter :9101/metrics", "no answer"),
    }


def test_labels_and_status_on_github_are_reported(world):
    fleet = world[0]
    (scope,) = fleet.runners
    runners = fleet.runners[scope]
    primary = next(r for r in runners if r.name == PRIMARY)
    secondary = next(r for r in runners if r.name == SECONDARY)
    fleet.runners[scope] = [
        Runner(primary.id, primary.name, "online", False, (*primary.labels, "gpu")),
        Runner(secondary.id, secondary.name, "offline", False, secondary.labels),
    ]
    diffs = {(d.host, d.object): (d.expected, d.found) for d in run(world).differences}
    assert diffs[(PRIMARY, f"runner {PRIMARY} on GitHub: labels")] == (
        "Linux,primary,production,self-hosted,X64",
        "gpu,Linux,primary,production,self-hosted,X64",
    )
    assert diffs[(SECONDARY, f"runner {SECONDARY} on GitHub: status")] == ("online", "offline")
    assert len(diffs) == 2
    fleet.runners[scope] = [secondary]
    d = only(run(world))
    assert (d.object, d.found) == (f"runner {PRIMARY} on GitHub", "not registered")
    assert d.resource.endswith(f"::{PRIMARY}-registration")


def test_unreachable_host_is_not_checked_and_exit_3(world):
    fleet = world[0]
    fleet.unreachable.add(SECONDARY)
    report = run(world)
    assert report.differences == []
    assert [(u.host, u.object) for u in report.unchecked] == [(SECONDARY, "host")]
    assert "Connection refused" in report.unchecked[0].reason
    assert report.exit_code == 3


def test_unreachable_github_is_exit_3_and_drift_elsewhere_still_listed(world):
    fleet = world[0]
    fleet.github_down = True
    fleet.path(PRIMARY, EXPORTER_UNIT).unlink()
    report = run(world)
    assert [d.object for d in report.differences] == [f"unit {EXPORTER_UNIT}"]
    assert {u.object for u in report.unchecked} == {f"runner {PRIMARY} on GitHub", f"runner {SECONDARY} on GitHub"}
    assert report.exit_code == 3


def test_each_release_is_read_once(world):
    fleet = world[0]
    run(world)
    assert len(fleet.fetched) == len(set(fleet.fetched)) == 2


# --- release tarballs ----------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_fetch_release_checks_the_pin_and_caches(tmp_path, served):
    url, root = served
    (root / "r.tar.gz").write_bytes(b"release bytes")
    sha = hashlib.sha256(b"release bytes").hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="pinned"):
        verify.fetch_release(f"{url}/r.tar.gz", "0" * 64, cache)
    assert list(cache.iterdir()) == []
    path = verify.fetch_release(f"{url}/r.tar.gz", sha, cache)
    assert path.read_bytes() == b"release bytes"
    (root / "r.tar.gz").unlink()
    assert verify.fetch_release(f"{url}/r.tar.gz", sha, cache) == path


def test_release_files_strip_and_only(tmp_path):
    path = tmp_path / "t.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("top/node_exporter", "top/LICENSE", "../evil"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    sha = hashlib.sha256(b"x").hexdigest()
    assert verify.release_files(path, 1, ("node_exporter",)) == {"node_exporter": sha}
    assert verify.release_files(path) == {"top/LICENSE": sha, "top/node_exporter": sha}


# --- the command line ------------------------------------------------------------------------------------


def cli_run(argv: list[str], stdin: str = "", monkeypatch=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv, stdin=io.StringIO(stdin))
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def key_file(tmp_path) -> Path:
    import paramiko

    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    assert paramiko.PKey.from_path(path)
    return path


@pytest.fixture
def wired(world, monkeypatch, tmp_path, export_text):
    """The CLI with the fake fleet behind its SSH, GitHub and download sides."""
    fleet = world[0]
    monkeypatch.setattr(verify, "ssh_run", lambda endpoint, key, script, timeout: fleet.ssh(endpoint, script))
    monkeypatch.setattr(verify, "github_runners", lambda token, log: fleet.list_runners)
    monkeypatch.setattr(verify, "fetch_release", lambda url, sha, cache: fleet.fetch(url, sha))
    monkeypatch.setenv(cli.TOKEN_ENV, SENTINEL_TOKEN)
    state = tmp_path / "state.json"
    state.write_text(export_text)
    return fleet, state


def test_help_documents_exit_codes():
    code, out, _ = cli_run(["verify", "--help"])
    assert code == 0
    for line in ("0  in sync", "1  drifted", "2  usage", "3  not fully checked", "pulumi stack export"):
        assert line in out


def test_cli_in_sync_and_drifted_with_json(wired, config_file, key_file):
    fleet, state = wired
    base = ["verify", "--stack", STACK, "--config-file", str(config_file), "--ssh-key", str(key_file)]
    code, out, err = cli_run([*base, "--state", "-"], stdin=state.read_text())
    assert code == 0, err
    assert out.startswith(f"stack {STACK}: in sync")
    assert "checking Serotonin-paws360" in err
    fleet.path(PRIMARY, EXPORTER_UNIT).write_text("tampered\n")
    code, out, err = cli_run([*base, "--state", str(state), "--json"])
    assert code == 1
    document = json.loads(out)
    assert document["status"] == "drifted" and document["exit_code"] == 1
    assert document["differences"] == [
        {
            "host": PRIMARY,
            "object": f"unit {EXPORTER_UNIT}",
            "expected": document["differences"][0]["expected"],
            "found": f"sha256 {verify.content_sha256('tampered')}",
            "resource": document["differences"][0]["resource"],
        }
    ]
    assert document["differences"][0]["resource"].endswith(f"::{PRIMARY}-exporter-install")
    for text in (out, err):
        assert SENTINEL_TOKEN not in text and SENTINEL_KEY not in text
        assert key_file.read_text().splitlines()[1] not in text


def test_cli_unreachable_is_3(wired, config_file, key_file):
    fleet, state = wired
    fleet.unreachable.add(PRIMARY)
    code, out, _ = cli_run(
        [
            "verify",
            "--stack",
            STACK,
            "--config-file",
            str(config_file),
            "--ssh-key",
            str(key_file),
            "--state",
            str(state),
        ]
    )
    assert code == 3
    assert f"UNCHECKED  {PRIMARY}  host:" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ssh_key": "missing"}, "no such file"),
        ({"state": "missing"}, "cannot read the state"),
        ({"token": None}, "no GitHub credential"),
        ({"state_text": '{"version": 3}'}, "no deployment"),
        ({"both_stdin": True}, "cannot both read stdin"),
        ({"config": "missing"}, "cannot read"),
    ],
)
def test_cli_usage_errors_are_2(wired, config_file, key_file, monkeypatch, tmp_path, change, message):
    _, state = wired
    if change.get("token", "keep") is None:
        monkeypatch.delenv(cli.TOKEN_ENV)
    if "state_text" in change:
        state.write_text(change["state_text"])
    argv = [
        "verify",
        "--stack",
        STACK,
        "--config-file",
        str(tmp_path / "nope.yaml") if change.get("config") else str(config_file),
        "--ssh-key",
        str(tmp_path / "nope") if change.get("ssh_key") else str(key_file),
        "--state",
        "-" if change.get("both_stdin") else str(tmp_path / "nope.json") if change.get("state") else str(state),
    ]
    if change.get("both_stdin"):
        argv += ["--token-file", "-"]
    code, out, err = cli_run(argv)
    assert code == 2
    assert message in err
    assert SENTINEL_TOKEN not in out + err


def test_credential_on_the_command_line_is_refused_unechoed():
    code, out, err = cli_run(["verify", "--stack", STACK, "--state", "-", "--ssh-key", "k", SENTINEL_TOKEN])
    assert code == 2
    assert SENTINEL_TOKEN not in out + err


# --- the lab executor's export -------------------------------------------------------------------------


def test_executor_export_is_what_verify_reads_with_secrets_encrypted(tmp_path):
    from lab.executor.engine import Entry, Secret, StateStore
    from lab.executor.export import export_document

    create = shell.command("runner-service.create.sh", {"RUNNER_NAME": "r1", "UNIT": "u.service"})
    entry = Entry(
        urn="urn:pulumi:lab::runner-fleet::command:remote:Command::r1-service",
        type=verify.COMMAND_TYPE,
        custom=True,
        id="r1-service",
        parent=None,
        dependencies=[],
        property_dependencies={},
        provider=None,
        protect=False,
        delete_before_replace=False,
        retain_on_delete=False,
        ignore_changes=[],
        additional_secret_outputs=[],
        replace_on_changes=[],
        inputs={
            "create": create,
            "triggers": ["deploy@10.249.31.2:22"],
            "connection": Secret({"host": "10.249.31.2", "privateKey": SENTINEL_KEY}),
        },
        outputs={"stdout": "ok"},
    )
    state = tmp_path / "state-lab.json"
    StateStore(state).save("runner-fleet", "lab", [entry], {"runners": Secret({"token": SENTINEL_TOKEN})})
    document = export_document(state)
    text = json.dumps(document)
    assert SENTINEL_KEY.splitlines()[1] not in text and SENTINEL_TOKEN not in text
    stack, command = document["deployment"]["resources"]
    assert stack["type"] == "pulumi:pulumi:Stack" and verify.is_secret(stack["outputs"]["runners"])
    assert verify.is_secret(command["inputs"]["connection"]) and "protect" not in command
    (deployed,) = verify.read_export(text)
    assert (deployed.identity, deployed.script, deployed.inputs["UNIT"]) == (
        "deploy@10.249.31.2:22",
        "runner-service.create.sh",
        "u.service",
    )
