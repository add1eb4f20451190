"""`runner-fleet diagnose`: why a runner is sick, without logging into its host.

From the stack's state (`pulumi stack export`) it knows each runner's host, directory and unit;
over SSH (pinned host key, as `verify`) it collects, read-only: the service's state and recent
journal lines, the errors of the runner's newest `_diag/Runner_*.log`, the disk under the runner
and its work directory, memory, whether libicu is loadable, and the exporter's answer; from
GitHub the registration's status. Each finding becomes a cause with its evidence; the causes
are ranked so the most likely one comes first (a deprecated runner version or a revoked
registration explains a stopped service, not the other way round). Lines that look like a
credential are masked before anything is printed.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.github_api import ApiError, Runner
from fleet.verify import Deployed, Endpoint, Runners, SshRun, Unreachable, VerifyError, is_secret

JOURNAL_LINES = 30
DIAG_LINES = 20
DISK_FULL_PERCENT = 98
DISK_MIN_FREE_KB = 100 * 1024
MEMORY_LOW_PERCENT = 5

# Anything shaped like a credential never reaches the report.
_CREDENTIAL = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?i:(?:token|password|secret|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',]{8,})"
)


def mask(text: str) -> str:
    return _CREDENTIAL.sub("***", text)


@dataclass(frozen=True)
class RunnerInfo:
    name: str
    directory: str
    unit: str
    api_url: str = ""
    scope_path: str = ""


@dataclass
class HostPlan:
    endpoint: Endpoint
    runners: list[RunnerInfo] = field(default_factory=list)
    exporter_port: int | None = None


def plan(deployed: Sequence[Deployed], endpoints: Mapping[str, Endpoint], host: str | None = None) -> list[HostPlan]:
    """The runner hosts of the state (optionally only `host`) and what runs on each."""
    plans: dict[str, HostPlan] = {}
    registrations: dict[str, Deployed] = {}
    for d in deployed:
        if d.script == "runner-registration.create.sh":
            registrations[d.inputs.get("RUNNER_NAME", "")] = d
    for d in deployed:
        if d.identity not in endpoints:
            raise VerifyError(f"the state deployed to {d.identity}, which the config file does not list")
        endpoint = endpoints[d.identity]
        if d.script == "runner-service.create.sh":
            p = plans.setdefault(d.identity, HostPlan(endpoint))
            reg = registrations.get(d.inputs["RUNNER_NAME"])
            p.runners.append(
                RunnerInfo(
                    d.inputs["RUNNER_NAME"],
                    d.inputs["RUNNER_DIR"],
                    d.inputs["UNIT"],
                    reg.inputs.get("API_URL", "") if reg else "",
                    reg.inputs.get("SCOPE_PATH", "") if reg else "",
                )
            )
        elif d.script == "exporter-install.create.sh":
            plans.setdefault(d.identity, HostPlan(endpoint)).exporter_port = int(d.inputs["PORT"])
    chosen = [p for p in plans.values() if p.runners]
    if host is not None:
        chosen = [p for p in chosen if host in (p.endpoint.name, p.endpoint.address)]
        if not chosen:
            known = ", ".join(sorted(p.endpoint.name for p in plans.values() if p.runners))
            raise VerifyError(f"no runner host {host!r} in the state (known: {known})")
    return chosen


def probe_script(p: HostPlan) -> str:
    """Read-only collection; sections start with `== KIND NAME`, fields with `-- FIELD`."""
    lines = ["set -u"]
    for r in p.runners:
        d, u = shlex.quote(r.directory), shlex.quote(r.unit)
        lines += [
            f"echo '== runner {r.name}'",
            "echo '-- unit'",
            f"systemctl show {u} -p LoadState -p ActiveState -p SubState -p Result -p NRestarts -p ExecMainStatus"
            " 2>/dev/null || true",
            "echo '-- journal'",
            f"journalctl -u {u} -n {JOURNAL_LINES} --no-pager -o cat 2>/dev/null | tail -n {JOURNAL_LINES} || true",
            "echo '-- diag'",
            f"f=$(ls -t {d}/_diag/Runner_*.log 2>/dev/null | head -n 1); "
            f'[ -n "$f" ] && grep -E "( ERR | WARN |[Ee]rror|[Ee]xception|deprecated)" "$f" '
            f"| tail -n {DIAG_LINES}; true",
            "echo '-- disk'",
            f'for p in {d}/_work {d}; do [ -e "$p" ] && df -Pk "$p" | tail -n 1 | '
            "awk -v p=\"$p\" '{print p, $4, $5}'; done; true",
            "echo '-- icu'",
            "(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) | grep -c libicu || true",
        ]
    lines += ["echo '== host'", "echo '-- memory'", "grep -E '^(MemTotal|MemAvailable):' /proc/meminfo || true"]
    if p.exporter_port is not None:
        lines += [
            "echo '-- exporter'",
            f"curl -sS -o /dev/null --max-time 5 -w '%{{http_code}}' http://127.0.0.1:{p.exporter_port}/metrics "
            "2>/dev/null; echo",
        ]
    return "\n".join(lines) + "\n"


def parse_probe(output: str) -> dict[str, dict[str, list[str]]]:
    """{"runner NAME" | "host": {field: lines}}."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    fieldname = ""
    for line in output.splitlines():
        if line.startswith("== "):
            current = sections.setdefault(line[3:].strip(), {})
            fieldname = ""
        elif line.startswith("-- ") and current is not None:
            fieldname = line[3:].strip()
            current.setdefault(fieldname, [])
        elif current is not None and fieldname:
            current[fieldname].append(line)
    return sections


@dataclass(frozen=True)
class Cause:
    rank: int  # lower = more likely the root cause
    host: str
    subject: str  # runner name, or "host"
    cause: str
    evidence: tuple[str, ...] = ()
    fix: str = ""


_DEPRECATED = re.compile(r"version .*(is )?deprecated|deprecated and cannot receive messages", re.I)
_REVOKED = re.compile(
    r"registration has been deleted|no longer exists on the server|VssUnauthorized|\b401\b|Unauthorized|"
    r"Access denied|credentials? (is |are )?(invalid|revoked)",
    re.I,
)
_NATIVE = re.compile(
    r"Libicu's dependencies is missing|error while loading shared libraries|Couldn't find a valid ICU|"
    r"libicu|cannot open shared object file",
    re.I,
)
_NO_SPACE = re.compile(r"No space left on device|not enough (free )?disk space|disk (is )?full", re.I)


def _matching(lines: Iterable[str], pattern: re.Pattern[str], limit: int = 3) -> tuple[str, ...]:
    return tuple(mask(line.strip()) for line in lines if pattern.search(line))[-limit:]


def analyse_runner(
    host: str, r: RunnerInfo, data: Mapping[str, list[str]], gh: Runner | None | str
) -> tuple[list[Cause], dict[str, Any]]:
    """Causes for one runner, and the facts collected (for the report)."""
    unit = dict(line.split("=", 1) for line in data.get("unit", []) if "=" in line)
    journal = data.get("journal", [])
    diag = data.get("diag", [])
    logs = [*journal, *diag]
    disks = []
    for line in data.get("disk", []):
        parts = line.rsplit(" ", 2)
        if len(parts) == 3 and parts[1].isdigit():
            disks.append((parts[0], int(parts[1]), int(parts[2].rstrip("%") or 0)))
    icu = next((line.strip() for line in data.get("icu", []) if line.strip().isdigit()), "")
    active = unit.get("ActiveState", "unknown")
    causes: list[Cause] = []
    if found := _matching(logs, _DEPRECATED):
        causes.append(
            Cause(10, host, r.name, "GitHub refuses this runner version as deprecated", found,
                  "raise runner.version (and its sha256) in the stack config to a current release, then pulumi up")
        )  # fmt: skip
    revoked = _matching(logs, _REVOKED)
    if revoked or gh is None:
        evidence = revoked + (("GitHub: no registration of this name",) if gh is None else ())
        causes.append(
            Cause(20, host, r.name, "the runner's registration was deleted or its credential revoked on GitHub",
                  evidence, "pulumi up --replace <URN of the registration command> (registers it again)")
        )  # fmt: skip
    native = _matching(logs, _NATIVE)
    if native or icu == "0":
        evidence = native + (("ldconfig lists no libicu",) if icu == "0" else ())
        causes.append(
            Cause(30, host, r.name, "a native dependency of the runner is missing (libicu)", evidence,
                  "install it: sudo <runner dir>/bin/installdependencies.sh, or the distribution's libicu package")
        )  # fmt: skip
    full = [(p, free, pct) for p, free, pct in disks if pct >= DISK_FULL_PERCENT or free < DISK_MIN_FREE_KB]
    no_space = _matching(logs, _NO_SPACE)
    if full or no_space:
        evidence = tuple(f"{p}: {pct}% used, {free // 1024} MiB free" for p, free, pct in full) + no_space
        causes.append(
            Cause(40, host, r.name, "the runner's work disk is full", evidence,
                  "free space under the runner's _work directory (old checkouts, caches), or grow the disk")
        )  # fmt: skip
    if active != "active":
        detail = f"{r.unit}: {active}/{unit.get('SubState', '?')} (result {unit.get('Result', '?')})"
        causes.append(
            Cause(50, host, r.name, "the runner service is not running", (detail, *[mask(j) for j in journal[-3:]]),
                  f"sudo systemctl start {r.unit}, after fixing any cause listed above")
        )  # fmt: skip
    elif isinstance(gh, Runner) and gh.status != "online":
        causes.append(
            Cause(60, host, r.name, "the service runs but GitHub sees the runner offline (no connection to GitHub?)",
                  tuple(mask(j) for j in journal[-3:]), "check the host's route, proxy and DNS to GitHub")
        )  # fmt: skip
    facts = {
        "service": {k: unit.get(k, "") for k in ("ActiveState", "SubState", "Result", "NRestarts")},
        "journal": [mask(j) for j in journal[-10:]],
        "diag_errors": [mask(j) for j in diag[-10:]],
        "disk": [{"path": p, "free_kb": free, "used_percent": pct} for p, free, pct in disks],
        "libicu_entries": int(icu) if icu else None,
        "github": (
            gh
            if isinstance(gh, str)
            else "not registered"
            if gh is None
            else {"status": gh.status, "busy": gh.busy, "labels": list(gh.labels)}
        ),
    }
    return causes, facts


def analyse_host(
    host: str, data: Mapping[str, list[str]], exporter_port: int | None
) -> tuple[list[Cause], dict[str, Any]]:
    causes: list[Cause] = []
    mem = {}
    for line in data.get("memory", []):
        key, _, value = line.partition(":")
        if value.strip().split()[:1] and value.strip().split()[0].isdigit():
            mem[key] = int(value.split()[0])
    if mem.get("MemTotal") and mem.get("MemAvailable", 0) * 100 < mem["MemTotal"] * MEMORY_LOW_PERCENT:
        causes.append(
            Cause(45, host, "host", "the host is out of memory",
                  (f"MemAvailable {mem['MemAvailable'] // 1024} MiB of {mem['MemTotal'] // 1024} MiB",),
                  "find the process using it (jobs left running?) or add memory")
        )  # fmt: skip
    exporter = "".join(data.get("exporter", [])).strip()
    if exporter_port is not None and exporter != "200":
        causes.append(
            Cause(70, host, "host", f"the node exporter does not answer on :{exporter_port}",
                  (f"GET /metrics: {'no answer' if exporter in ('', '000') else 'HTTP ' + exporter}",),
                  "sudo systemctl status runner-fleet-<stack>-node-exporter.service; runner-fleet verify")
        )  # fmt: skip
    facts = {"memory_kb": mem, "exporter": exporter or "no answer"}
    return causes, facts


@dataclass
class Diagnosis:
    stack: str
    causes: list[Cause] = field(default_factory=list)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.causes:
            return 1
        return 3 if self.unreachable else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "exit_code": self.exit_code,
            "causes": [vars(c) | {"evidence": list(c.evidence)} for c in sorted(self.causes, key=lambda c: c.rank)],
            "hosts": self.hosts,
            "unreachable": self.unreachable,
            "last_deploy_outputs": self.outputs,
        }


def read_outputs(text: str) -> dict[str, Any]:
    """The stack outputs of a `pulumi stack export`, secret ones as "[secret]"."""
    try:
        resources = json.loads(text).get("deployment", {}).get("resources") or []
    except (ValueError, AttributeError):
        return {}

    def show(value: Any) -> Any:
        if is_secret(value):
            return "[secret]"
        if isinstance(value, dict):
            return {k: show(v) for k, v in value.items()}
        if isinstance(value, list):
            return [show(v) for v in value]
        return value

    for r in resources:
        if isinstance(r, dict) and r.get("type") == "pulumi:pulumi:Stack":
            return show(r.get("outputs") or {})
    return {}


def unreachable_cause(stack: str, name: str, message: str) -> Cause:
    """A host that could not be checked; one that shows another host key gets the command that
    tells the two keys apart and re-pins (fleet/hostkeys.py)."""
    if "host key" in message:
        return Cause(
            5,
            name,
            "host",
            "the host shows a host key other than the pinned one (rebuilt? or someone in the middle)",
            (message,),
            f"runner-fleet host-keys --stack {stack} prints the pinned and the presented SHA256 fingerprints and "
            "the exact `pulumi config set --path …` that re-pins; compare the presented one with the machine's "
            "console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) first",
        )
    return Cause(5, name, "host", "the host cannot be reached", (message,))


def diagnose(
    stack: str,
    plans: Sequence[HostPlan],
    *,
    ssh: SshRun,
    runners: Runners | None,
    outputs: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> Diagnosis:
    result = Diagnosis(stack, outputs=dict(outputs or {}))
    scopes: dict[tuple[str, str], list[Runner] | str] = {}
    for p in plans:
        name = p.endpoint.name
        progress(f"collecting from {name} ({p.endpoint.address})")
        try:
            sections = parse_probe(ssh(p.endpoint, probe_script(p)))
        except Unreachable as e:
            result.unreachable[name] = str(e)
            result.causes.append(unreachable_cause(stack, name, str(e)))
            continue
        host_causes, host_facts = analyse_host(name, sections.get("host", {}), p.exporter_port)
        result.causes += host_causes
        facts: dict[str, Any] = {"host": host_facts, "runners": {}}
        for r in p.runners:
            gh: Runner | None | str = "not checked"
            if runners is not None and r.scope_path:
                key = (r.api_url, r.scope_path)
                if key not in scopes:
                    progress(f"reading the runners of {r.scope_path} on {r.api_url}")
                    try:
                        scopes[key] = runners(*key)
                    except ApiError as e:
                        scopes[key] = f"GitHub could not be queried: {e}"
                listed = scopes[key]
                gh = listed if isinstance(listed, str) else next(
                    (x for x in listed if x.name.lower() == r.name.lower()), None
                )  # fmt: skip
            causes, runner_facts = analyse_runner(name, r, sections.get(f"runner {r.name}", {}), gh)
            result.causes += causes
            facts["runners"][r.name] = runner_facts
        result.hosts[name] = facts
    result.causes.sort(key=lambda c: c.rank)
    return result


def render_text(d: Diagnosis) -> Iterable[str]:
    if not d.causes:
        yield f"stack {d.stack}: no problem found on {len(d.hosts)} host(s)"
    else:
        first = d.causes[0]
        yield f"stack {d.stack}: most likely cause: {first.host} {first.subject}: {first.cause}"
    for i, c in enumerate(d.causes, 1):
        yield f"{i}. {c.host} / {c.subject}: {c.cause}"
        for line in c.evidence:
            yield f"     | {line}"
        if c.fix:
            yield f"     fix: {c.fix}"
    for host, facts in d.hosts.items():
        yield f"{host}:"
        h = facts["host"]
        mem = h.get("memory_kb", {})
        if mem:
            free, total = mem.get("MemAvailable", 0) // 1024, mem.get("MemTotal", 0) // 1024
            yield f"  memory: {free} MiB available of {total} MiB"
        yield f"  exporter: {h.get('exporter')}"
        for name, r in facts["runners"].items():
            s = r["service"]
            yield f"  runner {name}: service {s['ActiveState']}/{s['SubState']} (restarts {s['NRestarts'] or 0})"
            gh = r["github"]
            state = gh if isinstance(gh, str) else gh["status"] + (", busy" if gh["busy"] else "")
            yield f"    github: {state}"
            for disk in r["disk"]:
                yield f"    disk {disk['path']}: {disk['used_percent']}% used, {disk['free_kb'] // 1024} MiB free"
            for line in r["journal"][-5:]:
                yield f"    journal | {line}"
            for line in r["diag_errors"][-5:]:
                yield f"    _diag   | {line}"
    if d.outputs:
        yield "last deploy outputs: " + json.dumps(d.outputs, sort_keys=True)[:2000]
