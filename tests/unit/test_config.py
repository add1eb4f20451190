"""Stack configuration: both committed stacks validate; every kind of bad input fails before any
resource is registered, with one message that names each offending key."""

from __future__ import annotations

import copy

import pytest

from fleet.config import ConfigError
from tests.conftest import (
    SENTINEL_TOKEN,
    committed_stack_config,
    completed_stack_config,
    fake_host_key,
    run_program,
)


def problems_of(config: dict, stack: str = "production") -> str:
    with pytest.raises(ConfigError) as caught:
        run_program(config, stack)
    return str(caught.value)


@pytest.mark.parametrize("stack", ["production", "staging"])
def test_committed_stack_files_validate_once_host_keys_and_secrets_are_set(stack):
    run = run_program(completed_stack_config(stack), stack)
    assert run.commands()


@pytest.mark.parametrize("stack", ["production", "staging"])
def test_committed_stack_files_lack_only_what_the_user_must_supply(stack):
    """The repository cannot know the machines' host keys or the secrets: the first preview
    says exactly which keys to set, and nothing else."""
    config = committed_stack_config(stack)
    message = problems_of(config, stack)
    lines = sorted(line.strip().split(":")[1] for line in message.splitlines()[1:])
    expected = sorted(
        ["githubToken", "sshPrivateKey", "prometheus.hostKey"]
        + [f"hosts[{i}].hostKey" for i in range(len(config["hosts"]))]
    )
    assert lines == expected, message
    assert "pulumi config set --secret runner-fleet:githubToken" in message
    for i, host in enumerate(config["hosts"]):  # the command that pins each machine's key, with its address
        assert (
            f"pulumi config set --path 'runner-fleet:hosts[{i}].hostKey' "
            f"\"$(ssh-keyscan -t ed25519 {host['address']} | cut -d' ' -f2-)\""
        ) in message


def mutate(fn) -> dict:
    config = completed_stack_config("production")
    fn(config)
    return config


BAD_INPUTS = {
    "missing hosts": (lambda c: c.pop("hosts"), ["runner-fleet:hosts: is required"]),
    "missing exporter port": (
        lambda c: c["hosts"][0].pop("exporterPort"),
        ["runner-fleet:hosts[0].exporterPort: is required"],
    ),
    "missing github scope": (
        lambda c: c["github"].pop("repository"),
        ["runner-fleet:github: set exactly one of repository"],
    ),
    "duplicate host name": (
        lambda c: c["hosts"][1].update(name="Serotonin-paws360"),
        ["runner-fleet:hosts[1].name: duplicate host name 'Serotonin-paws360'"],
    ),
    "duplicate runner name": (
        lambda c: c["hosts"][1]["runners"][0].update(name="Serotonin-paws360"),
        ["runner-fleet:hosts[1].runners[0].name: duplicate runner name 'Serotonin-paws360'"],
    ),
    "exporter port is the ssh port": (
        lambda c: c["hosts"][0].update(sshPort=9102),
        ["runner-fleet:hosts[0].exporterPort: port 9102 is this host's SSH port"],
    ),
    "exporter port is prometheus's port on the monitoring host": (
        lambda c: c["hosts"][0].update(address="192.168.0.200", exporterPort=9090),
        ["runner-fleet:hosts[0].exporterPort: port 9090 is Prometheus's port on the same machine"],
    ),
    "label with a comma": (
        lambda c: c["hosts"][0]["runners"][0].update(labels=["production", "a,b"]),
        ["runner-fleet:hosts[0].runners[0].labels[1]: 'a,b' is not a valid runner label"],
    ),
    "label with a shell metacharacter": (
        lambda c: c["hosts"][0]["runners"][0].update(labels=["$(reboot)"]),
        ["runner-fleet:hosts[0].runners[0].labels[0]: '$(reboot)' is not a valid runner label"],
    ),
    "runner name with a space": (
        lambda c: c["hosts"][0]["runners"][0].update(name="my runner"),
        ["runner-fleet:hosts[0].runners[0].name: 'my runner' is not a valid name"],
    ),
    "unknown role": (
        lambda c: c["hosts"][0].update(role="tertiary"),
        ["runner-fleet:hosts[0].role: Input should be 'primary' or 'secondary', got 'tertiary'"],
    ),
    "malformed address": (
        lambda c: c["hosts"][0].update(address="192.168.0.300"),
        ["runner-fleet:hosts[0].address: '192.168.0.300' is not an IP address or DNS host name"],
    ),
    "malformed host key": (
        lambda c: c["hosts"][1].update(hostKey="ssh-ed25519 not-base64!"),
        ["runner-fleet:hosts[1].hostKey: the host key's base64 part does not decode"],
    ),
    "host key of the wrong type": (
        lambda c: c["prometheus"].update(hostKey=fake_host_key("x").replace("ssh-ed25519", "ecdsa-sha2-nistp256")),
        ["runner-fleet:prometheus.hostKey: the host key's data is not a ecdsa-sha2-nistp256 key"],
    ),
    "checksum not 64 hex": (
        lambda c: c.update(runner={"version": "2.334.0", "sha256": {"x64": "abc123"}}),
        ["runner-fleet:runner.sha256.x64: 'abc123' is not a SHA-256 checksum"],
    ),
    "new version without checksums": (
        lambda c: c.update(runner={"version": "2.399.0"}),
        ["runner-fleet:runner.sha256: is required"],
    ),
    "unknown top-level key": (
        lambda c: c.update(host=[]),
        ["runner-fleet:host: is not a known key (typo?)"],
    ),
    "unknown nested key": (
        lambda c: c["hosts"][0].update(exporterport=9102),
        ["runner-fleet:hosts[0].exporterport: is not a known key (typo?)"],
    ),
    "label contradicting arch": (
        lambda c: c["hosts"][0]["runners"][0].update(labels=["ARM64"]),
        ["runner-fleet:hosts[0].runners[0].labels[0]: label 'ARM64' contradicts the host's arch 'x64'"],
    ),
    "runner group without organization scope": (
        lambda c: c["hosts"][0]["runners"][0].update(group="fast"),
        ["runner-fleet:hosts[0].runners[0].group: runner groups need organization scope"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_naming_its_key(case):
    change, expected = BAD_INPUTS[case]
    message = problems_of(mutate(change))
    for fragment in expected:
        assert fragment in message, message


def test_every_problem_is_reported_at_once():
    """Field problems of every host and section, and the cross-field rules among the hosts and
    runners that are valid themselves (a host with a bad runner is checked without it)."""

    def break_many(c):
        third = copy.deepcopy(c["hosts"][1])
        third.update(address="192.168.0.52", hostKey=fake_host_key("third"), exporterPort=9104)
        third["runners"] = [{"name": "third-runner"}, {"name": "third-bad", "labels": ["bad label"]}]
        c["hosts"].append(third)
        c["hosts"][0]["role"] = "tertiary"
        c["hosts"][2]["name"] = "DELL-r640-01-runner"
        c["prometheus"]["prot"] = 1
        c["typo"] = True

    message = problems_of(mutate(break_many))
    for key in (
        "hosts[0].role",
        "hosts[2].name",
        "hosts[2].runners[1].labels[0]",
        "prometheus.prot",
        "runner-fleet:typo",
    ):
        assert f"{key}:" in message, message
    assert "duplicate host name 'DELL-r640-01-runner' (also runner-fleet:hosts[1].name)" in message
    assert message.startswith("runner-fleet: the stack configuration has 5 problem(s); nothing was changed")


def test_secrets_must_be_secret_and_are_never_echoed():
    config = completed_stack_config("production")
    message = problems_of(config | {"githubToken": "ghp_plain text"}, "production").splitlines()
    assert any("githubToken: must be a single token without whitespace" in m for m in message)
    with pytest.raises(ConfigError) as caught:
        run_program(config, "production", secret_keys=["runner-fleet:sshPrivateKey"])
    assert "runner-fleet:githubToken: must be a secret" in str(caught.value)
    assert config["githubToken"] not in str(caught.value)


def test_invalid_config_registers_no_resource(monkeypatch):
    from tests import conftest

    seen = []
    original = conftest.RecordingMocks.new_resource

    def spy(self, args):
        seen.append(args.name)
        return original(self, args)

    monkeypatch.setattr(conftest.RecordingMocks, "new_resource", spy)
    problems_of(mutate(lambda c: c["hosts"][0].update(role="tertiary")))
    assert seen == []


def test_stack_name_must_be_usable_in_paths():
    assert "stack name 'Prod_1'" in problems_of(completed_stack_config("production"), "Prod_1")


def test_another_stack_file_using_the_same_port_or_runner_is_refused():
    """Nothing may be managed by two stacks: staging may not take production's port or runner."""
    config = completed_stack_config("staging")
    config["hosts"][0]["exporterPort"] = 9101
    config["hosts"][0]["runners"][0]["name"] = "dell-r640-01-runner"
    message = problems_of(config, "staging")
    assert "hosts[0].exporterPort: port 9101 on 192.168.0.51 is already used by stack 'production'" in message
    assert "hosts[0].runners[0].name: runner 'dell-r640-01-runner' is already managed by stack 'production'" in (
        message
    )


def test_organization_scope_with_runner_groups():
    config = completed_stack_config("production")
    config["github"] = {"organization": "paws", "runnerGroups": [{"name": "fast", "visibility": "all"}]}
    config["hosts"][0]["runners"][0]["group"] = "fast"
    run = run_program(copy.deepcopy(config), "production")
    group = run.by_name("github-group-fast")
    assert group.type == "github:index/actionsRunnerGroup:ActionsRunnerGroup"
    registration = run.by_name("Serotonin-paws360-registration")
    assert group.urn in registration.dependencies or any(
        group.urn in r.dependencies for r in run.resources if r.name == "Serotonin-paws360-install"
    )
    create = registration.inputs["create"]
    assert "RUNNER_GROUP=fast\n" in create and "SCOPE_PATH=orgs/paws\n" in create
    assert "REGISTRATION_URL=https://github.com/paws\n" in create
    assert run.outputs["runners"]["Serotonin-paws360"]["unit"] == "actions.runner.paws.Serotonin-paws360.service"
    assert [c.token for c in run.calls] == [
        "github:index/getOrganization:getOrganization",
        "github:index/getActionsOrganizationRegistrationToken:getActionsOrganizationRegistrationToken",
    ]


def test_github_enterprise_server_urls():
    config = completed_stack_config("production")
    config["github"] = {"repository": "ops/infra", "serverUrl": "https://ghe.example.com"}
    run = run_program(config, "production")
    create = run.by_name("Serotonin-paws360-registration").inputs["create"]
    assert "API_URL=https://ghe.example.com/api/v3\n" in create
    assert "REGISTRATION_URL=https://ghe.example.com/ops/infra\n" in create
    assert run.outputs["runners"]["Serotonin-paws360"]["unit"] == "actions.runner._services.Serotonin-paws360.service"


def test_config_passed_as_the_language_host_does(monkeypatch):
    """A real `pulumi up` hands config to the program in PULUMI_CONFIG and the secret keys in
    PULUMI_CONFIG_SECRET_KEYS, not through set_all_config."""
    import json

    config = completed_stack_config("production")
    env = {f"runner-fleet:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(env))
    monkeypatch.setenv(
        "PULUMI_CONFIG_SECRET_KEYS", json.dumps(["runner-fleet:githubToken", "runner-fleet:sshPrivateKey"])
    )
    run = run_program({}, "production", secret_keys=[])
    assert len(run.commands()) == 16
    registration = run.by_name("Serotonin-paws360-registration")
    assert registration.inputs["stdin"] != SENTINEL_TOKEN  # arrives secret-wrapped

    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(["runner-fleet:sshPrivateKey"]))
    with pytest.raises(ConfigError, match="runner-fleet:githubToken: must be a secret"):
        run_program({}, "production", secret_keys=[])


def test_long_stack_names_need_an_explicit_runner_user():
    config = completed_stack_config("production")
    for i, host in enumerate(config["hosts"]):  # another fleet: no overlap with the committed stacks
        host["address"] = f"10.1.0.{i + 1}"
        host["runners"][0]["name"] += "-eu"
    message = problems_of(config, "production-eu-west-datacenter-1")
    assert "runner-fleet:hosts[0].runnerUser: is required: the stack name gives no valid user name" in message
    for host in config["hosts"]:
        host["runnerUser"] = "gha-prod-eu"
    assert run_program(config, "production-eu-west-datacenter-1").commands()
