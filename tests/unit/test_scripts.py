"""The remote scripts and host files as text and as programs: shellcheck, the rendered Prometheus
files through promtool, the Prometheus and metrics scripts executed locally against stub
commands, the host file templates, and each script's declared inputs against what the program
passes it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from components import layout, shell
from components.exporter import collector_units_content, exporter_unit_content
from components.prometheus_targets import ScrapeTarget, job_block, targets_json
from tests.conftest import IN_CI, SECRET_KEYS, completed_stack_config, inner_scripts, needs, run_program, unwrap

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPTS = sorted(p.name for p in shell.SCRIPTS_DIR.glob("*.sh"))
SCRIPT_NAME_RE = re.compile(r"^(host|exporter|runner|prometheus|grafana|github)-[a-z-]+\.(create|delete|retire)\.sh$")
needs_shellcheck = needs("shellcheck")
needs_promtool = needs("promtool")


@needs_shellcheck
@pytest.mark.parametrize("name", [*SCRIPTS, "host_files/runner-metrics.sh"])
def test_every_script_passes_shellcheck_as_rendered(name, tmp_path):
    """Rendered = lib.sh pasted in and inputs assigned: exactly what runs on the host."""
    rendered = tmp_path / Path(name).name
    if name.startswith("host_files/"):
        rendered.write_text(shell.host_file_text(Path(name).name))
    else:
        rendered.write_text(shell.render(name, {}) if name != "lib.sh" else shell.script_text(name))
    dialect = "sh" if name == "host-preflight.create.sh" else "bash"
    result = subprocess.run(
        ["shellcheck", "-S", "warning", "-s", dialect, str(rendered)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def _declared_inputs(name: str) -> tuple[set[str], set[str]]:
    """What a script says it takes: the names in its `# Inputs:` header comment, and the
    variables its `: "${VAR:?}"` block checks before anything runs."""
    text = (shell.SCRIPTS_DIR / name).read_text()
    header = re.search(r"^# Inputs:(.*\n(?:#  .*\n)*)", text, re.M)
    assert header, f"{name} has no '# Inputs:' header"
    commented = {w for w in re.findall(r"\b[A-Z][A-Z0-9_]+\b", header.group(1))}
    checks = "".join(line + "\n" for line in text.splitlines() if line.startswith(': "'))
    checked = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)[:?]", checks))
    return commented, checked


VIEW_KEYS = ["runner-fleet:githubViewToken"]


def _passed_inputs() -> dict[str, list[tuple[str, set[str]]]]:
    """Per script: (resource.field, the variables the program assigns) for every use of it in
    both committed stacks and an organization-scoped stack with a runner group."""
    uses: dict[str, list[tuple[str, set[str]]]] = {}
    org = completed_stack_config("staging")
    org["github"] = {"organization": "example-org", "runnerGroups": [{"name": "ci"}]}
    org["hosts"][0]["runners"][0]["group"] = "ci"
    org["githubViewToken"] = "github_pat_VIEWtoken0123456789abcdef"  # the GitHub-view collector
    with_grafana = completed_stack_config("production")
    with_grafana["grafana"] = {"provisioningDir": "/etc/grafana/provisioning"}
    for stack, config in (
        ("production", completed_stack_config("production")),
        ("staging", completed_stack_config("staging")),
        ("staging", org),
        ("production", with_grafana),
    ):
        for command in run_program(config, stack, secret_keys=SECRET_KEYS + VIEW_KEYS).commands():
            inputs = unwrap(command.inputs)
            for field in ("create", "delete"):
                if field not in inputs:
                    continue
                for script in inner_scripts(inputs[field]):
                    name = re.search(r"^# runner-fleet (\S+): inputs$", script, re.M).group(1)
                    header = script.split(shell.END_OF_INPUTS, 1)[0]
                    assigned = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", header, re.M))
                    uses.setdefault(name, []).append((f"{command.name}.{field}", assigned))
    return uses


def test_script_files_are_named_after_their_resource_and_operation():
    """`<kind>-<child>.<create|delete>.sh`: the script of child `<name>-<child>` of a host,
    exporter, runner or the Prometheus component; each is run by a command of that name.
    `<kind>-<child>.retire.sh` runs first in that child's delete."""
    uses = _passed_inputs()
    assert sorted(uses) == [s for s in SCRIPTS if s != "lib.sh"], "a script no command runs, or a missing one"
    for name, resources in uses.items():
        assert SCRIPT_NAME_RE.match(name), name
        child, operation = name.removesuffix(".sh").rsplit(".", 1)
        child = child.split("-", 1)[1]
        operation = "delete" if operation == "retire" else operation  # runs first in the delete
        for resource, _ in resources:
            assert resource.endswith(f"-{child}.{operation}"), (name, resource)


def test_every_script_declares_exactly_the_inputs_the_program_passes():
    uses = _passed_inputs()
    for name, resources in uses.items():
        commented, checked = _declared_inputs(name)
        assert commented == checked, f"{name}: '# Inputs:' header and the checks block differ"
        for resource, assigned in resources:
            assert assigned == checked, (
                f"{name} for {resource}: passed but not declared {sorted(assigned - checked)}, "
                f"declared but not passed {sorted(checked - assigned)}"
            )


def test_host_files_render_only_plain_tokens():
    """A value that could end a unit line or carry a specifier never reaches a host file."""
    values = {"stack": "lab", "service_unit": "x.service"}
    assert "Unit=x.service\n" in shell.host_file("runner-metrics.timer.tmpl", values)
    assert "##" not in shell.host_file("runner-metrics.timer.tmpl", values)
    for bad in ("a b", "x\nExecStartPre=/bin/evil", "%h", "$HOME", "a#b", ""):
        with pytest.raises(ValueError, match="not a plain token"):
            shell.host_file("runner-metrics.timer.tmpl", {**values, "service_unit": bad})
    with pytest.raises(ValueError, match="missing \\['service_unit'\\]"):
        shell.host_file("runner-metrics.timer.tmpl", {"stack": "lab"})
    with pytest.raises(ValueError, match="unknown \\['extra'\\]"):
        shell.host_file("runner-metrics.timer.tmpl", {**values, "extra": "x"})


def test_rendering_quotes_every_value():
    text = shell.render("runner-install.delete.sh", {"RUNNER_NAME": "a'b $(x)", "RUNNER_DIR": "/x y"})
    assert text.startswith("#!/usr/bin/env bash\n# runner-fleet runner-install.delete.sh: inputs\n")
    assert "RUNNER_NAME='a'\"'\"'b $(x)'\n" in text
    assert "RUNNER_DIR='/x y'\n" in text
    with pytest.raises(ValueError):
        shell.render("runner-install.delete.sh", {"bad name": "x"})


def test_command_text_runs_the_script_through_sudo_bash(tmp_path):
    """The exact form pulumi-command hands to the login shell; run it with a stub sudo."""
    stub = tmp_path / "sudo"
    stub.write_text('#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n')
    stub.chmod(0o755)
    variables = {
        "RUNNER_NAME": "r1",
        "RUNNER_DIR": "/nowhere",
        "DOWNLOAD_DIR": "/nowhere.d",
        "RUNNERS_DIR": "/x/runners",
    }
    text = shell.command("runner-install.delete.sh", variables)
    assert text.startswith("sudo -n /bin/bash -c '")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = subprocess.run(["/bin/sh", "-c", text], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 1
    assert "refusing to delete /nowhere: not under /x/runners" in result.stderr


def test_target_file_has_one_group_per_exporter_with_environment_role_host_and_runners():
    content = targets_json(
        "production",
        [
            ScrapeTarget("192.168.0.51:9101", "dell-r640-01-runner", "secondary", ("dell-r640-01-runner",)),
            ScrapeTarget("192.168.0.13:9102", "Serotonin-paws360", "primary", ("Serotonin-paws360",)),
        ],
    )
    assert json.loads(content) == [
        {
            "labels": {
                "environment": "production",
                "host": "Serotonin-paws360",
                "role": "primary",
                "runners": "Serotonin-paws360",
            },
            "targets": ["192.168.0.13:9102"],
        },
        {
            "labels": {
                "environment": "production",
                "host": "dell-r640-01-runner",
                "role": "secondary",
                "runners": "dell-r640-01-runner",
            },
            "targets": ["192.168.0.51:9101"],
        },
    ]


def test_program_renders_that_target_file_into_its_command():
    run = run_program(completed_stack_config("staging"), "staging")
    create = unwrap(run.by_name("prometheus-target-file").inputs)["create"]
    assert "TARGET_FILE=runner-fleet-staging.json" in create
    assert "EXPECT=192.168.0.51:9103" in create
    assert '\\"environment\\": \\"staging\\"' in json.dumps(create) or '"environment": "staging"' in create


@needs_promtool
def test_rendered_target_file_and_job_pass_promtool(tmp_path):
    targets_dir = tmp_path / "runner-fleet"
    targets_dir.mkdir()
    for stack in ("production", "staging"):
        run = run_program(completed_stack_config(stack), stack)
        create = unwrap(run.by_name("prometheus-target-file").inputs)["create"]
        content = _assigned(create, "TARGETS_JSON")
        (targets_dir / f"runner-fleet-{stack}.json").write_text(content + "\n")
    config = tmp_path / "prometheus.yml"
    block = job_block("github-runner-health", str(targets_dir), "15s")
    config.write_text("scrape_configs:\n" + "\n".join("  " + line for line in block.splitlines()) + "\n")
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool really reads the target files: a broken one fails the same check.
    (targets_dir / "runner-fleet-staging.json").write_text('[{"targets": "not-a-list"}]')
    broken = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert broken.returncode != 0 and "checking SD file" in broken.stdout + broken.stderr


def _assigned(script: str, var: str) -> str:
    """The value a rendered script assigns to `var`, as the shell sees it."""
    if script.startswith("sudo -n /bin/bash -c "):
        script = shlex.split(script)[4]  # the command text pulumi-command runs: unwrap it
    header = script.split(shell.END_OF_INPUTS, 1)[0]
    out = subprocess.run(["bash", "-c", f'{header}\nprintf %s "${var}"'], capture_output=True, text=True, check=True)
    return out.stdout


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _fake_service(tmp_path: Path, *names: str) -> subprocess.Popen[bytes]:
    """A unit's process tree: a main process whose children carry the runner's process names
    (copies of `sleep`, which the kernel names after the file), in a session of their own."""
    progs = tmp_path / "progs"
    progs.mkdir(parents=True)
    for name in names:
        shutil.copy(shutil.which("sleep") or "/bin/sleep", progs / name)
    children = " ".join(f"{shlex.quote(str(progs / n))} 60 &" for n in names)
    proc = subprocess.Popen(["bash", "-c", f"{children} wait"], start_new_session=True)

    def child_names() -> list[str]:
        found = []
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat_file.read_text()
            except OSError:
                continue
            if text[text.rindex(")") + 2 :].split()[1] == str(proc.pid):
                found.append(text[text.index("(") + 1 : text.rindex(")")])
        return sorted(found)

    deadline = time.monotonic() + 10
    while child_names() != sorted(names) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


@needs_promtool
def test_runner_metrics_pass_promtool_check_metrics(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Service "a" active and busy (listener and worker), "b" active and disconnected, "c" stopped,
    # "d" active but its listener is gone (its log still says listening).
    services = {
        "a": _fake_service(tmp_path / "a-svc", "Runner.Listener", "Runner.Worker"),
        "b": _fake_service(tmp_path / "b-svc", "Runner.Listener"),
        "d": _fake_service(tmp_path / "d-svc", "RunnerService"),
        "e": _fake_service(tmp_path / "e-svc", "Runner.Listener"),
    }
    pids = " ".join(f"{name}.service) echo {proc.pid};;" for name, proc in services.items())
    _stub(
        bin_dir,
        "systemctl",
        'case "$1" in\n'
        '  is-active) case "$3" in a.service|b.service|d.service|e.service) exit 0;; esac; exit 3;;\n'
        f'  show) case "$5" in {pids} *) echo 0;; esac;;\n'
        "esac\n",
    )
    try:
        _check_runner_metrics(tmp_path, bin_dir)
    finally:
        for proc in services.values():
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


def _check_runner_metrics(tmp_path: Path, bin_dir: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    logs = {
        "a": "[2026-11-27 05:00:00Z INFO Terminal] WRITE LINE: 2026-11-27 05:00:00Z: Listening for Jobs\n"
        "[2026-11-27 05:01:00Z INFO Terminal] WRITE LINE: 2026-11-27 05:01:00Z: Running job: build\n",
        "b": "WRITE LINE: 2026-11-27 05:00:00Z: Listening for Jobs\n"
        "[x ERR  Terminal] WRITE ERROR: 2026-11-27 05:02:00Z: Runner connect error: gone. "
        "Retrying until reconnected.\n",
        "c": "WRITE LINE: 2026-11-27 05:00:00Z: Listening for Jobs\n",
        "d": "WRITE LINE: 2026-11-27 05:00:00Z: Listening for Jobs\n",
        "e": "[2026-11-27 05:00:00Z INFO MessageListener] Attempt to create session.\n",
    }
    for name, log in logs.items():
        diag = tmp_path / name / "_diag"
        diag.mkdir(parents=True)
        (diag / "Runner_20261127-050000-utc.log").write_text(log)
        (conf / f"{name}.conf").write_text(
            f"name={name}\ndir={tmp_path / name}\nunit={name}.service\n"
            "version=2.334.0\nlabels=self-hosted,Linux,X64,x\n"
        )
    out_dir = tmp_path / "textfile"
    out_dir.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    script = shell.host_file_text("runner-metrics.sh")
    out = out_dir / "runner-fleet-runners.prom"
    subprocess.run(["bash", "-c", script, "runner-metrics", str(conf), str(out)], env=env, check=True)
    assert sorted(p.name for p in out_dir.iterdir()) == [out.name, "runner-fleet-runners.state"]
    text = out.read_text()
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    values = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")}
    assert values['github_runner_service_active{runner="a"}'] == "1"
    assert values['github_runner_busy{runner="a"}'] == "1"
    assert values['github_runner_online{runner="a"}'] == "1"
    assert values['github_runner_online{runner="b"}'] == "0"
    assert values['github_runner_service_active{runner="c"}'] == "0"
    assert values['github_runner_online{runner="c"}'] == "0"
    assert values['github_runner_busy{runner="b"}'] == "0"
    assert values['github_runner_service_active{runner="d"}'] == "1"
    assert values['github_runner_online{runner="d"}'] == "0", "no listener: offline, whatever its log says"
    assert values['github_runner_online{runner="e"}'] == "0", "a listener that has not said it listens yet"
    info = 'github_runner_info{runner="c",version="2.334.0",labels="self-hosted,Linux,X64,x",unit="c.service"}'
    assert values[info] == "1"


def test_units_are_hardened_and_stack_scoped():
    unit = exporter_unit_content("staging", "1.8.2", 9103)
    for setting in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n"):
        assert setting in unit
    assert "--web.listen-address=:9103" in unit
    assert "/opt/runner-fleet/staging/node-exporter/1.8.2/node_exporter" in unit
    service, timer = collector_units_content("staging")
    assert "ReadWritePaths=/var/lib/runner-fleet/staging/textfile" in service
    assert "OnUnitActiveSec=15s" in timer


@needs_shellcheck
def test_every_shell_script_in_the_repository_passes_shellcheck():
    """The lab's and the tooling's scripts too, not only the remote ones."""
    project = shell.SCRIPTS_DIR.parent.parent
    listed = subprocess.run(["git", "ls-files"], cwd=project, capture_output=True, text=True, check=False)
    candidates = listed.stdout.split() if listed.returncode == 0 else []
    scripts = [
        project / name
        for name in candidates
        if (project / name).is_file()
        and (project / name).read_bytes()[:2] == b"#!"
        and (project / name).read_text(errors="replace").split("\n", 1)[0].endswith(("bash", "/sh"))
    ]
    if not scripts and not IN_CI:
        pytest.skip("not a git checkout")
    assert len(scripts) >= 20
    result = subprocess.run(
        ["shellcheck", "-S", "warning", *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_names_shared_on_hosts_are_spelled_only_in_layout():
    """Scripts and host files get every shared path and name as an input, so each is defined
    once (components/layout.py) and a change there reaches every script."""
    shared = {
        name: value
        for name, value in vars(layout).items()
        if name.isupper() and isinstance(value, str) and value.startswith(("/", "."))
    }
    shared["METRICS_FILE"] = layout.METRICS_FILE
    assert {"ROOT", "STATE", "ETC", "SYSTEMD_DIR", "PROMETHEUS_LOCK", "RELEASE_MARKER"} <= set(shared)
    files = [*shell.SCRIPTS_DIR.iterdir(), *shell.HOST_FILES_DIR.iterdir()]
    for path in files:
        text = path.read_text()
        for name, value in shared.items():
            assert value not in text, f"{path.name} spells layout.{name} ({value}); pass it as an input"
