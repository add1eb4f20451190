"""Lab hosts: real Debian machines (systemd as PID 1, stock sshd, sudo) as systemd-nspawn containers.

`python -m lab.hosts up --host runner-a --host monitor:monitoring` brings hosts up on the bridge
rflab0 (10.249.31.1/24; the i-th host gets 10.249.31.(10+i)), each on its own copy-on-write overlay
of the cached image (lab/image.py) with its own machine-id and ed25519 host key, and waits until
each one's sshd accepts the lab's client key. `down` removes everything again, from the state file
and by sweeping what carries the lab's name, so it also cleans up after a crash. The Python API
(`Lab`, `HostSpec`, `LabHost`) is what tests and the demo use; see lab/HOSTS.md.

Every resource the lab creates carries the name `runner-fleet-lab-<host>` (overlay mount source,
cgroup scope) or lives under the state directory, which is how `down` finds what it owns.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lab.image import CACHE_ENV, DEFAULT_CACHE_DIR, Image, ensure_image, image_size_bytes, mounts

BRIDGE = "rflab0"
BRIDGE_ADDRESS = "10.249.31.1"
PREFIX_LENGTH = 24
SUBNET_PREFIX = "10.249.31."
FIRST_HOST_OCTET = 11  # host i (1-based) gets .10+i
MAX_HOSTS = 100
SSH_PORT = 22
USER = "deploy"
OWNER = "runner-fleet-lab"  # names every mount and cgroup the lab creates
STATE_ENV = "RUNNER_FLEET_LAB_DIR"
DEFAULT_STATE_DIR = Path(__file__).resolve().parent.parent / ".lab"
STATE_FILE = "lab.json"
KEY_FILE = "id_ed25519"
KNOWN_HOSTS_FILE = "known_hosts"
LAUNCHER = Path(__file__).with_name("hosts-launch.sh")
SSH_READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
KILL_TIMEOUT = 10.0
NSPAWN_RUN = Path("/run/systemd/nspawn")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$")

Log = Callable[[str], None]


def _log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says what to do about it."""


@dataclass(frozen=True)
class HostSpec:
    """A host to bring up; `monitoring` hosts also run Debian's prometheus package."""

    name: str
    monitoring: bool = False

    @classmethod
    def parse(cls, text: str) -> HostSpec:
        """`NAME` or `NAME:monitoring`, as given to `up --host`."""
        name, sep, role = text.partition(":")
        if sep and role != "monitoring":
            raise LabError(f"--host {text!r}: the only role is 'monitoring' (NAME or NAME:monitoring)")
        return cls(name, monitoring=bool(sep))


@dataclass(frozen=True)
class LabHost:
    """How to reach one lab host, plus what `down` and debugging need to find its pieces."""

    name: str
    address: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA..." without comment, to pin
    monitoring: bool
    machine_id: str = ""
    launcher_pid: int | None = None
    init_pid: int | None = None
    cgroups: tuple[str, ...] = ()
    overlay: dict[str, Any] = field(default_factory=dict)  # lowerdir (list), upperdir, workdir, merged
    console_log: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ssh_port"] = data.pop("port")
        data["cgroups"] = list(self.cgroups)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabHost:
        data = dict(data)
        data["port"] = data.pop("ssh_port")
        data["cgroups"] = tuple(data.get("cgroups", ()))
        return cls(**data)


# --- state ------------------------------------------------------------------------------------


def resolve_state_dir(state_dir: Path | str | None = None) -> Path:
    """Explicit argument, then $RUNNER_FLEET_LAB_DIR, then `.lab/` at the repository root."""
    if state_dir is not None:
        return Path(state_dir).resolve()
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR).resolve()


def _write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write via a temporary file and rename, so a killed process leaves the old or new file."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, raw)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# --- small system helpers -------------------------------------------------------------------


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def _cgroup_roots() -> list[Path]:
    """Hierarchies a host's scope must exist in: name=systemd and unified (hybrid), or the v2 root."""
    fs = Path("/sys/fs/cgroup")
    hybrid = [fs / "systemd", fs / "unified"]
    if all((p / "cgroup.procs").exists() for p in hybrid):
        return hybrid
    if (fs / "cgroup.controllers").exists():
        return [fs]
    return [p for p in hybrid if (p / "cgroup.procs").exists()]


def _scope_name(name: str) -> str:
    return f"{OWNER}-{name}.scope"


def _scope_dirs(name: str) -> list[Path]:
    return [root / "machine.slice" / _scope_name(name) for root in _cgroup_roots()]


def _owned_scope_names() -> set[str]:
    names = set()
    for root in _cgroup_roots():
        for scope in (root / "machine.slice").glob(f"{OWNER}-*.scope"):
            names.add(scope.name[len(OWNER) + 1 : -len(".scope")])
    return names


def _scope_pids(name: str) -> set[int]:
    """Live processes anywhere in the host's scope, in any hierarchy."""
    return {pid for scope in _scope_dirs(name) for pid in _cgroup_pids(scope) if _alive(pid)}


def _cgroup_pids(scope: Path) -> set[int]:
    pids: set[int] = set()
    if not scope.is_dir():
        return pids
    for procs in scope.rglob("cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            continue
    return pids


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie); reaps the zombie when it is our own child."""
    stat = _proc_stat(pid)
    if stat is None:
        return False
    if stat[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _in_scope(pid: int, name: str) -> bool:
    """The process sits in this host's cgroup scope: proof it is ours and not a reused PID."""
    try:
        return _scope_name(name) in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def find_init_pid(launcher_pid: int) -> int | None:
    """PID (outer namespace) of the host's systemd: the launcher's descendant that is PID 1 inside."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    todo = list(children.get(launcher_pid, []))
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) > 1 and nspid[-1] == "1":
            return pid
        todo.extend(children.get(pid, []))
    return None


def memory_bytes(name: str) -> int:
    """Proportional set size of everything running in a host (its nspawn included)."""
    total = 0
    scopes = _scope_dirs(name)
    for pid in _cgroup_pids(scopes[0]) if scopes else ():
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


# --- keys and SSH -----------------------------------------------------------------------------


def _new_ed25519(comment: str) -> tuple[str, str]:
    """(OpenSSH private key text, 'ssh-ed25519 AAAA... comment'), generated without argv exposure."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {comment}"


def _known_hosts_name(host: LabHost) -> str:
    return host.address if host.port == SSH_PORT else f"[{host.address}]:{host.port}"


def open_ssh(
    host: LabHost, private_key: str, *, host_key: str | None = None, timeout: float = 10.0
) -> paramiko.SSHClient:
    """Connected client for `host`: lab key, host key pinned (RejectPolicy), no agent, no ~/.ssh."""
    key_type, key_data = (host_key or host.host_key).split()[:2]
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        _known_hosts_name(host), key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
    )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host.address,
            port=host.port,
            username=host.user,
            pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(private_key)),
            allow_agent=False,
            look_for_keys=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except BaseException:
        client.close()
        raise
    return client


def run_ssh(
    client: paramiko.SSHClient, command: str, stdin: str | bytes | None = None, timeout: float = 120.0
) -> tuple[int, str, str]:
    """Run one command on a connected client; stdin is written then closed, like pulumi-command."""
    transport = client.get_transport()
    if transport is None:
        raise LabError("SSH client is not connected")
    channel = transport.open_session(timeout=timeout)
    channel.settimeout(timeout)
    channel.exec_command(command)
    stderr: list[bytes] = []
    # Read stderr alongside stdout: a command that fills one stream must not stall on the other.
    reader = threading.Thread(target=lambda: stderr.append(channel.makefile_stderr("rb").read()), daemon=True)
    reader.start()
    if stdin is not None:
        channel.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
    channel.shutdown_write()
    stdout = channel.makefile("rb").read()
    reader.join(timeout)
    rc = channel.recv_exit_status()
    channel.close()
    return rc, stdout.decode(errors="replace"), b"".join(stderr).decode(errors="replace")


# --- the lab ----------------------------------------------------------------------------------


class Lab:
    """A running lab: hosts by name, the client key, timings; a context manager that tears down."""

    def __init__(
        self,
        state_dir: Path,
        hosts: dict[str, LabHost],
        timings: dict[str, float] | None = None,
        bridge_address: str = BRIDGE_ADDRESS,
    ) -> None:
        self.state_dir = state_dir
        self.hosts = hosts
        self.timings: dict[str, float] = dict(timings or {})
        self.bridge_address = bridge_address

    # construction

    @classmethod
    def up(
        cls,
        specs: Iterable[HostSpec],
        state_dir: Path | str | None = None,
        *,
        cache_dir: Path | str | None = None,
        ssh_timeout: float = SSH_READY_TIMEOUT,
        log: Log = _log,
    ) -> Lab:
        """Bring hosts up (building the image if needed) and wait until each accepts SSH."""
        return _up(list(specs), resolve_state_dir(state_dir), cache_dir, ssh_timeout, log)

    @classmethod
    def load(cls, state_dir: Path | str | None = None) -> Lab:
        """The lab described by `lab.json` in the state directory."""
        directory = resolve_state_dir(state_dir)
        state = _read_state(directory)
        if state is None or not state.get("hosts"):
            raise LabError(f"no lab is up (no hosts in {directory / STATE_FILE}); run `python -m lab.hosts up`")
        hosts = {name: LabHost.from_json(h) for name, h in state["hosts"].items()}
        return cls(directory, hosts, state.get("timings"), state["bridge"]["address"])

    # access

    @property
    def private_key_path(self) -> Path:
        return self.state_dir / KEY_FILE

    @property
    def private_key(self) -> str:
        return self.private_key_path.read_text()

    def host(self, host: str | LabHost) -> LabHost:
        return host if isinstance(host, LabHost) else self.hosts[host]

    def connect(self, host: str | LabHost, *, host_key: str | None = None, timeout: float = 10.0) -> paramiko.SSHClient:
        """SSH client to a host with its pinned key (or `host_key`, to prove a wrong one is refused)."""
        return open_ssh(self.host(host), self.private_key, host_key=host_key, timeout=timeout)

    def run_on(
        self, host: str | LabHost, command: str, stdin: str | bytes | None = None, timeout: float = 120.0
    ) -> tuple[int, str, str]:
        """Run `command` on a host over SSH as deploy; returns (exit code, stdout, stderr)."""
        with self.connect(host) as client:
            return run_ssh(client, command, stdin, timeout)

    def init_pid(self, host: str | LabHost) -> int | None:
        """Current PID of the host's systemd (changes when the host reboots): `nsenter -t PID -a`."""
        launcher = self.host(host).launcher_pid
        return find_init_pid(launcher) if launcher else None

    def memory_bytes(self, host: str | LabHost) -> int:
        return memory_bytes(self.host(host).name)

    # teardown

    def down(self, log: Log = _log) -> float:
        """Tear the whole lab down (idempotent); returns and records the seconds it took."""
        seconds = down(self.state_dir, log=log)
        self.timings["teardown"] = seconds
        return seconds

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()


def run_on(
    host: str, command: str, stdin: str | bytes | None = None, *, state_dir: Path | str | None = None
) -> tuple[int, str, str]:
    """`Lab.load(state_dir).run_on(...)`, for callers that only know a host's name."""
    return Lab.load(state_dir).run_on(host, command, stdin)


# --- up ---------------------------------------------------------------------------------------


def _validate(specs: list[HostSpec]) -> None:
    if not specs:
        raise LabError("no hosts requested")
    if len(specs) > MAX_HOSTS:
        raise LabError(f"at most {MAX_HOSTS} hosts")
    seen: set[str] = set()
    for spec in specs:
        if not HOSTNAME_RE.match(spec.name):
            raise LabError(f"host name {spec.name!r}: use 1-30 of a-z, 0-9 and '-' (it becomes the hostname)")
        if spec.name in seen:
            raise LabError(f"host name {spec.name!r} given twice")
        seen.add(spec.name)


def _leftovers(state_dir: Path) -> list[str]:
    """What of a lab exists right now: bridge, mounts and scopes of any lab, and this state dir's."""
    found = []
    state = _read_state(state_dir)
    if state and state.get("hosts"):
        found.append(f"state {state_dir / STATE_FILE}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    found += [f"mount {m.point}" for m in mounts() if m.source.startswith(f"{OWNER}-")]
    found += [f"cgroup scope {_scope_name(n)}" for n in sorted(_owned_scope_names())]
    if (state_dir / "hosts").exists():
        found.append(f"host directories {state_dir / 'hosts'}")
    return found


class _State:
    """lab.json as it is being built: saved after every step so a crash leaves a usable record."""

    def __init__(self, state_dir: Path, image: Image) -> None:
        self.state_dir = state_dir
        self.data: dict[str, Any] = {
            "version": 1,
            "bridge": {"name": BRIDGE, "address": BRIDGE_ADDRESS, "prefix_length": PREFIX_LENGTH},
            "private_key": KEY_FILE,
            "image": {"key": image.key, "base": str(image.base), "monitoring": str(image.monitoring or "")},
            "hosts": {},
            "timings": {},
        }

    def put(self, host: LabHost) -> None:
        self.data["hosts"][host.name] = host.to_json()
        self.save()

    def save(self) -> None:
        _write_atomic(self.state_dir / STATE_FILE, json.dumps(self.data, indent=2) + "\n")


def _up(specs: list[HostSpec], state_dir: Path, cache_dir: Path | str | None, ssh_timeout: float, log: Log) -> Lab:
    _validate(specs)
    if found := _leftovers(state_dir):
        raise LabError(f"a lab is already up or was not torn down ({'; '.join(found)}): run `python -m lab.hosts down`")
    started = time.monotonic()
    image = ensure_image(monitoring=any(s.monitoring for s in specs), cache_dir=cache_dir, log=log)
    timings = {"image_build": round(image.build_seconds, 3), "image": round(time.monotonic() - started, 3)}

    state_dir.mkdir(parents=True, exist_ok=True)
    # Creating the bridge is the point of ownership: from here on a failure tears down.
    if _run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=False).returncode != 0:
        raise LabError(f"cannot create bridge {BRIDGE} (another lab up?); run `python -m lab.hosts down`")
    try:
        _run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/{PREFIX_LENGTH}", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        private_key, public_key = _new_ed25519(f"{OWNER}-client")
        _write_atomic(state_dir / KEY_FILE, private_key, 0o600)
        _write_atomic(state_dir / f"{KEY_FILE}.pub", public_key + "\n")
        state = _State(state_dir, image)
        state.save()

        phase = time.monotonic()
        hosts = []
        for index, spec in enumerate(specs):
            host = _prepare_host(spec, index, image, state_dir, public_key, state)
            hosts.append(host)
        _write_atomic(state_dir / KNOWN_HOSTS_FILE, "".join(f"{_known_hosts_name(h)} {h.host_key}\n" for h in hosts))
        timings["prepare"] = round(time.monotonic() - phase, 3)

        phase = time.monotonic()
        hosts = [_launch(host, state) for host in hosts]
        lab = Lab(state_dir, {h.name: h for h in hosts}, timings)
        ready = _wait_ready(lab, private_key, ssh_timeout)
        timings["boot_to_ssh"] = round(time.monotonic() - phase, 3)
        for name, seconds in ready.items():
            timings[f"boot_to_ssh[{name}]"] = round(seconds, 3)
        for host in hosts:
            host = replace(host, init_pid=find_init_pid(host.launcher_pid or 0))
            lab.hosts[host.name] = host
            state.data["hosts"][host.name] = host.to_json()
        timings["up_total"] = round(time.monotonic() - started, 3)
        lab.timings = timings
        state.data["timings"] = timings
        state.save()
    except BaseException:
        log("up failed; tearing down what was started")
        _print_console_tails(state_dir, log)
        down(state_dir, log=log)
        raise
    log(
        "up: "
        + ", ".join(f"{h.name}={h.address}{' (monitoring)' if h.monitoring else ''}" for h in hosts)
        + " | "
        + " ".join(f"{k}={v:.2f}s" for k, v in timings.items() if "[" not in k)
    )
    return lab


def _write_in_root(root: Path, relative: str, data: str, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
    """Write a file inside a host's tree, refusing symlinks that could point out of it."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.parent.resolve().is_relative_to(root.resolve()):
        raise LabError(f"{relative}: parent directory leaves the host's root")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data.encode())
        os.fchmod(fd, mode)
        os.fchown(fd, *owner)
    finally:
        os.close(fd)


def _passwd_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise LabError(f"image has no user {user!r}")


def _prepare_host(
    spec: HostSpec, index: int, image: Image, state_dir: Path, client_public: str, state: _State
) -> LabHost:
    """Mount the host's overlay and write what makes it this host: names, id, address, keys."""
    host_dir = state_dir / "hosts" / spec.name
    overlay = {
        "lowerdir": [str(p) for p in image.lowerdirs(spec.monitoring)],
        "upperdir": str(host_dir / "upper"),
        "workdir": str(host_dir / "work"),
        "merged": str(host_dir / "merged"),
    }
    for path in (overlay["upperdir"], overlay["workdir"], overlay["merged"], *overlay["lowerdir"]):
        if "," in path or ":" in path:
            raise LabError(f"overlay path {path!r} may not contain ',' or ':'")
    address = f"{SUBNET_PREFIX}{FIRST_HOST_OCTET + index}"
    host_private, host_public = _new_ed25519(f"root@{spec.name}")
    host = LabHost(
        name=spec.name,
        address=address,
        port=SSH_PORT,
        user=USER,
        host_key=" ".join(host_public.split()[:2]),
        monitoring=spec.monitoring,
        machine_id=uuid.uuid4().hex,
        cgroups=tuple(str(p) for p in _scope_dirs(spec.name)),
        overlay=overlay,
        console_log=str(host_dir / "console.log"),
    )
    state.put(host)  # recorded before mounting, so `down` knows the paths even if we die next
    for key in ("upperdir", "workdir", "merged"):
        Path(overlay[key]).mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={':'.join(overlay['lowerdir'])},upperdir={overlay['upperdir']},workdir={overlay['workdir']}"
    _run(["mount", "-t", "overlay", f"{OWNER}-{spec.name}", "-o", options, overlay["merged"]])

    root = Path(overlay["merged"])
    image_hosts = (root / "etc/hosts").read_text()
    _write_in_root(root, "etc/hostname", f"{spec.name}\n")
    _write_in_root(root, "etc/hosts", image_hosts + f"127.0.1.1\t{spec.name}\n")
    _write_in_root(root, "etc/machine-id", f"{host.machine_id}\n", 0o444)
    # Same file name as systemd's DHCP default for host0, so this static config replaces it.
    _write_in_root(
        root,
        "etc/systemd/network/80-container-host0.network",
        "[Match]\nVirtualization=container\nName=host0\n\n"
        f"[Network]\nAddress={address}/{PREFIX_LENGTH}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
    )
    _write_in_root(root, "etc/ssh/ssh_host_ed25519_key", host_private, 0o600)
    _write_in_root(root, "etc/ssh/ssh_host_ed25519_key.pub", host_public + "\n")
    uid, gid = _passwd_ids(root, USER)
    ssh_dir = root / "home" / USER / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    os.chown(ssh_dir, uid, gid)
    _write_in_root(root, f"home/{USER}/.ssh/authorized_keys", client_public + "\n", 0o600, (uid, gid))
    return host


def _join_cgroups(scopes: list[Path]) -> Callable[[], None]:
    def join() -> None:
        for scope in scopes:
            (scope / "cgroup.procs").write_text("0")

    return join


def _launch(host: LabHost, state: _State) -> LabHost:
    """Start the host's launcher in its own cgroup scope and record its PID at once."""
    scopes = [Path(p) for p in host.cgroups]
    for scope in scopes:
        scope.mkdir(parents=True, exist_ok=True)
    argv = [
        "bash",
        str(LAUNCHER),
        "--quiet",
        f"--directory={host.overlay['merged']}",
        f"--machine={host.name}",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--network-bridge={BRIDGE}",
        "--console=read-only",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
    ]
    # No image locks: each overlay has exactly one nspawn, and a killed nspawn would leave its
    # lock files in /run/systemd/nspawn/locks for good. TERM=dumb keeps the console log plain.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "dumb", "LANG": "C.UTF-8", "SYSTEMD_NSPAWN_LOCK": "0"}
    with open(host.console_log, "ab") as console:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # hosts outlive `up` and are not hit by the caller's Ctrl-C
            preexec_fn=_join_cgroups(scopes),  # safe here: no other thread runs while hosts launch
        )
    launched = replace(host, launcher_pid=process.pid)
    state.put(launched)
    return launched


def _wait_ready(lab: Lab, private_key: str, timeout: float) -> dict[str, float]:
    """Poll every host until its sshd accepts the lab key; seconds per host."""
    start = time.monotonic()
    deadline = start + timeout
    failed = threading.Event()  # one host failing ends the wait for all: `up` tears down at once

    def wait_one(host: LabHost) -> float:
        try:
            return poll(host)
        except BaseException:
            failed.set()
            raise

    def poll(host: LabHost) -> float:
        last_error = "no answer"
        while time.monotonic() < deadline and not failed.is_set():
            if host.launcher_pid is None or not _alive(host.launcher_pid):
                raise LabError(f"{host.name}: launcher exited during boot (console: {host.console_log})")
            try:
                with open_ssh(host, private_key, timeout=5.0) as client:
                    rc, _, err = run_ssh(client, "true", timeout=10.0)
                if rc == 0:
                    return time.monotonic() - start
                last_error = f"`true` exited {rc}: {err.strip()}"
            except (OSError, EOFError, paramiko.SSHException) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise LabError(f"{host.name}: sshd did not accept the lab key within {timeout:.0f} s ({last_error})")

    with ThreadPoolExecutor(max_workers=len(lab.hosts)) as pool:
        futures = {name: pool.submit(wait_one, host) for name, host in lab.hosts.items()}
        return {name: future.result() for name, future in futures.items()}


def _print_console_tails(state_dir: Path, log: Log, lines: int = 15) -> None:
    for console in sorted((state_dir / "hosts").glob("*/console.log")):
        tail = console.read_text(errors="replace").splitlines()[-lines:]
        if tail:
            log(f"last console lines of {console.parent.name}:\n  " + "\n  ".join(tail))


# --- down -------------------------------------------------------------------------------------


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def down(state_dir: Path | str | None = None, *, log: Log = _log) -> float:
    """Remove every piece of the lab, from lab.json and by sweeping what carries its name.

    Idempotent; safe after a crash or a half-finished `up`. Returns the seconds it took.
    """
    started = time.monotonic()
    directory = resolve_state_dir(state_dir)
    state = _read_state(directory) or {}
    recorded = {name: LabHost.from_json(h) for name, h in (state.get("hosts") or {}).items()}
    host_dirs = directory / "hosts"
    names = set(recorded) | _owned_scope_names()
    names |= {m.source[len(OWNER) + 1 :] for m in mounts() if m.source.startswith(f"{OWNER}-")}
    if host_dirs.is_dir():
        names |= {p.name for p in host_dirs.iterdir()}

    # 1. Launchers recorded in the state (checked to still be in the host's scope): SIGTERM shuts
    #    each host down cleanly; whatever is left in the scopes after the wait gets SIGKILL.
    launchers = {
        name: h.launcher_pid
        for name, h in recorded.items()
        if h.launcher_pid and _alive(h.launcher_pid) and _in_scope(h.launcher_pid, name)
    }
    # Repeated each second: a host still early in boot has no handler for the shutdown signal
    # nspawn passes on yet, and as PID 1 of its namespace it silently drops it.
    deadline = time.monotonic() + STOP_TIMEOUT
    while (running := [p for p in launchers.values() if _alive(p)]) and time.monotonic() < deadline:
        for pid in running:
            _signal(pid, signal.SIGTERM)
        _wait_until(lambda running=running: not any(_alive(p) for p in running), 1.0)
    if running:
        log(f"launchers still running after {STOP_TIMEOUT:.0f} s; killing")
    for name in sorted(names):
        # Only processes in the host's own scope: the lab put them there (launcher, nspawn, host).
        if leftover := _scope_pids(name):
            log(f"{name}: killing {len(leftover)} process(es) left in its scope")
        for pid in leftover:
            _signal(pid, signal.SIGKILL)
        if not _wait_until(lambda name=name: not _scope_pids(name), KILL_TIMEOUT):
            raise LabError(f"{name}: processes survive SIGKILL: {sorted(_scope_pids(name))}")

    # 2. Overlays: every mount carrying the lab's name, and recorded merged dirs still mounted.
    merged = {h.overlay.get("merged") for h in recorded.values()}
    for mount in reversed(mounts()):
        ours = mount.source.startswith(f"{OWNER}-") or mount.point in merged
        if ours and _run(["umount", mount.point], check=False).returncode != 0:
            _run(["umount", "--lazy", mount.point])

    # 3. Cgroup scopes (depth first: the hosts' systemd made sub-cgroups) and nspawn's runtime dirs.
    for name in sorted(names):
        for scope in _scope_dirs(name):
            if scope.is_dir():
                subs = [p for p in scope.rglob("*") if p.is_dir()]
                for sub in sorted(subs, key=lambda p: len(p.parts), reverse=True):
                    sub.rmdir()
                scope.rmdir()
        for sub in ("propagate", "unix-export"):
            path = NSPAWN_RUN / sub / name
            if path.is_dir() and not path.is_symlink():
                _run(["rm", "-rf", "--one-file-system", str(path)])
    if not Path("/run/systemd/system").exists():  # no systemd here: machine.slice is the lab's
        for root in _cgroup_roots():
            slice_dir = root / "machine.slice"
            if slice_dir.is_dir() and not any(p.is_dir() for p in slice_dir.iterdir()):
                slice_dir.rmdir()

    # 4. Network: the hosts' veths die with their namespaces; drop any still on the bridge, then it.
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        ports = json.loads(_run(["ip", "-j", "link", "show", "master", BRIDGE]).stdout or "[]")
        for port in ports:
            _run(["ip", "link", "del", port["ifname"]], check=False)
        _run(["ip", "link", "del", BRIDGE])

    # 5. Files: host trees (only once nothing is mounted below them), keys, state.
    if host_dirs.is_dir():
        prefix = str(host_dirs) + "/"
        still = [m.point for m in mounts() if m.point.startswith(prefix)]
        if still:
            raise LabError(f"still mounted, not deleting {host_dirs}: {still}")
        _run(["rm", "-rf", "--one-file-system", str(host_dirs)], timeout=300)
    for file in (STATE_FILE, KEY_FILE, f"{KEY_FILE}.pub", KNOWN_HOSTS_FILE):
        (directory / file).unlink(missing_ok=True)

    seconds = time.monotonic() - started
    if names or state:
        log(f"down: removed {', '.join(sorted(names)) or 'state'} in {seconds:.2f} s")
    return seconds


# --- status and CLI ---------------------------------------------------------------------------


def status(state_dir: Path | str | None = None, out: Callable[[str], None] = print) -> int:
    """Print the lab's hosts and health; 0 all up, 1 something broken, 3 nothing up."""
    directory = resolve_state_dir(state_dir)
    state = _read_state(directory)
    leftovers = _leftovers(directory)
    if not state or not state.get("hosts"):
        if leftovers:
            out("no lab state, but found: " + "; ".join(leftovers) + " (run `down`)")
            return 1
        out("no lab is up")
        return 3
    lab = Lab.load(directory)
    bridge_up = Path(f"/sys/class/net/{BRIDGE}").exists()
    bridge = f"{BRIDGE} {BRIDGE_ADDRESS}/{PREFIX_LENGTH}: {'up' if bridge_up else 'MISSING'}"
    out(f"state {directory / STATE_FILE}; bridge {bridge}")
    out(f"{'NAME':<16} {'ADDRESS':<14} {'ROLE':<10} {'LAUNCHER':>8} {'INIT':>8} {'SSH':<10} {'RAM':>8}")
    healthy = bridge_up
    for host in lab.hosts.values():
        pid = host.launcher_pid or 0
        running = bool(pid) and _alive(pid) and _in_scope(pid, host.name)
        try:
            rc, _, _ = lab.run_on(host, "true", timeout=10.0)
            ssh = "ok" if rc == 0 else f"rc={rc}"
        except (OSError, EOFError, paramiko.SSHException) as exc:
            ssh = type(exc).__name__[:10]
        init = lab.init_pid(host) if running else None
        healthy = healthy and running and ssh == "ok"
        out(
            f"{host.name:<16} {host.address:<14} {'monitoring' if host.monitoring else 'runner':<10} "
            f"{(host.launcher_pid if running else 'dead')!s:>8} {init or '-'!s:>8} {ssh:<10} "
            f"{memory_bytes(host.name) / 2**20:>6.0f}MB"
        )
    out(f"ssh: ssh -i {lab.private_key_path} -o UserKnownHostsFile={directory / KNOWN_HOSTS_FILE} {USER}@ADDRESS")
    return 0 if healthy else 1


def _cmd_build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    image = ensure_image(monitoring=True, cache_dir=args.cache_dir, force=args.force, log=_log)
    elapsed = time.monotonic() - started
    how = f"built in {image.build_seconds:.1f} s" if image.build_seconds else "cached"
    sizes = ", ".join(f"{p.name} {image_size_bytes(p) / 2**20:.0f} MB" for p in (image.base, image.monitoring) if p)
    print(f"image {image.key}: {how}; ready in {elapsed:.2f} s ({sizes})")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    specs = [HostSpec.parse(h) for h in args.host]
    lab = Lab.up(specs, args.state_dir, cache_dir=args.cache_dir, ssh_timeout=args.ssh_timeout)
    for host in lab.hosts.values():
        print(f"{host.name} {host.address} {'monitoring' if host.monitoring else 'runner'} {host.host_key}")
    print(json.dumps(lab.timings))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    down(args.state_dir)
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    lab = Lab.load(args.state_dir)
    command = " ".join(args.command)
    if args.nsenter:
        pid = lab.init_pid(args.name)
        if pid is None:
            raise LabError(f"{args.name} is not running")
        os.execvp("nsenter", ["nsenter", "-t", str(pid), "-a", "/bin/sh", "-c", command])  # noqa: S606
    rc, out, err = lab.run_on(args.name, command)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.hosts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", help=f"state directory (default ${STATE_ENV} or {DEFAULT_STATE_DIR})")
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="build (or reuse) the cached base and monitoring images")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    up = sub.add_parser("up", help="bring hosts up and wait for SSH")
    up.add_argument("--host", action="append", required=True, metavar="NAME[:monitoring]")
    up.add_argument("--ssh-timeout", type=float, default=SSH_READY_TIMEOUT)
    for p in (build, up):
        p.add_argument("--cache-dir", help=f"image cache (default ${CACHE_ENV} or {DEFAULT_CACHE_DIR})")
    sub.add_parser("down", help="tear everything down (idempotent)")
    sub.add_parser("status", help="show hosts, processes, SSH and memory")
    exec_ = sub.add_parser("exec", help="run a command on a host over SSH (or --nsenter, for debugging)")
    exec_.add_argument("--nsenter", action="store_true", help="enter the host's namespaces instead of SSH")
    exec_.add_argument("name")
    exec_.add_argument("command", nargs=argparse.REMAINDER)
    for p in (build, up, sub.choices["down"], sub.choices["status"], exec_):
        p.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0 and args.cmd != "status":
        print("lab: must run as root (mounts, cgroups, bridge)", file=sys.stderr)
        return 2
    handlers = {"build": _cmd_build, "up": _cmd_up, "down": _cmd_down, "exec": _cmd_exec}
    try:
        if args.cmd == "status":
            return status(args.state_dir)
        return handlers[args.cmd](args)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
