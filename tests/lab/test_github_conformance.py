"""The GitHub double held to GitHub's official REST description (npm @octokit/openapi, pinned in
lab/openapi.py): every answer the double gives here, for repository and organization scope, on
GHES's `/api/v3` paths, errors included, must have a status code the description documents for the
operation and a body that matches that response's schema, in the api.github.com, GHEC and every GHES
description the package carries. The few deliberate differences are named below (DELIBERATE, with
the reason; lab/DOUBLES.md explains each), as are the calls GitHub does not describe at all
(UNDESCRIBED: the runner's own registration calls). Starts the double on 127.0.0.1: no lab hosts."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab import openapi
from lab.github_double import GitHubDouble

PAT = "ghp_conformanceTESTpat0123456789abcdefAB"
READ_PAT = "github_pat_conformanceREADonly0123456789ab"
REPO = "Octo-Org/octo-repo"
ORG = "Octo-Org"


@dataclass(frozen=True)
class Deliberate:
    """A response that differs from the description on purpose: which, why, and the schema its
    body is still held to."""

    name: str
    status: int
    operations: tuple[str, ...]  # operationIds ("*": any operation that does not document `status`)
    schema: str  # components/schemas/<schema> the body must match
    reason: str


DELIBERATE = (
    Deliberate(
        "401 on every operation",
        401,
        ("*",),
        "basic-error",
        "GitHub answers 401 Requires authentication / Bad credentials on every REST operation; the "
        "description documents 401 on none of the runner operations",
    ),
    Deliberate(
        "404 for what does not exist or may not be seen",
        404,
        ("*",),
        "basic-error",
        "GitHub answers 404 for an unknown repository, organization, runner or runner group (and "
        "for one the caller may not see) on every operation; the description lists 404 only on a few",
    ),
    Deliberate(
        "400 for a body that is not JSON",
        400,
        ("*",),
        "basic-error",
        "GitHub answers 400 Problems parsing JSON to a malformed body; the description documents "
        "400 for none of these operations",
    ),
    Deliberate(
        "422 when a runner group cannot be created or deleted",
        422,
        ("actions/create-self-hosted-runner-group-for-org", "actions/delete-self-hosted-runner-group-from-org"),
        "validation-error-simple",
        "the description documents only 201/204; the double refuses a missing, invalid or taken group "
        "name and the default group (which GitHub does not let anyone delete) with a 422",
    ),
    Deliberate(
        "403 for a token without the permission, or an exhausted rate limit",
        403,
        ("*",),
        "basic-error",
        "GitHub answers 403 Resource not accessible by personal access token to a fine-grained token "
        "that lacks the write permission, and 403 with X-RateLimit-Remaining: 0 once the primary rate "
        "limit is used up, on every operation; the description documents neither for these operations",
    ),
    Deliberate(
        "429 for a secondary rate limit",
        429,
        ("*",),
        "basic-error",
        "GitHub answers 429 with Retry-After when a secondary rate limit is exceeded (REST docs, "
        "'Rate limits for the REST API'); the description documents 429 for none of these operations",
    ),
)


@dataclass(frozen=True)
class Undescribed:
    """A call GitHub serves but its REST description does not contain."""

    name: str
    method: str
    path: str  # regex on the path below /api/v3 (or the whole path for the runner service)
    source: str  # where the shape comes from instead


UNDESCRIBED = (
    Undescribed(
        "runner-registration (token exchange)",
        "POST",
        r"/api/v3/actions/runner-registration",
        "actions/runner src/Runner.Listener/Configuration/ConfigurationManager.cs GetTenantCredential, "
        "CredentialManager.cs GitHubAuthResult",
    ),
    Undescribed(
        "runners/register (runner-admin flow)",
        "POST",
        r"/api/v3/actions/runners/register",
        "actions/runner src/Runner.Common/RunnerDotcomServer.cs AddOrReplaceRunner, src/Sdk/DTWebApi/WebApi/Runner.cs",
    ),
    Undescribed(
        "repository runner-groups (runner-admin flow)",
        "GET",
        r"/api/v3/repos/[^/]+/[^/]+/actions/runner-groups",
        "actions/runner src/Runner.Common/RunnerDotcomServer.cs GetRunnerGroupsAsync, "
        "src/Sdk/DTWebApi/WebApi/RunnerGroup.cs",
    ),
    Undescribed(
        "runner service / broker sessions (the stand-in's private protocol)",
        "*",
        r"/.*/_apis/standin/v1/.*",
        "lab/DOUBLES.md: the runner service's protocol is not reproduced, only its effect on online/busy",
    ),
)


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    body: bytes
    content_type: str


@dataclass
class Conformance:
    """Calls the double and keeps every answer, to be checked against the descriptions."""

    double: GitHubDouble
    checkers: list[openapi.ResponseChecker]
    tally: dict[str, Any]
    exchanges: list[Exchange] = field(default_factory=list)

    def call(
        self, method: str, path: str, auth: str | None = f"token {PAT}", body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.double.url + path, data=data, method=method)  # noqa: S310 - double's URL
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the double's http URL
                status, payload, headers = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as e:
            status, payload, headers = e.code, e.read(), dict(e.headers)
        self.exchanges.append(Exchange(method, path, status, payload, headers.get("Content-Type", "")))
        return status, (json.loads(payload) if payload.strip() else None), headers

    def classify(self, ex: Exchange) -> tuple[str, str]:
        """("valid" | "deliberate" | "undescribed" | "invalid", detail)."""
        describing = [c for c in self.checkers if c.operation(ex.method, ex.path) is not None]
        if not describing:
            for u in UNDESCRIBED:
                if u.method in ("*", ex.method) and re.fullmatch(u.path, ex.path.split("?")[0]):
                    return "undescribed", u.name
            return "invalid", f"{ex.method} {ex.path}: in no description, and not named in UNDESCRIBED"
        verdicts = [(c, c.check(ex.method, ex.path, ex.status, ex.body, ex.content_type)) for c in describing]
        if all(v.valid for _, v in verdicts):
            return "valid", ""
        for d in DELIBERATE:
            if ex.status != d.status:
                continue
            ok = True
            for checker, verdict in verdicts:
                op = verdict.operation
                assert op is not None
                if d.operations != ("*",) and op.operation_id not in d.operations:
                    ok = False
                    break
                if d.operations == ("*",) and str(ex.status) in op.statuses:
                    ok = False  # documented, so it must be valid as documented
                    break
                if checker.validate_body(checker.component(d.schema), ex.body, ex.content_type):
                    ok = False
                    break
            if ok:
                return "deliberate", d.name
        problems = [f"{c.flavor}: {p}" for c, v in verdicts for p in v.problems]
        return "invalid", f"{ex.method} {ex.path} -> {ex.status}: " + "; ".join(problems[:6])

    def verify(self) -> dict[str, list[str]]:
        """Checks and tallies every exchange since the last verify; fails on any invalid one."""
        seen: dict[str, list[str]] = {"valid": [], "deliberate": [], "undescribed": [], "invalid": [], "operations": []}
        for ex in self.exchanges:
            verdict, detail = self.classify(ex)
            seen[verdict].append(detail or f"{ex.method} {ex.path}")
            op = self.checkers[0].operation(ex.method, ex.path)
            if verdict == "valid" and op is not None:
                seen["operations"].append(op.operation_id)
            if verdict != "undescribed":
                self.tally["checked"] += 1
            if verdict == "valid":
                self.tally["valid"] += 1
            elif verdict == "deliberate":
                self.tally["deliberate"][detail] += 1
            elif verdict == "undescribed":
                self.tally["undescribed"][detail] += 1
        self.exchanges.clear()
        assert not seen["invalid"], "answers that differ from GitHub's description:\n" + "\n".join(seen["invalid"])
        return seen


@pytest.fixture(scope="session")
def checkers() -> list[openapi.ResponseChecker]:
    try:
        openapi.install()
    except openapi.OpenApiError as e:
        if os.environ.get("CI"):
            raise  # under CI the description must be there (test.sh installs it)
        pytest.skip(f"GitHub's REST description is not available: {e}")
    return [openapi.ResponseChecker(flavor) for flavor in openapi.flavors()]


@pytest.fixture
def conf(tmp_path: Path, checkers, conformance_tally):
    (tmp_path / "actions-runner-linux-x64-2.336.0.tar.gz").write_bytes(b"runner tarball")
    double = GitHubDouble(pats={PAT}, read_pats={READ_PAT}, repos={REPO}, orgs={ORG}, artifacts_dir=tmp_path).start()
    yield Conformance(double, checkers, conformance_tally)
    double.stop()


# Every operation of the description the double serves, each answered validly at least once below.
RUNNER_OPERATIONS = (
    "actions/create-registration-token-for-{scope}",
    "actions/create-remove-token-for-{scope}",
    "actions/list-self-hosted-runners-for-{scope}",
    "actions/get-self-hosted-runner-for-{scope}",
    "actions/delete-self-hosted-runner-from-{scope}",
    "actions/list-runner-applications-for-{scope}",
    "actions/list-labels-for-self-hosted-runner-for-{scope}",
    "actions/set-custom-labels-for-self-hosted-runner-for-{scope}",
    "actions/add-custom-labels-to-self-hosted-runner-for-{scope}",
    "actions/remove-all-custom-labels-from-self-hosted-runner-for-{scope}",
    "actions/remove-custom-label-from-self-hosted-runner-for-{scope}",
)
GROUP_OPERATIONS = (
    "actions/list-self-hosted-runner-groups-for-org",
    "actions/create-self-hosted-runner-group-for-org",
    "actions/get-self-hosted-runner-group-for-org",
    "actions/delete-self-hosted-runner-group-from-org",
)


def _remote(token: str) -> str:
    return f"RemoteAuth {token}"


def drive_runner_endpoints(conf: Conformance, scope: str, other_case: str) -> None:
    """Every runner operation of one scope (`repos/o/r` or `orgs/o`), answers and errors."""
    d = conf.double
    api = f"/api/v3/{scope}/actions/runners"
    for kind in ("registration", "remove"):
        status, body, _ = conf.call("POST", f"{api}/{kind}-token")
        assert status == 201 and len(body["token"]) == 29
    status, _, _ = conf.call("POST", f"/api/v3/{other_case}/actions/runners/registration-token")
    assert status == 201, "owner, repository and organization names are not case sensitive"
    missing_scope = "repos/nobody/nothing" if scope.startswith("repos/") else "orgs/nobody-org"
    assert conf.call("POST", f"/api/v3/{missing_scope}/actions/runners/registration-token")[0] == 404
    assert conf.call("GET", f"/api/v3/{missing_scope}/actions/runners")[0] == 404

    assert conf.call("GET", api)[1] == {"total_count": 0, "runners": []}
    kw = {"repo": scope.removeprefix("repos/")} if scope.startswith("repos/") else {"org": scope.removeprefix("orgs/")}
    ids = [d.add_runner(f"r{i}", labels=["gpu"] if i == 0 else [], **kw) for i in range(3)]
    status, body, headers = conf.call("GET", f"{api}?per_page=2&page=2")
    assert status == 200 and body["total_count"] == 3 and [r["name"] for r in body["runners"]] == ["r2"]
    assert 'rel="prev"' in headers["Link"]
    status, body, _ = conf.call("GET", f"{api}?per_page=1000")
    assert status == 200 and len(body["runners"]) == 3, "per_page over 100 is capped, not refused"
    assert conf.call("GET", f"{api}?name=r1&per_page=100")[1]["runners"][0]["id"] == ids[1]
    assert conf.call("GET", f"{api}?page=99")[1]["runners"] == []
    assert conf.call("GET", f"/api/v3/{other_case}/actions/runners")[1]["total_count"] == 3

    status, runner, _ = conf.call("GET", f"{api}/{ids[0]}")
    assert status == 200 and runner["version"] is None, "never connected: no version"
    assert conf.call("GET", f"{api}/999999")[0] == 404
    status, downloads, _ = conf.call("GET", f"{api}/downloads")
    assert status == 200 and downloads[0]["filename"] == "actions-runner-linux-x64-2.336.0.tar.gz"

    labels = f"{api}/{ids[0]}/labels"
    assert [lb["name"] for lb in conf.call("GET", labels)[1]["labels"]] == ["self-hosted", "Linux", "X64", "gpu"]
    assert conf.call("PUT", labels, body={"labels": ["big", "gpu"]})[0] == 200
    assert conf.call("POST", labels, body={"labels": ["arm"]})[1]["total_count"] == 6
    assert conf.call("DELETE", f"{labels}/big")[0] == 200
    status, body, _ = conf.call("DELETE", f"{labels}/Linux")
    assert status == 422 and "read-only" in body["message"]
    assert conf.call("DELETE", f"{labels}/absent")[0] == 404
    status, body, _ = conf.call("PUT", labels, body={"labels": "gpu"})
    assert status == 422 and all(isinstance(e, str) for e in body["errors"]), "errors are strings"
    assert conf.call("PUT", labels, body={"labels": [f"l{i}" for i in range(101)]})[0] == 422
    assert conf.call("POST", labels, body={"labels": []})[0] == 422
    assert conf.call("PUT", labels, raw=b"{not json")[0] == 400
    status, body, _ = conf.call("DELETE", labels)
    assert status == 200 and [lb["type"] for lb in body["labels"]] == ["read-only"] * 3
    assert conf.call("GET", f"{api}/999999/labels")[0] == 404
    assert conf.call("PUT", f"{api}/999999/labels", body={"labels": []})[0] == 404

    d.set_busy("r2", True, scope=scope)
    status, body, _ = conf.call("DELETE", f"{api}/{ids[2]}")
    assert status == 422 and "still running a job" in body["message"]
    d.set_busy("r2", False, scope=scope)
    assert conf.call("DELETE", f"{api}/{ids[2]}")[0] == 204
    assert conf.call("DELETE", f"{api}/{ids[2]}")[0] == 404

    assert conf.call("GET", api, auth=None)[0] == 401
    assert conf.call("GET", api, auth="token ghp_wrong")[0] == 401
    assert conf.call("POST", f"{api}/registration-token", auth=None)[0] == 401


def test_repository_scope(conf: Conformance) -> None:
    status, repo, _ = conf.call("GET", "/api/v3/repos/octo-org/OCTO-REPO")
    assert status == 200 and repo["full_name"] == REPO, "any case finds the repository; GitHub answers its name"
    assert repo["owner"]["login"] == ORG and repo["owner"]["type"] == "Organization"
    assert conf.call("GET", "/api/v3/repos/octo-org/missing")[0] == 404
    assert conf.call("GET", f"/api/v3/repos/{REPO}", auth=None)[0] == 401
    drive_runner_endpoints(conf, f"repos/{REPO}", "repos/OCTO-ORG/Octo-Repo")
    seen = conf.verify()
    assert set(seen["operations"]) == {"repos/get"} | {op.format(scope="repo") for op in RUNNER_OPERATIONS}


def test_organization_scope(conf: Conformance) -> None:
    status, org, _ = conf.call("GET", "/api/v3/orgs/octo-org")
    assert status == 200 and org["login"] == ORG
    assert conf.call("GET", "/api/v3/orgs/nobody-org")[0] == 404
    drive_runner_endpoints(conf, f"orgs/{ORG}", "orgs/OCTO-ORG")

    groups = "/api/v3/orgs/octo-org/actions/runner-groups"
    status, body, _ = conf.call("GET", groups)
    assert status == 200 and body["runner_groups"][0]["default"] is True
    status, created, _ = conf.call("POST", groups, body={"name": "gpu-boxes", "visibility": "private"})
    assert status == 201 and created["name"] == "gpu-boxes"
    status, body, headers = conf.call("GET", f"{groups}?per_page=1&page=2")
    assert body["total_count"] == 2 and [g["name"] for g in body["runner_groups"]] == ["gpu-boxes"]
    assert 'rel="prev"' in headers["Link"]
    assert conf.call("GET", f"{groups}/{created['id']}")[1]["visibility"] == "private"
    status, body, _ = conf.call("POST", groups, body={"name": "GPU-boxes"})
    assert status == 422 and all(isinstance(e, str) for e in body["errors"])
    assert conf.call("POST", groups, body={})[0] == 422
    assert conf.call("DELETE", f"{groups}/1")[0] == 422, "the default group stays"
    assert conf.call("DELETE", f"{groups}/{created['id']}")[0] == 204
    assert conf.call("GET", f"{groups}/{created['id']}")[0] == 404
    assert conf.call("GET", "/api/v3/orgs/nobody-org/actions/runner-groups")[0] == 404
    seen = conf.verify()
    expected = {"orgs/get", *GROUP_OPERATIONS} | {op.format(scope="org") for op in RUNNER_OPERATIONS}
    assert set(seen["operations"]) == expected


def test_runner_admin_flow(conf: Conformance) -> None:
    """The registration flow GitHub may pick (`use_v2_flow: true`), call by call as actions/runner
    makes it, for a repository and an organization."""
    d = conf.double
    for scope, url_path in ((f"repos/{REPO}", "/octo-org/OCTO-REPO"), (f"orgs/{ORG}", "/octo-org")):
        api = f"/api/v3/{scope}/actions"
        token = conf.call("POST", f"{api}/runners/registration-token")[1]["token"]
        exchange = {"url": d.url + url_path, "runner_event": "register"}
        d.runner_admin_flow = False
        status, auth, _ = conf.call("POST", "/api/v3/actions/runner-registration", _remote(token), exchange)
        assert status == 200 and auth["use_v2_flow"] is False
        d.runner_admin_flow = True
        status, auth, _ = conf.call("POST", "/api/v3/actions/runner-registration", _remote(token), exchange)
        assert status == 200 and auth["use_v2_flow"] is True

        status, groups, _ = conf.call("GET", f"{api}/runner-groups", _remote(token))
        assert status == 200 and [(g["id"], g["default"], g["is_hosted"]) for g in groups["runner_groups"]] == [
            (1, True, False)
        ]
        assert conf.call("GET", f"{api}/runners?name=admin-1", _remote(token))[1]["total_count"] == 0
        register = {
            "url": d.url + url_path,
            "group_id": 1,
            "name": "admin-1",
            "version": "2.336.0",
            "updates_disabled": False,
            "ephemeral": False,
            "labels": [{"id": 0, "name": "self-hosted", "type": "system"}, {"id": 0, "name": "gpu", "type": "user"}],
            "public_key": hashlib.sha256(b"first-secret").hexdigest(),
        }
        status, runner, _ = conf.call("POST", "/api/v3/actions/runners/register", _remote(token), register)
        assert status == 200 and set(runner["authorization"]) == {"client_id", "authorization_url", "server_url"}
        rest_runner = conf.call("GET", f"{api}/runners/{runner['id']}")[1]
        assert [(lb["name"], lb["type"]) for lb in rest_runner["labels"]] == [
            ("self-hosted", "read-only"),
            ("gpu", "custom"),
        ]
        status, body, _ = conf.call("POST", "/api/v3/actions/runners/register", _remote(token), register)
        assert status == 409 and "same name" in body["message"]
        listed = conf.call("GET", f"{api}/runners?name=admin-1", _remote(token))[1]
        assert [r["id"] for r in listed["runners"]] == [runner["id"]]

        broker = runner["authorization"]["server_url"].removeprefix(d.url) + "/_apis/standin/v1/"
        basic = base64.b64encode(f"{runner['authorization']['client_id']}:first-secret".encode()).decode()
        assert conf.call("POST", broker + "sessions", f"Basic {basic}", {"version": "2.336.0"})[0] == 201
        assert d.runner("admin-1", scope=scope)["status"] == "online"

        replaced = dict(register, runner_id=runner["id"], replace=True, public_key=hashlib.sha256(b"new").hexdigest())
        status, again, _ = conf.call("POST", "/api/v3/actions/runners/register", _remote(token), replaced)
        assert status == 200 and again["id"] == runner["id"]
        assert again["authorization"]["client_id"] != runner["authorization"]["client_id"]
        assert conf.call("POST", broker + "sessions", f"Basic {basic}", {})[0] == 401, "the old credential is void"
        assert conf.call("POST", "/api/v3/actions/runners/register", _remote(token), dict(register, name=""))[0] == 422
        gone = dict(replaced, runner_id=999999)
        assert conf.call("POST", "/api/v3/actions/runners/register", _remote(token), gone)[0] == 404

        other = "/other-owner/other-repo" if scope.startswith("repos/") else "/other-org"
        assert (
            conf.call("POST", "/api/v3/actions/runners/register", _remote(token), dict(register, url=d.url + other))[0]
            == 404
        ), "the token belongs to its own scope"
        assert conf.call("GET", f"{api}/runners", f"Bearer {token}")[0] == 401, "RemoteAuth only"
        assert conf.call("DELETE", f"{api}/runners/{runner['id']}", _remote(token))[0] == 404, "no delete with it"
        remove = conf.call("POST", f"{api}/runners/remove-token")[1]["token"]
        assert conf.call("GET", f"{api}/runners", _remote(remove))[0] == 404, "a remove token only removes"
        d.set_busy("admin-1", True, scope=scope)
        assert conf.call("DELETE", f"{api}/runners/{runner['id']}", _remote(remove))[0] == 422
        d.set_busy("admin-1", False, scope=scope)
        assert conf.call("DELETE", f"{api}/runners/{runner['id']}", _remote(remove))[0] == 204
        assert conf.call("GET", f"{api}/runners/{runner['id']}")[0] == 404

        d.clock.advance(3601)
        assert conf.call("POST", "/api/v3/actions/runners/register", _remote(token), register)[0] == 404, "expired"
        d.clock.advance(-3601)
    seen = conf.verify()
    assert {"runner-registration (token exchange)", "runners/register (runner-admin flow)"} <= set(seen["undescribed"])


def test_releases_a_read_only_token_and_rate_limits(conf: Conformance) -> None:
    """What the GitHub-view collector calls: the runner listing with a fine-grained read-only token
    (which may list but not administer), actions/runner's releases, and the rate-limit answers."""
    d = conf.double
    assert conf.call("GET", "/api/v3/repos/actions/runner/releases")[0] == 404, "no release announced yet"
    d.add_release("2.330.0", published_at=1_700_000_000)
    d.add_release("2.331.0-rc1", published_at=1_700_100_000, prerelease=True)
    d.add_release("2.331.0", published_at=1_700_200_000)
    status, releases, _ = conf.call("GET", "/api/v3/repos/actions/runner/releases?per_page=100")
    assert status == 200 and [r["tag_name"] for r in releases] == ["v2.331.0", "v2.331.0-rc1", "v2.330.0"]
    status, _, headers = conf.call("GET", "/api/v3/repos/Actions/Runner/releases?per_page=2")
    assert status == 200 and 'rel="next"' in headers["Link"]
    status, latest, _ = conf.call("GET", "/api/v3/repos/actions/runner/releases/latest")
    assert status == 200 and latest["tag_name"] == "v2.331.0" and latest["published_at"] == "2023-11-17T05:46:40Z"

    read = f"Bearer {READ_PAT}"
    for scope in (f"repos/{REPO}", f"orgs/{ORG}"):
        kw = {"repo": REPO} if scope.startswith("repos/") else {"org": ORG}
        name = "view-" + scope.split("/")[0]
        rid = d.add_runner(name, **kw)
        status, body, headers = conf.call("GET", f"/api/v3/{scope}/actions/runners?per_page=100&page=1", auth=read)
        assert status == 200 and body["total_count"] == 1
        assert int(headers["X-RateLimit-Remaining"]) < int(headers["X-RateLimit-Limit"]) == 5000
        assert int(headers["X-RateLimit-Reset"]) > 1_700_000_000
        assert conf.call("GET", f"/api/v3/{scope}/actions/runners/{rid}", auth=read)[0] == 200
        want = "administration=write" if scope.startswith("repos/") else "organization_self_hosted_runners=write"
        for method, path in (
            ("POST", "/registration-token"),
            ("POST", "/remove-token"),
            ("DELETE", f"/{rid}"),
            ("PUT", f"/{rid}/labels"),
        ):
            status, body, headers = conf.call(method, f"/api/v3/{scope}/actions/runners{path}", auth=read, body={})
            assert status == 403 and body["message"] == "Resource not accessible by personal access token"
            assert headers["X-Accepted-GitHub-Permissions"] == want
        assert d.runner(name, scope=scope)["id"] == rid, "still registered"

    d.rate_limit(60)
    status, body, headers = conf.call("GET", f"/api/v3/repos/{REPO}/actions/runners", auth=read)
    assert status == 403 and headers["X-RateLimit-Remaining"] == "0" and "rate limit" in body["message"]
    d.rate_limit(30, "secondary")
    status, body, headers = conf.call("GET", f"/api/v3/repos/{REPO}/actions/runners", auth=read)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 30
    d.rate_limit(0)
    assert conf.call("GET", f"/api/v3/repos/{REPO}/actions/runners", auth=read)[0] == 200
    seen = conf.verify()
    wanted = {"repos/list-releases", "repos/get-latest-release", "actions/list-self-hosted-runners-for-repo"}
    assert wanted <= set(seen["operations"])


def test_named_differences_exist_and_are_still_different(conf: Conformance, checkers) -> None:
    """Each DELIBERATE entry is exercised and is really undocumented in the description (else it
    would be stale); each UNDESCRIBED path is really absent from every description."""
    conf.call("GET", f"/api/v3/repos/{REPO}/actions/runners", auth=None)
    conf.call("GET", f"/api/v3/repos/{REPO}/actions/runners/123")
    rid = conf.double.add_runner("json", repo=REPO)
    conf.call("PUT", f"/api/v3/repos/{REPO}/actions/runners/{rid}/labels", raw=b"[")
    conf.call("DELETE", f"/api/v3/orgs/{ORG}/actions/runner-groups/1")
    conf.call("POST", f"/api/v3/repos/{REPO}/actions/runners/registration-token", auth=f"Bearer {READ_PAT}")
    conf.double.rate_limit(60, "secondary")
    conf.call("GET", f"/api/v3/repos/{REPO}/actions/runners")
    conf.double.rate_limit(0)
    kinds = [conf.classify(ex) for ex in conf.exchanges]
    assert kinds == [("deliberate", d.name) for d in DELIBERATE]
    ids = {
        op["operationId"]
        for c in checkers
        for ops in c._doc["paths"].values()
        for op in ops.values()
        if "operationId" in op
    }
    for d in DELIBERATE:
        assert d.operations == ("*",) or set(d.operations) <= ids, f"{d.name}: unknown operation"
    for c in checkers:
        for u in UNDESCRIBED:
            path = re.sub(r"\[\^/\]\+", "x", u.path).replace(r"\.", ".").replace(".*", "x")
            assert c.operation(u.method if u.method != "*" else "get", path) is None, f"{u.name} is in {c.flavor}"
    conf.verify()


def test_checker_rejects_what_github_would_not_answer(checkers) -> None:
    """The check itself can fail: shapes the double used to give, and GitHub never does."""
    checker = checkers[0]
    runners = "/api/v3/repos/o/r/actions/runners"
    as_json = "application/json; charset=utf-8"

    def problems(method: str, path: str, status: int, body: Any) -> list[str]:
        raw = json.dumps(body).encode() if body is not None else b""
        return checker.check(method, path, status, raw, as_json).problems

    old_422 = {"message": "Validation Failed", "documentation_url": "u", "errors": [{"field": "labels", "code": "x"}]}
    assert problems("PUT", f"{runners}/1/labels", 422, old_422), "errors must be strings"
    assert not problems("PUT", f"{runners}/1/labels", 422, dict(old_422, errors=["labels: 1-100 names"]))
    assert problems("GET", runners, 200, {"runners": []}), "total_count is required"
    good = {"id": 1, "name": "a", "os": "linux", "status": "online", "busy": False, "labels": [], "version": None}
    assert not problems("GET", runners, 200, {"total_count": 1, "runners": [good]}), "nullable version"
    assert problems("GET", runners, 200, {"total_count": 1, "runners": [dict(good, version=5)]})
    assert problems(
        "GET", runners, 200, {"total_count": 1, "runners": [dict(good, labels=[{"name": "x", "type": "bad"}])]}
    )
    assert problems("GET", runners, 201, {"total_count": 0, "runners": []}), "undocumented status"
    assert problems("DELETE", f"{runners}/1", 204, {"message": "x"}), "204 has no body"
    token = f"{runners}/registration-token"
    assert problems("POST", token, 201, {"token": "T", "expires_at": "tomorrow"}), "date-time"
    assert not problems("POST", token, 201, {"token": "T", "expires_at": "2026-12-01T10:00:00.000+00:00"})
    assert problems("GET", "/api/v3/repos/o/r", 200, {"id": 1, "name": "r", "full_name": "o/r"}), "full-repository"
    assert checker.operation("GET", f"{runners}/downloads").operation_id == "actions/list-runner-applications-for-repo"


FAKE_NPM = """#!/usr/bin/env bash
# Stands in for npm: installs a minimal @octokit/openapi@<version> under --prefix, or fails.
set -euo pipefail
echo "$*" >> "$FAKE_NPM_LOG"
[[ -z "${FAKE_NPM_FAIL:-}" ]] || { echo "npm error 404 Not Found" >&2; exit 1; }
prefix=""; spec=""
while (($#)); do
  case "$1" in --prefix) prefix="$2"; shift 2 ;; @octokit/openapi@*) spec="$1"; shift ;; *) shift ;; esac
done
pkg="$prefix/node_modules/@octokit/openapi"
mkdir -p "$pkg/generated"
printf '{"name": "@octokit/openapi", "version": "%s"}' "${spec##*@}" > "$pkg/package.json"
echo '{"openapi": "3.0.3", "paths": {}}' > "$pkg/generated/api.github.com.json"
"""


def test_install_is_idempotent_and_leaves_no_debris(tmp_path: Path, monkeypatch) -> None:
    """lab.openapi.install with npm replaced by a script: installs once into the version's
    directory, reuses it, replaces an incomplete copy, removes a killed run's leftovers, and a
    failed install leaves nothing behind."""
    npm = tmp_path / "npm"
    npm.write_text(FAKE_NPM)
    npm.chmod(0o755)
    log = tmp_path / "npm.log"
    cache = tmp_path / "cache"
    monkeypatch.setenv("RUNNER_FLEET_CACHE", str(cache))
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))

    def installs() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    pkg = openapi.install("1.2.3", npm=str(npm))
    assert pkg == cache / "octokit-openapi-1.2.3" / "node_modules" / "@octokit" / "openapi"
    assert "@octokit/openapi@1.2.3" in log.read_text() and "--ignore-scripts" in log.read_text()
    assert openapi.install("1.2.3", npm=str(npm)) == pkg and installs() == 1, "present: not installed again"
    assert sorted(p.name for p in cache.iterdir()) == [".octokit-openapi-1.2.3.lock", "octokit-openapi-1.2.3"]

    (pkg / "generated" / "api.github.com.json").unlink()  # an incomplete copy
    (cache / ".octokit-openapi-1.2.3.tmp-killed").mkdir()  # what a killed run leaves
    assert openapi.install("1.2.3", npm=str(npm)) == pkg and installs() == 2
    assert (pkg / "generated" / "api.github.com.json").is_file()
    assert not list(cache.glob(".*.tmp-*"))

    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    with pytest.raises(openapi.OpenApiError, match="404 Not Found"):
        openapi.install("9.9.9", npm=str(npm))
    assert not (cache / "octokit-openapi-9.9.9").exists() and not list(cache.glob(".*.tmp-*"))
    with pytest.raises(openapi.OpenApiError, match="exact version"):
        openapi.install("^23", npm=str(npm))
    with pytest.raises(openapi.OpenApiError, match="npm is needed"):
        openapi.install("9.9.9", npm=str(tmp_path / "no-npm"))
