"""Benchmark of the engine build: cold (empty Go module and build caches) and cached.

    python -m tools.bench_engine [--cold-rounds N] [--warm-rounds N] [PIECE ...]

Cold rounds build in throwaway GOMODCACHE, GOCACHE and engine cache directories, so every module
is downloaded and every package compiled; the download size is the module cache's size after the
build. Warm rounds run `tools.engine build` against the real cache. Prints medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import engine


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in (path / "cache" / "download").rglob("*") if f.is_file())


def _build(pieces: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "tools.engine", "build", *pieces], env=env, check=True)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_engine", description=__doc__.splitlines()[0])
    parser.add_argument("--cold-rounds", type=int, default=1)
    parser.add_argument("--warm-rounds", type=int, default=3)
    parser.add_argument("pieces", nargs="*", default=["cli", "actionlint"])
    args = parser.parse_args(argv)
    cold, sizes = [], []
    for i in range(args.cold_rounds):
        with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
            root = Path(tmp)
            env = {
                **os.environ,
                "GOMODCACHE": str(root / "mod"),
                "GOCACHE": str(root / "gocache"),
                engine.CACHE_ENV: str(root / "engine"),
            }
            seconds = _build(args.pieces, env)
            cold.append(seconds)
            sizes.append(_size(root / "mod"))
            print(f"cold round {i + 1}: {seconds:.0f} s, {sizes[-1] / 1e6:.0f} MB downloaded", flush=True)
            subprocess.run(["chmod", "-R", "u+w", str(root)], check=False)
    warm = [_build(args.pieces, dict(os.environ)) for _ in range(args.warm_rounds)]
    print(f"pieces: {' '.join(args.pieces)}")
    if cold:
        print(f"cold build: median {statistics.median(cold):.0f} s, {statistics.median(sizes) / 1e6:.0f} MB of modules")
    print(f"cached build: median {statistics.median(warm):.2f} s over {len(warm)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
