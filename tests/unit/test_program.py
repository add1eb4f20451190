"""The resource graph the program registers for the committed stacks, under Pulumi mocks."""

from __future__ import annotations

import json

import pytest

from tests.conftest import (
    SENTINEL_KEY,
    SENTINEL_TOKEN,
    completed_stack_config,
    fake_host_key,
    plain_parts,
    run_program,
    unwrap,
)

EXPECTED = {
    "production": [
        ("fleet:actions:GitHubScope", "github", "runner-fleet-production"),
        ("pulumi:providers:github", "github-provider", "github"),
        ("fleet:machines:RunnerHost", "Serotonin-paws360", "runner-fleet-production"),
        ("command:remote:Command", "Serotonin-paws360-preflight", "Serotonin-paws360"),
        ("command:remote:Command", "Serotonin-paws360-runner-user", "Serotonin-paws360"),
        ("fleet:monitoring:ExporterService", "Serotonin-paws360-exporter", "Serotonin-paws360"),
        ("command:remote:Command", "Serotonin-paws360-exporter-install", "Serotonin-paws360-exporter"),
        ("command:remote:Command", "Serotonin-paws360-exporter-runner-metrics", "Serotonin-paws360-exporter"),
        ("fleet:actions:GitHubRunner", "Serotonin-paws360", "Serotonin-paws360"),
        ("command:remote:Command", "Serotonin-paws360-install", "Serotonin-paws360"),
        ("command:remote:Command", "Serotonin-paws360-registration", "Serotonin-paws360"),
        ("command:remote:Command", "Serotonin-paws360-service", "Serotonin-paws360"),
        ("fleet:machines:RunnerHost", "dell-r640-01-runner", "runner-fleet-production"),
        ("command:remote:Command", "dell-r640-01-runner-preflight", "dell-r640-01-runner"),
        ("command:remote:Command", "dell-r640-01-runner-runner-user", "dell-r640-01-runner"),
        ("fleet:monitoring:ExporterService", "dell-r640-01-runner-exporter", "dell-r640-01-runner"),
        ("command:remote:Command", "dell-r640-01-runner-exporter-install", "dell-r640-01-runner-exporter"),
        ("command:remote:Command", "dell-r640-01-runner-exporter-runner-metrics", "dell-r640-01-runner-exporter"),
        ("fleet:actions:GitHubRunner", "dell-r640-01-runner", "dell-r640-01-runner"),
        ("command:remote:Command", "dell-r640-01-runner-install", "dell-r640-01-runner"),
        ("command:remote:Command", "dell-r640-01-runner-registration", "dell-r640-01-runner"),
        ("command:remote:Command", "dell-r640-01-runner-service", "dell-r640-01-runner"),
        ("fleet:monitoring:PrometheusTargets", "prometheus", "runner-fleet-production"),
        ("command:remote:Command", "prometheus-scrape-job", "prometheus"),
        ("command:remote:Command", "prometheus-target-file", "prometheus"),
    ],
    "staging": [
        ("fleet:actions:GitHubScope", "github", "runner-fleet-staging"),
        ("pulumi:providers:github", "github-provider", "github"),
        ("fleet:machines:RunnerHost", "dell-r640-01-runner", "runner-fleet-staging"),
        ("command:remote:Command", "dell-r640-01-runner-preflight", "dell-r640-01-runner"),
        ("command:remote:Command", "dell-r640-01-runner-runner-user", "dell-r640-01-runner"),
        ("fleet:monitoring:ExporterService", "dell-r640-01-runner-exporter", "dell-r640-01-runner"),
        ("command:remote:Command", "dell-r640-01-runner-exporter-install", "dell-r640-01-runner-exporter"),
        ("command:remote:Command", "dell-r640-01-runner-exporter-runner-metrics", "dell-r640-01-runner-exporter"),
        ("fleet:actions:GitHubRunner", "dell-r640-01-runner-staging", "dell-r640-01-runner"),
        ("command:remote:Command", "dell-r640-01-runner-staging-install", "dell-r640-01-runner-staging"),
        ("command:remote:Command", "dell-r640-01-runner-staging-registration", "dell-r640-01-runner-staging"),
        ("command:remote:Command", "dell-r640-01-runner-staging-service", "dell-r640-01-runner-staging"),
        ("fleet:monitoring:PrometheusTargets", "prometheus", "runner-fleet-staging"),
        ("command:remote:Command", "prometheus-scrape-job", "prometheus"),
        ("command:remote:Command", "prometheus-target-file", "prometheus"),
    ],
}

# Commands that leave nothing behind on the host (read-only checks).
NO_DELETE = {"-preflight"}


def _parent_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


@pytest.fixture(scope="module", params=["production", "staging"])
def stack_run(request):
    return request.param, run_program(completed_stack_config(request.param), request.param)


def test_exact_resource_set_names_and_parents(stack_run):
    stack, run = stack_run
    got = sorted((r.type, r.name, _parent_name(r.parent)) for r in run.resources)
    assert got == sorted(EXPECTED[stack])


def test_every_command_pins_the_host_key_and_avoids_environment(stack_run):
    stack, run = stack_run
    config = completed_stack_config(stack)
    keys = {h["address"]: h["hostKey"] for h in config["hosts"]}
    keys[config["prometheus"]["address"]] = config["prometheus"]["hostKey"]
    for command in run.commands():
        connection = unwrap(command.inputs["connection"])
        assert connection["hostKey"] == keys[connection["host"]], command.name
        assert "environment" not in command.inputs, command.name
        assert command.inputs["addPreviousOutputInEnv"] is False, command.name
        # A moved host must be a replacement (runs delete on the old machine), not an update.
        assert any(connection["host"] in t for t in command.inputs["triggers"]), command.name


def test_commands_that_leave_state_have_a_delete(stack_run):
    _, run = stack_run
    for command in run.commands():
        keeps_nothing = any(command.name.endswith(s) for s in NO_DELETE)
        assert ("delete" in command.inputs) != keeps_nothing, command.name


def test_registration_and_service_replace_delete_first(stack_run):
    """create-before-delete would let the old deregistration remove the new registration."""
    _, run = stack_run
    for command in run.commands():
        expected = command.name.endswith(("-registration", "-service"))
        assert command.delete_before_replace is expected, command.name


def test_dependencies_order_each_runner(stack_run):
    _, run = stack_run
    urn = {r.name: r.urn for r in run.resources}
    for command in run.commands():
        if command.name.endswith("-registration"):
            runner = command.name.removesuffix("-registration")
            assert urn[f"{runner}-install"] in command.dependencies
            assert urn[f"{runner}-registration"] in run.by_name(f"{runner}-service").dependencies
    target = run.by_name("prometheus-target-file")
    assert urn["prometheus-scrape-job"] in target.dependencies
    # The target file waits for the job only: a host that is down must not leave the others unmonitored.
    assert target.dependencies == [urn["prometheus-scrape-job"]]


def test_token_changes_between_runs_change_no_input(stack_run):
    """pulumi-github mints a new registration token on every run; nothing may depend on it."""
    stack, first = stack_run
    second = run_program(completed_stack_config(stack), stack, token_prefix="ZZZZ")
    assert len(first.calls) >= 2
    assert any(c.token.endswith("getActionsRegistrationToken") for c in first.calls)  # checkAccess ran
    assert {r.urn: unwrap(r.inputs) for r in first.resources} == {r.urn: unwrap(r.inputs) for r in second.resources}
    for run in (first, second):
        dump = json.dumps([unwrap(r.inputs) for r in run.resources])
        assert "AAAA0000" not in dump and "ZZZZ0000" not in dump


def test_without_access_check_or_groups_the_stack_never_loads_pulumi_github(stack_run):
    """pulumi-github's plugin cannot be built from Go modules; a stack that needs neither the access
    check nor runner groups must deploy without it: no github resource, no invoke."""
    stack, _ = stack_run
    config = completed_stack_config(stack)
    config["github"] = {**config["github"], "checkAccess": False}
    run = run_program(config, stack)
    assert not [r for r in run.resources if r.type.startswith(("pulumi:providers:github", "github:"))]
    assert run.calls == []
    assert any(r.type == "command:remote:Command" for r in run.resources)


def test_sentinel_secrets_never_leave_secret_channels(stack_run):
    _, run = stack_run
    for resource in run.resources:
        plain = json.dumps(plain_parts(resource.inputs))
        assert SENTINEL_TOKEN not in plain, resource.name
        assert "SENTINELkeyMATERIAL" not in plain, resource.name
        if resource.type == "command:remote:Command":
            for field in ("create", "update", "delete"):
                text = json.dumps(unwrap(resource.inputs.get(field, "")))
                assert SENTINEL_TOKEN not in text and "SENTINELkeyMATERIAL" not in text
            if "stdin" in resource.inputs:
                assert unwrap(resource.inputs["stdin"]) == SENTINEL_TOKEN
                assert plain_parts(resource.inputs)["stdin"] == "[secret]"
                assert {"stdout", "stderr"} <= set(resource.additional_secret_outputs)
            assert plain_parts(resource.inputs)["connection"] == "[secret]" or "connection" in (
                resource.additional_secret_outputs
            )
    exported = json.dumps(run.outputs)
    assert SENTINEL_TOKEN not in exported and "SENTINELkeyMATERIAL" not in exported
    assert SENTINEL_KEY.strip() not in exported


def test_only_registrations_and_runner_services_receive_the_github_credential(stack_run):
    """The service step's delete retires the runner on GitHub before it stops the service."""
    _, run = stack_run
    with_stdin = sorted(c.name for c in run.commands() if "stdin" in c.inputs)
    assert with_stdin == sorted(c.name for c in run.commands() if c.name.endswith(("-registration", "-service")))
    assert any(c.name.endswith("-service") for c in run.commands())


def test_stack_outputs_name_every_runner_exporter_url_target_file_and_job(stack_run):
    stack, run = stack_run
    config = completed_stack_config(stack)
    assert run.outputs["scrapeJob"] == "github-runner-health"
    assert run.outputs["prometheusTargetFile"] == f"/etc/prometheus/runner-fleet/runner-fleet-{stack}.json"
    expected_runners = {r["name"] for h in config["hosts"] for r in h["runners"]}
    assert set(run.outputs["runners"]) == expected_runners
    for host in config["hosts"]:
        assert run.outputs["exporters"][host["name"]] == f"http://{host['address']}:{host['exporterPort']}/metrics"


def test_production_runner_labels_and_units():
    run = run_program(completed_stack_config("production"), "production")
    assert run.outputs["runners"]["Serotonin-paws360"] == {
        "host": "192.168.0.13",
        "unit": "actions.runner.rmnanney-PAWS360.Serotonin-paws360.service",
        "labels": ["self-hosted", "Linux", "X64", "production", "primary"],
    }
    registration = unwrap(run.by_name("dell-r640-01-runner-registration").inputs)
    assert "CUSTOM_LABELS=production,secondary\n" in registration["create"]
    assert "REGISTRATION_URL=https://github.com/rmnanney/PAWS360\n" in registration["create"]
    assert "API_URL=https://api.github.com\n" in registration["create"]


def test_relabel_is_an_update_not_a_replacement():
    """Labels are not in triggers: a label change runs the registration's script again, which
    sets labels in place; the registration identity (triggers) stays the same."""
    base = completed_stack_config("production")
    relabeled = completed_stack_config("production")
    relabeled["hosts"][1]["runners"][0]["labels"] = ["production", "secondary", "gpu"]
    before = unwrap(run_program(base, "production").by_name("dell-r640-01-runner-registration").inputs)
    after = unwrap(run_program(relabeled, "production").by_name("dell-r640-01-runner-registration").inputs)
    assert before["triggers"] == after["triggers"]
    assert before["create"] != after["create"]
    assert "CUSTOM_LABELS=production,secondary,gpu\n" in after["create"]


def test_moving_a_runner_to_another_host_replaces_it():
    base = completed_stack_config("production")
    moved = completed_stack_config("production")
    moved["hosts"][1]["address"] = "192.168.0.52"
    moved["hosts"][1]["hostKey"] = fake_host_key("192.168.0.52")
    a = unwrap(run_program(base, "production").by_name("dell-r640-01-runner-registration").inputs)
    b = unwrap(run_program(moved, "production").by_name("dell-r640-01-runner-registration").inputs)
    assert a["triggers"] != b["triggers"]


def test_jump_host_goes_into_the_connection_proxy_with_its_pinned_key():
    config = completed_stack_config("production")
    config["hosts"][0]["jumpHost"] = {
        "address": "bastion.example.com",
        "sshUser": "jump",
        "hostKey": fake_host_key("bastion"),
    }
    run = run_program(config, "production")
    for command in run.commands():
        connection = unwrap(command.inputs["connection"])
        if connection["host"] != "192.168.0.13":
            assert "proxy" not in connection, command.name
            continue
        assert connection["proxy"]["host"] == "bastion.example.com"
        assert connection["proxy"]["user"] == "jump"
        assert connection["proxy"]["hostKey"] == fake_host_key("bastion")
        assert connection["proxy"]["privateKey"] == SENTINEL_KEY
        assert any("via jump@bastion.example.com:22" in t for t in command.inputs["triggers"])
