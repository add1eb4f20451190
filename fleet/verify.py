"""`runner-fleet verify`: compare each host with what the stack deployed.

pulumi-command has no Read: `pulumi refresh` returns the stored state and never notices that a
host changed under a Command. So this reads what the stack deployed from its state (the output
of `pulumi stack export`, secrets left encrypted), reads the inputs of each remote command back
out of its command text (the `KEY=value` block every script starts with, components/shell.py),
and checks on the hosts what those inputs say a host holds:

- files written from command inputs (units, runner metrics conf, collector, target file), by the
  SHA-256 of their content compared the way the scripts' `write_if_changed` compares it
  (trailing newlines never count);
- the runner release and the node exporter binary, file by file against the pinned tarball
  (downloaded from the state's URL, its SHA-256 checked against the pinned one, cached);
- units enabled and active, the exporter answering on its port, the scrape job present;
- each runner registered on GitHub with exactly its labels, and online.

Connection details (address, port, user, pinned host key, jump host) come from the stack's
config file, since the state keeps the connection secret; the SSH key from a file. A host whose
key is not the pinned one is refused, never trusted on first use.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import shlex
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fleet.config import NAMESPACE, GitHubSettings, HostSpec, JumpHost, PrometheusSpec
from fleet.github_api import ApiError, GitHubApi, Runner

COMMAND_TYPE = "command:remote:Command"
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105 - Pulumi's secret signature, not a secret
INPUTS_HEADER = re.compile(r"^# runner-fleet (?P<script>[A-Za-z0-9._-]+): inputs$", re.M)
END_OF_INPUTS = "# runner-fleet: end of inputs"
_VAR = re.compile(r"[A-Z][A-Z0-9_]*")
DEFAULT_LABELS = ("self-hosted", "Linux")
ARCH_LABEL = {"x64": "X64", "arm64": "ARM64"}
MAX_FILE_DIFFERENCES = 20  # per release tree; the rest are counted


class VerifyError(Exception):
    """A problem with the inputs of a verification (usage or configuration: exit code 2)."""


# --- reading what was deployed ---------------------------------------------------------------


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIG_KEY in value


def parse_command(text: Any) -> tuple[str, dict[str, str]] | None:
    """(script name, its inputs) of a command text the program rendered (components/shell.py):
    `sudo -n /bin/bash -c '<script>' NAME` whose script starts with `KEY='value'` lines between
    `# runner-fleet NAME: inputs` and `# runner-fleet: end of inputs`. None for any other text."""
    if not isinstance(text, str) or END_OF_INPUTS not in text:
        return None
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    for word in words:
        header = INPUTS_HEADER.search(word)
        if header is None or END_OF_INPUTS not in word:
            continue
        block = word[header.end() :].split(END_OF_INPUTS, 1)[0]
        try:
            assignments = shlex.split(block)  # a quoted value may span lines (unit files, JSON)
        except ValueError:
            return None
        values: dict[str, str] = {}
        for assignment in assignments:
            key, sep, value = assignment.partition("=")
            if not sep or not _VAR.fullmatch(key):
                return None
            values[key] = value
        return header["script"], values
    return None


@dataclass(frozen=True)
class Deployed:
    """One remote command of the state: where it ran and the inputs of the script it ran."""

    urn: str
    identity: str  # user@address:port[ via ...] (the first trigger, components/remote.py)
    script: str
    inputs: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]


def read_export(text: str) -> list[Deployed]:
    """The fleet's remote commands in a `pulumi stack export` document."""
    try:
        document = json.loads(text)
    except ValueError as e:
        raise VerifyError(f"the state is not JSON ({e}); pass the output of `pulumi stack export`") from None
    deployment = document.get("deployment") if isinstance(document, dict) else None
    if not isinstance(deployment, dict) or not isinstance(deployment.get("resources", []), list):
        raise VerifyError("the state has no deployment; pass the output of `pulumi stack export`")
    found = []
    for resource in deployment.get("resources") or []:
        if not isinstance(resource, dict) or resource.get("type") != COMMAND_TYPE or resource.get("delete"):
            continue
        inputs = resource.get("inputs") or {}
        parsed = parse_command(inputs.get("create"))
        triggers = inputs.get("triggers")
        if parsed is None or not isinstance(triggers, list) or not triggers or not isinstance(triggers[0], str):
            continue
        found.append(Deployed(str(resource.get("urn", "")), triggers[0], parsed[0], parsed[1]))
    return found


# --- connection details from the stack's config file -----------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where to connect (as components/remote.py's Endpoint) and which key the host must show."""

    name: str  # what reports call the host
    address: str
    port: int
    user: str
    host_key: str
    jump: Endpoint | None = None
    arch: str = "x64"

    @property
    def identity(self) -> str:
        via = f" via {self.jump.identity}" if self.jump else ""
        return f"{self.user}@{self.address}:{self.port}{via}"


def _jump(name: str, jump: JumpHost | None) -> Endpoint | None:
    if jump is None:
        return None
    return Endpoint(f"{name} (jump host)", jump.address, jump.ssh_port, jump.ssh_user, jump.host_key)


def read_endpoints(config_file: Path) -> dict[str, Endpoint]:
    """Every machine of the stack config file, by connection identity (non-secret config only)."""
    try:
        data = yaml.safe_load(config_file.read_text()) or {}
    except OSError as e:
        raise VerifyError(f"cannot read {config_file}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise VerifyError(f"{config_file}: not YAML: {str(e).splitlines()[0]}") from None
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise VerifyError(f"{config_file}: no `config:` mapping")
    endpoints: dict[str, Endpoint] = {}
    where = f"{NAMESPACE}:hosts"
    try:
        raw_hosts = config.get(where) or []
        if not isinstance(raw_hosts, list):
            raise VerifyError(f"{config_file}: {where} is not a list")
        for i, raw in enumerate(raw_hosts):
            where = f"{NAMESPACE}:hosts[{i}]"
            host = HostSpec.from_config(raw)
            ep = Endpoint(
                host.name,
                host.address,
                host.ssh_port,
                host.ssh_user,
                host.host_key,
                _jump(host.name, host.jump_host),
                host.arch,
            )
            endpoints[ep.identity] = ep
        where = f"{NAMESPACE}:prometheus"
        if config.get(where) is not None:
            prom = PrometheusSpec.from_config(config[where])
            name = f"monitoring host {prom.address}"
            ep = Endpoint(name, prom.address, prom.ssh_port, prom.ssh_user, prom.host_key, _jump(name, prom.jump_host))
            endpoints.setdefault(ep.identity, ep)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise VerifyError(f"{config_file}: {where}{'.' + loc if loc else ''}: {first.get('msg')}") from None
    return endpoints


def read_github(config_file: Path) -> GitHubSettings | None:
    try:
        config = (yaml.safe_load(config_file.read_text()) or {}).get("config") or {}
        raw = config.get(f"{NAMESPACE}:github")
        return GitHubSettings.from_config(raw) if raw is not None else None
    except (OSError, yaml.YAMLError, ValidationError, AttributeError):
        return None


# --- what to check ---------------------------------------------------------------------------


def content_sha256(text: str) -> str:
    """SHA-256 of a file's content as write_if_changed compares it: trailing newlines dropped."""
    return hashlib.sha256(text.rstrip("\n").encode()).hexdigest()


@dataclass(frozen=True)
class FileCheck:
    path: str
    sha256: str  # of the content without trailing newlines
    what: str  # "unit", "runner conf", ...


@dataclass(frozen=True)
class UnitCheck:
    unit: str
    enabled: bool = True
    active: bool = True


@dataclass(frozen=True)
class ExporterCheck:
    port: int


@dataclass(frozen=True)
class ContainsCheck:
    path: str
    pattern: str  # an extended regular expression (grep -E)
    what: str


@dataclass(frozen=True)
class ReleaseCheck:
    """The files a pinned tarball put under `root` (after `strip` leading path components;
    `only` limits the check to those member paths)."""

    what: str
    root: str
    url: str
    sha256: str
    strip: int = 0
    only: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegistrationCheck:
    api_url: str
    scope_path: str
    name: str
    labels: tuple[str, ...]


Check = FileCheck | UnitCheck | ExporterCheck | ContainsCheck | ReleaseCheck


def host_checks(d: Deployed) -> list[Check]:
    """What the host should hold because command `d` ran there."""
    v = d.inputs
    checks: list[Check] = []
    try:
        if d.script == "exporter-install.create.sh":
            checks += [
                FileCheck(f"{v['UNIT_DIR']}/{v['UNIT']}", content_sha256(v["UNIT_CONTENT"]), "unit"),
                UnitCheck(v["UNIT"]),
                ExporterCheck(int(v["PORT"])),
                ReleaseCheck(
                    "node exporter",
                    f"{v['EXPORTER_DIR']}/{v['EXPORTER_VERSION']}",
                    v["EXPORTER_URL"],
                    v["EXPORTER_SHA256"],
                    strip=1,
                    only=("node_exporter",),
                ),
            ]
        elif d.script == "exporter-runner-metrics.create.sh":
            checks += [
                FileCheck(v["COLLECTOR_PATH"], content_sha256(v["COLLECTOR"]), "collector"),
                FileCheck(f"{v['UNIT_DIR']}/{v['SERVICE_UNIT']}", content_sha256(v["SERVICE_CONTENT"]), "unit"),
                FileCheck(f"{v['UNIT_DIR']}/{v['TIMER_UNIT']}", content_sha256(v["TIMER_CONTENT"]), "unit"),
                UnitCheck(v["TIMER_UNIT"]),
            ]
        elif d.script == "runner-install.create.sh":
            checks.append(
                ReleaseCheck(f"runner {v['RUNNER_NAME']}", v["RUNNER_DIR"], v["RUNNER_URL"], v["RUNNER_SHA256"])
            )
        elif d.script == "runner-service.create.sh":
            checks += [
                FileCheck(v["METRICS_CONF"], content_sha256(v["METRICS_CONF_CONTENT"]), "runner conf"),
                UnitCheck(v["UNIT"]),
            ]
        elif d.script == "prometheus-target-file.create.sh":
            checks.append(
                FileCheck(f"{v['TARGETS_DIR']}/{v['TARGET_FILE']}", content_sha256(v["TARGETS_JSON"]), "target file")
            )
        elif d.script == "prometheus-scrape-job.create.sh":
            job = re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", v["JOB_NAME"])
            checks += [
                ContainsCheck(
                    v["CONFIG_PATH"],
                    f"job_name:[[:space:]]*['\"]?{job}['\"]?[[:space:]]*$",
                    f"scrape job {v['JOB_NAME']}",
                ),
                UnitCheck(v["SERVICE"], enabled=False),
            ]
            if "RULES_FILE" in v and "RULES" in v:  # the alert rules, since the scrape job step deploys them
                checks.append(FileCheck(v["RULES_FILE"], content_sha256(v["RULES"]), "rules file"))
    except (KeyError, ValueError) as e:
        raise VerifyError(f"{d.name}: the state's {d.script} lacks input {e}") from None
    return checks


def registration_check(d: Deployed, arch: str) -> RegistrationCheck | None:
    if d.script != "runner-registration.create.sh":
        return None
    v = d.inputs
    custom = [label for label in v.get("CUSTOM_LABELS", "").split(",") if label]
    labels = (*DEFAULT_LABELS, ARCH_LABEL.get(arch, arch.upper()), *custom)
    return RegistrationCheck(v["API_URL"], v["SCOPE_PATH"], v["RUNNER_NAME"], labels)


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    host: str
    object: str
    expected: str
    found: str
    resource: str = ""  # URN of the command that put it there


def _owns(check: Check, obj: str) -> bool:
    if isinstance(check, ReleaseCheck):
        return obj.startswith(f"{check.what} file {check.root}/") or obj == f"{check.what} release {check.root}"
    return obj == _object(check)


@dataclass(frozen=True)
class Unchecked:
    host: str
    object: str
    reason: str


@dataclass
class Report:
    stack: str
    hosts: list[str] = field(default_factory=list)
    checked: int = 0
    differences: list[Difference] = field(default_factory=list)
    unchecked: list[Unchecked] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.unchecked:
            return 3
        return 1 if self.differences else 0

    def to_json(self) -> dict[str, Any]:
        status = {0: "in sync", 1: "drifted", 3: "incomplete"}[self.exit_code]
        return {
            "stack": self.stack,
            "status": status,
            "exit_code": self.exit_code,
            "hosts": self.hosts,
            "checked": self.checked,
            "differences": [vars(d) for d in self.differences],
            "unchecked": [vars(u) for u in self.unchecked],
        }


# --- the probe a host runs -------------------------------------------------------------------

PROBE_PRELUDE = r"""set -u
h() {
  if [ -f "$1" ]; then printf '%s' "$(cat -- "$1" 2>/dev/null)" | sha256sum | cut -d' ' -f1
  elif [ -e "$1" ]; then echo not-a-file
  else echo missing; fi
}
x() {
  if [ -f "$1" ]; then s=$(sha256sum <"$1" 2>/dev/null) && echo "${s%% *}" || echo unreadable
  else echo missing; fi
}
c() {
  if [ ! -f "$1" ]; then echo missing; elif grep -Eq -- "$2" "$1" 2>/dev/null; then echo present; else echo absent; fi
}
u() {
  echo "$(systemctl is-enabled "$1" 2>/dev/null | head -n1 || true)" \
    "$(systemctl is-active "$1" 2>/dev/null | head -n1 || true)"
}
"""


def probe_script(checks: Sequence[Check], trees: Mapping[int, Sequence[str]]) -> str:
    """A bash script printing one `ID RESULT` line per check (`ID.N RESULT` per release file)."""
    lines = [PROBE_PRELUDE]
    for i, check in enumerate(checks):
        if isinstance(check, FileCheck):
            lines.append(f"echo {i} $(h {shlex.quote(check.path)})")
        elif isinstance(check, UnitCheck):
            lines.append(f"echo {i} $(u {shlex.quote(check.unit)})")
        elif isinstance(check, ExporterCheck):
            url = f"http://127.0.0.1:{check.port}/metrics"
            lines.append(
                f"echo {i} $(curl -sS -o /dev/null --max-time 5 -w '%{{http_code}}' {url} 2>/dev/null || true)"
            )
        elif isinstance(check, ContainsCheck):
            lines.append(f"echo {i} $(c {shlex.quote(check.path)} {shlex.quote(check.pattern)})")
        elif isinstance(check, ReleaseCheck) and i in trees:
            root = shlex.quote(check.root.rstrip("/"))
            for n, rel in enumerate(trees[i]):
                lines.append(f"echo {i}.{n} $(x {root}/{shlex.quote(rel)})")
    return "\n".join(lines) + "\n"


def parse_probe(output: str) -> dict[str, str]:
    results: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            results[key] = value.strip()
    return results


def compare(
    host: str, checks: Sequence[Check], trees: Mapping[int, Mapping[str, str]], results: Mapping[str, str]
) -> tuple[list[Difference], list[Unchecked], int]:
    """Differences between what the checks expect and what the probe found; (diffs, unchecked, n)."""
    diffs: list[Difference] = []
    unchecked: list[Unchecked] = []
    n = 0
    for i, check in enumerate(checks):
        key = str(i)
        if isinstance(check, ReleaseCheck):
            if i not in trees:
                continue  # its tarball could not be read: reported as unchecked by the caller
            expected_files = trees[i]
            wrong = 0
            for j, (rel, sha) in enumerate(expected_files.items()):
                n += 1
                got = results.get(f"{i}.{j}")
                if got is None:
                    unchecked.append(
                        Unchecked(host, f"{check.what} file {check.root}/{rel}", "no answer from the host")
                    )
                elif got != sha:
                    wrong += 1
                    if wrong <= MAX_FILE_DIFFERENCES:
                        diffs.append(
                            Difference(host, f"{check.what} file {check.root}/{rel}", f"sha256 {sha}", _found(got))
                        )
            if wrong > MAX_FILE_DIFFERENCES:
                diffs.append(
                    Difference(
                        host,
                        f"{check.what} release {check.root}",
                        "every file as released",
                        f"{wrong - MAX_FILE_DIFFERENCES} more files differ",
                    )
                )
            continue
        n += 1
        got = results.get(key)
        obj = _object(check)
        if got is None:
            unchecked.append(Unchecked(host, obj, "no answer from the host"))
            continue
        if isinstance(check, FileCheck):
            if got != check.sha256:
                diffs.append(Difference(host, obj, f"sha256 {check.sha256}", _found(got)))
        elif isinstance(check, UnitCheck):
            enabled, _, active = got.partition(" ")
            want = []
            if check.enabled and enabled not in ("enabled", "enabled-runtime", "static", "alias"):
                want.append("enabled")
            if check.active and active != "active":
                want.append("active")
            if want:
                expected = " and ".join(["enabled"] * check.enabled + ["active"] * check.active)
                found = ", ".join(w for w in (enabled or "unknown", active or "unknown"))
                diffs.append(Difference(host, obj, expected, found))
        elif isinstance(check, ExporterCheck):
            if got != "200":
                diffs.append(Difference(host, obj, "HTTP 200", "no answer" if got in ("", "000") else f"HTTP {got}"))
        elif isinstance(check, ContainsCheck) and got != "present":
            diffs.append(Difference(host, obj, f"in {check.path}", "file missing" if got == "missing" else "absent"))
    return diffs, unchecked, n


def _found(got: str) -> str:
    return f"sha256 {got}" if re.fullmatch(r"[0-9a-f]{64}", got) else got.replace("-", " ")


def _object(check: Check) -> str:
    if isinstance(check, FileCheck):
        return f"{check.what} {check.path}"
    if isinstance(check, UnitCheck):
        return f"service {check.unit}"
    if isinstance(check, ExporterCheck):
        return f"exporter :{check.port}/metrics"
    if isinstance(check, ContainsCheck):
        return check.what
    return check.what


def compare_registration(host: str, check: RegistrationCheck, runner: Runner | None) -> list[Difference]:
    obj = f"runner {check.name} on GitHub"
    if runner is None:
        return [Difference(host, obj, f"registered in {check.scope_path}", "not registered")]
    diffs = []
    want = sorted(check.labels, key=str.lower)
    got = sorted(runner.labels, key=str.lower)
    if [w.lower() for w in want] != [g.lower() for g in got]:
        diffs.append(Difference(host, f"{obj}: labels", ",".join(want), ",".join(got)))
    if runner.status != "online":
        diffs.append(Difference(host, f"{obj}: status", "online", runner.status or "unknown"))
    return diffs


# --- release tarballs ------------------------------------------------------------------------


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "runner-fleet" / "releases"


def fetch_release(url: str, sha256: str, cache: Path, timeout: float = 60.0) -> Path:
    """The tarball at `url`, checked against its pinned SHA-256 and cached by it."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"pinned checksum {sha256!r} is not a SHA-256")
    target = cache / f"{sha256}.tar.gz"
    if target.exists():
        return target
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{url}: not an http(s) URL")
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".download.")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ValueError(f"{url}: SHA-256 {digest.hexdigest()}, pinned {sha256}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def release_files(tarball: Path, strip: int = 0, only: Sequence[str] = ()) -> dict[str, str]:
    """Relative path -> SHA-256 of every regular file of a tarball (after stripping components)."""
    files: dict[str, str] = {}
    with tarfile.open(tarball, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            parts = [p for p in member.name.split("/") if p not in ("", ".")]
            if len(parts) <= strip or ".." in parts:
                continue
            rel = "/".join(parts[strip:])
            if only and rel not in only:
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            files[rel] = digest.hexdigest()
    return dict(sorted(files.items()))


# --- SSH ------------------------------------------------------------------------------------


class Unreachable(Exception):
    """The host could not be checked (no connection, refused key, no sudo)."""


def load_private_key(path: Path) -> Any:
    import paramiko  # type: ignore[import-untyped]

    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise VerifyError(f"--ssh-key {path}: no such file") from None
    except (OSError, paramiko.SSHException, ValueError) as e:
        raise VerifyError(f"--ssh-key {path}: not a usable private key ({type(e).__name__})") from None


def _pinned(line: str) -> Any:
    import paramiko

    kind, blob = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


def _known_name(e: Endpoint) -> str:
    return e.address if e.port == 22 else f"[{e.address}]:{e.port}"


def ssh_run(endpoint: Endpoint, key: Any, script: str, timeout: float = 20.0) -> str:
    """Run `script` with `sudo -n bash` on the host after checking its pinned key; its stdout."""
    import paramiko

    clients: list[Any] = []
    try:
        sock = None
        hops = [endpoint] if endpoint.jump is None else [endpoint.jump, endpoint]
        for hop in hops:
            client = paramiko.SSHClient()
            clients.append(client)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.get_host_keys().add(_known_name(hop), *_type_and_key(hop.host_key))
            try:
                client.connect(
                    hop.address,
                    port=hop.port,
                    username=hop.user,
                    pkey=key,
                    sock=sock,
                    timeout=timeout,
                    banner_timeout=timeout,
                    auth_timeout=timeout,
                    allow_agent=False,
                    look_for_keys=False,
                )
            except paramiko.BadHostKeyException:
                raise Unreachable(
                    f"{hop.address}:{hop.port} showed a host key other than the pinned one; refused"
                ) from None
            except paramiko.SSHException as e:
                message = str(e)
                if "not found in known_hosts" in message:
                    message = "its host key is not the pinned one; refused"
                raise Unreachable(f"{hop.address}:{hop.port}: {message}") from None
            except (OSError, EOFError) as e:
                raise Unreachable(f"{hop.address}:{hop.port}: {getattr(e, 'strerror', None) or e}") from None
            if hop is not endpoint:
                transport = client.get_transport()
                if transport is None:
                    raise Unreachable(f"{hop.address}:{hop.port}: the jump host closed the connection")
                sock = transport.open_channel("direct-tcpip", (endpoint.address, endpoint.port), ("127.0.0.1", 0))
        stdin, stdout, stderr = clients[-1].exec_command("sudo -n /bin/bash -s", timeout=max(timeout, 120.0))
        stdin.write(script)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        status = stdout.channel.recv_exit_status()
        if status != 0 and not out:
            first = err.strip().splitlines()[:1]
            raise Unreachable(f"the probe failed (exit {status}){': ' + first[0] if first else ''}")
        return out
    except TimeoutError as e:
        raise Unreachable(f"{endpoint.address}:{endpoint.port}: timed out ({e})") from None
    except paramiko.SSHException as e:
        raise Unreachable(f"{endpoint.address}:{endpoint.port}: {e}") from None
    finally:
        for client in reversed(clients):
            client.close()


def _type_and_key(line: str) -> tuple[str, Any]:
    key = _pinned(line)
    return key.get_name(), key


# --- the whole verification ------------------------------------------------------------------

Runners = Callable[[str, str], list[Runner]]  # (api_url, scope_path) -> runners
SshRun = Callable[[Endpoint, str], str]
Fetch = Callable[[str, str], Path]


def verify(
    stack: str,
    deployed: Sequence[Deployed],
    endpoints: Mapping[str, Endpoint],
    *,
    ssh: SshRun,
    runners: Runners | None,
    fetch: Fetch,
    progress: Callable[[str], None] = lambda _line: None,
) -> Report:
    """Check every host the state says was deployed to; `runners` None skips GitHub."""
    report = Report(stack)
    by_host: dict[str, list[Deployed]] = {}
    for d in deployed:
        by_host.setdefault(d.identity, []).append(d)
    missing = sorted(set(by_host) - set(endpoints))
    if missing:
        raise VerifyError(
            f"the state deployed to {', '.join(missing)}, which the config file does not list "
            "(address, sshPort or sshUser changed since the last deploy? run `pulumi up` first)"
        )
    releases: dict[tuple[str, str, int, tuple[str, ...]], dict[str, str] | str] = {}
    registrations: list[tuple[str, str, RegistrationCheck]] = []
    for identity, commands in by_host.items():
        endpoint = endpoints[identity]
        report.hosts.append(endpoint.name)
        owned = [(d.urn, c) for d in commands for c in host_checks(d)]
        checks = [c for _, c in owned]
        registrations += [(endpoint.name, d.urn, r) for d in commands if (r := registration_check(d, endpoint.arch))]
        trees: dict[int, dict[str, str]] = {}
        for i, check in enumerate(checks):
            if not isinstance(check, ReleaseCheck):
                continue
            key = (check.url, check.sha256, check.strip, check.only)
            if key not in releases:
                progress(f"reading the pinned release {check.url}")
                try:
                    releases[key] = release_files(fetch(check.url, check.sha256), check.strip, check.only)
                except (OSError, ValueError, urllib.error.URLError, tarfile.TarError) as e:
                    releases[key] = str(getattr(e, "reason", None) or e)
            files = releases[key]
            if isinstance(files, str):
                report.unchecked.append(
                    Unchecked(
                        endpoint.name, f"{check.what} release {check.root}", f"cannot read the pinned release: {files}"
                    )
                )
            else:
                trees[i] = files
        progress(f"checking {endpoint.name} ({endpoint.address})")
        try:
            output = ssh(endpoint, probe_script(checks, {i: list(t) for i, t in trees.items()}))
        except Unreachable as e:
            report.unchecked.append(Unchecked(endpoint.name, "host", str(e)))
            continue
        diffs, unchecked, n = compare(endpoint.name, checks, trees, parse_probe(output))
        diffs = [
            dataclasses.replace(d, resource=next((urn for urn, c in owned if _owns(c, d.object)), "")) for d in diffs
        ]
        report.differences += diffs
        report.unchecked += unchecked
        report.checked += n
    if runners is not None:
        scopes: dict[tuple[str, str], list[Runner] | str] = {}
        for host, urn, reg in registrations:
            scope_key = (reg.api_url, reg.scope_path)
            if scope_key not in scopes:
                progress(f"reading the runners of {reg.scope_path} on {reg.api_url}")
                try:
                    scopes[scope_key] = runners(*scope_key)
                except ApiError as e:
                    scopes[scope_key] = str(e)
            found = scopes[scope_key]
            if isinstance(found, str):
                report.unchecked.append(
                    Unchecked(host, f"runner {reg.name} on GitHub", f"GitHub could not be queried: {found}")
                )
                continue
            match = next((r for r in found if r.name.lower() == reg.name.lower()), None)
            report.differences += [dataclasses.replace(d, resource=urn) for d in compare_registration(host, reg, match)]
            report.checked += 1
    return report


def github_runners(token: str, log: Callable[[str], None]) -> Runners:
    apis: dict[str, GitHubApi] = {}

    def list_scope(api_url: str, scope_path: str) -> list[Runner]:
        if api_url not in apis:
            try:
                apis[api_url] = GitHubApi(api_url, token, log=log, retries=3)
            except ValueError as e:
                raise ApiError(0, str(e)) from None
        return apis[api_url].list_runners(scope_path)

    return list_scope


def render_text(report: Report) -> Iterable[str]:
    code = report.exit_code
    status = {0: "in sync", 1: "DRIFTED", 3: "NOT FULLY CHECKED"}[code]
    yield (
        f"stack {report.stack}: {status} ({len(report.hosts)} host(s), {report.checked} object(s) checked, "
        f"{len(report.differences)} difference(s), {len(report.unchecked)} not checked)"
    )
    for d in report.differences:
        yield f"DRIFT  {d.host}  {d.object}"
        yield f"         expected: {d.expected}"
        yield f"         found:    {d.found}"
        if d.resource:
            yield f"         deployed by: {d.resource}"
    for u in report.unchecked:
        yield f"UNCHECKED  {u.host}  {u.object}: {u.reason}"


__all__ = ["Difference", "Endpoint", "Report", "VerifyError", "parse_command", "read_export", "verify"]
