"""Release artifacts the lab's GitHub double serves under github.com's release paths.

- `actions-runner-linux-x64-<V>.tar.gz`: the runner stand-in (lab/runner_standin/), packed like the
  real release (files at the archive root: ./config.sh, ./run.sh, ./bin/...). Reproducible: sorted
  entries, fixed mtimes and owners, gzip without name/time, so its SHA-256 depends only on the
  sources and the version; the fleet pins that SHA-256 like a real release's.
- `node_exporter-<V>.linux-amd64.tar.gz`: a REAL node exporter, Debian's prometheus-node-exporter
  binary repacked in the upstream tarball layout (`node_exporter-<V>.linux-amd64/node_exporter`).
  The .deb and the tarball are cached under /var/cache/runner-fleet-lab/artifacts/, so only the
  first build needs the Debian mirror.

CLI: `python -m lab.artifacts OUT_DIR [--runner-version V]` prints the JSON `build_artifacts` returns.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

STANDIN_DIR = Path(__file__).resolve().parent / "runner_standin"
CACHE_DIR = Path("/var/cache/runner-fleet-lab/artifacts")
DEFAULT_RUNNER_VERSION = "2.329.0"
# Any fixed time works; it only has to be the same on every build.
FIXED_MTIME = 1_700_000_000
VERSION_PLACEHOLDER = "@RUNNER_VERSION@"
_VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_reproducible_tar_gz(target: Path, entries: list[tuple[str, bytes | None, int]]) -> None:
    """entries: (archive name, content or None for a directory, mode). Written to a temp file and
    renamed, so a reader never sees half an archive."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for name, content, mode in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(name)
            info.mtime = FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = mode
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw.getvalue())
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def _standin_mode(path: Path, content: bytes) -> int:
    """Scripts (a shebang) are executable, templates and docs are not: the same rule for every
    build, whatever the checkout's file modes are."""
    if path.name.endswith(".template"):
        return 0o644
    return 0o755 if content.startswith(b"#!") else 0o644


def build_runner_tarball(out_dir: Path | str, runner_version: str = DEFAULT_RUNNER_VERSION, arch: str = "x64") -> dict:
    """The stand-in as `actions-runner-linux-<arch>-<V>.tar.gz`, with V compiled into the listener."""
    if not _VERSION_RE.match(runner_version):
        raise ValueError(f"runner version {runner_version!r} is not MAJOR.MINOR.PATCH")
    entries: list[tuple[str, bytes | None, int]] = []
    found_placeholder = False
    for path in sorted(STANDIN_DIR.rglob("*")):
        rel = path.relative_to(STANDIN_DIR)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts) or path.suffix == ".pyc":
            continue
        name = f"./{rel.as_posix()}"
        if path.is_dir():
            entries.append((name + "/", None, 0o755))
            continue
        content = path.read_bytes()
        if VERSION_PLACEHOLDER.encode() in content:
            content = content.replace(VERSION_PLACEHOLDER.encode(), runner_version.encode())
            found_placeholder = True
        entries.append((name, content, _standin_mode(path, content)))
    if not found_placeholder:
        raise RuntimeError(f"no {VERSION_PLACEHOLDER} in {STANDIN_DIR}: the listener would not know its version")
    filename = f"actions-runner-linux-{arch}-{runner_version}.tar.gz"
    target = Path(out_dir) / filename
    _write_reproducible_tar_gz(target, entries)
    return {
        "version": runner_version,
        "arch": arch,
        "filename": filename,
        "sha256": sha256_file(target),
        "path": str(target),
    }


def _upstream_version(debian_version: str) -> str:
    """`1.5.0-1+b6` -> `1.5.0` (no epoch, no Debian revision, no +ds/~ suffix)."""
    version = debian_version.split(":", 1)[-1].rsplit("-", 1)[0]
    m = re.match(r"[0-9]+(\.[0-9]+)*", version)
    if not m:
        raise ValueError(f"cannot read an upstream version from {debian_version!r}")
    return m.group(0)


def _cached_deb(cache_dir: Path) -> Path:
    """The cached prometheus-node-exporter .deb, downloaded with apt-get the first time."""
    debs = sorted(cache_dir.glob("prometheus-node-exporter_*_amd64.deb"))
    if debs:
        return debs[-1]
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download.") as tmp:
        subprocess.run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", "prometheus-node-exporter"],
            cwd=tmp,
            check=True,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )
        got = sorted(Path(tmp).glob("prometheus-node-exporter_*.deb"))
        if not got:
            raise RuntimeError("apt-get download prometheus-node-exporter produced no .deb")
        target = cache_dir / got[-1].name
        os.replace(got[-1], target)
    return target


def _deb_field(deb: Path, name: str) -> str:
    out = subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def build_node_exporter_tarball(out_dir: Path | str, cache_dir: Path | str = CACHE_DIR) -> dict:
    """Debian's node exporter binary in the upstream release layout, cached per .deb."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    deb = _cached_deb(cache)
    arch = _deb_field(deb, "Architecture")
    if arch != "amd64":
        raise RuntimeError(f"{deb.name} is for {arch}, not amd64")
    version = _upstream_version(_deb_field(deb, "Version"))
    top = f"node_exporter-{version}.linux-amd64"
    filename = f"{top}.tar.gz"
    cached = cache / f"{deb.stem}.{filename}"
    if not cached.is_file():
        with tempfile.TemporaryDirectory(prefix="node-exporter-deb.") as tmp:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True, timeout=120)
            root = Path(tmp)
            binary = root / "usr/bin/prometheus-node-exporter"
            if not binary.is_file():
                raise RuntimeError(f"{deb.name} has no usr/bin/prometheus-node-exporter")
            entries: list[tuple[str, bytes | None, int]] = [
                (f"{top}/", None, 0o755),
                (f"{top}/node_exporter", binary.read_bytes(), 0o755),
            ]
            doc = root / "usr/share/doc/prometheus-node-exporter"
            for name in ("LICENSE", "NOTICE", "copyright"):
                if (doc / name).is_file():
                    entries.append((f"{top}/{name}", (doc / name).read_bytes(), 0o644))
            _write_reproducible_tar_gz(cached, entries)
    target = Path(out_dir) / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or sha256_file(target) != sha256_file(cached):
        tmp_target = target.with_name(f".{filename}.copy")
        shutil.copyfile(cached, tmp_target)
        os.replace(tmp_target, target)
    return {
        "version": version,
        "goarch": "amd64",
        "filename": filename,
        "sha256": sha256_file(target),
        "path": str(target),
    }


def build_artifacts(
    out_dir: Path | str, runner_version: str = DEFAULT_RUNNER_VERSION, cache_dir: Path | str = CACHE_DIR
) -> dict[str, Any]:
    """Both artifacts into out_dir (the GitHub double's --artifacts directory)."""
    return {
        "runner": build_runner_tarball(out_dir, runner_version),
        "node_exporter": build_node_exporter_tarball(out_dir, cache_dir),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.artifacts", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--runner-version", default=DEFAULT_RUNNER_VERSION)
    ap.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    args = ap.parse_args(argv)
    print(json.dumps(build_artifacts(args.out_dir, args.runner_version, args.cache_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
