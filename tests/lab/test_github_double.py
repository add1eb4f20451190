"""The GitHub double on 127.0.0.1: the REST behaviour the fleet's scripts depend on (auth, token
expiry, pagination, labels, busy deletion, downloads), the call record, and the runner-service
protocol that decides online/offline. Fast, no root: part of the ordinary suite."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from lab.artifacts import build_runner_tarball
from lab.github_double import DoubleClient, GitHubDouble

PAT = "ghp_unitTESTpat0123456789abcdefABCDEF"
REPO = "octo-org/octo-repo"
SCOPE = f"repos/{REPO}"


@pytest.fixture
def double(tmp_path: Path):
    d = GitHubDouble(pats={PAT}, repos={REPO}, orgs={"octo-org"}, artifacts_dir=tmp_path, offline_after=5)
    d.start()
    yield d
    d.stop()


def call(
    d: GitHubDouble, method: str, path: str, auth: str | None = f"token {PAT}", body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(d.url + path, data=data, method=method)  # noqa: S310 - the double's http URL
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the double's http URL
            raw = resp.read()
            return resp.status, _parse(raw), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, _parse(e.read()), dict(e.headers)


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


def mint(d: GitHubDouble, kind: str = "registration", scope: str = SCOPE) -> dict[str, Any]:
    status, body, _ = call(d, "POST", f"/api/v3/{scope}/actions/runners/{kind}-token")
    assert status == 201, body
    return body


def register_via_service(d: GitHubDouble, name: str, secret: str = "s3cret-value") -> dict[str, Any]:
    """What the stand-in's config.sh does: registration token -> tenant token -> add agent."""
    token = mint(d)["token"]
    status, auth, _ = call(
        d,
        "POST",
        "/api/v3/actions/runner-registration",
        f"RemoteAuth {token}",
        {"url": f"{d.url}/{REPO}", "runner_event": "register"},
    )
    assert status == 200, auth
    tenant = auth["url"].removeprefix(d.url) + "/_apis/standin/v1/"
    agent_body = {
        "name": name,
        "poolId": 1,
        "version": "2.329.0",
        "labels": [{"name": "self-hosted", "type": "system"}, {"name": "gpu", "type": "user"}],
        "publicKey": hashlib.sha256(secret.encode()).hexdigest(),
    }
    status, agent, _ = call(d, "POST", tenant + "agents", f"Bearer {auth['token']}", agent_body)
    assert status == 200, agent
    basic = base64.b64encode(f"{agent['authorization']['clientId']}:{secret}".encode()).decode()
    return {"agent": agent, "tenant": tenant, "runner_auth": f"Basic {basic}"}


def test_rest_refuses_missing_and_bad_credentials(double: GitHubDouble) -> None:
    path = f"/api/v3/{SCOPE}/actions/runners"
    status, body, _ = call(double, "GET", path, auth=None)
    assert (status, body["message"]) == (401, "Requires authentication")
    status, body, _ = call(double, "GET", path, auth="token ghp_wrong")
    assert (status, body["message"]) == (401, "Bad credentials")
    registration_token = mint(double)["token"]
    status, body, _ = call(double, "GET", path, auth=f"Bearer {registration_token}")
    assert (status, body["message"]) == (401, "Bad credentials"), "a registration token is no REST credential"
    assert call(double, "GET", path, auth=f"Bearer {PAT}")[0] == 200
    basic = base64.b64encode(f"github:{PAT}".encode()).decode()
    assert call(double, "GET", path, auth=f"Basic {basic}")[0] == 200, "config.sh --pat sends basic github:PAT"
    assert call(double, "GET", f"/api/v3/repos/{REPO}")[0] == 200
    assert call(double, "GET", "/api/v3/repos/octo-org/missing")[0] == 404
    assert call(double, "GET", "/api/v3/orgs/octo-org")[0] == 200
    assert call(double, "GET", "/api/v3/orgs/nobody-org")[0] == 404
    assert call(double, "POST", "/api/v3/repos/octo-org/missing/actions/runners/registration-token")[0] == 404


def test_registration_and_remove_tokens_expire_after_one_hour(double: GitHubDouble) -> None:
    for scope in (SCOPE, "orgs/octo-org"):
        for kind in ("registration", "remove"):
            body = mint(double, kind, scope)
            expires = datetime.fromisoformat(body["expires_at"]).timestamp()
            assert abs(expires - (double.clock.now() + 3600)) < 5
            assert body["token"].isalnum() and body["token"].isupper() and len(body["token"]) == 29

    token = mint(double)["token"]

    def exchange(tok: str, event: str = "register", url: str = f"/{REPO}") -> int:
        return call(
            double,
            "POST",
            "/api/v3/actions/runner-registration",
            f"RemoteAuth {tok}",
            {"url": double.url + url, "runner_event": event},
        )[0]

    assert exchange(token) == 200
    assert exchange(token, url="/octo-org") == 404, "the token belongs to the repository, not the org"
    assert exchange(token, event="remove") == 404, "a registration token does not remove"
    double.clock.advance(3599)
    assert exchange(token) == 200
    status, clock, _ = call(double, "POST", "/_double/clock", auth=None, body={"advance": 2})
    assert status == 200 and clock["offset"] == pytest.approx(3601)
    status, body, _ = call(
        double,
        "POST",
        "/api/v3/actions/runner-registration",
        f"RemoteAuth {token}",
        {"url": f"{double.url}/{REPO}", "runner_event": "register"},
    )
    assert (status, body["message"]) == (404, "Not Found"), "GitHub answers an expired token with 404"
    assert double.calls[-1]["credential"] == "expired-registration-token"


def test_runner_list_paginates_like_github(double: GitHubDouble) -> None:
    for i in range(150):
        double.add_runner(f"runner-{i:03d}", repo=REPO)
    path = f"/api/v3/{SCOPE}/actions/runners"
    status, page1, headers = call(double, "GET", path + "?per_page=100&page=1")
    assert status == 200 and page1["total_count"] == 150 and len(page1["runners"]) == 100
    assert 'rel="next"' in headers["Link"] and "page=2" in headers["Link"] and 'rel="last"' in headers["Link"]
    status, page2, headers = call(double, "GET", path + "?per_page=100&page=2")
    assert len(page2["runners"]) == 50 and 'rel="next"' not in headers["Link"] and 'rel="prev"' in headers["Link"]
    names = [r["name"] for r in page1["runners"] + page2["runners"]]
    assert names == [f"runner-{i:03d}" for i in range(150)]
    assert len(call(double, "GET", path)[1]["runners"]) == 30, "per_page defaults to 30"
    assert call(double, "GET", path + "?per_page=100&page=3")[1]["runners"] == []
    status, body, headers = call(double, "GET", path + "?per_page=1000")
    assert status == 200 and len(body["runners"]) == 100, "GitHub caps per_page at 100 without an error"
    assert "per_page=100&page=2" in headers["Link"], "the next page is one of 100"
    status, body, _ = call(double, "GET", path + "?name=runner-142&per_page=100")
    assert body["total_count"] == 1 and body["runners"][0]["name"] == "runner-142"
    runner = body["runners"][0]
    assert set(runner) >= {"id", "name", "os", "status", "busy", "labels"}
    assert (runner["os"], runner["status"], runner["busy"]) == ("linux", "offline", False)
    assert call(double, "GET", "/api/v3/orgs/octo-org/actions/runners")[1]["total_count"] == 0


def test_labels_put_replaces_only_custom_labels(double: GitHubDouble) -> None:
    rid = double.add_runner("labelled", repo=REPO, labels=["gpu", "big"])
    path = f"/api/v3/{SCOPE}/actions/runners/{rid}/labels"

    def labels(body: dict[str, Any]) -> list[tuple[str, str]]:
        assert body["total_count"] == len(body["labels"])
        return [(lb["name"], lb["type"]) for lb in body["labels"]]

    defaults = [("self-hosted", "read-only"), ("Linux", "read-only"), ("X64", "read-only")]
    assert labels(call(double, "GET", path)[1]) == defaults + [("gpu", "custom"), ("big", "custom")]
    status, body, _ = call(double, "PUT", path, body={"labels": ["small", "gpu"]})
    assert status == 200 and labels(body) == defaults + [("small", "custom"), ("gpu", "custom")]
    ids = {lb["name"]: lb["id"] for lb in body["labels"]}
    status, body, _ = call(double, "POST", path, body={"labels": ["arm"]})
    assert labels(body) == defaults + [("small", "custom"), ("gpu", "custom"), ("arm", "custom")]
    assert {lb["name"]: lb["id"] for lb in body["labels"]}["gpu"] == ids["gpu"], "label ids are stable"
    assert call(double, "DELETE", path + "/small")[0] == 200
    assert call(double, "DELETE", path + "/Linux")[0] == 422, "read-only labels stay"
    assert call(double, "DELETE", path + "/absent")[0] == 404
    status, body, _ = call(double, "DELETE", path)
    assert labels(body) == defaults, "DELETE removes all custom labels"
    assert call(double, "PUT", path, body={"labels": "gpu"})[0] == 422
    assert call(double, "PUT", path, body={"labels": []})[0] == 200
    runner = call(double, "GET", f"/api/v3/{SCOPE}/actions/runners/{rid}")[1]
    assert [(lb["name"], lb["type"]) for lb in runner["labels"]] == defaults
    assert call(double, "PUT", f"/api/v3/{SCOPE}/actions/runners/99999/labels", body={"labels": []})[0] == 404


def test_busy_runner_cannot_be_deleted_until_idle(double: GitHubDouble) -> None:
    rid = double.add_runner("worker", repo=REPO)
    path = f"/api/v3/{SCOPE}/actions/runners/{rid}"
    status, state, _ = call(double, "POST", "/_double/runners/worker/busy", auth=None, body={"busy": True})
    assert status == 200 and state["busy"] and state["job"]["name"] == "build"
    assert call(double, "GET", path)[1]["busy"] is True
    status, body, _ = call(double, "DELETE", path)
    assert status == 422 and "still running a job" in body["message"]
    double.set_busy("worker", False)
    assert call(double, "DELETE", path)[0] == 204
    assert call(double, "GET", path)[0] == 404
    assert call(double, "DELETE", path)[0] == 404
    assert call(double, "POST", "/_double/runners/ghost/busy", auth=None, body={"busy": True})[0] == 404


def test_downloads_list_and_serve_the_artifacts(double: GitHubDouble, tmp_path: Path) -> None:
    runner = build_runner_tarball(tmp_path, "2.329.0")
    exporter = tmp_path / "node_exporter-1.5.0.linux-amd64.tar.gz"
    exporter.write_bytes(b"exporter bytes")
    status, downloads, _ = call(double, "GET", f"/api/v3/{SCOPE}/actions/runners/downloads")
    assert status == 200
    assert downloads == [
        {
            "os": "linux",
            "architecture": "x64",
            "download_url": f"{double.url}/actions/runner/releases/download/v2.329.0/{runner['filename']}",
            "filename": runner["filename"],
            "sha256_checksum": runner["sha256"],
        }
    ]
    # No credential: release downloads are public, as on github.com.
    with urllib.request.urlopen(downloads[0]["download_url"], timeout=10) as resp:  # noqa: S310 - http URL
        served = resp.read()
    assert hashlib.sha256(served).hexdigest() == downloads[0]["sha256_checksum"]
    status, body, _ = call(
        double, "GET", "/prometheus/node_exporter/releases/download/v1.5.0/node_exporter-1.5.0.linux-amd64.tar.gz", None
    )
    assert (status, body) == (200, b"exporter bytes")
    missing = "/actions/runner/releases/download/v2.328.0/actions-runner-linux-x64-2.329.0.tar.gz"
    assert call(double, "GET", missing, None)[0] == 404, "version in the path and the file name must agree"


def test_calls_are_recorded_without_credentials(double: GitHubDouble) -> None:
    token = mint(double)["token"]
    call(double, "GET", f"/api/v3/{SCOPE}/actions/runners?per_page=5", auth=f"Bearer {PAT}")
    call(double, "GET", f"/api/v3/{SCOPE}/actions/runners", auth="token ghp_wrong")
    call(
        double,
        "POST",
        "/api/v3/actions/runner-registration",
        f"RemoteAuth {token}",
        {"url": f"{double.url}/{REPO}", "runner_event": "register"},
    )
    status, recorded, _ = call(double, "GET", "/_double/calls", auth=None)
    assert status == 200
    calls = recorded["calls"]
    assert calls == double.calls
    assert [(c["method"], c["path"], c["status"], c["credential"]) for c in calls] == [
        ("POST", f"/api/v3/{SCOPE}/actions/runners/registration-token", 201, "pat"),
        ("GET", f"/api/v3/{SCOPE}/actions/runners", 200, "pat"),
        ("GET", f"/api/v3/{SCOPE}/actions/runners", 401, "invalid"),
        ("POST", "/api/v3/actions/runner-registration", 200, "registration-token"),
    ]
    assert calls[1]["query"] == {"per_page": "5"}
    assert all(c["time"] and c["clock"] for c in calls)
    dump = json.dumps(calls) + json.dumps(double.state())
    assert PAT not in dump and token not in dump and "ghp_wrong" not in dump
    assert call(double, "GET", "/_double/calls?since=3", auth=None)[1]["calls"] == calls[3:]


def test_online_follows_the_runner_session(double: GitHubDouble) -> None:
    reg = register_via_service(double, "svc-runner")
    tenant, auth = reg["tenant"], reg["runner_auth"]
    rest = f"/api/v3/{SCOPE}/actions/runners/{reg['agent']['id']}"
    labels = [(lb["name"], lb["type"]) for lb in call(double, "GET", rest)[1]["labels"]]
    assert labels == [("self-hosted", "read-only"), ("gpu", "custom")]
    assert call(double, "GET", rest)[1]["status"] == "offline", "registered but never connected"

    bad = "Basic " + base64.b64encode(f"{reg['agent']['authorization']['clientId']}:wrong".encode()).decode()
    assert call(double, "POST", tenant + "sessions", bad, {})[0] == 401
    status, session, _ = call(double, "POST", tenant + "sessions", auth, {"version": "2.329.0"})
    assert status == 201
    assert call(double, "GET", rest)[1]["status"] == "online"
    assert call(double, "POST", tenant + "sessions", auth, {})[0] == 409, "one session per runner"
    message = f"{tenant}sessions/{session['sessionId']}/message"

    # A job assigned while the runner long-polls wakes the poll at once.
    threading.Timer(0.2, double.set_busy, args=("svc-runner", True, "deploy")).start()
    started = time.monotonic()
    status, answer, _ = call(double, "GET", message + "?jobId=0&wait=5", auth)
    assert status == 200 and answer["job"]["name"] == "deploy" and time.monotonic() - started < 2
    assert call(double, "GET", rest)[1]["busy"] is True
    double.set_busy("svc-runner", False)
    assert call(double, "GET", message + f"?jobId={answer['job']['id']}&wait=5", auth)[1] == {"job": None}

    double.set_connected("svc-runner", False)
    assert call(double, "GET", message + "?jobId=0&wait=0", auth)[0] == 503
    assert call(double, "GET", rest)[1]["status"] == "offline"
    double.set_connected("svc-runner", True)
    assert call(double, "GET", message + "?jobId=0&wait=0", auth)[0] == 200
    assert call(double, "GET", rest)[1]["status"] == "online"
    double.clock.advance(6)  # no poll for longer than offline_after
    assert call(double, "GET", rest)[1]["status"] == "offline"
    assert call(double, "DELETE", f"{tenant}sessions/{session['sessionId']}", auth)[0] == 204
    assert call(double, "GET", message + "?jobId=0&wait=0", auth)[0] == 404

    assert call(double, "DELETE", rest)[0] == 204
    status, body, _ = call(double, "POST", tenant + "sessions", auth, {})
    assert (status, body.get("error")) == (401, "invalid_client"), "a deleted runner's credential is void"
    assert [c["credential"] for c in double.calls if "/sessions" in c["path"]][:2] == [
        "invalid-runner-credential",
        "runner-credential",
    ]


def test_state_file_survives_a_restart_and_holds_no_secret(tmp_path: Path) -> None:
    state = tmp_path / "double.json"
    with GitHubDouble(pats={PAT}, repos={REPO}, state_file=state) as first:
        reg = register_via_service(first, "kept")
        token = mint(first)["token"]
    text = state.read_text()
    assert PAT not in text and token not in text and "s3cret-value" not in text
    with GitHubDouble(pats={PAT}, repos={REPO}, state_file=state) as second:
        status, body, _ = call(second, "GET", f"/api/v3/{SCOPE}/actions/runners?name=kept")
        assert status == 200 and body["runners"][0]["id"] == reg["agent"]["id"]
        assert call(second, "POST", reg["tenant"] + "sessions", reg["runner_auth"], {})[0] == 201
        assert second.add_runner("next", repo=REPO) == reg["agent"]["id"] + 1


def test_double_client_drives_a_double_over_http(double: GitHubDouble) -> None:
    client = DoubleClient(double.url)
    assert client.health()["api_url"] == double.api_url
    double.add_runner("remote", repo=REPO, labels=["x"])
    assert client.set_busy("remote", True, job="e2e")["job"]["name"] == "e2e"
    assert double.runner("remote")["busy"] is True
    assert client.set_busy("remote", False)["busy"] is False
    assert client.set_connected("remote", False)["connected"] is False
    assert client.runner("remote")["connected"] is False
    assert client.advance_clock(10)["offset"] == pytest.approx(10)
    assert [r["name"] for r in client.state()["runners"]] == ["remote"]
    mint(double)
    assert [c["path"] for c in client.calls()] == [f"/api/v3/{SCOPE}/actions/runners/registration-token"]
    client.clear_calls()
    assert client.calls() == []


def test_names_are_not_case_sensitive(double: GitHubDouble) -> None:
    double.add_repo("OCTO-ORG/Octo-Repo")
    assert double.state()["repos"] == [REPO], "the same repository in another case is not a second one"
    status, repo, _ = call(double, "GET", "/api/v3/repos/Octo-Org/OCTO-REPO")
    assert status == 200 and repo["full_name"] == REPO and repo["name"] == "octo-repo"
    assert call(double, "GET", "/api/v3/orgs/OCTO-ORG")[1]["login"] == "octo-org"
    token = mint(double, scope="repos/OCTO-ORG/octo-REPO")["token"]
    status, auth, _ = call(
        double,
        "POST",
        "/api/v3/actions/runner-registration",
        f"RemoteAuth {token}",
        {"url": f"{double.url}/Octo-Org/Octo-Repo", "runner_event": "register"},
    )
    assert status == 200 and auth["url"] == f"{double.url}/octo-org-octo-repo", "config.sh --url in any case"
    rid = double.add_runner("cased", repo="OCTO-ORG/OCTO-REPO")
    assert call(double, "GET", f"/api/v3/repos/octo-org/Octo-Repo/actions/runners/{rid}")[0] == 200
    assert double.runner("cased", scope="repos/Octo-Org/Octo-Repo")["scope"] == SCOPE


def test_validation_errors_are_arrays_of_strings(double: GitHubDouble) -> None:
    rid = double.add_runner("strict", repo=REPO)
    labels = f"/api/v3/{SCOPE}/actions/runners/{rid}/labels"
    for body in ({"labels": "gpu"}, {"labels": ["has space"]}, {"labels": [f"l{i}" for i in range(101)]}, {}):
        status, answer, _ = call(double, "PUT", labels, body=body)
        assert status == 422 and answer["message"] == "Validation Failed", body
        assert answer["errors"] and all(isinstance(e, str) for e in answer["errors"]), answer
    status, answer, _ = call(double, "POST", "/api/v3/orgs/octo-org/actions/runner-groups", body={"name": " "})
    assert status == 422 and answer["errors"] == ["name is missing"]


def test_runner_admin_flow_is_an_option_of_the_double(tmp_path: Path) -> None:
    with GitHubDouble(pats={PAT}, repos={REPO}, runner_admin_flow=True) as d:

        def use_v2_flow() -> bool:
            token = mint(d)["token"]
            body = {"url": f"{d.url}/{REPO}", "runner_event": "register"}
            status, auth, _ = call(d, "POST", "/api/v3/actions/runner-registration", f"RemoteAuth {token}", body)
            assert status == 200
            return auth["use_v2_flow"]

        assert use_v2_flow() is True
        client = DoubleClient(d.url)
        assert client.set_options(runner_admin_flow=False) == {"runner_admin_flow": False, "tenant_style": "dotcom"}
        assert use_v2_flow() is False and client.options()["runner_admin_flow"] is False
        d.runner_admin_flow = True
        assert use_v2_flow() is True
