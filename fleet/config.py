"""Stack configuration: every `runner-fleet:*` key, typed, validated once, at the edge.

`load()` turns the stack's config into frozen models and raises `ConfigError` listing every
problem with its key path (`runner-fleet:hosts[1].runners[0].labels[2]: ...`) before any
resource is registered. Components receive what the program builds from these models, never
raw dicts.

Validation runs in two passes over one source of truth:
1. each section, each host and each runner is validated into its model on its own (types,
   whole-value formats, no control characters, defaults, the documented camelCase key names);
2. the rules that relate values to each other run on those models only (`_cross_field_problems`,
   `_sibling_stack_problems`), so no default or alias spelling can slip past them. A host or
   runner that failed pass 1 is reported for that and left out of pass 2 until it is fixed.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import string
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

import yaml
from pulumi import RunError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from components.arch import ARCH_LABEL, ARCHES, GO_ARCH, Arch
from components.layout import GRAFANA_UID_MAX, grafana_name

NAMESPACE = "runner-fleet"
PROJECT_DIR = Path(__file__).resolve().parent.parent
# Where the project's stack files (Pulumi.<stack>.yaml) are compared from.
STACK_FILES_DIR = PROJECT_DIR

# Defaults pinned to published release values; bump version and both checksums together.
# actions/runner v2.334.0 release notes ("SHA-256 Checksums"), also pinned in many public
# Dockerfiles: linux-x64 048024cd…, linux-arm64 f44255bd….
DEFAULT_RUNNER_VERSION = "2.334.0"
DEFAULT_RUNNER_SHA256 = {
    "x64": "048024cd2c848eb6f14d5646d56c13a4def2ae7ee3ad12122bee960c56f3d271",
    "arm64": "f44255bd3e80160eb25f71bc83d06ea025f6908748807a584687b3184759f7e4",
}
DEFAULT_RUNNER_URL = (
    "https://github.com/actions/runner/releases/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz"
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
DOTCOM_URL = "https://github.com"
DOTCOM_API_URL = "https://api.github.com"

SECRET_KEYS = ("githubToken", "sshPrivateKey")
# Plain (non-structured) keys: `protect` is true or false.
SCALAR_KEYS = ("protect",)
OBJECT_KEYS = ("github", "hosts", "prometheus", "runner", "exporter", "grafana")
# Optional secrets: `githubViewToken`, the GitHub-view collector's own read-only credential.
OPTIONAL_SECRET_KEYS = ("githubViewToken",)
KNOWN_KEYS = frozenset(SECRET_KEYS + OBJECT_KEYS + SCALAR_KEYS + OPTIONAL_SECRET_KEYS)
# Stacks whose resources are protected unless `runner-fleet:protect: false` says otherwise: the
# stack name is the environment (runner labels and the policy pack say so too).
PROTECTED_STACKS = ("production",)

# Labels GitHub matches jobs by that a Linux runner must not carry: a job asking for them would
# be sent to this runner and fail there.
_FOREIGN_OS_LABELS = {"windows": "Windows", "macos": "macOS", "arm": "ARM (32-bit)"}

# actions/runner (src/Runner.Listener/Configuration/ServiceControlManager.cs, Linux): a unit name
# longer than 150 characters is truncated (owner/repo to 70) and given a random suffix, so the
# name is no longer predictable: such runner names are refused.
RUNNER_UNIT_MAX = 150

# Accounts a runner user must never be: the runner user is created if missing and deleted
# (userdel --force) on destroy, so naming an existing account would take it over and delete it.
SYSTEM_USERS = frozenset(
    """root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats
    nobody nogroup _apt messagebus sshd syslog uuidd tcpdump tss polkitd avahi dnsmasq ntp chrony
    _chrony systemd-network systemd-resolve systemd-timesync systemd-journal systemd-coredump
    systemd-oom dbus postfix prometheus node-exporter node_exporter grafana alertmanager docker
    lxd ubuntu debian admin ec2-user centos fedora cloud-user pi runner github actions git""".split()  # noqa: SIM905
)

# Directories that are never a target directory or configuration file location: the scripts
# create the directory with `install -d -m 0755` (which resets the mode of an existing one)
# and remove files there.
SYSTEM_DIRS = frozenset(
    """/ /bin /boot /dev /etc /home /lib /lib32 /lib64 /libx32 /media /mnt /opt /proc /root /run
    /sbin /srv /sys /tmp /usr /usr/bin /usr/lib /usr/local /usr/local/bin /usr/sbin /usr/share /var
    /var/lib /var/log /var/tmp /var/cache /var/spool /var/run /etc/prometheus /etc/systemd
    /etc/systemd/system /etc/ssh /etc/sudoers.d /etc/default /var/lib/prometheus
    /opt/runner-fleet /var/lib/runner-fleet /etc/runner-fleet""".split()  # noqa: SIM905
)
# Trees that are virtual, volatile or world-writable: nothing of Prometheus's belongs there.
VOLATILE_TREES = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/run")  # noqa: S108 - refused paths

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_LOGIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,38}")
_REPO_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_INET_ATON_PART = re.compile(r"0x[0-9a-f]*|[0-9]+")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_VERSION_RE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_PATH_RE = re.compile(r"/[A-Za-z0-9._/-]*")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_DURATION_RE = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_STACK_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
_URL_PATH_RE = re.compile(r"[A-Za-z0-9._~/+-]*")
_SECRET_BEGIN_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----")

# Host key types pulumi-command can verify against a modern sshd (REFERENCE §1: for RSA keys it
# offers only ssh-rsa/SHA-1, which OpenSSH >= 8.8 refuses), with the size of their key data.
_ECDSA_CURVES = {"ecdsa-sha2-nistp256": 65, "ecdsa-sha2-nistp384": 97, "ecdsa-sha2-nistp521": 133}
_HOST_KEY_TYPES = ("ssh-ed25519", *_ECDSA_CURVES)
_PIN_HINT = "pin the machine's ed25519 key: ssh-keyscan -t ed25519 ADDRESS | cut -d' ' -f2-"


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


def _text(value: str) -> str:
    """No control, format or separator characters anywhere (a newline would split a line of a
    rendered script, unit file or scrape job)."""
    for char in value:
        if unicodedata.category(char)[0] in "CZ" and char != " ":
            name = unicodedata.name(char, "control character")
            raise ValueError(
                f"contains U+{ord(char):04X} ({name.lower()}); "
                "values may not contain newlines, tabs or other control characters"
            )
    return value


def _full(pattern: re.Pattern[str], value: str) -> bool:
    return pattern.fullmatch(_text(value)) is not None


def _name(value: str) -> str:
    if not _full(_NAME_RE, value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (the runner, systemd and the shell keep these intact)"
        )
    return value


def _label(value: str) -> str:
    if not _full(_LABEL_RE, value):
        raise ValueError(
            f"{value!r} is not a valid runner label: use 1-100 letters, digits, '.', '_' or '-' "
            "(a comma or space would split or mangle it)"
        )
    return value


def _login(value: str) -> str:
    if not _full(_LOGIN_RE, value):
        raise ValueError(f"{value!r} is not a GitHub account or organization name (1-39 letters, digits, '-')")
    return value


def _repository(value: str) -> str:
    owner, _, repo = _text(value).partition("/")
    if not owner or not repo or "/" in repo:
        raise ValueError(f"{value!r} is not a repository in the form owner/name")
    _login(owner)
    if not _REPO_NAME_RE.fullmatch(repo) or repo in (".", ".."):
        raise ValueError(f"{repo!r} is not a repository name (1-100 letters, digits, '.', '_', '-')")
    if repo.lower().endswith(".git"):
        raise ValueError(f"{value!r}: drop the '.git' suffix (GitHub names the repository without it)")
    return value


def _address(value: str, *, loopback: bool = False) -> str:
    """An IP address or DNS name, normalized so one machine has one spelling: DNS names in
    lowercase without the root dot, IPv4-mapped IPv6 as IPv4, IPv6 compressed. A loopback
    address names a different machine for the deployer, the hosts and Prometheus, so it is no
    machine's SSH address (`loopback` allows it, for URLs)."""
    _text(value)
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        ip = None
    if ip is not None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255":
            raise ValueError(f"{value!r} is not the address of one machine")
        if ip.is_loopback and not loopback:
            raise ValueError(
                f"{value!r} is a loopback address: it names a different machine for the deployer, "
                "the hosts and Prometheus; use the machine's network address"
            )
        if "%" in value:
            raise ValueError(f"{value!r}: an IPv6 zone index is not supported; use a routable address")
        return str(ip)
    name = value.lower().removesuffix(".")
    if len(name) > 253 or not _HOSTNAME_RE.fullmatch(name):
        raise ValueError(f"{value!r} is not an IP address or DNS host name")
    if _INET_ATON_PART.fullmatch(name.rsplit(".", 1)[-1]):
        raise ValueError(
            f"{value!r} is not an IP address or DNS host name (a name ending in a number is read "
            "as an IPv4 address in octal, hex or short form by some tools and not by others)"
        )
    if (name == "localhost" or name.endswith(".localhost")) and not loopback:
        raise ValueError(f"{value!r} names each machine itself; use the machine's network address")
    return name


def _ssh_strings(blob: bytes) -> list[bytes]:
    parts, offset = [], 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise ValueError("truncated")
        size = int.from_bytes(blob[offset : offset + 4], "big")
        offset += 4
        if offset + size > len(blob):
            raise ValueError("truncated")
        parts.append(blob[offset : offset + size])
        offset += size
    return parts


def _host_key(value: str) -> str:
    parts = _text(value).split(" ", 2)
    if parts and parts[0] in ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"):
        raise ValueError(
            "RSA host keys cannot be used: pulumi-command verifies them only with ssh-rsa (SHA-1), "
            f"which OpenSSH 8.8 and later refuse; {_PIN_HINT}"
        )
    if len(parts) not in (2, 3) or parts[0] not in _HOST_KEY_TYPES:
        raise ValueError(
            f"expected a public host key line 'TYPE BASE64' with TYPE one of {', '.join(_HOST_KEY_TYPES)}; {_PIN_HINT}"
        )
    kind, data = parts[0], parts[1]
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the host key's base64 part does not decode") from None
    try:
        fields = _ssh_strings(blob)
    except ValueError:
        raise ValueError("the host key's data is truncated") from None
    if not fields or fields[0] != kind.encode():
        raise ValueError(f"the host key's data is not a {kind} key")
    if kind == "ssh-ed25519":
        well_formed = len(fields) == 2 and len(fields[1]) == 32
    else:
        curve = kind.removeprefix("ecdsa-sha2-").encode()
        point = fields[2] if len(fields) == 3 else b""
        well_formed = len(fields) == 3 and fields[1] == curve and len(point) == _ECDSA_CURVES[kind]
    if not well_formed:
        raise ValueError(f"the host key's data is not a well-formed {kind} key")
    return f"{kind} {data}"


def _sha256(value: str) -> str:
    if not _full(_SHA256_RE, value.lower()):
        raise ValueError(f"{value!r} is not a SHA-256 checksum (64 hexadecimal characters)")
    return value.lower()


def _version(value: str) -> str:
    if not _full(_VERSION_RE, value):
        raise ValueError(f"{value!r} is not a release version like 1.2.3")
    return value


def _abs_path(value: str) -> str:
    if not _full(_PATH_RE, value):
        raise ValueError(f"{value!r} is not an absolute path of letters, digits, '.', '_', '-', '/'")
    trimmed = value.rstrip("/") or "/"
    parts = trimmed.split("/")[1:]
    if any(part in ("", ".", "..") for part in parts) and trimmed != "/":
        raise ValueError(f"{value!r} must be a plain absolute path (no '//', '.' or '..' parts)")
    return trimmed


def _in_tree(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def _targets_dir(value: str) -> str:
    path = _abs_path(value)
    if path in SYSTEM_DIRS or path.count("/") < 2:
        raise ValueError(
            f"{path!r} is a system directory; give the stack's target files a directory of their own "
            "such as /etc/prometheus/runner-fleet (the deploy creates it with mode 0755)"
        )
    if any(_in_tree(path, tree) for tree in VOLATILE_TREES):
        raise ValueError(f"{path!r} is in a virtual, volatile or world-writable tree; use a directory under /etc")
    return path


def _config_path(value: str) -> str:
    path = _abs_path(value)
    if not path.endswith((".yml", ".yaml")) or path in SYSTEM_DIRS:
        raise ValueError(f"{path!r} is not a Prometheus configuration file (*.yml or *.yaml)")
    if any(_in_tree(path, tree) for tree in VOLATILE_TREES):
        raise ValueError(f"{path!r} is in a virtual, volatile or world-writable tree")
    return path


def _promtool(value: str) -> str:
    """`promtool` from root's PATH, or an absolute path outside world-writable trees (root runs it)."""
    if value == "promtool":
        return value
    path = _abs_path(value)
    if path in SYSTEM_DIRS or any(_in_tree(path, tree) for tree in VOLATILE_TREES):
        raise ValueError(f"{path!r} is a directory or in a volatile or world-writable tree; root runs promtool")
    return path


def _grafana_dir(value: str) -> str:
    """A directory of Grafana's on the monitoring host; the deploy adds files of its own there."""
    path = _abs_path(value)
    if path in SYSTEM_DIRS or path.count("/") < 2:
        raise ValueError(f"{path!r} is a system directory, not one of Grafana's (such as /etc/grafana/provisioning)")
    if any(_in_tree(path, tree) for tree in VOLATILE_TREES):
        raise ValueError(f"{path!r} is in a virtual, volatile or world-writable tree; use a directory of Grafana's")
    return path


def _unix_user(value: str) -> str:
    if not _full(_USER_RE, value):
        raise ValueError(
            f"{value!r} is not a valid Linux user name "
            "(lowercase letters, digits, '_', '-', starting with a letter or '_', at most 32)"
        )
    return value


def _ssh_user(value: str) -> str:
    return _unix_user(value)


def _runner_user(value: str) -> str:
    _unix_user(value)
    if value in SYSTEM_USERS or value.startswith("systemd-"):
        raise ValueError(
            f"{value!r} is a system or login account: the runner user is created if missing and "
            "deleted on destroy; choose a dedicated name such as github-runner-<stack>"
        )
    return value


def _duration(value: str) -> str:
    match = _DURATION_RE.fullmatch(_text(value))
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{value!r} is not a positive Prometheus duration like 15s")
    return value


def _url(value: str) -> str:
    """An http(s) URL of a host and a plain path, normalized (lowercase scheme and host, no
    default port, no trailing slash). Credentials, queries and fragments are refused: they would
    be stored in plain text in the state and printed in logs."""
    _text(value)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} is not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if "@" in parts.netloc:
        raise ValueError(f"{value!r} carries credentials; the GitHub credential is githubToken (a secret)")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError(f"{value!r} may not have a query or fragment")
    if not _URL_PATH_RE.fullmatch(parts.path) or "//" in parts.path:
        raise ValueError(f"{value!r}: the path may use only letters, digits and '.', '_', '~', '/', '+', '-'")
    host = _address((parts.hostname or "").strip("[]"), loopback=True)
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port == 0:
        raise ValueError(f"{value!r}: port 0 is not a port")
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host += f":{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def _server_url(value: str) -> str:
    url = _url(value)
    if urlsplit(url).path:
        raise ValueError(
            f"{value!r}: serverUrl is the server's root URL (no path); the scope goes in github.repository"
        )
    if url == DOTCOM_API_URL:
        raise ValueError(f"{value!r} is the API URL; serverUrl is {DOTCOM_URL} (or your GHES server)")
    return url


def _url_template(value: str) -> str:
    """Parsed the way it is formatted (str.format with version, arch and goarch), then rendered
    for every architecture and checked as a URL."""
    _text(value)
    try:
        fields = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid template ({exc}); write literal braces as {{{{ }}}}") from None
    seen: set[str] = set()
    for _literal, field, spec, conversion in fields:
        if field is None:
            continue
        if field not in ("version", "arch", "goarch") or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"placeholder {shown} is not allowed; use exactly {{version}}, {{arch}} or {{goarch}}")
        seen.add(field)
    if "version" not in seen:
        raise ValueError("the URL template must contain {version}: the pinned version picks the file")
    for arch in ARCHES:
        rendered = value.format(version="0.0.0", arch=arch, goarch=GO_ARCH[arch])
        try:
            _url(rendered)
        except ValueError as exc:
            raise ValueError(f"renders to an invalid URL for {arch}: {exc}") from None
    return value


def _exporter_port(value: int) -> int:
    if value < 1024:
        raise ValueError(
            f"port {value} is below 1024: the exporter runs unprivileged (no capabilities) and "
            "cannot listen there, and those ports belong to system services"
        )
    return value


Name = Annotated[str, AfterValidator(_name)]
Label = Annotated[str, AfterValidator(_label)]
Login = Annotated[str, AfterValidator(_login)]
Address = Annotated[str, AfterValidator(_address)]
HostKey = Annotated[str, AfterValidator(_host_key)]
Sha256 = Annotated[str, AfterValidator(_sha256)]
Version = Annotated[str, AfterValidator(_version)]
TargetsDir = Annotated[str, AfterValidator(_targets_dir)]
ConfigPath = Annotated[str, AfterValidator(_config_path)]
Promtool = Annotated[str, AfterValidator(_promtool)]
GrafanaDir = Annotated[str, AfterValidator(_grafana_dir)]
SshUser = Annotated[str, AfterValidator(_ssh_user)]
RunnerUser = Annotated[str, AfterValidator(_runner_user)]
Duration = Annotated[str, AfterValidator(_duration)]
HttpUrl = Annotated[str, AfterValidator(_url)]
ServerUrl = Annotated[str, AfterValidator(_server_url)]
UrlTemplate = Annotated[str, AfterValidator(_url_template)]
Repository = Annotated[str, AfterValidator(_repository)]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
ExporterPort = Annotated[int, Field(ge=1, le=65535, strict=True), AfterValidator(_exporter_port)]
Role = Literal["primary", "secondary"]


class _Model(BaseModel):
    # Config is read by the documented camelCase names only (load() validates with
    # by_name=False); Python code may construct models by field name.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )

    @classmethod
    def from_config(cls, value: Any) -> Self:
        """Validate a raw config value (a mapping with the documented camelCase keys)."""
        return cls.model_validate(value, by_alias=True, by_name=False)


# --- models ---------------------------------------------------------------------------


class ArchChecksums(_Model):
    """SHA-256 of the release tarball per architecture."""

    x64: Sha256 | None = None
    arm64: Sha256 | None = None

    def for_arch(self, arch: str) -> str | None:
        value: str | None = getattr(self, arch)
        return value


class Artifact(_Model):
    """A pinned, checksum-verified release tarball (runner or node exporter)."""

    default_sha256: ClassVar[dict[str, str]] = {}

    version: Version
    sha256: ArchChecksums
    url_template: UrlTemplate

    @model_validator(mode="before")
    @classmethod
    def _default_checksums(cls, data: Any) -> Any:
        """The published checksums apply to the default version only: a new version needs its own."""
        default = cls.model_fields["version"].default
        if not isinstance(data, dict) or "sha256" in data or not isinstance(default, str):
            return data
        version = data.get("version", default)
        if version == default or not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
            return {**data, "sha256": dict(cls.default_sha256)}
        return data

    def url(self, arch: str) -> str:
        return self.url_template.format(version=self.version, arch=arch, goarch=GO_ARCH[arch])

    def checksum(self, arch: str) -> str:
        value = self.sha256.for_arch(arch)
        if value is None:  # load() rejects configs where a used arch has no checksum
            raise KeyError(arch)
        return value


class RunnerArtifact(Artifact):
    """`runner`: the actions/runner release every runner of the stack runs."""

    default_sha256: ClassVar[dict[str, str]] = DEFAULT_RUNNER_SHA256

    version: Version = DEFAULT_RUNNER_VERSION
    url_template: UrlTemplate = DEFAULT_RUNNER_URL


class ExporterArtifact(Artifact):
    """`exporter`: the node_exporter release of the stack's exporters."""

    default_sha256: ClassVar[dict[str, str]] = DEFAULT_EXPORTER_SHA256

    version: Version = DEFAULT_EXPORTER_VERSION
    url_template: UrlTemplate = DEFAULT_EXPORTER_URL


class RunnerGroupSpec(_Model):
    """An organization runner group that the stack creates (pulumi-github ActionsRunnerGroup)."""

    name: Name
    visibility: Literal["all", "selected", "private"] = "all"


class GitHubSettings(_Model):
    """Where runners register: one repository or one organization, on github.com or GHES."""

    repository: Repository | None = None
    organization: Login | None = None
    server_url: ServerUrl = DOTCOM_URL
    api_url: HttpUrl | None = None
    check_access: StrictBool = True
    allow_insecure_http: StrictBool = False
    runner_groups: tuple[RunnerGroupSpec, ...] = ()

    @property
    def owner(self) -> str:
        return self.organization or (self.repository or "").split("/")[0]

    @property
    def scope(self) -> str:
        """`owner/name` or the organization, as registered."""
        return self.organization or self.repository or ""

    @property
    def is_dotcom(self) -> bool:
        return self.server_url == DOTCOM_URL

    @property
    def registration_url(self) -> str:
        """The `--url` config.sh registers against."""
        return f"{self.server_url}/{self.scope}"

    @property
    def effective_api_url(self) -> str:
        if self.api_url:
            return self.api_url
        if self.is_dotcom:
            return DOTCOM_API_URL
        return f"{self.server_url}/api/v3"

    @property
    def scope_path(self) -> str:
        """REST path prefix of the runner endpoints."""
        if self.organization:
            return f"orgs/{self.organization}"
        return f"repos/{self.repository}"

    def runner_unit(self, runner: str) -> str:
        """The unit name actions/runner's svc.sh gives `runner` (REFERENCE §4)."""
        scope = (self.organization or (self.repository or "").replace("/", "-")) if self.is_dotcom else "_services"
        return re.sub(r"[^0-9A-Za-z._-]", "-", f"actions.runner.{scope}.{runner}") + ".service"


class JumpHost(_Model):
    """An SSH bastion between the deployer and a host (pulumi-command `proxy`)."""

    address: Address
    ssh_port: Port = 22
    ssh_user: SshUser = "root"
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
    ssh_user: SshUser = "root"
    ssh_port: Port = 22
    host_key: HostKey
    jump_host: JumpHost | None = None
    arch: Arch = "x64"
    role: Role
    exporter_port: ExporterPort
    runner_user: RunnerUser | None = None
    min_disk_mb: int = Field(default=2048, ge=0, strict=True)
    # The runner's native dependencies (libicu, libssl, ...): installed by the preflight when true,
    # otherwise only checked (a missing one fails the preflight, naming this key).
    install_dependencies: StrictBool = False
    # Overrides the stack's `protect` for everything on this host (false: the step before retiring it).
    protect: StrictBool | None = None
    runners: tuple[RunnerSpec, ...] = Field(min_length=1)

    @property
    def url_address(self) -> str:
        """The address as it goes into a URL or a `host:port` target (IPv6 in brackets)."""
        return f"[{self.address}]" if ":" in self.address else self.address


class PrometheusSpec(_Model):
    """The monitoring host whose Prometheus scrapes this stack's exporters."""

    address: Address
    port: Port = 9090
    ssh_user: SshUser = "root"
    ssh_port: Port = 22
    host_key: HostKey
    jump_host: JumpHost | None = None
    manage_config: StrictBool = True
    config_path: ConfigPath = "/etc/prometheus/prometheus.yml"
    targets_dir: TargetsDir = "/etc/prometheus/runner-fleet"
    service: Name = "prometheus"
    job_name: Name = "github-runner-health"
    scrape_interval: Duration = "15s"
    promtool: Promtool = "promtool"
    # The GitHub-view collector's port on the monitoring host's 127.0.0.1 (with githubViewToken).
    github_view_port: Port = 9469


class GrafanaSpec(_Model):
    """Grafana on the monitoring host (optional): the program provisions this stack's dashboard
    through Grafana's file provisioning. Grafana and its Prometheus data source are the user's."""

    provisioning_dir: GrafanaDir
    dashboards_dir: GrafanaDir = "/var/lib/grafana/dashboards"
    service: Name = "grafana-server"


# Every model a config section is read into, by key path (README documents each field).
SECTION_MODELS: dict[str, type[_Model]] = {
    "github": GitHubSettings,
    "hosts[]": HostSpec,
    "prometheus": PrometheusSpec,
    "runner": RunnerArtifact,
    "exporter": ExporterArtifact,
    "grafana": GrafanaSpec,
}


@dataclass(frozen=True)
class Secrets:
    """Secret config values, kept as secret Outputs: they only ever reach stdin and connections."""

    github_token: Any  # pulumi.Output[str]
    ssh_private_key: Any  # pulumi.Output[str]
    github_view_token: Any = None  # pulumi.Output[str] | None: the GitHub-view collector's credential


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
    grafana: GrafanaSpec | None = None  # absent: no dashboard is deployed
    protect: bool = False  # runner-fleet:protect, resolved (default: the stack is in PROTECTED_STACKS)

    def runner_user(self, host: HostSpec) -> str:
        return host.runner_user or default_runner_user(self.stack)

    def host_protected(self, host: HostSpec) -> bool:
        """Whether everything on `host` is protected from deletion and replacement."""
        return self.protect if host.protect is None else host.protect


def default_runner_user(stack: str) -> str:
    """Each stack runs its jobs as its own user, so staging jobs cannot touch production files."""
    return f"github-runner-{stack}"


# --- problems and key paths -------------------------------------------------------------

Problem = tuple[str, str]


def _path(key: str, loc: Iterable[Any] = ()) -> str:
    out = f"{NAMESPACE}:{key}"
    for part in loc:
        text = str(part) if str(part).isprintable() else repr(str(part))  # a key may hold a newline too
        out += f"[{part}]" if isinstance(part, int) else f".{text}"
    return out


def _all_aliases() -> dict[str, str]:
    """Every documented key name, by its spelling without case or '_' (for "did you mean")."""
    names: dict[str, str] = {}
    models: list[type[_Model]] = [*SECTION_MODELS.values(), JumpHost, RunnerSpec, RunnerGroupSpec, ArchChecksums]
    for model in models:
        for field_name, info in model.model_fields.items():
            alias = info.alias or field_name
            names[alias.lower().replace("_", "")] = alias
    return names


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _errors(exc: ValidationError) -> list[Any]:
    """The errors that say something: pydantic adds "too short after validation" to a list
    whose items failed, which is only a consequence."""
    errors = exc.errors()
    return [
        e
        for e in errors
        if not (
            e["type"] == "too_short"
            and any(len(o["loc"]) > len(e["loc"]) and o["loc"][: len(e["loc"])] == e["loc"] for o in errors)
        )
    ]


def _pin_command(path: str, holder: Any) -> str:
    """How to pin the host key of the machine described by `holder` (the mapping that lacks it)."""
    address = holder.get("address") if isinstance(holder, dict) else None
    try:
        shown = _address(address) if isinstance(address, str) else "ADDRESS"
    except ValueError:
        shown = "ADDRESS"
    return (
        f"check the fingerprint out of band, then pulumi config set --path '{path}' "
        f"\"$(ssh-keyscan -t ed25519 {shown} | cut -d' ' -f2-)\" (README: First deploy)"
    )


def _pydantic_problems(key: str, exc: ValidationError, index: Iterable[Any] = ()) -> list[Problem]:
    problems = []
    aliases = _all_aliases()
    for err in _errors(exc):
        loc = (*index, *err["loc"])
        kind = err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "missing":
            msg = "is required"
            if loc and loc[-1] == "hostKey":
                msg = f"is required: {_pin_command(_path(key, loc), err.get('input'))}"
        elif kind == "extra_forbidden":
            msg = "is not a known key (typo?)"
            known = aliases.get(str(loc[-1]).lower().replace("_", "")) if loc else None
            if known and known != loc[-1]:
                msg += f"; the key is spelled {known!r}"
        elif kind == "literal_error":
            msg = f"{msg}, got {_short(err.get('input'))}"
        elif kind in _TYPE_NAMES:
            msg = f"must be {_TYPE_NAMES[kind]}, got {_short(err.get('input'))}"
        elif kind == "too_short":
            msg = "must list at least one"
        problems.append((_path(key, loc), msg))
    return problems


def _validate(model: type[_Model], value: Any) -> _Model:
    """Config reaches models through the documented camelCase names only."""
    return model.from_config(value)


# --- loading --------------------------------------------------------------------------


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


def _decode(key: str, value: Any, problems: list[Problem]) -> Any:
    if key in SCALAR_KEYS and value is not None:
        # `pulumi config set runner-fleet:protect false` and a YAML `false` both arrive as "false".
        decoded = {"true": True, "false": False}.get(value) if isinstance(value, str) else value
        if not isinstance(decoded, bool):
            problems.append((_path(key), f"must be true or false, got {_short(value)}"))
            return None
        return decoded
    if key in OBJECT_KEYS and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            problems.append((_path(key), "must be a structured (YAML mapping or list) value"))
            return None
    return value


@dataclass(frozen=True)
class _Host:
    """A host that passed validation, with its index in `hosts` and its runners' indices."""

    index: int
    spec: HostSpec
    runner_index: tuple[int, ...]

    def runners(self) -> Iterator[tuple[int, RunnerSpec]]:
        return zip(self.runner_index, self.spec.runners, strict=True)


@dataclass
class _Sections:
    github: GitHubSettings | None
    hosts: list[_Host]
    prometheus: PrometheusSpec | None
    runner: Artifact | None
    exporter: Artifact | None
    grafana: GrafanaSpec | None = None


def _section(key: str, model: type[_Model], value: Any, problems: list[Problem], *, optional: bool = False) -> Any:
    if value is None:
        if not optional:
            problems.append((_path(key), "is required"))
            return None
        value = {}
    try:
        return _validate(model, value)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(key, exc))
        return None


def _hosts(value: Any, problems: list[Problem]) -> list[_Host]:
    """Each host on its own; a host whose only problems are in some runners is kept (without
    them) for the cross-field rules."""
    if value is None:
        problems.append((_path("hosts"), "is required"))
        return []
    if not isinstance(value, list):
        problems.append((_path("hosts"), f"must be a list of hosts, got {_short(value)}"))
        return []
    if not value:
        problems.append((_path("hosts"), "must list at least one host"))
        return []
    valid: list[_Host] = []
    for i, raw in enumerate(value):
        try:
            spec = _validate(HostSpec, raw)
        except ValidationError as exc:
            problems.extend(_pydantic_problems("hosts", exc, (i,)))
            salvaged = _without_bad_runners(raw, exc)
            if salvaged is not None:
                valid.append(_Host(i, *salvaged))
            continue
        host = _host_spec(spec)
        valid.append(_Host(i, host, tuple(range(len(host.runners)))))
    return valid


def _without_bad_runners(raw: Any, exc: ValidationError) -> tuple[HostSpec, tuple[int, ...]] | None:
    """The host without its invalid runners, if those were its only problems."""
    errors = _errors(exc)
    bad_runners = {e["loc"][1] for e in errors if len(e["loc"]) >= 2 and e["loc"][0] == "runners"}
    runners = raw.get("runners") if isinstance(raw, dict) else None
    if not isinstance(runners, list) or any(len(e["loc"]) < 2 or e["loc"][0] != "runners" for e in errors):
        return None
    kept = [j for j in range(len(runners)) if j not in bad_runners]
    try:
        spec = _validate(HostSpec, {**raw, "runners": [runners[j] for j in kept]})
    except ValidationError:
        return None
    return _host_spec(spec), tuple(kept)


def _host_spec(model: _Model) -> HostSpec:
    if not isinstance(model, HostSpec):  # pragma: no cover - _validate(HostSpec, ...) returns one
        raise TypeError(model)
    return model


def load(stack: str | None = None) -> FleetConfig:
    """Validate the stack config; raise ConfigError listing every problem."""
    import pulumi

    stack = stack or pulumi.get_stack()
    problems: list[Problem] = []
    raw = raw_config()

    if not _STACK_RE.fullmatch(stack):
        problems.append(
            (
                "stack",
                f"stack name {stack!r} must be lowercase letters, digits and '-', at most 31 "
                "(it names paths and units)",
            )
        )
    for key in sorted(set(raw) - KNOWN_KEYS):
        problems.append((_path(key), f"is not a known key (typo?); known keys: {', '.join(sorted(KNOWN_KEYS))}"))

    values = {key: _decode(key, raw.get(key), problems) for key in KNOWN_KEYS}
    problems.extend(_secret_problems(values))

    hosts = _hosts(values["hosts"], problems)
    sections = _Sections(
        github=_section("github", GitHubSettings, values["github"], problems),
        hosts=hosts,
        prometheus=_section("prometheus", PrometheusSpec, values["prometheus"], problems),
        runner=_section("runner", RunnerArtifact, values["runner"], problems, optional=True),
        exporter=_section("exporter", ExporterArtifact, values["exporter"], problems, optional=True),
        grafana=None if values["grafana"] is None else _section("grafana", GrafanaSpec, values["grafana"], problems),
    )
    problems.extend(_cross_field_problems(sections, stack))
    problems.extend(_sibling_stack_problems(sections, stack))

    if problems:
        raise ConfigError(_dedupe(problems))
    if not (sections.github and sections.prometheus and sections.runner and sections.exporter):
        raise RuntimeError("a section failed validation without a problem")  # pragma: no cover
    settings = pulumi.Config(NAMESPACE)
    return FleetConfig(
        stack=stack,
        github=sections.github,
        hosts=tuple(h.spec for h in sections.hosts),
        prometheus=sections.prometheus,
        runner=sections.runner,
        exporter=sections.exporter,
        grafana=sections.grafana,
        secrets=Secrets(
            github_token=settings.require_secret("githubToken"),
            ssh_private_key=settings.require_secret("sshPrivateKey"),
            github_view_token=settings.require_secret("githubViewToken") if values["githubViewToken"] else None,
        ),
        protect=stack in PROTECTED_STACKS if values["protect"] is None else values["protect"],
    )


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


# --- secrets ----------------------------------------------------------------------------


def _secret_problems(values: dict[str, Any]) -> list[Problem]:
    """Checked without ever echoing the value."""
    problems: list[Problem] = []
    for key in SECRET_KEYS:
        value = values[key]
        if value is None or value == "":
            problems.append((_path(key), f"is required: pulumi config set --secret {NAMESPACE}:{key} ..."))
        elif not _is_secret(f"{NAMESPACE}:{key}"):
            problems.append((_path(key), f"must be a secret: pulumi config set --secret {NAMESPACE}:{key} ..."))
        elif not isinstance(value, str):
            problems.append((_path(key), "must be a string"))
    token = values["githubToken"]
    if isinstance(token, str) and token and (any(c.isspace() for c in token) or not token.isprintable()):
        problems.append((_path("githubToken"), "must be a single token without whitespace or control characters"))
    elif isinstance(token, str) and token and len(token) < 20:
        problems.append((_path("githubToken"), f"is {len(token)} characters: too short to be a GitHub token"))
    key_text = values["sshPrivateKey"]
    if isinstance(key_text, str) and key_text:
        problems.extend((_path("sshPrivateKey"), m) for m in _private_key_problems(key_text))
    problems.extend(_view_token_problems(values))
    return problems


def _view_token_problems(values: dict[str, Any]) -> list[Problem]:
    """githubViewToken: optional; when set, a secret, one token, and not the stack's own."""
    view = values.get("githubViewToken")
    if view is None or view == "":
        return []
    path = _path("githubViewToken")
    if not _is_secret(f"{NAMESPACE}:githubViewToken"):
        return [(path, f"must be a secret: pulumi config set --secret {NAMESPACE}:githubViewToken ...")]
    if not isinstance(view, str):
        return [(path, "must be a string")]
    if any(c.isspace() for c in view) or not view.isprintable():
        return [(path, "must be a single token without whitespace or control characters")]
    if len(view) < 20:
        return [(path, f"is {len(view)} characters: too short to be a GitHub token")]
    if view == values.get("githubToken"):
        return [
            (
                path,
                "is the same credential as githubToken: the view credential stays on the monitoring host "
                "for good, so give it a separate read-only token (Administration: read on the repository, "
                "or Self-hosted runners: read on the organization)",
            )
        ]
    return []


def _private_key_problems(text: str) -> list[str]:
    if text.lstrip().startswith(("ssh-", "ecdsa-")):
        return ["is a public key; set the private key: pulumi config set --secret runner-fleet:sshPrivateKey < KEYFILE"]
    begin = _SECRET_BEGIN_RE.search(text)
    if not begin or f"-----END {begin.group(1)}PRIVATE KEY-----" not in text:
        return ["is not a PEM/OpenSSH private key (-----BEGIN ... PRIVATE KEY----- ... -----END ...)"]
    if "ENCRYPTED" in text:
        return ["is protected by a passphrase, which the deploy cannot type; use a key without one"]
    if begin.group(1) == "OPENSSH ":
        body = text[begin.end() : text.find("-----END")]
        try:
            blob = base64.b64decode("".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            return []  # not ours to judge further: the SSH connection reports a broken key
        magic = b"openssh-key-v1\0"
        if blob.startswith(magic):
            try:
                cipher = _ssh_strings_prefix(blob[len(magic) :])
            except ValueError:
                return ["is an OpenSSH private key whose body is truncated"]
            if cipher != b"none":
                return ["is protected by a passphrase, which the deploy cannot type; use a key without one"]
    return []


def _ssh_strings_prefix(blob: bytes) -> bytes:
    if len(blob) < 4:
        raise ValueError("truncated")
    size = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + size:
        raise ValueError("truncated")
    return blob[4 : 4 + size]


# --- cross-field rules, on validated models ------------------------------------------------


def _same_machine(address_a: str, key_a: str | None, address_b: str, key_b: str | None) -> bool:
    """One machine: the same (normalized) address, or the same pinned host key."""
    return address_a == address_b or (key_a is not None and key_a == key_b)


def _cross_field_problems(s: _Sections, stack: str) -> list[Problem]:
    problems: list[Problem] = []
    add = problems.append
    github, prom = s.github, s.prometheus

    if github is not None:
        if bool(github.repository) == bool(github.organization):
            add((_path("github"), "set exactly one of repository (owner/name) or organization"))
        if github.repository and github.runner_groups:
            add((_path("github", ("runnerGroups",)), "runner groups exist only for organization scope"))
        seen_groups: dict[str, int] = {}
        for g, group in enumerate(github.runner_groups):
            low = group.name.lower()
            if low == "default":
                add(
                    (_path("github", ("runnerGroups", g, "name")), "'Default' is GitHub's own group; it exists already")
                )
            elif low in seen_groups:
                add(
                    (
                        _path("github", ("runnerGroups", g, "name")),
                        f"duplicate runner group {group.name!r} (also runnerGroups[{seen_groups[low]}]; "
                        "GitHub compares group names case-insensitively)",
                    )
                )
            seen_groups.setdefault(low, g)
        if github.api_url is not None:
            server_host = urlsplit(github.server_url).netloc
            api_host = urlsplit(github.api_url).netloc
            if api_host not in (server_host, f"api.{server_host}"):
                add(
                    (
                        _path("github", ("apiUrl",)),
                        f"{github.api_url!r} is not on {server_host} (or api.{server_host}): the credential "
                        "would be sent to another server than the runners register with",
                    )
                )
        if not github.allow_insecure_http:
            for field, value in (("serverUrl", github.server_url), ("apiUrl", github.api_url)):
                if value and _is_insecure(value):
                    add((_path("github", (field,)), _insecure(value)))

    for key, artifact in (("runner", s.runner), ("exporter", s.exporter)):
        if artifact is None:
            continue
        rendered = artifact.url(ARCHES[0])
        if github is not None and not github.allow_insecure_http and _is_insecure(rendered):
            add((_path(key, ("urlTemplate",)), _insecure(rendered)))
        for arch in sorted({h.spec.arch for h in s.hosts}):
            if artifact.sha256.for_arch(arch) is None:
                users = ", ".join(repr(h.spec.name) for h in s.hosts if h.spec.arch == arch)
                add((_path(key, ("sha256", arch)), f"is required: host(s) {users} are {arch}"))

    if s.grafana is not None and len(grafana_name(stack)) > GRAFANA_UID_MAX:
        add(
            (
                _path("grafana"),
                f"the stack's dashboard uid {grafana_name(stack)} is longer than the {GRAFANA_UID_MAX} "
                "characters Grafana accepts: use a stack name of at most "
                f"{GRAFANA_UID_MAX - len(grafana_name(''))} characters to deploy the dashboard",
            )
        )
    if prom is not None:
        if prom.port == prom.ssh_port:
            add((_path("prometheus", ("port",)), f"port {prom.port} is also prometheus.sshPort"))
        config_dir = prom.config_path.rsplit("/", 1)[0] or "/"
        if prom.targets_dir == config_dir or _in_tree(prom.config_path, prom.targets_dir):
            add(
                (
                    _path("prometheus", ("targetsDir",)),
                    f"{prom.targets_dir!r} holds (or is the directory of) configPath {prom.config_path!r}; "
                    "the target files need a directory of their own",
                )
            )
        if prom.jump_host is not None and _same_machine(
            prom.jump_host.address, prom.jump_host.host_key, prom.address, prom.host_key
        ):
            add((_path("prometheus", ("jumpHost",)), "is the monitoring host itself"))

    default_user = default_runner_user(stack)
    names: dict[str, str] = {}
    addresses: dict[str, str] = {}
    host_keys: dict[str, str] = {}
    runner_names: dict[str, str] = {}
    for h in s.hosts:
        host, i = h.spec, h.index

        def at(*loc: Any, i: int = i) -> str:
            return _path("hosts", (i, *loc))

        if host.name.lower() in names:
            add(
                (
                    at("name"),
                    f"duplicate host name {host.name!r} (also {names[host.name.lower()]}); "
                    "host names must differ in more than case",
                )
            )
        names.setdefault(host.name.lower(), at("name"))
        if host.address in addresses:
            add(
                (
                    at("address"),
                    f"address {host.address!r} is already {addresses[host.address]}: list each machine once "
                    "and give it several runners",
                )
            )
        addresses.setdefault(host.address, at("address"))
        if host.host_key in host_keys:
            add(
                (
                    at("hostKey"),
                    f"the same host key as {host_keys[host.host_key]}: one machine listed twice under two "
                    "addresses (or cloned machines sharing a key; give each its own key)",
                )
            )
        host_keys.setdefault(host.host_key, at("hostKey"))

        if ":" in host.address:
            add(
                (
                    at("address"),
                    f"{host.address!r}: an IPv6 address cannot be a scrape target here yet (the target file "
                    "writes address:port); use a DNS name for the machine",
                )
            )
        if host.exporter_port == host.ssh_port:
            add((at("exporterPort"), f"port {host.exporter_port} is this host's SSH port"))
        if prom is not None and _same_machine(host.address, host.host_key, prom.address, prom.host_key):
            for port, what in ((prom.port, "Prometheus's port"), (prom.ssh_port, "prometheus.sshPort")):
                if host.exporter_port == port:
                    add((at("exporterPort"), f"port {port} is {what} on the same machine ({host.address})"))
        jump = host.jump_host
        if jump is not None and _same_machine(jump.address, jump.host_key, host.address, host.host_key):
            add((at("jumpHost"), "is the host itself"))

        user = host.runner_user or default_user
        user_key = "runnerUser"
        if host.runner_user is None and not _USER_RE.fullmatch(default_user):
            add(
                (
                    at(user_key),
                    "is required: the stack name gives no valid user name (github-runner-<stack> is too long)",
                )
            )
        logins = [(host.ssh_user, "this host's sshUser")]
        if jump is not None:
            logins.append((jump.ssh_user, "its jumpHost.sshUser"))
        if prom is not None and _same_machine(host.address, host.host_key, prom.address, prom.host_key):
            logins.append((prom.ssh_user, "prometheus.sshUser on the same machine"))
        for login, what in logins:
            if user == login:
                add(
                    (
                        at(user_key),
                        f"runner user {user!r} is {what}: destroy deletes the runner user, and jobs would "
                        "run with the deploy login's rights; give the runners their own user",
                    )
                )

        for j, spec in h.runners():
            key = spec.name.lower()
            if key in runner_names:
                add(
                    (
                        at("runners", j, "name"),
                        f"duplicate runner name {spec.name!r} (also {runner_names[key]}); GitHub compares "
                        "runner names case-insensitively and they must be unique in the scope",
                    )
                )
            else:
                runner_names[key] = at("runners", j, "name")
            if github is not None:
                if spec.group is not None and github.repository:
                    add((at("runners", j, "group"), "runner groups need organization scope"))
                declared = {g.name.lower(): g.name for g in github.runner_groups}
                if spec.group is not None and declared.get(spec.group.lower(), spec.group) != spec.group:
                    add(
                        (
                            at("runners", j, "group"),
                            f"group {spec.group!r} is declared as {declared[spec.group.lower()]!r} in "
                            "github.runnerGroups: one group, one spelling",
                        )
                    )
                unit = github.runner_unit(spec.name)
                if len(unit) > RUNNER_UNIT_MAX:
                    add(
                        (
                            at("runners", j, "name"),
                            f"the runner's unit name {unit!r} is {len(unit)} characters; the runner truncates "
                            f"names over {RUNNER_UNIT_MAX} and adds a random suffix: shorten the runner name",
                        )
                    )
            seen_labels: dict[str, int] = {}
            other_arch = {"x64": "arm64", "arm64": "x64"}[host.arch]
            for k, label in enumerate(spec.labels):
                low = label.lower()
                if low in seen_labels:
                    add(
                        (
                            at("runners", j, "labels", k),
                            f"duplicate label {label!r} (also labels[{seen_labels[low]}]; GitHub compares "
                            "labels case-insensitively)",
                        )
                    )
                seen_labels.setdefault(low, k)
                if low == ARCH_LABEL[other_arch].lower():
                    add((at("runners", j, "labels", k), f"label {label!r} contradicts the host's arch {host.arch!r}"))
                if low in _FOREIGN_OS_LABELS:
                    add(
                        (
                            at("runners", j, "labels", k),
                            f"label {label!r} would send {_FOREIGN_OS_LABELS[low]} jobs to this Linux runner",
                        )
                    )
    return problems


def _is_insecure(url: str) -> bool:
    """Plain http leaving the machine: over loopback the credential never reaches a network."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _insecure(url: str) -> str:
    return (
        f"{url!r} is plain http: the GitHub credential and downloads would cross the network "
        "unencrypted; use https (a test network without TLS can opt in with github.allowInsecureHttp: true)"
    )


# --- other stacks of the project ------------------------------------------------------------


@dataclass(frozen=True)
class _OtherHost:
    address: str
    host_key: str | None
    ssh_user: str
    exporter_port: int | None
    runner_user: str
    runners: tuple[str, ...]


@dataclass(frozen=True)
class _OtherStack:
    stack: str
    github: GitHubSettings | None
    hosts: tuple[_OtherHost, ...]
    prometheus_address: str | None
    prometheus_key: str | None
    prometheus_ssh_user: str | None
    job_name: str | None
    targets_dir: str | None


def _field(model: type[_Model], name: str, data: dict[str, Any]) -> tuple[Any, str | None]:
    """One field of `model` read from raw `data` with the model's own alias, type and default;
    returns (value, problem)."""
    info = model.model_fields[name]
    alias = info.alias or name
    if alias not in data:
        return (None if info.is_required() else info.get_default(call_default_factory=True)), None
    try:
        annotation: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        return TypeAdapter(annotation).validate_python(data[alias], by_alias=True, by_name=False), None
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, f"{alias}: {first['msg'].removeprefix('Value error, ')}"


def _stack_files() -> list[Path]:
    """The project's stack files (Pulumi.<stack>.yaml, or .yml next to a Pulumi.yml)."""
    return sorted({*STACK_FILES_DIR.glob("Pulumi.*.yaml"), *STACK_FILES_DIR.glob("Pulumi.*.yml")})


def _stack_of(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")


def _read_other_stack(path: Path) -> tuple[_OtherStack | None, list[str]]:
    """What this stack is compared with, from another stack file; problems name that file."""
    stack = _stack_of(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        return None, [f"cannot be read ({exc.strerror})"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return None, [f"is not valid YAML{where}"]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, ["must be a YAML mapping with a 'config' key"]
    config = data.get("config") or {}
    if not isinstance(config, dict):
        return None, ["'config' must be a mapping of keys to values"]
    problems: list[str] = []

    def section(key: str) -> Any:
        value = config.get(f"{NAMESPACE}:{key}")
        if isinstance(value, str) and key in OBJECT_KEYS:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                problems.append(f"{_path(key)}: must be a structured value")
                return None
        return value

    github: GitHubSettings | None = None
    raw_github = section("github")
    if raw_github is not None:
        try:
            validated = _validate(GitHubSettings, raw_github)
            github = validated if isinstance(validated, GitHubSettings) else None
        except ValidationError as exc:
            problems.extend(f"{p}: {m}" for p, m in _pydantic_problems("github", exc))

    hosts: list[_OtherHost] = []
    raw_hosts = section("hosts")
    if raw_hosts is not None and not isinstance(raw_hosts, list):
        problems.append(f"{_path('hosts')}: must be a list of hosts")
        raw_hosts = []
    for i, raw in enumerate(raw_hosts or []):
        where = _path("hosts", (i,))
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        fields: dict[str, Any] = {}
        for name in ("address", "host_key", "ssh_user", "exporter_port", "runner_user", "runners"):
            if name == "host_key" and not isinstance(raw.get("hostKey"), str):
                fields[name] = None  # not pinned yet, or kept as a secret: compared by address only
                continue
            value, problem = _field(HostSpec, name, raw)
            if problem:
                problems.append(f"{where}.{problem}")
            fields[name] = value
        if fields["address"] is None:
            if "address" in raw:
                continue
            problems.append(f"{where}.address: is required")
            continue
        hosts.append(
            _OtherHost(
                address=fields["address"],
                host_key=fields["host_key"],
                ssh_user=fields["ssh_user"] or "root",
                exporter_port=fields["exporter_port"],
                runner_user=fields["runner_user"] or default_runner_user(stack),
                runners=tuple(r.name for r in fields["runners"] or ()),
            )
        )

    prom_address = prom_key = prom_user = job_name = targets_dir = None
    raw_prom = section("prometheus")
    if isinstance(raw_prom, dict):
        values: dict[str, Any] = {}
        for name in ("address", "host_key", "ssh_user", "job_name", "targets_dir"):
            if name == "host_key" and not isinstance(raw_prom.get("hostKey"), str):
                values[name] = None
                continue
            values[name], problem = _field(PrometheusSpec, name, raw_prom)
            if problem:
                problems.append(f"{_path('prometheus')}.{problem}")
        prom_address, prom_key, prom_user = values["address"], values["host_key"], values["ssh_user"]
        job_name, targets_dir = values["job_name"], values["targets_dir"]
    elif raw_prom is not None:
        problems.append(f"{_path('prometheus')}: must be a mapping")
    other = _OtherStack(stack, github, tuple(hosts), prom_address, prom_key, prom_user, job_name, targets_dir)
    return other, problems


def _sibling_stack_problems(s: _Sections, stack: str) -> list[Problem]:
    """Nothing may be managed by two stacks of the project: no exporter port, runner user,
    runner name or runner unit on one machine, and one scrape job reading one directory."""
    problems: list[Problem] = []
    add = problems.append
    default_user = default_runner_user(stack)
    for path in _stack_files():
        other_stack = _stack_of(path)
        if other_stack == stack:
            continue
        other, file_problems = _read_other_stack(path)
        for message in file_problems:
            add(
                (
                    path.name,
                    f"{message} (stack {other_stack!r}'s file; this stack is checked against it so that "
                    "no machine, port, user or runner is managed by two stacks)",
                )
            )
        if other is None:
            continue
        owner = f"stack {other_stack!r} ({path.name})"
        same_scope = (
            s.github is not None
            and other.github is not None
            and s.github.server_url == other.github.server_url
            and s.github.scope.lower() == other.github.scope.lower()
        )
        other_names = {name.lower() for oh in other.hosts for name in oh.runners}
        for h in s.hosts:
            host, i = h.spec, h.index
            user = host.runner_user or default_user
            for oh in other.hosts:
                if not _same_machine(host.address, host.host_key, oh.address, oh.host_key):
                    continue
                if oh.exporter_port == host.exporter_port:
                    add(
                        (
                            _path("hosts", (i, "exporterPort")),
                            f"port {host.exporter_port} on {host.address} is already used by {owner}",
                        )
                    )
                if oh.runner_user == user:
                    add(
                        (
                            _path("hosts", (i, "runnerUser")),
                            f"runner user {user!r} on {host.address} is also the runner user of {owner}: "
                            "destroying either stack would delete the other's user",
                        )
                    )
                if oh.ssh_user == user:
                    add(
                        (
                            _path("hosts", (i, "runnerUser")),
                            f"runner user {user!r} on {host.address} is the sshUser of {owner}: destroy would "
                            "delete that login",
                        )
                    )
                if oh.runner_user == host.ssh_user:
                    add(
                        (
                            _path("hosts", (i, "sshUser")),
                            f"sshUser {host.ssh_user!r} on {host.address} is the runner user of {owner}: "
                            "destroying that stack would delete this login",
                        )
                    )
                if s.github is not None and other.github is not None:
                    other_units = {other.github.runner_unit(name) for name in oh.runners}
                    for j, spec in h.runners():
                        if same_scope and spec.name.lower() in other_names:
                            continue  # reported below as the same runner
                        if s.github.runner_unit(spec.name) in other_units:
                            add(
                                (
                                    _path("hosts", (i, "runners", j, "name")),
                                    f"the runner's unit {s.github.runner_unit(spec.name)!r} on {host.address} "
                                    f"is also a unit of {owner}",
                                )
                            )
            if same_scope and s.github is not None:
                for j, spec in h.runners():
                    if spec.name.lower() in other_names:
                        add(
                            (
                                _path("hosts", (i, "runners", j, "name")),
                                f"runner {spec.name!r} is already managed by {owner} in {s.github.scope}",
                            )
                        )
        prom = s.prometheus
        for oh in other.hosts:
            if (
                prom is not None
                and _same_machine(prom.address, prom.host_key, oh.address, oh.host_key)
                and oh.runner_user == prom.ssh_user
            ):
                add(
                    (
                        _path("prometheus", ("sshUser",)),
                        f"sshUser {prom.ssh_user!r} on {prom.address} is the runner user of {owner}: "
                        "destroying that stack would delete this login",
                    )
                )
        if other.prometheus_address is not None and other.prometheus_ssh_user is not None:
            for h in s.hosts:
                same = _same_machine(h.spec.address, h.spec.host_key, other.prometheus_address, other.prometheus_key)
                if same and (h.spec.runner_user or default_user) == other.prometheus_ssh_user:
                    add(
                        (
                            _path("hosts", (h.index, "runnerUser")),
                            f"runner user {other.prometheus_ssh_user!r} on {h.spec.address} is the monitoring "
                            f"host's sshUser of {owner}: destroy would delete that login",
                        )
                    )
        if (
            prom is not None
            and other.prometheus_address is not None
            and _same_machine(prom.address, prom.host_key, other.prometheus_address, other.prometheus_key)
            and other.job_name == prom.job_name
            and other.targets_dir not in (None, prom.targets_dir)
        ):
            add(
                (
                    _path("prometheus", ("targetsDir",)),
                    f"job {prom.job_name!r} on {prom.address} reads {other.targets_dir!r} for {owner}; "
                    "one job reads one directory: use the same targetsDir or another jobName",
                )
            )
    return problems
