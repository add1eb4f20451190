"""CLI: `python -m lab.executor up|preview|destroy --project DIR --stack NAME --config-file F --state S`,
and `python -m lab.executor export --state S [--file OUT]` (the state as `pulumi stack export` prints it).

The config file is JSON `{"config": {"runner-fleet:key": value, ...}, "secretKeys": [...]}`; it
holds secrets, so it must not be readable by group or others (chmod 600). Exit status: 0 ok,
1 the run failed, 2 bad invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from dataclasses import asdict
from pathlib import Path

from lab.executor.engine import run_program
from lab.executor.export import write_export
from lab.executor.ssh import SSHTransport


def _load_config(path: Path) -> tuple[dict[str, object], set[str]]:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise ValueError(f"holds secrets, so it must be mode 0600 (is {mode:04o}); run chmod 600 {path}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError('expected {"config": {...}, "secretKeys": [...]}')
    secret_keys = data.get("secretKeys", [])
    if not isinstance(secret_keys, list) or not all(isinstance(k, str) for k in secret_keys):
        raise ValueError("secretKeys must be a list of config keys")
    return data["config"], set(secret_keys)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print progress; the exit status says whether the run succeeded."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        return _export(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m lab.executor", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["up", "preview", "destroy"])
    parser.add_argument("--project", type=Path, required=True, help="directory holding __main__.py")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--config-file", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True, help="state file (its key file is STATE.key)")
    parser.add_argument(
        "--command-timeout",
        type=float,
        default=None,
        help="close a remote command still running after this many seconds (default: wait)",
    )
    parser.add_argument("--report", type=Path, default=None, help="also write the run report as JSON here")
    args = parser.parse_args(argv)
    try:
        config, secret_keys = _load_config(args.config_file)
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.config_file}: {exc}", file=sys.stderr)
        return 2
    report = run_program(
        project_dir=args.project,
        stack=args.stack,
        config=config,
        secret_keys=secret_keys,
        state_path=args.state,
        mode=args.mode,
        log=lambda line: print(line, flush=True),
        transport=SSHTransport(command_timeout=args.command_timeout),
    )
    if args.report is not None:
        document = {
            "mode": report.mode,
            "ok": report.ok,
            "error": report.error,
            "wallSeconds": report.wall_seconds,
            "commandsExecuted": report.commands_executed,
            "counts": report.counts(),
            "operations": [asdict(o) for o in report.operations],
            "executions": [asdict(e) for e in report.executions],
            "outputs": {k: "[secret]" if k in report.secret_outputs else v for k, v in report.outputs.items()},
        }
        args.report.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if report.ok else 1


def _export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.executor export",
        description="Write the state in `pulumi stack export` format (secrets stay encrypted).",
    )
    parser.add_argument("--state", type=Path, required=True, help="the executor's state file")
    parser.add_argument("--file", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        if args.file is None:
            write_export(args.state, sys.stdout)
        else:
            with open(args.file, "w") as out:
                write_export(args.state, out)
    except (OSError, ValueError) as exc:
        print(f"cannot export {args.state}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
