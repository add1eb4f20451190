"""GitHub's official REST description (npm `@octokit/openapi`, pinned) and a response checker for it.

The package carries GitHub's OpenAPI 3.0 descriptions of api.github.com, GitHub Enterprise Cloud
(`ghec`) and each supported GitHub Enterprise Server release (`ghes-3.17` …) under `generated/`.
`install()` puts one pinned version into a cache directory keyed by that version, once; the lab's
conformance tests hold the GitHub double's answers to it with `ResponseChecker`.

    python -m lab.openapi install        # prints the package directory (installs it if needed)
    python -m lab.openapi path           # prints it without installing (exit 1 if absent)
    python -m lab.openapi flavors        # api.github.com, ghec, ghes-3.17, …

Cache: `$RUNNER_FLEET_CACHE/octokit-openapi-<version>` (default `/var/cache/runner-fleet`, or
`~/.cache/runner-fleet` when that is not writable). The install is idempotent and safe to kill at
any point: npm installs into a temporary sibling directory under a lock, which is renamed into place
only once the package is complete; leftovers of a killed run are removed by the next one.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PACKAGE = "@octokit/openapi"
VERSION = "23.0.2"
DOTCOM = "api.github.com"
GHEC = "ghec"
_INSTALL_TIMEOUT = 600


class OpenApiError(RuntimeError):
    """The description cannot be installed or read."""


def cache_root() -> Path:
    env = os.environ.get("RUNNER_FLEET_CACHE")
    if env:
        return Path(env)
    system = Path("/var/cache/runner-fleet")
    if os.access(system if system.exists() else system.parent, os.W_OK):
        return system
    return Path.home() / ".cache" / "runner-fleet"


def install_dir(version: str = VERSION) -> Path:
    return cache_root() / f"octokit-openapi-{version}"


def package_dir(version: str = VERSION) -> Path:
    return install_dir(version) / "node_modules" / "@octokit" / "openapi"


def _complete(pkg: Path, version: str) -> bool:
    try:
        meta = json.loads((pkg / "package.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        meta.get("name") == PACKAGE
        and meta.get("version") == version
        and (pkg / "generated" / f"{DOTCOM}.json").is_file()
    )


def install(version: str = VERSION, npm: str = "npm") -> Path:
    """Install `@octokit/openapi@<version>` (exact) unless present; returns the package directory."""
    pkg = package_dir(version)
    if _complete(pkg, version):
        return pkg
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise OpenApiError(f"{version!r} is not an exact version")
    npm_path = shutil.which(npm)
    if npm_path is None:
        raise OpenApiError("npm is needed to install GitHub's REST description (Debian: apt-get install npm)")
    target = install_dir(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(pkg, version):  # another process finished it while we waited
            return pkg
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            result = subprocess.run(
                [
                    npm_path,
                    "install",
                    "--prefix",
                    str(tmp),
                    "--no-save",
                    "--no-package-lock",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    f"{PACKAGE}@{version}",
                ],
                capture_output=True,
                text=True,
                timeout=_INSTALL_TIMEOUT,
                cwd=tmp,
            )
            if result.returncode != 0:
                raise OpenApiError(f"npm install {PACKAGE}@{version} failed:\n{result.stderr.strip()}")
            if not _complete(tmp / "node_modules" / "@octokit" / "openapi", version):
                raise OpenApiError(f"npm installed {PACKAGE}@{version} without its generated descriptions")
            if target.exists():
                shutil.rmtree(target)  # an incomplete older copy
            tmp.chmod(0o755)  # mkdtemp makes it private; the description is public
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return pkg


def flavors(version: str = VERSION) -> list[str]:
    """Descriptions the installed package carries: api.github.com, ghec, ghes-3.17, …"""
    gen = package_dir(version) / "generated"
    names = sorted(p.name.removesuffix(".json") for p in gen.glob("*.json") if not p.name.endswith(".deref.json"))
    if not names:
        raise OpenApiError(f"{PACKAGE}@{version} is not installed; run: python -m lab.openapi install")
    return names


def ghes_versions(version: str = VERSION) -> list[str]:
    """GHES releases described, oldest first (`["3.17", "3.18", "3.19"]`)."""
    found = [f.removeprefix("ghes-") for f in flavors(version) if f.startswith("ghes-")]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


@functools.lru_cache(maxsize=8)
def _load(flavor: str, version: str) -> dict[str, Any]:
    path = package_dir(version) / "generated" / f"{flavor}.json"
    if not path.is_file():
        raise OpenApiError(f"no description {flavor!r} in {PACKAGE}@{version} ({path})")
    return json.loads(path.read_text())


def description(flavor: str = DOTCOM, version: str = VERSION) -> dict[str, Any]:
    """The loaded REST description of `api.github.com`, `ghec`, `ghes-3.19` (any release described)
    or `ghes` (the newest GHES release described), as GitHub publishes it: `$ref`s are left in place
    (ResponseChecker resolves them). Loaded once per process and shared: treat it as read-only."""
    if flavor == "ghes":
        flavor = f"ghes-{ghes_versions(version)[-1]}"
    return _load(flavor, version)


# --- response checking ---------------------------------------------------------------------------


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema objects -> JSON Schema draft 4: `nullable: true` becomes a `null` type
    (or an `anyOf` with null where there is no `type`); everything else is draft 4 already."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items()}
    if out.get("nullable") is True:
        del out["nullable"]
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


def _pointer(parts: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class Operation:
    method: str  # lower case
    template: str  # "/repos/{owner}/{repo}/actions/runners"
    operation_id: str
    statuses: tuple[str, ...]


@dataclass
class Verdict:
    operation: Operation | None  # None: the description has no such operation
    problems: list[str]

    @property
    def valid(self) -> bool:
        return self.operation is not None and not self.problems


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return "T" in value and (value.endswith("Z") or re.search(r"[+-]\d\d:\d\d$", value) is not None)


class ResponseChecker:
    """Checks one HTTP answer against a description: the status code must be documented for the
    operation, and the body must match that response's JSON schema (with `$ref`s resolved), or be
    empty where the description documents no content."""

    def __init__(self, flavor: str = DOTCOM, version: str = VERSION):
        import jsonschema
        import referencing
        import referencing.jsonschema

        self.flavor = flavor if flavor != "ghes" else f"ghes-{ghes_versions(version)[-1]}"
        self.version = version
        raw = _load(self.flavor, version)
        self._doc = _to_json_schema(raw)
        server = raw.get("servers", [{}])[0].get("url", "")
        # api.github.com serves REST at the host's root, GHES under /api/v3.
        self.base_path = urlsplit(server.replace("{protocol}", "http").replace("{hostname}", "h")).path.rstrip("/")
        self._uri = f"urn:runner-fleet:openapi:{self.flavor}:{version}"
        resource = referencing.Resource.from_contents(self._doc, default_specification=referencing.jsonschema.DRAFT4)
        self._registry = referencing.Registry().with_resource(self._uri, resource)
        self._validator_cls = jsonschema.Draft4Validator
        checker = jsonschema.FormatChecker(formats=())
        checker.checks("date-time")(_date_time)
        self._format_checker = checker
        self._templates: list[tuple[re.Pattern[str], int, str]] = []
        for template in self._doc["paths"]:
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            literal = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
            self._templates.append((re.compile(f"^{regex}$"), literal, template))

    def _resolve(self, node: dict[str, Any], where: list[str]) -> tuple[dict[str, Any], list[str]]:
        """Follow OpenAPI-level `$ref`s (responses, parameters); returns the node and its pointer."""
        while "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise OpenApiError(f"external $ref {ref!r} not supported")
            where = [p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/")]
            node = self._doc
            for p in where:
                node = node[p]
        return node, where

    def operation(self, method: str, path: str) -> Operation | None:
        """The described operation a request path (as the double is asked, `/api/v3/…` included)
        belongs to; the template with the most literal segments wins (`…/runners/downloads` over
        `…/runners/{runner_id}`)."""
        rel = urlsplit(path).path
        if self.base_path and rel.startswith(self.base_path + "/"):
            rel = rel[len(self.base_path) :]
        elif rel.startswith("/api/v3/"):
            rel = rel[len("/api/v3") :]  # the double is GHES-shaped; api.github.com has no prefix
        rel = rel.rstrip("/") or "/"
        best = None
        for regex, literal, template in self._templates:
            matches = regex.match(rel) is not None and method.lower() in self._doc["paths"][template]
            if matches and (best is None or literal > best[0]):
                best = (literal, template)
        if best is None:
            return None
        op = self._doc["paths"][best[1]][method.lower()]
        return Operation(method.lower(), best[1], op.get("operationId", ""), tuple(op.get("responses", {})))

    def schema_for(self, operation: Operation, status: int) -> tuple[dict[str, Any] | None, bool]:
        """(schema reference, documented): the JSON schema the body must match (None: no content)."""
        responses = self._doc["paths"][operation.template][operation.method]["responses"]
        key = next(
            (k for k in (str(status), f"{str(status)[0]}XX", "default") if k in responses),
            None,
        )
        if key is None:
            return None, False
        where = ["paths", operation.template, operation.method, "responses", key]
        response, where = self._resolve(responses[key], where)
        content = response.get("content") or {}
        media = next(
            (m for m in content if m.split(";")[0].strip() in ("application/json", "application/scim+json")), None
        )
        if media is None:
            return None, True
        return {"$ref": f"{self._uri}#{_pointer([*where, 'content', media, 'schema'])}"}, True

    def component(self, name: str) -> dict[str, Any]:
        """A schema reference to `#/components/schemas/<name>` (e.g. `basic-error`)."""
        if name not in self._doc["components"]["schemas"]:
            raise OpenApiError(f"{self.flavor} has no schema {name!r}")
        return {"$ref": f"{self._uri}#/components/schemas/{name}"}

    def validate_body(self, schema: dict[str, Any] | None, body: bytes, content_type: str) -> list[str]:
        if schema is None:
            return [] if not body.strip() else [f"body {body[:80]!r} where the description documents none"]
        if "json" not in content_type.lower():
            return [f"content type {content_type!r} is not JSON"]
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError as e:
            return [f"body is not JSON: {e}"]
        validator = self._validator_cls(schema, registry=self._registry, format_checker=self._format_checker)
        return [_describe(err) for err in _errors(validator, data)]

    def check(self, method: str, path: str, status: int, body: bytes, content_type: str = "") -> Verdict:
        op = self.operation(method, path)
        if op is None:
            return Verdict(None, [f"{self.flavor} describes no {method.upper()} {urlsplit(path).path}"])
        schema, documented = self.schema_for(op, status)
        if not documented:
            return Verdict(
                op, [f"status {status} is not documented for {op.operation_id} (documented: {', '.join(op.statuses)})"]
            )
        return Verdict(op, self.validate_body(schema, body, content_type))


def _errors(validator: Any, data: Any) -> Iterator[Any]:
    return iter(sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)))


def _describe(err: Any) -> str:
    where = "/".join(str(p) for p in err.absolute_path) or "(body)"
    return f"{where}: {err.message[:300]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.openapi", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["install", "path", "flavors"])
    ap.add_argument("--version", default=VERSION, help=f"package version (default {VERSION})")
    args = ap.parse_args(argv)
    try:
        if args.action == "install":
            print(install(args.version))
        elif args.action == "path":
            pkg = package_dir(args.version)
            if not _complete(pkg, args.version):
                print(f"{PACKAGE}@{args.version} is not installed at {pkg}", file=sys.stderr)
                return 1
            print(pkg)
        else:
            print("\n".join(flavors(args.version)))
    except OpenApiError as e:
        print(f"lab.openapi: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
