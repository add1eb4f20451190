"""Production protection under the real `pulumi` CLI: the project's own config keys and protect
decision (fleet.config.load, fleet.program.protected) on a tree of component resources shaped
like the program's (RunnerHost > runner user, runner service): components need no provider, so
the real engine plans, refuses and deletes them here, which it cannot do for remote.Command."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml
from pulumi import automation as auto

from lab.real_engine import RealStack
from tests.conftest import IN_CI, SENTINEL_KEY, SENTINEL_TOKEN, fake_host_key
from tools import engine

pytestmark = [
    pytest.mark.skipif(
        engine.find("cli") is None and not IN_CI, reason="real Pulumi CLI not built (python -m tools.engine build cli)"
    ),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

HOSTS = [
    {
        "name": name,
        "address": address,
        "hostKey": fake_host_key(name),
        "role": role,
        "exporterPort": 9102,
        "runners": [{"name": name, "labels": ["self-hosted", "Linux", "X64", "production", role]}],
    }
    for name, address, role in (("loop-a", "10.249.31.251", "primary"), ("loop-b", "10.249.31.252", "secondary"))
]
CONFIG = {
    "github": {"repository": "example-org/fleet-lab", "checkAccess": False},
    "prometheus": {"address": "10.249.31.250", "hostKey": fake_host_key("prom")},
}


def fleet_shaped_program() -> None:
    from fleet import config as fleet_config
    from fleet.program import protected, unprotected_hosts_notice

    fleet = fleet_config.load()
    for line in unprotected_hosts_notice(fleet):
        pulumi.log.warn(line)
    for host in fleet.hosts:
        root = pulumi.ComponentResource(
            "fleet:machines:RunnerHost", host.name, None, protected(fleet.host_protected(host))
        )
        user = pulumi.ComponentResource(
            "fleet:test:Step", f"{host.name}-runner-user", None, pulumi.ResourceOptions(parent=root)
        )
        for runner in host.runners:
            pulumi.ComponentResource(
                "fleet:test:Step",
                f"{runner.name}-service",
                None,
                pulumi.ResourceOptions(parent=root, depends_on=[user]),
            )


def stack_with(tmp_path: Path, hosts: list[dict]) -> RealStack:
    work = tmp_path / "work"
    if not work.exists():
        work.mkdir()
        config = {f"runner-fleet:{k}": v for k, v in CONFIG.items()}
        (work / "Pulumi.production.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    stack = RealStack(work, "production", program=fleet_shaped_program)
    stack.set("githubToken", SENTINEL_TOKEN, secret=True)
    stack.set("sshPrivateKey", SENTINEL_KEY, secret=True)
    stack.set_object("hosts", hosts)
    return stack


def protect_flags(stack: RealStack) -> dict[str, bool]:
    return {
        r["urn"].rsplit("::", 1)[-1]: bool(r.get("protect"))
        for r in stack.export().get("resources", [])
        if r["type"] != "pulumi:pulumi:Stack"
    }


def test_the_real_engine_refuses_to_remove_a_protected_production_host_until_the_documented_step(tmp_path):
    stack = stack_with(tmp_path, HOSTS)
    stack.up()
    assert protect_flags(stack) == dict.fromkeys(
        ["loop-a", "loop-a-runner-user", "loop-a-service", "loop-b", "loop-b-runner-user", "loop-b-service"], True
    )

    stack = stack_with(tmp_path, HOSTS[:1])
    for operation in (stack.preview, stack.up):  # `up` here is --skip-preview (Automation API)
        with pytest.raises(auto.CommandError) as refused:
            operation()
        text = str(refused.value)
        for name in ("loop-b-service", "loop-b-runner-user"):
            urn = f"urn:pulumi:production::runner-fleet::fleet:machines:RunnerHost$fleet:test:Step::{name}"
            assert f'resource "{urn}" cannot be deleted\n' in text
            assert f"`pulumi state unprotect '{urn}'`" in text
        assert 'loop-b" cannot be deleted' not in text  # the parent waits for its children
    assert set(protect_flags(stack)) >= {"loop-b", "loop-b-runner-user", "loop-b-service"}

    # The documented step: hosts[1].protect false, set as a user sets it; the engine changes nothing.
    stack = stack_with(tmp_path, HOSTS)
    stack.set("hosts[1].protect", "false", path=True)
    result = stack.up()
    assert result.summary.resource_changes == {"same": 7}
    flags = protect_flags(stack)
    assert not any(flags[n] for n in ("loop-b", "loop-b-runner-user", "loop-b-service"))
    assert all(flags[n] for n in ("loop-a", "loop-a-runner-user", "loop-a-service"))
    assert any("runner-fleet: host loop-b is not protected" in line for line in result.stdout.splitlines())

    stack = stack_with(tmp_path, HOSTS[:1])
    result = stack.up()
    assert result.summary.resource_changes == {"delete": 3, "same": 4}

    with pytest.raises(auto.CommandError, match="because it is protected"):
        stack.destroy()
    stack.set("protect", "false")
    stack.up()
    stack.destroy()
    assert protect_flags(stack) == {}
