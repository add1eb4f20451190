"""The executor's `protect`, against what pulumi/pulumi's engine does (no root, no lab: fake transport).

Each rule below cites the engine source it follows (pkg/resource/deploy at pkg/v3.259, the newest
stored snapshot; the CLI here is v3.274.0, whose behaviour on component resources
tests/engine checks): step.go DeleteStep.Apply and deleteProtectedError, step_executor.go
cancelDueToError (a refused protected delete does not stop the deployment),
deployment_executor.go performPostSteps (what a refused resource depends on is not attempted),
step_generator.go (a replacement of a resource protected in state and program fails at once;
unprotecting and replacing in one run is allowed).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from lab.executor import run_program
from lab.executor.engine import StateStore, delete_protected_message, replace_protected_message
from tests.lab.test_executor_engine import PRIVATE_KEY, SECRET_KEYS, TOKEN, FakeTransport

PROGRAM = """
import pulumi
from pulumi_command import remote

spec = pulumi.Config("runner-fleet").require_object("spec")
key = pulumi.Config("runner-fleet").require_secret("sshPrivateKey")


class Host(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("runner-fleet:test:Host", name, None, opts)
        self.register_outputs({})


hosts = {name: Host(name, opts=pulumi.ResourceOptions(protect=p)) for name, p in spec["hosts"].items()}
cmds = {}
for c in spec["commands"]:
    cmds[c["name"]] = remote.Command(
        c["name"],
        connection=remote.ConnectionArgs(host=c["host"] + ".invalid", user="deploy", private_key=key),
        create=c.get("create"),
        delete=c.get("delete"),
        triggers=c.get("triggers"),
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(
            parent=hosts[c["host"]],
            depends_on=[cmds[d] for d in c.get("dependsOn", [])],
            protect=c.get("protect"),
        ),
    )
"""

URN = "urn:pulumi:lab::runner-fleet::runner-fleet:test:Host$command:remote:Command::"


class Stack:
    def __init__(self, tmp_path: Path) -> None:
        self.project = tmp_path / "program"
        self.project.mkdir()
        (self.project / "__main__.py").write_text(PROGRAM)
        self.state = tmp_path / "state" / "lab.json"
        self.transport = FakeTransport()
        self.hosts: dict[str, bool | None] = {}
        self.commands: list[dict[str, Any]] = []
        self.lines: list[str] = []

    def add(self, name: str, host: str, **kwargs: Any) -> None:
        self.hosts.setdefault(host, None)
        self.commands.append(
            {"name": name, "host": host, "create": f"create {name}", "delete": f"delete {name}", **kwargs}
        )

    def remove_host(self, host: str) -> None:
        self.hosts.pop(host)
        self.commands = [c for c in self.commands if c["host"] != host]

    def run(self, mode: str = "up", **kwargs: Any):
        self.transport.runs.clear()
        spec = {"hosts": dict(self.hosts), "commands": copy.deepcopy(self.commands)}
        return run_program(
            project_dir=self.project,
            stack="lab",
            config={"runner-fleet:spec": spec, "runner-fleet:sshPrivateKey": PRIVATE_KEY, "runner-fleet:token": TOKEN},
            secret_keys=SECRET_KEYS,
            state_path=self.state,
            mode=mode,
            log=self.lines.append,
            transport=self.transport,
            **kwargs,
        )

    def protect_in_state(self) -> dict[str, bool]:
        entries, _ = StateStore(self.state).load()
        return {e.name: e.protect for e in entries if e.type != "pulumi:pulumi:Stack"}


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    """Host a protected (b1 <- b2: b2 depends on b1) and host c unprotected."""
    s = Stack(tmp_path)
    s.add("b1", "b")
    s.add("b2", "b", dependsOn=["b1"])
    s.add("c1", "c")
    s.hosts["b"] = True
    report = s.run()
    assert report.ok, report.error
    return s


def test_children_inherit_the_components_protect_and_an_unset_one_is_false(stack):
    assert stack.protect_in_state() == {"b": True, "b1": True, "b2": True, "c": False, "c1": False}


def test_removing_a_protected_host_refuses_its_leaves_with_the_engines_message_and_goes_on_with_the_rest(stack):
    stack.remove_host("b")
    stack.remove_host("c")
    report = stack.run()
    assert not report.ok
    # c1 (unprotected, independent) is deleted; b2 is refused; b1 and host b, which b2 depends
    # on, are never attempted, so the engine names only b2.
    assert stack.transport.commands() == ["delete c1"]
    assert report.errors == [f"b2 (command:remote:Command): {delete_protected_message(URN + 'b2')}"]
    assert delete_protected_message(URN + "b2") == (
        f'resource "{URN}b2" cannot be deleted\n'
        "because it is protected. To unprotect the resource, either remove the `protect` flag from the resource "
        "in your Pulumi program and run `pulumi up`, or use the command:\n"
        f"`pulumi state unprotect '{URN}b2'`"
    )
    assert stack.protect_in_state() == {"b": True, "b1": True, "b2": True}


def test_every_protected_leaf_is_reported_in_one_run_in_a_preview_too(tmp_path):
    s = Stack(tmp_path)
    s.add("x1", "x")
    s.add("x2", "x")
    s.hosts["x"] = True
    assert s.run().ok
    s.remove_host("x")
    s.hosts["y"] = None
    for mode in ("preview", "up"):
        report = s.run(mode)
        assert not report.ok
        assert sorted(e.split(" ", 1)[0] for e in report.errors) == ["x1", "x2"]
        assert s.transport.commands() == []
    assert set(s.protect_in_state()) >= {"x", "x1", "x2"}


def test_the_documented_step_unprotects_without_running_anything_then_the_removal_retires(stack):
    stack.hosts["b"] = False
    report = stack.run()
    assert report.ok, report.error
    assert report.commands_executed == 0
    assert stack.protect_in_state()["b2"] is False
    stack.remove_host("b")
    report = stack.run()
    assert report.ok, report.error
    assert stack.transport.commands() == ["delete b2", "delete b1"]


def test_preview_first_refuses_before_any_update_runs_and_skip_preview_updates_first(stack):
    stack.remove_host("b")
    stack.commands[0]["create"] = "create c1 v2"  # an update elsewhere in the same run
    report = stack.run(preview_first=True)  # `pulumi up`, as the CLI runs it by default
    assert not report.ok and report.error.startswith("preview failed: b2 ")
    assert stack.transport.commands() == []
    report = stack.run()  # `pulumi up --skip-preview` (Automation API, pulumi/actions)
    assert not report.ok
    assert stack.transport.commands() == ["create c1 v2"]
    assert "b2" in stack.protect_in_state()


def test_replacing_a_protected_resource_fails_at_once_and_runs_nothing(stack):
    stack.commands[0]["triggers"] = ["moved"]
    report = stack.run()
    assert not report.ok
    assert report.error == f"b1 (command:remote:Command): {replace_protected_message(URN + 'b1')}"
    assert "create b1" not in stack.transport.commands() and "delete b1" not in stack.transport.commands()
    preview = stack.run("preview")
    assert not preview.ok and "unable to replace resource" in preview.error
    assert [o.name for o in preview.operations if o.planned and o.op == "replace" and not o.ok] == ["b1"]


def test_unprotecting_and_replacing_in_one_run_is_allowed(stack):
    stack.hosts["b"] = False
    stack.commands[0]["triggers"] = ["moved"]
    report = stack.run()
    assert report.ok, report.error
    assert "create b1" in stack.transport.commands() and "delete b1" in stack.transport.commands()


def test_destroy_refuses_the_protected_and_deletes_the_rest(stack):
    report = stack.run("destroy")
    assert not report.ok
    assert stack.transport.commands() == ["delete c1"]
    assert [e.split(" ", 1)[0] for e in report.errors] == ["b2"]
    assert stack.protect_in_state() == {"b": True, "b1": True, "b2": True}
