"""`runner-fleet host-keys` and the scan behind it, against SSH servers on 127.0.0.1 only:
a paramiko server with a known host key, a listener that accepts and never answers (a wedged
sshd), one that sends its banner and then stalls, and a closed port."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shlex
import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest
import yaml

from fleet import cli, hostkeys

STACK = "lab"


def _ed25519(tmp_path: Path, name: str) -> tuple[paramiko.PKey, str]:
    """A fresh ed25519 key (ssh-keygen: paramiko cannot generate ed25519) and its public line."""
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    public = " ".join(path.with_suffix(".pub").read_text().split()[:2])
    return paramiko.PKey.from_path(path), public


class _Server(paramiko.ServerInterface):
    pass


class SSHServer:
    """A paramiko SSH server on 127.0.0.1 that completes key exchanges with `host_key`."""

    def __init__(self, host_key: paramiko.PKey) -> None:
        self.host_key = host_key
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._transports: list[paramiko.Transport] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self._transports.append(transport)
            # The scan hangs up after the key exchange.
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                transport.start_server(server=_Server())

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for transport in self._transports:
            transport.close()


class SilentListener:
    """Accepts TCP connections and sends nothing (`banner` first, if given): a wedged sshd."""

    def __init__(self, banner: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.banner = banner
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.banner:
                conn.sendall(self.banner)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """The config refuses loopback addresses, so stack files name example.net machines; every pin
    read from them is pointed at 127.0.0.1, where the test's servers listen (nothing else is dialled)."""
    read = hostkeys.read_pins

    def on_loopback(config_file):
        return [
            dataclasses.replace(p, address="127.0.0.1", jump=dataclasses.replace(p.jump, address="127.0.0.1"))
            if p.jump
            else dataclasses.replace(p, address="127.0.0.1")
            for p in read(config_file)
        ]

    monkeypatch.setattr(hostkeys, "read_pins", on_loopback)
    return read


@pytest.fixture
def keys(tmp_path):
    return {"old": _ed25519(tmp_path, "old"), "new": _ed25519(tmp_path, "new")}


def _pin(port: int, pinned: str, name: str = "runner-a", path: str = "runner-fleet:hosts[0].hostKey") -> hostkeys.Pin:
    return hostkeys.Pin(name, "127.0.0.1", port, "root", pinned, path)


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _stack_file(tmp_path: Path, hosts: list[tuple[str, int, str]], prometheus: tuple[int, str] | None = None) -> Path:
    config = {
        "runner-fleet:hosts": [
            {
                "name": name,
                "address": f"{name}.example.net",
                "sshPort": port,
                "hostKey": key,
                "role": "primary" if i == 0 else "secondary",
                "exporterPort": 9102,
                "runners": [{"name": f"{name}-r"}],
            }
            for i, (name, port, key) in enumerate(hosts)
        ]
    }
    if prometheus is not None:
        port, key = prometheus
        config["runner-fleet:prometheus"] = {"address": "monitor.example.net", "sshPort": port, "hostKey": key}
    path = tmp_path / f"Pulumi.{STACK}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = cli.sys.stdout, cli.sys.stderr
    cli.sys.stdout, cli.sys.stderr = out, err
    try:
        code = cli.main(list(argv))
    finally:
        cli.sys.stdout, cli.sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


# --- fingerprints -------------------------------------------------------------------------------


def test_fingerprint_is_what_ssh_keygen_prints(keys, tmp_path):
    _, public = keys["old"]
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(tmp_path / "old.pub")], check=True, capture_output=True, text=True
    ).stdout
    assert hostkeys.fingerprint(public) == listed.split()[1]


# --- the scan -----------------------------------------------------------------------------------


def test_the_pinned_key_matches(keys):
    server = SSHServer(keys["old"][0])
    try:
        result = hostkeys.scan(_pin(server.port, keys["old"][1]), timeout=5)
    finally:
        server.close()
    assert result.status == hostkeys.MATCH, result.detail
    assert result.presented == keys["old"][1]


def test_a_rebuilt_host_is_a_mismatch_with_both_fingerprints_and_the_repin_command(keys):
    server = SSHServer(keys["new"][0])
    pin = _pin(server.port, keys["old"][1])
    try:
        result = hostkeys.scan(pin, timeout=5)
    finally:
        server.close()
    assert result.status == hostkeys.MISMATCH
    assert result.presented == keys["new"][1]
    line = hostkeys.describe(result, STACK)
    assert line.startswith(f"runner-a (127.0.0.1:{server.port}): host key mismatch")
    assert hostkeys.fingerprint(keys["old"][1]) in line and hostkeys.fingerprint(keys["new"][1]) in line
    command = f"pulumi config set --stack lab --path 'runner-fleet:hosts[0].hostKey' '{keys['new'][1]}'"
    assert line.endswith(command)
    # The command is one a shell runs as meant: the value is the presented key, as one argument.
    assert shlex.split(command)[-1] == keys["new"][1]


def test_a_wedged_sshd_is_reported_within_the_timeout():
    listener = SilentListener()
    try:
        started = time.monotonic()
        result = hostkeys.scan(_pin(listener.port, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA=="), timeout=1.5)
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert result.status == hostkeys.NO_BANNER
    assert elapsed < 3.5, elapsed
    line = hostkeys.describe(result, STACK)
    assert "sent no SSH banner in 1.5 s" in line and "restart sshd" in line
    print(f"\nwedged sshd (no banner) reported after {elapsed:.1f} s (timeout 1.5 s)")


def test_a_stalled_key_exchange_is_reported_within_the_timeout():
    listener = SilentListener(banner=b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    try:
        started = time.monotonic()
        result = hostkeys.scan(_pin(listener.port, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA=="), timeout=1.5)
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert result.status == hostkeys.STALLED
    assert elapsed < 3.5, elapsed


def test_a_closed_port_is_unreachable():
    result = hostkeys.scan(_pin(_closed_port(), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA=="), timeout=2)
    assert result.status == hostkeys.UNREACHABLE
    assert "refused" in result.detail


def test_a_machine_behind_a_jump_host_needs_the_ssh_key(keys):
    jump = _pin(_closed_port(), keys["old"][1], "runner-a (jump host)", "runner-fleet:hosts[0].jumpHost.hostKey")
    pin = hostkeys.Pin("runner-a", "10.0.0.9", 22, "root", keys["old"][1], "runner-fleet:hosts[0].hostKey", jump)
    result = hostkeys.scan(pin, timeout=1)
    assert result.status == hostkeys.NOT_SCANNED and "--ssh-key" in result.detail


# --- the command ---------------------------------------------------------------------------------


def test_host_keys_exit_codes_and_json(keys, tmp_path):
    good = SSHServer(keys["old"][0])
    rebuilt = SSHServer(keys["new"][0])
    try:
        stack_file = _stack_file(
            tmp_path, [("runner-a", good.port, keys["old"][1]), ("runner-b", rebuilt.port, keys["old"][1])]
        )
        code, out, err = _cli("host-keys", "--stack", STACK, "--config-file", str(stack_file), "--timeout", "5")
        assert code == 1, err
        lines = out.splitlines()
        assert lines[0].startswith(f"runner-a (127.0.0.1:{good.port}): presents the pinned ssh-ed25519 key SHA256:")
        assert lines[1].startswith(f"runner-b (127.0.0.1:{rebuilt.port}): host key mismatch")
        assert f"--path 'runner-fleet:hosts[1].hostKey' '{keys['new'][1]}'" in lines[1]

        code, out, _ = _cli("host-keys", "--stack", STACK, "--config-file", str(stack_file), "--timeout", "5", "--json")
        report = json.loads(out)
        assert code == 1 and report["exit_code"] == 1
        machines = {m["machine"]: m for m in report["machines"]}
        assert machines["runner-a"]["status"] == "match" and machines["runner-a"]["repin_command"] is None
        b = machines["runner-b"]
        assert b["status"] == "mismatch"
        assert b["pinned_fingerprint"] == hostkeys.fingerprint(keys["old"][1])
        assert b["presented_fingerprint"] == hostkeys.fingerprint(keys["new"][1])
        assert b["repin_command"].endswith(shlex.quote(keys["new"][1]))

        # After re-pinning (the value the command sets), everything matches: exit 0.
        stack_file = _stack_file(
            tmp_path, [("runner-a", good.port, keys["old"][1]), ("runner-b", rebuilt.port, keys["new"][1])]
        )
        code, out, _ = _cli("host-keys", "--stack", STACK, "--config-file", str(stack_file), "--timeout", "5")
        assert code == 0, out
    finally:
        good.close()
        rebuilt.close()


def test_host_keys_exit_3_when_a_machine_cannot_be_scanned(keys, tmp_path):
    good = SSHServer(keys["old"][0])
    wedged = SilentListener()
    try:
        stack_file = _stack_file(tmp_path, [("runner-a", good.port, keys["old"][1])], (wedged.port, keys["old"][1]))
        started = time.monotonic()
        code, out, _ = _cli("host-keys", "--stack", STACK, "--config-file", str(stack_file), "--timeout", "1.5")
        elapsed = time.monotonic() - started
    finally:
        good.close()
        wedged.close()
    assert code == 3, out
    assert f"monitoring host (127.0.0.1:{wedged.port}): sshd accepted the connection but sent no SSH banner" in out
    # Machines are scanned in parallel: the whole run takes about one timeout.
    assert elapsed < 4, elapsed


def test_host_keys_usage_errors(tmp_path):
    code, _, err = _cli("host-keys", "--stack", STACK, "--config-file", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"config": {"runner-fleet:hosts": [{"name": "x"}]}}))
    code, _, err = _cli("host-keys", "--stack", STACK, "--config-file", str(bad))
    assert code == 2 and "runner-fleet:hosts[0]" in err


def test_host_keys_help_lists_the_exit_codes():
    with pytest.raises(SystemExit) as exc:
        _cli("host-keys", "--help")
    assert exc.value.code == 0


def test_pins_name_every_config_path(keys, tmp_path, loopback_only):
    stack_file = _stack_file(tmp_path, [("a", 22, keys["old"][1]), ("b", 22, keys["new"][1])], (22, keys["old"][1]))
    pins = loopback_only(stack_file)
    assert pins[0].address == "a.example.net"
    assert [(p.machine, p.config_path) for p in pins] == [
        ("a", "runner-fleet:hosts[0].hostKey"),
        ("b", "runner-fleet:hosts[1].hostKey"),
        ("monitoring host", "runner-fleet:prometheus.hostKey"),
    ]


# --- the program's check -------------------------------------------------------------------------


def test_the_reach_check_is_off_under_unit_test_mocks(monkeypatch):
    """Unit tests run the program with committed stack configs: it must never dial their addresses."""
    from pulumi.runtime import mocks, settings

    class Plain(mocks.MockMonitor):
        pass

    class Lab(mocks.MockMonitor):
        reaches_hosts = True

    monkeypatch.delenv(hostkeys.REACH_CHECK_ENV, raising=False)
    monkeypatch.setattr(settings.SETTINGS, "monitor", Plain.__new__(Plain), raising=False)
    assert not hostkeys.reach_check_enabled()
    monkeypatch.setattr(settings.SETTINGS, "monitor", Lab.__new__(Lab), raising=False)
    assert hostkeys.reach_check_enabled()
    monkeypatch.setenv(hostkeys.REACH_CHECK_ENV, "off")
    assert not hostkeys.reach_check_enabled()


def test_the_program_skips_a_refused_host_deploys_the_others_and_fails(monkeypatch):
    """With one production host refused (a wedged sshd), the program declares the other host's
    components and the monitoring host's (its target file still listing the refused host), nothing
    of the refused host, and fails with one line for it (the engine then deletes nothing)."""
    import pulumi

    from tests import conftest

    config = conftest.completed_stack_config("production")
    refused = config["hosts"][1]
    monitors: list = []

    class Recording(conftest.RecordingMonitor):
        def __init__(self, mocks):
            super().__init__(mocks)
            monitors.append(self)

    def check(stack, hosts, prometheus, reach=None):
        pins = hostkeys.pins_from_models(hosts, prometheus)
        pin = next(p for p in pins if p.machine == refused["name"])
        return hostkeys.ReachCheck(stack, {pin.machine: hostkeys.Scan(pin, hostkeys.NO_BANNER, detail="10 s")}, 10.2)

    monkeypatch.setattr(conftest, "RecordingMonitor", Recording)
    monkeypatch.setattr(hostkeys, "check_before_deploy", check)
    with pytest.raises(pulumi.RunError) as excinfo:
        conftest.run_program(config, "production")
    names = [r.name for r in monitors[0].requests if r.type != "pulumi:pulumi:Stack"]
    kept = config["hosts"][0]["name"]
    assert kept in names and any(n.startswith(f"{kept}-") for n in names)
    assert not [n for n in names if n.startswith(refused["name"])]
    # The monitoring host is deployed, its target file still listing the refused host's exporter.
    assert "prometheus-target-file" in names
    target_file = next(r for r in monitors[0].requests if r.name == "prometheus-target-file")
    assert f"{refused['address']}:{refused['exporterPort']}" in str(target_file.object)
    lines = str(excinfo.value).splitlines()
    assert lines[-1] == (
        f"runner-fleet: FAILED on {refused['name']} ({refused['address']}:22), step check before deploying: "
        "sshd accepted the connection but sent no SSH banner in 10 s: it is wedged (stopped or overloaded), and "
        "pulumi-command would wait for it for ever (its SSH handshake has no timeout). "
        "To fix: restart sshd on the machine (or reboot it), then run again."
    )
    assert "every other machine was deployed" in lines[0]


def test_a_refused_monitoring_host_ends_the_run_before_its_components(monkeypatch):
    import pulumi

    from tests import conftest

    config = conftest.completed_stack_config("production")
    monitors: list = []

    class Recording(conftest.RecordingMonitor):
        def __init__(self, mocks):
            super().__init__(mocks)
            monitors.append(self)

    def check(stack, hosts, prometheus, reach=None):
        pin = hostkeys.pins_from_models(hosts, prometheus)[-1]
        assert pin.machine == hostkeys.MONITORING_HOST
        scan = hostkeys.Scan(pin, hostkeys.MISMATCH, presented=conftest.fake_host_key("rebuilt"))
        return hostkeys.ReachCheck(stack, {pin.machine: scan}, 0.1)

    monkeypatch.setattr(conftest, "RecordingMonitor", Recording)
    monkeypatch.setattr(hostkeys, "check_before_deploy", check)
    with pytest.raises(pulumi.RunError) as excinfo:
        conftest.run_program(config, "production")
    names = [r.name for r in monitors[0].requests]
    assert all(any(n.startswith(f"{h['name']}-") for n in names) for h in config["hosts"])
    assert not [n for n in names if n.startswith("prometheus")]
    last = str(excinfo.value).splitlines()[-1]
    assert last.startswith(f"runner-fleet: FAILED on monitoring host ({config['prometheus']['address']}:22)")
    assert (
        "re-pin: pulumi config set --stack production --path runner-fleet:prometheus.hostKey "
        f"'{conftest.fake_host_key('rebuilt')}'"
    ) in last


def test_diagnose_points_a_host_key_refusal_at_host_keys(keys):
    """diagnose's SSH (fleet/verify.py) refuses a rebuilt host's key; the cause it reports says
    which command shows both fingerprints and re-pins."""
    from fleet import diagnose, verify

    server = SSHServer(keys["new"][0])
    endpoint = verify.Endpoint("runner-a", "127.0.0.1", server.port, "root", keys["old"][1])
    try:
        with pytest.raises(verify.Unreachable) as excinfo:
            verify.ssh_run(endpoint, keys["old"][0], "true", timeout=5)
    finally:
        server.close()
    cause = diagnose.unreachable_cause(STACK, "runner-a", str(excinfo.value))
    assert "host key other than the pinned one" in cause.cause
    assert cause.fix.startswith(f"runner-fleet host-keys --stack {STACK} prints the pinned and the presented")
    plain = diagnose.unreachable_cause(STACK, "runner-a", "127.0.0.1:22: Connection refused")
    assert plain.cause == "the host cannot be reached" and not plain.fix


def test_without_paramiko_the_check_still_tells_a_wedged_sshd(keys, monkeypatch):
    """Without paramiko (a venv built without requirements.txt): the check waits for sshd's banner only."""
    import sys

    server = SSHServer(keys["new"][0])
    silent = SilentListener()
    monkeypatch.setitem(sys.modules, "paramiko", None)  # `import paramiko` raises ImportError
    try:
        answered = hostkeys.scan(_pin(server.port, keys["old"][1]), timeout=2)
        wedged = hostkeys.scan(_pin(silent.port, keys["old"][1]), timeout=1)
    finally:
        server.close()
        silent.close()
    assert answered.status == hostkeys.BANNER_ONLY and answered.usable and not answered.ok
    assert wedged.status == hostkeys.NO_BANNER and not wedged.usable


class _JumpServer(paramiko.ServerInterface):
    def __init__(self, client_key: paramiko.PKey) -> None:
        self.client_key = client_key
        self.forwards: list[tuple[int, tuple[str, int]]] = []

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        ok = username == "jump" and key.asbytes() == self.client_key.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "direct-tcpip" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        self.forwards.append((chanid, destination))
        return paramiko.OPEN_SUCCEEDED


def _pipe(channel, sock) -> None:
    def copy(read, write):
        try:
            while data := read(32768):
                write(data)
        except OSError:
            pass
        finally:
            channel.close()
            sock.close()

    threading.Thread(target=copy, args=(channel.recv, sock.sendall), daemon=True).start()
    threading.Thread(target=copy, args=(sock.recv, channel.sendall), daemon=True).start()


class JumpHost:
    """An SSH jump host on 127.0.0.1: public-key login as `jump`, then direct-tcpip forwarding."""

    def __init__(self, host_key: paramiko.PKey, client_key: paramiko.PKey) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.host_key, self.client_key = host_key, client_key
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            server = _JumpServer(self.client_key)
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                transport.start_server(server=server)
            threading.Thread(target=self._forward, args=(transport, server), daemon=True).start()

    @staticmethod
    def _forward(transport: paramiko.Transport, server: _JumpServer) -> None:
        channel = transport.accept(10)
        if channel is None or not server.forwards:
            return
        _, (host, port) = server.forwards[-1]
        assert host == "127.0.0.1"  # the test only ever forwards on loopback
        _pipe(channel, socket.create_connection((host, port), timeout=5))

    def close(self) -> None:
        self.sock.close()
        for transport in self.transports:
            transport.close()


def test_host_keys_scans_a_machine_behind_its_jump_host_with_the_ssh_key(keys, tmp_path):
    client_key, _ = _ed25519(tmp_path, "client")
    jump_key, jump_public = _ed25519(tmp_path, "jump")
    jump = JumpHost(jump_key, client_key)
    target = SSHServer(keys["new"][0])
    try:
        jump_pin = hostkeys.Pin(
            "runner-a (jump host)",
            "127.0.0.1",
            jump.port,
            "jump",
            jump_public,
            "runner-fleet:hosts[0].jumpHost.hostKey",
        )
        pin = dataclasses.replace(_pin(target.port, keys["old"][1]), jump=jump_pin)
        without = hostkeys.scan(pin, timeout=5)
        behind = hostkeys.scan(pin, timeout=5, private_key=client_key)
        repinned = hostkeys.scan(dataclasses.replace(pin, pinned=keys["new"][1]), timeout=5, private_key=client_key)
        wrong_jump = hostkeys.scan(
            dataclasses.replace(pin, jump=dataclasses.replace(jump_pin, pinned=keys["old"][1])),
            timeout=5,
            private_key=client_key,
        )
    finally:
        jump.close()
        target.close()
    assert without.status == hostkeys.NOT_SCANNED
    assert behind.status == hostkeys.MISMATCH and behind.presented == keys["new"][1], behind.detail
    assert repinned.status == hostkeys.MATCH, repinned.detail
    # A jump host that shows another key is never logged in to.
    assert wrong_jump.status == hostkeys.UNREACHABLE and "its jump host" in wrong_jump.detail
