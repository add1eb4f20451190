"""The executor's engine rules, checked directly with a tiny Pulumi program and a fake transport.

The fake transport records every remote command (host, text, stdin, environment) instead of
using SSH, and refuses `env` requests like a stock sshd (AcceptEnv LANG LC_*). No root, no SSH.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.executor import RunResult, run_command, run_program
from lab.executor.engine import Secret, StateStore, parse_path, process_ignore_changes
from lab.executor.ssh import Connection, go_quote

PROGRAM = """
import pulumi
from pulumi_command import remote

cfg = pulumi.Config("runner-fleet")
spec = cfg.require_object("spec")
if spec.get("invalid"):
    raise ValueError("runner-fleet:spec is invalid: " + spec["invalid"])
key = cfg.require_secret("sshPrivateKey")
token = cfg.get_secret("token")


class Host(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("runner-fleet:test:Host", name, None, opts)
        self.register_outputs({})


hosts = {}
cmds = {}
for c in spec["commands"]:
    if c["host"] not in hosts:
        hosts[c["host"]] = Host(c["host"])
    stdin = c.get("stdin")
    if c.get("secretStdin"):
        stdin = token
    if c.get("stdinFrom"):
        stdin = cmds[c["stdinFrom"]].stdout
    if c.get("tokenStdin"):
        import pulumi_github as github
        stdin = github.get_actions_registration_token_output(repository="fleet").token
    cmds[c["name"]] = remote.Command(
        c["name"],
        connection=remote.ConnectionArgs(
            host=c.get("address", c["host"] + ".invalid"), user="deploy", private_key=key
        ),
        create=c.get("create"),
        update=c.get("update"),
        delete=c.get("delete"),
        stdin=stdin,
        triggers=c.get("triggers"),
        environment=c.get("environment"),
        add_previous_output_in_env=c.get("addPreviousOutputInEnv", False),
        opts=pulumi.ResourceOptions(
            parent=hosts[c["host"]],
            depends_on=[cmds[d] if d in cmds else hosts[d] for d in c.get("dependsOn", [])],
            delete_before_replace=c.get("deleteBeforeReplace", False),
            ignore_changes=c.get("ignoreChanges"),
            additional_secret_outputs=["stdout", "stderr"] if c.get("secretOutputs") else None,
            protect=c.get("protect"),
        ),
    )
pulumi.export("stdout", {name: cmd.stdout for name, cmd in cmds.items()})
pulumi.export("stack", pulumi.get_stack())
"""

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nFAKEKEYMATERIAL0123456789abcdef\n-----END OPENSSH PRIVATE KEY-----"
TOKEN = "GHTOKEN-0123456789abcdef"
SECRET_KEYS = {"runner-fleet:sshPrivateKey", "runner-fleet:token"}


@dataclass
class Run:
    """One remote command the fake transport received."""

    host: str
    command: str
    stdin: str | None
    env: dict[str, str]
    started: float = 0.0
    ended: float = 0.0


@dataclass
class FakeTransport:
    """Records commands; `fail` maps a command text to (exit status, output); `hook` runs inside each command."""

    runs: list[Run] = field(default_factory=list)
    fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    hook: Callable[[Run], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0
    max_active: int = 0
    sessions: int = 0

    def open_session(self, connection: Connection) -> FakeSession:
        with self.lock:
            self.sessions += 1
        return FakeSession(self, connection)

    def commands(self) -> list[str]:
        return [r.command for r in self.runs]


class FakeSession:
    def __init__(self, transport: FakeTransport, connection: Connection) -> None:
        self.transport = transport
        self.connection = connection
        self.env: dict[str, str] = {}

    def setenv(self, name: str, value: str) -> bool:
        if name == "LANG" or name.startswith("LC_"):
            self.env[name] = value
            return True
        return False

    def run(self, command: str, stdin: bytes | None) -> RunResult:
        t = self.transport
        run = Run(self.connection.host, command, stdin.decode() if stdin else None, dict(self.env), time.monotonic())
        with t.lock:
            t.runs.append(run)
            t.active += 1
            t.max_active = max(t.max_active, t.active)
        try:
            if t.hook:
                t.hook(run)
        finally:
            with t.lock:
                t.active -= 1
            run.ended = time.monotonic()
        if command in t.fail:
            status, output = t.fail[command]
            return RunResult(status, output.encode(), b"", output.encode())
        return RunResult(0, f"out:{command}\n\n".encode(), b"err\n")

    def close(self) -> None:
        pass


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "program"
    directory.mkdir()
    (directory / "__main__.py").write_text(PROGRAM)
    return directory


class Stack:
    """One stack of the synthetic program: its spec, state file and transport."""

    def __init__(self, project: Path, tmp_path: Path) -> None:
        self.project = project
        self.state = tmp_path / "state" / "lab.json"
        self.transport = FakeTransport()
        self.commands: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.extra: dict[str, Any] = {}

    def add(self, name: str, host: str = "a", **kwargs: Any) -> dict[str, Any]:
        spec = {"name": name, "host": host, "create": f"create {name}", "delete": f"delete {name}", **kwargs}
        self.commands.append(spec)
        return spec

    def get(self, name: str) -> dict[str, Any]:
        return next(c for c in self.commands if c["name"] == name)

    def remove(self, name: str) -> None:
        self.commands = [c for c in self.commands if c["name"] != name]

    def run(self, mode: str = "up", **kwargs: Any):
        self.transport.runs.clear()
        self.transport.sessions = 0
        config = {
            "runner-fleet:spec": {"commands": copy.deepcopy(self.commands), **self.extra},
            "runner-fleet:sshPrivateKey": PRIVATE_KEY,
            "runner-fleet:token": TOKEN,
        }
        return run_program(
            project_dir=self.project,
            stack="lab",
            config=config,
            secret_keys=SECRET_KEYS,
            state_path=self.state,
            mode=mode,
            log=self.lines.append,
            transport=self.transport,
            **kwargs,
        )

    def state_urns(self) -> list[str]:
        entries, _ = StateStore(self.state).load()
        return sorted(e.name for e in entries if e.type == "command:remote:Command")

    def entry(self, name: str):
        entries, _ = StateStore(self.state).load()
        return next(e for e in entries if e.name == name and not e.pending_delete)


@pytest.fixture
def stack(project: Path, tmp_path: Path) -> Stack:
    return Stack(project, tmp_path)


def test_unchanged_inputs_run_nothing_and_outputs_come_from_state(stack: Stack) -> None:
    stack.add("a1")
    stack.add("a2", dependsOn=["a1"])
    first = stack.run()
    assert first.ok, first.error
    assert first.commands_executed == 2
    assert first.outputs["stdout"] == {"a1": "out:create a1\n", "a2": "out:create a2\n"}

    second = stack.run()
    assert second.ok, second.error
    assert second.commands_executed == 0
    assert stack.transport.runs == []
    assert {o.op for o in second.operations} == {"same"}
    assert second.outputs == first.outputs


def test_stdout_loses_exactly_one_trailing_newline(stack: Stack) -> None:
    stack.add("a1")
    report = stack.run()
    op = next(o for o in report.operations if o.name == "a1")
    assert op.stdout == "out:create a1\n"  # the fake prints two newlines
    assert op.stderr == "err"


def test_triggers_change_replaces_create_before_delete(stack: Stack) -> None:
    stack.add("a1", triggers=["v1"])
    assert stack.run().ok
    stack.get("a1").update(triggers=["v2"], create="create a1 v2")
    report = stack.run()
    assert report.ok, report.error
    assert stack.transport.commands() == ["create a1 v2", "delete a1"]  # new create, then OLD delete text
    assert report.ops("replace") == ["a1"]
    assert stack.state_urns() == ["a1"]
    assert stack.entry("a1").inputs["triggers"] == ["v2"]


def test_triggers_change_with_delete_before_replace_deletes_first(stack: Stack) -> None:
    stack.add("a1", triggers=["v1"], deleteBeforeReplace=True)
    assert stack.run().ok
    stack.get("a1").update(triggers=["v2"], create="create a1 v2", delete="delete a1 v2")
    report = stack.run()
    assert report.ok, report.error
    assert stack.transport.commands() == ["delete a1", "create a1 v2"]


def test_change_of_create_runs_update_if_set_else_create(stack: Stack) -> None:
    stack.add("with-update", update="update with-update")
    stack.add("without-update")
    assert stack.run().ok
    stack.get("with-update")["create"] = "create with-update v2"
    stack.get("without-update")["create"] = "create without-update v2"
    report = stack.run()
    assert report.ok, report.error
    assert sorted(stack.transport.commands()) == ["create without-update v2", "update with-update"]
    assert sorted(report.ops("update")) == ["with-update", "without-update"]
    assert stack.transport.sessions == 2  # no delete ran


def test_stdin_change_is_an_update(stack: Stack) -> None:
    stack.add("a1", stdin="one")
    assert stack.run().ok
    stack.get("a1")["stdin"] = "two"
    report = stack.run()
    assert report.ops("update") == ["a1"]
    assert [(r.command, r.stdin) for r in stack.transport.runs] == [("create a1", "two")]


def test_host_change_is_an_update_on_the_new_host_and_never_deletes_on_the_old(stack: Stack) -> None:
    stack.add("a1", address="old.invalid")
    assert stack.run().ok
    stack.get("a1")["address"] = "new.invalid"
    report = stack.run()
    assert report.ops("update") == ["a1"]
    assert [(r.host, r.command) for r in stack.transport.runs] == [("new.invalid", "create a1")]


def test_ignore_changes_keeps_the_old_value_for_diff_update_and_state(stack: Stack) -> None:
    stack.add("a1", stdin="token-1", ignoreChanges=["stdin"])
    assert stack.run().ok
    stack.get("a1")["stdin"] = "token-2"
    report = stack.run()
    assert report.commands_executed == 0
    assert report.ops("same") == ["a1"]
    stack.get("a1")["create"] = "create a1 v2"
    report = stack.run()
    assert report.ops("update") == ["a1"]
    assert [(r.command, r.stdin) for r in stack.transport.runs] == [("create a1 v2", "token-1")]
    assert stack.entry("a1").inputs["stdin"] == "token-1"


def test_ignore_changes_path_rules() -> None:
    olds = {"environment": {"A": "1", "B": "2"}, "triggers": ["x", "y"]}
    news = {"environment": {"A": "9", "C": "3"}, "triggers": ["x", "z"]}
    result = process_ignore_changes(news, olds, ['environment["A"]', "environment.C", "triggers[1]"])
    assert result == {"environment": {"A": "1"}, "triggers": ["x", "y"]}
    assert parse_path('a.b[0]["c.d"]') == ["a", "b", 0, "c.d"]
    secret_old = {"stdin": Secret("old")}
    assert process_ignore_changes({"stdin": "new"}, secret_old, ["stdin"]) == {"stdin": Secret("old")}
    with pytest.raises(ValueError, match="cannot ignore changes"):
        process_ignore_changes({"triggers": ["a"]}, {"triggers": ["a", "b"]}, ["triggers[1]"])


def test_removed_resources_are_deleted_in_reverse_dependency_order(stack: Stack) -> None:
    stack.add("base")
    stack.add("middle", dependsOn=["base"])
    stack.add("top", dependsOn=["middle"])
    stack.add("reader", host="b", stdinFrom="base")  # input dependency only
    stack.add("keep", host="c")
    assert stack.run().ok
    stack.commands = [c for c in stack.commands if c["name"] == "keep"]
    report = stack.run()
    assert report.ok, report.error
    order = stack.transport.commands()
    assert sorted(order) == ["delete base", "delete middle", "delete reader", "delete top"]
    assert order.index("delete top") < order.index("delete middle") < order.index("delete base")
    assert order.index("delete reader") < order.index("delete base")
    assert stack.state_urns() == ["keep"]
    components = [o.name for o in report.operations if o.op == "delete" and o.type == "runner-fleet:test:Host"]
    assert sorted(components) == ["a", "b"]


def test_component_dependency_waits_for_all_its_children(stack: Stack) -> None:
    stack.transport.hook = lambda run: time.sleep(0.05)
    stack.add("a1")
    stack.add("a2")
    stack.add("b1", host="b", dependsOn=["a"])  # depends on component "a"
    assert stack.run().ok
    runs = {r.command: r for r in stack.transport.runs}
    assert runs["create b1"].started >= max(runs["create a1"].ended, runs["create a2"].ended)
    stack.commands = []
    assert stack.run().ok
    order = stack.transport.commands()
    assert order.index("delete b1") < order.index("delete a1")
    assert order.index("delete b1") < order.index("delete a2")


def test_failed_create_saves_nothing_and_the_next_run_creates_again(stack: Stack) -> None:
    stack.add("a1")
    stack.add("a2", dependsOn=["a1"])
    stack.add("a3", dependsOn=["a2"])
    stack.transport.fail["create a2"] = (3, "boom: disk full\n")
    report = stack.run()
    assert not report.ok
    assert 'a2 (command:remote:Command): Process exited with status 3: running "create a2":\nboom: disk full' in (
        report.error or ""
    )
    assert stack.transport.commands() == ["create a1", "create a2"]  # a3 never started
    assert stack.state_urns() == ["a1"]
    failed = next(o for o in report.operations if o.name == "a2")
    assert not failed.ok and failed.op == "create"

    del stack.transport.fail["create a2"]
    report = stack.run()
    assert report.ok, report.error
    assert stack.transport.commands() == ["create a2", "create a3"]
    assert stack.state_urns() == ["a1", "a2", "a3"]


def test_failed_update_keeps_the_old_state(stack: Stack) -> None:
    stack.add("a1")
    assert stack.run().ok
    stack.get("a1")["create"] = "create a1 v2"
    stack.transport.fail["create a1 v2"] = (1, "nope")
    assert not stack.run().ok
    assert stack.entry("a1").inputs["create"] == "create a1"
    del stack.transport.fail["create a1 v2"]
    report = stack.run()
    assert report.ops("update") == ["a1"]


def test_failure_stops_the_run_before_deletes(stack: Stack) -> None:
    stack.add("a1")
    stack.add("gone", host="b")
    assert stack.run().ok
    stack.remove("gone")
    stack.get("a1")["create"] = "create a1 v2"
    stack.transport.fail["create a1 v2"] = (1, "nope")
    report = stack.run()
    assert not report.ok
    assert "delete gone" not in stack.transport.commands()
    assert stack.state_urns() == ["a1", "gone"]


def test_failed_delete_keeps_the_resource_in_state(stack: Stack) -> None:
    stack.add("a1")
    stack.add("a2", host="b")
    assert stack.run().ok
    stack.remove("a1")
    stack.transport.fail["delete a1"] = (2, "busy")
    report = stack.run()
    assert not report.ok
    assert 'running "delete a1"' in (report.error or "")
    assert stack.state_urns() == ["a1", "a2"]
    del stack.transport.fail["delete a1"]
    report = stack.run()
    assert report.ok, report.error
    assert stack.transport.commands() == ["delete a1"]
    assert stack.state_urns() == ["a2"]


def test_environment_refused_by_stock_sshd_fails_with_the_provider_message(stack: Stack) -> None:
    stack.add("accepted", environment={"LANG": "C.UTF-8"})
    # After a failure no new step starts, so order them: the accepted one runs first.
    stack.add("refused", host="b", environment={"RUNNER_NAME": "x"}, dependsOn=["accepted"])
    report = stack.run()
    assert not report.ok
    assert 'could not set environment variable "RUNNER_NAME": ssh: setenv failed' in (report.error or "")
    assert [(r.command, r.env) for r in stack.transport.runs] == [("create accepted", {"LANG": "C.UTF-8"})]
    assert stack.state_urns() == ["accepted"]
    assert report.commands_executed == 1  # the refused one never reached exec
    assert [(e.name, e.ok, e.ran) for e in report.executions] == [("accepted", True, True), ("refused", False, False)]


def test_previous_output_env_is_sent_on_update_and_a_refusal_is_only_a_warning(stack: Stack) -> None:
    stack.add("a1", addPreviousOutputInEnv=True)
    assert stack.run().ok
    stack.get("a1")["create"] = "create a1 v2"
    report = stack.run()
    assert report.ok, report.error
    assert any("PULUMI_COMMAND_STDOUT" in line for line in stack.lines)


def test_preview_executes_nothing_and_writes_no_state(stack: Stack) -> None:
    stack.add("a1", triggers=["v1"])
    stack.add("a2")
    stack.add("a3")
    assert stack.run().ok
    before = stack.state.read_bytes()
    stack.get("a1")["triggers"] = ["v2"]
    stack.get("a2")["create"] = "create a2 v2"
    stack.remove("a3")
    stack.add("a4")
    report = stack.run("preview")
    assert report.ok, report.error
    assert stack.transport.runs == [] and stack.transport.sessions == 0
    assert report.ops("replace") == ["a1"]
    assert report.ops("update") == ["a2"]
    assert report.ops("create") == ["a4"]
    assert report.ops("delete") == ["a3"]
    assert all(o.planned for o in report.operations)
    assert stack.state.read_bytes() == before


def test_secrets_are_encrypted_in_the_state_file(stack: Stack) -> None:
    stack.add("a1", secretStdin=True, secretOutputs=True)
    report = stack.run()
    assert report.ok, report.error
    text = stack.state.read_text()
    for secret in (TOKEN, "FAKEKEYMATERIAL0123456789abcdef", "out:create a1"):
        assert secret not in text
    assert stat.S_IMODE(os.stat(stack.state).st_mode) == 0o600
    key_file = stack.state.with_name(stack.state.name + ".key")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    entry = stack.entry("a1")
    assert entry.inputs["stdin"] == Secret(TOKEN)
    assert isinstance(entry.inputs["connection"], Secret)
    assert entry.outputs["stdout"] == Secret("out:create a1\n")
    op = next(o for o in report.operations if o.name == "a1")
    assert op.stdout == "[secret]"
    assert stack.transport.runs[0].stdin == TOKEN
    assert "stdout" in report.secret_outputs
    printed = "\n".join(stack.lines)
    assert TOKEN not in printed and "FAKEKEYMATERIAL" not in printed
    with pytest.raises(RuntimeError, match="key file"):
        key_file.unlink()
        StateStore(stack.state).load()


def test_independent_resources_run_concurrently_and_dependents_wait(stack: Stack) -> None:
    barrier = threading.Barrier(3, timeout=20)

    def hook(run: Run) -> None:
        if run.command.startswith("create first"):
            barrier.wait()  # breaks (and fails the run) unless all three hosts run at once

    stack.transport.hook = hook
    for host in ("a", "b", "c"):
        stack.add(f"first-{host}", host=host)
        stack.add(f"second-{host}", host=host, dependsOn=[f"first-{host}"])
    report = stack.run()
    assert report.ok, report.error
    assert stack.transport.max_active >= 3
    runs = {r.command: r for r in stack.transport.runs}
    for host in ("a", "b", "c"):
        assert runs[f"create second-{host}"].started >= runs[f"create first-{host}"].ended


def test_program_error_runs_nothing(stack: Stack) -> None:
    stack.add("a1")
    stack.extra["invalid"] = "hosts must not be empty"
    report = stack.run()
    assert not report.ok
    assert "runner-fleet:spec is invalid: hosts must not be empty" in (report.error or "")
    assert report.commands_executed == 0
    assert not stack.state.exists()


def test_destroy_deletes_everything_in_reverse_dependency_order(stack: Stack) -> None:
    stack.add("base")
    stack.add("top", dependsOn=["base"])
    stack.add("other", host="b", delete=None)
    assert stack.run().ok
    report = stack.run("destroy")
    assert report.ok, report.error
    assert stack.transport.commands() == ["delete top", "delete base"]
    assert stack.state_urns() == []
    assert json.loads(stack.state.read_text())["resources"] == []


def test_protected_resource_is_not_deleted(stack: Stack) -> None:
    stack.add("a1", protect=True)
    assert stack.run().ok
    stack.remove("a1")
    report = stack.run()
    assert not report.ok
    assert "cannot be deleted\nbecause it is protected" in (report.error or "")
    assert stack.state_urns() == ["a1"]


def test_registration_token_invoke_is_new_every_run_and_overridable(stack: Stack) -> None:
    stack.add("a1", tokenStdin=True)
    assert stack.run().ok
    first = stack.transport.runs[0].stdin
    report = stack.run()
    assert report.ops("update") == ["a1"]  # a fresh token is a changed stdin
    assert stack.transport.runs[0].stdin != first
    token = "github:index/getActionsRegistrationToken:getActionsRegistrationToken"
    report = stack.run(invokes={token: lambda args: {"token": "FIXED", "expiresAt": 0, "repository": "fleet"}})
    assert report.invokes == [token]
    assert stack.transport.runs[0].stdin == "FIXED"
    assert stack.run(invokes={token: lambda args: {"token": "FIXED", "expiresAt": 0}}).commands_executed == 0


def test_runs_are_isolated_from_each_other(project: Path, tmp_path: Path) -> None:
    transport = FakeTransport()
    reports = []
    for stack_name in ("one", "two"):
        reports.append(
            run_program(
                project_dir=project,
                stack=stack_name,
                config={
                    "runner-fleet:spec": {"commands": [{"name": "x", "host": stack_name, "create": "c"}]},
                    "runner-fleet:sshPrivateKey": PRIVATE_KEY,
                },
                secret_keys={"runner-fleet:sshPrivateKey"},
                state_path=tmp_path / f"{stack_name}.json",
                log=lambda line: None,
                transport=transport,
            )
        )
    assert [r.outputs["stack"] for r in reports] == ["one", "two"]
    assert [r.host for r in transport.runs] == ["one.invalid", "two.invalid"]


def test_run_command_reproduces_provider_messages() -> None:
    transport = FakeTransport(fail={"exit 4": (4, "partial\n")})
    conn = Connection(host="h.invalid")
    with pytest.raises(Exception, match=r'^Process exited with status 4: running "exit 4":\npartial\n$'):
        run_command(transport, conn, "exit 4")
    with pytest.raises(Exception, match=r'could not set environment variable "K": ssh: setenv failed'):
        run_command(transport, conn, "true", environment={"K": "v"})
    assert run_command(transport, conn, "echo", previous_stdout="old") == ("out:echo\n", "err")
    assert go_quote('a "b"\n\tc\\') == '"a \\"b\\"\\n\\tc\\\\"'
