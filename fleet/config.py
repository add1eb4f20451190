"""Stack configuration: every `runner-fleet:*` key, typed, validated once, at the edge.

`load()` turns the stack's config into frozen models and raises `ConfigError` listing every
problem with its key path (`runner-fleet:hosts[1].runners[0].labels[2]: ...`) before any
resource is registered. Components receive these models, never raw dicts.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pulumi import RunError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

NAMESPACE = "runner-fleet"
PROJECT_DIR = Path(__file__).resolve().parent.parent

# Defaults pinned to published release values; bump version and both checksums together.
# actions/runner v2.334.0 release notes ("SHA-256 Checksums"), also pinned in many public
# Dockerfiles: linux-x64 048024cd…, linux-arm64 f44255bd….
DEFAULT_RUNNER_VERSION = "2.334.0"
DEFAULT_RUNNER_SHA256 = {
    "x64": "048024cd2c848eb6f14d5646d56c13a4def2ae7ee3ad12122bee960c56f3d271",
    "arm64": "f44255bd3e80160eb25f71bc83d06ea025f6908748807a584687b3184759f7e4",
}
DEFAULT_RUNNER_URL = (
    "https://github.com/actions/runner/releases/download/v{version}/"
    "actions-runner-linux-{arch}-{version}.tar.gz"
)
# prometheus/node_exporter v1.8.2 sha256sums.txt: linux-amd64 6809dd0b…, linux-arm64 627382b9….
DEFAULT_EXPORTER_VERSION = "1.8.2"
DEFAULT_EXPORTER_SHA256 = {
    "x64": "6809dd0b3ec45fd6e992c19071d6b5253aed3ead7bf0686885a51d85c6643c66",
    "arm64": "627382b9723c642411c33f48861134ebe893e70a63bcc8b3fc0619cd0bfac4be",
}
DEFAULT_EXPORTER_URL = (
    "https://github.com/prometheus/node_exporter/releases/download/v{version}/"
    "node_exporter-{version}.linux-{goarch}.tar.gz"
)

SECRET_KEYS = ("githubToken", "sshPrivateKey")
OBJECT_KEYS = ("github", "hosts", "prometheus", "runner", "exporter")
KNOWN_KEYS = frozenset(SECRET_KEYS + OBJECT_KEYS)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_DURATION_RE = re.compile(r"^[0-9]+(ms|s|m|h)$")
_STACK_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
_HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


def __getattr__(name: str) -> Any:
    """Arch tables moved to components.arch; old importers of fleet.config keep working."""
    if name in ("ARCH_LABEL", "GO_ARCH", "UNAME_ARCH"):
        from components import arch

        return getattr(arch, name)
    raise AttributeError(name)


class ConfigError(RunError):
    """Every problem found in the stack configuration, one per line, each with its key path."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"  {path}: {message}" for path, message in problems]
        super().__init__(
            f"runner-fleet: the stack configuration has {len(problems)} problem(s); "
            "nothing was changed:\n" + "\n".join(lines)
        )


# --- value checks (each raises ValueError with a message a user can act on) -----------


def _name(value: str) -> str:
    if not _NAME_RE.match(value) or len(value) > 64:
        raise ValueError(
            f"{value!r} is not a valid name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (the runner, systemd and the shell keep these intact)"
        )
    return value


def _label(value: str) -> str:
    if not _NAME_RE.match(value) or len(value) > 100:
        raise ValueError(
            f"{value!r} is not a valid runner label: use letters, digits, '.', '_' or '-' "
            "(a comma or space would split or mangle it)"
        )
    return value


def _address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if _HOSTNAME_RE.match(value) and not re.match(r"^[0-9.]+$", value):
        return value
    raise ValueError(f"{value!r} is not an IP address or DNS host name")


def _host_key(value: str) -> str:
    parts = value.strip().split()
    if len(parts) < 2 or parts[0] not in _HOST_KEY_TYPES:
        raise ValueError(
            "expected an authorized_keys-style public host key such as "
            "'ssh-ed25519 AAAAC3Nz...' (see README: ssh-keyscan)"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the host key's base64 part does not decode") from None
    if len(blob) < 4:
        raise ValueError("the host key's base64 part is too short")
    type_len = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + type_len].decode("ascii", "replace") != parts[0]:
        raise ValueError(f"the host key's data is not a {parts[0]} key")
    return f"{parts[0]} {parts[1]}"


def _sha256(value: str) -> str:
    if not _SHA256_RE.match(value.lower()):
        raise ValueError(f"{value!r} is not a SHA-256 checksum (64 hexadecimal characters)")
    return value.lower()


def _version(value: str) -> str:
    if not _VERSION_RE.match(value):
        raise ValueError(f"{value!r} is not a release version like 1.2.3")
    return value


def _abs_path(value: str) -> str:
    if not _PATH_RE.match(value) or "/../" in value + "/" or value.rstrip("/") == "":
        raise ValueError(f"{value!r} is not an absolute path of letters, digits, '.', '_', '-', '/'")
    return value.rstrip("/")


def _unix_user(value: str) -> str:
    if not _USER_RE.match(value) or value == "root":
        raise ValueError(f"{value!r} is not a valid non-root Linux user name (lowercase, at most 32 chars)")
    return value


def _duration(value: str) -> str:
    if not _DURATION_RE.match(value):
        raise ValueError(f"{value!r} is not a Prometheus duration like 15s")
    return value


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?$", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


def _url_template(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"{value!r} must be an http(s) URL")
    unknown = set(re.findall(r"{([^}]*)}", value)) - {"version", "arch", "goarch"}
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {{version}}, {{arch}}, {{goarch}}")
    if re.search(r"[\s'\"`$\\]", value):
        raise ValueError("the URL template contains whitespace, quotes, '$' or '\\'")
    return value


def _repository(value: str) -> str:
    owner, _, repo = value.partition("/")
    if not owner or not repo or "/" in repo or not _NAME_RE.match(owner) or not _NAME_RE.match(repo):
        raise ValueError(f"{value!r} is not a repository in the form owner/name")
    return value


Name = Annotated[str, AfterValidator(_name)]
Label = Annotated[str, AfterValidator(_label)]
Address = Annotated[str, AfterValidator(_address)]
HostKey = Annotated[str, AfterValidator(_host_key)]
Sha256 = Annotated[str, AfterValidator(_sha256)]
Version = Annotated[str, AfterValidator(_version)]
AbsPath = Annotated[str, AfterValidator(_abs_path)]
UnixUser = Annotated[str, AfterValidator(_unix_user)]
Duration = Annotated[str, AfterValidator(_duration)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
UrlTemplate = Annotated[str, AfterValidator(_url_template)]
Repository = Annotated[str, AfterValidator(_repository)]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
Arch = Literal["x64", "arm64"]
Role = Literal["primary", "secondary"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


# --- models ---------------------------------------------------------------------------


class ArchChecksums(_Model):
    """SHA-256 of the release tarball per architecture."""

    x64: Sha256 | None = None
    arm64: Sha256 | None = None

    def for_arch(self, arch: str) -> str | None:
        return getattr(self, arch)


class Artifact(_Model):
    """A pinned, checksum-verified release tarball (runner or node exporter)."""

    version: Version
    sha256: ArchChecksums
    url_template: UrlTemplate

    def url(self, arch: str) -> str:
        from components.arch import GO_ARCH

        return self.url_template.format(version=self.version, arch=arch, goarch=GO_ARCH[arch])

    def checksum(self, arch: str) -> str:
        value = self.sha256.for_arch(arch)
        if value is None:  # load() rejects configs where a used arch has no checksum
            raise KeyError(arch)
        return value


class RunnerGroupSpec(_Model):
    """An organization runner group that the stack creates (pulumi-github ActionsRunnerGroup)."""

    name: Name
    visibility: Literal["all", "selected", "private"] = "all"


class GitHubSettings(_Model):
    """Where runners register: one repository or one organization, on github.com or GHES."""

    repository: Repository | None = None
    organization: Name | None = None
    server_url: HttpUrl = "https://github.com"
    api_url: HttpUrl | None = None
    check_access: bool = True
    runner_groups: tuple[RunnerGroupSpec, ...] = ()

    @property
    def owner(self) -> str:
        return self.organization or (self.repository or "").split("/")[0]

    @property
    def registration_url(self) -> str:
        """The `--url` config.sh registers against."""
        return f"{self.server_url}/{self.organization or self.repository}"

    @property
    def effective_api_url(self) -> str:
        if self.api_url:
            return self.api_url
        if self.server_url == "https://github.com":
            return "https://api.github.com"
        return f"{self.server_url}/api/v3"

    @property
    def scope_path(self) -> str:
        """REST path prefix of the runner endpoints."""
        if self.organization:
            return f"orgs/{self.organization}"
        return f"repos/{self.repository}"


class JumpHost(_Model):
    """An SSH bastion between the deployer and a host (pulumi-command `proxy`)."""

    address: Address
    ssh_port: Port = 22
    ssh_user: UnixUser | Literal["root"] = "root"
    host_key: HostKey


class RunnerSpec(_Model):
    """One runner instance (a registration plus a systemd service) on a host."""

    name: Name
    labels: tuple[Label, ...] = ()
    group: Name | None = None


class HostSpec(_Model):
    """A machine that carries runners and this stack's node exporter."""

    name: Name
    address: Address
    ssh_user: UnixUser | Literal["root"] = "root"
    ssh_port: Port = 22
    host_key: HostKey
    jump_host: JumpHost | None = None
    arch: Arch = "x64"
    role: Role
    exporter_port: Port
    runner_user: UnixUser | None = None
    min_disk_mb: int = Field(default=2048, ge=0)
    runners: tuple[RunnerSpec, ...]


class PrometheusSpec(_Model):
    """The monitoring host whose Prometheus scrapes this stack's exporters."""

    address: Address
    port: Port = 9090
    ssh_user: UnixUser | Literal["root"] = "root"
    ssh_port: Port = 22
    host_key: HostKey
    jump_host: JumpHost | None = None
    manage_config: bool = True
    config_path: AbsPath = "/etc/prometheus/prometheus.yml"
    targets_dir: AbsPath = "/etc/prometheus/runner-fleet"
    service: Name = "prometheus"
    job_name: Name = "github-runner-health"
    scrape_interval: Duration = "15s"
    promtool: AbsPath | Literal["promtool"] = "promtool"


@dataclass(frozen=True)
class Secrets:
    """Secret config values, kept as secret Outputs: they only ever reach stdin and connections."""

    github_token: Any  # pulumi.Output[str]
    ssh_private_key: Any  # pulumi.Output[str]


@dataclass(frozen=True)
class FleetConfig:
    """The whole validated stack."""

    stack: str
    github: GitHubSettings
    hosts: tuple[HostSpec, ...]
    prometheus: PrometheusSpec
    runner: Artifact
    exporter: Artifact
    secrets: Secrets

    def runner_user(self, host: HostSpec) -> str:
        return host.runner_user or default_runner_user(self.stack)


def default_runner_user(stack: str) -> str:
    """Each stack runs its jobs as its own user, so staging jobs cannot touch production files."""
    return f"github-runner-{stack}"


# --- loading --------------------------------------------------------------------------


def _path(key: str, loc: tuple[Any, ...] = ()) -> str:
    out = f"{NAMESPACE}:{key}"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _pydantic_problems(key: str, exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
            if loc and loc[-1] == "hostKey":
                msg = "is required: pin the machine's SSH host key (README: ssh-keyscan -t ed25519 ADDRESS)"
        elif err["type"] == "extra_forbidden":
            msg = "is not a known key (typo?)"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        problems.append((_path(key, loc), msg))
    return problems


def raw_config() -> dict[str, Any]:
    """Every `runner-fleet:*` key the program was given, parsed from JSON where structured."""
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = {}
    sources = [runtime_config.get_config_env(), runtime_config.CONFIG.get()]
    for source in sources:
        for full_key, value in source.items():
            ns, _, key = full_key.partition(":")
            if ns == NAMESPACE:
                values[key] = value
    return values


def _is_secret(full_key: str) -> bool:
    """Secret-ness as set by the engine: the language host passes it in the environment
    (PULUMI_CONFIG_SECRET_KEYS); set_all_config (tests, providers) keeps it in the runtime."""
    from pulumi.runtime import config as runtime_config

    return runtime_config.is_config_secret(full_key) or full_key in runtime_config.get_config_secret_keys_env()


def _decode(key: str, value: Any, problems: list[tuple[str, str]]) -> Any:
    if key in OBJECT_KEYS and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            problems.append((_path(key), "must be a structured (YAML object or list) value"))
            return None
    return value


def load(stack: str | None = None) -> FleetConfig:
    """Validate the stack config; raise ConfigError listing every problem."""
    import pulumi

    stack = stack or pulumi.get_stack()
    problems: list[tuple[str, str]] = []
    raw = raw_config()

    if not _STACK_RE.match(stack):
        problems.append(
            ("stack", f"stack name {stack!r} must be lowercase letters, digits and '-' (it names paths and units)")
        )
    for key in sorted(set(raw) - KNOWN_KEYS):
        problems.append((_path(key), f"is not a known key (typo?); known keys: {', '.join(sorted(KNOWN_KEYS))}"))

    values = {key: _decode(key, raw.get(key), problems) for key in KNOWN_KEYS}

    for key in SECRET_KEYS:
        value = values[key]
        if value is None or value == "":
            problems.append((_path(key), f"is required: pulumi config set --secret {NAMESPACE}:{key} ..."))
        elif not _is_secret(f"{NAMESPACE}:{key}"):
            problems.append((_path(key), f"must be a secret: pulumi config set --secret {NAMESPACE}:{key} ..."))
        elif not isinstance(value, str):
            problems.append((_path(key), "must be a string"))
    token = values["githubToken"]
    if isinstance(token, str) and token and any(c.isspace() for c in token):
        problems.append((_path("githubToken"), "must be a single token without whitespace"))
    key_text = values["sshPrivateKey"]
    if isinstance(key_text, str) and key_text and not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", key_text):
        problems.append((_path("sshPrivateKey"), "is not a PEM/OpenSSH private key (-----BEGIN ... PRIVATE KEY-----)"))

    runner_raw = _with_defaults(values["runner"], DEFAULT_RUNNER_VERSION, DEFAULT_RUNNER_SHA256, DEFAULT_RUNNER_URL)
    exporter_raw = _with_defaults(
        values["exporter"], DEFAULT_EXPORTER_VERSION, DEFAULT_EXPORTER_SHA256, DEFAULT_EXPORTER_URL
    )

    def parse(key: str, adapter: TypeAdapter[Any], value: Any) -> Any:
        if value is None:
            problems.append((_path(key), "is required"))
            return None
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(key, exc))
            return None

    github = parse("github", TypeAdapter(GitHubSettings), values["github"])
    hosts = parse("hosts", TypeAdapter(tuple[HostSpec, ...]), values["hosts"])
    if hosts == ():
        problems.append((_path("hosts"), "must list at least one host"))
    prometheus = parse("prometheus", TypeAdapter(PrometheusSpec), values["prometheus"])
    runner = parse("runner", TypeAdapter(Artifact), runner_raw)
    exporter = parse("exporter", TypeAdapter(Artifact), exporter_raw)

    problems.extend(_semantic_problems(values, stack))
    problems.extend(_sibling_stack_problems(values, stack))

    if problems:
        raise ConfigError(_dedupe(problems))
    settings = pulumi.Config(NAMESPACE)
    return FleetConfig(
        stack=stack,
        github=github,
        hosts=hosts,
        prometheus=prometheus,
        runner=runner,
        exporter=exporter,
        secrets=Secrets(
            github_token=settings.require_secret("githubToken"),
            ssh_private_key=settings.require_secret("sshPrivateKey"),
        ),
    )


def _with_defaults(raw: Any, version: str, sha: dict[str, str], url: str) -> Any:
    """Fill artifact defaults; the default checksums apply only to the default version."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return raw
    merged = {"version": version, "urlTemplate": url, **raw}
    if "sha256" not in raw and merged["version"] == version:
        merged["sha256"] = dict(sha)
    return merged


def _dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for item in problems:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _semantic_problems(values: dict[str, Any], stack: str) -> list[tuple[str, str]]:
    """Cross-field rules, checked on the raw data so they are reported alongside type errors."""
    from components.arch import ARCH_LABEL

    problems: list[tuple[str, str]] = []
    hosts = values.get("hosts")
    github = values.get("github") if isinstance(values.get("github"), dict) else {}
    prometheus = values.get("prometheus") if isinstance(values.get("prometheus"), dict) else {}
    runner = values.get("runner") if isinstance(values.get("runner"), dict) else {}
    exporter = values.get("exporter") if isinstance(values.get("exporter"), dict) else {}

    if github is not None:
        has_repo, has_org = bool(github.get("repository")), bool(github.get("organization"))
        if has_repo == has_org:
            problems.append((_path("github"), "set exactly one of repository (owner/name) or organization"))
        if has_repo and github.get("runnerGroups"):
            problems.append((_path("github", ("runnerGroups",)), "runner groups exist only for organization scope"))

    seen_names: dict[str, str] = {}
    seen_addresses: dict[str, str] = {}
    seen_runners: dict[str, str] = {}
    for i, host in _items(hosts):
        name = host.get("name")
        if isinstance(name, str):
            key = name.lower()
            if key in seen_names:
                problems.append((_path("hosts", (i, "name")), f"duplicate host name {name!r} (also {seen_names[key]})"))
            else:
                seen_names[key] = _path("hosts", (i, "name"))
        address = host.get("address")
        if isinstance(address, str):
            if address in seen_addresses:
                problems.append(
                    (
                        _path("hosts", (i, "address")),
                        f"address {address!r} is already {seen_addresses[address]}: list each machine once "
                        "and give it several runners",
                    )
                )
            else:
                seen_addresses[address] = _path("hosts", (i, "address"))
        port = host.get("exporterPort")
        ssh_port = host.get("sshPort", 22)
        if isinstance(port, int) and port == ssh_port:
            problems.append((_path("hosts", (i, "exporterPort")), f"port {port} is this host's SSH port"))
        if (
            isinstance(port, int)
            and address is not None
            and address == prometheus.get("address")
            and port in (prometheus.get("port", 9090), prometheus.get("sshPort", 22))
        ):
            problems.append(
                (_path("hosts", (i, "exporterPort")), f"port {port} is already used by Prometheus on {address}")
            )
        arch = host.get("arch", "x64")
        if arch in ("x64", "arm64"):
            for key, section in (("runner", runner), ("exporter", exporter)):
                sha = section.get("sha256")
                if isinstance(sha, dict) and sha.get(arch) is None:
                    problems.append(
                        (_path(key, ("sha256", arch)), f"is required: host {name!r} is {arch}")
                    )
        if host.get("runnerUser") is None and not _USER_RE.match(default_runner_user(stack)):
            problems.append((_path("hosts", (i, "runnerUser")), "is required: the stack name gives no valid user name"))
        if host.get("runners") == []:
            problems.append((_path("hosts", (i, "runners")), "must list at least one runner"))
        for j, spec in _items(host.get("runners")):
            rname = spec.get("name")
            if isinstance(rname, str):
                key = rname.lower()
                if key in seen_runners:
                    problems.append(
                        (
                            _path("hosts", (i, "runners", j, "name")),
                            f"duplicate runner name {rname!r} (also {seen_runners[key]}); GitHub names must be unique",
                        )
                    )
                else:
                    seen_runners[key] = _path("hosts", (i, "runners", j, "name"))
            if spec.get("group") is not None and github.get("repository"):
                problems.append(
                    (_path("hosts", (i, "runners", j, "group")), "runner groups need organization scope")
                )
            labels = spec.get("labels")
            if isinstance(labels, list):
                seen_labels: set[str] = set()
                for k, label in enumerate(labels):
                    if not isinstance(label, str):
                        continue
                    low = label.lower()
                    if low in seen_labels:
                        problems.append(
                            (_path("hosts", (i, "runners", j, "labels", k)), f"duplicate label {label!r}")
                        )
                    seen_labels.add(low)
                    other = {"x64": "arm64", "arm64": "x64"}.get(arch)
                    if other and low == ARCH_LABEL[other].lower():
                        problems.append(
                            (
                                _path("hosts", (i, "runners", j, "labels", k)),
                                f"label {label!r} contradicts the host's arch {arch!r}",
                            )
                        )
    return problems


def _sibling_stack_problems(values: dict[str, Any], stack: str) -> list[tuple[str, str]]:
    """Nothing may be managed by two stacks: compare with the project's other stack files."""
    problems: list[tuple[str, str]] = []
    mine = _items(values.get("hosts"))
    github = values.get("github") if isinstance(values.get("github"), dict) else {}
    scope = github.get("repository") or github.get("organization")
    for path in sorted(PROJECT_DIR.glob("Pulumi.*.yaml")):
        other_stack = path.name[len("Pulumi.") : -len(".yaml")]
        if other_stack == stack:
            continue
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        config = data.get("config") or {}
        other_hosts = _items(config.get(f"{NAMESPACE}:hosts"))
        other_github = config.get(f"{NAMESPACE}:github") or {}
        other_scope = other_github.get("repository") or other_github.get("organization")
        ports = {(h.get("address"), h.get("exporterPort")) for _, h in other_hosts}
        runners = {r.get("name", "").lower() for _, h in other_hosts for _, r in _items(h.get("runners"))}
        for i, host in mine:
            if (host.get("address"), host.get("exporterPort")) in ports:
                problems.append(
                    (
                        _path("hosts", (i, "exporterPort")),
                        f"port {host.get('exporterPort')} on {host.get('address')} is already used by "
                        f"stack {other_stack!r} ({path.name})",
                    )
                )
            if scope and scope == other_scope:
                for j, spec in _items(host.get("runners")):
                    if str(spec.get("name", "")).lower() in runners:
                        problems.append(
                            (
                                _path("hosts", (i, "runners", j, "name")),
                                f"runner {spec.get('name')!r} is already managed by stack {other_stack!r} "
                                f"({path.name}) in {scope}",
                            )
                        )
    return problems
