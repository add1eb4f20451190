"""The monitoring host's scripts against the real promtool, with systemctl and Prometheus's HTTP
API stubbed: the scrape job and the alert rules converge to the configured state, nothing is
moved into place before promtool accepts it, a broken live file or a stopped Prometheus is
reported as such, a failed reload puts everything back, and the target file never waits for a
target to be up."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from components import layout, shell
from components.prometheus_targets import ScrapeTarget, job_block, targets_json
from fleet.program import alert_rules
from tests.conftest import IN_CI, needs

FIXTURES = Path(__file__).parent / "fixtures"
needs_promtool = needs("promtool")
pytestmark = needs_promtool
JOB = "github-runner-health"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


class Host:
    """A fake monitoring host in a temp dir: real promtool; systemctl and curl stubs that act
    like a Prometheus whose reload succeeds (or fails, with `fail-reload`) and records when."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.config = tmp_path / "prometheus.yml"
        self.targets = tmp_path / "targets"
        self.rules_file = Path(layout.rules_file(str(self.config), JOB))
        self.set_stamp(1.0)  # Prometheus's last successful reload, long ago
        (self.state / "ok").write_text("1")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        s = self.state
        _stub(
            bin_dir,
            "systemctl",
            f'echo "$*" >>{s}/systemctl.log\n'
            f'case "$1" in\n'
            f"  is-active) if [ -e {s}/stopped ]; then echo inactive; exit 3; fi; echo active ;;\n"
            f"  reload) if [ -e {s}/fail-reload ]; then echo 0 >{s}/ok;"
            f" else date +%s.%N >{s}/stamp; echo 1 >{s}/ok; fi ;;\n"
            "esac\n",
        )
        _stub(
            bin_dir,
            "curl",
            "for a; do url=$a; done\n"
            f"[ -e {s}/stopped ] && exit 7\n"
            'case "$url" in\n'
            f'  */metrics) echo "prometheus_config_last_reload_successful $(cat {s}/ok)";'
            f' echo "prometheus_config_last_reload_success_timestamp_seconds $(cat {s}/stamp)" ;;\n'
            f"  */api/v1/targets*) cat {s}/targets.json 2>/dev/null ;;\n"
            "esac\n",
        )
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def set_stamp(self, value: float) -> None:
        (self.state / "stamp").write_text(f"{value}\n")

    def reloads(self) -> int:
        log = self.state / "systemctl.log"
        return sum(line.startswith("reload") for line in log.read_text().splitlines()) if log.exists() else 0

    def run(self, script: str, variables: dict) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", shell.render(script, variables)], capture_output=True, text=True, env=self.env, check=False
        )

    def common(self) -> dict:
        return {
            "CONFIG_PATH": str(self.config),
            "TARGETS_DIR": str(self.targets),
            "JOB_NAME": JOB,
            "SERVICE": "prometheus",
            "PROMTOOL": "promtool",
            "PROM_URL": "http://127.0.0.1:9090",
            "LOCK_FILE": str(self.root / "prometheus.lock"),
            "RULES_FILE": str(self.rules_file),
        }

    def job(self, *, manage: bool = True, interval: str = "15s", rules: str | None = None):
        return self.run(
            "prometheus-scrape-job.create.sh",
            {
                **self.common(),
                "TARGETS_GLOB": layout.targets_glob(str(self.targets)),
                "JOB_BLOCK": job_block(JOB, str(self.targets), interval),
                "MANAGE_CONFIG": manage,
                "RULES": (rules if rules is not None else alert_rules(JOB)).rstrip("\n"),
            },
        )

    def destroy_job(self):
        return self.run("prometheus-scrape-job.delete.sh", {**self.common(), "MANAGE_CONFIG": True})

    def debris(self) -> list[str]:
        return sorted(p.name for p in self.root.glob(".*runner-fleet*"))


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def promtool_ok(path: Path) -> bool:
    return subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize("fixture", ["fixture", "debian-default"])
def test_job_and_rules_are_added_without_disturbing_the_rest(host, fixture):
    source = FIXTURES / "prometheus.yml" if fixture == "fixture" else Path("/etc/prometheus/prometheus.yml")
    if not source.exists() and not IN_CI:
        pytest.skip("Debian's prometheus.yml is not installed")
    shutil.copy(source, host.config)
    original = host.config.read_text().splitlines()

    result = host.job()
    assert result.returncode == 0, result.stderr
    new = host.config.read_text().splitlines()
    it = iter(new)
    assert all(line in it for line in original)  # only additions, every original line in order
    added = [line for line in new if line not in original]
    assert any(line.strip() == f"- job_name: {JOB}" for line in added)
    assert any(line.strip().startswith(f"- {host.rules_file}  #") for line in added)
    assert host.rules_file.read_text() == alert_rules(JOB)
    assert oct(host.rules_file.stat().st_mode & 0o777) == "0o644"
    assert promtool_ok(host.config)
    assert host.reloads() == 1 and "Prometheus reloaded" in result.stdout
    assert host.debris() == []

    again = host.job()
    assert again.returncode == 0 and "as configured" in again.stdout, again.stderr
    assert host.config.read_text().splitlines() == new
    assert host.reloads() == 1  # nothing changed, nothing reloaded

    # A run killed after moving the files into place but before the reload: they are newer than
    # Prometheus's last successful reload, so the next run reloads.
    host.set_stamp(1.0)
    healed = host.job()
    assert healed.returncode == 0 and "reloaded to pick them up" in healed.stdout
    assert host.reloads() == 2
    assert host.config.read_text().splitlines() == new


def test_changed_job_settings_rewrite_the_job_in_place_and_only_it(host):
    shutil.copy(FIXTURES / "prometheus.yml", host.config)
    assert host.job().returncode == 0
    before = host.config.read_text().splitlines()
    result = host.job(interval="30s")
    assert result.returncode == 0, result.stderr
    after = host.config.read_text().splitlines()
    assert len(after) == len(before)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [("    scrape_interval: 15s", "    scrape_interval: 30s")]
    assert host.reloads() == 2 and promtool_ok(host.config)
    # Hand edits inside the job are the program's to undo; the user's other jobs stay untouched.
    text = host.config.read_text().replace("      refresh_interval: 1m", "      refresh_interval: 5m")
    host.config.write_text(text)
    assert host.job(interval="30s").returncode == 0
    assert host.config.read_text().splitlines() == after


def test_a_hand_broken_config_is_reported_with_promtools_message_and_left_alone(host):
    shutil.copy(FIXTURES / "prometheus.yml", host.config)
    assert host.job().returncode == 0
    broken = host.config.read_text().replace("scrape_interval: 15s # how often", "scrape_interval: often # how often")
    host.config.write_text(broken)
    result = host.job(interval="30s")
    assert result.returncode == 1
    assert "promtool rejects" in result.stderr and "changed by hand?" in result.stderr
    assert "often" in result.stderr  # promtool's own words reach the user
    assert host.config.read_text() == broken
    assert host.reloads() == 1 and host.debris() == []


def test_a_candidate_promtool_rejects_changes_nothing(host):
    host.config.write_text("global:\n  scrape_interval: 1m\n")  # no scrape_configs, no rule_files yet
    result = host.job()
    assert result.returncode == 0, result.stderr
    assert promtool_ok(host.config)
    before = host.config.read_text()
    rules_before = host.rules_file.read_text()
    bad = host.job(interval="15s", rules="groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: 'up =='\n")
    assert bad.returncode == 1
    assert "promtool rejected runner-fleet's alert rules" in bad.stderr and "previous rules keep serving" in bad.stderr
    assert "parse error" in bad.stderr or "unexpected" in bad.stderr
    assert host.config.read_text() == before and host.rules_file.read_text() == rules_before
    assert host.reloads() == 1 and host.debris() == []


def test_prometheus_down_is_reported_as_not_running(host):
    shutil.copy(FIXTURES / "prometheus.yml", host.config)
    before = host.config.read_text()
    (host.state / "stopped").touch()
    result = host.job()
    assert result.returncode == 1
    assert "Prometheus is not running" in result.stderr and "job" not in result.stderr.split("Prometheus is")[0]
    assert host.config.read_text() == before and not host.rules_file.exists()


def test_a_failed_reload_puts_both_files_back(host):
    shutil.copy(FIXTURES / "prometheus.yml", host.config)
    assert host.job().returncode == 0
    before, rules_before = host.config.read_text(), host.rules_file.read_text()
    (host.state / "fail-reload").touch()
    result = host.job(interval="30s", rules=alert_rules(JOB) + "\n# a new revision\n")
    assert result.returncode == 1 and "put back as they were" in result.stderr
    assert host.config.read_text() == before and host.rules_file.read_text() == rules_before
    assert host.debris() == []


def test_unmanaged_config_is_only_checked(host):
    shutil.copy(FIXTURES / "prometheus.yml", host.config)
    before = host.config.read_text()
    result = host.job(manage=False)
    assert result.returncode == 1
    assert "missing from" in result.stderr and f"- job_name: {JOB}" in result.stderr
    assert host.config.read_text() == before
    # With the job and the rules entry added by the user, it passes and writes only the rules.
    assert host.job().returncode == 0
    managed = host.config.read_text()
    newer = alert_rules(JOB) + "# a new revision\n"
    result = host.job(manage=False, rules=newer)
    assert result.returncode == 0, result.stderr
    assert host.config.read_text() == managed and host.rules_file.read_text() == newer


def test_destroy_keeps_the_rules_while_another_stack_is_monitored_and_the_last_removes_them(host):
    shutil.copy(FIXTURES / "prometheus.yml", host.config)
    assert host.job().returncode == 0
    host.targets.mkdir(exist_ok=True)
    (host.targets / "runner-fleet-staging.json").write_text("[]\n")
    kept = host.destroy_job()
    assert kept.returncode == 0 and "stay" in kept.stdout and host.rules_file.exists()
    (host.targets / "runner-fleet-staging.json").unlink()
    configured = host.config.read_text().splitlines()
    last = host.destroy_job()
    assert last.returncode == 0, last.stderr
    assert not host.rules_file.exists() and host.reloads() == 2
    # Only the rules entry went: the job and the user's lines stay.
    assert [line for line in configured if str(host.rules_file) not in line] == host.config.read_text().splitlines()
    assert promtool_ok(host.config)
    assert host.destroy_job().returncode == 0  # again: nothing left to do


def _target_file_vars(host: Host, content: str, expect: str) -> dict:
    common = host.common()
    return {
        "STACK": "staging",
        "TARGETS_DIR": str(host.targets),
        "TARGETS_GLOB": layout.targets_glob(str(host.targets)),
        "LOCK_FILE": common["LOCK_FILE"],
        "TARGET_FILE": "runner-fleet-staging.json",
        "TARGETS_JSON": content,
        "PROMTOOL": "promtool",
        "PROM_URL": common["PROM_URL"],
        "JOB_NAME": JOB,
        "EXPECT": expect,
        "SERVICE": "prometheus",
        "CONFIG_PATH": common["CONFIG_PATH"],
    }


def _active(*targets: tuple[str, str, str]) -> str:
    return json.dumps(
        {
            "data": {
                "activeTargets": [
                    {
                        "discoveredLabels": {"__address__": address},
                        "scrapePool": JOB,
                        "scrapeUrl": f"http://{address}/metrics",
                        "lastError": error,
                        "health": health,
                    }
                    for address, health, error in targets
                ]
            }
        },
        separators=(",", ":"),  # as Prometheus writes it
    )


def test_target_file_validates_publishes_and_reports_down_targets_without_waiting(host):
    shutil.copy(FIXTURES / "prometheus.yml", host.config)
    content = targets_json(
        "staging",
        [ScrapeTarget("10.0.0.5:9103", "a", "primary", ("r",)), ScrapeTarget("10.0.0.6:9103", "b", "secondary", ())],
    )
    (host.state / "targets.json").write_text(
        _active(("10.0.0.5:9103", "up", ""), ("10.0.0.6:9103", "down", "connect: no route to host"))
    )
    variables = _target_file_vars(host, content, "10.0.0.5:9103 10.0.0.6:9103")
    (host.targets / ".runner-fleet-killed").mkdir(parents=True)  # a run killed half-way
    result = host.run("prometheus-target-file.create.sh", variables)
    assert result.returncode == 0, result.stderr
    assert json.loads((host.targets / "runner-fleet-staging.json").read_text()) == json.loads(content)
    assert sorted(p.name for p in host.targets.iterdir()) == ["runner-fleet-staging.json"]
    assert "up: 10.0.0.5:9103" in result.stdout
    assert "10.0.0.6:9103: down (connect: no route to host)" in result.stdout

    bad = host.run("prometheus-target-file.create.sh", {**variables, "TARGETS_JSON": '[{"targets": "not-a-list"}]'})
    assert bad.returncode == 1 and "promtool rejected the target file" in bad.stderr
    assert json.loads((host.targets / "runner-fleet-staging.json").read_text()) == json.loads(content)
    assert sorted(p.name for p in host.targets.iterdir()) == ["runner-fleet-staging.json"]


def test_target_file_is_written_while_prometheus_is_down_and_says_so(host):
    shutil.copy(FIXTURES / "prometheus.yml", host.config)
    (host.state / "stopped").touch()
    content = targets_json("staging", [ScrapeTarget("10.0.0.5:9103", "a", "primary", ("r",))])
    result = host.run("prometheus-target-file.create.sh", _target_file_vars(host, content, "10.0.0.5:9103"))
    assert result.returncode == 1 and "Prometheus is not running" in result.stderr
    assert "is in place and is read when it starts" in result.stderr
    assert json.loads((host.targets / "runner-fleet-staging.json").read_text()) == json.loads(content)


def test_target_file_reports_a_hand_broken_config(host):
    host.config.write_text("global:\n  scrape_interval: often\n")
    (host.state / "targets.json").write_text(_active(("10.0.0.5:9103", "up", "")))
    content = targets_json("staging", [ScrapeTarget("10.0.0.5:9103", "a", "primary", ("r",))])
    result = host.run("prometheus-target-file.create.sh", _target_file_vars(host, content, "10.0.0.5:9103"))
    assert result.returncode == 1 and "promtool rejects" in result.stderr and "often" in result.stderr
    assert (host.targets / "runner-fleet-staging.json").exists()
