"""A small GitHub REST client for the operator commands (stdlib only).

- Base URL: `https://api.github.com`, or GitHub Enterprise Server's `https://HOST/api/v3`
  (whatever `github.apiUrl` / `github.serverUrl` of the stack says).
- The credential is sent only as an `Authorization` header to that base URL's origin; it is
  never part of a URL, an exception message or a log line.
- Retries with exponential backoff on 5xx, on connection errors and on rate limits (429, or 403
  with `x-ratelimit-remaining: 0`), honouring `Retry-After` / `x-ratelimit-reset` up to a cap.
- Runner lists are paginated with `per_page=100` until every runner of `total_count` is read.
"""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PER_PAGE = 100
USER_AGENT = "runner-fleet"


class ApiError(Exception):
    """A GitHub answer the caller has to act on (status and GitHub's message, no credential)."""

    def __init__(self, status: int, message: str, method: str = "", path: str = ""):
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        where = f"{method} {path}: " if method else ""
        super().__init__(f"{where}HTTP {status}: {message}" if status else f"{where}{message}")


@dataclass(frozen=True)
class Runner:
    id: int
    name: str
    status: str  # online | offline
    busy: bool
    labels: tuple[str, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Runner:
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            status=str(data.get("status", "")),
            busy=bool(data.get("busy", False)),
            labels=tuple(str(label.get("name", "")) for label in data.get("labels", [])),
        )


class GitHubApi:
    """REST calls against one API base URL with one credential."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
    ):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http(s) API URL")
        if parts.scheme == "http" and not _private(parts.hostname):
            raise ValueError(
                f"{base_url!r}: the credential is only sent over plain http to a private or loopback address"
            )
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self._sleep = sleep
        self._log = log or (lambda _line: None)

    def __repr__(self) -> str:  # never show the credential
        return f"GitHubApi({self.base_url!r})"

    # --- transport ------------------------------------------------------------------------

    def request(self, method: str, path: str, query: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, parsed JSON body) for a 2xx answer; ApiError otherwise (after retries)."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        attempt = 0
        while True:
            attempt += 1
            req = urllib.request.Request(url, method=method)  # noqa: S310 - scheme checked in __init__
            req.add_header("Authorization", f"Bearer {self._token}")
            req.add_header("Accept", "application/vnd.github+json")
            req.add_header("X-GitHub-Api-Version", "2022-11-28")
            req.add_header("User-Agent", USER_AGENT)
            wait: float | None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - scheme checked
                    raw = resp.read()
                    return resp.status, json.loads(raw) if raw else None
            except urllib.error.HTTPError as e:
                body = _json_or_none(e.read())
                message = body.get("message", e.reason) if isinstance(body, dict) else str(e.reason)
                wait = self._retry_wait(e.code, e.headers, attempt)
                if wait is None:
                    raise ApiError(e.code, str(message), method, path) from None
                reason = f"HTTP {e.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                reason = str(getattr(e, "reason", e))
                wait = self._backoff(attempt) if attempt <= self.retries else None
                if wait is None:
                    raise ApiError(0, f"cannot reach {self.base_url}: {reason}", method, path) from None
            self._log(f"{method} {path}: {reason}; retry {attempt}/{self.retries} in {wait:.0f}s")
            self._sleep(wait)

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff * 2 ** (attempt - 1), self.max_wait)

    def _retry_wait(self, status: int, headers: Any, attempt: int) -> float | None:
        if attempt > self.retries:
            return None
        rate_limited = status == 429 or (status == 403 and headers.get("x-ratelimit-remaining") == "0")
        if rate_limited:
            retry_after = headers.get("retry-after")
            if retry_after and retry_after.isdigit():
                return min(float(retry_after), self.max_wait)
            reset = headers.get("x-ratelimit-reset")
            if reset and reset.isdigit():
                return min(max(float(reset) - time.time(), 1.0), self.max_wait)
            return self._backoff(attempt)
        if status >= 500:
            return self._backoff(attempt)
        return None

    # --- runners --------------------------------------------------------------------------

    def list_runners(self, scope_path: str, progress: Callable[[int, int], None] | None = None) -> list[Runner]:
        """Every self-hosted runner of `repos/O/R` or `orgs/O`, all pages."""
        runners: dict[int, Runner] = {}
        page = 1
        while True:
            _, body = self.request("GET", f"{scope_path}/actions/runners", {"per_page": PER_PAGE, "page": page})
            items = body.get("runners", [])
            before = len(runners)
            for item in items:
                runner = Runner.from_json(item)
                runners[runner.id] = runner
            total = int(body.get("total_count", 0))
            if progress:
                progress(len(runners), total)
            # Stop on the last page, and on a page that brings nothing new (a server repeating itself).
            if not items or len(items) < PER_PAGE or len(runners) >= total or len(runners) == before:
                return sorted(runners.values(), key=lambda r: r.id)
            page += 1

    def get_runner(self, scope_path: str, runner_id: int) -> Runner | None:
        try:
            _, body = self.request("GET", f"{scope_path}/actions/runners/{runner_id}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return Runner.from_json(body)

    def delete_runner(self, scope_path: str, runner_id: int) -> None:
        """Remove a registration. GitHub answers 422 while the runner runs a job: raised as
        ApiError(422) for the caller to decide (the orphans command keeps a busy runner)."""
        self.request("DELETE", f"{scope_path}/actions/runners/{runner_id}")


def _private(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_private or address.is_loopback


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
