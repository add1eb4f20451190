"""Every remote command of the program, interrupted at its start, between its steps and just
before its end, converges on the next run, and so does destroy.

The commands are those of the stack itself (every `command:remote:Command` a clean deploy
creates, one runner host and the monitoring host, so each of the program's scripts once); the
points are taken from a clean run's own calls, traced by the tool wrapper of lab/faults.py: a
command's first call, the call that changes something nearest its middle, and its last call.
Each point is hit three ways: the SSH session serving the command is cut (its sshd processes
killed: the script goes on without a session, as when the network or the engine dies, and the
next run starts while it may still be running), the command's whole process tree is killed (no
trap runs), and the tool at that point fails once. Then the deploy (or destroy) is run again
and the hosts, the GitHub double, Prometheus and the engine's state are compared with a clean
deploy's (or a clean destroy's): every file's hash, owner and mode under the program's
directories, units and whether they are enabled and active, failed units, the stack user,
its processes, registrations (no duplicate, exact labels, online), Prometheus's targets and
rules, and no leftover files (/tmp, /var/tmp, temp and download files).

To stay within the lab's time budget the cells of one command run as a chain: each run with one
fault armed starts from what the interrupted run before it left, and one run without a fault
ends the chain; then the comparison. A chain that does not converge is re-run cell by cell from
a clean start, so the table names the cell. A cell whose fault did not fire (the interrupted
state made the script take another path) is retried from a clean start.

Through lab/executor (the project's imitation of the engine), not the Pulumi CLI.
RFLAB_KILL_POINTS=<text>[,<text>...] keeps only the commands whose name contains one of the texts;
RFLAB_KILL_POINTS_LOG=1 prints every run and comparison with its time.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from components import layout
from lab import faults
from lab.executor.engine import COMMAND, StateStore, plain
from lab.fleet import MONITOR, PRODUCTION, LabFleet

pytestmark = pytest.mark.lab

STACK = "lab"
# One runner host (one runner) and the monitoring host: every script of the program, once.
LAYOUT = PRODUCTION[:1]
JOB = "github-runner-health"
MECHANISMS = ("cut", "kill", "fail")
VERBOSE = bool(os.environ.get("RFLAB_KILL_POINTS_LOG"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet.start([h.host for h in LAYOUT], state_dir=tmp_path_factory.mktemp("lab-kill-points")) as lab_fleet:
        yield lab_fleet


def root(fleet: LabFleet, host: str, command: str, timeout: float = 60) -> str:
    rc, out, err = fleet.lab.run_on(host, f"sudo -n /bin/bash -c {shlex.quote(command)}", timeout=timeout)
    assert rc == 0, f"{host}: {command}: {err}"
    return out


def on_all(fleet: LabFleet, command: str) -> dict[str, str]:
    with ThreadPoolExecutor(len(fleet.lab.hosts)) as pool:
        results = {h: pool.submit(root, fleet, h, command) for h in fleet.lab.hosts}
        return {h: f.result() for h, f in results.items()}


# --- the world the program leaves --------------------------------------------------------------


def github_view(fleet: LabFleet) -> list[str]:
    return sorted(
        f"{r['name']} [{','.join(sorted(label['name'] for label in r['labels']))}] {r['status']}"
        for r in fleet.double_state()["runners"]
    )


def prometheus_view(fleet: LabFleet) -> dict[str, Any]:
    targets = sorted(
        f"{t['scrapeUrl']} {json.dumps(t['labels'], sort_keys=True)}"
        for t in fleet.prometheus_targets()
        if t["scrapePool"] == JOB
    )
    rc, out, err = fleet.lab.run_on(MONITOR, "curl -fsS http://127.0.0.1:9090/api/v1/rules")
    assert rc == 0, err
    rules = sorted(f"{g['name']}: {','.join(r['name'] for r in g['rules'])}" for g in json.loads(out)["data"]["groups"])
    return {"targets": targets, "rules": rules}


def state_view(fleet: LabFleet) -> list[str]:
    entries, _ = StateStore(fleet.state_path(STACK)).load()
    return sorted(e.urn.rsplit("::", 1)[-1] for e in entries)


def world(fleet: LabFleet) -> dict[str, Any]:
    hosts = {h: json.loads(out) for h, out in on_all(fleet, faults.snapshot_command()).items()}
    for snap in hosts.values():
        snap.pop("stray")
    return {
        "hosts": hosts,
        "github": github_view(fleet),
        "prometheus": prometheus_view(fleet),
        "state": state_view(fleet),
    }


def strays(fleet: LabFleet) -> list[str]:
    """The program's scripts still running on a host (a cut session's script goes on)."""
    found = []
    for host, out in on_all(fleet, "pgrep -a -f -- '[.](create|delete|retire)[.]sh$' || true").items():
        found += [f"{host}: {line[:120]}" for line in out.splitlines() if line.strip()]
    return found


def settle(fleet: LabFleet, timeout: float = 120) -> list[str]:
    """Waits until no script of the program runs any more; returns those still running."""
    deadline = time.monotonic() + timeout
    left = strays(fleet)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = strays(fleet)
    on_all(fleet, f"/usr/bin/rm -f {faults.FAULT_DIR}/stray.*")
    return left


def compare(fleet: LabFleet, baseline: dict[str, Any], timeout: float = 30) -> list[str]:
    """Differences from `baseline` once every script has ended; waits up to `timeout` for the
    eventual parts (a runner reconnecting, Prometheus reading a target file)."""
    left = settle(fleet)
    deadline = time.monotonic() + timeout
    while True:
        found = faults.diff(baseline, world(fleet))
        if not found or time.monotonic() > deadline:
            return [f"still running: {s}" for s in left] + found
        if VERBOSE:
            print(f"    (waiting: {found[:3]})", flush=True)
        time.sleep(2)


def stack_dirs() -> tuple[str, ...]:
    return (layout.install_root(STACK), layout.state_root(STACK), f"{layout.ETC}/{STACK}")


# --- cells -------------------------------------------------------------------------------------


@dataclass
class Command:
    name: str
    host: str
    create_scripts: list[str]
    delete_scripts: list[str]


@dataclass
class Cell:
    phase: str  # up | destroy
    command: Command
    point: faults.Point
    mechanism: str
    id: str
    fired: bool = False
    converged: bool | None = None
    detail: list[str] = field(default_factory=list)
    alone: bool = False  # run as a chain of its own, from a clean start
    tries: int = 0


def scripts_of(text: str | None) -> list[str]:
    """The script names a command text runs (`... /bin/bash -c '<script>' <name>`)."""
    if not text:
        return []
    argv = shlex.split(text)
    return [argv[i + 2] for i, word in enumerate(argv[:-2]) if word == "-c"]


def commands_of(fleet: LabFleet) -> list[Command]:
    """Every remote command in the stack's state, with the lab host it runs on."""
    by_address = {h.address: name for name, h in fleet.lab.hosts.items()}
    entries, _ = StateStore(fleet.state_path(STACK)).load()
    found = []
    for entry in entries:
        if entry.type != COMMAND:
            continue
        inputs = plain(entry.inputs)
        found.append(
            Command(
                entry.name,
                by_address[inputs["connection"]["host"]],
                scripts_of(inputs.get("create")),
                scripts_of(inputs.get("delete")),
            )
        )
    return found


def read_trace(fleet: LabFleet) -> dict[str, list[faults.Call]]:
    return {
        h: faults.parse_trace(out)
        for h, out in on_all(fleet, f"cat {faults.FAULT_DIR}/trace 2>/dev/null; true").items()
    }


def points_of(trace: dict[str, list[faults.Call]], host: str, scripts: list[str]) -> list[faults.Point]:
    return faults.choose_points([c for c in trace[host] if c.script in scripts])


class Harness:
    def __init__(self, fleet: LabFleet) -> None:
        self.fleet = fleet
        self.log: list[str] = []
        self.runs = 0
        self.seconds = {"runs": 0.0, "compare": 0.0}
        self.started = time.monotonic()

    def note(self, text: str) -> None:
        if VERBOSE:
            print(f"    {time.monotonic() - self.started:6.1f} {text}", flush=True)

    def run(self, mode: str, cell: Cell | None = None):
        self.log = []
        self.runs += 1
        t = time.monotonic()
        report = self.fleet.run(STACK, LAYOUT, mode=mode, log=self.log.append)
        self.seconds["runs"] += time.monotonic() - t
        what = f"{cell.mechanism} {cell.command.name} {cell.point.where}" if cell else "no fault"
        self.note(f"{mode} ({what}): {'ok' if report.ok else 'failed'} in {time.monotonic() - t:.1f} s")
        return report

    def compare(self, baseline: dict[str, Any]) -> list[str]:
        t = time.monotonic()
        found = compare(self.fleet, baseline)
        self.seconds["compare"] += time.monotonic() - t
        self.note(f"compare: {len(found)} differences in {time.monotonic() - t:.1f} s")
        return found

    def arm(self, cell: Cell) -> None:
        root(self.fleet, cell.command.host, faults.arm_script(cell.id, cell.point, cell.mechanism))

    def disarm(self) -> set[str]:
        """Removes every flag left; returns the cells that fired."""
        fired = set()
        for host, out in on_all(
            self.fleet,
            f"cat {faults.FAULT_DIR}/fired; /usr/bin/rm -f {faults.FAULT_DIR}/*.flag "
            f"{faults.FAULT_DIR}/*.count; : > {faults.FAULT_DIR}/fired",
        ).items():
            for line in out.splitlines():
                if line:
                    fired.add(line.split("\t", 1)[0])
                    self.note(f"fired on {host}: {line[:150]}")
        return fired

    def to(self, mode: str, baseline: dict[str, Any]) -> list[str]:
        """A run without faults (up or destroy), then the differences from `baseline`."""
        report = self.run(mode)
        if not report.ok:
            return [f"{mode} without a fault failed: {(report.error or '')[-600:]}"]
        return self.compare(baseline)

    def attempt(self, cell: Cell, mode: str):
        """One run with `cell`'s fault armed; sets cell.fired."""
        cell.tries += 1
        self.arm(cell)
        report = self.run(mode, cell)
        cell.fired = cell.id in self.disarm()
        return report

    def run_all(self, ups: list[Cell], downs: list[Cell], clean: dict[str, Any], empty: dict[str, Any]) -> None:
        """Every cell, in chains: from a clean destroy, the deploy interrupted at each point of one
        command in turn, then a deploy without a fault and the comparison with a clean deploy;
        from there, destroy interrupted at each point of one delete, then a destroy without a
        fault and the comparison with a clean destroy; and so on. Each chain ends where the next
        one starts. A chain that does not converge is re-run cell by cell, each alone; a cell
        whose fault did not fire (the interrupted state took the script another way) is tried
        again alone, from a clean start."""
        queues = {"up": list(ups), "destroy": list(downs)}
        goal = {"up": clean, "destroy": empty}
        other = {"up": "destroy", "destroy": "up"}
        phase = "up"  # the lab starts destroyed
        while queues["up"] or queues["destroy"]:
            queue = queues[phase]
            self.started = self.started or time.monotonic()
            pending: list[Cell] = []
            at_goal = False
            if queue:
                name = queue[0].command.name
                alone = queue[0].alone
                while queue and queue[0].command.name == name and queue[0].alone == alone:
                    cell = queue.pop(0)
                    report = self.attempt(cell, phase)
                    if cell.fired:
                        pending.append(cell)
                    elif cell.alone:
                        cell.converged = False
                        cell.detail = ["the point was not reached from a clean start"]
                    else:
                        cell.alone = True
                        queue.append(cell)
                    if report.ok:
                        at_goal = True  # the fault was absorbed: the run completed
                        break
                    if alone:
                        break
            found = self.compare(goal[phase]) if at_goal else self.to(phase, goal[phase])
            for cell in pending:
                cell.converged, cell.detail = not found, found
            if pending:
                print(
                    f"  {phase} {pending[0].command.name}: {len(pending)} cells, "
                    f"{'converged' if not found else 'NOT converged'} ({time.monotonic() - self.started:.0f} s)",
                    flush=True,
                )
            if found:
                if len(pending) > 1:
                    for cell in reversed(pending):
                        cell.alone = True
                        queue.insert(0, cell)
                # Not where the next chain starts: one more try, or stop here.
                again = self.to(phase, goal[phase])
                assert not again, f"{phase} without a fault does not reach a clean state:\n" + "\n".join(again[:30])
            phase = other[phase]


def table(cells: list[Cell]) -> str:
    rows = {}
    for cell in cells:
        key = (cell.phase, cell.command.name, cell.point.where, cell.point.shown)
        mark = "yes" if cell.converged else ("NO" if cell.fired else "unreached")
        rows.setdefault(key, {})[cell.mechanism] = "-" if cell.converged is None else mark
    width = max(len(f"{k[0]} {k[1]}") for k in rows) + 2
    lines = [f"{'command':<{width}} {'point':<8} " + " ".join(f"{m:<5}" for m in MECHANISMS) + "  at"]
    for (phase, name, where, shown), marks in rows.items():
        lines.append(
            f"{phase + ' ' + name:<{width}} {where:<8} "
            + " ".join(f"{marks.get(m, '-'):<5}" for m in MECHANISMS)
            + f"  {shown}"
        )
    return "\n".join(lines)


@pytest.fixture
def quiet_asyncio():
    """A failed run leaves the executor's cancelled registrations as unretrieved futures, each
    logged by asyncio with the whole command text; the run's own report says what failed."""
    logger = logging.getLogger("asyncio")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    gc.collect()  # the futures are reported when collected: while still quiet
    logger.setLevel(level)


def test_every_command_interrupted_at_every_point_converges_on_the_next_run(fleet, quiet_asyncio):
    started = time.monotonic()
    h = Harness(fleet)
    on_all(fleet, faults.install_script())
    pristine = world(fleet)
    try:
        # A first deploy and destroy (a host the program has never seen differs, e.g. in which
        # parent directory exists), then a clean deploy and a clean destroy, traced: the goal
        # states and every command's calls.
        assert h.run("up").ok and h.run("destroy").ok
        on_all(fleet, f"touch {faults.FAULT_DIR}/trace && chmod 0666 {faults.FAULT_DIR}/trace")
        report = h.run("up")
        assert report.ok, report.error
        assert not settle(fleet)
        clean = world(fleet)
        assert all(r.endswith(" online") for r in clean["github"]), clean["github"]
        assert len(clean["prometheus"]["targets"]) == len(LAYOUT)
        commands = commands_of(fleet)
        create_order = [n for n in report.ops("create")]
        up_trace = read_trace(fleet)
        on_all(fleet, f": > {faults.FAULT_DIR}/trace")
        report = h.run("destroy")
        assert report.ok, report.error
        delete_order = [n for n in report.ops("delete")]
        down_trace = read_trace(fleet)
        on_all(fleet, f"/usr/bin/rm -f {faults.FAULT_DIR}/trace")
        assert not settle(fleet)
        # Prometheus drops a deleted target file's targets at its next discovery update.
        deadline = time.monotonic() + 60
        while prometheus_view(fleet)["targets"] and time.monotonic() < deadline:
            time.sleep(1)
        empty = world(fleet)
        for host in fleet.lab.hosts:
            for tmp in ("/tmp", "/var/tmp"):
                before = {p for p in pristine["hosts"][host]["files"] if p.startswith(tmp)}
                for snap in (clean, empty):
                    after = {p for p in snap["hosts"][host]["files"] if p.startswith(tmp)}
                    assert after == before, f"{host}: a clean run left {sorted(after - before)}"
        assert empty["github"] == [] and empty["state"] == [] and empty["prometheus"]["targets"] == []
        for host in fleet.lab.hosts:
            left = [p for p in empty["hosts"][host]["files"] if any(p.startswith(d) for d in stack_dirs())]
            assert not left, f"{host}: a clean destroy left {left}"

        by_name = {c.name: c for c in commands}
        assert sorted(create_order) == sorted(by_name), "every command of the stack was created"
        # Mechanisms in the order cut, kill, fail at each point: after a cut the next run races
        # with the script that goes on; the cells after it see what that left.
        cells: list[Cell] = []
        for phase, order, scripts, trace in (
            ("up", create_order, "create_scripts", up_trace),
            ("destroy", delete_order, "delete_scripts", down_trace),
        ):
            for name in order:
                command = by_name[name]
                if not getattr(command, scripts):
                    continue  # nothing runs (the preflight has no delete)
                points = points_of(trace, command.host, getattr(command, scripts))
                assert points, f"{name}: no call of its {phase} scripts was traced"
                for point in points:
                    for mech in MECHANISMS:
                        cells.append(Cell(phase, command, point, mech, f"c{len(cells)}"))
        assert {c.command.name for c in cells if c.phase == "up"} == set(by_name)
        assert {c.command.name for c in cells if c.phase == "destroy"} == {c.name for c in commands if c.delete_scripts}
        only = [w for w in os.environ.get("RFLAB_KILL_POINTS", "").split(",") if w]
        if only:
            cells = [c for c in cells if any(w in c.command.name for w in only)]
        aborted = ""
        try:
            h.run_all([c for c in cells if c.phase == "up"], [c for c in cells if c.phase == "destroy"], clean, empty)
        except AssertionError as exc:
            aborted = f"stopped: {exc}"
    finally:
        on_all(fleet, faults.uninstall_script())
    elapsed = time.monotonic() - started
    converged = sum(1 for c in cells if c.converged)
    print()
    print(table(cells))
    print(
        f"kill points: {converged} of {len(cells)} cells converged "
        f"({len({c.command.name for c in cells})} commands, {h.runs} runs, {elapsed:.0f} s: "
        f"{h.seconds['runs']:.0f} s in runs, {h.seconds['compare']:.0f} s comparing)"
    )
    bad = [c for c in cells if not c.converged]
    for cell in bad:
        if cell.converged is None:
            continue
        print(f"-- {cell.phase} {cell.command.name} {cell.point.where} {cell.mechanism}: {cell.point.shown}")
        for line in cell.detail[:25]:
            print(f"   {line}")
    assert not aborted, aborted
    assert not bad, f"{len(bad)} of {len(cells)} cells did not converge"
