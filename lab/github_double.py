"""GitHub double for the lab: the REST calls the fleet makes, the runner service the stand-in talks to,
and the release downloads, in one stdlib HTTP server.

Why a double: the fleet's remote scripts call GitHub's REST API (registration/remove tokens, runner
lookup, labels, deletion) and actions/runner's config.sh/run.sh talk to GitHub's runner service.
The lab has no route to github.com, so this server answers those calls the way GitHub Enterprise
Server does (REST under `/api/v3`), records every call for assertions, and lets tests drive what
only GitHub can change (a job making a runner busy, a lost connection, the passing of time).

Surfaces (see lab/DOUBLES.md for what is and is not reproduced):
- REST, PAT only: `/api/v3/{repos/{o}/{r}|orgs/{org}}/actions/runners[...]`, `/api/v3/repos/{o}/{r}`,
  `/api/v3/orgs/{org}`, `/api/v3/orgs/{org}/actions/runner-groups[...]`.
- Runner registration, registration/remove token only: `POST /api/v3/actions/runner-registration`
  (`Authorization: RemoteAuth <token>`), as actions/runner's config.sh calls it.
- Runner service ("tenant"), private to the runner stand-in: `<tenant>/_apis/standin/v1/...`,
  authenticated with the short-lived tenant token (admin calls) or the runner's own credential
  (sessions, the long-poll that keeps a runner online).
- REST releases of `actions/runner` (`GET /api/v3/repos/actions/runner/releases[/latest]`), which a
  test announces (`add_release`), for the GitHub-view collector's version age.
- Read-only PATs (`read_pats`): a fine-grained token with read access, which may GET but not
  change anything (403 "Resource not accessible by personal access token", as GitHub answers).
- Rate limits: every REST answer to a PAT carries GitHub's `X-RateLimit-*` headers (5000 an
  hour per token); `rate_limit(seconds, style)` makes the API answer as an exhausted primary
  limit (403, `X-RateLimit-Remaining: 0`) or a secondary one (429, `Retry-After`).
- Releases, no auth: `/actions/runner/releases/download/v{V}/actions-runner-linux-{arch}-{V}.tar.gz`
  and `/prometheus/node_exporter/releases/download/v{V}/node_exporter-{V}.linux-{goarch}.tar.gz`.
- Test controls, no auth (the lab bridge is private): `/_double/...`.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import string
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DOCS_URL = "https://docs.github.com/rest"
TOKEN_TTL_SECONDS = 3600
TENANT_TOKEN_TTL_SECONDS = 3600
DEFAULT_OFFLINE_AFTER = 5.0
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
MAX_LABELS = 100
RATE_LIMIT = 5000  # GitHub's primary limit for a personal access token, per hour
RELEASES_REPO = "actions/runner"
CALL_HISTORY = 100_000
DEFAULT_JOB_NAME = "build"
STANDIN_API = "/_apis/standin/v1/"

_RUNNER_ARTIFACT = re.compile(
    r"^actions-runner-linux-(?P<arch>x64|arm64|arm)-(?P<version>[0-9][0-9A-Za-z.+-]*)\.tar\.gz$"
)
_EXPORTER_ARTIFACT = re.compile(
    r"^node_exporter-(?P<version>[0-9][0-9A-Za-z.+-]*)\.linux-(?P<goarch>amd64|arm64|armv7)\.tar\.gz$"
)
_RUNNER_RELEASE_PATH = re.compile(r"^/actions/runner/releases/download/v(?P<version>[^/]+)/(?P<file>[^/]+)$")
_EXPORTER_RELEASE_PATH = re.compile(
    r"^/prometheus/node_exporter/releases/download/v(?P<version>[^/]+)/(?P<file>[^/]+)$"
)
_SCOPE = r"(?P<scope>repos/[^/]+/[^/]+|orgs/[^/]+)"
# The URL fields of GitHub's repository object: field and path below /repos/{owner}/{repo}.
_REPO_URLS = """
archive_url {archive_format}{/ref}
assignees_url assignees{/user}
blobs_url git/blobs{/sha}
branches_url branches{/branch}
collaborators_url collaborators{/collaborator}
comments_url comments{/number}
commits_url commits{/sha}
compare_url compare/{base}...{head}
contents_url contents/{+path}
contributors_url contributors
deployments_url deployments
downloads_url downloads
events_url events
forks_url forks
git_commits_url git/commits{/sha}
git_refs_url git/refs{/sha}
git_tags_url git/tags{/sha}
hooks_url hooks
issue_comment_url issues/comments{/number}
issue_events_url issues/events{/number}
issues_url issues{/number}
keys_url keys{/key_id}
labels_url labels{/name}
languages_url languages
merges_url merges
milestones_url milestones{/number}
notifications_url notifications{?since,all,participating}
pulls_url pulls{/number}
releases_url releases{/id}
stargazers_url stargazers
statuses_url statuses/{sha}
subscribers_url subscribers
subscription_url subscription
tags_url tags
teams_url teams
trees_url git/trees{/sha}
"""
_NAME_OK = re.compile(r"^[^\s,]{1,256}$")


def _hash(secret: str) -> str:
    """Only hashes of credentials are kept (memory, state file): nothing to leak from a dump."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _stable_id(name: str) -> int:
    """Repository/organization ids that stay the same across runs (Python's hash() does not)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:7], 16)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _gh_time(ts: float) -> str:
    """A time as GitHub's REST answers write it (`2019-08-08T08:00:00Z`, whole seconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _registration_token() -> str:
    """GitHub's registration tokens are 29 upper-case letters and digits."""
    alphabet = string.ascii_uppercase + string.digits
    return "A" + "".join(secrets.choice(alphabet) for _ in range(28))


def scope_name(scope: str) -> str:
    """`repos/o/r` -> `o/r`, `orgs/o` -> `o` (what config.sh's --url carries after the server)."""
    return scope.split("/", 1)[1]


class Clock:
    """Wall clock plus an offset tests can move, so token expiry and "offline after N seconds" can be
    exercised without waiting. Thread-safe enough: one float written under the double's lock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        self.offset += float(seconds)
        return self.now()


class ApiError(Exception):
    """An HTTP error answer in GitHub's shape."""

    def __init__(
        self, status: int, message: str, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})
        self.body: dict[str, Any] = {"message": message, "documentation_url": DOCS_URL, "status": str(status)}
        if extra:
            self.body.update(extra)


def _not_found() -> ApiError:
    return ApiError(404, "Not Found")


def _invalid(*errors: str, message: str = "Validation Failed") -> ApiError:
    """422 in GitHub's validation-error-simple shape: `errors` is an array of strings."""
    return ApiError(422, message, {"errors": list(errors)})


def _page_params(query: dict[str, str]) -> tuple[int, int]:
    """(per_page, page) as GitHub reads them: per_page defaults to 30 and is capped at 100 without
    an error; a page below 1 or a value that is not a number counts as the default."""

    def number(key: str, default: int) -> int:
        try:
            value = int(query.get(key, "") or default)
        except ValueError:
            return default
        return value if value >= 1 else default

    return min(number("per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE), number("page", 1)


def _node_id(prefix: str, name: str) -> str:
    """A stable GraphQL-style node id (`R_kgDO…` on GitHub)."""
    return f"{prefix}_kgDO" + base64.urlsafe_b64encode(hashlib.sha256(name.encode()).digest()[:9]).decode()


@dataclass
class Label:
    id: int
    name: str
    type: str  # "read-only" | "custom"


@dataclass
class Runner:
    id: int
    name: str
    scope: str  # "repos/o/r" | "orgs/o"
    group_id: int
    labels: list[Label]
    client_id: str
    secret_hash: str
    version: str = ""
    ephemeral: bool = False
    disable_update: bool = False
    busy: bool = False
    job: dict[str, Any] | None = None
    jobs_run: int = 0
    connected: bool = True
    created_at: float = 0.0
    # Session state: not persisted (a restarted double has no sessions, like a service restart).
    session_id: str | None = field(default=None, metadata={"persist": False})
    last_seen: float | None = field(default=None, metadata={"persist": False})
    active_polls: int = field(default=0, metadata={"persist": False})


@dataclass
class Job:
    """A workflow job queued for a self-hosted runner (GitHub's `job` object, the fields the lab
    needs). `duration` and `result` are the test's script for the job's steps: how long the
    stand-in's worker runs them and the conclusion they end with. Not persisted: a restarted double
    has no queue, like its sessions."""

    id: int
    run_id: int
    run_attempt: int
    repo: str  # "owner/repo" as the repository is spelled
    name: str
    labels: list[str]
    created_at: float
    duration: float = 1.0
    result: str = "success"  # success | failure | cancelled
    status: str = "queued"  # queued | in_progress | completed
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    runner_id: int | None = None
    runner_name: str | None = None


@dataclass
class Token:
    kind: str  # registration | remove | tenant-register | tenant-remove
    scope: str
    expires_at: float


@dataclass
class Group:
    id: int
    name: str
    visibility: str = "all"
    default: bool = False


@dataclass
class Call:
    seq: int
    time: str
    clock: str
    method: str
    path: str
    query: dict[str, Any]
    status: int
    credential: str
    runner: str | None = None


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON; bytes -> raw; Path -> file; None -> empty
    headers: dict[str, str] = field(default_factory=dict)


class GitHubDouble:
    """In-process GitHub double. `start()` serves on host:port (port 0 = any free port); the
    attributes and methods below are the same controls `/_double/...` offers over HTTP."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        pats: Iterable[str] = (),
        read_pats: Iterable[str] = (),
        artifacts_dir: Path | str | None = None,
        repos: Iterable[str] = (),
        orgs: Iterable[str] = (),
        runner_groups: Iterable[str] = (),
        offline_after: float = DEFAULT_OFFLINE_AFTER,
        state_file: Path | str | None = None,
        tenant_style: str = "dotcom",
        runner_admin_flow: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        if tenant_style not in ("dotcom", "ghes"):
            raise ValueError("tenant_style must be 'dotcom' or 'ghes'")
        self.host = host
        self.port = port
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir else None
        self.offline_after = float(offline_after)
        self.state_file = Path(state_file) if state_file else None
        self.tenant_style = tenant_style
        # What runner-registration answers as `use_v2_flow`: GitHub's choice of registration flow.
        self.runner_admin_flow = bool(runner_admin_flow)
        self.clock = Clock()
        self._epoch = self.clock.now()  # created_at/updated_at of repositories and organizations
        self._log = log
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._pat_hashes = {_hash(p) for p in pats}
        self._read_pat_hashes = {_hash(p) for p in read_pats}
        # Rate limits: per credential hash, (window start, requests used); an exhausted-limit window.
        self._rate_used: dict[str, tuple[float, int]] = {}
        self._rate_limited_until = 0.0
        self._rate_limit_style = "primary"
        self._releases: list[dict[str, Any]] = []
        self._repos: set[str] = set()
        self._orgs: set[str] = set()
        self._groups: dict[str, dict[int, Group]] = {}
        self._runners: dict[int, Runner] = {}
        self._jobs: dict[int, Job] = {}
        self._tokens: dict[str, Token] = {}
        self._label_ids: dict[str, int] = {}
        self._next = {"runner": 1, "label": 1, "group": 2, "job": 1}
        self._calls: collections.deque[Call] = collections.deque(maxlen=CALL_HISTORY)
        self._seq = 0
        self._sha_cache: dict[tuple[str, int, int], str] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        if self.state_file and self.state_file.exists():
            self._load_state()
        for repo in repos:
            self.add_repo(repo)
        for org in orgs:
            self.add_org(org)
        for spec in runner_groups:
            org, _, name = spec.partition("/")
            self.add_runner_group(org, name)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> GitHubDouble:
        handler = type("Handler", (_Handler,), {"double": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._stopping = False
        # A short poll interval makes stop() quick (tests start and stop many doubles).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-double", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> GitHubDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Server URL (what config.sh's --url starts with)."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v3"

    # --- test controls ---------------------------------------------------------------------

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every recorded call, oldest first (no credential, only its kind)."""
        with self._lock:
            return [asdict(c) for c in self._calls]

    def calls_since(self, seq: int) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(c) for c in self._calls if c.seq > seq]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def add_repo(self, full_name: str) -> None:
        """Names are not case sensitive on GitHub: adding `Octo/Repo` when `octo/repo` exists is a no-op."""
        if not re.fullmatch(r"[^/\s]+/[^/\s]+", full_name):
            raise ValueError(f"{full_name!r} is not owner/repo")
        with self._lock:
            if self._canonical(f"repos/{full_name}") is None:
                self._repos.add(full_name)
                self._save()

    def add_org(self, login: str) -> None:
        if not re.fullmatch(r"[^/\s]+", login):
            raise ValueError(f"{login!r} is not an organization login")
        with self._lock:
            if self._canonical(f"orgs/{login}") is None:
                self._orgs.add(login)
                self._org_groups(login)
                self._save()

    def add_runner_group(self, org: str, name: str, visibility: str = "all") -> int:
        with self._lock:
            if self._canonical(f"orgs/{org}") is None:
                self.add_org(org)
            org = scope_name(self._require_scope(f"orgs/{org}"))
            groups = self._org_groups(org)
            for g in groups.values():
                if g.name.lower() == name.lower():
                    return g.id
            gid = self._take("group")
            groups[gid] = Group(gid, name, visibility)
            self._save()
            return gid

    def add_runner(
        self,
        name: str,
        repo: str | None = None,
        org: str | None = None,
        labels: Iterable[str] = (),
        default_labels: bool = True,
    ) -> int:
        """Register a runner directly (no stand-in): for list/pagination/label tests."""
        with self._cond:
            scope = self._require_scope(self._scope_of(repo, org))
            if self._find(scope, name):
                raise ValueError(f"runner {name!r} already exists in {scope}")
            system = ["self-hosted", "Linux", "X64"] if default_labels else []
            runner = Runner(
                id=self._take("runner"),
                name=name,
                scope=scope,
                group_id=1,
                labels=self._labels(system, list(labels)),
                client_id=str(uuid.uuid4()),
                secret_hash=_hash(secrets.token_urlsafe(32)),
                created_at=self.clock.now(),
            )
            self._runners[runner.id] = runner
            self._save()
            return runner.id

    def set_busy(self, name: str, busy: bool = True, job: str = DEFAULT_JOB_NAME, scope: str | None = None) -> dict:
        """GitHub assigning a job to the runner (busy) or the job finishing (idle). The stand-in's
        long-poll returns at once, so its log shows "Running job"/"completed" within a moment."""
        with self._cond:
            runner = self._by_name(name, scope)
            if busy:
                if not runner.busy:
                    runner.job = {"id": self._take("job"), "name": job}
                    runner.busy = True
            else:
                if runner.busy:
                    runner.jobs_run += 1
                runner.busy = False
                runner.job = None
            self._cond.notify_all()
            self._save()
            return self._state_runner(runner)

    def queue_job(
        self,
        repo: str,
        labels: Iterable[str],
        name: str = DEFAULT_JOB_NAME,
        duration: float = 1.0,
        result: str = "success",
    ) -> dict[str, Any]:
        """A workflow job with `runs-on: labels` queued in `repo`. GitHub hands it to an online,
        idle runner of the repository (or of its organization) whose labels include every one of
        `labels`, compared case-insensitively, when that runner next asks for a message; until
        then it waits (status `queued`)."""
        if result not in ("success", "failure", "cancelled"):
            raise ValueError("result must be success, failure or cancelled")
        wanted = [str(label) for label in labels]
        if not wanted:
            raise ValueError("a job needs at least one runs-on label")
        with self._cond:
            scope = self._require_scope(self._scope_of(repo, None))
            job_id = self._take("job")
            job = Job(
                id=job_id,
                run_id=1000 + job_id,
                run_attempt=1,
                repo=scope_name(scope),
                name=name,
                labels=wanted,
                created_at=self.clock.now(),
                duration=float(duration),
                result=result,
            )
            self._jobs[job.id] = job
            self._cond.notify_all()
            return self._job_state(job)

    def job(self, job_id: int) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(int(job_id))
            if job is None:
                raise _not_found()
            return self._job_state(job)

    def _job_state(self, job: Job) -> dict[str, Any]:
        return asdict(job) | {
            "created": _iso(job.created_at),
            "started": _iso(job.started_at) if job.started_at is not None else None,
            "completed": _iso(job.completed_at) if job.completed_at is not None else None,
            "queue_seconds": (job.started_at - job.created_at) if job.started_at is not None else None,
        }

    def _eligible(self, runner: Runner, job: Job) -> bool:
        owner = job.repo.split("/", 1)[0]
        if runner.scope.lower() not in (f"repos/{job.repo}".lower(), f"orgs/{owner}".lower()):
            return False
        have = {label.name.lower() for label in runner.labels}
        return all(label.lower() in have for label in job.labels)

    def _dispatch(self, runner: Runner) -> None:
        """Called while `runner` asks for a message (it is online): the oldest queued job it may
        take becomes its job."""
        if runner.job is not None or runner.busy or not runner.connected or not runner.session_id:
            return
        for job in sorted(self._jobs.values(), key=lambda j: j.id):
            if job.status == "queued" and self._eligible(runner, job):
                job.status = "in_progress"
                job.started_at = self.clock.now()
                job.runner_id, job.runner_name = runner.id, runner.name
                runner.busy = True
                runner.job = {
                    "id": job.id,
                    "name": job.name,
                    "run_id": job.run_id,
                    "run_attempt": job.run_attempt,
                    "repository": job.repo,
                    "api_url": self.api_url,
                    "server_url": self.url,
                    "duration": job.duration,
                    "result": job.result,
                }
                self._cond.notify_all()
                self._save()
                return

    def _finish_job(self, runner: Runner, job_id: int, conclusion: str) -> None:
        """The runner reports its job done (or GitHub gives up on it): the runner is idle again."""
        job = self._jobs.get(job_id)
        if job is not None and job.status != "completed":
            job.status, job.conclusion, job.completed_at = "completed", conclusion, self.clock.now()
        if runner.job and runner.job.get("id") == job_id:
            runner.jobs_run += 1
            runner.busy = False
            runner.job = None
        self._cond.notify_all()
        self._save()

    def _abandon_job(self, runner: Runner) -> None:
        """A runner that ends its session or starts a new one while a queued job of the double is
        its job lost that job: GitHub fails it."""
        if runner.job and runner.job.get("id") in self._jobs:
            self._finish_job(runner, int(runner.job["id"]), "failure")

    def _job_json(self, job: Job) -> dict[str, Any]:
        """GitHub's `job` object (components/schemas/job). While the job runs, its steps are
        reported as they finish (the runner uploads its timeline): the main step ends
        `duration` seconds after the start, with the job's scripted result."""
        base = f"{self.api_url}/repos/{job.repo}/actions"
        html = f"{self.url}/{job.repo}/actions/runs/{job.run_id}/job/{job.id}"
        steps: list[dict[str, Any]] = []
        if job.started_at is not None:
            steps.append(
                {
                    "name": "Set up job",
                    "status": "completed",
                    "conclusion": "success",
                    "number": 1,
                    "started_at": _gh_time(job.started_at),
                    "completed_at": _gh_time(job.started_at),
                }
            )
            done = job.status == "completed" or self.clock.now() >= job.started_at + job.duration
            steps.append(
                {
                    "name": "Run the job's steps",
                    "status": "completed" if done else "in_progress",
                    "conclusion": job.result if done else None,
                    "number": 2,
                    "started_at": _gh_time(job.started_at),
                    "completed_at": _gh_time(job.started_at + job.duration) if done else None,
                }
            )
        return {
            "id": job.id,
            "run_id": job.run_id,
            "run_url": f"{base}/runs/{job.run_id}",
            "run_attempt": job.run_attempt,
            "node_id": _node_id("CR", str(job.id)),
            "head_sha": hashlib.sha1(str(job.run_id).encode()).hexdigest(),  # noqa: S324 - an id, not security
            "url": f"{base}/jobs/{job.id}",
            "html_url": html,
            "status": job.status,
            "conclusion": job.conclusion,
            "created_at": _gh_time(job.created_at),
            "started_at": _gh_time(job.started_at if job.started_at is not None else job.created_at),
            "completed_at": _gh_time(job.completed_at) if job.completed_at is not None else None,
            "name": job.name,
            "steps": steps,
            "check_run_url": f"{self.api_url}/repos/{job.repo}/check-runs/{job.id}",
            "labels": list(job.labels),
            "runner_id": job.runner_id,
            "runner_name": job.runner_name,
            "runner_group_id": 1 if job.runner_id is not None else None,
            "runner_group_name": "Default" if job.runner_id is not None else None,
            "workflow_name": "lab",
            "head_branch": "main",
        }

    def _jobs_api(self, method: str, path: str, query: dict) -> Response | None:
        """`GET /repos/{o}/{r}/actions/runs/{run_id}[/attempts/{n}]/jobs` and `GET …/actions/jobs/{id}`:
        answered without a credential, as GitHub answers them for a public repository."""
        m = re.fullmatch(
            r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/actions/(?:runs/(?P<run>\d+)(?:/attempts/(?P<att>\d+))?/jobs|jobs/(?P<job>\d+))",
            path,
        )
        if not m or method != "GET":
            return None
        with self._lock:
            scope = self._canonical(f"repos/{m['o']}/{m['r']}")
            if scope is None:
                raise _not_found()
            repo = scope_name(scope)
            if m["job"]:
                job = self._jobs.get(int(m["job"]))
                if job is None or job.repo != repo:
                    raise _not_found()
                return Response(200, self._job_json(job))
            run, attempt = int(m["run"]), int(m["att"] or 1)
            jobs = [
                j
                for j in sorted(self._jobs.values(), key=lambda j: j.id)
                if j.repo == repo and j.run_id == run and j.run_attempt == attempt
            ]
            if not jobs:
                raise _not_found()
            per_page, page = _page_params(query)
            chunk = jobs[(page - 1) * per_page : page * per_page]
            return Response(
                200,
                {"total_count": len(jobs), "jobs": [self._job_json(j) for j in chunk]},
                self._links(path.lstrip("/"), query, per_page, page, len(jobs)),
            )

    def set_connected(self, name: str, connected: bool, scope: str | None = None) -> dict:
        """Drop or restore the runner's connection to the runner service: while dropped, every call
        made with its credential fails with 503, so the runner goes offline and logs a connect error."""
        with self._cond:
            runner = self._by_name(name, scope)
            runner.connected = bool(connected)
            self._cond.notify_all()
            self._save()
            return self._state_runner(runner)

    def runner_status(self, runner: Runner) -> str:
        with self._lock:
            if not runner.session_id or not runner.connected:
                return "offline"
            if runner.active_polls > 0:
                return "online"
            if runner.last_seen is not None and self.clock.now() - runner.last_seen <= self.offline_after:
                return "online"
            return "offline"

    def state(self) -> dict[str, Any]:
        """Registered runners and scopes, for assertions."""
        with self._lock:
            return {
                "now": _iso(self.clock.now()),
                "offline_after": self.offline_after,
                "repos": sorted(self._repos),
                "orgs": sorted(self._orgs),
                "runner_groups": {
                    org: [asdict(g) for g in sorted(gs.values(), key=lambda g: g.id)]
                    for org, gs in self._groups.items()
                },
                "runners": [self._state_runner(r) for r in sorted(self._runners.values(), key=lambda r: r.id)],
                "jobs": [self._job_state(j) for j in sorted(self._jobs.values(), key=lambda j: j.id)],
            }

    def options(self) -> dict[str, Any]:
        """Instance options a test may change while the double runs (`/_double/options`)."""
        return {"runner_admin_flow": self.runner_admin_flow, "tenant_style": self.tenant_style}

    def runner(self, name: str, scope: str | None = None) -> dict[str, Any]:
        with self._lock:
            return self._state_runner(self._by_name(name, scope))

    # --- internals: model ------------------------------------------------------------------

    def _take(self, key: str) -> int:
        value = self._next[key]
        self._next[key] = value + 1
        return value

    def _org_groups(self, org: str) -> dict[int, Group]:
        return self._groups.setdefault(org, {1: Group(1, "Default", "all", True)})

    @staticmethod
    def _scope_of(repo: str | None, org: str | None) -> str:
        if bool(repo) == bool(org):
            raise ValueError("give exactly one of repo='owner/name' or org='login'")
        return f"repos/{repo}" if repo else f"orgs/{org}"

    def _canonical(self, scope: str) -> str | None:
        """The scope as it was created, found ignoring case (owner, repository and organization
        names are not case sensitive on GitHub); None if there is no such repository/org."""
        kind, _, name = scope.partition("/")
        if kind not in ("repos", "orgs") or not name:
            return None
        wanted = name.lower()
        for known in self._repos if kind == "repos" else self._orgs:
            if known.lower() == wanted:
                return f"{kind}/{known}"
        return None

    def _scope_exists(self, scope: str) -> bool:
        return self._canonical(scope) is not None

    def _require_scope(self, scope: str) -> str:
        canonical = self._canonical(scope)
        if canonical is None:
            raise ValueError(f"{scope} is not known to the double")
        return canonical

    def _find(self, scope: str, name: str) -> Runner | None:
        for r in self._runners.values():
            if r.scope == scope and r.name.lower() == name.lower():
                return r
        return None

    def _by_name(self, name: str, scope: str | None) -> Runner:
        if scope is not None:
            scope = self._canonical(scope) or scope
        found = [
            r for r in self._runners.values() if r.name.lower() == name.lower() and (scope is None or r.scope == scope)
        ]
        if not found:
            raise ApiError(404, f"no runner named {name!r}" + (f" in {scope}" if scope else ""))
        if len(found) > 1:
            raise ApiError(409, f"runner name {name!r} exists in several scopes; pass scope")
        return found[0]

    def _label(self, name: str, kind: str) -> Label:
        key = name.lower()
        if key not in self._label_ids:
            self._label_ids[key] = self._take("label")
        return Label(self._label_ids[key], name, kind)

    def _labels(self, system: list[str], custom: list[str]) -> list[Label]:
        out: list[Label] = []
        seen: set[str] = set()
        for names, kind in ((system, "read-only"), (custom, "custom")):
            for n in names:
                if n.lower() not in seen:
                    seen.add(n.lower())
                    out.append(self._label(n, kind))
        return out

    def _rest_runner(self, r: Runner) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": r.id,
            "name": r.name,
            "os": "linux",
            "status": self.runner_status(r),
            "busy": r.busy,
            "ephemeral": r.ephemeral,
            "labels": [asdict(label) for label in r.labels],
            # "only set if the runner has connected to the service at least once" (the description)
            "version": r.version or None,
        }
        if r.scope.startswith("orgs/"):
            body["runner_group_id"] = r.group_id
        return body

    def _state_runner(self, r: Runner) -> dict[str, Any]:
        group = "Default"
        if r.scope.startswith("orgs/"):
            g = self._groups.get(scope_name(r.scope), {}).get(r.group_id)
            group = g.name if g else "?"
        return {
            "id": r.id,
            "name": r.name,
            "scope": r.scope,
            "group": group,
            "labels": [asdict(label) for label in r.labels],
            "status": self.runner_status(r),
            "busy": r.busy,
            "job": r.job,
            "jobs_run": r.jobs_run,
            "connected": r.connected,
            "session": r.session_id is not None,
            "version": r.version,
            "ephemeral": r.ephemeral,
            "disable_update": r.disable_update,
        }

    def _tenant_base(self, scope: str) -> str:
        """Path of the runner service for a scope. actions/runner names its systemd unit after the
        first path segment of this URL unless the host is *.githubusercontent.com: on GHES that is
        `_services` (tenant_style="ghes"); "dotcom" yields the repo/org name, as on github.com."""
        safe = re.sub(r"[^0-9A-Za-z._-]", "-", scope_name(scope))
        if self.tenant_style == "ghes":
            return f"/_services/pipelines/{safe}"
        return f"/{safe}"

    def _broker_base(self, scope: str) -> str:
        """Path of the runner-admin flow's `server_url` (the real runner's broker, serverUrlV2): the
        same private session protocol as the runner service, at its own path."""
        return "/_broker/" + re.sub(r"[^0-9A-Za-z._-]", "-", scope_name(scope))

    def _scope_for_tenant_base(self, base: str) -> tuple[str, bool] | None:
        """(scope, is-broker) for the path in front of the runner-service API."""
        for scope in [f"repos/{r}" for r in self._repos] + [f"orgs/{o}" for o in self._orgs]:
            if self._tenant_base(scope) == base:
                return scope, False
            if self._broker_base(scope) == base:
                return scope, True
        return None

    def _authorization_url(self, r: Runner) -> str:
        return f"{self.url}{self._tenant_base(r.scope)}/_apis/oauth2/token/{r.client_id}"

    def _delete_runner(self, r: Runner) -> None:
        self._runners.pop(r.id, None)
        r.session_id = None
        self._cond.notify_all()

    # --- internals: state file -------------------------------------------------------------

    def _save(self) -> None:
        if not self.state_file:
            return
        persist_runner_fields = [f for f in Runner.__dataclass_fields__.values() if f.metadata.get("persist", True)]
        data = {
            "version": 1,
            "clock_offset": self.clock.offset,
            "repos": sorted(self._repos),
            "orgs": sorted(self._orgs),
            "groups": {org: [asdict(g) for g in gs.values()] for org, gs in self._groups.items()},
            "runners": [
                {f.name: getattr(r, f.name) for f in persist_runner_fields}
                | {"labels": [asdict(label) for label in r.labels]}
                for r in self._runners.values()
            ],
            "tokens": {h: asdict(t) for h, t in self._tokens.items() if t.expires_at > self.clock.now()},
            "label_ids": self._label_ids,
            "next": self._next,
        }
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.state_file)

    def _load_state(self) -> None:
        if self.state_file is None:
            return
        data = json.loads(self.state_file.read_text())
        self.clock.offset = float(data.get("clock_offset", 0.0))
        self._repos = set(data.get("repos", []))
        self._orgs = set(data.get("orgs", []))
        self._groups = {org: {g["id"]: Group(**g) for g in groups} for org, groups in data.get("groups", {}).items()}
        for raw in data.get("runners", []):
            raw = dict(raw)
            raw["labels"] = [Label(**label) for label in raw["labels"]]
            runner = Runner(**raw)
            self._runners[runner.id] = runner
        self._tokens = {h: Token(**t) for h, t in data.get("tokens", {}).items()}
        self._label_ids = dict(data.get("label_ids", {}))
        self._next.update(data.get("next", {}))

    # --- internals: credentials ------------------------------------------------------------

    def _credential(self, header: str | None) -> tuple[str, str | None, str | None]:
        """(kind, hash-or-None, runner-client-id-or-None) for an Authorization header. The kind is
        what gets recorded; the credential itself never leaves this function."""
        if not header:
            return "none", None, None
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        user = None
        if scheme == "basic":
            try:
                user, _, value = base64.b64decode(value, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return "invalid", None, None
        elif scheme not in ("token", "bearer", "remoteauth"):
            return "invalid", None, None
        if not value:
            return "invalid", None, None
        digest = _hash(value)
        if digest in self._pat_hashes:
            return "pat", digest, None
        if digest in self._read_pat_hashes:
            return "read-pat", digest, None
        token = self._tokens.get(digest)
        if token:
            kind = f"{token.kind}-token"
            if token.expires_at <= self.clock.now():
                kind = f"expired-{kind}"
            return kind, digest, None
        if user:
            for r in self._runners.values():
                if r.client_id == user and hmac.compare_digest(r.secret_hash, digest):
                    return "runner-credential", digest, user
            return "invalid-runner-credential", None, user
        return "invalid", None, None

    def _mint(self, kind: str, scope: str, ttl: float) -> tuple[str, float]:
        token = _registration_token() if kind in ("registration", "remove") else secrets.token_urlsafe(32)
        expires = self.clock.now() + ttl
        self._tokens[_hash(token)] = Token(kind, scope, expires)
        now = self.clock.now()
        self._tokens = {h: t for h, t in self._tokens.items() if t.expires_at > now - 86400}
        self._save()
        return token, expires

    # --- request handling ------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Route one request; records it (except `/_double/` controls) and returns the answer."""
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            kind, digest, client_id = self._credential(headers.get("authorization"))
        scheme = (headers.get("authorization") or "").strip().partition(" ")[0].lower()
        if path.startswith("/_double/"):
            try:
                return self._control(method, path, query, body)
            except ApiError as e:
                return Response(e.status, e.body)
            except (ValueError, KeyError, TypeError) as e:
                return Response(400, {"message": f"bad control request: {e}"})
        runner_name: str | None = None
        try:
            if path.startswith("/api/v3/") or path == "/api/v3":
                limited = self._rate_limited(kind, digest)
                resp = limited or self._api(method, path[len("/api/v3") :] or "/", query, body, kind, digest, scheme)
            elif STANDIN_API in path + "/":
                resp, runner_name = self._tenant(method, path, query, body, kind, digest, client_id)
            elif method in ("GET", "HEAD"):
                resp = self._download(path)
            else:
                raise _not_found()
        except ApiError as e:
            resp = Response(e.status, e.body, dict(e.headers))
        except (ValueError, KeyError, TypeError) as e:
            resp = Response(400, {"message": f"Problems parsing JSON: {e}", "documentation_url": DOCS_URL})
        if kind in ("pat", "read-pat") and (path.startswith("/api/v3/") or path == "/api/v3"):
            resp.headers.update(self._rate_headers(digest))
        self._record(method, path, query, resp.status, kind, runner_name)
        resp.headers.setdefault("X-GitHub-Request-Id", f"{secrets.token_hex(2).upper()}:{secrets.token_hex(4).upper()}")
        return resp

    def _record(self, method: str, path: str, query: dict, status: int, kind: str, runner: str | None) -> None:
        with self._lock:
            self._seq += 1
            call = Call(
                seq=self._seq,
                time=_iso(time.time()),
                clock=_iso(self.clock.now()),
                method=method,
                path=path,
                query=query,
                status=status,
                credential=kind,
                runner=runner,
            )
            self._calls.append(call)
        if self._log:
            self._log(f"{call.time} {method} {path} -> {status} [{kind}]")

    @staticmethod
    def _json(body: bytes) -> Any:
        if not body.strip():
            return {}
        return json.loads(body)

    # REST -----------------------------------------------------------------------------------

    def _api(
        self, method: str, path: str, query: dict, body: bytes, kind: str, digest: str | None, scheme: str
    ) -> Response:
        if path == "/actions/runner-registration" and method == "POST":
            return self._runner_registration(body, kind, digest)
        if path == "/actions/runners/register" and method == "POST":
            return self._runner_admin_register(body, kind, digest, scheme)
        jobs = self._jobs_api(method, path, query)
        if jobs is not None:
            return jobs
        if kind == "none":
            raise ApiError(401, "Requires authentication")
        # The runner-admin flow authenticates its few calls with the registration/remove token
        # itself (`RemoteAuth <token>`, RunnerDotcomServer.cs); anywhere else such a token is no
        # REST credential.
        admin = scheme == "remoteauth" and kind.removeprefix("expired-") in ("registration-token", "remove-token")
        if kind not in ("pat", "read-pat") and not admin:
            raise ApiError(401, "Bad credentials")
        m = re.fullmatch(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/releases(?P<latest>/latest)?", path)
        if m and method == "GET" and not admin:
            return self._releases_json(f"{m['o']}/{m['r']}", bool(m["latest"]), query, path)
        if kind == "read-pat" and method != "GET":
            # A fine-grained token with read access: GitHub names the permission it lacks.
            needed = "organization_self_hosted_runners" if path.startswith("/orgs/") else "administration"
            raise ApiError(
                403,
                "Resource not accessible by personal access token",
                headers={"X-Accepted-GitHub-Permissions": f"{needed}=write"},
            )
        with self._cond:
            if not admin:
                m = re.fullmatch(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)", path)
                if m and method == "GET":
                    return self._repo_json(f"{m['o']}/{m['r']}")
                m = re.fullmatch(r"/orgs/(?P<o>[^/]+)", path)
                if m and method == "GET":
                    return self._org_json(m["o"])
            m = re.fullmatch(rf"/{_SCOPE}/actions/(?P<what>runners|runner-groups)(?P<rest>/.*)?", path)
            if not m:
                raise _not_found()
            scope = self._canonical(m["scope"])
            if scope is None:
                raise _not_found()
            rest = m["rest"] or ""
            if admin:
                if method == "GET" and rest == "":
                    needed = "registration"  # GetRunnerGroupsAsync, GetRunnerByNameAsync
                elif method == "DELETE" and m["what"] == "runners" and re.fullmatch(r"/\d+", rest):
                    needed = "remove"  # DeleteRunnerAsync
                else:
                    needed = None
                token = self._tokens.get(digest or "")
                live = token is not None and not kind.startswith("expired-")
                if needed is None or not live or token is None or token.kind != needed or token.scope != scope:
                    raise _not_found()  # like runner-registration: a token that does not fit finds nothing
            if m["what"] == "runner-groups":
                if scope.startswith("repos/"):
                    if not admin:
                        raise _not_found()  # no public REST call; only the runner-admin flow asks
                    if rest or method != "GET":
                        raise _not_found()
                    default = {"id": 1, "name": "Default", "default": True, "is_hosted": False}
                    return Response(200, {"total_count": 1, "runner_groups": [default]})
                return self._runner_groups(method, scope_name(scope), rest.strip("/") or None, query, body, admin)
            return self._runners_api(method, scope, rest, query, body)

    # Rate limits (GitHub's REST docs, "Rate limits for the REST API") ------------------------

    def add_read_pat(self, token: str) -> None:
        """Accept `token` from now on as a fine-grained token with read access only."""
        with self._lock:
            self._read_pat_hashes.add(_hash(token))

    def rate_limit(self, seconds: float, style: str = "primary") -> dict[str, Any]:
        """For `seconds` of wall time every REST call with a PAT is refused as rate limited:
        `primary` = 403 with `X-RateLimit-Remaining: 0` and the reset time, `secondary` = 429 with
        `Retry-After`. 0 seconds ends it."""
        if style not in ("primary", "secondary"):
            raise ValueError("style must be 'primary' or 'secondary'")
        with self._lock:
            self._rate_limited_until = time.time() + float(seconds)
            self._rate_limit_style = style
            return {"until": self._rate_limited_until, "style": style}

    def _rate_window(self, digest: str | None) -> tuple[float, int]:
        now = time.time()
        start, used = self._rate_used.get(digest or "", (now, 0))
        if now - start >= 3600:
            start, used = now, 0
        return start, used

    def _rate_limited(self, kind: str, digest: str | None) -> Response | None:
        """The answer to a PAT's REST call while its limit is exhausted, else None (and the call
        counts against the limit). Wall time, like GitHub's reset timestamps."""
        if kind not in ("pat", "read-pat"):
            return None
        with self._lock:
            now = time.time()
            start, used = self._rate_window(digest)
            if now < self._rate_limited_until:
                wait = max(1, int(self._rate_limited_until - now + 0.999))
                if self._rate_limit_style == "secondary":
                    message = (
                        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
                    )
                    return Response(429, ApiError(429, message).body, {"Retry-After": str(wait)})
                self._rate_used[digest or ""] = (start, RATE_LIMIT)
                return Response(403, ApiError(403, "API rate limit exceeded for user ID 1.").body)
            self._rate_used[digest or ""] = (start, min(RATE_LIMIT, used + 1))
            return None

    def _rate_headers(self, digest: str | None) -> dict[str, str]:
        with self._lock:
            start, used = self._rate_window(digest)
            reset = int(start + 3600)
            if time.time() < self._rate_limited_until and self._rate_limit_style == "primary":
                used, reset = RATE_LIMIT, int(self._rate_limited_until + 0.999)
            return {
                "X-RateLimit-Limit": str(RATE_LIMIT),
                "X-RateLimit-Remaining": str(RATE_LIMIT - used),
                "X-RateLimit-Reset": str(reset),
                "X-RateLimit-Used": str(used),
                "X-RateLimit-Resource": "core",
            }

    # Releases of actions/runner (repos/list-releases, repos/get-latest-release) ------------

    def add_release(self, version: str, published_at: float | None = None, prerelease: bool = False) -> dict:
        """Announce an `actions/runner` release `v<version>` (published now unless given)."""
        with self._lock:
            published = self.clock.now() if published_at is None else float(published_at)
            rid = 100_000 + len(self._releases) + 1
            tag = f"v{version}"
            api = f"{self.api_url}/repos/{RELEASES_REPO}"
            stamp = datetime.fromtimestamp(published, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # GitHub's release format
            release = {
                "url": f"{api}/releases/{rid}",
                "html_url": f"{self.url}/{RELEASES_REPO}/releases/tag/{tag}",
                "assets_url": f"{api}/releases/{rid}/assets",
                "upload_url": f"{self.url}/api/uploads/repos/{RELEASES_REPO}/releases/{rid}/assets{{?name,label}}",
                "tarball_url": f"{api}/tarball/{tag}",
                "zipball_url": f"{api}/zipball/{tag}",
                "id": rid,
                "node_id": _node_id("RE", tag),
                "tag_name": tag,
                "target_commitish": "main",
                "name": tag,
                "body": f"runner {tag}",
                "draft": False,
                "prerelease": bool(prerelease),
                "created_at": stamp,
                "published_at": stamp,
                "author": self._user_json("actions", "Organization"),
                "assets": [],
            }
            self._releases.append(release)
            return release

    def _releases_json(self, full: str, latest: bool, query: dict, path: str) -> Response:
        if full.lower() != RELEASES_REPO or not self._releases:
            raise _not_found()
        newest_first = sorted(self._releases, key=lambda r: (r["created_at"], r["id"]), reverse=True)
        if latest:
            full_releases = [r for r in newest_first if not r["prerelease"] and not r["draft"]]
            if not full_releases:
                raise _not_found()
            return Response(200, full_releases[0])
        per_page, page = _page_params(query)
        start = (page - 1) * per_page
        headers = self._links(path.lstrip("/"), query, per_page, page, len(newest_first))
        return Response(200, newest_first[start : start + per_page], headers)

    def _user_json(self, login: str, kind: str) -> dict[str, Any]:
        """GitHub's simple-user object for a repository's owner (a user or an organization)."""
        api = f"{self.api_url}/users/{login}"
        return {
            "login": login,
            "id": _stable_id(login),
            "node_id": _node_id("O" if kind == "Organization" else "U", login),
            "avatar_url": f"{self.url}/avatars/u/{_stable_id(login)}",
            "gravatar_id": "",
            "url": api,
            "html_url": f"{self.url}/{login}",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": kind,
            "site_admin": False,
        }

    def _repo_json(self, full: str) -> Response:
        """GitHub's full-repository object: every field the description requires, with the names
        as they were created (the request may differ in case)."""
        scope = self._canonical(f"repos/{full}")
        if scope is None:
            raise _not_found()
        full = scope_name(scope)
        owner, name = full.split("/")
        api = f"{self.api_url}/repos/{full}"
        created = _iso(self._epoch)
        host = urlsplit(self.url).netloc
        body: dict[str, Any] = {
            "id": _stable_id(full),
            "node_id": _node_id("R", full),
            "name": name,
            "full_name": full,
            "owner": self._user_json(owner, "Organization" if self._canonical(f"orgs/{owner}") else "User"),
            "private": True,
            "visibility": "private",
            "html_url": f"{self.url}/{full}",
            "description": None,
            "fork": False,
            "url": api,
            "homepage": None,
            "language": None,
            "forks_count": 0,
            "forks": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "watchers": 0,
            "size": 0,
            "default_branch": "main",
            "open_issues_count": 0,
            "open_issues": 0,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": True,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "mirror_url": None,
            "license": None,
            "pushed_at": created,
            "created_at": created,
            "updated_at": created,
            "permissions": {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True},
            "allow_forking": False,
            "web_commit_signoff_required": False,
            "network_count": 0,
            "subscribers_count": 0,
            "git_url": f"git://{host}/{full}.git",
            "ssh_url": f"git@{urlsplit(self.url).hostname}:{full}.git",
            "clone_url": f"{self.url}/{full}.git",
            "svn_url": f"{self.url}/{full}",
        }
        for line in _REPO_URLS.strip().splitlines():
            key, suffix = line.split()
            body[key] = f"{api}/{suffix}" if suffix != "-" else api
        return Response(200, body)

    def _org_json(self, login: str) -> Response:
        """GitHub's organization-full object (every required field), with the login as created."""
        scope = self._canonical(f"orgs/{login}")
        if scope is None:
            raise _not_found()
        login = scope_name(scope)
        api = f"{self.api_url}/orgs/{login}"
        created = _iso(self._epoch)
        repos = sum(1 for r in self._repos if r.split("/")[0].lower() == login.lower())
        return Response(
            200,
            {
                "login": login,
                "id": _stable_id(login),
                "node_id": _node_id("O", login),
                "url": api,
                "repos_url": f"{api}/repos",
                "events_url": f"{api}/events",
                "hooks_url": f"{api}/hooks",
                "issues_url": f"{api}/issues",
                "members_url": f"{api}/members{{/member}}",
                "public_members_url": f"{api}/public_members{{/member}}",
                "avatar_url": f"{self.url}/avatars/u/{_stable_id(login)}",
                "description": None,
                "html_url": f"{self.url}/{login}",
                "has_organization_projects": True,
                "has_repository_projects": True,
                "public_repos": 0,
                "public_gists": 0,
                "followers": 0,
                "following": 0,
                "type": "Organization",
                "total_private_repos": repos,
                "owned_private_repos": repos,
                "created_at": created,
                "updated_at": created,
                "archived_at": None,
            },
        )

    def _runner_groups(
        self, method: str, org: str, gid: str | None, query: dict, body: bytes, admin: bool = False
    ) -> Response:
        groups = self._org_groups(org)
        if gid is None and method == "GET":
            items = [self._group_json(org, g, admin) for g in sorted(groups.values(), key=lambda g: g.id)]
            per_page, page = _page_params(query)
            start = (page - 1) * per_page
            headers = self._links(f"orgs/{org}/actions/runner-groups", query, per_page, page, len(items))
            return Response(200, {"total_count": len(items), "runner_groups": items[start : start + per_page]}, headers)
        if admin:
            raise _not_found()
        if gid is None and method == "POST":
            data = self._json(body)
            name = data.get("name") if isinstance(data, dict) else None
            if not isinstance(name, str) or not name.strip():
                raise _invalid("name is missing")
            visibility = data.get("visibility", "all")
            if visibility not in ("all", "selected", "private"):
                raise _invalid(f"visibility {visibility!r} is not one of all, selected, private")
            if any(g.name.lower() == name.lower() for g in groups.values()):
                raise _invalid(f"a runner group named {name!r} already exists")
            new_id = self.add_runner_group(org, name, visibility)
            return Response(201, self._group_json(org, groups[new_id]))
        if not gid or not gid.isdigit():
            raise _not_found()
        group = groups.get(int(gid))
        if group is None:
            raise _not_found()
        if method == "GET":
            return Response(200, self._group_json(org, group))
        if method == "DELETE":
            if group.default:
                raise _invalid("The default runner group cannot be deleted")
            for r in self._runners.values():
                if r.scope == f"orgs/{org}" and r.group_id == group.id:
                    r.group_id = 1
            del groups[group.id]
            self._save()
            return Response(204)
        raise _not_found()

    def _group_json(self, org: str, g: Group, admin: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": g.id,
            "name": g.name,
            "visibility": g.visibility,
            "default": g.default,
            "runners_url": f"{self.api_url}/orgs/{org}/actions/runner-groups/{g.id}/runners",
            "inherited": False,
            "allows_public_repositories": False,
            "restricted_to_workflows": False,
            "selected_workflows": [],
            "workflow_restrictions_read_only": False,
        }
        if g.visibility == "selected":
            body["selected_repositories_url"] = f"{body['runners_url'].removesuffix('/runners')}/repositories"
        if admin:
            body["is_hosted"] = False  # RunnerGroup.cs `IsHosted`: the runner skips hosted groups
        return body

    def _runners_api(self, method: str, scope: str, rest: str, query: dict, body: bytes) -> Response:
        if rest in ("/registration-token", "/remove-token") and method == "POST":
            kind = "registration" if rest == "/registration-token" else "remove"
            token, expires = self._mint(kind, scope, TOKEN_TTL_SECONDS)
            return Response(201, {"token": token, "expires_at": _iso(expires)})
        if rest == "" and method == "GET":
            return self._list_runners(scope, query)
        if rest == "/downloads" and method == "GET":
            return Response(200, self._downloads())
        m = re.fullmatch(r"/(?P<id>\d+)(?P<sub>/labels(?:/(?P<label>[^/]+))?)?", rest)
        if not m:
            raise _not_found()
        runner = self._runners.get(int(m["id"]))
        if runner is None or runner.scope != scope:
            raise _not_found()
        if m["sub"] is None:
            if method == "GET":
                return Response(200, self._rest_runner(runner))
            if method == "DELETE":
                if runner.busy:
                    raise ApiError(422, f'Bad request - Runner "{runner.name}" is still running a job"')
                self._delete_runner(runner)
                self._save()
                return Response(204)
            raise _not_found()
        return self._labels_api(method, runner, unquote(m["label"]) if m["label"] else None, body)

    def _links(self, path: str, query: dict, per_page: int, page: int, total: int) -> dict[str, str]:
        """GitHub's `Link` header (prev, next, last, first) for a page of `total` items."""
        last = max(1, -(-total // per_page))
        links = []

        def link(p: int, rel: str) -> str:
            q = dict(query, per_page=str(per_page), page=str(p))
            return f'<{self.api_url}/{path}?{urlencode(q, quote_via=quote)}>; rel="{rel}"'

        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < last:
            links.append(link(page + 1, "next"))
            links.append(link(last, "last"))
        if page > 1:
            links.append(link(1, "first"))
        return {"Link": ", ".join(links)} if links else {}

    def _list_runners(self, scope: str, query: dict) -> Response:
        per_page, page = _page_params(query)
        name = query.get("name")
        matching = sorted(
            (r for r in self._runners.values() if r.scope == scope and (not name or r.name == name)),
            key=lambda r: r.id,
        )
        start = (page - 1) * per_page
        items = [self._rest_runner(r) for r in matching[start : start + per_page]]
        headers = self._links(f"{scope}/actions/runners", query, per_page, page, len(matching))
        return Response(200, {"total_count": len(matching), "runners": items}, headers)

    def _labels_api(self, method: str, runner: Runner, label: str | None, body: bytes) -> Response:
        def answer(labels: list[Label]) -> Response:
            return Response(200, {"total_count": len(labels), "labels": [asdict(lb) for lb in labels]})

        def requested(allow_empty: bool) -> list[str]:
            data = self._json(body)
            names = data.get("labels") if isinstance(data, dict) else None
            if not isinstance(names, list):
                raise _invalid("labels must be an array of label names")
            bad = [n for n in names if not (isinstance(n, str) and _NAME_OK.match(n))]
            if bad:
                raise _invalid(*(f"{n!r} is not a valid label name" for n in bad[:10]))
            if len(names) > MAX_LABELS:
                raise _invalid(f"at most {MAX_LABELS} labels, got {len(names)}")
            if not names and not allow_empty:
                raise _invalid("labels must name at least one label")
            return names

        read_only = [lb for lb in runner.labels if lb.type == "read-only"]
        custom = [lb.name for lb in runner.labels if lb.type == "custom"]
        if label is None:
            if method == "GET":
                return answer(runner.labels)
            if method == "PUT":
                runner.labels = self._labels([lb.name for lb in read_only], requested(allow_empty=True))
            elif method == "POST":
                runner.labels = self._labels([lb.name for lb in read_only], custom + requested(allow_empty=False))
            elif method == "DELETE":
                runner.labels = list(read_only)
            else:
                raise _not_found()
            self._save()
            return answer(runner.labels)
        if method != "DELETE":
            raise _not_found()
        match = [lb for lb in runner.labels if lb.name.lower() == label.lower()]
        if not match:
            raise _not_found()
        if match[0].type == "read-only":
            raise ApiError(422, f"Cannot remove read-only label {match[0].name}")
        runner.labels = [lb for lb in runner.labels if lb is not match[0]]
        self._save()
        return answer(runner.labels)

    def _runner_registration(self, body: bytes, kind: str, digest: str | None) -> Response:
        """actions/runner exchanges its registration/remove token here for a tenant URL and token.
        GitHub answers 404 for an unknown, expired or wrong-scope token; so does the double.
        `use_v2_flow` (CredentialManager.cs `GitHubAuthResult.UseRunnerAdminFlow`) is this
        double's `runner_admin_flow` option."""
        data = self._json(body)
        event = data.get("runner_event")
        want = {"register": "registration-token", "remove": "remove-token"}.get(event or "")
        with self._lock:
            if want is None or kind != want or digest is None:
                raise _not_found()
            token = self._tokens[digest]
            if self._url_scope(data.get("url")) != token.scope:
                raise _not_found()
            tenant_token, _ = self._mint(f"tenant-{event}", token.scope, TENANT_TOKEN_TTL_SECONDS)
            return Response(
                200,
                {
                    "url": self.url + self._tenant_base(token.scope),
                    "token_schema": "OAuthAccessToken",
                    "token": tenant_token,
                    "use_v2_flow": self.runner_admin_flow,
                },
            )

    def _url_scope(self, url: Any) -> str | None:
        """The canonical scope of config.sh's --url (`…/owner/repo` or `…/org`), or None."""
        parts = [p for p in urlsplit(str(url or "")).path.split("/") if p]
        if len(parts) == 2:
            return self._canonical(f"repos/{parts[0]}/{parts[1]}")
        if len(parts) == 1:
            return self._canonical(f"orgs/{parts[0]}")
        return None

    def _runner_admin_register(self, body: bytes, kind: str, digest: str | None, scheme: str) -> Response:
        """`POST {api}/actions/runners/register` (RunnerDotcomServer.cs `AddOrReplaceRunner`): add or
        replace a runner with the registration token itself; answers Runner.cs's shape
        (`{id, name, authorization: {client_id, authorization_url, server_url}}`)."""
        with self._cond:
            token = self._tokens.get(digest or "") if scheme == "remoteauth" and kind == "registration-token" else None
            if token is None:
                raise _not_found()
            data = self._json(body)
            if not isinstance(data, dict):
                raise _invalid("the body must be a JSON object")
            scope = self._url_scope(data.get("url"))
            if scope is None or scope != token.scope:
                raise _not_found()
            problems = []
            name = data.get("name")
            if not (isinstance(name, str) and _NAME_OK.match(name)):
                problems.append("name must be a runner name")
            if not (isinstance(data.get("public_key"), str) and data["public_key"]):
                problems.append("public_key is missing")
            labels = data.get("labels", [])
            if not (
                isinstance(labels, list)
                and all(isinstance(lb, dict) and isinstance(lb.get("name"), str) for lb in labels)
            ):
                problems.append("labels must be an array of {name, type} objects")
            group_id = data.get("group_id", 1)
            if not isinstance(group_id, int) or isinstance(group_id, bool):
                problems.append("group_id must be an integer")
            replace = data.get("replace") is True
            runner_id = data.get("runner_id")
            if replace and not (isinstance(runner_id, int) and not isinstance(runner_id, bool)):
                problems.append("runner_id must be an integer when replace is true")
            if problems:
                raise _invalid(*problems)
            agent = {
                "poolId": group_id,
                "labels": [{"name": lb["name"], "type": lb.get("type", "user")} for lb in labels],
                "publicKey": data["public_key"],
                "version": data.get("version", ""),
                "ephemeral": bool(data.get("ephemeral", False)),
                "disableUpdate": bool(data.get("updates_disabled", False)),
            }
            if replace:
                runner = self._runners.get(runner_id)
                if runner is None or runner.scope != scope:
                    raise _not_found()
                self._apply_agent(runner, agent, scope)
                runner.session_id = None  # the old registration's credential is void
            else:
                if self._find(scope, name):
                    raise ApiError(409, f"A runner exists with the same name {name}.")
                runner = Runner(
                    id=self._next["runner"],
                    name=name,
                    scope=scope,
                    group_id=1,
                    labels=[],
                    client_id="",
                    secret_hash="",
                    created_at=self.clock.now(),
                )
                self._apply_agent(runner, agent, scope)  # may refuse the group: take the id only then
                self._take("runner")
                self._runners[runner.id] = runner
            self._cond.notify_all()
            self._save()
            return Response(
                200,
                {
                    "id": runner.id,
                    "name": runner.name,
                    "authorization": {
                        "client_id": runner.client_id,
                        "authorization_url": self._authorization_url(runner),
                        "server_url": self.url + self._broker_base(scope),
                    },
                },
            )

    def _downloads(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.artifacts_dir.glob("actions-runner-linux-*.tar.gz")) if self.artifacts_dir else []:
            m = _RUNNER_ARTIFACT.match(path.name)
            if not m:
                continue
            out.append(
                {
                    "os": "linux",
                    "architecture": m["arch"],
                    "download_url": f"{self.url}/actions/runner/releases/download/v{m['version']}/{path.name}",
                    "filename": path.name,
                    "sha256_checksum": self._sha256(path),
                }
            )
        return out

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._sha_cache:
            h = hashlib.sha256()
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            self._sha_cache[key] = h.hexdigest()
        return self._sha_cache[key]

    def _download(self, path: str) -> Response:
        for pattern, artifact in (
            (_RUNNER_RELEASE_PATH, _RUNNER_ARTIFACT),
            (_EXPORTER_RELEASE_PATH, _EXPORTER_ARTIFACT),
        ):
            m = pattern.match(path)
            if m and self.artifacts_dir:
                a = artifact.match(m["file"])
                target = self.artifacts_dir / m["file"]
                if a and a["version"] == m["version"] and target.is_file():
                    return Response(200, target, {"Content-Type": "application/octet-stream"})
        raise _not_found()

    # runner service ("tenant") ----------------------------------------------------------------

    def _tenant(
        self, method: str, path: str, query: dict, body: bytes, kind: str, digest: str | None, client_id: str | None
    ) -> tuple[Response, str | None]:
        base, _, rest = path.partition(STANDIN_API.rstrip("/"))
        rest = rest.strip("/")
        with self._cond:
            found = self._scope_for_tenant_base(base)
            if found is None:
                raise _not_found()
            scope, broker = found
            if rest == "sessions" or rest.startswith("sessions/"):
                return self._sessions(method, scope, rest, query, body, kind, client_id)
            if broker:
                raise _not_found()  # the broker serves sessions only
            # Admin calls: the tenant token from runner-registration, for its own scope.
            token = self._tokens.get(digest or "")
            if not kind.startswith("tenant-") or kind.startswith("expired") or token is None or token.scope != scope:
                raise ApiError(401, "Unauthorized")
            removing = token.kind == "tenant-remove"
            if rest == "pools" and method == "GET":
                pools = [{"id": 1, "name": "Default", "isInternal": True, "isHosted": False}]
                if scope.startswith("orgs/"):
                    pools = [
                        {"id": g.id, "name": g.name, "isInternal": g.default, "isHosted": False}
                        for g in sorted(self._org_groups(scope_name(scope)).values(), key=lambda g: g.id)
                    ]
                return Response(200, {"count": len(pools), "value": pools}), None
            if rest == "agents" and method == "GET":
                name = query.get("name", "")
                found = [self._agent_json(r) for r in self._runners.values() if r.scope == scope and r.name == name]
                return Response(200, {"count": len(found), "value": found}), None
            if rest == "agents" and method == "POST" and not removing:
                data = self._json(body)
                if self._find(scope, data["name"]):
                    raise ApiError(409, f"A runner exists with the same name {data['name']}.")
                runner = Runner(
                    id=self._take("runner"),
                    name=data["name"],
                    scope=scope,
                    group_id=1,
                    labels=[],
                    client_id="",
                    secret_hash="",
                    created_at=self.clock.now(),
                )
                self._apply_agent(runner, data, scope)
                self._runners[runner.id] = runner
                self._save()
                return Response(200, self._agent_json(runner)), runner.name
            m = re.fullmatch(r"agents/(?P<id>\d+)", rest)
            runner = self._runners.get(int(m["id"])) if m else None
            if runner is None or runner.scope != scope:
                raise _not_found()
            if method == "PUT" and not removing:
                self._apply_agent(runner, self._json(body), scope)
                runner.session_id = None  # the old registration's credential is void
                self._cond.notify_all()
                self._save()
                return Response(200, self._agent_json(runner)), runner.name
            if method == "DELETE":
                if runner.busy:
                    raise ApiError(422, f'Bad request - Runner "{runner.name}" is still running a job"')
                self._delete_runner(runner)
                self._save()
                return Response(204), runner.name
            raise _not_found()

    def _apply_agent(self, runner: Runner, data: dict, scope: str) -> None:
        """Add/replace: new credential (the stand-in sends only the hash of its secret, as the real
        runner sends only its RSA public key), labels, version, flags, group."""
        pool_id = int(data.get("poolId", 1))
        if scope.startswith("orgs/") and pool_id not in self._org_groups(scope_name(scope)):
            raise ApiError(404, f"runner group {pool_id} not found")
        system = [lb["name"] for lb in data.get("labels", []) if lb.get("type") == "system"]
        user = [lb["name"] for lb in data.get("labels", []) if lb.get("type") != "system"]
        runner.labels = self._labels(system, user)
        runner.client_id = str(uuid.uuid4())
        runner.secret_hash = str(data["publicKey"])
        runner.version = str(data.get("version", ""))
        runner.ephemeral = bool(data.get("ephemeral", False))
        runner.disable_update = bool(data.get("disableUpdate", False))
        runner.group_id = pool_id if scope.startswith("orgs/") else 1

    def _agent_json(self, r: Runner) -> dict[str, Any]:
        return {
            "id": r.id,
            "name": r.name,
            "version": r.version,
            "poolId": r.group_id,
            "ephemeral": r.ephemeral,
            "disableUpdate": r.disable_update,
            "status": self.runner_status(r),
            "busy": r.busy,
            "labels": [{"name": lb.name, "type": "system" if lb.type == "read-only" else "user"} for lb in r.labels],
            "authorization": {
                "clientId": r.client_id,
                "authorizationUrl": self._authorization_url(r),
            },
        }

    def _sessions(
        self, method: str, scope: str, rest: str, query: dict, body: bytes, kind: str, client_id: str | None
    ) -> tuple[Response, str | None]:
        runner = next(
            (r for r in self._runners.values() if client_id and r.client_id == client_id and r.scope == scope), None
        )
        if kind != "runner-credential" or runner is None:
            if rest == "sessions":
                raise ApiError(401, "invalid_client", {"error": "invalid_client"})
            raise ApiError(404, "The runner no longer exists on the server.", {"typeKey": "RunnerNotFoundException"})
        if not runner.connected:
            raise ApiError(503, "Service Unavailable")
        now = self.clock.now()
        if rest == "sessions" and method == "POST":
            if runner.session_id and self.runner_status(runner) == "online":
                raise ApiError(409, "A session for this runner already exists.")
            data = self._json(body)
            self._abandon_job(runner)
            runner.session_id = str(uuid.uuid4())
            runner.last_seen = now
            runner.version = str(data.get("version", runner.version))
            self._cond.notify_all()
            poll = max(0.2, min(20.0, self.offline_after / 2.5))
            return Response(
                201,
                {"sessionId": runner.session_id, "pollSeconds": poll, "agent": {"id": runner.id, "name": runner.name}},
            ), runner.name
        m = re.fullmatch(r"sessions/(?P<sid>[0-9a-f-]+)(?P<msg>/message|/jobs/(?P<job>\d+))?", rest)
        if not m or m["sid"] != runner.session_id:
            raise ApiError(404, "The session has expired.", {"typeKey": "TaskAgentSessionExpiredException"})
        if m["job"] and method == "POST":
            # The listener reports its worker's end (the real worker completes the job through
            # the run service; the stand-in's listener does it for it).
            result = str(self._json(body).get("result", "succeeded")).lower()
            conclusion = {"succeeded": "success", "failed": "failure", "canceled": "cancelled"}.get(result, "failure")
            self._finish_job(runner, int(m["job"]), conclusion)
            return Response(204), runner.name
        if m["msg"] == "/message" and method == "GET":
            return Response(200, self._poll(runner, m["sid"], query)), runner.name
        if not m["msg"] and method == "DELETE":
            self._abandon_job(runner)
            runner.session_id = None
            if runner.ephemeral and runner.jobs_run > 0:
                self._delete_runner(runner)  # GitHub removes an ephemeral runner after its job
            self._cond.notify_all()
            self._save()
            return Response(204), runner.name
        raise _not_found()

    def _poll(self, runner: Runner, session_id: str, query: dict) -> dict[str, Any]:
        """Long-poll: returns when the runner's job differs from the one it reports (assigned or
        finished), or after `wait` seconds. While a poll is pending the runner counts as online."""
        known = int(query.get("jobId", "0") or 0)
        wait = min(max(float(query.get("wait", "1") or 1), 0.0), 30.0)
        deadline = time.monotonic() + wait
        runner.active_polls += 1
        runner.last_seen = self.clock.now()
        try:
            while True:
                if self._stopping or not runner.connected:
                    raise ApiError(503, "Service Unavailable")
                if self._runners.get(runner.id) is not runner:
                    raise ApiError(
                        404, "The runner no longer exists on the server.", {"typeKey": "RunnerNotFoundException"}
                    )
                if runner.session_id != session_id:
                    raise ApiError(404, "The session has expired.", {"typeKey": "TaskAgentSessionExpiredException"})
                self._dispatch(runner)
                current = runner.job["id"] if runner.job else 0
                remaining = deadline - time.monotonic()
                if current != known or remaining <= 0:
                    return {"job": runner.job}
                self._cond.wait(remaining)
        finally:
            runner.active_polls -= 1
            runner.last_seen = self.clock.now()

    # test controls over HTTP ----------------------------------------------------------------

    def _control(self, method: str, path: str, query: dict, body: bytes) -> Response:
        data = self._json(body) if method in ("POST", "PUT") else {}
        scope = data.get("scope") or query.get("scope")
        if path == "/_double/health" and method == "GET":
            return Response(200, {"ok": True, "url": self.url, "api_url": self.api_url})
        if path == "/_double/state" and method == "GET":
            return Response(200, self.state())
        if path == "/_double/options":
            if method == "POST" and "runner_admin_flow" in data:
                self.runner_admin_flow = bool(data["runner_admin_flow"])
            return Response(200, self.options())
        if path == "/_double/calls" and method == "GET":
            return Response(200, {"calls": self.calls_since(int(query.get("since", "0") or 0))})
        if path == "/_double/calls" and method == "DELETE":
            self.clear_calls()
            return Response(204)
        if path == "/_double/clock":
            if method == "POST":
                self.clock.advance(float(data.get("advance", 0)))
            return Response(200, {"now": _iso(self.clock.now()), "offset": self.clock.offset})
        if path == "/_double/rate-limit" and method == "POST":
            return Response(200, self.rate_limit(float(data.get("seconds", 60)), str(data.get("style", "primary"))))
        if path == "/_double/releases" and method == "POST":
            published = data.get("published_at")
            release = self.add_release(
                str(data["version"]),
                None if published is None else float(published),
                bool(data.get("prerelease", False)),
            )
            return Response(201, {"tag_name": release["tag_name"], "published_at": release["published_at"]})
        if path == "/_double/repos" and method == "POST":
            self.add_repo(str(data["full_name"]))
            return Response(201, {"repos": sorted(self._repos)})
        if path == "/_double/orgs" and method == "POST":
            self.add_org(str(data["login"]))
            return Response(201, {"orgs": sorted(self._orgs)})
        m = re.fullmatch(r"/_double/orgs/(?P<org>[^/]+)/runner-groups", path)
        if m and method == "POST":
            gid = self.add_runner_group(m["org"], str(data["name"]), str(data.get("visibility", "all")))
            return Response(201, {"id": gid, "name": data["name"]})
        if path == "/_double/jobs" and method == "POST":
            return Response(
                201,
                self.queue_job(
                    str(data["repo"]),
                    [str(label) for label in data["labels"]],
                    str(data.get("name", DEFAULT_JOB_NAME)),
                    float(data.get("duration", 1.0)),
                    str(data.get("result", "success")),
                ),
            )
        m = re.fullmatch(r"/_double/jobs/(?P<id>\d+)", path)
        if m and method == "GET":
            return Response(200, self.job(int(m["id"])))
        if path == "/_double/runners" and method == "POST":
            rid = self.add_runner(
                str(data["name"]),
                data.get("repo"),
                data.get("org"),
                data.get("labels", []),
                data.get("default_labels", True),
            )
            return Response(201, {"id": rid})
        m = re.fullmatch(r"/_double/runners/(?P<name>[^/]+)(?P<what>/busy|/connectivity)?", path)
        if m and m["what"] == "/busy" and method == "POST":
            return Response(
                200,
                self.set_busy(m["name"], bool(data.get("busy", True)), str(data.get("job", DEFAULT_JOB_NAME)), scope),
            )
        if m and m["what"] == "/connectivity" and method == "POST":
            return Response(200, self.set_connected(m["name"], bool(data.get("connected", True)), scope))
        if m and not m["what"] and method == "GET":
            return Response(200, self.runner(m["name"], scope))
        raise _not_found()


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP adapter around GitHubDouble.handle."""

    double: GitHubDouble

    def version_string(self) -> str:
        return "GitHub.com"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            resp = self.double.handle(self.command, self.path, headers, body)
        except Exception as e:  # a double must answer, and say what broke
            resp = Response(500, {"message": f"double error: {type(e).__name__}: {e}"})
        payload: bytes
        content_type = resp.headers.pop("Content-Type", "application/json; charset=utf-8")
        if isinstance(resp.body, Path):
            payload = resp.body.read_bytes()
        elif isinstance(resp.body, bytes):
            payload = resp.body
        elif resp.body is None:
            payload = b""
        else:
            payload = json.dumps(resp.body, indent=1).encode()
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a stopped listener mid long-poll)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:  # stdlib's signature
        pass  # calls are recorded (and optionally logged) by the double itself


class DoubleClient:
    """The test controls of a double running elsewhere (the lab daemon), over `/_double/...`:
    the same operations as the in-process attributes, for tests that drive the lab."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"{self.url!r} is not an http(s) URL")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - scheme checked
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - scheme checked
            raw = resp.read()
        return json.loads(raw) if raw else None

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/_double/health")

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_double/state")

    def runner(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/_double/runners/{quote(name)}")

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"/_double/calls?since={since}")["calls"]

    def clear_calls(self) -> None:
        self._call("DELETE", "/_double/calls")

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/_double/clock", {"advance": seconds})

    def set_busy(self, name: str, busy: bool = True, job: str = DEFAULT_JOB_NAME) -> dict[str, Any]:
        return self._call("POST", f"/_double/runners/{quote(name)}/busy", {"busy": busy, "job": job})

    def set_connected(self, name: str, connected: bool) -> dict[str, Any]:
        return self._call("POST", f"/_double/runners/{quote(name)}/connectivity", {"connected": connected})

    def queue_job(
        self, repo: str, labels: list[str], name: str = DEFAULT_JOB_NAME, duration: float = 1.0, result: str = "success"
    ) -> dict[str, Any]:
        body = {"repo": repo, "labels": labels, "name": name, "duration": duration, "result": result}
        return self._call("POST", "/_double/jobs", body)

    def job(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/_double/jobs/{int(job_id)}")

    def options(self) -> dict[str, Any]:
        return self._call("GET", "/_double/options")

    def rate_limit(self, seconds: float, style: str = "primary") -> dict[str, Any]:
        return self._call("POST", "/_double/rate-limit", {"seconds": seconds, "style": style})

    def add_release(self, version: str, published_at: float | None = None) -> dict[str, Any]:
        return self._call("POST", "/_double/releases", {"version": version, "published_at": published_at})

    def set_options(self, *, runner_admin_flow: bool | None = None) -> dict[str, Any]:
        """`runner_admin_flow=True`: runner-registration answers `use_v2_flow: true` from now on."""
        body = {} if runner_admin_flow is None else {"runner_admin_flow": runner_admin_flow}
        return self._call("POST", "/_double/options", body)


# --- CLI daemon ----------------------------------------------------------------------------


def _read_pats(paths: list[str]) -> list[str]:
    pats = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line)
    return pats


def main(argv: list[str] | None = None) -> int:
    """Lab daemon: runs until SIGTERM/SIGINT. PATs come from files, never from argv."""
    ap = argparse.ArgumentParser(prog="python -m lab.github_double", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8931)
    ap.add_argument("--pat-file", action="append", required=True, help="file with one accepted PAT per line")
    ap.add_argument(
        "--read-pat-file",
        action="append",
        default=[],
        help="file with one read-only PAT per line (lists, never changes)",
    )
    ap.add_argument("--repo", action="append", default=[], help="owner/repo that exists (repeatable)")
    ap.add_argument("--org", action="append", default=[], help="organization that exists (repeatable)")
    ap.add_argument("--runner-group", action="append", default=[], help="ORG/NAME runner group (repeatable)")
    ap.add_argument("--artifacts", type=Path, help="directory of release tarballs to serve")
    ap.add_argument("--state-file", type=Path, help="JSON state kept across restarts")
    ap.add_argument("--offline-after", type=float, default=DEFAULT_OFFLINE_AFTER)
    ap.add_argument("--tenant-style", choices=["dotcom", "ghes"], default="dotcom")
    ap.add_argument(
        "--runner-admin-flow",
        action="store_true",
        help="answer runner-registration with use_v2_flow: true (the runner-admin registration flow)",
    )
    ap.add_argument("--verbose", action="store_true", help="log every call (method, path, status, credential kind)")
    args = ap.parse_args(argv)
    pats = _read_pats(args.pat_file)
    if not pats:
        ap.error("the PAT file(s) hold no token")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    double = GitHubDouble(
        host=args.host,
        port=args.port,
        pats=pats,
        read_pats=_read_pats(args.read_pat_file),
        artifacts_dir=args.artifacts,
        repos=args.repo,
        orgs=args.org,
        runner_groups=args.runner_group,
        offline_after=args.offline_after,
        state_file=args.state_file,
        tenant_style=args.tenant_style,
        runner_admin_flow=args.runner_admin_flow,
        log=log if args.verbose else None,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    double.start()
    print(f"github-double: listening on {double.url} (REST {double.api_url})", flush=True)
    stop.wait()
    double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
