"""Where the GitHub credential and the SSH private key go while runners register and deregister.

A sampler (a root process on the lab machine, which sees every process of every lab host)
reads the command line and environment of every process over and over while the stacks deploy
and are destroyed, through both registration flows GitHub may choose (the runner service, then
the runner-admin flow the double serves). Afterwards every file on every host, the journals (the
runners' console output), the runners' _diag logs, the executor's console output and its state
files are searched. The credential and the key must appear nowhere but in encrypted state; the
one-hour registration token that root mints for config.sh may appear in config.sh's environment
only (root's and the runner user's processes), never on a command line. The owner and mode of
every file the registration writes are checked too.

Lab: as in test_fleet.py, through the executor (lab/executor, the project's imitation of the
Pulumi engine). Needs root on the lab machine (it reads /proc of every process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from lab.fleet import PRODUCTION, STAGING, LabFleet

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="reads every process's environment: needs root"),
]

PROD, STAGE = "lab", "lab-staging"

# Runs as root beside the lab: reads /proc/*/cmdline and /proc/*/environ as fast as it can until
# its stdin closes, then prints what it saw as JSON. The needles come as the first line of stdin.
SAMPLER = r"""
import json, os, re, sys, threading
TOKEN = re.compile(rb"ACTIONS_RUNNER_INPUT_TOKEN=([A-Z0-9]{29})")
needles = {k: [v.encode() for v in vs] for k, vs in json.loads(sys.stdin.readline()).items()}
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
me = str(os.getpid())
samples, seen, hits, tokens, marks = 0, set(), {}, {}, {}
def read(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None
while not stop.is_set():
    samples += 1
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        cmdline, environ, status = read(pid, "cmdline"), read(pid, "environ"), read(pid, "status")
        if cmdline is None or status is None:
            continue
        uid = int(status.split(b"\nUid:")[1].split()[0])
        comm = status.split(b"\n", 1)[0].split(b"\t", 1)[-1].decode(errors="replace")
        start = (read(pid, "stat") or b"").rsplit(b")", 1)[-1].split()[19:20]
        seen.add((pid, start[0].decode() if start else ""))
        for mark in ("runner-registration.create.sh", "runner-registration.delete.sh",
                     "runner-service.retire.sh", "config.sh"):
            if mark.encode() in cmdline:
                marks[mark] = marks.get(mark, 0) + 1
        for where, text in (("cmdline", cmdline), ("environ", environ or b"")):
            for kind, values in needles.items():
                if any(v in text for v in values):
                    hits[f"{pid}:{where}:{uid}:{comm}:{kind}"] = hits.get(f"{pid}:{where}:{uid}:{comm}:{kind}", 0) + 1
        for where, text in (("cmdline", cmdline), ("environ", environ or b"")):
            for value in TOKEN.findall(text):
                tokens[f"{pid}:{where}:{uid}:{comm}"] = value.decode()
            if any(v.encode() in text for v in tokens.values()) and where == "cmdline":
                hits[f"{pid}:{where}:{uid}:{comm}:token"] = hits.get(f"{pid}:{where}:{uid}:{comm}:token", 0) + 1
print(json.dumps({"samples": samples, "processes": len(seen), "hits": hits, "tokens": tokens, "marks": marks}))
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with LabFleet.start(["runner-a", "runner-b"], state_dir=tmp_path_factory.mktemp("lab-secrets")) as lab_fleet:
        yield lab_fleet


def key_lines(private_key: str) -> list[str]:
    """The body of the SSH private key, line by line (any one line found is a leak), but the
    first: it is the same in every unencrypted OpenSSH ed25519 key (format name, cipher "none",
    key type), so every host key file has it too."""
    body = [line.strip() for line in private_key.splitlines() if len(line.strip()) >= 20 and "-----" not in line]
    return body[1:]


def start_sampler(needles: dict[str, list[str]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SAMPLER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(needles) + "\n")
    process.stdin.flush()
    return process


def stop_sampler(process: subprocess.Popen[str]) -> dict:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        raise
    return json.loads(process.stdout.read())


def uid_of(fleet: LabFleet, host: str, user: str) -> int | None:
    rc, out, _ = fleet.lab.run_on(host, f"id -u {user}")
    return int(out) if rc == 0 else None


def files_containing(fleet: LabFleet, host: str, needles: list[str]) -> list[str]:
    """Every file on the host (the _diag logs and journal files included) holding a needle."""
    search = (
        "sudo bash -c 'exec 3<&0; grep -rlsF -f /dev/fd/3 --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev /'"
        "; true"
    )
    rc, out, err = fleet.lab.run_on(host, search, stdin="\n".join(needles) + "\n", timeout=600)
    return out.split()


def journal_hits(fleet: LabFleet, host: str, needles: list[str]) -> int:
    search = "sudo bash -c 'exec 3<&0; journalctl --no-pager -o cat | grep -cF -f /dev/fd/3; true'"
    rc, out, _ = fleet.lab.run_on(host, search, stdin="\n".join(needles) + "\n", timeout=300)
    return int(out.strip() or "0")


def registration_files(fleet: LabFleet, host: str, stack: str, runner: str) -> dict[str, tuple[str, str]]:
    directory = f"/opt/runner-fleet/{stack}/runners/{runner}"
    names = ".runner .credentials .credentials_rsaparams .env .path svc.sh"
    paths = " ".join(f"{directory}/{name}" for name in names.split())
    rc, out, err = fleet.lab.run_on(host, f"sudo stat -c '%n %U %a' {paths} {directory}")
    assert rc == 0, err
    return {
        path.removeprefix(directory).lstrip("/") or ".": (owner, mode)
        for path, owner, mode in (line.split() for line in out.splitlines())
    }


def test_no_credential_or_key_reaches_any_process_file_log_or_plain_state(fleet, capsys):
    needles = {"credential": [fleet.pat], "ssh-key": key_lines(fleet.lab.private_key)}
    assert needles["ssh-key"], "the lab's private key has a body"
    console: list[str] = []
    sampler = start_sampler(needles)
    try:
        report = fleet.run(PROD, PRODUCTION, log=console.append)  # runner-service flow
        assert report.ok, report.error
        fleet.double.runner_admin_flow = True
        report = fleet.run(STAGE, STAGING, log=console.append)  # runner-admin flow
        assert report.ok, report.error
        fleet.double.runner_admin_flow = False
        states = {stack: fleet.state_path(stack).read_bytes() for stack in (PROD, STAGE)}
        files = {
            (host, stack, runner): registration_files(fleet, host, stack, runner)
            for host, stack, runner in (
                ("runner-a", PROD, "lab-primary"),
                ("runner-b", PROD, "lab-secondary"),
                ("runner-b", STAGE, "lab-staging-primary"),
                ("runner-b", STAGE, "lab-staging-extra"),
            )
        }
        users = {
            (host, stack): uid_of(fleet, host, f"github-runner-{stack}")
            for host, stack in (("runner-a", PROD), ("runner-b", PROD), ("runner-b", STAGE))
        }
        calls = fleet.double.calls
        for stack in (STAGE, PROD):
            report = fleet.run(stack, STAGING if stack == STAGE else PRODUCTION, mode="destroy", log=console.append)
            assert report.ok, report.error
    finally:
        seen = stop_sampler(sampler)
    with capsys.disabled():
        print(
            f"\nsecret sampler: {seen['samples']} samples, {seen['processes']} processes seen, "
            f"{len(seen['hits'])} hits of the credential or key; registration token seen in "
            f"{len(seen['tokens'])} process environments; marks {seen['marks']}"
        )

    # The sampler watched the registration and deregistration commands while they ran.
    assert seen["samples"] > 100
    for mark in ("runner-registration.create.sh", "runner-registration.delete.sh", "runner-service.retire.sh"):
        assert seen["marks"].get(mark, 0) > 0, f"the sampler never saw {mark} running"
    assert seen["marks"].get("config.sh", 0) > 0, "the sampler never saw config.sh running"
    # Both flows were taken: the runner-admin registration for staging's runners.
    registers = [c for c in calls if c["path"].endswith("/actions/runners/register") and c["method"] == "POST"]
    assert len(registers) == 2 and all(c["credential"] == "registration-token" for c in registers)
    assert not [c for c in calls if c["credential"] == "pat" and "runner-registration" in c["path"]]

    # Not one process, root's included, ever had the credential or the key in its command line
    # or environment.
    assert seen["hits"] == {}
    # The registration token: only in environments (root's wrappers and the runner user's
    # config.sh), never on a command line, never in another user's process.
    runner_uids = {uid for uid in users.values() if uid is not None}
    for where in seen["tokens"]:
        _pid, kind, uid, comm = where.split(":", 3)
        assert kind == "environ", where
        assert int(uid) in {0, *runner_uids}, where
    token_values = set(seen["tokens"].values())
    assert fleet.pat not in token_values

    # Files: nothing on any host holds either; neither do the journals (the runners' console).
    everything = needles["credential"] + needles["ssh-key"]
    for host in fleet.lab.hosts:
        assert files_containing(fleet, host, everything) == [], host
        assert journal_hits(fleet, host, everything) == 0, host
    # The executor's console and state files: the secrets only in encrypted form.
    for line in console:
        assert not any(needle in line for needle in everything), line
    for stack, data in states.items():
        assert not any(needle.encode() in data for needle in everything), stack

    # What the registration writes: the runner's files, the runner user's own, its credential
    # files readable by that user alone.
    for (host, stack, runner), modes in files.items():
        user = f"github-runner-{stack}"
        with capsys.disabled():
            print(f"{host} {runner}: " + ", ".join(f"{n} {o} {m}" for n, (o, m) in sorted(modes.items())))
        for name, (owner, mode) in modes.items():
            assert owner == user, (host, runner, name, owner)
            assert int(mode, 8) & 0o022 == 0, (host, runner, name, mode)  # nobody else may write
        for name in (".runner", ".credentials", ".credentials_rsaparams"):
            assert modes[name][1] == "600", (host, runner, name, modes[name])


def test_a_registration_token_is_all_config_sh_ever_gets(fleet):
    """The call record: config.sh (the runner user's process) authenticates with registration
    tokens only; the credential is used by root's REST calls, never by the runner."""
    fleet.double.runner_admin_flow = False
    for stack, layout in ((STAGE, STAGING), (PROD, PRODUCTION)):  # whatever an earlier test left
        assert fleet.run(stack, layout, mode="destroy").ok
    calls_before = len(fleet.double.calls)
    report = fleet.run(PROD, PRODUCTION)
    assert report.ok, report.error
    calls = fleet.double.calls[calls_before:]
    minted = [c for c in calls if c["path"].endswith("/registration-token")]
    assert len(minted) == 2 and {c["credential"] for c in minted} == {"pat"}
    registrations = [c for c in calls if c["path"].endswith("/actions/runner-registration")]
    assert len(registrations) == 2 and {c["credential"] for c in registrations} == {"registration-token"}
    assert_ok = fleet.run(PROD, PRODUCTION, mode="destroy")
    assert assert_ok.ok, assert_ok.error
    assert fleet.double_state()["runners"] == []
