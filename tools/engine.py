"""The real Pulumi engine for tests and the demo, built from Go modules and cached by version.

    python -m tools.engine build [PIECE ...]   build (or reuse) the pieces; default: all
    python -m tools.engine status              what is available, from where, and what is missing
    python -m tools.engine env                 shell exports that run the engine without downloads

Pieces:
- ``cli``: the ``pulumi`` command (package ``cmd/pulumi`` of module github.com/pulumi/pulumi/pkg/v3);
- ``command-provider``: ``pulumi-resource-command`` (module github.com/pulumi/pulumi-command/provider),
  installed as the plugin ``resource-command-v<version>`` under this tool's PULUMI_HOME;
- ``actionlint``: the workflow linter (module github.com/rhysd/actionlint), for the CI workflows.

Versions come from requirements.txt (``pulumi==``, ``pulumi-command==``); the tables below only map
a Python package version to the Go module version that carries the same release. Before building,
each module is asked of the Go module proxy; one that is not served stops the build at once with
the module, the version and the proxy's answer. Nothing falls back to anything else.

The Python language host (``pulumi-language-python``) is not built: the lab drives the CLI through
``pulumi.automation`` with an inline program, which serves the language protocol from the Python
process itself. Running ``pulumi up`` inside the project directory needs an ordinary Pulumi install.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
REQUIREMENTS = PROJECT / "requirements.txt"
CACHE_ENV = "RUNNER_FLEET_ENGINE_CACHE"
DEFAULT_CACHE = (
    Path("/var/cache/runner-fleet-engine") if os.geteuid() == 0 else Path.home() / ".cache" / "runner-fleet-engine"
)

# pulumi (PyPI) version -> github.com/pulumi/pulumi/pkg/v3 version. The CLI is the same release
# unless the proxy does not serve that release's pkg/ tag (not every release has one); then the
# nearest newer served release is used: a newer CLI runs programs of an older Python SDK.
CLI_MODULE = "github.com/pulumi/pulumi/pkg/v3"
CLI_PACKAGE = "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
SDK_MODULE = "github.com/pulumi/pulumi/sdk/v3"
CLI_FOR_SDK = {"3.272.0": "v3.274.0"}  # pkg/v3.272.0: "403 This module version is not available"
# pulumi-command (PyPI) version -> provider module pseudo-version (the provider/ module has no tags).
COMMAND_MODULE = "github.com/pulumi/pulumi-command/provider"
COMMAND_PACKAGE = "github.com/pulumi/pulumi-command/provider/cmd/pulumi-resource-command"
COMMAND_FOR_SDK = {"1.2.1": "v0.0.0-20260303235922-7f3eb6f3b77c"}  # commit 7f3eb6f3b77c = v1.2.1
ACTIONLINT_MODULE = "github.com/rhysd/actionlint"
ACTIONLINT_PACKAGE = "github.com/rhysd/actionlint/cmd/actionlint"
ACTIONLINT_VERSION = "v1.7.12"
# Release builds' replace of the clipboard module (pkg/go.mod), repeated in the wrapper module.
CLIPBOARD_REPLACE = "github.com/atotto/clipboard=github.com/tgummerer/clipboard@v0.0.0-20241001131231-d02d263e614e"

PIECES = ("cli", "command-provider", "actionlint")


class EngineError(Exception):
    """A piece cannot be built or found; the message says which and what to do."""


def pinned(package: str) -> str:
    """The `package==X` pin of requirements.txt."""
    for line in REQUIREMENTS.read_text().splitlines():
        m = re.fullmatch(rf"\s*{re.escape(package)}==([0-9][0-9A-Za-z.]*)\s*(#.*)?", line)
        if m:
            return m.group(1)
    raise EngineError(f"requirements.txt has no `{package}==` pin")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


@dataclass(frozen=True)
class Piece:
    name: str
    module: str
    version: str
    package: str
    binary: Path  # where the built binary lives in the cache
    ldflags: str

    @property
    def stamp(self) -> Path:
        return self.binary.with_name(self.binary.name + ".built")


def pieces() -> dict[str, Piece]:
    root = cache_dir()
    sdk = pinned("pulumi")
    command = pinned("pulumi-command")
    try:
        cli_version = CLI_FOR_SDK.get(sdk, f"v{sdk}")
        command_version = COMMAND_FOR_SDK[command]
    except KeyError:
        raise EngineError(
            f"no provider module version known for pulumi-command=={command}: add the release commit's "
            "pseudo-version to COMMAND_FOR_SDK in tools/engine.py"
        ) from None
    return {
        "cli": Piece(
            "cli",
            CLI_MODULE,
            cli_version,
            CLI_PACKAGE,
            root / f"pulumi-{cli_version}" / "bin" / "pulumi",
            f"-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version={cli_version}",
        ),
        "command-provider": Piece(
            "command-provider",
            COMMAND_MODULE,
            command_version,
            COMMAND_PACKAGE,
            home_dir() / "plugins" / f"resource-command-v{command}" / "pulumi-resource-command",
            f"-X github.com/pulumi/pulumi-command/provider/pkg/version.Version=v{command}",
        ),
        "actionlint": Piece(
            "actionlint",
            ACTIONLINT_MODULE,
            ACTIONLINT_VERSION,
            ACTIONLINT_PACKAGE,
            root / f"actionlint-{ACTIONLINT_VERSION}" / "actionlint",
            f"-X github.com/rhysd/actionlint.version={ACTIONLINT_VERSION}",
        ),
    }


def home_dir() -> Path:
    """The PULUMI_HOME the lab uses: plugins live here, nothing from ~/.pulumi leaks in."""
    return cache_dir() / "pulumi-home"


def _say(message: str) -> None:
    print(f"engine: {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise EngineError(
            "Go is not installed, and no Pulumi CLI of the pinned version was found. Install Go (>= 1.26) "
            "and run `python -m tools.engine build`, or install the Pulumi CLI "
            f"{pieces()['cli'].version} and `pulumi plugin install resource command v{pinned('pulumi-command')}`."
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=mod", "GOTOOLCHAIN": "local"})
    return env


def check_served(module: str, version: str) -> None:
    """Ask the Go module proxy for `module@version`; stop at once when it is not served."""
    proc = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        env=_go_env(),
        cwd="/",
        timeout=600,
        check=False,
    )
    error = ""
    try:
        error = json.loads(proc.stdout or "{}").get("Error", "")
    except json.JSONDecodeError:
        error = proc.stderr.strip()
    if proc.returncode != 0 or error:
        answer = (error or proc.stderr.strip() or "no answer").replace("\n\t", " ")
        raise EngineError(f"the Go module proxy does not serve {module}@{version}: {answer}")


def _wrapper(piece: Piece, build_dir: Path) -> None:
    """A throwaway module that requires the piece's module (and, for the CLI, the SDK of the same
    release with pkg's own replace), so `go build PACKAGE` works where `go install` cannot."""
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "go.mod").write_text("module runner-fleet.invalid/engine-build\n\ngo 1.26\n")
    (build_dir / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{piece.package}"\n')
    go, env = _go(), _go_env()
    requires = [f"-require={piece.module}@{piece.version}"]
    if piece.name == "cli":
        requires.append(f"-require={SDK_MODULE}@{piece.version}")
        requires.append(f"-replace={CLIPBOARD_REPLACE}")
    subprocess.run([go, "mod", "edit", *requires], cwd=build_dir, env=env, check=True)
    subprocess.run([go, "mod", "tidy"], cwd=build_dir, env=env, check=True, timeout=1800)


def built_version(piece: Piece) -> str | None:
    try:
        return piece.stamp.read_text().strip() if piece.binary.exists() else None
    except OSError:
        return None


def build(piece: Piece) -> Path:
    """Build `piece` into the cache unless that exact version is already there."""
    if built_version(piece) == piece.version:
        _say(f"{piece.name} {piece.version}: cached ({piece.binary})")
        return piece.binary
    started = time.monotonic()
    _say(f"{piece.name} {piece.version}: asking the Go module proxy for {piece.module}@{piece.version}")
    check_served(piece.module, piece.version)
    build_dir = cache_dir() / ".build" / f"{piece.name}-{piece.version}"
    _say(f"{piece.name}: resolving and downloading modules (go mod tidy in {build_dir})")
    _wrapper(piece, build_dir)
    _say(f"{piece.name}: modules ready after {time.monotonic() - started:.0f} s; compiling {piece.package}")
    piece.binary.parent.mkdir(parents=True, exist_ok=True)
    partial = piece.binary.with_name(piece.binary.name + ".partial")
    subprocess.run(
        [
            _go(),
            "build",
            "-trimpath",
            "-tags",
            "osusergo,grpcnotrace",
            "-ldflags",
            piece.ldflags,
            "-o",
            str(partial),
            piece.package,
        ],
        cwd=build_dir,
        env=_go_env(),
        check=True,
        timeout=3600,
    )
    # Rename last: a build killed half-way leaves no binary that looks finished.
    partial.replace(piece.binary)
    piece.stamp.write_text(piece.version + "\n")
    shutil.rmtree(build_dir, ignore_errors=True)
    _say(f"{piece.name} {piece.version}: built in {time.monotonic() - started:.0f} s -> {piece.binary}")
    return piece.binary


def _version_of(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return None
    return out.strip() or None


def find(name: str) -> Path | None:
    """A usable binary for `name`: the cache first, then one installed the usual way (PATH for the
    CLI and actionlint, ~/.pulumi/plugins for the provider) if it has the pinned version."""
    piece = pieces()[name]
    if built_version(piece) == piece.version:
        return piece.binary
    if name == "command-provider":
        usual = Path.home() / ".pulumi" / "plugins" / piece.binary.parent.name / piece.binary.name
        return usual if usual.exists() else None
    found = shutil.which("pulumi" if name == "cli" else name)
    if found and _version_of(found) in (piece.version, f"v{pinned('pulumi')}"):
        return Path(found)
    return None


def env(extra_path: Path | None = None) -> dict[str, str]:
    """What a process needs to run the real CLI here: no login, no update check, no downloads."""
    out = {
        "PULUMI_HOME": str(home_dir()),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
    }
    provider = find("command-provider")
    if provider is not None and provider.parent.parent.parent != home_dir():
        out["PULUMI_HOME"] = str(provider.parent.parent.parent)
    cli = find("cli")
    if cli is not None:
        out["PATH"] = f"{cli.parent}:{os.environ.get('PATH', '')}"
    return out


def status() -> list[tuple[str, str, str]]:
    rows = []
    for name, piece in pieces().items():
        found = find(name)
        rows.append((name, piece.version, str(found) if found else "missing"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.engine",
        description="Build, find and describe the real Pulumi engine (CLI, pulumi-command provider) and "
        "actionlint from Go modules, cached by version under $RUNNER_FLEET_ENGINE_CACHE "
        f"(default {DEFAULT_CACHE}).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or reuse pieces (default: all); exit 1 naming any piece not served")
    b.add_argument("pieces", nargs="*", metavar="PIECE", help=f"any of {', '.join(PIECES)}")
    sub.add_parser("status", help="print each piece, its pinned version and where it was found")
    sub.add_parser("env", help="print shell exports that run the real CLI with no login, update check or download")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            table = pieces()
            unknown = [name for name in args.pieces if name not in table]
            if unknown:
                parser.error(f"unknown piece(s) {', '.join(unknown)}; choose from {', '.join(PIECES)}")
            failed = []
            for name in args.pieces or PIECES:
                try:
                    build(table[name])
                except EngineError as exc:
                    _say(f"{name}: NOT BUILT: {exc}")
                    failed.append(name)
                except subprocess.CalledProcessError as exc:
                    _say(f"{name}: NOT BUILT: `{' '.join(map(str, exc.cmd))}` exited {exc.returncode}")
                    failed.append(name)
            return 1 if failed else 0
        if args.cmd == "status":
            for name, version, where in status():
                print(f"{name:18} {version:38} {where}")
            return 0 if all(where != "missing" for _, _, where in status()) else 1
        for key, value in env().items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    except EngineError as exc:
        _say(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
