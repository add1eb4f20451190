"""A lab fleet: lab hosts + GitHub double + release artifacts + stack configs for the program.

Used by the lab tests, the demo (`./demo.sh`) and the benchmark. The stack configs are the
same shape as the committed production/staging stacks, pointed at lab hosts and at the double
instead of the user's machines and github.com.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.artifacts import build_artifacts
from lab.github_double import GitHubDouble
from lab.hosts import HostSpec, Lab, resolve_state_dir

PROJECT_DIR = Path(__file__).resolve().parent.parent
LAB_REPO = "lab-owner/fleet"
# The default http port: actions/runner builds its REST URLs from --url without the port
# (ConfigurationManager.cs), so a double on any other port is unreachable for config.sh.
DOUBLE_PORT = 80
MONITOR = "monitor"
# The lab's server URL is not github.com, so the double behaves like GitHub Enterprise Server
# (the runner then names its unit actions.runner._services.<name>.service).
TENANT_STYLE = "ghes"
SECRET_KEYS = {"runner-fleet:githubToken", "runner-fleet:sshPrivateKey", "runner-fleet:githubViewToken"}


@dataclass(frozen=True)
class HostLayout:
    """One runner host of a lab stack: which lab host, its role, port and runners."""

    host: str
    role: str
    exporter_port: int
    runners: tuple[tuple[str, tuple[str, ...]], ...]


# The committed stacks' shape: production = primary + secondary; staging shares the secondary's
# machine, as dell-r640-01-runner does.
PRODUCTION = (
    HostLayout(
        "runner-a", "primary", 9102, (("lab-primary", ("self-hosted", "Linux", "X64", "production", "primary")),)
    ),
    HostLayout(
        "runner-b", "secondary", 9101, (("lab-secondary", ("self-hosted", "Linux", "X64", "production", "secondary")),)
    ),
)
STAGING = (
    HostLayout(
        "runner-b",
        "primary",
        9103,
        (
            ("lab-staging-primary", ("self-hosted", "Linux", "X64", "staging", "primary")),
            ("lab-staging-extra", ("staging", "primary", "large")),
        ),
    ),
)


def wide_layout(hosts: list[str]) -> tuple[HostLayout, ...]:
    """One runner per host, for the benchmark."""
    return tuple(
        HostLayout(h, "primary" if i == 0 else "secondary", 9102, ((f"bench-{h}", ("bench",)),))
        for i, h in enumerate(hosts)
    )


@dataclass
class LabFleet:
    lab: Lab
    double: GitHubDouble | None
    double_url: str
    artifacts: dict[str, Any]
    pat: str
    state_dir: Path

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    def start(
        cls, runner_hosts: list[str], *, state_dir: Path | None = None, daemon: bool = False, log=print
    ) -> LabFleet:
        """Build artifacts, bring the hosts up, start the GitHub double on the bridge."""
        state_dir = resolve_state_dir(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        # Stack states and the double's registrations belong to the lab they were made in; a new
        # lab starts with none.
        for stale in [*state_dir.glob("state-*.json*"), state_dir / "github-double.json"]:
            stale.unlink(missing_ok=True)
        artifacts = build_artifacts(state_dir / "artifacts")
        lab = Lab.up([HostSpec(h) for h in runner_hosts] + [HostSpec(MONITOR, monitoring=True)], state_dir=state_dir)
        pat = "ghp_lab" + secrets.token_hex(16)
        pat_file = state_dir / "github-pat"
        pat_file.write_text(pat)
        pat_file.chmod(0o600)
        url = f"http://{lab.bridge_address}"
        fleet = cls(lab=lab, double=None, double_url=url, artifacts=artifacts, pat=pat, state_dir=state_dir)
        try:
            if daemon:
                fleet._start_double_daemon(pat_file)
            else:
                fleet.double = GitHubDouble(
                    host=lab.bridge_address,
                    port=DOUBLE_PORT,
                    pats=[pat],
                    artifacts_dir=state_dir / "artifacts",
                    repos=[LAB_REPO],
                    tenant_style=TENANT_STYLE,
                ).start()
        except BaseException:
            lab.down()
            raise
        log(f"lab: GitHub double at {url} ({'daemon' if daemon else 'in-process'})")
        return fleet

    def _start_double_daemon(self, pat_file: Path) -> None:
        log_file = open(self.state_dir / "github-double.log", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lab.github_double",
                "--host",
                self.lab.bridge_address,
                "--port",
                str(DOUBLE_PORT),
                "--pat-file",
                str(pat_file),
                "--repo",
                LAB_REPO,
                "--artifacts",
                str(self.state_dir / "artifacts"),
                "--state-file",
                str(self.state_dir / "github-double.json"),
                "--tenant-style",
                TENANT_STYLE,
            ],
            cwd=PROJECT_DIR,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        (self.state_dir / "github-double.pid").write_text(str(process.pid))
        for _ in range(100):
            try:
                self.double_state()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the GitHub double did not start; see github-double.log")

    def stop(self) -> None:
        if self.double is not None:
            self.double.stop()
        stop_double_daemon(self.state_dir)
        self.lab.down()

    def __enter__(self) -> LabFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the program ---------------------------------------------------------------------

    def config(self, layout: tuple[HostLayout, ...]) -> dict[str, Any]:
        """Stack config (namespaced keys) for `layout`, pointed at the lab and the double."""
        runner = self.artifacts["runner"]
        exporter = self.artifacts["node_exporter"]
        monitor = self.lab.hosts[MONITOR]
        hosts = []
        for item in layout:
            lab_host = self.lab.hosts[item.host]
            hosts.append(
                {
                    "name": item.host,
                    "address": lab_host.address,
                    "sshUser": lab_host.user,
                    "hostKey": lab_host.host_key,
                    "role": item.role,
                    "exporterPort": item.exporter_port,
                    "minDiskMb": 100,
                    "runners": [{"name": name, "labels": list(labels)} for name, labels in item.runners],
                }
            )
        return {
            # The double serves plain http on the lab bridge, which the config refuses unless told.
            "runner-fleet:github": {"repository": LAB_REPO, "serverUrl": self.double_url, "allowInsecureHttp": True},
            "runner-fleet:githubToken": self.pat,
            "runner-fleet:sshPrivateKey": self.lab.private_key,
            "runner-fleet:runner": {
                "version": runner["version"],
                "sha256": {"x64": runner["sha256"]},
                "urlTemplate": self.double_url
                + "/actions/runner/releases/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz",
            },
            "runner-fleet:exporter": {
                "version": exporter["version"],
                "sha256": {"x64": exporter["sha256"]},
                "urlTemplate": self.double_url
                + "/prometheus/node_exporter/releases/download/v{version}/"
                + "node_exporter-{version}.linux-{goarch}.tar.gz",
            },
            "runner-fleet:prometheus": {
                "address": monitor.address,
                "sshUser": monitor.user,
                "hostKey": monitor.host_key,
            },
            "runner-fleet:hosts": hosts,
        }

    def state_path(self, stack: str) -> Path:
        return self.state_dir / f"state-{stack}.json"

    def run(self, stack: str, layout: tuple[HostLayout, ...], mode: str = "up", config=None, log=print):
        """Carry out the program for `stack` with the executor (pulumi up/preview/destroy)."""
        from lab.executor import run_program

        return run_program(
            project_dir=PROJECT_DIR,
            stack=stack,
            config=config if config is not None else self.config(layout),
            secret_keys=SECRET_KEYS,
            state_path=self.state_path(stack),
            mode=mode,
            log=log,
        )

    # --- inspection ----------------------------------------------------------------------

    def double_state(self) -> dict[str, Any]:
        if self.double is not None:
            return self.double.state()
        with urllib.request.urlopen(f"{self.double_url}/_double/state", timeout=5) as response:  # noqa: S310
            return json.load(response)

    def prometheus_targets(self) -> list[dict[str, Any]]:
        rc, out, err = self.lab.run_on(MONITOR, "curl -fsS http://127.0.0.1:9090/api/v1/targets?state=active")
        if rc != 0:
            raise RuntimeError(f"Prometheus targets: {err}")
        return json.loads(out)["data"]["activeTargets"]


def stop_double_daemon(state_dir: Path) -> None:
    """Stop the double this lab started (by the PID it recorded)."""
    pid_file = state_dir / "github-double.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"lab.github_double" in cmdline:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
    except (FileNotFoundError, ProcessLookupError):
        pass
    pid_file.unlink(missing_ok=True)
