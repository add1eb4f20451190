"""Benchmark: prints figures, asserts nothing.

    python -m lab.bench

- lab boot (to SSH-ready) and teardown times, 1 and 3 runner hosts (+ the monitoring host);
- cold deploy wall time of 1 runner host vs 3 runner hosts (goal: 3 hosts <= 1.3 x one host,
  independent hosts must not serialize);
- unchanged re-run: wall time and remote commands executed (goal: 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from lab.fleet import LabFleet, wide_layout


def measure(hosts: list[str]) -> dict[str, float]:
    started = time.monotonic()
    fleet = LabFleet.start(hosts, log=lambda *_: None)
    boot = time.monotonic() - started
    try:
        layout = wide_layout(hosts)
        cold = fleet.run("bench", layout, log=lambda *_: None)
        if not cold.ok:
            raise SystemExit(f"cold deploy failed: {cold.error}")
        again = fleet.run("bench", layout, log=lambda *_: None)
        if not again.ok:
            raise SystemExit(f"re-run failed: {again.error}")
    finally:
        started_down = time.monotonic()
        fleet.stop()
        down = time.monotonic() - started_down
    return {
        "boot": boot,
        "image": fleet.lab.timings.get("image_build", 0.0),
        "cold": cold.wall_seconds,
        "cold_commands": cold.commands_executed,
        "rerun": again.wall_seconds,
        "rerun_commands": again.commands_executed,
        "teardown": down,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds per size; medians are printed")
    args = parser.parse_args(argv)
    rounds: dict[int, list[dict[str, float]]] = {1: [], 3: []}
    for _ in range(args.repeat):
        rounds[1].append(measure(["bench-1"]))
        rounds[3].append(measure(["bench-1", "bench-2", "bench-3"]))

    def median(size: int, key: str) -> float:
        return statistics.median(r[key] for r in rounds[size])

    print(f"medians of {args.repeat} rounds{'':15}{'1 host':>10}{'3 hosts':>10}")
    rows = [
        ("lab up incl. monitor host (s)", "boot"),
        ("  of which image build (s)", "image"),
        ("cold deploy wall time (s)", "cold"),
        ("cold deploy remote commands", "cold_commands"),
        ("unchanged re-run wall time (s)", "rerun"),
        ("unchanged re-run remote commands", "rerun_commands"),
        ("lab teardown (s)", "teardown"),
    ]
    for label, key in rows:
        print(f"{label:34}{median(1, key):>10.1f}{median(3, key):>10.1f}")
    ratios = [three["cold"] / one["cold"] for one, three in zip(rounds[1], rounds[3], strict=True)]
    print(
        f"cold deploy ratio 3 hosts / 1 host: median {statistics.median(ratios):.2f}, "
        f"rounds {', '.join(f'{r:.2f}' for r in ratios)} (goal <= 1.30)"
    )
    print(f"unchanged re-run commands: max {int(max(r['rerun_commands'] for r in rounds[3]))} (goal 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
