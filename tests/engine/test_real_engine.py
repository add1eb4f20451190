"""The program under the real `pulumi` CLI (built by tools/engine.py), config set as a user sets it.

What runs here is the real engine: `pulumi config set [--secret] [--path]`, `pulumi up`, the
passphrase secrets provider, the file backend and `pulumi stack export`. What cannot run here is
pulumi-command's provider (the Go module proxy does not serve it, see README "The lab"), so these
tests stop where the first remote command would start; none of them connects anywhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto

from lab.real_engine import RealStack
from tests.conftest import IN_CI, PROJECT, SENTINEL_KEY, SENTINEL_TOKEN, fake_host_key
from tools import engine

pytestmark = [
    pytest.mark.skipif(
        engine.find("cli") is None and not IN_CI, reason="real Pulumi CLI not built (python -m tools.engine build cli)"
    ),
    # The SDK's inline program server closes its callback loop after the run; harmless noise.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

# Addresses of the lab's own range only (lab/hosts.py), and every config that passes validation
# is only previewed: a preview checks and diffs commands but never connects.
LAB_RANGE_STACK = {
    "github": {"repository": "example-org/fleet-lab", "checkAccess": False},
    "prometheus": {"address": "10.249.31.250", "port": 9090},
    "hosts": [
        {
            "name": "loop-a",
            "address": "10.249.31.251",
            "role": "primary",
            "exporterPort": 9102,
            "runners": [{"name": "loop-a", "labels": ["self-hosted", "Linux", "X64", "enginetest", "primary"]}],
        }
    ],
}


def _stack(tmp_path: Path, name: str, stack_file: dict | None = None) -> RealStack:
    work = tmp_path / "work"
    work.mkdir()
    if stack_file is not None:
        (work / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(stack_file, sort_keys=False))
    stack = RealStack(work, name)
    stack.set("githubToken", SENTINEL_TOKEN, secret=True)
    stack.set("sshPrivateKey", SENTINEL_KEY, secret=True)
    return stack


def _failed_up(stack: RealStack) -> str:
    """`pulumi up` of a config that validation refuses: nothing may be registered."""
    with pytest.raises(auto.CommandError) as info:
        stack.up(show_secrets=False)
    return str(info.value)


def _failed_preview(stack: RealStack) -> str:
    with pytest.raises(auto.CommandError) as info:
        stack.preview()
    return str(info.value)


@pytest.mark.parametrize("name", ["production", "staging"])
def test_real_engine_refuses_committed_stack_without_host_keys_and_registers_nothing(tmp_path, name):
    committed = yaml.safe_load((PROJECT / f"Pulumi.{name}.yaml").read_text())
    stack = _stack(tmp_path, name, committed)
    output = _failed_up(stack)
    hosts = committed["config"]["runner-fleet:hosts"]
    for i in range(len(hosts)):
        assert f"runner-fleet:hosts[{i}].hostKey: is required" in output
    assert "runner-fleet:prometheus.hostKey: is required" in output
    assert f"has {len(hosts) + 1} problem(s); nothing was changed" in output
    assert stack.resource_types() == ["pulumi:pulumi:Stack"]


def test_secrets_set_with_the_cli_are_encrypted_in_the_stack_file_and_absent_from_the_output(tmp_path):
    stack = _stack(tmp_path, "enginetest", {"config": {f"runner-fleet:{k}": v for k, v in LAB_RANGE_STACK.items()}})
    stack.set("hosts[0].hostKey", fake_host_key("loop-a"), path=True)
    stack.set("prometheus.hostKey", fake_host_key("prom"), path=True)
    output = _failed_preview(stack)
    stack_file = stack.stack_file()
    for secret in (SENTINEL_TOKEN, "SENTINELkeyMATERIAL"):
        assert secret not in stack_file
        assert secret not in output
    config = yaml.safe_load(stack_file)["config"]
    assert set(config["runner-fleet:githubToken"]) == {"secure"}
    assert set(config["runner-fleet:sshPrivateKey"]) == {"secure"}


def test_host_key_set_with_path_reaches_the_program_and_validation_passes(tmp_path):
    """Structured config edited with `--path` arrives as the program expects it: validation passes
    and the engine goes on to plan the components; here it stops at the first provider plugin."""
    stack = _stack(tmp_path, "enginetest", {"config": {f"runner-fleet:{k}": v for k, v in LAB_RANGE_STACK.items()}})
    stack.set("hosts[0].hostKey", fake_host_key("loop-a"), path=True)
    stack.set("prometheus.hostKey", fake_host_key("prom"), path=True)
    output = _failed_preview(stack)
    assert "the stack configuration has" not in output
    assert "fleet:machines:RunnerHost" in output
    assert "no resource plugin 'pulumi-resource-command'" in output
    assert "pulumi-resource-github" not in output


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("hosts[0].runners[0].labels[3]", "two words", "runner-fleet:hosts[0].runners[0].labels[3]"),
        ("hosts[0].exporterPort", "70000", "runner-fleet:hosts[0].exporterPort"),
        ("hosts[0].role", "tertiary", "runner-fleet:hosts[0].role"),
        ("prometheus.hostKey", "ssh-ed25519 not-base64!", "runner-fleet:prometheus.hostKey"),
        ("hosts[0].runnerUsr", "someone", "runner-fleet:hosts[0].runnerUsr"),
    ],
)
def test_bad_value_set_with_the_cli_is_refused_by_the_real_engine_before_anything_is_registered(
    tmp_path, path, value, expected
):
    stack = _stack(tmp_path, "enginetest", {"config": {f"runner-fleet:{k}": v for k, v in LAB_RANGE_STACK.items()}})
    stack.set("hosts[0].hostKey", fake_host_key("loop-a"), path=True)
    if not path.startswith("prometheus.hostKey"):
        stack.set("prometheus.hostKey", fake_host_key("prom"), path=True)
    stack.set(path, value, path=True)
    output = _failed_up(stack)
    assert expected in output
    assert "nothing was changed" in output
    assert stack.resource_types() == ["pulumi:pulumi:Stack"]


def test_engine_cache_reuses_a_built_cli(tmp_path, monkeypatch):
    """A warm build costs nothing: the cached binary of the pinned version is taken as is."""
    cli = engine.find("cli")
    assert cli is not None
    piece = engine.pieces()["cli"]
    cache = tmp_path / "cache"
    target = cache / piece.binary.relative_to(engine.cache_dir())
    target.parent.mkdir(parents=True)
    shutil.copy(cli, target)
    target.with_name(target.name + ".built").write_text(piece.version + "\n")
    monkeypatch.setenv(engine.CACHE_ENV, str(cache))
    assert engine.build(engine.pieces()["cli"]) == target
    assert engine.find("cli") == target
