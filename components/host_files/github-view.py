#!/usr/bin/python3
"""runner-fleet's GitHub-view collector: GitHub's own view of a stack's runners, for Prometheus.

Installed on the monitoring host by the program (components/github_view.py) and run by a
hardened systemd unit as a dynamic user. Every `interval` seconds it lists the stack's scope
(`GET {api}/{repos/o/r|orgs/o}/actions/runners?per_page=100&page=N`, every page) and
actions/runner's releases (`GET {api}/repos/actions/runner/releases`), and serves the families
of monitoring/METRICS.md section 2 on `http://{listen}/metrics` from the last complete listing:
a failed or partial listing changes nothing but the error counter and the rate-limit gauges.

Rate limits, as GitHub documents them ("Rate limits for the REST API"): a 403 or 429 with
`Retry-After` waits that many seconds; one with `X-RateLimit-Remaining: 0` waits until
`X-RateLimit-Reset`; any other 403/429 that says "rate limit" waits a minute, doubling. Other
failures retry at the next poll, doubling up to 5 minutes.

The credential: systemd's LoadCredential hands the root-only token file to this process as
`$CREDENTIALS_DIRECTORY/token` (it is never in argv, the environment or the unit). Nothing
here prints it. Only the Python standard library: Debian's python3 is all it needs.

Usage: github-view CONFIG.json     (`--once`: one poll, metrics on stdout; for checks)
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PER_PAGE = 100
MAX_PAGES = 100  # 10 000 runners: far beyond any stack; a guard against a server that never ends
TIMEOUT = 20.0
MAX_BACKOFF = 300.0
MAX_RATE_WAIT = 3600.0
REASONS = ("http_4xx", "http_5xx", "rate_limited", "network")
USER_AGENT = "runner-fleet-github-view"


class Failure(Exception):
    """A GitHub call that failed: the reason counted, and how long to wait before the next one."""

    def __init__(self, reason: str, detail: str, wait: float | None = None):
        super().__init__(detail)
        self.reason = reason
        self.wait = wait


def log(message: str) -> None:
    print(f"github-view: {message}", file=sys.stderr, flush=True)


def read_token(config: dict[str, Any]) -> str:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    path = os.path.join(directory, "token") if directory else config["token_file"]
    with open(path, encoding="utf-8") as fh:
        token = fh.readline().strip()
    if not token:
        raise SystemExit(f"github-view: the credential file {path} is empty")
    return token


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Numeric parts compare as numbers (2.330.0 > 2.99.0)."""
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+-]", version))


def timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def declared_elsewhere(pattern: str, own: str) -> set[str]:
    """Runner names every other stack's collector on this host declares (their config files)."""
    names: set[str] = set()
    for path in glob.glob(pattern):
        if os.path.realpath(path) == os.path.realpath(own):
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                names.update(str(n) for n in json.load(fh).get("runners", []))
        except (OSError, ValueError, AttributeError):
            continue
    return names


class Collector:
    """The poll loop's state and the exposition built from it."""

    def __init__(
        self, config: dict[str, Any], token: str, config_path: str = "", clock: Callable[[], float] = time.time
    ):
        self.config = config
        self.config_path = config_path
        self._token = token
        self._clock = clock
        self.api_url = str(config["api_url"]).rstrip("/")
        self.scope_path = str(config["scope_path"]).strip("/")
        self.runners: list[str] = sorted(str(r) for r in config["runners"])
        self.versions: list[str] = sorted({str(v) for v in config.get("versions", [])})
        self.interval = float(config.get("interval", 30))
        self.releases_repo = str(config.get("releases_repo", "actions/runner"))
        self.lock = threading.Lock()
        self.listing: dict[str, dict[str, Any]] | None = None  # name -> runner, last complete listing
        self.orphans: list[dict[str, Any]] = []
        self.releases: list[tuple[str, float]] | None = None  # (version, published_at), full releases
        self.last_success = 0.0
        self.errors = dict.fromkeys(REASONS, 0)
        self.rate: dict[str, float] = {}
        self.failures_in_row = 0
        self.rate_limited_in_row = 0

    # --- GitHub ---------------------------------------------------------------------------

    def _note_rate(self, headers: Any) -> None:
        for header, key in (
            ("X-RateLimit-Remaining", "remaining"),
            ("X-RateLimit-Limit", "limit"),
            ("X-RateLimit-Reset", "reset"),
        ):
            value = headers.get(header) if headers is not None else None
            if value is not None:
                with contextlib.suppress(ValueError):
                    self.rate[key] = float(value)

    def _rate_wait(self, status: int, headers: Any, body: str) -> float | None:
        """Seconds to wait when a 403/429 is a rate limit (GitHub's documented signals), else None."""
        retry_after = headers.get("Retry-After") if headers is not None else None
        if retry_after:
            try:
                return max(1.0, float(retry_after))
            except ValueError:
                try:
                    return max(1.0, parsedate_to_datetime(retry_after).timestamp() - self._clock())
                except (TypeError, ValueError):
                    return 60.0
        if headers is not None and headers.get("X-RateLimit-Remaining") == "0":
            try:
                return max(1.0, float(headers.get("X-RateLimit-Reset", "0")) - self._clock() + 1)
            except ValueError:
                return 60.0
        if status == 429 or "rate limit" in body.lower():
            return 60.0 * 2 ** min(self.rate_limited_in_row, 6)
        return None

    def get(self, path: str) -> tuple[Any, Any]:
        """(JSON body, headers) of GET {api}/{path}; raises Failure."""
        request = urllib.request.Request(f"{self.api_url}/{path}", method="GET")  # noqa: S310 - config's API URL
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("X-GitHub-Api-Version", "2022-11-28")
        request.add_header("User-Agent", USER_AGENT)
        request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                self._note_rate(response.headers)
                return json.loads(response.read() or b"null"), response.headers
        except urllib.error.HTTPError as e:
            self._note_rate(e.headers)
            body = e.read(4096).decode("utf-8", "replace")
            try:
                message = str(json.loads(body).get("message", ""))
            except (ValueError, AttributeError):
                message = body[:200]
            if e.code in (403, 429):
                wait = self._rate_wait(e.code, e.headers, message)
                if wait is not None:
                    raise Failure("rate_limited", f"GET {path}: {e.code} {message}", min(wait, MAX_RATE_WAIT)) from None
            reason = "http_5xx" if e.code >= 500 else "http_4xx"
            raise Failure(reason, f"GET {path}: {e.code} {message}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise Failure("network", f"GET {path}: {getattr(e, 'reason', e)}") from None

    def list_runners(self) -> list[dict[str, Any]]:
        """Every page of the scope's runners; raises Failure (nothing partial is kept)."""
        runners: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            body, _ = self.get(f"{self.scope_path}/actions/runners?per_page={PER_PAGE}&page={page}")
            if not isinstance(body, dict) or not isinstance(body.get("runners"), list):
                raise Failure("http_5xx", f"page {page} of the runner list is not GitHub's shape")
            items = body["runners"]
            runners.extend(items)
            total = body.get("total_count")
            if len(items) < PER_PAGE or (isinstance(total, int) and len(runners) >= total):
                return runners
        raise Failure("http_5xx", f"the runner list goes on past {MAX_PAGES} pages")

    def list_releases(self) -> list[tuple[str, float]]:
        body, _ = self.get(f"repos/{self.releases_repo}/releases?per_page={PER_PAGE}&page=1")
        if not isinstance(body, list):
            raise Failure("http_5xx", "the release list is not GitHub's shape")
        out = []
        for release in body:
            if not isinstance(release, dict) or release.get("draft") or release.get("prerelease"):
                continue
            tag, published = release.get("tag_name"), release.get("published_at")
            if isinstance(tag, str) and isinstance(published, str):
                out.append((tag.removeprefix("v"), timestamp(published)))
        return out

    def poll(self) -> float:
        """One poll; returns the seconds to wait before the next."""
        try:
            listed = self.list_runners()
        except Failure as e:
            return self._failed(e)
        declared = set(self.runners) | declared_elsewhere(self.config.get("declared_glob", ""), self.config_path)
        with self.lock:
            self.listing = {str(r.get("name")): r for r in listed}
            self.orphans = [r for r in listed if str(r.get("name")) not in declared]
            self.last_success = self._clock()
        try:
            releases = self.list_releases()
            with self.lock:
                self.releases = releases
        except Failure as e:
            if e.reason == "rate_limited":
                return self._failed(e)
            self._count(e)  # no release list (a GHES without actions/runner): the listing still counts
        self.failures_in_row = self.rate_limited_in_row = 0
        return self.interval

    def _failed(self, e: Failure) -> float:
        self._count(e)
        if e.reason == "rate_limited":
            self.rate_limited_in_row += 1
            return max(self.interval, e.wait or 60.0)
        self.failures_in_row += 1
        return min(MAX_BACKOFF, self.interval * 2 ** (self.failures_in_row - 1))

    def _count(self, e: Failure) -> None:
        with self.lock:
            self.errors[e.reason] += 1
        log(f"{e.reason}: {e}" + (f"; next try in {e.wait:.0f} s" if e.wait else ""))

    # --- exposition -----------------------------------------------------------------------

    def metrics(self) -> str:
        with self.lock:
            return self._metrics()

    def _metrics(self) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                text = repr(float(value)) if value != int(value) else str(int(value))
                out.append(f"{name}{labels} {text}")

        def lbl(**labels: str) -> str:
            return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"

        if self.listing is not None:
            listing = self.listing
            family(
                "github_runner_github_online",
                "gauge",
                "1 when GitHub lists the runner online, 0 when offline or not registered.",
                [(lbl(runner=n), int(listing.get(n, {}).get("status") == "online")) for n in self.runners],
            )
            family(
                "github_runner_github_busy",
                "gauge",
                "1 when GitHub lists the runner busy.",
                [(lbl(runner=n), int(bool(listing.get(n, {}).get("busy")))) for n in self.runners],
            )
            family(
                "github_runner_github_registered",
                "gauge",
                "1 when GitHub has a registration of that name.",
                [(lbl(runner=n), int(n in listing)) for n in self.runners],
            )
            info = []
            for n in self.runners:
                r = listing.get(n)
                if r is None:
                    continue
                labels = ",".join(sorted(str(x.get("name", "")) for x in r.get("labels") or [] if isinstance(x, dict)))
                info.append(
                    (
                        lbl(
                            runner=n,
                            id=str(r.get("id", "")),
                            os=str(r.get("os") or ""),
                            labels=labels,
                            version=str(r.get("version") or ""),
                        ),
                        1,
                    )
                )
            family("github_runner_github_info", "gauge", "GitHub's record of a declared runner.", info)
            family(
                "github_runner_github_orphan",
                "gauge",
                "A registration in the scope that no stack on this monitoring host declares.",
                [(lbl(runner=str(r.get("name")), id=str(r.get("id", ""))), 1) for r in self.orphans],
            )
        family(
            "github_runner_github_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last complete listing (0: none yet).",
            [("", self.last_success)],
        )
        family(
            "github_runner_github_errors_total",
            "counter",
            "Failed GitHub requests of the collector, by reason.",
            [(lbl(reason=r), self.errors[r]) for r in REASONS],
        )
        for key, name, help_text in (
            ("remaining", "github_runner_github_rate_limit_remaining", "X-RateLimit-Remaining of the last answer."),
            ("limit", "github_runner_github_rate_limit_limit", "X-RateLimit-Limit of the last answer."),
            (
                "reset",
                "github_runner_github_rate_limit_reset_timestamp_seconds",
                "X-RateLimit-Reset of the last answer.",
            ),
        ):
            if key in self.rate:
                family(name, "gauge", help_text, [("", self.rate[key])])
        if self.releases:
            latest_version, latest_published = max(self.releases, key=lambda r: version_key(r[0]))
            family(
                "github_runner_latest_release_info",
                "gauge",
                "The newest actions/runner release.",
                [(lbl(version=latest_version), 1)],
            )
            family(
                "github_runner_latest_release_timestamp_seconds",
                "gauge",
                "published_at of the newest actions/runner release.",
                [("", latest_published)],
            )
            available, behind = [], []
            for v in self.versions:
                newer = [published for version, published in self.releases if version_key(version) > version_key(v)]
                if newer:
                    available.append((lbl(version=v), min(newer)))
                behind.append((lbl(version=v), len(newer)))
            family(
                "github_runner_version_update_available_timestamp_seconds",
                "gauge",
                "published_at of the oldest release newer than the pinned version.",
                available,
            )
            family(
                "github_runner_version_behind_releases",
                "gauge",
                "Releases newer than the pinned version.",
                behind,
            )
        return "\n".join(out) + "\n"


def serve(collector: Collector, address: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib's name
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            payload = collector.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--once"]
    if len(args) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as fh:
        config = json.load(fh)
    collector = Collector(config, read_token(config), config_path=args[0])
    if "--once" in argv:
        collector.poll()
        sys.stdout.write(collector.metrics())
        return 0 if collector.last_success else 1
    address, port = str(config.get("listen_address", "127.0.0.1")), int(config["listen_port"])
    serve(collector, address, port)
    log(f"serving {address}:{port}/metrics for {collector.scope_path}")
    while True:
        wait = collector.poll()
        time.sleep(wait)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
