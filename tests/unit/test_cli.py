"""`runner-fleet orphans` against the GitHub double on 127.0.0.1 (more than 100 runners, so
several pages), and the REST client's retries against a scripted local server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet import cli
from fleet.github_api import ApiError, GitHubApi
from lab.github_double import GitHubDouble
from tests.conftest import PROJECT
from tests.lab.test_github_double import PAT as HELPER_PAT
from tests.lab.test_github_double import REPO as HELPER_REPO
from tests.lab.test_github_double import call, register_via_service

PAT = "ghp_orphansTESTpat0123456789abcdefABCD"
REPO = HELPER_REPO  # the repository the double's runner-protocol helper registers to
OTHER_REPO = "octo-org/elsewhere"
DAY = 86400.0

PROD = [f"prod-{i:03d}" for i in range(120)]
STAGE = [f"stage-{i:02d}" for i in range(10)]
STRAYS = [f"stray-{i:03d}" for i in range(115)]


def stack_file(directory: Path, stack: str, repo: str, server_url: str, runners: list[str]) -> None:
    hosts = [
        {
            "name": f"{stack}-host",
            "address": "10.249.31.99",
            "role": "primary",
            "exporterPort": 9100,
            "runners": [{"name": name, "labels": [stack]} for name in runners],
        }
    ]
    config = {
        "runner-fleet:github": {"repository": repo, "serverUrl": server_url},
        "runner-fleet:hosts": hosts,
        # A secret value as Pulumi writes it: the command reads past it.
        "runner-fleet:githubToken": {"secure": "v1:AAAA"},
    }
    (directory / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))


def make_online(double: GitHubDouble, name: str) -> None:
    """A runner registered through the runner protocol with an open session: online."""
    reg = register_via_service(double, name)
    status, _, _ = call(double, "POST", reg["tenant"] + "sessions", reg["runner_auth"], {"version": "2.334.0"})
    assert status == 201


@pytest.fixture
def fleet_double(tmp_path: Path) -> Iterator[GitHubDouble]:
    """The scope holds: every declared runner (one with other letter case), 115 strays, one
    online stray (`laptop`), one busy stray; another repository holds a stray too."""
    d = GitHubDouble(pats={PAT, HELPER_PAT}, repos={REPO, OTHER_REPO}, offline_after=3 * 3600)
    d.start()
    for name in PROD + STAGE:
        d.add_runner(name.upper() if name == "prod-005" else name, repo=REPO, labels=["x"])
    for name in STRAYS:
        d.add_runner(name, repo=REPO)
    d.add_runner("busy-one", repo=REPO)
    d.set_busy("busy-one", True)
    d.add_runner("stray-other-repo", repo=OTHER_REPO)
    make_online(d, "laptop")
    project = tmp_path / "project"
    project.mkdir()
    stack_file(project, "production", REPO, d.url, PROD)
    stack_file(project, "staging", REPO, d.url, STAGE)
    stack_file(project, "elsewhere", OTHER_REPO, d.url, [])
    d.project = project  # type: ignore[attr-defined]
    d.clear_calls()  # from here on, only what the command does
    yield d
    d.stop()


def run(
    double: GitHubDouble,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    *args: str,
    token: str | None = PAT,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> tuple[int, str, str]:
    argv = ["orphans", "--project-dir", str(double.project), "--ledger", str(tmp_path / "ledger.json"), *args]  # type: ignore[attr-defined]
    stdin = io.StringIO("")
    if token is not None and "--token-file" not in args:
        argv += ["--token-file", "-"]
        stdin = io.StringIO(token + "\n")
    code = cli.main(argv, stdin=stdin)
    out, err = capsys.readouterr()
    return code, out, err


def report(out: str) -> dict[str, Any]:
    return json.loads(out)


def orphans_by_name(data: dict[str, Any], scope: str = f"repos/{REPO}") -> dict[str, dict[str, Any]]:
    (entry,) = [s for s in data["scopes"] if s["scope"] == scope]
    return {o["name"]: o for o in entry["orphans"]}


def runner_names(double: GitHubDouble, repo: str = REPO) -> set[str]:
    return {r["name"] for r in double.state()["runners"] if r["scope"] == f"repos/{repo}"}


def writes(double: GitHubDouble) -> list[dict[str, Any]]:
    return [c for c in double.calls if c["method"] != "GET" and "/actions/runners" in c["path"]]


def test_lists_undeclared_registrations_of_the_stacks_scope_across_pages(fleet_double, capsys, tmp_path):
    code, out, err = run(fleet_double, capsys, tmp_path, "--stack", "production", "--json")
    data = report(out)
    assert code == cli.EXIT_ORPHANS == data["exit_code"]
    (scope,) = data["scopes"]
    assert scope["registered"] == len(PROD) + len(STAGE) + len(STRAYS) + 2
    assert scope["api_url"] == fleet_double.url + "/api/v3", "GitHub Enterprise Server style API base"
    assert scope["stacks"] == ["production", "staging"]
    orphans = orphans_by_name(data)
    # Staging's runners share the scope and are declared; PROD-005 is prod-005 (names are case-insensitive).
    assert set(orphans) == {*STRAYS, "busy-one", "laptop"}
    assert orphans["laptop"]["status"] == "online" and orphans["laptop"]["action"] == "kept"
    assert orphans["busy-one"]["busy"] is True and orphans["busy-one"]["action"] == "kept"
    assert {orphans[n]["action"] for n in STRAYS} == {"listed"}
    pages = sorted(int(c["query"]["page"]) for c in fleet_double.calls if c["path"].endswith("/actions/runners"))
    assert pages == [1, 2, 3]
    assert writes(fleet_double) == []
    assert "247/247 runners read" in err
    assert "stray-other-repo" not in out


def test_every_stack_by_default_and_a_human_table(fleet_double, capsys, tmp_path):
    code, out, _ = run(fleet_double, capsys, tmp_path)
    assert code == cli.EXIT_ORPHANS
    assert f"repos/{REPO} on {fleet_double.url}/api/v3: 247 registered" in out
    assert f"repos/{OTHER_REPO} on {fleet_double.url}/api/v3: 1 registered" in out
    line = next(line for line in out.splitlines() if " laptop " in line)
    assert "online" in line and "kept: online" in line


def test_delete_waits_for_the_grace_then_removes_only_offline_idle_orphans(fleet_double, capsys, tmp_path, monkeypatch):
    clock = [1_800_000_000.0]
    monkeypatch.setattr(cli, "now", lambda: clock[0])
    code, out, _ = run(fleet_double, capsys, tmp_path, "--stack", "production", "--delete", "--grace", "14d", "--json")
    assert code == cli.EXIT_ORPHANS
    assert {o["action"] for n, o in orphans_by_name(report(out)).items() if n in STRAYS} == {"kept"}
    assert writes(fleet_double) == [], "the first sighting starts the grace period"

    clock[0] += 13 * DAY
    code, out, _ = run(fleet_double, capsys, tmp_path, "--stack", "production", "--delete", "--grace", "14d", "--json")
    assert writes(fleet_double) == []
    assert "offline for 13d of 14d grace" in orphans_by_name(report(out))["stray-000"]["reason"]

    clock[0] += 1 * DAY
    code, out, err = run(
        fleet_double, capsys, tmp_path, "--stack", "production", "--delete", "--grace", "14d", "--json"
    )
    orphans = orphans_by_name(report(out))
    assert {orphans[n]["action"] for n in STRAYS} == {"deleted"}
    assert orphans["laptop"]["action"] == "kept" and orphans["busy-one"]["action"] == "kept"
    assert code == cli.EXIT_ORPHANS, "the online and the busy orphan remain"
    remaining = runner_names(fleet_double)
    assert remaining == {*PROD, *STAGE, "busy-one", "laptop"} - {"prod-005"} | {"PROD-005"}
    deleted = [c for c in writes(fleet_double) if c["method"] == "DELETE"]
    assert len(deleted) == len(STRAYS) and {c["status"] for c in deleted} == {204}
    assert runner_names(fleet_double, OTHER_REPO) == {"stray-other-repo"}, "--stack production only"
    assert "deleted stray-000" in err


def test_an_orphan_seen_online_starts_its_grace_again(fleet_double, capsys, tmp_path, monkeypatch):
    clock = [1_800_000_000.0]
    monkeypatch.setattr(cli, "now", lambda: clock[0])
    run(fleet_double, capsys, tmp_path, "--stack", "production", "--delete", "--grace", "1d")
    fleet_double.set_busy("stray-001", True)
    clock[0] += 2 * DAY
    run(fleet_double, capsys, tmp_path, "--stack", "production", "--delete", "--grace", "1d")
    assert "stray-001" in runner_names(fleet_double) and "stray-002" not in runner_names(fleet_double)
    fleet_double.set_busy("stray-001", False)
    clock[0] += 2 * DAY
    code, out, _ = run(fleet_double, capsys, tmp_path, "--stack", "production", "--delete", "--grace", "1d", "--json")
    assert orphans_by_name(report(out))["stray-001"]["action"] == "kept", "first seen idle again just now"
    clock[0] += 2 * DAY
    run(fleet_double, capsys, tmp_path, "--stack", "production", "--delete", "--grace", "1d")
    assert "stray-001" not in runner_names(fleet_double)


def test_a_runner_that_turns_busy_before_the_deletion_is_kept(fleet_double, capsys, tmp_path, monkeypatch):
    """Between the list and the DELETE: a fresh look finds it busy; and when GitHub itself
    answers 422 (busy) to the DELETE, the runner stays too."""
    clock = [1_800_000_000.0]
    monkeypatch.setattr(cli, "now", lambda: clock[0])
    run(fleet_double, capsys, tmp_path, "--stack", "production", "--delete", "--grace", "1d")
    clock[0] += 2 * DAY
    real_get = GitHubApi.get_runner

    def get_then_job_starts(self, scope_path, runner_id):
        fresh = real_get(self, scope_path, runner_id)
        if fresh is not None and fresh.name == "stray-003":
            fleet_double.set_busy("stray-003", True)  # the job lands after the fresh look
        if fresh is not None and fresh.name == "stray-004":
            fleet_double.set_busy("stray-004", True)
            return real_get(self, scope_path, runner_id)
        return fresh

    monkeypatch.setattr(GitHubApi, "get_runner", get_then_job_starts)
    code, out, _ = run(fleet_double, capsys, tmp_path, "--stack", "production", "--delete", "--grace", "1d", "--json")
    orphans = orphans_by_name(report(out))
    assert orphans["stray-003"]["action"] == "kept" and "422" in orphans["stray-003"]["reason"]
    assert orphans["stray-004"]["action"] == "kept" and orphans["stray-004"]["reason"] == "busy"
    assert {"stray-003", "stray-004"} <= runner_names(fleet_double)
    refused = [c for c in writes(fleet_double) if c["method"] == "DELETE" and c["status"] == 422]
    assert len(refused) == 1
    assert code == cli.EXIT_ORPHANS


def test_no_orphans_exits_zero(tmp_path, capsys):
    with GitHubDouble(pats={PAT}, repos={REPO}) as d:
        for name in PROD[:3]:
            d.add_runner(name, repo=REPO)
        project = tmp_path / "p"
        project.mkdir()
        stack_file(project, "production", REPO, d.url, PROD[:3])
        code = cli.main(
            ["orphans", "--project-dir", str(project), "--ledger", str(tmp_path / "l.json"), "--token-file", "-"],
            stdin=io.StringIO(PAT),
        )
    out, _ = capsys.readouterr()
    assert code == cli.EXIT_CLEAN
    assert "3 registered, 3 declared by stack(s) production, 0 orphan(s)" in out


def test_credential_from_env_or_file_never_printed(fleet_double, capsys, tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text(PAT + "\n")
    code, out, err = run(fleet_double, capsys, tmp_path, "--token-file", str(token_file), token=None)
    assert code == cli.EXIT_ORPHANS and PAT not in out + err
    monkeypatch.setenv(cli.TOKEN_ENV, PAT)
    code, out, err = run(fleet_double, capsys, tmp_path, "--json", token=None)
    assert code == cli.EXIT_ORPHANS and PAT not in out + err
    auth = {c["credential"] for c in fleet_double.calls if "/actions/runners" in c["path"]}
    assert auth == {"pat"}


def test_bad_credential_is_exit_3_and_not_echoed(fleet_double, capsys, tmp_path):
    wrong = "ghp_WRONGtoken0123456789abcdefWRONGtoken"
    code, out, err = run(fleet_double, capsys, tmp_path, token=wrong)
    assert code == cli.EXIT_GITHUB
    assert "401" in err and "Bad credentials" in err
    assert wrong not in out + err


def test_usage_errors_are_exit_2(fleet_double, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    code, _, err = run(fleet_double, capsys, tmp_path, token=None)
    assert code == cli.EXIT_USAGE and cli.TOKEN_ENV in err
    code, _, err = run(fleet_double, capsys, tmp_path, "--stack", "nope")
    assert code == cli.EXIT_USAGE and "no stack file for nope" in err
    (fleet_double.project / "Pulumi.broken.yaml").write_text("config:\n  runner-fleet:github: {repository: nope}\n")
    code, _, err = run(fleet_double, capsys, tmp_path)
    assert code == cli.EXIT_USAGE and "Pulumi.broken.yaml" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["orphans", "--grace", "soon"])
    assert exc.value.code == cli.EXIT_USAGE
    with pytest.raises(SystemExit) as exc:
        cli.main(["orphans", "--token", PAT])  # no way to pass a credential on argv
    assert exc.value.code == cli.EXIT_USAGE
    _, err = capsys.readouterr()
    assert "unrecognized arguments" in err and PAT not in err


def test_unreachable_github_is_exit_3(tmp_path, capsys, monkeypatch):
    project = tmp_path / "p"
    project.mkdir()
    stack_file(project, "production", REPO, "http://127.0.0.1:9", PROD[:1])
    waits: list[float] = []

    def quick(base_url, token, **kw):
        return GitHubApi(base_url, token, retries=2, sleep=waits.append, log=kw.get("log"))

    monkeypatch.setattr(cli, "GitHubApi", quick)
    code = cli.main(
        ["orphans", "--project-dir", str(project), "--ledger", str(tmp_path / "l"), "--token-file", "-"],
        stdin=io.StringIO(PAT),
    )
    _, err = capsys.readouterr()
    assert code == cli.EXIT_GITHUB
    assert "cannot reach http://127.0.0.1:9/api/v3" in err
    assert waits == [1.0, 2.0]


def test_python_dash_m_fleet_and_help_for_every_command():
    outputs = {}
    for argv in (["--help"], ["orphans", "--help"], ["verify", "--help"], ["diagnose", "--help"]):
        proc = subprocess.run(
            [sys.executable, "-m", "fleet", *argv], capture_output=True, text=True, cwd=PROJECT, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert "usage: runner-fleet" in proc.stdout
        outputs[argv[0]] = proc.stdout
    assert all(command in outputs["--help"] for command in ("orphans", "verify", "diagnose"))
    assert "exit codes:" in outputs["orphans"] and "--delete" in outputs["orphans"]
    assert "exit codes:" in outputs["verify"] and "--ssh-key" in outputs["verify"]
    assert "exit codes:" in outputs["diagnose"] and "--host" in outputs["diagnose"]


# --- the REST client against a scripted server ----------------------------------------------


class Scripted(BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str], Any]] = []
    seen: list[tuple[str, str, str]] = []

    def _serve(self) -> None:
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        status, headers, body = type(self).answers.pop(0)
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[str]:
    Scripted.answers, Scripted.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v3"
    server.shutdown()
    server.server_close()


def test_client_retries_5xx_and_rate_limits_with_backoff(scripted):
    page = {"total_count": 1, "runners": [{"id": 7, "name": "r", "status": "offline", "busy": False, "labels": []}]}
    Scripted.answers = [
        (502, {}, {"message": "Bad Gateway"}),
        (429, {"Retry-After": "7"}, {"message": "slow down"}),
        (403, {"x-ratelimit-remaining": "0"}, {"message": "API rate limit exceeded"}),
        (200, {}, page),
    ]
    waits: list[float] = []
    api = GitHubApi(scripted, PAT, sleep=waits.append)
    runners = api.list_runners("repos/o/r")
    assert [r.name for r in runners] == ["r"]
    assert waits == [1.0, 7.0, 4.0]
    assert {auth for _, _, auth in Scripted.seen} == {f"Bearer {PAT}"}
    assert Scripted.seen[-1][1] == "/api/v3/repos/o/r/actions/runners?per_page=100&page=1"
    assert PAT not in repr(api)


def test_client_gives_up_after_its_retries_and_does_not_retry_client_errors(scripted):
    Scripted.answers = [(503, {}, {"message": "down"})] * 3 + [(401, {}, {"message": "Bad credentials"})]
    api = GitHubApi(scripted, PAT, retries=2, sleep=lambda _s: None)
    with pytest.raises(ApiError) as exc:
        api.request("GET", "repos/o/r/actions/runners")
    assert exc.value.status == 503
    with pytest.raises(ApiError) as exc:
        api.request("GET", "repos/o/r/actions/runners")
    assert (exc.value.status, exc.value.message) == (401, "Bad credentials")
    assert PAT not in str(exc.value)
    assert len(Scripted.seen) == 4


def test_client_raises_422_for_a_busy_delete(scripted):
    Scripted.answers = [(422, {}, {"message": "Bad request - Runner is still running a job"})]
    with pytest.raises(ApiError) as exc:
        GitHubApi(scripted, PAT, sleep=lambda _s: None).delete_runner("repos/o/r", 3)
    assert exc.value.status == 422


def test_organization_scope(tmp_path, capsys):
    with GitHubDouble(pats={PAT}, orgs={"octo-org"}) as d:
        d.add_runner("org-runner", org="octo-org")
        d.add_runner("forgotten", org="octo-org")
        project = tmp_path / "p"
        project.mkdir()
        (project / "Pulumi.production.yaml").write_text(
            yaml.safe_dump(
                {
                    "config": {
                        "runner-fleet:github": {"organization": "octo-org", "serverUrl": d.url},
                        "runner-fleet:hosts": [{"name": "h", "runners": [{"name": "org-runner"}]}],
                    }
                }
            )
        )
        code = cli.main(
            ["orphans", "--project-dir", str(project), "--ledger", str(tmp_path / "l"), "--token-file", "-", "--json"],
            stdin=io.StringIO(PAT),
        )
        out, _ = capsys.readouterr()
        assert code == cli.EXIT_ORPHANS
        assert orphans_by_name(report(out), "orgs/octo-org").keys() == {"forgotten"}
        assert {c["path"] for c in d.calls} == {"/api/v3/orgs/octo-org/actions/runners"}


def test_as_a_process_with_the_credential_piped_in(fleet_double, tmp_path):
    """What the drift workflow runs: `... | python -m fleet orphans --stack S --token-file -`."""
    env = {k: v for k, v in os.environ.items() if k != cli.TOKEN_ENV}
    argv = [sys.executable, "-m", "fleet", "orphans", "--stack", "staging", "--token-file", "-"]
    argv += ["--project-dir", str(fleet_double.project), "--ledger", str(tmp_path / "ledger.json")]
    proc = subprocess.run(argv, input=PAT + "\n", capture_output=True, text=True, cwd=PROJECT, env=env, timeout=60)
    assert proc.returncode == cli.EXIT_ORPHANS, proc.stderr
    assert f"repos/{REPO} on {fleet_double.url}/api/v3: 247 registered" in proc.stdout
    assert "stray-114" in proc.stdout and PAT not in proc.stdout + proc.stderr
    assert "runner-fleet: listing the runners of" in proc.stderr


def test_no_credential_over_plain_http_to_a_public_address(tmp_path, capsys):
    project = tmp_path / "p"
    project.mkdir()
    stack_file(project, "production", REPO, "http://ghe.example.com", PROD[:1])
    code = cli.main(
        ["orphans", "--project-dir", str(project), "--ledger", str(tmp_path / "l"), "--token-file", "-"],
        stdin=io.StringIO(PAT),
    )
    _, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE
    assert "only sent over plain http to a private or loopback address" in err


def test_an_unreadable_ledger_is_a_usage_error(fleet_double, capsys, tmp_path):
    (tmp_path / "ledger.json").write_text("{not json")
    code, _, err = run(fleet_double, capsys, tmp_path)
    assert code == cli.EXIT_USAGE and "unreadable ledger" in err
    assert [c for c in fleet_double.calls if "/actions/runners" in c["path"]] == []


def test_client_stops_on_a_page_that_repeats_itself(scripted):
    page = {"total_count": 500, "runners": [{"id": i, "name": f"r{i}", "labels": []} for i in range(100)]}
    Scripted.answers = [(200, {}, page), (200, {}, page), (200, {}, page)]
    runners = GitHubApi(scripted, PAT, sleep=lambda _s: None).list_runners("repos/o/r")
    assert len(runners) == 100 and len(Scripted.seen) == 2
