"""Pinned SSH host keys and reachability: what each configured machine presents, compared with its pin.

Two users:
- `runner-fleet host-keys` (fleet/cli.py): scans every machine of a stack's config file and, for
  each one whose key is not the pinned one, prints both fingerprints and the exact
  `pulumi config set --path …` command that re-pins it;
- the Pulumi program (fleet/program.py): before `pulumi up` registers a machine's commands it
  checks, bounded in time, that the machine's sshd answers with the pinned key. pulumi-command
  cannot do this itself: its `perDialTimeout` covers the TCP connect only, the SSH handshake
  after it has no deadline (x/crypto ssh.Dial), so a wedged sshd hangs `pulumi up` for ever, and
  a rebuilt host fails with only "ssh: handshake failed: ssh: host key mismatch".

A scan is an SSH key exchange restricted to the pinned key's algorithm, never an
authentication: it needs no credential. Behind a jump host the target can only be reached
through an authenticated session on the jump host, so the program checks the jump host only
and `host-keys` scans the target through it when given `--ssh-key`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fleet.config import NAMESPACE, HostSpec, JumpHost, PrometheusSpec

# How long one machine may take to connect, send its banner and finish the key exchange.
DEFAULT_TIMEOUT = 10.0
# The escape hatch: `RUNNER_FLEET_REACH_CHECK=off pulumi up` leaves every machine to pulumi-command.
REACH_CHECK_ENV = "RUNNER_FLEET_REACH_CHECK"

# What messages and the program's check call the monitoring host.
MONITORING_HOST = "monitoring host"

# Host key algorithms a pinned key type is presented with (RSA keys are refused by the config).
_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}

# Statuses of a scan.
MATCH = "match"
MISMATCH = "mismatch"
NO_BANNER = "no-banner"  # TCP accepted, no SSH banner in time: a wedged (stopped, overloaded) sshd
STALLED = "stalled"  # banner sent, key exchange not finished in time
UNREACHABLE = "unreachable"  # no TCP connection (down, link cut, filtered, refused)
ERROR = "error"  # another SSH failure
NOT_SCANNED = "not-scanned"  # behind a jump host and no key to log in to the jump host with
BANNER_ONLY = "banner-only"  # sshd answered, key not compared (paramiko is not installed)


class HostKeyError(Exception):
    """A problem with the arguments or the config file (exit code 2)."""


@dataclass(frozen=True)
class Pin:
    """One machine of the stack config and the host key pinned for it."""

    machine: str  # what messages call it: the host's name, "monitoring host", "<host> (jump host)"
    address: str
    port: int
    user: str
    pinned: str  # "TYPE BASE64" as configured
    config_path: str  # the key for `pulumi config set --path`, e.g. runner-fleet:hosts[0].hostKey
    jump: Pin | None = None

    @property
    def where(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def key_type(self) -> str:
        return self.pinned.split()[0]


@dataclass
class Scan:
    """What one machine presented."""

    pin: Pin
    status: str
    presented: str | None = None  # "TYPE BASE64" of the key the machine showed
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == MATCH

    @property
    def usable(self) -> bool:
        """Whether the program lets pulumi-command at the machine (a banner-only scan proves sshd
        answers; pulumi-command then compares the key itself)."""
        return self.status in (MATCH, BANNER_ONLY)

    def to_json(self, stack: str | None) -> dict[str, Any]:
        return {
            "machine": self.pin.machine,
            "address": self.pin.address,
            "port": self.pin.port,
            "config_path": self.pin.config_path,
            "status": self.status,
            "pinned_fingerprint": fingerprint(self.pin.pinned),
            "presented_fingerprint": fingerprint(self.presented) if self.presented else None,
            "presented_key": self.presented,
            "detail": self.detail,
            "seconds": round(self.seconds, 2),
            "repin_command": repin_command(stack, self.pin, self.presented)
            if self.status == MISMATCH and self.presented
            else None,
        }


# --- fingerprints and the re-pin command ------------------------------------------------------


def fingerprint(key_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a `TYPE BASE64` key line (what `ssh-keygen -lf` prints)."""
    parts = key_line.split()
    blob = base64.b64decode(parts[1] if len(parts) > 1 else parts[0])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def repin_command(stack: str | None, pin: Pin, presented: str | None) -> str:
    """The exact command that pins `presented` (check its fingerprint out of band first)."""
    value = presented or "<TYPE BASE64 of the new key>"
    stack_arg = f" --stack {shlex.quote(stack)}" if stack else ""
    return f"pulumi config set{stack_arg} --path {shlex.quote(pin.config_path)} {shlex.quote(value)}"


def keyscan_command(pin: Pin) -> str:
    """How to see the key the machine presents with OpenSSH's own tool."""
    port = f" -p {pin.port}" if pin.port != 22 else ""
    return f"ssh-keyscan -t {pin.key_type}{port} {pin.address}"


def failure_line(host: str, step: str, cause: str, action: str) -> str:
    """lib.sh's `failure_line` (where the format is defined), for the program's own failures."""
    cause = cause.replace("\n", " ").removesuffix(".")
    action = action.replace("\n", " ").removesuffix(".")
    return f"runner-fleet: FAILED on {host}, step {step}: {cause}. To fix: {action}."


def explain(scan: Scan, stack: str | None) -> tuple[str, str]:
    """(cause, what to do) for a scan that did not match."""
    pin = scan.pin
    if scan.status == MISMATCH:
        shown = fingerprint(scan.presented) if scan.presented else f"no {pin.key_type} key"
        return (
            f"host key mismatch: pinned {fingerprint(pin.pinned)} ({pin.config_path}), presented {shown}",
            f"if the machine was rebuilt and `{keyscan_command(pin)} | ssh-keygen -lf -` shows that fingerprint "
            f"(check it on the machine's console too), re-pin: {repin_command(stack, pin, scan.presented)}",
        )
    if scan.status in (NO_BANNER, STALLED):
        what = (
            "sshd accepted the connection but sent no SSH banner"
            if scan.status == NO_BANNER
            else "the SSH key exchange did not finish"
        )
        return (
            f"{what} in {scan.detail}: it is wedged (stopped or overloaded), and pulumi-command would wait for it "
            "for ever (its SSH handshake has no timeout)",
            "restart sshd on the machine (or reboot it), then run again",
        )
    if scan.status == UNREACHABLE:
        return f"unreachable ({scan.detail})", "bring the machine or its network back, then run again"
    if scan.status == NOT_SCANNED:
        return f"not scanned: {scan.detail}", "pass --ssh-key, or check the machine from its jump host"
    if scan.status == BANNER_ONLY:
        return (
            f"sshd answers, but its key was not compared ({scan.detail})",
            "install paramiko (pip install paramiko) to compare host keys",
        )
    return f"SSH failed ({scan.detail})", "check sshd on the machine (journalctl -u ssh), then run again"


def describe(scan: Scan, stack: str | None) -> str:
    """One line an operator can act on: the machine, the address, what is wrong and what to do."""
    pin = scan.pin
    head = f"{pin.machine} ({pin.where})"
    if scan.status == MATCH:
        return f"{head}: presents the pinned {pin.key_type} key {fingerprint(pin.pinned)}"
    cause, action = explain(scan, stack)
    return f"{head}: {cause}; {action}"


# --- reading the pins -------------------------------------------------------------------------


def _jump_pin(owner: str, path: str, jump: JumpHost | None) -> Pin | None:
    if jump is None:
        return None
    return Pin(
        f"{owner} (jump host)", jump.address, jump.ssh_port, jump.ssh_user, jump.host_key, f"{path}.jumpHost.hostKey"
    )


def pins_from_models(hosts: Sequence[HostSpec], prometheus: PrometheusSpec | None) -> list[Pin]:
    """Every machine (and jump host) of a validated configuration, each with its config path."""
    pins: list[Pin] = []
    for i, host in enumerate(hosts):
        path = f"{NAMESPACE}:hosts[{i}]"
        jump = _jump_pin(host.name, path, host.jump_host)
        pins.append(Pin(host.name, host.address, host.ssh_port, host.ssh_user, host.host_key, f"{path}.hostKey", jump))
    if prometheus is not None:
        path = f"{NAMESPACE}:prometheus"
        jump = _jump_pin(MONITORING_HOST, path, prometheus.jump_host)
        pins.append(
            Pin(
                MONITORING_HOST,
                prometheus.address,
                prometheus.ssh_port,
                prometheus.ssh_user,
                prometheus.host_key,
                f"{path}.hostKey",
                jump,
            )
        )
    return pins


def read_pins(config_file: Path) -> list[Pin]:
    """The pins of a stack config file (non-secret keys only)."""
    try:
        data = yaml.safe_load(config_file.read_text()) or {}
    except OSError as e:
        raise HostKeyError(f"cannot read {config_file}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise HostKeyError(f"{config_file}: not YAML: {str(e).splitlines()[0]}") from None
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise HostKeyError(f"{config_file}: no `config:` mapping")
    where = f"{NAMESPACE}:hosts"
    try:
        raw_hosts = config.get(where) or []
        if not isinstance(raw_hosts, list):
            raise HostKeyError(f"{config_file}: {where} is not a list")
        hosts = []
        for i, raw in enumerate(raw_hosts):
            where = f"{NAMESPACE}:hosts[{i}]"
            hosts.append(HostSpec.from_config(raw))
        where = f"{NAMESPACE}:prometheus"
        raw_prom = config.get(where)
        prometheus = PrometheusSpec.from_config(raw_prom) if raw_prom is not None else None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise HostKeyError(f"{config_file}: {where}{'.' + loc if loc else ''}: {first.get('msg')}") from None
    return pins_from_models(hosts, prometheus)


# --- scanning ---------------------------------------------------------------------------------


def _tcp_reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "TCP connect timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the address: {exc.strerror or exc}"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _scan_on(sock: Any, pin: Pin, started: float, timeout: float) -> Scan:
    """Key exchange on an open socket/channel, restricted to the pinned key's algorithms."""
    import paramiko  # type: ignore[import-untyped]

    deadline = started + timeout
    try:
        transport = paramiko.Transport(sock)
    except (OSError, paramiko.SSHException) as e:
        return Scan(pin, ERROR, detail=str(e) or type(e).__name__, seconds=time.monotonic() - started)
    try:
        # A little past the deadline, so the loop below (which knows whether a banner came) decides.
        transport.banner_timeout = max(0.1, deadline - time.monotonic()) + 1
        transport.handshake_timeout = transport.banner_timeout
        transport.get_security_options().key_types = _ALGORITHMS.get(pin.key_type, (pin.key_type,))
        event = threading.Event()
        try:
            transport.start_client(event=event)
        except paramiko.SSHException as e:
            return Scan(pin, ERROR, detail=str(e), seconds=time.monotonic() - started)
        while not event.wait(0.05):
            if not transport.is_active():
                break
            if time.monotonic() > deadline:
                # paramiko records the server's identification line once it has read it.
                status = STALLED if getattr(transport, "remote_version", None) else NO_BANNER
                return Scan(pin, status, detail=f"{timeout:g} s", seconds=time.monotonic() - started)
        error = transport.get_exception()
        if not transport.is_active() or error is not None:
            text = str(error) if error is not None else "the server closed the connection"
            if "no acceptable host key" in text or "Incompatible ssh server" in text:
                # The machine has no key of the pinned type at all: a mismatch, shown as such.
                return Scan(pin, MISMATCH, detail=f"no {pin.key_type} key offered", seconds=time.monotonic() - started)
            return Scan(pin, ERROR, detail=text, seconds=time.monotonic() - started)
        key = transport.get_remote_server_key()
        presented = f"{key.get_name()} {key.get_base64()}"
        pinned_blob = base64.b64decode(pin.pinned.split()[1])
        status = MATCH if key.asbytes() == pinned_blob else MISMATCH
        return Scan(pin, status, presented=presented, seconds=time.monotonic() - started)
    finally:
        transport.close()


def scan(pin: Pin, timeout: float = DEFAULT_TIMEOUT, *, private_key: Any = None) -> Scan:
    """What `pin`'s machine presents, all of it within `timeout` seconds (per hop)."""
    started = time.monotonic()
    if pin.jump is not None:
        if private_key is None:
            return Scan(pin, NOT_SCANNED, detail=f"behind the jump host {pin.jump.where} (pass --ssh-key to scan it)")
        return _scan_via_jump(pin, timeout, private_key, started)
    try:
        sock = socket.create_connection((pin.address, pin.port), timeout=timeout)
    except OSError as e:
        return Scan(pin, UNREACHABLE, detail=_tcp_reason(e), seconds=time.monotonic() - started)
    try:
        try:
            import paramiko  # noqa: F401 - only whether it is there
        except ImportError:
            return _banner_only(sock, pin, started, timeout)
        return _scan_on(sock, pin, started, timeout)
    finally:
        sock.close()


def _banner_only(sock: socket.socket, pin: Pin, started: float, timeout: float) -> Scan:
    """Without paramiko (a venv built without requirements.txt): wait for sshd's identification
    line only. It tells a wedged sshd from a working one; the key is left to pulumi-command."""
    seen = b""
    deadline = started + timeout
    while time.monotonic() < deadline and not seen.endswith(b"\n"):
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(256)
        except TimeoutError:
            break
        except OSError as e:
            return Scan(pin, ERROR, detail=_tcp_reason(e), seconds=time.monotonic() - started)
        if not chunk:
            return Scan(pin, ERROR, detail="the server closed the connection", seconds=time.monotonic() - started)
        seen += chunk
    if b"SSH-" not in seen:
        return Scan(pin, NO_BANNER, detail=f"{timeout:g} s", seconds=time.monotonic() - started)
    return Scan(pin, BANNER_ONLY, detail="paramiko is not installed", seconds=time.monotonic() - started)


def _scan_via_jump(pin: Pin, timeout: float, private_key: Any, started: float) -> Scan:
    import paramiko

    jump = pin.jump
    if jump is None:  # pragma: no cover - scan() only calls this for a pin with a jump host
        raise HostKeyError(f"{pin.machine}: no jump host")
    jump_scan = scan(jump, timeout)
    if not jump_scan.ok:
        return Scan(
            pin,
            UNREACHABLE,
            detail=f"its jump host {jump.where} failed the scan: {jump_scan.status}",
            seconds=time.monotonic() - started,
        )
    client = paramiko.SSHClient()
    try:
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        kind, blob = jump.pinned.split()[:2]
        known = jump.address if jump.port == 22 else f"[{jump.address}]:{jump.port}"
        client.get_host_keys().add(known, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
        try:
            client.connect(
                jump.address,
                port=jump.port,
                username=jump.user,
                pkey=private_key,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
            )
            transport = client.get_transport()
            channel = transport.open_channel("direct-tcpip", (pin.address, pin.port), ("127.0.0.1", 0), timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            return Scan(
                pin,
                UNREACHABLE,
                detail=f"through the jump host {jump.where}: {e or type(e).__name__}",
                seconds=time.monotonic() - started,
            )
        try:
            return _scan_on(channel, pin, time.monotonic(), timeout)
        finally:
            channel.close()
    finally:
        client.close()


def scan_all(
    pins: Iterable[Pin], timeout: float = DEFAULT_TIMEOUT, *, private_key: Any = None, workers: int = 16
) -> list[Scan]:
    """Scan every pin in parallel (so the whole scan takes about one timeout); in `pins` order."""
    pins = list(pins)
    if not pins:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(pins)), thread_name_prefix="hostkey-scan") as pool:
        return list(pool.map(lambda p: scan(p, timeout, private_key=private_key), pins))


# --- the program's check before `pulumi up` ---------------------------------------------------


def reach_check_enabled() -> bool:
    """On for a real `pulumi up` and the lab's executor; off under plain unit-test mocks (which must
    never dial the addresses of a committed stack) and when RUNNER_FLEET_REACH_CHECK=off."""
    if os.environ.get(REACH_CHECK_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return False
    from pulumi.runtime import mocks, settings

    monitor = getattr(settings.SETTINGS, "monitor", None)
    if isinstance(monitor, mocks.MockMonitor):
        return bool(getattr(monitor, "reaches_hosts", False))
    return True


Reach = Callable[[Sequence[Pin]], list[Scan]]


def program_reach(pins: Sequence[Pin]) -> list[Scan]:
    """What the program checks, in `pins` order: each machine directly, or, for one behind a jump
    host, the jump host (reaching the target needs the SSH key, a secret the program only has as an
    Output); a failed jump host's scan names the jump host."""
    return scan_all([p.jump if p.jump is not None else p for p in pins])


@dataclass
class ReachCheck:
    """The result of the program's check before `pulumi up`: the machines it refused, by name
    (a host's name, or "monitoring host"), and how long the check took."""

    stack: str
    refused: dict[str, Scan]
    seconds: float = 0.0

    def refuses(self, machine: str) -> bool:
        return machine in self.refused

    def message(self) -> str:
        """What the program fails with: a summary, then one failure line per refused machine."""
        lines = [
            f"runner-fleet: {len(self.refused)} machine(s) of stack {self.stack} refused by the check before "
            f"deploying ({self.seconds:.1f} s): their steps were not run and their state is kept as it is; every "
            "other machine was deployed (the monitoring host still lists a refused runner host); deletions wait "
            f"for a run in which all machines pass ({REACH_CHECK_ENV}=off leaves the machines to pulumi-command)"
        ]
        for scan in self.refused.values():
            cause, action = explain(scan, self.stack)
            lines.append(
                failure_line(f"{scan.pin.machine} ({scan.pin.where})", "check before deploying", cause, action)
            )
        return "\n".join(lines)

    def raise_if_refused(self) -> None:
        if self.refused:
            import pulumi

            raise pulumi.RunError(self.message())


def check_before_deploy(
    stack: str, hosts: Sequence[HostSpec], prometheus: PrometheusSpec | None, reach: Reach | None = None
) -> ReachCheck:
    """Scan every machine before anything is registered (a real `pulumi up` and the lab's
    executor; never a preview, which contacts no machine). Bounded: the machines are scanned in
    parallel, each within DEFAULT_TIMEOUT seconds."""
    import pulumi

    if pulumi.runtime.is_dry_run() or not reach_check_enabled():
        return ReachCheck(stack, {})
    pins = pins_from_models(hosts, prometheus)
    started = time.monotonic()
    scans = (reach or program_reach)(pins)
    check = ReachCheck(
        stack, {p.machine: s for p, s in zip(pins, scans, strict=True) if not s.usable}, time.monotonic() - started
    )
    pulumi.log.info(
        f"runner-fleet: checked {len(pins)} machine(s) in {check.seconds:.1f} s: "
        + (", ".join(describe(s, stack) for s in check.refused.values()) or "all present their pinned keys")
    )
    return check
