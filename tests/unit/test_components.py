"""Each component built on its own from its typed args, without the config module; and the
one-way dependency rule: components never import fleet.config."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest

from components.exporter import ExporterArgs
from components.github_runner import GitHubRunnerArgs, RunnerRelease, RunnerScope
from components.github_scope import GitHubScope, GitHubScopeArgs, RunnerGroup
from components.prometheus_targets import PrometheusTargets, PrometheusTargetsArgs, ScrapeTarget
from components.remote import Endpoint, Machine
from components.runner_host import RunnerHost, RunnerHostArgs
from tests.conftest import PROJECT, fake_host_key, inner_script, run_under_mocks, unwrap

COMPONENTS = PROJECT / "components"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nCOMPONENTkey\n-----END OPENSSH PRIVATE KEY-----\n"
TOKEN = "ghp_COMPONENTtoken"


def machine(address: str) -> Machine:
    return Machine(Endpoint(address, 2222, "deploy", fake_host_key(address)), pulumi.Output.secret(KEY))


def runner_args(name: str, labels: tuple[str, ...] = ()) -> GitHubRunnerArgs:
    return GitHubRunnerArgs(
        stack="test",
        runner_name=name,
        unit=f"actions.runner.o-r.{name}.service",
        runner_user="github-runner-test",
        arch="arm64",
        labels=labels,
        group=None,
        release=RunnerRelease("2.334.0", "https://example.com/runner.tar.gz", "a" * 64),
        scope=RunnerScope(
            registration_url="https://github.com/o/r",
            api_url="https://api.github.com",
            scope_path="repos/o/r",
            credential=pulumi.Output.secret(TOKEN),
        ),
    )


def host_args() -> RunnerHostArgs:
    return RunnerHostArgs(
        stack="test",
        host_name="box",
        arch="arm64",
        min_disk_mb=10,
        runner_user="github-runner-test",
        exporter=ExporterArgs(
            stack="test",
            host_name="box",
            address="10.0.0.7",
            port=9200,
            version="1.8.2",
            url="https://example.com/ne.tar.gz",
            sha256="b" * 64,
        ),
        runners=(runner_args("r1", ("gpu", "ARM64")), runner_args("r2")),
    )


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(p.name for p in COMPONENTS.glob("*.py")))
def test_components_never_import_the_config_module_or_the_program(module):
    imported = _imports(COMPONENTS / module)
    assert not {m for m in imported if m == "fleet" or m.startswith("fleet.")}, imported


def test_importing_every_component_loads_nothing_from_fleet():
    """The same rule at run time, in a fresh interpreter (nothing imported indirectly either)."""
    code = (
        "import sys, components, components.runner_host, components.prometheus_targets, components.github_scope\n"
        "print(sorted(m for m in sys.modules if m == 'fleet' or m.startswith('fleet.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_args_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        host_args().stack = "other"  # type: ignore[misc]


def test_runner_host_builds_alone_with_its_children_on_its_machine():
    run = run_under_mocks(lambda: RunnerHost("box", host_args(), machine=machine("10.0.0.7")))
    got = sorted((r.type, r.name, r.parent.rsplit("::", 1)[-1]) for r in run.resources)
    assert got == sorted(
        [
            ("fleet:machines:RunnerHost", "box", "runner-fleet-test"),
            ("command:remote:Command", "box-preflight", "box"),
            ("command:remote:Command", "box-runner-user", "box"),
            ("fleet:monitoring:ExporterService", "box-exporter", "box"),
            ("command:remote:Command", "box-exporter-install", "box-exporter"),
            ("command:remote:Command", "box-exporter-runner-metrics", "box-exporter"),
            ("fleet:actions:GitHubRunner", "r1", "box"),
            ("command:remote:Command", "r1-install", "r1"),
            ("command:remote:Command", "r1-registration", "r1"),
            ("command:remote:Command", "r1-service", "r1"),
            ("fleet:actions:GitHubRunner", "r2", "box"),
            ("command:remote:Command", "r2-install", "r2"),
            ("command:remote:Command", "r2-registration", "r2"),
            ("command:remote:Command", "r2-service", "r2"),
        ]
    )
    for command in run.commands():
        connection = unwrap(command.inputs["connection"])
        assert (connection["host"], connection["port"], connection["user"]) == ("10.0.0.7", 2222, "deploy")
        assert connection["privateKey"] == KEY
    preflight = unwrap(run.by_name("box-preflight").inputs)["create"]
    assert "EXPECTED_ARCH=aarch64\n" in preflight  # the host's arch in uname's words
    registration = unwrap(run.by_name("r1-registration").inputs)
    assert "CUSTOM_LABELS=gpu\n" in registration["create"]  # ARM64 is the runner's own label
    assert registration["stdin"] == TOKEN
    service = unwrap(run.by_name("r1-service").inputs)["create"]
    assert "unit=actions.runner.o-r.r1.service" in service
    assert "labels=self-hosted,Linux,ARM64,gpu" in service


def test_prometheus_targets_builds_alone_and_waits_for_every_target():
    args = PrometheusTargetsArgs(
        stack="test",
        port=9091,
        config_path="/etc/prometheus/prometheus.yml",
        targets_dir="/srv/targets",
        job_name="fleet",
        scrape_interval="30s",
        manage_config=False,
        service="prometheus",
        promtool="promtool",
        targets=(
            ScrapeTarget("10.0.0.8:9200", "b", "secondary", ("rb",)),
            ScrapeTarget("10.0.0.7:9200", "a", "primary", ("ra",)),
        ),
        rules="groups: []\n",
    )
    run = run_under_mocks(lambda: PrometheusTargets("prometheus", args, machine=machine("10.0.0.2")))
    assert sorted(r.name for r in run.commands()) == ["prometheus-scrape-job", "prometheus-target-file"]
    target = unwrap(run.by_name("prometheus-target-file").inputs)
    assert "EXPECT='10.0.0.7:9200 10.0.0.8:9200'\n" in inner_script(target["create"])
    assert "TARGET_FILE=runner-fleet-test.json\n" in target["create"]
    assert target["triggers"][1:] == ["/srv/targets/runner-fleet-test.json"]
    job = unwrap(run.by_name("prometheus-scrape-job").inputs)["create"]
    assert "MANAGE_CONFIG=false\n" in job and "PROM_URL=http://127.0.0.1:9091\n" in job
    assert "- job_name: fleet\n  scrape_interval: 30s\n" in job
    assert "RULES_FILE=/etc/prometheus/runner-fleet-fleet.rules.yml\n" in job


def test_github_scope_alone_checks_an_organization_and_creates_its_groups():
    args = GitHubScopeArgs(
        credential=pulumi.Output.secret(TOKEN),
        owner="acme",
        api_url="https://ghe.example.com/api/v3",
        repository=None,
        organization="acme",
        registration_url="https://ghe.example.com/acme",
        runner_groups=(RunnerGroup("ci", "private"),),
    )
    run = run_under_mocks(lambda: GitHubScope("github", args))
    provider = unwrap(run.by_name("github-provider").inputs)
    assert provider["baseUrl"] == "https://ghe.example.com/api/v3/" and provider["owner"] == "acme"
    group = run.by_name("github-group-ci")
    assert unwrap(group.inputs) == {"name": "ci", "visibility": "private"}
    assert sorted(c.token for c in run.calls) == [
        "github:index/getActionsOrganizationRegistrationToken:getActionsOrganizationRegistrationToken",
        "github:index/getOrganization:getOrganization",
    ]
