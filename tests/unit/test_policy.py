"""The policy pack (policy/) on what the program really registers: both committed stacks, run
under mocks, pass every policy; the same resources with one thing wrong are refused by exactly
the policy that guards it. Each policy is called as the engine calls it,
`policy.validate(args, report_violation)`, with the inputs as the engine hands them (secrets
unwrapped, camelCase names)."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import IN_CI, PROJECT, SENTINEL_KEY, SENTINEL_TOKEN, completed_stack_config, run_program, unwrap

try:
    from pulumi_policy import (
        EnforcementLevel,
        PolicyCustomTimeouts,
        PolicyResource,
        PolicyResourceOptions,
        ResourceValidationArgs,
        ResourceValidationPolicy,
        StackValidationArgs,
        StackValidationPolicy,
    )
except ImportError:
    if IN_CI:
        raise
    pytest.skip("pulumi-policy not installed (requirements-dev.txt)", allow_module_level=True)

from policy import policies


@pytest.fixture(scope="module")
def stacks() -> dict[str, list[dict[str, Any]]]:
    """Every registered resource of each committed stack: type, name, urn, plain inputs, options."""
    out = {}
    for stack in ("production", "staging"):
        run = run_program(completed_stack_config(stack), stack)
        out[stack] = [
            {
                "type": r.type,
                "name": r.name,
                "urn": r.urn,
                "props": unwrap(r.inputs),
                "secret_outputs": list(r.additional_secret_outputs),
                "dbr": r.delete_before_replace,
            }
            for r in run.resources
        ]
    return out


def policy(name: str):
    (found,) = [p for p in policies.POLICIES if p.name == name]
    return found


def _opts(res: dict[str, Any]) -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], res["dbr"], [], PolicyCustomTimeouts(0, 0, 0), res["secret_outputs"])


def violations(name: str, resources: list[dict[str, Any]], config: dict[str, Any] | None = None) -> list[str]:
    found: list[str] = []

    def report_violation(message: str, urn: str | None = None) -> None:
        found.append(message)

    p = policy(name)
    if isinstance(p, ResourceValidationPolicy):
        for res in resources:
            args = ResourceValidationArgs(res["type"], res["props"], res["urn"], res["name"], _opts(res), None, config)
            p.validate(args, report_violation)
    else:
        args = StackValidationArgs(
            [
                PolicyResource(res["type"], res["props"], res["urn"], res["name"], _opts(res), None, None, [], {})
                for res in resources
            ],
            config,
        )
        p.validate(args, report_violation)
    return found


def by_name(resources: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (res,) = [r for r in resources if r["name"] == name]
    return res


def edit(resources: list[dict[str, Any]], name: str, field: str, old: str, new: str) -> list[dict[str, Any]]:
    """A copy of the stack with one text input of one resource changed."""
    changed = copy.deepcopy(resources)
    res = by_name(changed, name)
    assert old in res["props"][field], f"{name}.{field} has no {old!r}"
    res["props"][field] = res["props"][field].replace(old, new)
    return changed


ALL = [p.name for p in policies.POLICIES]


def test_the_pack_has_the_promised_mandatory_policies():
    assert set(ALL) == {
        "production-primary-and-secondary",
        "runner-labels-include-environment",
        "connection-pins-host-key",
        "artifact-pinned-by-sha256",
        "exporter-port-unique-per-host",
        "secrets-stay-secret",
    }
    assert {p.enforcement_level for p in policies.POLICIES} == {EnforcementLevel.MANDATORY}
    assert isinstance(policy("production-primary-and-secondary"), StackValidationPolicy)
    assert isinstance(policy("exporter-port-unique-per-host"), StackValidationPolicy)


@pytest.mark.parametrize("stack", ["production", "staging"])
@pytest.mark.parametrize("name", ALL)
def test_committed_stacks_pass(stacks, stack, name):
    assert violations(name, stacks[stack]) == []


def test_the_policies_read_what_the_scripts_receive(stacks):
    """Guard against a silent pass: the parser finds the inputs it checks in the real commands."""
    prod = stacks["production"]
    scripts = {}
    for res in prod:
        parsed = policies.script_inputs(res["props"].get("create"))
        if parsed:
            scripts[res["name"]] = parsed
    commands = [r for r in prod if r["type"] == policies.COMMAND]
    assert len(scripts) == len(commands)
    assert scripts["Serotonin-paws360-registration"][1]["CUSTOM_LABELS"] == "production,primary"
    assert policies.SHA256.match(scripts["Serotonin-paws360-install"][1]["RUNNER_SHA256"])
    assert scripts["dell-r640-01-runner-exporter-install"][1]["PORT"] == "9101"
    assert json.loads(scripts["prometheus-target-file"][1]["TARGETS_JSON"])


# --- host keys --------------------------------------------------------------------------------


def test_a_connection_without_host_key_is_refused(stacks):
    prod = copy.deepcopy(stacks["production"])
    del by_name(prod, "Serotonin-paws360-service")["props"]["connection"]["hostKey"]
    found = violations("connection-pins-host-key", prod)
    assert found == [
        "Serotonin-paws360-service: connection: no hostKey: the host key is not checked at all "
        "(pin it: ssh-keyscan -t ed25519 ADDRESS)"
    ]


def test_a_malformed_host_key_or_an_unpinned_jump_host_is_refused(stacks):
    prod = copy.deepcopy(stacks["production"])
    by_name(prod, "Serotonin-paws360-install")["props"]["connection"]["hostKey"] = "ssh-ed25519 bm90IGEga2V5"
    conn = by_name(prod, "prometheus-target-file")["props"]["connection"]
    conn["proxy"] = {"host": "10.0.0.1", "user": "jump", "privateKey": "x"}
    found = violations("connection-pins-host-key", prod)
    assert len(found) == 2
    assert "Serotonin-paws360-install: connection: hostKey's data is not a ssh-ed25519 key" in found
    assert any(f.startswith("prometheus-target-file: connection.proxy: no hostKey") for f in found)


# --- artifacts ------------------------------------------------------------------------------


def _sha_line(resources, name: str, key: str) -> str:
    values = policies.script_inputs(by_name(resources, name)["props"]["create"])[1]
    return f"\n{key}={values[key]}\n"


def test_a_download_without_checksum_is_refused(stacks):
    prod = stacks["production"]
    line = _sha_line(prod, "Serotonin-paws360-install", "RUNNER_SHA256")
    found = violations("artifact-pinned-by-sha256", edit(prod, "Serotonin-paws360-install", "create", line, "\n"))
    assert len(found) == 1
    assert "RUNNER_URL=https://github.com/actions/runner/releases/download/" in found[0]
    assert found[0].endswith("is downloaded without RUNNER_SHA256")


def test_a_bad_checksum_or_one_the_script_ignores_is_refused(stacks):
    prod = stacks["production"]
    line = _sha_line(prod, "dell-r640-01-runner-exporter-install", "EXPORTER_SHA256")
    bad = edit(prod, "dell-r640-01-runner-exporter-install", "create", line, "\nEXPORTER_SHA256=latest\n")
    (found,) = violations("artifact-pinned-by-sha256", bad)
    assert "EXPORTER_SHA256 is not a SHA-256 checksum" in found
    # The same inputs, but a script that downloads without verifying.
    ignored = copy.deepcopy(prod)
    res = by_name(ignored, "Serotonin-paws360-install")
    words = shlex.split(res["props"]["create"])
    (i,) = [n for n, w in enumerate(words) if policies.END_OF_INPUTS in w]
    inputs = words[i].split(policies.END_OF_INPUTS)[0]
    words[i] = inputs + policies.END_OF_INPUTS + '\ncurl -fsSL "$RUNNER_URL" | tar -xz\n'
    res["props"]["create"] = shlex.join(words)
    assert policies.script_inputs(res["props"]["create"])[1]["RUNNER_SHA256"]
    (found,) = violations("artifact-pinned-by-sha256", ignored)
    assert found.endswith("the script never checks RUNNER_SHA256")


# --- secrets --------------------------------------------------------------------------------


def test_a_secret_in_command_text_or_triggers_is_refused_without_printing_it(stacks):
    prod = copy.deepcopy(stacks["production"])
    key_line = next(line for line in SENTINEL_KEY.splitlines() if not line.startswith("-----"))
    by_name(prod, "Serotonin-paws360-service")["props"]["triggers"].append(key_line)
    reg = by_name(prod, "dell-r640-01-runner-registration")
    reg["props"]["create"] = reg["props"]["create"].replace("RUNNER_GROUP=", f"TOKEN={SENTINEL_TOKEN}\nRUNNER_GROUP=")
    found = violations("secrets-stay-secret", prod)
    assert sorted(found) == [
        "Serotonin-paws360-service: a secret (connection credential or stdin) appears in `triggers`",
        "dell-r640-01-runner-registration: a secret (connection credential or stdin) appears in `create`",
    ]
    assert not any(SENTINEL_TOKEN in m or key_line in m for m in found)


def test_a_token_shaped_value_in_a_delete_is_refused_even_unknown(stacks):
    prod = copy.deepcopy(stacks["production"])
    res = by_name(prod, "Serotonin-paws360-install")
    res["props"]["delete"] += "\ncurl -H 'Authorization: token ghp_abcdefghijklmnopqrstuvwxyz0123456789' x"
    assert violations("secrets-stay-secret", prod) == [
        "Serotonin-paws360-install: `delete` contains a credential (token or private key)"
    ]


def test_secret_stdin_needs_secret_stdout_and_stderr(stacks):
    prod = copy.deepcopy(stacks["production"])
    by_name(prod, "Serotonin-paws360-registration")["secret_outputs"] = ["stderr"]
    (found,) = violations("secrets-stay-secret", prod)
    assert found.startswith("Serotonin-paws360-registration: has a secret stdin but stdout not in additional_secret")


# --- labels ---------------------------------------------------------------------------------


def test_a_runner_without_its_environment_label_is_refused(stacks):
    prod = stacks["production"]
    found = violations(
        "runner-labels-include-environment",
        edit(
            prod,
            "Serotonin-paws360-registration",
            "create",
            "CUSTOM_LABELS=production,primary",
            "CUSTOM_LABELS=primary",
        ),
    )
    assert len(found) == 1
    assert found[0].startswith("runner Serotonin-paws360: labels ['primary'] do not include its stack's environment")
    staging_label = edit(
        prod, "Serotonin-paws360-registration", "create", "CUSTOM_LABELS=production,primary", "CUSTOM_LABELS=staging"
    )
    assert len(violations("runner-labels-include-environment", staging_label)) == 1
    upper = edit(
        prod, "Serotonin-paws360-registration", "create", "CUSTOM_LABELS=production", "CUSTOM_LABELS=Production"
    )
    assert violations("runner-labels-include-environment", upper) == [], "labels are case-insensitive"


# --- primary and secondary -------------------------------------------------------------------


def _without_host(resources: list[dict[str, Any]], host: str) -> list[dict[str, Any]]:
    return [r for r in resources if not r["name"].startswith(host)]


def test_production_without_a_secondary_is_refused(stacks):
    prod = stacks["production"]
    # The target file still lists the machine; its runners are what is gone.
    only_primary = _without_host(prod, "dell-r640-01-runner")
    found = violations("production-primary-and-secondary", only_primary)
    assert len(found) == 1 and found[0].startswith("stack production: no secondary host with a runner")
    found = violations("production-primary-and-secondary", _without_host(prod, "Serotonin-paws360"))
    assert found == ["stack production: no primary host with a runner"]


def test_primary_and_secondary_on_one_machine_is_refused(stacks):
    prod = copy.deepcopy(stacks["production"])
    for res in prod:
        conn = res["props"].get("connection")
        if conn and conn.get("host") == "192.168.0.51":
            conn["host"] = "192.168.0.13"
    target = by_name(prod, "prometheus-target-file")
    target["props"]["create"] = target["props"]["create"].replace("192.168.0.51:", "192.168.0.13:")
    (found,) = violations("production-primary-and-secondary", prod)
    assert found == "stack production: the primary and the secondary are the same machine ['192.168.0.13']"


def test_only_production_stacks_need_a_secondary(stacks):
    staging = stacks["staging"]
    assert violations("production-primary-and-secondary", staging) == []
    found = violations("production-primary-and-secondary", staging, {"productionStacks": ["production", "staging"]})
    assert found and found[0].startswith("stack staging: no secondary host")


# --- exporter ports -------------------------------------------------------------------------


def test_an_exporter_port_used_twice_on_a_host_is_refused(stacks):
    prod = copy.deepcopy(stacks["production"])
    moved = by_name(prod, "dell-r640-01-runner-exporter-install")
    moved["props"]["connection"]["host"] = "192.168.0.13"
    moved["props"]["create"] = re.sub(r"\nPORT=9101\n", "\nPORT=9102\n", moved["props"]["create"])
    (found,) = violations("exporter-port-unique-per-host", prod)
    assert "exporter port 9102 on 192.168.0.13 is already used by" in found
    assert "dell-r640-01-runner-exporter-install" in found and "Serotonin-paws360-exporter-install" in found


def test_an_exporter_on_the_ssh_or_prometheus_port_is_refused(stacks):
    prod = stacks["production"]
    on_ssh = edit(prod, "Serotonin-paws360-exporter-install", "create", "\nPORT=9102\n", "\nPORT=22\n")
    (found,) = violations("exporter-port-unique-per-host", on_ssh)
    assert found.endswith("exporter port 22 on 192.168.0.13 is already used by SSH")
    on_prometheus = copy.deepcopy(prod)
    res = by_name(on_prometheus, "Serotonin-paws360-exporter-install")
    res["props"]["connection"]["host"] = "192.168.0.200"
    res["props"]["create"] = res["props"]["create"].replace("\nPORT=9102\n", "\nPORT=9090\n")
    (found,) = violations("exporter-port-unique-per-host", on_prometheus)
    assert found.endswith("exporter port 9090 on 192.168.0.200 is already used by Prometheus")


def test_the_pack_starts_as_the_engine_starts_it(tmp_path):
    """The engine runs `python -m pulumi.policy ENGINE policy/` (runpy of the directory's
    __main__.py) and reads the analyzer's port from the first output line. Run from an empty
    directory: the pack must load with nothing of the project importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulumi.policy", "127.0.0.1:1", str(PROJECT / "policy")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read() if proc.poll() is not None else line
    finally:
        proc.kill()
        proc.wait(timeout=10)
