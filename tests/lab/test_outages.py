"""Outages during a deploy, on lab hosts, through the executor (lab/executor, the project's
imitation of the engine; its SSH side dials as pulumi-command 1.2.1 does, no deadline after the
TCP connect).

What a user would see:
- a runner host whose link is down: the run names it within seconds (the program's check before
  deploying), the other host's change is deployed, and a run after the link is back converges;
  without that check, pulumi-command's own bound (dialErrorLimit 4 x perDialTimeout 15 s);
- a runner host whose sshd is wedged (the listener stopped by PID): the same, where
  pulumi-command alone waits for ever (shown: still waiting after 20 s, done once sshd resumes);
- a runner host rebuilt with a new host key at the same address: refused, with both
  fingerprints and the exact re-pin command (also from `runner-fleet host-keys`); after re-pinning,
  the deploy re-installs and re-registers the runner, one registration on the GitHub double.

Timings are printed. Scenarios run in file order on one deployed fleet; each also passes alone.
The first tests need no lab: the executor's dial against loopback listeners.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest
import yaml

from fleet import cli, hostkeys
from lab.executor import ssh
from lab.fleet import PRODUCTION, LabFleet

STACK = "lab"
DOWN = "runner-b"  # the host each scenario takes out; runner-a keeps working
DOWN_RUNNER = PRODUCTION[1].runners[0][0]
UP_RUNNER = PRODUCTION[0].runners[0][0]


# --- the executor dials as pulumi-command does (no lab needed) ------------------------------------


class _Silent:
    """A loopback listener that accepts and then sends `banner` (maybe nothing) and no more."""

    def __init__(self, banner: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.banner = banner
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


@pytest.mark.parametrize("banner", [b"", b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"], ids=["no-banner", "no-kex"])
def test_the_executor_waits_on_a_wedged_sshd_as_pulumi_command_does(monkeypatch, banner):
    """x/crypto's ssh.Dial has no deadline after the TCP connect: neither has the executor, even
    with paramiko's own banner/auth timeouts shortened to 0.5 s (it overrides them)."""
    original = paramiko.Transport.__init__

    def short(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.banner_timeout = self.auth_timeout = self.handshake_timeout = 0.5

    monkeypatch.setattr(paramiko.Transport, "__init__", short)
    listener = _Silent(banner)
    result: list[BaseException | None] = []

    def dial() -> None:
        connection = ssh.Connection(host="127.0.0.1", port=listener.port, dial_error_limit=0, per_dial_timeout=2)
        try:
            ssh.SSHTransport().open_session(connection)
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    thread = threading.Thread(target=dial, daemon=True)
    thread.start()
    thread.join(3)
    try:
        assert thread.is_alive(), f"the dial ended on its own: {result}"
    finally:
        listener.close()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(result[0], ssh.DialError) and "ssh: handshake failed" in str(result[0])


# --- the lab --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet.start(["runner-a", "runner-b"], state_dir=tmp_path_factory.mktemp("lab-outages")) as lab_fleet:
        yield lab_fleet


@pytest.fixture(scope="module")
def deployed(fleet):
    started = time.monotonic()
    report = fleet.run(STACK, PRODUCTION)
    assert report.ok, report.error
    print(f"\ncold deploy of the production-shaped stack: {time.monotonic() - started:.0f} s")
    return fleet


def with_label(fleet: LabFleet, label: str) -> dict:
    """The production-shaped config with one more custom label on every runner: a change that
    runs one command on each runner host."""
    config = fleet.config(PRODUCTION)
    for host in config["runner-fleet:hosts"]:
        for runner in host["runners"]:
            runner["labels"] = [*runner["labels"], label]
    return config


def custom_labels(fleet: LabFleet, runner: str) -> set[str]:
    registered = [r for r in fleet.double_state()["runners"] if r["name"] == runner]
    assert len(registered) == 1, f"{runner}: {len(registered)} registrations"
    return {label["name"] for label in registered[0]["labels"] if label["type"] == "custom"}


def timed_run(fleet: LabFleet, config: dict, **env: str):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        started = time.monotonic()
        report = fleet.run(STACK, PRODUCTION, config=config, log=lambda _line: None)
        return report, time.monotonic() - started
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def last_line(report) -> str:
    return (report.error or "").rstrip().splitlines()[-1]


def in_host(fleet: LabFleet, host: str, command: str) -> str:
    """Run `command` as root inside the host (nsenter: works while its sshd does not)."""
    pid = fleet.lab.init_pid(host)
    result = subprocess.run(
        ["nsenter", "-t", str(pid), "-a", "/bin/sh", "-c", command], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


def sshd_listener(fleet: LabFleet, host: str) -> int:
    """PID (outside the host) of the host's listening sshd: the sshd whose parent is its systemd."""
    init = fleet.lab.init_pid(host)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm == "sshd" and ppid == init:
            return int(entry.name)
    raise AssertionError(f"no listening sshd in {host}")


def bridge_port(host: str) -> str:
    return f"vb-{host}"


@pytest.mark.lab
def test_a_host_whose_link_is_down_is_named_in_seconds_and_the_other_host_is_deployed(deployed):
    fleet = deployed
    address = fleet.lab.hosts[DOWN].address
    subprocess.run(["ip", "link", "set", bridge_port(DOWN), "down"], check=True)
    try:
        report, elapsed = timed_run(fleet, with_label(fleet, "outage-link"))
        assert not report.ok
        line = last_line(report)
        assert line.startswith(f"runner-fleet: FAILED on {DOWN} ({address}:22), step check before deploying: "), line
        assert "unreachable" in line and "bring the machine or its network back" in line
        assert elapsed < 40, elapsed
        # The other host's change was carried out; the unreachable host's was not tried.
        assert "outage-link" in custom_labels(fleet, UP_RUNNER)
        assert "outage-link" not in custom_labels(fleet, DOWN_RUNNER)
        assert not [e for e in report.executions if address in e.target]
        print(f"\nlink down: the program's check named {DOWN} after {elapsed:.1f} s (whole run)")

        # Without the check, pulumi-command's own bound: 1 + dialErrorLimit (4) dials of at most
        # perDialTimeout (15 s) each, with backoff; the error names the address.
        bare, bare_elapsed = timed_run(
            fleet, with_label(fleet, "outage-link-bare"), **{hostkeys.REACH_CHECK_ENV: "off"}
        )
        assert not bare.ok
        assert f"after 4 failed attempts: dial tcp {address}:22" in bare.error, bare.error
        assert bare_elapsed < 100, bare_elapsed
        print(f"link down, no check: pulumi-command's dial retries failed after {bare_elapsed:.0f} s")
    finally:
        subprocess.run(["ip", "link", "set", bridge_port(DOWN), "up"], check=True)
    deadline = time.monotonic() + 60
    while hostkeys.scan(hostkeys.Pin(DOWN, address, 22, "root", fleet.lab.hosts[DOWN].host_key, "x"), 5).status != (
        hostkeys.MATCH
    ):
        assert time.monotonic() < deadline, f"{DOWN} did not come back"
        time.sleep(1)
    report, elapsed = timed_run(fleet, with_label(fleet, "outage-link"))
    assert report.ok, report.error
    assert "outage-link" in custom_labels(fleet, DOWN_RUNNER)
    print(f"link back: the re-run converged in {elapsed:.0f} s")


@pytest.mark.lab
def test_a_host_whose_sshd_is_wedged_is_named_in_seconds_where_pulumi_command_would_wait(deployed):
    fleet = deployed
    address = fleet.lab.hosts[DOWN].address
    pid = sshd_listener(fleet, DOWN)
    os.kill(pid, signal.SIGSTOP)
    try:
        report, elapsed = timed_run(fleet, with_label(fleet, "outage-sshd"))
        assert not report.ok
        line = last_line(report)
        assert line.startswith(f"runner-fleet: FAILED on {DOWN} ({address}:22), step check before deploying: "), line
        assert "sent no SSH banner in 10 s: it is wedged" in line and "restart sshd" in line
        assert elapsed < 40, elapsed
        assert "outage-sshd" in custom_labels(fleet, UP_RUNNER)
        assert "outage-sshd" not in custom_labels(fleet, DOWN_RUNNER)
        print(f"\nwedged sshd: the program's check named {DOWN} after {elapsed:.1f} s (whole run)")

        # Without the check the run waits on the handshake: still running after 20 s.
        done: list = []
        thread = threading.Thread(
            target=lambda: done.append(
                timed_run(fleet, with_label(fleet, "outage-sshd"), **{hostkeys.REACH_CHECK_ENV: "off"})
            ),
            daemon=True,
        )
        thread.start()
        thread.join(20)
        assert thread.is_alive(), f"the run ended although sshd was stopped: {done}"
        print("wedged sshd, no check: the run was still waiting on the SSH handshake after 20 s")
    finally:
        os.kill(pid, signal.SIGCONT)
    thread.join(180)
    assert not thread.is_alive(), "the run did not finish once sshd resumed"
    bare, bare_elapsed = done[0]
    assert bare.ok, bare.error
    assert "outage-sshd" in custom_labels(fleet, DOWN_RUNNER)
    print(f"sshd resumed: the waiting run then finished ({bare_elapsed:.0f} s in all)")
    report, _ = timed_run(fleet, with_label(fleet, "outage-sshd"))
    assert report.ok and not report.executions, report.error or report.executions


def _stack_file(fleet: LabFleet, config: dict, directory: Path) -> Path:
    """The non-secret part of a lab stack config as a Pulumi.<stack>.yaml (what host-keys reads)."""
    public = {k: v for k, v in config.items() if k not in ("runner-fleet:githubToken", "runner-fleet:sshPrivateKey")}
    path = directory / f"Pulumi.{STACK}.yaml"
    path.write_text(yaml.safe_dump({"config": public}))
    return path


def _host_keys(stack_file: Path) -> tuple[int, str]:
    out = io.StringIO()
    saved = cli.sys.stdout
    cli.sys.stdout = out
    try:
        code = cli.main(["host-keys", "--stack", STACK, "--config-file", str(stack_file)])
    finally:
        cli.sys.stdout = saved
    return code, out.getvalue()


REBUILD = """
set -e
systemctl stop 'actions.runner.*' 'runner-fleet-*' 2>/dev/null || true
rm -rf /etc/systemd/system/actions.runner.* /etc/systemd/system/runner-fleet-* \
  /opt/runner-fleet /etc/runner-fleet /var/lib/runner-fleet
systemctl daemon-reload
systemctl reset-failed 2>/dev/null || true
for user in $(getent passwd | cut -d: -f1 | grep '^github-runner-' || true); do
  userdel -r "$user" 2>/dev/null || true
done
rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
systemctl restart ssh
cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub
"""


@pytest.mark.lab
def test_a_rebuilt_host_is_refused_until_re_pinned_then_reinstalled_without_a_second_registration(deployed, tmp_path):
    fleet = deployed
    host = fleet.lab.hosts[DOWN]
    old_key = host.host_key
    assert fleet.run(STACK, PRODUCTION, log=lambda _line: None).ok
    old_id = next(r["id"] for r in fleet.double_state()["runners"] if r["name"] == DOWN_RUNNER)

    # The machine is rebuilt: a fresh system (no runner-fleet file, unit or user) with a new host key.
    new_key = in_host(fleet, DOWN, REBUILD).strip()
    assert new_key.startswith("ssh-ed25519 ") and new_key != old_key
    config = fleet.config(PRODUCTION)
    index = next(i for i, h in enumerate(config["runner-fleet:hosts"]) if h["name"] == DOWN)

    report, elapsed = timed_run(fleet, config)
    assert not report.ok
    line = last_line(report)
    command = f"pulumi config set --stack {STACK} --path 'runner-fleet:hosts[{index}].hostKey' {shlex.quote(new_key)}"
    assert line.startswith(f"runner-fleet: FAILED on {DOWN} ({host.address}:22), step check before deploying: "), line
    assert f"host key mismatch: pinned {hostkeys.fingerprint(old_key)} (runner-fleet:hosts[{index}].hostKey)" in line
    assert f"presented {hostkeys.fingerprint(new_key)}" in line
    assert line.endswith(f"re-pin: {command}."), line
    print(f"\nrebuilt host: refused after {elapsed:.1f} s with: {line}")

    # The operator's tool says the same, against the lab's real sshd.
    code, out = _host_keys(_stack_file(fleet, config, tmp_path))
    assert code == 1
    ours = [line for line in out.splitlines() if line.startswith(f"{DOWN} ({host.address}:22): ")]
    assert len(ours) == 1 and ": host key mismatch" in ours[0] and ours[0].endswith(command), out

    # Re-pin with the value the command sets, then deploy: re-installed, re-registered, one registration.
    config["runner-fleet:hosts"][index]["hostKey"] = shlex.split(command)[-1]
    fleet.lab.hosts[DOWN] = dataclasses.replace(host, host_key=new_key)
    report, elapsed = timed_run(fleet, config)
    assert report.ok, report.error
    ran = {e.name for e in report.executions if host.address in e.target}
    assert f"{DOWN_RUNNER}-install" in ran and f"{DOWN_RUNNER}-registration" in ran, ran
    registered = [r for r in fleet.double_state()["runners"] if r["name"] == DOWN_RUNNER]
    assert len(registered) == 1, registered
    assert registered[0]["status"] == "online"
    print(
        f"re-pinned: re-installed and re-registered in {elapsed:.0f} s "
        f"(registration {old_id} -> {registered[0]['id']}, one registration)"
    )
    assert _host_keys(_stack_file(fleet, config, tmp_path))[0] == 0
    again = fleet.run(STACK, PRODUCTION, config=config, log=lambda _line: None)
    assert again.ok and not again.executions, again.error or again.executions
