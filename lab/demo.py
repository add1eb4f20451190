"""The demo: a lab fleet on this machine, deployed with the program's own remote commands.

python -m lab.demo up     lab hosts + GitHub double + the `lab` stack deployed
python -m lab.demo down   destroy the stack, stop the double, tear the lab down
"""

from __future__ import annotations

import argparse
import shutil
import sys

from lab.fleet import MONITOR, PRODUCTION, LabFleet, stop_double_daemon
from lab.hosts import Lab, resolve_state_dir

STACK = "lab"


def up() -> int:
    fleet = LabFleet.start([layout.host for layout in PRODUCTION], daemon=True)
    if shutil.which("pulumi"):
        print("demo: a Pulumi CLI is installed, but the demo always uses the executor so that what runs here")
        print("demo: is exactly what the tests check.")
    print("demo: the Pulumi CLI is not used: runner-fleet's executor (lab/executor) runs __main__.py under")
    print("demo: Pulumi mocks and carries out each remote command over SSH as pulumi-command 1.2.1 would.")
    report = fleet.run(STACK, PRODUCTION)
    print(f"demo: {report.summary()}")
    if not report.ok:
        print(f"demo: deploy failed: {report.error}", file=sys.stderr)
        print("demo: the lab is still up for inspection; `./demo.sh down` removes it", file=sys.stderr)
        return 1
    monitor = fleet.lab.hosts[MONITOR].address
    key = fleet.lab.private_key_path
    print()
    print("Where to look:")
    print(f"  Prometheus targets   http://{monitor}:9090/targets   (job github-runner-health)")
    print(f"  Registered runners   {fleet.double_url}/_double/state")
    for layout in PRODUCTION:
        host = fleet.lab.hosts[layout.host]
        print(f"  Exporter {layout.host:<10}  http://{host.address}:{layout.exporter_port}/metrics")
    known_hosts = fleet.state_dir / "known_hosts"
    print(
        f"  A host's shell       ssh -i {key} -o UserKnownHostsFile={known_hosts} "
        f"deploy@{fleet.lab.hosts['runner-a'].address}"
    )
    print(f"  Stack state          {fleet.state_path(STACK)}")
    print("Tear it all down with: ./demo.sh down")
    return 0


def down() -> int:
    state_dir = resolve_state_dir(None)
    try:
        lab = Lab.load(state_dir)
    except Exception:  # noqa: BLE001 - nothing (or only leftovers) to load: sweep below
        lab = None
    if lab is not None and (state_dir / f"state-{STACK}.json").exists():
        from lab.executor import run_program
        from lab.fleet import PROJECT_DIR, SECRET_KEYS

        print("demo: destroying the lab stack (deregisters the runners from the double)")
        report = run_program(
            project_dir=PROJECT_DIR,
            stack=STACK,
            config={},
            secret_keys=SECRET_KEYS,
            state_path=state_dir / f"state-{STACK}.json",
            mode="destroy",
        )
        print(f"demo: {report.summary()}")
        for path in state_dir.glob(f"state-{STACK}.json*"):
            path.unlink()
    stop_double_daemon(state_dir)
    if lab is not None:
        lab.down()
    else:
        from lab.hosts import main as hosts_main

        hosts_main(["down"])
    print("demo: lab torn down")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args(argv)
    return up() if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
