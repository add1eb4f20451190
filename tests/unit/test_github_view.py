"""The GitHub-view collector (components/host_files/github-view.py) run in-process against the
GitHub double with a read-only token and against a tiny local server for what the double does
not do (5xx, a failing second page); its exposition checked by promtool; the component's
rendered command, unit, config and target group; the program with and without
runner-fleet:githubViewToken; the token only on stdin."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from components import layout, shell
from components.github_view import GitHubView, GitHubViewArgs, config_json, target_json, unit_content
from components.remote import Endpoint, Machine
from lab.github_double import GitHubDouble
from tests.conftest import (
    SECRET_KEYS,
    SENTINEL_TOKEN,
    completed_stack_config,
    fake_host_key,
    inner_script,
    needs,
    needs_root,
    plain_parts,
    run_program,
    run_under_mocks,
    unwrap,
)

COLLECTOR = Path(shell.HOST_FILES_DIR / "github-view.py")
VIEW_TOKEN = "github_pat_VIEWtoken0123456789abcdefVIEWtoken"
REPO = "lab-owner/fleet"


def load_collector() -> Any:
    spec = importlib.util.spec_from_file_location("github_view_collector", COLLECTOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gv = load_collector()


@pytest.fixture
def double():
    d = GitHubDouble(read_pats=[VIEW_TOKEN], pats=["ghp_ADMINtoken0123456789abcdefADMIN"], repos=[REPO]).start()
    yield d
    d.stop()


def collector(api_url: str, runners=("declared-0", "declared-1", "gone"), versions=("2.330.0",), **extra) -> Any:
    config = {
        "stack": "lab",
        "api_url": api_url,
        "scope_path": f"repos/{REPO}",
        "runners": list(runners),
        "versions": list(versions),
        "interval": 30,
        "listen_port": 0,
        "declared_glob": "",
        **extra,
    }
    return gv.Collector(config, VIEW_TOKEN)


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_lists_every_page_and_exports_the_contract(double, tmp_path):
    # 250 registrations in the scope (three pages of 100); two of them declared, one declared
    # runner GitHub does not have, and one registration another stack on this host declares.
    for i in range(248):
        double.add_runner(f"undeclared-{i:03d}", repo=REPO, labels=["zeta", "alpha"])
    double.add_runner("declared-0", repo=REPO, labels=["production", "primary"])
    double.add_runner("declared-1", repo=REPO)
    other = tmp_path / "other" / "github-view" / "config.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"runners": [f"undeclared-{i:03d}" for i in range(200)]}))
    double.add_release("2.330.0", published_at=1_750_000_000)
    double.add_release("2.331.0", published_at=1_760_000_000)
    double.add_release("2.332.0", published_at=1_770_000_000)
    double.add_release("2.333.0-rc1", published_at=1_780_000_000, prerelease=True)
    c = collector(double.api_url, declared_glob=str(tmp_path / "*" / "github-view" / "config.json"))
    c.config_path = str(tmp_path / "own.json")

    assert c.poll() == 30
    listing_calls = [x for x in double.calls if x["path"].endswith("/actions/runners")]
    assert [x["query"]["page"] for x in listing_calls] == ["1", "2", "3"]
    assert {x["query"]["per_page"] for x in listing_calls} == {"100"}
    assert {x["credential"] for x in double.calls} == {"read-pat"}
    text = c.metrics()
    m = samples(text)
    assert m['github_runner_github_registered{runner="declared-0"}'] == 1
    assert m['github_runner_github_registered{runner="gone"}'] == 0
    assert m['github_runner_github_online{runner="gone"}'] == 0
    assert m['github_runner_github_online{runner="declared-0"}'] == 0, "never connected: offline"
    rid = double.runner("declared-0")["id"]
    labels = "Linux,X64,primary,production,self-hosted"
    info = f'github_runner_github_info{{runner="declared-0",id="{rid}",os="linux",labels="{labels}",version=""}}'
    assert m[info] == 1
    orphans = sorted(k for k in m if k.startswith("github_runner_github_orphan{"))
    assert len(orphans) == 48 and all("undeclared-2" in k for k in orphans), "the other stack's 200 are declared"
    assert m["github_runner_github_last_success_timestamp_seconds"] == pytest.approx(time.time(), abs=5)
    assert m['github_runner_latest_release_info{version="2.332.0"}'] == 1, "a prerelease is not the newest"
    assert m["github_runner_latest_release_timestamp_seconds"] == 1_770_000_000
    assert m['github_runner_version_behind_releases{version="2.330.0"}'] == 2
    assert m['github_runner_version_update_available_timestamp_seconds{version="2.330.0"}'] == 1_760_000_000
    assert m["github_runner_github_rate_limit_limit"] == 5000
    assert m["github_runner_github_rate_limit_remaining"] == 5000 - 4
    assert m["github_runner_github_rate_limit_reset_timestamp_seconds"] > time.time()
    assert all(m[f'github_runner_github_errors_total{{reason="{r}"}}'] == 0 for r in gv.REASONS)
    assert VIEW_TOKEN not in text

    # GitHub's view changes: a runner comes online and busy (a stand-in session), one is gone.
    with double._lock:
        r = next(x for x in double._runners.values() if x.name == "declared-1")
        r.session_id, r.active_polls, r.busy = "s", 1, True
    double.add_release("2.333.0", published_at=1_790_000_000)
    c.versions = ["2.330.0", "2.333.0"]
    c.poll()
    m = samples(c.metrics())
    assert m['github_runner_github_online{runner="declared-1"}'] == 1
    assert m['github_runner_github_busy{runner="declared-1"}'] == 1
    assert m['github_runner_version_behind_releases{version="2.333.0"}'] == 0
    assert 'github_runner_version_update_available_timestamp_seconds{version="2.333.0"}' not in m
    assert m['github_runner_version_behind_releases{version="2.330.0"}'] == 3


@needs("promtool")
def test_exposition_passes_promtool(double):
    double.add_runner("declared-0", repo=REPO, labels=['we"ird\\label'])
    double.add_runner("orphan", repo=REPO)
    double.add_release("2.330.0", published_at=1_750_000_000)
    c = collector(double.api_url)
    before = c.metrics()
    c.poll()
    for text in (before, c.metrics()):
        result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    assert 'labels="Linux,X64,self-hosted,we\\"ird\\\\label"' in c.metrics()
    assert "github_runner_github_online" not in before, "no runner family before the first complete listing"
    assert "github_runner_github_last_success_timestamp_seconds 0\n" in before


def test_rate_limits_back_off_and_keep_the_last_listing(double):
    double.add_runner("declared-0", repo=REPO)
    c = collector(double.api_url)
    c.poll()
    listed = c.metrics()
    stamp = samples(listed)["github_runner_github_last_success_timestamp_seconds"]

    double.rate_limit(120)  # primary: 403, X-RateLimit-Remaining: 0, reset in 120 s
    wait = c.poll()
    assert 115 <= wait <= 125, "waits until X-RateLimit-Reset"
    m = samples(c.metrics())
    assert m['github_runner_github_errors_total{reason="rate_limited"}'] == 1
    assert m["github_runner_github_rate_limit_remaining"] == 0
    assert m["github_runner_github_last_success_timestamp_seconds"] == stamp
    assert m['github_runner_github_registered{runner="declared-0"}'] == 1, "the last listing is still served"

    double.rate_limit(400, "secondary")  # 429 with Retry-After
    assert 395 <= c.poll() <= 401, "waits Retry-After"
    assert samples(c.metrics())['github_runner_github_errors_total{reason="rate_limited"}'] == 2
    double.rate_limit(0)
    assert c.poll() == 30
    assert samples(c.metrics())["github_runner_github_last_success_timestamp_seconds"] > stamp


def test_an_admin_call_with_the_view_token_is_refused(double):
    """The double enforces what GitHub does for a read-only token: it lists, it cannot administer."""
    c = collector(double.api_url)
    for path in (f"repos/{REPO}/actions/runners/registration-token", f"repos/{REPO}/actions/runners/remove-token"):
        request = gv.urllib.request.Request(f"{double.api_url}/{path}", method="POST", data=b"{}")
        request.add_header("Authorization", f"Bearer {VIEW_TOKEN}")
        with pytest.raises(gv.urllib.error.HTTPError) as e:
            gv.urllib.request.urlopen(request, timeout=5)
        assert e.value.code == 403
    assert c.poll() == 30


class _Scripted(BaseHTTPRequestHandler):
    """Answers from a list the test sets: (status, headers, body) per request."""

    answers: list[tuple[int, dict[str, str], Any]] = []

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        status, headers, body = self.answers.pop(0) if self.answers else (500, {}, {"message": "no answer left"})
        payload = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Scripted.answers = []
    yield f"http://127.0.0.1:{server.server_address[1]}", _Scripted.answers
    server.shutdown()


def runner(i: int, name: str | None = None) -> dict[str, Any]:
    return {"id": i, "name": name or f"r{i}", "os": "Linux", "status": "online", "busy": False, "labels": []}


def test_errors_by_reason_backoff_and_no_partial_listing(scripted):
    url, answers = scripted
    c = collector(url, runners=("declared-0",))
    page1 = {"total_count": 150, "runners": [runner(i) for i in range(99)] + [runner(99, "declared-0")]}
    answers += [(200, {}, page1), (502, {}, {"message": "Bad Gateway"})]
    assert c.poll() == 30, "first failure: retry at the next poll"
    m = samples(c.metrics())
    assert m['github_runner_github_errors_total{reason="http_5xx"}'] == 1
    assert "github_runner_github_online" not in c.metrics(), "page 1 alone is no listing"
    assert m["github_runner_github_last_success_timestamp_seconds"] == 0

    answers += [(401, {}, {"message": "Bad credentials"})]
    assert c.poll() == 60, "doubling"
    answers += [(403, {}, {"message": "Resource not accessible by personal access token"})]
    assert c.poll() == 120, "a 403 without a rate-limit signal is no rate limit"
    assert samples(c.metrics())['github_runner_github_errors_total{reason="http_4xx"}'] == 2
    answers += [(403, {}, {"message": "You have exceeded a secondary rate limit."})]
    assert c.poll() == 60, "rate limit named, no header: a minute"
    for _ in range(5):
        answers += [(500, {}, {})]
        c.poll()
    assert c.poll() == 300, "capped at 5 minutes"

    page2 = {"total_count": 150, "runners": [runner(i) for i in range(100, 150)]}
    answers += [(200, {"X-RateLimit-Remaining": "4000"}, page1), (200, {}, page2), (404, {}, {"message": "Not Found"})]
    assert c.poll() == 30, "a listing without releases (a GHES without actions/runner) still counts"
    m = samples(c.metrics())
    assert m['github_runner_github_online{runner="declared-0"}'] == 1
    assert len([k for k in m if k.startswith("github_runner_github_orphan")]) == 149
    assert "github_runner_latest_release_info" not in c.metrics()

    network = collector("http://127.0.0.1:9")  # nothing listens on the discard port
    network.poll()
    assert samples(network.metrics())['github_runner_github_errors_total{reason="network"}'] == 1


def test_serves_metrics_over_http(double):
    double.add_runner("declared-0", repo=REPO)
    c = collector(double.api_url)
    c.poll()
    server = gv.serve(c, "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        with gv.urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert 'github_runner_github_registered{runner="declared-0"} 1' in response.read().decode()
    finally:
        server.shutdown()


def test_the_credential_is_read_from_the_systemd_credential_directory(tmp_path, monkeypatch):
    (tmp_path / "token").write_text(VIEW_TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert gv.read_token({"token_file": "/nonexistent"}) == VIEW_TOKEN
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert gv.read_token({"token_file": str(tmp_path / "token")}) == VIEW_TOKEN
    assert gv.version_key("2.330.0") > gv.version_key("2.99.0")


# --- the component and the program ---------------------------------------------------------

ARGS = GitHubViewArgs(
    stack="production",
    api_url="https://api.github.com",
    scope_path="repos/o/r",
    runners=("b", "a"),
    versions=("2.330.0",),
    credential=VIEW_TOKEN,
    port=9469,
    targets_dir="/etc/prometheus/runner-fleet",
    host="10.0.0.9",
)


def test_unit_config_and_target_group():
    unit = unit_content("production")
    assert "LoadCredential=token:/etc/runner-fleet/production/github-view/token" in unit
    assert "DynamicUser=yes" in unit and "CapabilityBoundingSet=\n" in unit
    assert "ExecStart=/usr/bin/python3 -I -B /opt/runner-fleet/production/bin/github-view " in unit
    assert "Environment" not in unit
    config = json.loads(config_json(ARGS))
    assert config["runners"] == ["a", "b"] and config["interval"] == 30 and config["listen_address"] == "127.0.0.1"
    assert VIEW_TOKEN not in config_json(ARGS)
    [group] = json.loads(target_json(ARGS))
    assert group == {
        "targets": ["127.0.0.1:9469"],
        "labels": {
            "job": "github-runner-github",
            "environment": "production",
            "role": "github-view",
            "host": "10.0.0.9",
        },
    }
    assert layout.github_view_target_file("production").endswith(".github-view.json")
    assert layout.github_view_target_file("production") != layout.target_file("production-github-view")


def test_component_sends_the_token_on_stdin_only():
    machine = Machine(Endpoint("10.0.0.9", 22, "root", fake_host_key("m")), "KEY")

    def program() -> None:
        GitHubView("github-view", ARGS, machine=machine)

    run = run_under_mocks(program)
    [command] = run.commands()
    assert command.name == "github-view-collector"
    assert unwrap(command.inputs["stdin"]) == VIEW_TOKEN
    assert {"stdout", "stderr"} <= set(command.additional_secret_outputs)
    for key in ("create", "delete"):
        assert VIEW_TOKEN not in command.inputs[key]
    assert "github-view-collector.delete.sh" in command.inputs["delete"]
    script = inner_script(command.inputs["create"])
    assert "TOKEN_FILE=/etc/runner-fleet/production/github-view/token" in script
    assert "read_secret" in script


def _with_view(stack: str, **prometheus: Any) -> dict[str, Any]:
    config = completed_stack_config(stack)
    config["githubViewToken"] = VIEW_TOKEN
    config["prometheus"] = {**config["prometheus"], **prometheus}
    return config


def test_program_deploys_the_collector_only_with_a_view_token():
    keys = [*SECRET_KEYS, "runner-fleet:githubViewToken"]
    run = run_program(_with_view("production", githubViewPort=9470), "production", secret_keys=keys)
    command = run.by_name("github-view-collector")
    assert run.by_name("github-view").type == "fleet:monitoring:GitHubView"
    assert unwrap(command.inputs["stdin"]) == VIEW_TOKEN
    assert VIEW_TOKEN not in json.dumps(plain_parts(command.inputs))
    assert VIEW_TOKEN not in json.dumps(plain_parts(run.outputs))
    scrape_job = run.by_name("prometheus-scrape-job")
    assert scrape_job.urn in command.dependencies
    script = inner_script(command.inputs["create"])
    assert "127.0.0.1:9470" in script and "repos/" in script
    assert run.outputs["githubView"]["unit"] == "runner-fleet-production-github-view.service"
    assert SENTINEL_TOKEN not in command.inputs["create"]

    without = run_program(completed_stack_config("production"), "production")
    assert not [r for r in without.resources if r.name.startswith("github-view")]
    assert "githubView" not in without.outputs


VIEW_KEYS = [*SECRET_KEYS, "runner-fleet:githubViewToken"]


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("null", "too short to be a GitHub token"),
        (VIEW_TOKEN + "\n", "without whitespace or control characters"),
        (SENTINEL_TOKEN, "is the same credential as githubToken"),
    ],
)
def test_a_bad_view_token_is_refused_naming_its_key_and_never_its_value(token, fragment):
    from fleet.config import ConfigError

    config = _with_view("production")
    config["githubViewToken"] = token
    with pytest.raises(ConfigError) as caught:
        run_program(config, "production", secret_keys=VIEW_KEYS)
    message = str(caught.value)
    assert any(
        line.strip().startswith("runner-fleet:githubViewToken: ") and fragment in line for line in message.splitlines()
    ), message
    assert token.strip() not in message


def test_the_collector_runs_as_its_unit_runs_it(double, tmp_path):
    """`python3 -I -B github-view CONFIG --once` with the credential where systemd puts it."""
    double.add_runner("declared-0", repo=REPO)
    config = json.loads(config_json(ARGS))
    config.update(api_url=double.api_url, scope_path=f"repos/{REPO}", runners=["declared-0"], declared_glob="")
    (tmp_path / "config.json").write_text(json.dumps(config))
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "token").write_text(VIEW_TOKEN + "\n")
    result = subprocess.run(
        ["python3", "-I", "-B", str(COLLECTOR), str(tmp_path / "config.json"), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"CREDENTIALS_DIRECTORY": str(credentials), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert 'github_runner_github_registered{runner="declared-0"} 1' in result.stdout
    assert VIEW_TOKEN not in result.stdout + result.stderr
    assert {c["credential"] for c in double.calls} == {"read-pat"}


# --- the step's scripts, run locally (systemctl, journalctl and curl stubbed) ----------------


class FakeMonitor:
    """The monitoring host in a temp dir: every path the scripts use is an input, so they all
    point here; the unit "runs" when systemctl restarts it and curl answers with `page`."""

    def __init__(self, tmp_path: Path, page: str) -> None:
        self.root = tmp_path
        self.state = tmp_path / "state"
        self.state.mkdir()
        (self.state / "page").write_text(page)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        s = self.state
        stubs = {
            "systemctl": f'echo "$*" >>{s}/systemctl.log\n'
            'case "$1" in\n'
            f"  is-active) [ -e {s}/active ] || exit 3 ;;\n"
            f"  restart) touch {s}/active ;;\n"
            f"  stop) rm -f {s}/active ;;\n"
            "esac\n",
            "curl": f"for a; do url=$a; done\n[ -e {s}/active ] || exit 7\n"
            f'case "$url" in */metrics) cat {s}/page ;; esac\n',
            "journalctl": "echo 'github-view: http_4xx: GET repos/o/r/actions/runners?per_page=100&page=1:"
            " 401 Bad credentials'\n",
        }
        for name, body in stubs.items():
            (bin_dir / name).write_text("#!/bin/bash\n" + body)
            (bin_dir / name).chmod(0o755)
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.targets = tmp_path / "targets"
        self.common = {
            "STACK": "production",
            "COLLECTOR_PATH": str(tmp_path / "opt/production/bin/github-view"),
            "CONFIG_DIR": str(tmp_path / "etc/production/github-view"),
            "UNIT_DIR": str(tmp_path / "systemd"),
            "UNIT": layout.github_view_unit("production"),
            "TARGETS_DIR": str(self.targets),
            "TARGET_FILE": layout.github_view_target_file("production"),
            "LOCK_FILE": str(tmp_path / "prometheus.lock"),
        }
        (tmp_path / "systemd").mkdir()

    def restarts(self) -> int:
        log = self.state / "systemctl.log"
        return sum(line.startswith("restart") for line in log.read_text().splitlines()) if log.exists() else 0

    def create(self, token: str = VIEW_TOKEN) -> subprocess.CompletedProcess:
        variables = {
            **self.common,
            "COLLECTOR": shell.host_file_text("github-view.py"),
            "CONFIG_FILE": self.common["CONFIG_DIR"] + "/config.json",
            "CONFIG_JSON": config_json(ARGS),
            "TOKEN_FILE": self.common["CONFIG_DIR"] + "/token",
            "UNIT_CONTENT": unit_content("production"),
            "PORT": 9469,
            "TARGET_JSON": target_json(ARGS),
        }
        script = shell.render("github-view-collector.create.sh", variables)
        return subprocess.run(
            ["bash", "-c", script, "github-view-collector.create.sh"],
            input=token + "\n",
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )

    def delete(self) -> subprocess.CompletedProcess:
        script = shell.render("github-view-collector.delete.sh", self.common)
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=self.env, timeout=60)


LISTED = (
    "# TYPE github_runner_github_last_success_timestamp_seconds gauge\n"
    "github_runner_github_last_success_timestamp_seconds 1796126057.04\n"
    'github_runner_github_errors_total{reason="http_4xx"} 0\n'
)


@needs_root()
def test_the_step_installs_the_credential_root_only_and_converges(tmp_path):
    host = FakeMonitor(tmp_path, LISTED)
    first = host.create()
    assert first.returncode == 0, first.stderr
    token_file = Path(host.common["CONFIG_DIR"]) / "token"
    assert token_file.read_text() == VIEW_TOKEN + "\n"
    info = token_file.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 0, 0o600)
    assert json.loads((host.targets / layout.github_view_target_file("production")).read_text()) == json.loads(
        target_json(ARGS)
    )
    unit_file = Path(host.common["UNIT_DIR"]) / host.common["UNIT"]
    assert "LoadCredential=token:" in unit_file.read_text()
    for path in [unit_file, Path(host.common["CONFIG_DIR"]) / "config.json", Path(host.common["COLLECTOR_PATH"])]:
        assert VIEW_TOKEN not in path.read_text()
    assert host.restarts() == 1
    assert VIEW_TOKEN not in first.stdout + first.stderr

    again = host.create()
    assert again.returncode == 0, again.stderr
    assert host.restarts() == 1, "nothing changed: no restart"
    rotated = host.create("github_pat_ROTATEDtoken0123456789abcdefgh")
    assert rotated.returncode == 0 and host.restarts() == 2, "a new credential restarts the collector"
    assert "ROTATED" in token_file.read_text()
    # Debris of a run killed half-way is removed by the next.
    (token_file.parent / "token.runner-fleet.tmp").write_text("half")
    assert host.create("github_pat_ROTATEDtoken0123456789abcdefgh").returncode == 0
    assert not (token_file.parent / "token.runner-fleet.tmp").exists()

    # Destroy: only this stack's pieces.
    other_target = host.targets / layout.github_view_target_file("staging")
    other_target.write_text("[]")
    stack_target = host.targets / layout.target_file("production")
    stack_target.write_text("[]")
    gone = host.delete()
    assert gone.returncode == 0, gone.stderr
    assert not token_file.exists() and not unit_file.exists()
    assert not Path(host.common["COLLECTOR_PATH"]).exists()
    assert not (host.targets / layout.github_view_target_file("production")).exists()
    assert other_target.exists() and stack_target.exists()
    assert host.delete().returncode == 0, "a second delete finds nothing to do"


@needs_root()
def test_a_refused_credential_fails_the_step_naming_the_key(tmp_path):
    never = (
        "github_runner_github_last_success_timestamp_seconds 0\n"
        'github_runner_github_errors_total{reason="http_4xx"} 1\n'
    )
    host = FakeMonitor(tmp_path, "# HELP x\n" + never)
    result = host.create()
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("runner-fleet: FAILED on ") and "runner-fleet:githubViewToken" in last, last
    assert "401 Bad credentials" in last
    assert VIEW_TOKEN not in result.stdout + result.stderr
    assert not (host.targets / layout.github_view_target_file("production")).exists(), "not listed for Prometheus"
