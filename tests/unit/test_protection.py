"""Which resources the program registers with Pulumi's `protect`, under Pulumi mocks.

`protect` is set on the top-level components from the stack config (runner-fleet:protect,
default on for the stack `production`; hosts[].protect per host) and the SDK hands it down to
every child: the request of every resource is checked here, so a child that escaped the
inheritance (its own ResourceOptions without a parent, say) would show.
"""

from __future__ import annotations

import pytest

from fleet import config as fleet_config
from fleet.program import unprotected_hosts_notice
from tests.conftest import Registration, completed_stack_config, run_program


def tree(resources: list[Registration], root: Registration) -> list[Registration]:
    """`root` and everything under it."""
    out = [root]
    for r in resources:
        if r.parent in {o.urn for o in out} and r not in out:
            out.append(r)
    # parents are registered before their children, so one pass in registration order suffices
    return out


def protected(resources: list[Registration]) -> dict[str, bool]:
    return {f"{r.type}::{r.name}": bool(r.protect) for r in resources}


def test_production_protects_every_resource_it_registers():
    run = run_program(completed_stack_config("production"), "production")
    flags = protected(run.resources)
    assert len(flags) == len(run.resources) > 20
    assert [key for key, on in flags.items() if not on] == []
    # Requests carry it explicitly (not left to the engine's default of false).
    assert all(r.protect is True for r in run.resources)


def test_staging_protects_nothing():
    run = run_program(completed_stack_config("staging"), "staging")
    assert [f"{r.type}::{r.name}" for r in run.resources if r.protect] == []


def test_runner_registrations_services_and_users_of_production_are_among_the_protected():
    run = run_program(completed_stack_config("production"), "production")
    for host in ("Serotonin-paws360", "dell-r640-01-runner"):
        for child in ("preflight", "runner-user", "exporter-install", "exporter-runner-metrics"):
            assert run.by_name(f"{host}-{child}").protect is True
        for child in ("install", "registration", "service"):
            assert run.by_name(f"{host}-{child}").protect is True
    assert run.by_name("prometheus-target-file").protect is True
    assert run.by_name("github-provider").protect is True


def test_a_host_set_to_protect_false_is_unprotected_with_everything_on_it_and_nothing_else():
    config = completed_stack_config("production")
    config["hosts"][1]["protect"] = False
    run = run_program(config, "production")
    host = next(r for r in run.resources if r.type == "fleet:machines:RunnerHost" and r.name == "dell-r640-01-runner")
    retired = tree(run.resources, host)
    assert {r.name for r in retired} >= {
        "dell-r640-01-runner",
        "dell-r640-01-runner-preflight",
        "dell-r640-01-runner-runner-user",
        "dell-r640-01-runner-exporter",
        "dell-r640-01-runner-exporter-install",
        "dell-r640-01-runner-exporter-runner-metrics",
        "dell-r640-01-runner-install",
        "dell-r640-01-runner-registration",
        "dell-r640-01-runner-service",
    }
    assert all(r.protect is False for r in retired)
    others = [r for r in run.resources if r not in retired]
    assert others and all(r.protect is True for r in others)


def test_the_stack_key_turns_protection_on_for_any_stack_and_off_for_production():
    staging = completed_stack_config("staging")
    staging["protect"] = True
    assert all(r.protect for r in run_program(staging, "staging").resources)
    production = completed_stack_config("production")
    production["protect"] = False
    assert not any(r.protect for r in run_program(production, "production").resources)


def test_a_host_can_be_protected_in_an_unprotected_stack():
    config = completed_stack_config("staging")
    config["hosts"][0]["protect"] = True
    run = run_program(config, "staging")
    host = next(r for r in run.resources if r.type == "fleet:machines:RunnerHost")
    assert all(r.protect for r in tree(run.resources, host))
    assert not run.by_name("prometheus-target-file").protect


@pytest.mark.parametrize(("stack", "expected"), [("production", True), ("staging", False), ("lab", False)])
def test_protection_defaults_to_the_production_stack_only(stack, expected):
    assert (stack in fleet_config.PROTECTED_STACKS) is expected


def test_the_program_warns_about_each_unprotected_host_of_a_protected_stack():
    config = completed_stack_config("production")
    config["hosts"][1]["protect"] = False
    run_program(config, "production")  # validates the same config the notice is built from
    hosts = tuple(fleet_config.HostSpec.from_config(h) for h in config["hosts"])
    fleet = _fleet(hosts, protect=True)
    assert unprotected_hosts_notice(fleet) == [
        "runner-fleet: host dell-r640-01-runner is not protected (runner-fleet:hosts[1].protect: false): "
        "removing it from runner-fleet:hosts, or a change that replaces it, now retires its runners; "
        "remove the key again to protect it"
    ]
    assert unprotected_hosts_notice(_fleet(hosts, protect=False)) == []


def _fleet(hosts: tuple[fleet_config.HostSpec, ...], *, protect: bool) -> fleet_config.FleetConfig:
    return fleet_config.FleetConfig(
        stack="production",
        github=fleet_config.GitHubSettings(repository="o/r"),
        hosts=hosts,
        prometheus=None,  # type: ignore[arg-type] - not read by the notice
        runner=None,  # type: ignore[arg-type]
        exporter=None,  # type: ignore[arg-type]
        secrets=None,  # type: ignore[arg-type]
        protect=protect,
    )
