"""`runner-fleet diagnose`: which runners of the state it looks at, how it ranks what it finds,
and that nothing shaped like a credential reaches its output."""

from __future__ import annotations

import json

import pytest

from fleet import diagnose, verify
from fleet.github_api import Runner
from tests.unit import test_verify as base
from tests.unit.test_verify import PRIMARY, SECONDARY, STACK, cli_run

# The state, config file and key of test_verify.py's fixtures.
config, config_file, export_text, key_file = base.config, base.config_file, base.export_text, base.key_file

UNIT = "actions.runner.rmnanney-PAWS360.dell-r640-01-runner.service"
HEALTHY_UNIT = ["LoadState=loaded", "ActiveState=active", "SubState=running", "Result=success", "NRestarts=0"]
STOPPED_UNIT = ["LoadState=loaded", "ActiveState=inactive", "SubState=dead", "Result=success", "NRestarts=0"]
RUNNER = diagnose.RunnerInfo(
    SECONDARY, f"/opt/runner-fleet/{STACK}/runners/{SECONDARY}", UNIT, "https://api.github.com", "repos/o/r"
)
ONLINE = Runner(7, SECONDARY, "online", False, ("self-hosted",))
OFFLINE = Runner(7, SECONDARY, "offline", False, ("self-hosted",))


def sections(unit=HEALTHY_UNIT, journal=(), diag=(), disk=None, icu="12"):
    d = RUNNER.directory
    return {
        "unit": list(unit),
        "journal": list(journal),
        "diag": list(diag),
        "disk": disk if disk is not None else [f"{d}/_work 5000000 40%", f"{d} 5000000 40%"],
        "icu": [icu],
    }


def causes(data, gh=ONLINE) -> list[str]:
    found, _ = diagnose.analyse_runner("h", RUNNER, data, gh)
    return [c.cause for c in sorted(found, key=lambda c: c.rank)]


def test_healthy_runner_has_no_cause():
    assert causes(sections()) == []


def test_stopped_service():
    assert causes(sections(unit=STOPPED_UNIT), OFFLINE) == ["the runner service is not running"]


def test_deprecated_version_comes_before_the_stopped_service():
    diag = [
        "[2026-12-01 09:00:00Z ERR  Runner] An error occured: "
        "Runner version v2.300.0 is deprecated and cannot receive messages."
    ]
    assert causes(sections(unit=STOPPED_UNIT, diag=diag), OFFLINE) == [
        "GitHub refuses this runner version as deprecated",
        "the runner service is not running",
    ]


def test_deleted_registration_from_the_runner_log_or_from_github():
    journal = [
        "Failed to create a session. The runner registration has been deleted from the server, please re-configure."
    ]
    assert causes(sections(journal=journal), OFFLINE)[0] == (
        "the runner's registration was deleted or its credential revoked on GitHub"
    )
    assert causes(sections(), None) == ["the runner's registration was deleted or its credential revoked on GitHub"]


def test_missing_libicu():
    assert causes(sections(icu="0")) == ["a native dependency of the runner is missing (libicu)"]
    journal = ["Libicu's dependencies is missing for Dotnet Core 6.0"]
    assert causes(sections(journal=journal, unit=STOPPED_UNIT), OFFLINE)[0] == (
        "a native dependency of the runner is missing (libicu)"
    )


def test_full_work_disk():
    d = RUNNER.directory
    found, facts = diagnose.analyse_runner(
        "h", RUNNER, sections(disk=[f"{d}/_work 0 100%", f"{d} 4000000 60%"]), ONLINE
    )
    (cause,) = found
    assert cause.cause == "the runner's work disk is full"
    assert cause.evidence == (f"{d}/_work: 100% used, 0 MiB free",)
    assert facts["disk"][0] == {"path": f"{d}/_work", "free_kb": 0, "used_percent": 100}


def test_offline_while_running():
    assert causes(sections(), OFFLINE) == [
        "the service runs but GitHub sees the runner offline (no connection to GitHub?)"
    ]


def test_credentials_in_log_lines_are_masked():
    token = "ghp_" + "A1b2" * 9
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJydW5uZXIifQ.c2lnbmF0dXJl"
    journal = [f"using {token}", f"Authorization: Bearer {jwt}", "token=abcdefghijkl", "401 Unauthorized"]
    found, facts = diagnose.analyse_runner("h", RUNNER, sections(journal=journal), ONLINE)
    text = json.dumps([list(c.evidence) for c in found]) + json.dumps(facts)
    assert token not in text and jwt not in text and "abcdefghijkl" not in text
    assert "401 Unauthorized" in text


def test_host_memory_and_exporter():
    found, facts = diagnose.analyse_host(
        "h", {"memory": ["MemTotal: 1000000 kB", "MemAvailable: 10000 kB"], "exporter": ["000"]}, 9101
    )
    assert [c.cause for c in found] == ["the host is out of memory", "the node exporter does not answer on :9101"]
    assert facts["exporter"] == "000"


def test_plan_from_the_state(export_text, config_file):
    deployed = verify.read_export(export_text)
    endpoints = verify.read_endpoints(config_file)
    plans = diagnose.plan(deployed, endpoints)
    assert {p.endpoint.name: [r.name for r in p.runners] for p in plans} == {PRIMARY: [PRIMARY], SECONDARY: [SECONDARY]}
    assert {p.endpoint.name: p.exporter_port for p in plans} == {PRIMARY: 9102, SECONDARY: 9101}
    (one,) = diagnose.plan(deployed, endpoints, SECONDARY)
    assert one.runners[0].unit == UNIT and one.runners[0].scope_path == "repos/rmnanney/PAWS360"
    with pytest.raises(verify.VerifyError, match="no runner host 'nope'"):
        diagnose.plan(deployed, endpoints, "nope")


def probe_output(plan: diagnose.HostPlan, unit=HEALTHY_UNIT, journal=()) -> str:
    lines = []
    for r in plan.runners:
        lines += [f"== runner {r.name}", "-- unit", *unit, "-- journal", *journal, "-- diag", "-- disk",
                  f"{r.directory}/_work 5000000 10%", "-- icu", "3"]  # fmt: skip
    lines += ["== host", "-- memory", "MemTotal: 1000000 kB", "MemAvailable: 500000 kB", "-- exporter", "200"]
    return "\n".join(lines) + "\n"


def test_diagnose_ranks_and_reports(export_text, config_file):
    plans = diagnose.plan(verify.read_export(export_text), verify.read_endpoints(config_file))

    def ssh(endpoint, script):
        plan = next(p for p in plans if p.endpoint == endpoint)
        assert "journalctl -u" in script and "_diag/Runner_" in script
        if endpoint.name == PRIMARY:
            raise verify.Unreachable("10.0.0.1:22: Connection refused")
        return probe_output(plan, STOPPED_UNIT, ["Libicu's dependencies is missing for Dotnet Core 6.0"])

    result = diagnose.diagnose(
        STACK,
        plans,
        ssh=ssh,
        runners=lambda api, scope: [OFFLINE],
        outputs={"runners": {"x": 1}},
    )
    assert [(c.host, c.cause) for c in result.causes] == [
        (PRIMARY, "the host cannot be reached"),
        (SECONDARY, "a native dependency of the runner is missing (libicu)"),
        (SECONDARY, "the runner service is not running"),
    ]
    assert result.exit_code == 1
    text = "\n".join(diagnose.render_text(result))
    assert text.startswith(f"stack {STACK}: most likely cause: {PRIMARY} host: the host cannot be reached")
    assert "last deploy outputs:" in text


def test_read_outputs_hides_secrets():
    sig = {verify.SECRET_SIG_KEY: "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "v1:abc"}
    text = json.dumps({"deployment": {"resources": [{"type": "pulumi:pulumi:Stack", "outputs": {"a": 1, "b": sig}}]}})
    assert diagnose.read_outputs(text) == {"a": 1, "b": "[secret]"}


def test_cli_help_and_usage(tmp_path, config_file, key_file, export_text):
    code, out, _ = cli_run(["diagnose", "--help"])
    assert code == 0
    for line in ("0  no problem found", "1  at least one cause", "2  usage", "3  nothing found"):
        assert line in out
    state = tmp_path / "s.json"
    state.write_text(export_text)
    base = ["diagnose", "--stack", STACK, "--state", str(state), "--config-file", str(config_file)]
    code, _, err = cli_run([*base, "--ssh-key", str(key_file), "--host", "nope"])
    assert code == 2 and "no runner host" in err
