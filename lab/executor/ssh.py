"""The wire side of pulumi-command 1.2.1's `remote.Command`, reproduced with paramiko.

What is reproduced comes from the provider's Go source (provider/pkg/provider/remote/):

- `connection.go`: one fresh SSH client per command run (`Connection.Dial`), defaults user `root`,
  port 22, `dialErrorLimit` 10, `perDialTimeout` 15 s (TCP connect only, as in x/crypto/ssh);
  every dial error is retried with the SDK's `retry.Until` backoff (100 ms, x1.5, capped at 5 s)
  until `dials > dialErrorLimit` (so the limit allows limit+1 attempts), then fails with
  `after N failed attempts: <error>`; `hostKey` pins the server key (and restricts the host key
  algorithm to the pinned key's type); without it the server key is not checked at all;
  `proxy` is one jump host reached first, the target then over a `direct-tcpip` channel,
  with every error prefixed `proxy: `.
- No timeout after the TCP connect: `Connection.Dial` calls x/crypto's `ssh.Dial` (v0.48.0,
  ssh/client.go `Dial`: `net.DialTimeout(network, addr, config.Timeout)`, then `NewClientConn`
  with no deadline; `ClientConfig.Timeout` is "the maximum amount of time for the TCP connection
  to establish"), so the version exchange, key exchange and authentication wait as long as the
  server takes: a wedged sshd that accepted the connection hangs the command for ever. The same
  holds for `proxyClient.Dial` (the jump host's `direct-tcpip` channel), `NewSession` and
  `Setenv`. The only bound is the TCP keepalive Go's dialer turns on by default (net/dial.go:
  idle 15 s, interval 15 s, 9 probes), which ends a connection whose peer vanished (~150 s)
  but never one whose kernel still answers.
- `commandOutputs.go`: a new session per run; each `environment` entry is sent as an `env`
  request *with a reply* before `exec`, and a refusal fails the command with
  `could not set environment variable "K": ssh: setenv failed`; PULUMI_COMMAND_STDOUT/STDERR
  (previous outputs, only when non-empty) are sent the same way but a refusal only warns;
  stdin (only when non-empty) is written and the write side closed (an empty stdin still gets EOF);
  no PTY; a failing command raises `<ssh error>: running "<cmd>":\n<stdout+stderr>`; stdout and
  stderr lose exactly one trailing newline.

The module knows nothing about Pulumi state or diffs: `run_command` is the provider's `run()`,
`Transport` is how it reaches a host, so tests can swap in a fake transport.
"""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import paramiko
from paramiko.common import (
    MSG_CHANNEL_FAILURE,
    MSG_CHANNEL_SUCCESS,
    cMSG_CHANNEL_REQUEST,
)
from paramiko.message import Message

PULUMI_COMMAND_STDOUT = "PULUMI_COMMAND_STDOUT"
PULUMI_COMMAND_STDERR = "PULUMI_COMMAND_STDERR"

DIAL_ERROR_LIMIT_DEFAULT = 10
PER_DIAL_TIMEOUT_DEFAULT = 15
RETRY_DELAY = 0.1
RETRY_BACKOFF = 1.5
RETRY_MAX_DELAY = 5.0
# x/crypto waits without a deadline; paramiko wants a number (threading's largest wait).
NO_TIMEOUT = threading.TIMEOUT_MAX
# Go's net.Dialer default keepalive (net/dial.go defaultTCPKeepAliveIdle/Interval/Count).
GO_KEEPALIVE = (15, 15, 9)


class RemoteCommandError(Exception):
    """A remote command failed; the message is the provider's error text.

    `ran` tells whether the command was exec'd at all (False: dial, auth or setenv failed first).
    """

    def __init__(self, message: str, *, ran: bool = False) -> None:
        super().__init__(message)
        self.ran = ran


class DialError(Exception):
    """Connecting or authenticating failed for good (after the retries the provider makes)."""


class _DialAttemptError(Exception):
    """One dial attempt failed; retried by `_with_retry`."""


_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(text: str) -> str:
    """Go's `strconv.Quote` (what `%q` prints), so error messages read like the provider's."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


@dataclass(frozen=True)
class Endpoint:
    """`connectionBase` of the provider: one SSH server and how to log in to it."""

    host: str
    port: int = 22
    user: str = "root"
    private_key: str | None = field(default=None, repr=False)
    private_key_password: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    host_key: str | None = None
    dial_error_limit: int = DIAL_ERROR_LIMIT_DEFAULT
    per_dial_timeout: int = PER_DIAL_TIMEOUT_DEFAULT

    @property
    def address(self) -> str:
        """`net.JoinHostPort`: brackets around IPv6 literals."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def describe(self) -> str:
        """Where this endpoint logs in, for progress lines (never any secret)."""
        return f"{self.user}@{self.address}"


@dataclass(frozen=True)
class Connection(Endpoint):
    """`Connection` of the provider: the target endpoint plus an optional jump host."""

    proxy: Endpoint | None = None

    def describe(self) -> str:
        """Where this connection logs in, jump host included."""
        via = f" via {self.proxy.describe()}" if self.proxy else ""
        return super().describe() + via


def _endpoint_fields(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    host = value.get("host")
    if not isinstance(host, str) or not host:
        raise RemoteCommandError(f"{what}: missing required property 'host'")

    def opt_int(key: str, default: int) -> int:
        raw = value.get(key)
        return default if raw is None else int(raw)

    return {
        "host": host,
        "port": opt_int("port", 22),
        "user": value.get("user") or "root",
        "private_key": value.get("privateKey"),
        "private_key_password": value.get("privateKeyPassword"),
        "password": value.get("password"),
        "host_key": value.get("hostKey"),
        "dial_error_limit": opt_int("dialErrorLimit", DIAL_ERROR_LIMIT_DEFAULT),
        "per_dial_timeout": opt_int("perDialTimeout", PER_DIAL_TIMEOUT_DEFAULT),
    }


def connection_from_inputs(value: Mapping[str, Any]) -> Connection:
    """Build a `Connection` from the resource's plain (secret-unwrapped) `connection` input."""
    proxy_value = value.get("proxy")
    proxy = Endpoint(**_endpoint_fields(proxy_value, "proxy")) if proxy_value else None
    return Connection(**_endpoint_fields(value, "connection"), proxy=proxy)


@dataclass
class RunResult:
    """What one `session.Run` produced; `error` is Go's error text when it failed."""

    exit_status: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    combined: bytes | None = None
    error: str | None = None

    def failure(self) -> str | None:
        """The x/crypto/ssh error `session.Run` would return, or None on success."""
        if self.error is not None:
            return self.error
        if self.exit_status is None:
            return "wait: remote command exited without exit status or exit signal"
        if self.exit_status != 0:
            return f"Process exited with status {self.exit_status}"
        return None


class Session(Protocol):
    """One SSH session (channel) on a dialled client."""

    def setenv(self, name: str, value: str) -> bool:
        """Send an `env` request and wait for the server's answer (True = accepted)."""
        ...

    def run(self, command: str, stdin: bytes | None) -> RunResult:
        """`exec` the command, feed stdin then EOF, collect output and exit status."""
        ...

    def close(self) -> None:
        """Close the session and the client(s) dialled for it."""
        ...


class Transport(Protocol):
    """How `run_command` reaches a host: dial (with the provider's retries) and open a session."""

    def open_session(self, connection: Connection) -> Session:
        """Dial `connection` and open a session; raise DialError with the provider's text."""
        ...


def _trim_newline(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def run_command(
    transport: Transport,
    connection: Connection,
    command: str,
    *,
    stdin: str | None = None,
    environment: Mapping[str, str] | None = None,
    add_previous_output_in_env: bool | None = None,
    previous_stdout: str = "",
    previous_stderr: str = "",
    warn: Callable[[str], None] | None = None,
) -> tuple[str, str]:
    """`CommandOutputs.run` of the provider: returns (stdout, stderr) or raises RemoteCommandError."""
    try:
        session = transport.open_session(connection)
    except DialError as exc:
        raise RemoteCommandError(str(exc)) from None
    try:
        for key, value in (environment or {}).items():
            if not session.setenv(key, value):
                if warn:
                    warn(f"Unable to set '{key}': the SSH server does not accept it (AcceptEnv)")
                raise RemoteCommandError(f"could not set environment variable {go_quote(key)}: ssh: setenv failed")
        if add_previous_output_in_env is None or add_previous_output_in_env:
            for key, value in ((PULUMI_COMMAND_STDOUT, previous_stdout), (PULUMI_COMMAND_STDERR, previous_stderr)):
                if value and not session.setenv(key, value) and warn:
                    warn(f"Unable to set '{key}': the SSH server does not accept it (AcceptEnv)")
        result = session.run(command, stdin.encode() if stdin else None)
    finally:
        session.close()
    failure = result.failure()
    if failure is not None:
        combined = result.combined if result.combined is not None else result.stdout + result.stderr
        raise RemoteCommandError(
            f"{failure}: running {go_quote(command)}:\n{combined.decode('utf-8', errors='replace')}", ran=True
        )
    return _trim_newline(result.stdout), _trim_newline(result.stderr)


# --- paramiko transport -------------------------------------------------------------------------


def _reply_handler(ok: bool, default: Callable[[paramiko.Channel, Message], None]):
    def handle(chan: paramiko.Channel, m: Message) -> None:
        waiters = getattr(chan.transport, "_executor_reply_waiters", None)
        waiter = waiters.pop(chan.get_id(), None) if waiters is not None else None
        if waiter is None:
            default(chan, m)
            return
        waiter[1] = ok
        waiter[0].set()

    return handle


class _ExecTransport(paramiko.Transport):
    """paramiko transport that can wait for the answer to a channel `env` request.

    paramiko only sends `env` without asking for a reply, and closes a channel on any request
    failure; x/crypto's `Session.Setenv` asks for a reply and keeps the session. This transport
    routes the reply of an `env` request to its waiter and leaves the channel open.
    """

    _channel_handler_table = dict(paramiko.Transport._channel_handler_table)
    _channel_handler_table[MSG_CHANNEL_SUCCESS] = _reply_handler(True, paramiko.Channel._request_success)
    _channel_handler_table[MSG_CHANNEL_FAILURE] = _reply_handler(False, paramiko.Channel._request_failed)

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self._executor_reply_waiters: dict[int, list[Any]] = {}
        # paramiko arms a (non-daemon) timer for the key exchange; x/crypto has none.
        self.packetizer.start_handshake = lambda _timeout: None  # type: ignore[method-assign]


_HOST_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


def _parse_host_key(line: str) -> tuple[str, bytes]:
    """`ssh.ParseAuthorizedKey` reduced to what pinning needs: (key type, key blob)."""
    tokens = line.strip().split()
    for i, token in enumerate(tokens[:-1]):
        if token.startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                blob = base64.b64decode(tokens[i + 1], validate=True)
            except ValueError:
                break
            return token, blob
    raise DialError("failed to parse host key: ssh: no key found")


def _load_private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise DialError("ssh: this private key is passphrase protected") from None
        except (paramiko.SSHException, ValueError):
            continue
    raise DialError("ssh: no key found")


def _tcp_error(address: str, exc: OSError) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        reason = "i/o timeout"
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connect: connection refused"
    elif isinstance(exc, socket.gaierror):
        reason = f"lookup: {exc.strerror or exc}"
    else:
        reason = f"connect: {(exc.strerror or str(exc)).lower()}"
    return f"dial tcp {address}: {reason}"


class _SSHSession:
    """A paramiko channel standing in for an x/crypto `ssh.Session`."""

    def __init__(
        self, channel: paramiko.Channel, transports: list[paramiko.Transport], command_timeout: float | None
    ) -> None:
        self._channel = channel
        self._transports = transports
        self._command_timeout = command_timeout

    def setenv(self, name: str, value: str) -> bool:
        chan = self._channel
        transport = chan.get_transport()
        waiter: list[Any] = [threading.Event(), False]
        transport._executor_reply_waiters[chan.get_id()] = waiter  # type: ignore[attr-defined]
        m = Message()
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("env")
        m.add_boolean(True)
        m.add_string(name)
        m.add_string(value)
        transport._send_user_message(m)
        # x/crypto's Session.Setenv waits for the reply without a deadline.
        while not waiter[0].wait(0.1):
            if chan.closed or not transport.is_active():
                transport._executor_reply_waiters.pop(chan.get_id(), None)  # type: ignore[attr-defined]
                return False
        return bool(waiter[1])

    def run(self, command: str, stdin: bytes | None) -> RunResult:
        chan = self._channel
        try:
            chan.exec_command(command)
        except paramiko.SSHException:
            return RunResult(exit_status=None, error=f"ssh: command {command} failed")
        lock = threading.Lock()
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        combined: list[bytes] = []

        def pump(recv: Callable[[int], bytes], sink: list[bytes]) -> None:
            while True:
                try:
                    data = recv(32768)
                except (OSError, paramiko.SSHException):
                    return
                if not data:
                    return
                with lock:
                    sink.append(data)
                    combined.append(data)

        def feed() -> None:
            try:
                if stdin:
                    chan.sendall(stdin)
                chan.shutdown_write()
            except (OSError, paramiko.SSHException):
                pass

        threads = [
            threading.Thread(target=pump, args=(chan.recv, stdout), daemon=True),
            threading.Thread(target=pump, args=(chan.recv_stderr, stderr), daemon=True),
            threading.Thread(target=feed, daemon=True),
        ]
        for thread in threads:
            thread.start()
        deadline = None if self._command_timeout is None else time.monotonic() + self._command_timeout
        for thread in threads[:2]:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                chan.close()
                return RunResult(
                    exit_status=None,
                    stdout=b"".join(stdout),
                    stderr=b"".join(stderr),
                    combined=b"".join(combined),
                    error=f"executor: command still running after {self._command_timeout:g}s, channel closed",
                )
        status = chan.recv_exit_status()
        return RunResult(
            exit_status=None if status == -1 else status,
            stdout=b"".join(stdout),
            stderr=b"".join(stderr),
            combined=b"".join(combined),
        )

    def close(self) -> None:
        try:
            self._channel.close()
        finally:
            for transport in reversed(self._transports):
                transport.close()


def _with_retry(limit: int, attempt: Callable[[], Any], sleep: Callable[[float], None]) -> Any:
    """`dialWithRetry` + `retry.Until`: stop once `dials > limit` (limit -1 = unlimited)."""
    delay = RETRY_DELAY
    tries = 0
    while True:
        delay = min(delay, RETRY_MAX_DELAY)
        try:
            return attempt()
        except _DialAttemptError as exc:
            error = str(exc)
        dials = tries + 1
        if limit > -1 and dials > limit:
            raise DialError(f"after {tries} failed attempts: {error}")
        sleep(delay)
        delay *= RETRY_BACKOFF
        tries += 1


class SSHTransport:
    """The real transport: paramiko, one fresh client per command, as the provider dials.

    `command_timeout` is an executor safety net (the provider has none); None = wait forever.
    """

    def __init__(self, *, command_timeout: float | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.command_timeout = command_timeout
        self._sleep = sleep

    def open_session(self, connection: Connection) -> Session:
        transports = self._dial(connection)
        try:
            # x/crypto's Client.NewSession waits for the channel confirmation without a deadline.
            channel = transports[-1].open_session(timeout=NO_TIMEOUT)
        except (paramiko.SSHException, OSError) as exc:
            for transport in reversed(transports):
                transport.close()
            raise DialError(f"ssh: could not open session: {exc}") from None
        return _SSHSession(channel, transports, self.command_timeout)

    def _dial(self, connection: Connection) -> list[paramiko.Transport]:
        if connection.proxy is None:
            prepared = _Prepared(connection)
            return [_with_retry(connection.dial_error_limit, lambda: self._dial_direct(prepared), self._sleep)]
        prepared = _Prepared(connection)
        try:
            proxy_prepared = _Prepared(connection.proxy)
        except DialError as exc:
            raise DialError(f"proxy: {exc}") from None
        try:
            proxy = _with_retry(
                connection.proxy.dial_error_limit, lambda: self._dial_direct(proxy_prepared), self._sleep
            )
        except DialError as exc:
            raise DialError(f"proxy: {exc}") from None
        try:
            target = _with_retry(connection.dial_error_limit, lambda: self._dial_via(proxy, prepared), self._sleep)
        except DialError as exc:
            proxy.close()
            raise DialError(f"proxy: {exc}") from None
        return [proxy, target]

    def _dial_direct(self, prepared: _Prepared) -> paramiko.Transport:
        endpoint = prepared.endpoint
        timeout = endpoint.per_dial_timeout or None
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
        except OSError as exc:
            raise _DialAttemptError(_tcp_error(endpoint.address, exc)) from None
        sock.settimeout(None)
        _go_keepalive(sock)
        return _handshake(sock, prepared)

    def _dial_via(self, proxy: paramiko.Transport, prepared: _Prepared) -> paramiko.Transport:
        endpoint = prepared.endpoint
        try:
            channel = proxy.open_channel(
                "direct-tcpip",
                (endpoint.host, endpoint.port),
                ("127.0.0.1", 0),
                # connection.go `Dial`: `proxyClient.Dial("tcp", endpoint)` has no deadline
                # (perDialTimeout is the jump host's own TCP connect only).
                timeout=NO_TIMEOUT,
            )
        except paramiko.ChannelException as exc:
            raise _DialAttemptError(f"ssh: rejected: connect failed ({exc.text})") from None
        except (paramiko.SSHException, OSError) as exc:
            raise _DialAttemptError(f"ssh: rejected: connect failed ({exc})") from None
        return _handshake(channel, prepared)


class _Prepared:
    """`SSHConfig()`: parse keys once, before any dial (errors here are not retried)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.pinned = _parse_host_key(endpoint.host_key) if endpoint.host_key else None
        self.key = (
            _load_private_key(endpoint.private_key, endpoint.private_key_password) if endpoint.private_key else None
        )


def _go_keepalive(sock: socket.socket) -> None:
    """The TCP keepalive Go's `net.Dialer` sets on every connection it dials (net/dial.go)."""
    idle, interval, count = GO_KEEPALIVE
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _handshake(sock: Any, prepared: _Prepared) -> paramiko.Transport:
    """`ssh.NewClientConn` (x/crypto v0.48.0 ssh/client.go `clientHandshake`): version exchange,
    key exchange, host key check, authentication, none of them under a deadline."""
    endpoint = prepared.endpoint
    transport = _ExecTransport(sock)
    # paramiko bounds the banner (15 s) and authentication (30 s) by default (the key exchange
    # timer is off in _ExecTransport); x/crypto bounds none of them, so neither does the imitation.
    transport.banner_timeout = NO_TIMEOUT
    transport.auth_timeout = NO_TIMEOUT
    try:
        if prepared.pinned is not None:
            key_type = prepared.pinned[0]
            transport.get_security_options().key_types = _HOST_KEY_ALGORITHMS.get(key_type, (key_type,))
        try:
            transport.start_client(timeout=None)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            text = str(exc) or type(exc).__name__
            if "no acceptable host key" in text and prepared.pinned is not None:
                text = f"ssh: no common algorithm for host key; client offered: [{prepared.pinned[0]}]"
            raise _DialAttemptError(f"ssh: handshake failed: {text}") from None
        server_key = transport.get_remote_server_key()
        if prepared.pinned is not None and server_key.asbytes() != prepared.pinned[1]:
            raise _DialAttemptError("ssh: handshake failed: ssh: host key mismatch")
        attempted = ["none"]
        if prepared.key is not None:
            attempted.append("publickey")
            with contextlib.suppress(paramiko.AuthenticationException):
                transport.auth_publickey(endpoint.user, prepared.key)
        if not transport.is_authenticated() and endpoint.password is not None:
            attempted.append("password")
            try:
                transport.auth_password(endpoint.user, endpoint.password)
            except paramiko.AuthenticationException:
                attempted.append("keyboard-interactive")
                answer = endpoint.password
                with contextlib.suppress(paramiko.AuthenticationException):
                    transport.auth_interactive(endpoint.user, lambda _t, _i, prompts: [answer for _ in prompts])
        if not transport.is_authenticated():
            raise _DialAttemptError(
                f"ssh: handshake failed: ssh: unable to authenticate, attempted methods [{' '.join(attempted)}], "
                "no supported methods remain"
            )
        return transport
    except BaseException:
        transport.close()
        raise
