"""The executor's SSH transport against a real OpenSSH server started for the test on 127.0.0.1.

The server is stock-like where it matters (AcceptEnv LANG LC_* only, public key auth, TCP
forwarding allowed so it can be its own jump host); it runs in the foreground with a temporary
host key and authorized key and is stopped by its PID. No lab host is needed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.executor import Connection, Endpoint, SSHTransport, run_command, run_program
from lab.executor.engine import StateStore
from lab.executor.ssh import RemoteCommandError
from tests.conftest import IN_CI

pytestmark = pytest.mark.lab

SSHD = "/usr/sbin/sshd"


@dataclass
class LocalSshd:
    port: int
    host_key: str  # authorized_keys-style line of the server key
    private_key: str  # client key text
    workdir: Path

    def connection(self, **overrides: object) -> Connection:
        fields: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": "root",
            "private_key": self.private_key,
            "host_key": self.host_key,
            "dial_error_limit": 1,
        }
        fields.update(overrides)
        return Connection(**fields)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "executor-test", "-f", str(path)],
        check=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSshd]:
    if (os.geteuid() != 0 or not os.path.exists(SSHD)) and not IN_CI:
        pytest.skip("needs root and openssh-server (/usr/sbin/sshd)")
    work = tmp_path_factory.mktemp("sshd")
    _keygen(work / "host_ed25519")
    _keygen(work / "client")
    shutil.copy(work / "client.pub", work / "authorized_keys")
    os.chmod(work / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    port = _free_port()
    config = work / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {work / 'host_ed25519'}",
                f"PidFile {work / 'sshd.pid'}",
                f"AuthorizedKeysFile {work / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "AllowTcpForwarding yes",
                "AcceptEnv LANG LC_*",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    log = work / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {log.read_text() if log.exists() else ''}") from None
                time.sleep(0.05)
        host_key = " ".join((work / "host_ed25519.pub").read_text().split()[:2])
        yield LocalSshd(port, host_key, (work / "client").read_text(), work)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_exec_with_stdin_no_pty_and_one_trailing_newline_trimmed(sshd: LocalSshd) -> None:
    stdout, stderr = run_command(
        SSHTransport(),
        sshd.connection(),
        'cat; test -t 0 || echo "no pty"; echo; echo done >&2',
        stdin="line one\nline two\n",
    )
    assert stdout == "line one\nline two\nno pty\n"
    assert stderr == "done"


def test_empty_stdin_still_gets_eof(sshd: LocalSshd) -> None:
    assert run_command(SSHTransport(command_timeout=20), sshd.connection(), "cat; echo end") == ("end", "")


def test_environment_outside_acceptenv_fails_with_the_provider_message(sshd: LocalSshd) -> None:
    with pytest.raises(RemoteCommandError) as excinfo:
        run_command(SSHTransport(), sshd.connection(), "touch should-not-run", environment={"RUNNER_TOKEN": "x"})
    assert str(excinfo.value) == 'could not set environment variable "RUNNER_TOKEN": ssh: setenv failed'
    stdout, _ = run_command(SSHTransport(), sshd.connection(), 'echo "$LANG"', environment={"LANG": "C.UTF-8"})
    assert stdout == "C.UTF-8"


def test_previous_output_env_is_refused_quietly(sshd: LocalSshd) -> None:
    warnings: list[str] = []
    stdout, _ = run_command(
        SSHTransport(),
        sshd.connection(),
        'echo "${PULUMI_COMMAND_STDOUT-unset}"',
        previous_stdout="old output",
        warn=warnings.append,
    )
    assert stdout == "unset"
    assert any("PULUMI_COMMAND_STDOUT" in w for w in warnings)


def test_non_zero_exit_fails_with_command_and_output(sshd: LocalSshd) -> None:
    command = "echo to-stdout; echo to-stderr >&2; exit 7"
    with pytest.raises(RemoteCommandError) as excinfo:
        run_command(SSHTransport(), sshd.connection(), command)
    message = str(excinfo.value)
    assert message.startswith(f'Process exited with status 7: running "{command}":\n')
    assert "to-stdout\n" in message and "to-stderr\n" in message


def test_wrong_pinned_host_key_fails_the_dial_after_the_retries(sshd: LocalSshd, tmp_path: Path) -> None:
    _keygen(tmp_path / "other")
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    started = time.monotonic()
    with pytest.raises(RemoteCommandError) as excinfo:
        run_command(SSHTransport(), sshd.connection(host_key=other, dial_error_limit=2), "true")
    assert str(excinfo.value) == "after 2 failed attempts: ssh: handshake failed: ssh: host key mismatch"
    assert time.monotonic() - started >= 0.25  # backoff 0.1 s then 0.15 s between the three dials


def test_no_host_key_means_no_check(sshd: LocalSshd) -> None:
    assert run_command(SSHTransport(), sshd.connection(host_key=None), "echo ok") == ("ok", "")


def test_refused_port_reports_the_dial_error(sshd: LocalSshd) -> None:
    with pytest.raises(
        RemoteCommandError,
        match=r"^after 0 failed attempts: dial tcp 127\.0\.0\.1:\d+: connect: "
        r"connection refused$",
    ):
        run_command(SSHTransport(), sshd.connection(port=_free_port(), dial_error_limit=0), "true")


def test_jump_host_via_proxy_reaches_the_same_sshd(sshd: LocalSshd) -> None:
    proxy = Endpoint(
        host="127.0.0.1",
        port=sshd.port,
        user="root",
        private_key=sshd.private_key,
        host_key=sshd.host_key,
        dial_error_limit=1,
    )
    stdout, _ = run_command(SSHTransport(), sshd.connection(proxy=proxy), 'echo "via ${SSH_CONNECTION%% *}"')
    assert stdout == "via 127.0.0.1"
    _keygen(sshd.workdir / "wrong-proxy")
    wrong = " ".join((sshd.workdir / "wrong-proxy.pub").read_text().split()[:2])
    bad_proxy = Endpoint(
        host="127.0.0.1", port=sshd.port, user="root", private_key=sshd.private_key, host_key=wrong, dial_error_limit=0
    )
    with pytest.raises(
        RemoteCommandError,
        match=r"^proxy: after 0 failed attempts: ssh: handshake failed: "
        r"ssh: host key mismatch$",
    ):
        run_command(SSHTransport(), sshd.connection(proxy=bad_proxy), "true")


PROGRAM = """
import pulumi
from pulumi_command import remote

cfg = pulumi.Config("runner-fleet")
target = cfg.require_object("target")
marker = cfg.require("marker")
conn = remote.ConnectionArgs(host="127.0.0.1", port=target["port"], user="root",
                             host_key=target["hostKey"], private_key=cfg.require_secret("sshPrivateKey"))
remote.Command(
    "marker",
    connection=conn,
    create=f"cat > {marker}",
    delete=f"rm -f {marker}",
    stdin=cfg.require_secret("payload"),
    add_previous_output_in_env=False,
    opts=pulumi.ResourceOptions(additional_secret_outputs=["stdout", "stderr"]),
)
"""


def test_run_program_creates_updates_and_deletes_over_ssh(sshd: LocalSshd, tmp_path: Path) -> None:
    project = tmp_path / "program"
    project.mkdir()
    (project / "__main__.py").write_text(PROGRAM)
    marker = tmp_path / "marker"
    state = tmp_path / "state.json"
    lines: list[str] = []

    def up(payload: str, mode: str = "up"):
        return run_program(
            project_dir=project,
            stack="local",
            config={
                "runner-fleet:target": {"port": sshd.port, "hostKey": sshd.host_key},
                "runner-fleet:marker": str(marker),
                "runner-fleet:sshPrivateKey": sshd.private_key,
                "runner-fleet:payload": payload,
            },
            secret_keys={"runner-fleet:sshPrivateKey", "runner-fleet:payload"},
            state_path=state,
            mode=mode,
            log=lines.append,
        )

    first = up("secret-payload-1")
    assert first.ok, first.error
    assert marker.read_text() == "secret-payload-1"
    assert up("secret-payload-1").commands_executed == 0
    second = up("secret-payload-2")
    assert second.ops("update") == ["marker"]
    assert marker.read_text() == "secret-payload-2"
    text = state.read_text()
    assert "secret-payload-2" not in text and "PRIVATE KEY" not in text
    gone = up("secret-payload-2", mode="destroy")
    assert gone.ok, gone.error
    assert not marker.exists()
    assert StateStore(state).load()[0] == []
    printed = "\n".join(lines)
    assert "secret-payload" not in printed and "PRIVATE KEY" not in printed
