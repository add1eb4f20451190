"""The runner's service and the host steps around it, on real lab hosts and locally.

Lab scenarios (marked `lab`; each asks for the stacks it starts from, as tests/lab/test_fleet.py):
- the runner's unit: a service host that dies comes back, a stop leaves no job process behind,
  a stop is bounded even when the runner does not react; the exposure of every unit measured;
- the collector's online/busy gauges survive a log roll-over and a restart of the runner;
- interrupted installs (the remote command killed at chosen points by a tool wrapper on the
  host, the way a killed SSH session or a crash leaves it) converge on the next run, with no
  debris in /tmp or the download directories.
Local tests (no lab host): the service scripts only touch a unit that runs their own runner
directory (on GitHub Enterprise Server two stacks' runners of one name share a unit name).
The lab runs the program's commands through lab/executor (an imitation of the engine), not
through the Pulumi CLI.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from components import layout
from components.shell import render
from lab.fleet import PRODUCTION
from tests.lab import test_fleet as scenarios
from tests.lab.test_fleet import PROD, RUNNER_UNITS, assert_ok, scrape, wait_for

# The scenario fixtures of tests/lab/test_fleet.py (this module gets its own lab).
fleet = scenarios.fleet
no_staging = scenarios.no_staging
production = scenarios.production
fresh = scenarios.fresh

lab = pytest.mark.lab
HOST = "runner-a"
RUNNER = "lab-primary"
UNIT = RUNNER_UNITS[RUNNER][1]
RUNNER_DIR = layout.runner_dir(PROD, RUNNER)
PORT = 9102
USER = f"github-runner-{PROD}"


def root(fleet, command: str, timeout: float = 120) -> str:
    rc, out, err = fleet.lab.run_on(HOST, f"sudo -n bash -c {shlex.quote(command)}", timeout=timeout)
    assert rc == 0, f"{command}: {err}"
    return out.strip()


# The unit's cgroup directories: the unified hierarchy (systemd's process tracking) and, on a
# hybrid host such as the lab's containers, the named v1 hierarchy too.
CGROUP_DIRS = (
    f"cg=$(systemctl show -p ControlGroup --value {UNIT}); "
    "for r in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do "
    '[ -f "$r$cg/cgroup.procs" ] && echo "$r$cg"; done; true'
)


def unit_pids(fleet, comm: str) -> list[int]:
    """PIDs in the unit's cgroup whose kernel name is `comm`."""
    out = root(
        fleet,
        f"for d in $({CGROUP_DIRS}); do cat $d/cgroup.procs; done | sort -u | "
        f'while read -r p; do [ "$(cat /proc/$p/comm 2>/dev/null)" = {shlex.quote(comm)} ] && echo $p; done; true',
    )
    return [int(pid) for pid in out.split()]


def online(fleet) -> bool:
    return fleet.double.runner(RUNNER)["status"] == "online"


def gauges(fleet) -> dict[str, str]:
    text = scrape(fleet, HOST, PORT)
    found = {}
    for name in ("online", "busy", "service_active"):
        m = re.search(rf'^github_runner_{name}{{runner="{RUNNER}"}} (\d)$', text, re.M)
        found[name] = m.group(1) if m else "?"
    return found


def user_processes(fleet) -> str:
    return root(fleet, f"ps -u {USER} -o pid=,comm= || true")


def exposure(fleet, unit: str) -> float:
    out = root(fleet, f"systemd-analyze security --no-pager {unit} 2>&1 | tail -n1")
    m = re.search(r"exposure level for \S+: ([0-9.]+)", out)
    assert m, out
    return float(m.group(1))


@lab
def test_runner_unit_restarts_a_dead_service_and_stops_cleanly_and_in_bounded_time(production):
    fleet = production
    print("systemd-analyze security exposure on", HOST)
    figures = {
        unit: exposure(fleet, unit)
        for unit in (
            UNIT,
            layout.exporter_unit(PROD),
            layout.collector_units(PROD)[0],
        )
    }
    for unit, value in figures.items():
        print(f"  {unit}: {value}")
    assert figures[layout.exporter_unit(PROD)] <= 2.0
    assert figures[layout.collector_units(PROD)[0]] <= 2.0
    shown = root(fleet, f"systemctl show -p KillMode -p Restart -p TimeoutStopUSec {UNIT}").split("\n")
    assert dict(line.split("=", 1) for line in shown) == {
        "Restart": "on-failure",
        "TimeoutStopUSec": "1min",
        "KillMode": "mixed",
    }
    try:
        # 1. The service host dies (SIGKILL to the unit's main process, as the OOM killer does):
        # svc.sh's unit (no Restart=) stays down; this one is started again.
        main = root(fleet, f"systemctl show -p MainPID --value {UNIT}")
        started = time.monotonic()
        root(fleet, f"kill -KILL {main}")
        wait_for(
            lambda: root(fleet, f"systemctl is-active {UNIT} || true") == "active"
            and root(fleet, f"systemctl show -p MainPID --value {UNIT}") not in ("0", main),
            timeout=60,
            what="the unit restarted",
        )
        wait_for(lambda: online(fleet), timeout=60, what="online again")
        print(f"  back online {time.monotonic() - started:.1f} s after the service host was killed")
        wait_for(lambda: gauges(fleet)["online"] == "1", timeout=60, what="online gauge")

        # 2. A busy runner and a process the job left behind (it ignores SIGTERM/SIGINT/SIGHUP):
        # a stop ends the job and kills the rest; svc.sh's KillMode=process leaves it running.
        fleet.double.set_busy(RUNNER, True, job="long build")
        wait_for(lambda: unit_pids(fleet, "Runner.Worker"), timeout=30, what="a Runner.Worker in the unit")
        wait_for(lambda: gauges(fleet)["busy"] == "1", timeout=60, what="busy gauge")
        leftover = root(
            fleet,
            "setsid bash -c 'trap \"\" TERM INT HUP; exec sleep 600' </dev/null >/dev/null 2>&1 & "
            f"pid=$!; for d in $({CGROUP_DIRS}); do echo $pid > $d/cgroup.procs; done; echo $pid",
        )
        assert int(leftover) in unit_pids(fleet, "sleep"), "the job's leftover process is in the unit"
        started = time.monotonic()
        root(fleet, f"systemctl stop {UNIT}", timeout=120)
        stop_seconds = time.monotonic() - started
        print(f"  stop of a busy runner took {stop_seconds:.1f} s")
        assert root(fleet, f"kill -0 {leftover} 2>/dev/null && echo alive || echo gone") == "gone"
        assert user_processes(fleet) == "", "no runner process survives a stop"
        fleet.double.set_busy(RUNNER, False)

        # 3. A runner that does not react to the stop (its service host frozen): the stop is bounded
        # by TimeoutStopSec=60s (svc.sh's unit: 5 min), and still leaves nothing behind.
        root(fleet, f"systemctl start {UNIT}")
        wait_for(lambda: online(fleet), timeout=60, what="online after start")
        (host_pid,) = wait_for(lambda: unit_pids(fleet, "RunnerService"), timeout=30, what="RunnerService")
        root(fleet, f"kill -STOP {host_pid}")
        started = time.monotonic()
        root(fleet, f"timeout 120 systemctl stop {UNIT}", timeout=150)
        bounded = time.monotonic() - started
        print(f"  stop of a frozen runner took {bounded:.1f} s (bound 60 s)")
        assert 55 <= bounded <= 80
        assert user_processes(fleet) == ""
    finally:
        fleet.double.set_busy(RUNNER, False)
        root(fleet, f"systemctl start {UNIT}")
        wait_for(lambda: online(fleet), timeout=90, what="online at the end")


@lab
def test_collector_reports_online_and_busy_across_a_log_rollover_and_a_restart(production):
    """RUNNER_LOGSIZE=1 (MB, from the runner's .env) and jobs with long names, so the runner's log
    rolls to a new page; the page with "Listening for Jobs" is no longer the newest one."""
    fleet = production
    env = f"{RUNNER_DIR}/.env"
    diag = f"{RUNNER_DIR}/_diag"
    root(fleet, f"grep -q '^RUNNER_LOGSIZE=' {env} || echo RUNNER_LOGSIZE=1 >> {env}")
    try:
        root(fleet, f"systemctl restart {UNIT}")
        wait_for(lambda: online(fleet), timeout=60, what="online after restart")
        wait_for(lambda: gauges(fleet) == {"online": "1", "busy": "0", "service_active": "1"}, timeout=60)

        def pages() -> set[str]:
            return set(root(fleet, f"cd {diag} && ls Runner_*.log").split())

        def worker() -> bool:
            return bool(unit_pids(fleet, "Runner.Worker"))

        # Jobs with 100 KiB names (an argument of Runner.Worker stays under the kernel's 128 KiB
        # limit) until the page rolls: "Running job:" and "completed" write the name each time.
        before = pages()
        for n in range(12):
            if pages() - before:
                break
            fleet.double.set_busy(RUNNER, True, job=f"big-{n}-" + "x" * (100 * 1024))
            wait_for(worker, timeout=30, what="the job's Runner.Worker")
            fleet.double.set_busy(RUNNER, False)
            wait_for(lambda: not worker(), timeout=30, what="the job to end")
        assert pages() - before, "the runner's log rolled to a new page"
        fleet.double.set_busy(RUNNER, True, job="after the roll-over")
        wait_for(worker, timeout=30, what="the job's Runner.Worker")
        newest = root(fleet, f"ls -t {diag}/Runner_*.log | head -n1")
        assert root(fleet, f"grep -c 'Listening for Jobs' {newest} || true") == "0", newest
        wait_for(lambda: gauges(fleet) == {"online": "1", "busy": "1", "service_active": "1"}, timeout=60)
        fleet.double.set_busy(RUNNER, False)
        wait_for(lambda: gauges(fleet) == {"online": "1", "busy": "0", "service_active": "1"}, timeout=60)
        # A restart: the previous listener's pages say "listening", the new one has not said so
        # yet; the gauge follows the new listener.
        root(fleet, f"systemctl restart {UNIT}")
        wait_for(lambda: online(fleet), timeout=60, what="online after the second restart")
        wait_for(lambda: gauges(fleet)["online"] == "1", timeout=60)
    finally:
        fleet.double.set_busy(RUNNER, False)
        root(fleet, f"sed -i '/^RUNNER_LOGSIZE=/d' {env}; systemctl restart {UNIT}")
        wait_for(lambda: online(fleet), timeout=60, what="online at the end")


# --- interrupted installs --------------------------------------------------------------------

# A wrapper placed before the real tool in sudo's secure_path (/usr/local/sbin). A flag file
# /run/rflab-fault/<tool>.<point> holds two lines: a text the calling process's command line must
# contain (or, written `=NAME`, its last argument: a script's name, since every script's text
# holds lib.sh and so the names of other scripts), and a text the tool's arguments must contain.
# On the first match it removes the flag and kills the remote command that called it (every
# ancestor up to sshd) with SIGKILL, as a crash or a killed session leaves it: no trap runs. A
# curl match first writes a partial file.
FAULT_WRAPPER = r"""#!/bin/bash
# rflab fault injection (lab hosts only)
tool=${0##*/}
real=/usr/bin/$tool
caller=$(tr '\0' ' ' </proc/$PPID/cmdline 2>/dev/null)
caller_name=$(tr '\0' '\n' </proc/$PPID/cmdline 2>/dev/null | tail -n1)
for flag in /run/rflab-fault/"$tool".*; do
  [[ -f "$flag" ]] || continue
  { IFS= read -r want_caller; IFS= read -r want_args; } <"$flag"
  if [[ "$want_caller" == =* ]]; then
    [[ "$caller_name" == "${want_caller#=}" ]] || continue
  else
    [[ "$caller" == *"$want_caller"* ]] || continue
  fi
  [[ "$*" == *"$want_args"* ]] || continue
  rm -f -- "$flag"
  if [[ "$tool" == curl ]]; then
    out=""; prev=""
    for a in "$@"; do [[ "$prev" == -o ]] && out=$a; prev=$a; done
    [[ -n "$out" ]] && head -c 4096 /dev/urandom >"$out"
  fi
  tree=()
  pid=$PPID
  while [[ "$pid" -gt 1 ]]; do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || break
    [[ "$comm" == sshd* ]] && break
    tree+=("$pid")
    stat=$(cat "/proc/$pid/stat")
    read -r _ ppid _ <<<"${stat##*) }"
    pid=$ppid
  done
  echo "rflab: killing ${tree[*]} at $flag" >>/run/rflab-fault.log
  kill -KILL "${tree[@]}"
  exit 137
done
exec "$real" "$@"
"""


def arm(fleet, tool: str, point: str, caller: str, args: str) -> None:
    root(
        fleet,
        f"mkdir -p /run/rflab-fault && printf '%s\\n%s\\n' {shlex.quote(caller)} {shlex.quote(args)} "
        f"> /run/rflab-fault/{tool}.{point}",
    )


def armed(fleet) -> list[str]:
    return root(fleet, "ls /run/rflab-fault 2>/dev/null || true").split()


DEBRIS = (
    f"find {layout.ROOT} {layout.STATE} {layout.ETC} {layout.SYSTEMD_DIR} "
    "\\( -name '*.tmp' -o -name '*.download' -o -name '.download' \\) -print 2>/dev/null; true"
)
TMP = "find /tmp /var/tmp -mindepth 1 -maxdepth 1 -not -name 'systemd-private-*' -print | sort"


@lab
def test_installs_killed_at_their_riskiest_points_converge_and_leave_no_debris(fresh):
    fleet = fresh
    for tool in ("curl", "systemctl"):
        root(
            fleet,
            f"printf '%s' {shlex.quote(FAULT_WRAPPER)} > /usr/local/sbin/{tool} && chmod 0755 /usr/local/sbin/{tool}",
        )
    tmp_before = root(fleet, TMP)
    try:
        # 1. Both downloads killed half-way (a partial tarball on disk, no EXIT trap).
        arm(fleet, "curl", "exporter", "", "node_exporter")
        arm(fleet, "curl", "runner", "", "actions-runner-linux")
        report = fleet.run(PROD, PRODUCTION)
        assert not report.ok
        assert armed(fleet) == [], "both kill points were reached"
        # 2. svc.sh install killed right after it wrote the unit (no .service marker, no runsvc.sh).
        arm(fleet, "systemctl", "svc-install", "svc.sh install", "daemon-reload")
        report = fleet.run(PROD, PRODUCTION)
        assert not report.ok
        assert armed(fleet) == []
        assert root(fleet, f"test -f {layout.SYSTEMD_DIR}/{UNIT} && echo unit") == "unit"
        assert root(fleet, f"test -e {RUNNER_DIR}/.service && echo marker || echo none") == "none"
        # 3. Killed after writing the drop-in, before systemd was reloaded.
        arm(fleet, "systemctl", "dropin", "=runner-service.create.sh", "daemon-reload")
        report = fleet.run(PROD, PRODUCTION)
        assert not report.ok
        assert armed(fleet) == []
        assert root(fleet, f"test -f {layout.SYSTEMD_DIR}/{UNIT}.d/runner-fleet.conf && echo dropin") == "dropin"
        assert root(fleet, f"systemctl show -p KillMode --value {UNIT}") == "process", "systemd not reloaded yet"
    finally:
        root(fleet, "rm -rf /run/rflab-fault /usr/local/sbin/curl /usr/local/sbin/systemctl")
    started = time.monotonic()
    report = fleet.run(PROD, PRODUCTION)
    assert_ok(report)
    print(f"converged in {time.monotonic() - started:.1f} s after three interrupted runs")
    assert root(fleet, f"cat {RUNNER_DIR}/.service") == UNIT
    assert root(fleet, f"systemctl is-active {UNIT}; systemctl is-enabled {UNIT}").split() == ["active", "enabled"]
    assert root(fleet, f"systemctl show -p KillMode --value {UNIT}") == "mixed"
    assert root(fleet, f"systemctl is-active {layout.exporter_unit(PROD)}") == "active"
    assert online(fleet)
    assert [r["name"] for r in fleet.double_state()["runners"]].count(RUNNER) == 1
    assert root(fleet, DEBRIS) == ""
    assert root(fleet, TMP) == tmp_before, "nothing left in /tmp or /var/tmp"


# --- unit ownership (GitHub Enterprise Server: one unit name for every runner of that name) ----


def run_local(name: str, variables: dict, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    calls = tmp_path / "systemctl.calls"
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake / "systemctl").chmod(0o755)
    result = subprocess.run(
        ["bash", "-c", render(name, variables), name],
        env={"PATH": f"{fake}:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, calls.read_text() if calls.exists() else ""


GHES_UNIT = "actions.runner._services.shared.service"


def other_stacks_unit(unit_dir: Path) -> Path:
    unit_dir.mkdir(exist_ok=True)
    path = unit_dir / GHES_UNIT
    path.write_text(
        "[Service]\nExecStart=/opt/runner-fleet/one/runners/shared/runsvc.sh\n"
        "User=github-runner-one\nWorkingDirectory=/opt/runner-fleet/one/runners/shared\n"
    )
    return path


def test_service_create_refuses_a_unit_of_the_same_name_that_runs_another_directory(tmp_path: Path) -> None:
    unit = other_stacks_unit(tmp_path / "units")
    runner_dir = tmp_path / "two" / "shared"
    runner_dir.mkdir(parents=True)
    result, calls = run_local(
        "runner-service.create.sh",
        {
            "RUNNER_NAME": "shared",
            "RUNNER_DIR": str(runner_dir),
            "RUNNER_USER": "github-runner-two",
            "UNIT_DIR": str(unit.parent),
            "UNIT": GHES_UNIT,
            "METRICS_CONF": str(tmp_path / "shared.conf"),
            "METRICS_CONF_CONTENT": "name=shared",
            "SPOOL_DIR": str(tmp_path / "spool" / "shared"),
            "HOOKS_DIR": str(tmp_path / "hooks"),
            "HOOK_SCRIPT": "#!/bin/sh\nexit 0\n",
        },
        tmp_path,
    )
    assert result.returncode == 1
    assert "/opt/runner-fleet/one/runners/shared" in result.stderr and "another name" in result.stderr
    assert calls == "", "nothing was started, stopped or reloaded"
    assert not (tmp_path / "shared.conf").exists()
    assert not (tmp_path / "spool").exists() and not (tmp_path / "hooks").exists(), "nothing installed for it"


def test_service_delete_removes_only_its_own_unit_and_drop_in(tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    runner_dir = tmp_path / "one" / "shared"
    runner_dir.mkdir(parents=True)
    unit = unit_dir / GHES_UNIT
    unit.write_text(f"[Service]\nExecStart={runner_dir}/runsvc.sh\nWorkingDirectory={runner_dir}\n")
    dropin = unit_dir / f"{GHES_UNIT}.d" / "runner-fleet.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nKillMode=mixed\n")
    (runner_dir / ".service").write_text(GHES_UNIT + "\n")
    inputs = {
        "RUNNER_NAME": "shared",
        "RUNNER_DIR": str(runner_dir),
        "UNIT_DIR": str(unit_dir),
        "UNIT": GHES_UNIT,
        "METRICS_CONF": str(tmp_path / "shared.conf"),
        "SPOOL_DIR": str(tmp_path / "spool" / "shared"),
        "HOOKS_DIR": str(tmp_path / "hooks"),
    }
    result, calls = run_local("runner-service.delete.sh", inputs, tmp_path)
    assert result.returncode == 0, result.stderr
    assert not unit.exists() and not dropin.parent.exists() and not (runner_dir / ".service").exists()
    assert f"stop {GHES_UNIT}" in calls and "daemon-reload" in calls
    # Another directory's unit of the same name, with its drop-in: untouched.
    other = other_stacks_unit(unit_dir)
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nKillMode=mixed\n")
    (tmp_path / "systemctl.calls").unlink()
    result, calls = run_local("runner-service.delete.sh", inputs, tmp_path)
    assert result.returncode == 0, result.stderr
    assert other.exists() and dropin.exists()
    assert calls == ""
    assert "leaving service" in result.stdout
