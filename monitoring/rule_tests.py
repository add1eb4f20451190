"""Scenarios for the alert rules, written out as a `promtool test rules` file.

    python -m monitoring.rule_tests          # rewrites monitoring/tests/runner-fleet-alerts.test.yml
    promtool test rules monitoring/tests/runner-fleet-alerts.test.yml

Each scenario is a few scrape targets shaped like the fleet's (the labels of the file_sd target
file, the metric families of monitoring/METRICS.md) whose samples play a fault. The checks
name, for every evaluation step, exactly which alerts fire: an alert that fires one step early
or late, stays silent through a restart it should sit out, or does not resolve fails the test.
Expected annotations are rendered from the rule file's own templates, so an annotation that
names a label the alert does not carry fails here instead of reading "<no value>" in a page.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "runner-fleet-alerts.yml"
TEST_FILE = HERE / "tests" / "runner-fleet-alerts.test.yml"

STEP = 15  # scrape interval and evaluation interval, seconds
HEALTH_JOB = "github-runner-health"
GITHUB_JOB = "github-runner-github"
VERSION = "2.330.0"
OLD_VERSION = "2.329.0"
DAY = 86400

Value = float | int | str | None  # a number, "stale" (a failed scrape's marker) or None (no sample)


def load_rules() -> dict[str, dict]:
    """Alert name -> rule, from the shipped rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


RULE_SET = load_rules()
ALERTS = sorted(RULE_SET)
# Checked in every scenario: the alerts any runner or host fault could set off.
RUNNER_STATE = (
    "NoHealthyRunner",
    "RunnerDisconnected",
    "RunnerHostUnreachable",
    "RunnerMetricsStale",
    "RunnerNotListening",
    "RunnerServiceDown",
    "RunningOnSecondaryOnly",
)


@dataclass(frozen=True)
class Target:
    """One scrape target and the labels its file_sd group gives it."""

    host: str
    role: str
    environment: str
    instance: str
    runners: str | None = None
    job: str = HEALTH_JOB

    def labels(self, **extra: str) -> dict[str, str]:
        base = {"job": self.job, "instance": self.instance, "environment": self.environment}
        base |= {"role": self.role, "host": self.host}
        if self.runners is not None:
            base["runners"] = self.runners
        return base | extra


PROD_A = Target("alpha", "primary", "production", "10.249.31.11:9102", "alpha-1")
PROD_B = Target("beta", "secondary", "production", "10.249.31.12:9101", "beta-1")
STAGE = Target("beta", "primary", "staging", "10.249.31.12:9103", "beta-staging")
GH_PROD = Target("monitor", "github-view", "production", "10.249.31.10:9108", job=GITHUB_JOB)
GH_STAGE = Target("monitor", "github-view", "staging", "10.249.31.10:9109", job=GITHUB_JOB)


def run(*parts: tuple[Value, int]) -> list[Value]:
    """Samples from (value, count) runs."""
    return [v for value, count in parts for v in [value] * count]


def times(n: int, phase: int = 0) -> list[Value]:
    """A timestamp metric that is fresh at every sample."""
    return [phase + STEP * i for i in range(n)]


def selector(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


@dataclass
class Host:
    """A target of job github-runner-health: up, the collector's timestamp, and per-runner
    gauges. `failed` holds the sample indices whose scrape failed: up is 0 there and every other
    series of the target gets Prometheus's staleness marker (then no samples until it is back)."""

    target: Target
    n: int
    phase: int = 0
    failed: set[int] = field(default_factory=set)
    series: dict[str, list[Value]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.series[selector("github_runner_metrics_last_run_timestamp_seconds", self.target.labels())] = times(
            self.n, self.phase
        )

    def runner(
        self,
        name: str,
        active: list[Value] | None = None,
        online: list[Value] | None = None,
        version: str = VERSION,
    ) -> Host:
        active = active or [1] * self.n
        online = online or active
        self.add("github_runner_service_active", active, runner=name)
        self.add("github_runner_online", online, runner=name)
        self.add(
            "github_runner_info",
            [1] * self.n,
            runner=name,
            version=version,
            labels=f"self-hosted,Linux,X64,{self.target.environment},{self.target.role}",
            unit=f"actions.runner.example-app.{name}.service",
        )
        return self

    def add(self, name: str, values: list[Value], **labels: str) -> Host:
        if len(values) != self.n:
            raise ValueError(f"{name}: {len(values)} samples, expected {self.n}")
        self.series[selector(name, self.target.labels(**labels))] = values
        return self

    def remove(self, start: int, end: int) -> Host:
        """The target leaves service discovery at `start` and is back at `end`: every series,
        up included, gets the staleness marker and then no samples."""
        for sel, values in [(selector("up", self.target.labels()), None), *self.series.items()]:
            if values is None:
                values = self.series.setdefault(sel, [1] * self.n)
            values[start:end] = ["stale", *[None] * (end - start - 1)]
        return self

    def fail(self, indices: Iterable[int]) -> Host:
        self.failed |= set(indices)
        return self

    def rendered(self) -> list[tuple[str, list[Value]]]:
        up_selector = selector("up", self.target.labels())
        up = [0 if i in self.failed else v for i, v in enumerate(self.series.get(up_selector, [1] * self.n))]
        out = [(up_selector, up)]
        for sel, values in self.series.items():
            if sel == up_selector:
                continue
            vals = list(values)
            for i in sorted(self.failed):
                vals[i] = None if i - 1 in self.failed else "stale"
            out.append((sel, vals))
        return out


@dataclass
class Series:
    """Any other series (the GitHub-view collector's, node exporter's filesystem and memory)."""

    name: str
    labels: dict[str, str]
    values: list[Value]

    def rendered(self) -> list[tuple[str, list[Value]]]:
        return [(selector(self.name, self.labels), self.values)]


_EXPECTED: dict[tuple[str, frozenset[tuple[str, str]]], dict[str, Any]] = {}


def expected(alertname: str, labels: dict[str, str]) -> dict[str, Any]:
    """An expected alert: the expression's labels plus the rule's own, and the annotations
    rendered from the rule's templates with those labels. One object per alert instance, so the
    test file refers to it by a YAML alias after its first use."""
    key = (alertname, frozenset(labels.items()))
    if key not in _EXPECTED:
        _EXPECTED[key] = _expected(alertname, labels)
    return _EXPECTED[key]


def _expected(alertname: str, labels: dict[str, str]) -> dict[str, Any]:
    rule = RULE_SET[alertname]
    all_labels = {**labels, **rule.get("labels", {})}

    def render(text: str) -> str:
        def label(m: re.Match[str]) -> str:
            if m.group(1) not in all_labels:
                raise KeyError(f"{alertname}: annotation uses $labels.{m.group(1)}, which the alert does not carry")
            return all_labels[m.group(1)]

        rendered = re.sub(r"{{ \$labels\.(\w+) }}", label, text)
        if "{{" in rendered:
            raise ValueError(f"{alertname}: annotation template the tests cannot render: {text!r}")
        return rendered

    return {
        "exp_labels": all_labels,
        "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()},
    }


@dataclass(frozen=True)
class Firing:
    """One alert instance: fires from `start` (seconds) until `end` (exclusive; None = still firing)."""

    labels: dict[str, str]
    start: int
    end: int | None = None

    def at(self, t: int) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass
class Scenario:
    name: str
    n: int  # samples per series, one every STEP seconds
    sources: list[Host | Series]
    expect: dict[str, list[Firing]]  # alertname -> its instances; the checked others stay silent
    phase: int = 0  # the samples' offset from the evaluation grid, seconds (0, 5 or 10)
    every: int = 60  # check every `every` seconds, plus the steps around each start and end,
    dense: tuple[int, int] = (0, 0)  # and every step in this range (where a fault must stay silent)
    quiet: tuple[str, ...] = ()  # alerts that must stay silent, besides RUNNER_STATE

    @property
    def end(self) -> int:
        return STEP * (self.n - 1)

    def eval_times(self) -> list[int]:
        points = set(range(0, self.end + 1, self.every)) | set(range(self.dense[0], self.dense[1] + 1, STEP))
        for firings in self.expect.values():
            for f in firings:
                points |= {f.start - STEP, f.start} | ({f.end - STEP, f.end} if f.end is not None else set())
        return sorted(t for t in points if 0 <= t <= self.end)

    def checks(self) -> list[dict[str, Any]]:
        unknown = set(self.expect) - set(ALERTS)
        if unknown:
            raise ValueError(f"{self.name}: no such alert {sorted(unknown)}")
        checked = sorted(set(self.expect) | set(self.quiet) | set(RUNNER_STATE))
        out = []
        for t in self.eval_times():
            for alertname in checked:
                firing = [expected(alertname, f.labels) for f in self.expect.get(alertname, []) if f.at(t)]
                out.append({"eval_time": f"{t}s", "alertname": alertname, "exp_alerts": firing})
        return out

    def input_series(self) -> list[dict[str, str]]:
        out = []
        for source in self.sources:
            for sel, values in source.rendered():
                if len(values) != self.n:
                    raise ValueError(f"{self.name}: {sel} has {len(values)} samples, expected {self.n}")
                out.append({"series": sel, "values": notation(values, self.phase)})
        return out

    def test(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "interval": "5s" if self.phase else f"{STEP}s",
            "input_series": self.input_series(),
            "alert_rule_test": self.checks(),
        }


def notation(values: Sequence[Value], phase: int = 0) -> str:
    """promtool's expanding notation: `v` once, `vxN` for N+1 samples, `_` for no sample. With a
    phase the samples sit `phase` seconds after each evaluation step, on a 5 s grid."""
    slots: list[Value] = []
    if phase:
        if phase not in (5, 10):
            raise ValueError(f"phase {phase}: samples sit on a 5 s grid, 5 or 10 s after the evaluation")
        slots = [None] * (phase // 5)
        for v in values:
            slots += [v, None, None]
        slots = slots[: len(slots) - 2]
    else:
        slots = list(values)
    tokens: list[str] = []
    i = 0
    while i < len(slots):
        v = slots[i]
        j = i
        if isinstance(v, int | float) and float(v).is_integer():
            # An arithmetic run of whole numbers (a constant is one with step 0): `a+bxN`.
            step = None
            while j + 1 < len(slots) and isinstance(slots[j + 1], int | float) and float(slots[j + 1]).is_integer():
                d = int(slots[j + 1]) - int(slots[j])
                if step is not None and d != step:
                    break
                step = d
                j += 1
            first = int(v)
            if j == i:
                tokens.append(str(first))
            elif step == 0:
                tokens.append(f"{first}x{j - i}")
            else:
                tokens.append(f"{first}{step:+d}x{j - i}")
        elif v is None:
            while j + 1 < len(slots) and slots[j + 1] is None:
                j += 1
            tokens.append("_" if j == i else f"_x{j - i + 1}")
        elif v == "stale":
            tokens.append("stale")
        else:
            while j + 1 < len(slots) and slots[j + 1] == v:
                j += 1
            tokens.append(repr(v) if j == i else f"{v!r}x{j - i}")
        i = j + 1
    return " ".join(tokens)


def runner_labels(target: Target, runner: str) -> dict[str, str]:
    return target.labels(runner=runner)


def env(environment: str) -> dict[str, str]:
    return {"environment": environment}


def fleet(n: int, phase: int = 0, **runners: dict[str, list[Value]]) -> list[Host]:
    """The lab's three targets, every runner healthy unless `runners` says otherwise."""
    hosts = {"alpha-1": Host(PROD_A, n, phase), "beta-1": Host(PROD_B, n, phase), "beta-staging": Host(STAGE, n, phase)}
    for name, host in hosts.items():
        host.runner(name, **runners.get(name.replace("-", "_"), {}))
    return list(hosts.values())


def github_online(target: Target, runner: str, values: list[Value]) -> Series:
    return Series("github_runner_github_online", target.labels(runner=runner), values)


def scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    n = 41  # 600 s

    # A runner's service stops at ~60 s; the collector's first 0 is scraped at 75 s (s1).
    # max_over_time(..[30s]) == 0 holds from s1 + 30 s, fires 30 s later: s1 + 60 s = 135 s.
    # The runner is back with the sample at 300 s, and the alert resolves at that evaluation.
    dead = run((1, 5), (0, 15), (1, 21))
    out.append(
        Scenario(
            "dead primary runner: fires at s1 + 60 s, secondary takes over, resolves on recovery",
            n,
            fleet(n, alpha_1={"active": dead}),
            {
                "RunnerServiceDown": [Firing(runner_labels(PROD_A, "alpha-1"), 135, 300)],
                "RunningOnSecondaryOnly": [Firing(env("production"), 135, 300)],
            },
        )
    )
    hosts = fleet(n, alpha_1={"active": dead})
    hosts[0].fail([7])
    out.append(
        Scenario(
            "a missed scrape during the outage does not delay the alert",
            n,
            hosts,
            {
                "RunnerServiceDown": [Firing(runner_labels(PROD_A, "alpha-1"), 135, 300)],
                "RunningOnSecondaryOnly": [Firing(env("production"), 135, 300)],
            },
        )
    )
    out.append(
        Scenario(
            "dead primary runner, samples 5 s after each evaluation",
            n,
            fleet(n, phase=5, alpha_1={"active": dead}),
            {
                "RunnerServiceDown": [Firing(runner_labels(PROD_A, "alpha-1"), 135, 315)],
                "RunningOnSecondaryOnly": [Firing(env("production"), 150, 315)],
            },
            phase=5,
        )
    )
    out.append(
        Scenario(
            "dead primary runner, samples 10 s after each evaluation",
            n,
            fleet(n, phase=10, alpha_1={"active": dead}),
            {
                "RunnerServiceDown": [Firing(runner_labels(PROD_A, "alpha-1"), 135, 315)],
                "RunningOnSecondaryOnly": [Firing(env("production"), 150, 315)],
            },
            phase=10,
        )
    )

    # A 30 s restart: the collector sees the runner down at most twice, so at most 3 scrapes
    # carry the 0. The primary and staging's only runner restart; GitHub shows the primary
    # offline for 60 s (it polls every 30 s). Nothing may fire, at any phase.
    restart = run((1, 5), (0, 3), (1, 33))
    for phase in (0, 5, 10):
        out.append(
            Scenario(
                f"30 s restarts stay silent (samples {phase} s after each evaluation)",
                n,
                [
                    *fleet(n, phase, alpha_1={"active": restart}, beta_staging={"active": restart}),
                    github_online(GH_PROD, "alpha-1", run((1, 5), (0, 5), (1, 31))),
                    github_online(GH_PROD, "beta-1", [1] * n),
                ],
                {},
                phase=phase,
                dense=(0, 300),
            )
        )

    # Single missed scrapes everywhere, and two in a row on one host: all silent.
    hosts = fleet(n)
    hosts[0].fail([10, 25, 26])
    hosts[1].fail([20])
    hosts[2].fail([30])
    out.append(Scenario("single missed scrapes stay silent", n, hosts, {}, dense=(0, 600)))

    # Staging's only runner dies: the environment has no healthy runner (critical) one step
    # before the runner's own alert.
    out.append(
        Scenario(
            "last staging runner dies: NoHealthyRunner at s1 + 45 s",
            n,
            fleet(n, beta_staging={"active": dead}),
            {
                "NoHealthyRunner": [Firing(env("staging"), 120, 300)],
                "RunnerServiceDown": [Firing(runner_labels(STAGE, "beta-staging"), 135, 300)],
            },
        )
    )

    # Both production runners die; the secondary comes back first, then the primary.
    n2 = 51
    out.append(
        Scenario(
            "both production runners die, secondary back first",
            n2,
            fleet(
                n2,
                alpha_1={"active": run((1, 5), (0, 35), (1, 11))},
                beta_1={"active": run((1, 5), (0, 15), (1, 31))},
            ),
            {
                "NoHealthyRunner": [Firing(env("production"), 120, 300)],
                "RunningOnSecondaryOnly": [Firing(env("production"), 360, 600)],
                "RunnerServiceDown": [
                    Firing(runner_labels(PROD_A, "alpha-1"), 135, 600),
                    Firing(runner_labels(PROD_B, "beta-1"), 135, 300),
                ],
            },
        )
    )

    # Hosts unreachable from 75 s to 285 s: up == 0 for 30 s = the third failed scrape.
    hosts = fleet(n)
    hosts[0].fail(range(5, 20))
    hosts[2].fail(range(5, 20))
    out.append(
        Scenario(
            "primary host and staging host unreachable",
            n,
            hosts,
            {
                "RunnerHostUnreachable": [Firing(PROD_A.labels(), 105, 300), Firing(STAGE.labels(), 105, 300)],
                "RunningOnSecondaryOnly": [Firing(env("production"), 135, 300)],
                "NoHealthyRunner": [Firing(env("staging"), 120, 300)],
            },
        )
    )

    # Every target leaves service discovery at 300 s (the target files are gone) and one is
    # back at 600 s: nothing else can fire meanwhile, so this one is critical.
    n8 = 51
    hosts = fleet(n8)
    for host in hosts:
        host.remove(20, 51 if host.target is not PROD_A else 40)
    out.append(
        Scenario(
            "every target gone from service discovery",
            n8,
            hosts,
            {"RunnerTargetsMissing": [Firing({"job": HEALTH_JOB}, 420, 600)]},
            quiet=("RunnerTargetsMissing",),
        )
    )

    # Service active, but the runner's log says it is not connected (a session conflict).
    out.append(
        Scenario(
            "runner not listening while its service runs",
            n,
            fleet(n, alpha_1={"online": run((1, 5), (0, 15), (1, 21))}),
            {
                "RunnerNotListening": [Firing(runner_labels(PROD_A, "alpha-1"), 135, 300)],
                "RunningOnSecondaryOnly": [Firing(env("production"), 135, 300)],
            },
        )
    )

    # GitHub shows the primary offline from 75 s to 435 s while its service runs. Offline in
    # every sample of 90 s from 165 s; fires 30 s later. A healthy primary needs GitHub's
    # agreement, so the secondary-only alert follows 1 m after 165 s.
    out.append(
        Scenario(
            "runner disconnected as GitHub sees it",
            n,
            [
                *fleet(n),
                github_online(GH_PROD, "alpha-1", run((1, 5), (0, 25), (1, 11))),
                github_online(GH_PROD, "beta-1", [1] * n),
            ],
            {
                "RunnerDisconnected": [Firing(runner_labels(PROD_A, "alpha-1"), 195, 450)],
                "RunningOnSecondaryOnly": [Firing(env("production"), 225, 450)],
            },
        )
    )

    # The secondary's collector stops at 60 s (its timestamp freezes) and resumes at 300 s;
    # staging's textfile is unreadable from 75 s to 360 s (node exporter reports the error and
    # drops the file's metrics, so staging's runner is unknown, hence unhealthy).
    hosts = fleet(n)
    frozen = [*times(5), *[60] * 15, *times(n)[20:]]
    hosts[1].series[selector("github_runner_metrics_last_run_timestamp_seconds", PROD_B.labels())] = frozen
    broken = run((0, 5), (1, 20), (0, 16))
    hosts[2].add("node_textfile_scrape_error", broken)
    for sel in list(hosts[2].series):
        if not sel.startswith("node_textfile_scrape_error"):
            vals = hosts[2].series[sel]
            hosts[2].series[sel] = [*vals[:5], "stale", *[None] * 19, *vals[25:]]
    out.append(
        Scenario(
            "stale and missing runner metrics",
            n,
            hosts,
            {
                "RunnerMetricsStale": [Firing(PROD_B.labels(), 195, 300), Firing(STAGE.labels(), 105, 375)],
                "NoHealthyRunner": [Firing(env("staging"), 120, 375)],
            },
        )
    )

    # Disk: / falls 1 MB/s from 16.2075 GB free of 100 GB: the 4 h forecast crosses zero after
    # 1807.5 s, so pending from 1815 s and firing 15 m later at 2715 s; a clean-up at 3000 s
    # resolves it. /var/lib/docker is 96% full throughout: fires at 900 s. /srv falls fast
    # but has half its space (no alert), and a tmpfs filling up is ignored.
    n3 = 221
    fs = PROD_A.labels

    def filesystem(mount: str, fstype: str, avail: list[Value], size: float = 100e9) -> list[Series]:
        labels = fs(device=f"/dev/{mount.strip('/').replace('/', '-') or 'root'}", fstype=fstype, mountpoint=mount)
        return [
            Series("node_filesystem_avail_bytes", labels, avail),
            Series("node_filesystem_size_bytes", labels, [size] * n3),
            Series("node_filesystem_readonly", labels, [0] * n3),
        ]

    root = [16_207_500_000 - 15_000_000 * i for i in range(200)] + [80_000_000_000] * 21
    out.append(
        Scenario(
            "disk filling: 4 h forecast and nearly full",
            n3,
            [
                *fleet(n3),
                *filesystem("/", "ext4", root),
                *filesystem("/var/lib/docker", "xfs", [4e9] * n3),
                *filesystem("/srv", "ext4", [60e9 - 52_500_000 * i for i in range(n3)]),
                *filesystem("/run", "tmpfs", [1e9 - 4_000_000 * i for i in range(n3)], size=2e9),
            ],
            {
                "RunnerHostDiskFilling": [
                    Firing(fs(device="/dev/root", fstype="ext4", mountpoint="/"), 2715, 3000),
                    Firing(fs(device="/dev/var-lib-docker", fstype="xfs", mountpoint="/var/lib/docker"), 900),
                ],
            },
            every=300,
            quiet=tuple(ALERTS),
        )
    )

    # Memory: the primary drops to 6% available from 300 s to 885 s (fires after 5 m); the
    # secondary sits at 10.6% (no alert).
    n4 = 81
    out.append(
        Scenario(
            "memory pressure",
            n4,
            [
                *fleet(n4),
                Series("node_memory_MemTotal_bytes", PROD_A.labels(), [8e9] * n4),
                Series("node_memory_MemAvailable_bytes", PROD_A.labels(), run((4e9, 20), (0.5e9, 40), (4e9, 21))),
                Series("node_memory_MemTotal_bytes", PROD_B.labels(), [8e9] * n4),
                Series("node_memory_MemAvailable_bytes", PROD_B.labels(), [0.85e9] * n4),
            ],
            {"RunnerHostMemoryPressure": [Firing(PROD_A.labels(), 600, 900)]},
            quiet=tuple(ALERTS),
        )
    )

    # Job queue histogram (exported from the start with zero counts): in production a job that
    # waited 200 s starts at 150 s (no alert), one that waited 400 s at 300 s: fires at once, and
    # resolves when that job leaves the 15 m window (1200 s). Staging's histogram has the `le`
    # values as Prometheus 3 stores them (300.0): a 400 s wait at 600 s fires there too.
    n5 = 101
    buckets = ["5", "15", "30", "60", "120", "300", "600", "1800", "3600", "+Inf"]

    def histogram(host: Host, runner: str, waited: list[tuple[int, int]], floats: bool = False) -> Host:
        def count(le: str) -> list[Value]:
            return [sum(1 for at, w in waited if i >= at and w <= float(le)) for i in range(n5)]

        for le in buckets:
            label = le if le == "+Inf" or not floats else f"{float(le):.1f}"
            host.add("github_runner_job_queue_seconds_bucket", count(le), runner=runner, le=label)
        host.add("github_runner_job_queue_seconds_count", count("+Inf"), runner=runner)
        sums = [sum(w for at, w in waited if i >= at) for i in range(n5)]
        return host.add("github_runner_job_queue_seconds_sum", sums, runner=runner)

    out.append(
        Scenario(
            "a job waited longer than 5 minutes",
            n5,
            [
                histogram(Host(PROD_A, n5).runner("alpha-1"), "alpha-1", [(10, 200), (20, 400)]),
                histogram(Host(PROD_B, n5).runner("beta-1"), "beta-1", []),
                histogram(Host(STAGE, n5).runner("beta-staging"), "beta-staging", [(40, 400)], floats=True),
            ],
            {"RunnerJobsWaitingLong": [Firing(env("production"), 300, 1200), Firing(env("staging"), 600, 1500)]},
            quiet=tuple(ALERTS),
        )
    )

    # Version: production pins 2.329.0, superseded 21 days minus 300 s before the test starts:
    # more than 21 days from 315 s, fires 10 m later (915 s); the upgrade at 1200 s resolves it.
    # Staging pins 2.329.0 too, but its view says the newer release is only 10 days old.
    n6 = 101
    upgraded = Host(PROD_A, n6)
    upgraded.add("github_runner_service_active", [1] * n6, runner="alpha-1")
    upgraded.add("github_runner_online", [1] * n6, runner="alpha-1")
    info = {"runner": "alpha-1", "labels": "self-hosted,Linux,X64,production,primary"}
    info["unit"] = "actions.runner.example-app.alpha-1.service"
    upgraded.add("github_runner_info", [*[1] * 80, "stale", *[None] * 20], **info, version=OLD_VERSION)
    upgraded.add("github_runner_info", [*[None] * 80, *[1] * 21], **info, version=VERSION)
    stage = Host(STAGE, n6).runner("beta-staging", version=OLD_VERSION)

    def superseded(target: Target, age_at_zero: int) -> Series:
        name = "github_runner_version_update_available_timestamp_seconds"
        return Series(name, target.labels(version=OLD_VERSION), [-age_at_zero] * n6)

    out.append(
        Scenario(
            "pinned version superseded more than 21 days ago",
            n6,
            [
                upgraded,
                Host(PROD_B, n6).runner("beta-1"),
                stage,
                superseded(GH_PROD, 21 * DAY - 300),
                superseded(GH_STAGE, 10 * DAY),
            ],
            {
                "RunnerVersionBehind": [
                    Firing(PROD_A.labels(**info, version=OLD_VERSION), 915, 1200),
                ]
            },
            quiet=tuple(ALERTS),
        )
    )

    hosts = fleet(n)
    hosts[0].add("github_runner_version_deprecated", run((0, 20), (1, 20), (0, 1)), runner="alpha-1")
    out.append(
        Scenario(
            "runner reports its version deprecated",
            n,
            hosts,
            {"RunnerVersionDeprecated": [Firing(runner_labels(PROD_A, "alpha-1"), 300, 600)]},
        )
    )

    # The GitHub-view collector: production's is unreachable from 300 s to 585 s; staging's
    # answers but its last complete listing freezes at 300 s (the API fails) until 900 s.
    n7 = 81
    view_prod = Host(GH_PROD, n7)
    view_prod.series.clear()
    view_prod.add("github_runner_github_last_success_timestamp_seconds", times(n7))
    view_prod.fail(range(20, 40))
    view_stage = Host(GH_STAGE, n7)
    view_stage.series.clear()
    view_stage.add("github_runner_github_last_success_timestamp_seconds", [*times(20), *[300] * 40, *times(n7)[60:]])
    out.append(
        Scenario(
            "GitHub view unavailable",
            n7,
            [*fleet(n7), view_prod, view_stage],
            {
                "RunnerGitHubViewDown": [Firing(GH_PROD.labels(), 360, 600), Firing(GH_STAGE.labels(), 555, 900)],
            },
            quiet=tuple(ALERTS),
        )
    )
    return out


def spec() -> dict[str, Any]:
    return {
        "rule_files": [str(Path("..") / RULES.name)],
        "evaluation_interval": f"{STEP}s",
        "tests": [s.test() for s in scenarios()],
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str)


def render() -> str:
    header = (
        "# Generated by `python -m monitoring.rule_tests` from monitoring/rule_tests.py; do not edit.\n"
        "# Run: promtool test rules monitoring/tests/runner-fleet-alerts.test.yml\n"
    )
    return header + yaml.dump(spec(), Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=200)


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        return 0 if TEST_FILE.exists() and TEST_FILE.read_text() == text else 1
    TEST_FILE.parent.mkdir(exist_ok=True)
    TEST_FILE.write_text(text)
    print(f"wrote {TEST_FILE.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
