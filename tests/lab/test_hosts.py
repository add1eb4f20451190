"""The lab hosts are real machines, and `down` leaves nothing behind.

Two runner hosts and one monitoring host come up from the cached image; everything is checked
the way the program under test sees a host: over SSH as deploy, with the host key pinned.
Needs root (systemd-nspawn, overlay mounts, a bridge).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lab.hosts import BRIDGE, BRIDGE_ADDRESS, OWNER, HostSpec, Lab, LabHost

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
RUNNERS = ("runner-a", "runner-b")
MONITOR = "monitor"
ALL = (*RUNNERS, MONITOR)


def _check(lab: Lab, host: str, command: str, timeout: float = 60.0) -> str:
    rc, out, err = lab.run_on(host, command, timeout=timeout)
    assert rc == 0, f"{host}: `{command}` exited {rc}\nstdout: {out}\nstderr: {err}"
    return out.strip()


def _running(pid: int) -> bool:
    """Exists and is not a zombie (a zombie is a process that has already ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _random_host_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def _ssh_works(lab: Lab, host: str) -> bool:
    try:
        return lab.run_on(host, "true", timeout=5.0)[0] == 0
    except (OSError, EOFError, paramiko.SSHException):
        return False


def _assert_nothing_left(state_dir: Path, names: list[str], pids: list[int]) -> None:
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    ours = [m for m in mounts if f" {OWNER}-" in m or str(state_dir) in m]
    assert not ours, f"mounts left: {ours}"
    assert not Path(f"/sys/class/net/{BRIDGE}").exists(), "bridge left"
    veths = [p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("vb-")]
    assert not veths, f"host-side veths left: {veths}"
    alive = [pid for pid in pids if _running(pid)]
    assert not alive, f"processes left: {alive}"
    cgroup = Path("/sys/fs/cgroup")
    scopes = [*cgroup.glob(f"*/machine.slice/{OWNER}-*"), *cgroup.glob(f"machine.slice/{OWNER}-*")]
    assert not scopes, f"cgroups left: {scopes}"
    for name in names:
        assert not Path(f"/run/systemd/nspawn/propagate/{name}").exists(), f"nspawn propagate dir of {name} left"
    left = [p.name for p in state_dir.iterdir()] if state_dir.exists() else []
    assert not left, f"state files left in {state_dir}: {left}"


@pytest.fixture(scope="class")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    state_dir = tmp_path_factory.mktemp("lab-state")
    specs = [HostSpec(name) for name in RUNNERS] + [HostSpec(MONITOR, monitoring=True)]
    lab = Lab.up(specs, state_dir=state_dir)
    try:
        print(f"\nlab timings: {json.dumps(lab.timings)}")
        yield lab
    finally:
        lab.down()


class TestHosts:
    """Three hosts up at once; the last test tears them down and checks nothing is left."""

    def test_state_describes_every_host(self, lab: Lab) -> None:
        state = json.loads((lab.state_dir / "lab.json").read_text())
        assert state["bridge"] == {"name": BRIDGE, "address": BRIDGE_ADDRESS, "prefix_length": 24}
        assert lab.bridge_address == BRIDGE_ADDRESS
        assert list(state["hosts"]) == list(ALL)
        for index, name in enumerate(ALL):
            entry = state["hosts"][name]
            assert entry["address"] == f"10.249.31.{11 + index}"
            assert (entry["ssh_port"], entry["user"]) == (22, "deploy")
            assert re.fullmatch(r"ssh-ed25519 [A-Za-z0-9+/]+=*", entry["host_key"]), entry["host_key"]
            assert entry["monitoring"] is (name == MONITOR)
            assert _running(entry["launcher_pid"]) and _running(entry["init_pid"])
            assert Path(entry["overlay"]["merged"]).is_mount()
        assert (lab.private_key_path.stat().st_mode & 0o777) == 0o600
        assert lab.private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        loaded = Lab.load(lab.state_dir)
        assert loaded.hosts == lab.hosts
        assert lab.hosts[MONITOR] == LabHost.from_json(state["hosts"][MONITOR])

    def test_systemd_is_pid1_and_the_system_is_running(self, lab: Lab) -> None:
        for name in ALL:
            assert _check(lab, name, "cat /proc/1/comm") == "systemd"
            assert _check(lab, name, "sudo -n readlink -f /proc/1/exe") == "/usr/lib/systemd/systemd"
            rc, out, _ = lab.run_on(name, "timeout 60 systemctl is-system-running --wait", timeout=90)
            failed = _check(lab, name, "systemctl --failed --no-legend --plain")
            assert out.strip() == "running", f"{name} is {out.strip()!r} (rc {rc}); failed units:\n{failed}"

    def test_each_host_has_its_own_identity(self, lab: Lab) -> None:
        machine_ids, host_keys = set(), set()
        for name, host in lab.hosts.items():
            assert _check(lab, name, "hostname") == name
            assert _check(lab, name, "hostnamectl hostname 2>/dev/null || cat /etc/hostname") == name
            machine_id = _check(lab, name, "cat /etc/machine-id")
            assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
            assert _check(lab, name, "cat /var/lib/dbus/machine-id") == machine_id
            machine_ids.add(machine_id)
            on_disk = _check(lab, name, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
            assert " ".join(on_disk) == host.host_key
            with lab.connect(name) as client:
                presented = client.get_transport().get_remote_server_key()
                assert f"{presented.get_name()} {presented.get_base64()}" == host.host_key
            host_keys.add(host.host_key)
        assert len(machine_ids) == len(host_keys) == len(ALL)

    def test_hosts_reach_each_other_and_the_bridge(self, lab: Lab) -> None:
        for name, host in lab.hosts.items():
            assert f"inet {host.address}/24" in _check(lab, name, "ip -4 -o addr show dev host0")
            assert "default" not in _check(lab, name, "ip route"), "hosts must have no route out"
            for other in [BRIDGE_ADDRESS, *(h.address for h in lab.hosts.values() if h.name != name)]:
                _check(lab, name, f"ping -c 1 -W 2 {other} >/dev/null")
                if other != BRIDGE_ADDRESS:
                    _check(lab, name, f"timeout 3 bash -c '</dev/tcp/{other}/22'")

    def test_deploy_has_passwordless_sudo_and_bash(self, lab: Lab) -> None:
        for name in ALL:
            assert _check(lab, name, "id -un") == "deploy"
            assert _check(lab, name, "sudo -n id -u") == "0"
            assert _check(lab, name, "getent passwd deploy").endswith(":/bin/bash")
            # Script over stdin, the way the program runs its remote commands.
            rc, out, _ = lab.run_on(name, "sudo -n /bin/bash -s", stdin='echo "$((6 * 7)) $(id -u)"\n')
            assert (rc, out) == (0, "42 0\n")

    def test_sshd_drops_environment_outside_accept_env(self, lab: Lab) -> None:
        command = 'printf "%s|%s" "${LC_RFLAB_PROBE-unset}" "${RFLAB_PROBE-unset}"'
        with lab.connect(RUNNERS[0]) as client:
            channel = client.get_transport().open_session()
            channel.update_environment({"LC_RFLAB_PROBE": "accepted", "RFLAB_PROBE": "leaked"})
            channel.exec_command(command)
            out = channel.makefile("rb").read().decode()
            assert channel.recv_exit_status() == 0
            # LC_* is in the stock AcceptEnv, so it proves the request was sent at all.
            assert out == "accepted|unset"
            _, stdout, _ = client.exec_command(command, environment={"RFLAB_PROBE": "leaked"})
            assert stdout.read().decode() == "unset|unset"

    def test_prometheus_runs_only_on_the_monitoring_host(self, lab: Lab) -> None:
        def ready() -> bool:
            rc, out, _ = lab.run_on(MONITOR, "curl -s --max-time 2 http://localhost:9090/-/ready")
            return rc == 0 and "Ready" in out

        _wait_for(ready, 60, "prometheus on the monitoring host")
        assert _check(lab, MONITOR, "systemctl is-enabled prometheus") == "enabled"
        assert _check(lab, MONITOR, "systemctl is-active prometheus") == "active"
        assert "ii" in _check(lab, MONITOR, "dpkg -l prometheus | tail -n 1")
        for name in RUNNERS:
            rc, out, _ = lab.run_on(name, "systemctl is-active prometheus")
            assert (rc, out.strip()) != (0, "active"), f"prometheus runs on {name}"
            assert lab.run_on(name, "dpkg-query -W prometheus")[0] != 0, f"prometheus installed on {name}"
            assert lab.run_on(name, "curl -s --max-time 2 http://localhost:9090/-/ready")[0] != 0
        for name in ALL:
            rc, out, _ = lab.run_on(name, "dpkg-query -W -f='${Status}' prometheus-node-exporter")
            assert "install ok installed" not in out, f"prometheus-node-exporter installed on {name}"

    def test_a_wrong_or_unknown_host_key_is_rejected(self, lab: Lab) -> None:
        target = lab.hosts[RUNNERS[0]]
        for wrong in (lab.hosts[RUNNERS[1]].host_key, _random_host_key()):
            with pytest.raises(paramiko.BadHostKeyException):
                lab.connect(target.name, host_key=wrong)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            client.connect(
                target.address,
                username="deploy",
                pkey=paramiko.Ed25519Key.from_private_key_file(str(lab.private_key_path)),
                allow_agent=False,
                look_for_keys=False,
                timeout=10,
            )
        client.close()

    def test_a_rebooting_host_comes_back(self, lab: Lab) -> None:
        name = RUNNERS[1]
        host = lab.hosts[name]
        boot_id = _check(lab, name, "cat /proc/sys/kernel/random/boot_id")
        old_init = lab.init_pid(name)
        started = time.monotonic()
        # The reboot may cut the session before it reports back.
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            lab.run_on(name, "sudo -n systemctl reboot", timeout=10)
        _wait_for(
            lambda: _ssh_works(lab, name) and _check(lab, name, "cat /proc/sys/kernel/random/boot_id") != boot_id,
            60,
            f"{name} to come back after reboot",
        )
        print(f"\n{name} rebooted to SSH in {time.monotonic() - started:.2f} s")
        assert _running(host.launcher_pid), "the launcher must survive the host's reboot"
        assert lab.init_pid(name) not in (None, old_init)
        assert _check(lab, name, "timeout 60 systemctl is-system-running --wait", timeout=90) == "running"

    def test_memory_per_host_is_reported(self, lab: Lab) -> None:
        figures = {name: lab.memory_bytes(name) for name in ALL}
        print("\nmemory (PSS) per host: " + ", ".join(f"{n} {b / 2**20:.0f} MB" for n, b in figures.items()))
        for name, used in figures.items():
            assert 5 * 2**20 < used < 1024 * 2**20, f"{name}: {used} bytes"

    def test_down_leaves_nothing(self, lab: Lab) -> None:
        pids = [p for h in lab.hosts.values() for p in (h.launcher_pid, lab.init_pid(h)) if p]
        seconds = lab.down()
        print(f"\nteardown of {len(ALL)} hosts: {seconds:.2f} s")
        _assert_nothing_left(lab.state_dir, list(ALL), pids)
        assert lab.down() >= 0  # idempotent
        _assert_nothing_left(lab.state_dir, list(ALL), pids)


def _cli(state_dir: Path, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.hosts", "--state-dir", str(state_dir), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class TestDownFromState:
    """`down` works from the state directory alone: after the Python side is gone or was killed."""

    def test_down_when_nothing_is_up(self, tmp_path: Path) -> None:
        assert _cli(tmp_path, "down").returncode == 0
        assert _cli(tmp_path, "status").returncode == 3

    def test_hosts_outlive_up_and_are_usable_and_removable_from_state(self, tmp_path: Path) -> None:
        pids: list[int] = []
        result = _cli(tmp_path, "up", "--host", "solo-a", "--host", "solo-b")
        try:
            assert result.returncode == 0, result.stderr
            lab = Lab.load(tmp_path)
            assert _check(lab, "solo-b", "hostname") == "solo-b"
            status = _cli(tmp_path, "status")
            assert status.returncode == 0, status.stdout + status.stderr
            pids += [p for h in lab.hosts.values() for p in (h.launcher_pid, h.init_pid) if p]
            assert all(_running(p) for p in pids)
        finally:
            down = _cli(tmp_path, "down")
        assert down.returncode == 0, down.stderr
        _assert_nothing_left(tmp_path, ["solo-a", "solo-b"], pids)

    def test_down_after_up_was_killed_half_way(self, tmp_path: Path) -> None:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lab.hosts",
                "--state-dir",
                str(tmp_path),
                "up",
                "--host",
                "crash-a",
                "--host",
                "crash-b",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        launchers: list[int] = []

        def launched() -> bool:
            try:
                state = json.loads((tmp_path / "lab.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                return False
            launchers[:] = [h["launcher_pid"] for h in state["hosts"].values() if h.get("launcher_pid")]
            return bool(launchers)

        try:
            _wait_for(launched, 60, "the first host to be launched")
        finally:
            up.send_signal(signal.SIGKILL)
            up.wait(10)
        # The Python side is gone; the hosts it started are not.
        assert Path(f"/sys/class/net/{BRIDGE}").exists()
        assert any(_running(pid) for pid in launchers)
        down = _cli(tmp_path, "down")
        assert down.returncode == 0, down.stderr
        _assert_nothing_left(tmp_path, ["crash-a", "crash-b"], launchers)
        assert _cli(tmp_path, "down").returncode == 0
