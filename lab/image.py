"""Cached root filesystems for the lab hosts: a Debian bookworm base and a monitoring layer.

The base is a plain directory (used read-only as the overlay lower layer of every host); the
monitoring layer is an overlayfs upper directory holding only what `apt-get install prometheus`
changed, stacked on the base as `lowerdir=<monitoring>:<base>`. Plain directories rather than a
tar.zst: overlayfs needs a directory anyway, so an archive would cost an extraction (~5 s and a
second 275 MB copy) on every cold `up`, and nothing here ships the cache to another machine.

Both are keyed by a hash of the recipe (lab/image-recipe.sh, which holds the package lists and
every fix-up) and of CACHE_FORMAT: an edit to the recipe builds a fresh image next time, and
entries of other keys are pruned once the new one exists. This module only orchestrates; bump
CACHE_FORMAT when a change here alters what ends up in the cache.
Builds run in a temporary directory that is renamed into place only when complete, under a
lock that the build process itself keeps holding, so a killed build never leaves a half image
and a second build waits instead of racing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RECIPE = Path(__file__).with_name("image-recipe.sh")
CACHE_FORMAT = "1: base-<key> rootfs directory, monitoring-<key> overlay upper directory"
CACHE_ENV = "RUNNER_FLEET_LAB_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/runner-fleet-lab")
# Generous bounds for a cold debootstrap (~60 s) and apt-get install prometheus (~20 s).
BUILD_TIMEOUT = {"base": 1200.0, "monitoring": 1200.0}

Log = Callable[[str], None]


@dataclass(frozen=True)
class Image:
    """Where a built image lives; `build_seconds` is 0.0 when everything came from the cache."""

    key: str
    base: Path
    monitoring: Path | None
    build_seconds: float

    def lowerdirs(self, monitoring: bool) -> list[Path]:
        """Overlay lower layers for one host, topmost first (overlayfs `lowerdir=` order)."""
        if not monitoring:
            return [self.base]
        if self.monitoring is None:
            raise ValueError("image was prepared without the monitoring layer")
        return [self.monitoring, self.base]


class ImageBuildError(RuntimeError):
    """A recipe stage failed; the message carries the end of its log."""


def recipe_key() -> str:
    """Hash of everything that decides the image's content, short enough for directory names."""
    digest = hashlib.sha256(CACHE_FORMAT.encode() + b"\0" + RECIPE.read_bytes())
    return digest.hexdigest()[:16]


def resolve_cache_dir(cache_dir: Path | str | None = None) -> Path:
    """Explicit argument, then $RUNNER_FLEET_LAB_CACHE, then /var/cache/runner-fleet-lab."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def ensure_image(
    *,
    monitoring: bool,
    cache_dir: Path | str | None = None,
    force: bool = False,
    log: Log = print,
) -> Image:
    """Return the cached image for the current recipe, building what is missing (or all if `force`)."""
    cache = resolve_cache_dir(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = recipe_key()
    base = cache / f"base-{key}"
    layer = cache / f"monitoring-{key}"
    built = 0.0
    with _build_lock(cache, log) as lock_fd:
        _sweep_temporaries(cache, log)
        if force:
            for path in (layer, base):
                if path.exists():
                    _remove_tree(path)
        if not base.is_dir():
            built += _build(cache, "base", base, [], lock_fd, log)
        if monitoring and not layer.is_dir():
            built += _build(cache, "monitoring", layer, [str(base)], lock_fd, log)
        _prune_other_keys(cache, key, log)
    return Image(key=key, base=base, monitoring=layer if monitoring else None, build_seconds=built)


@contextmanager
def _build_lock(cache: Path, log: Log) -> Iterator[int]:
    fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another image build to finish (lock {cache / '.lock'})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _build(cache: Path, stage: str, final: Path, args: list[str], lock_fd: int, log: Log) -> float:
    """Run one recipe stage into a temporary directory and rename it to `final` on success."""
    tmp = cache / f".tmp-{final.name}-{os.getpid()}"
    scratch = cache / f".tmp-scratch-{final.name}-{os.getpid()}"
    log_path = cache / f"{final.name}.log"
    stage_args = [stage, *args, str(tmp)]
    if stage == "monitoring":
        stage_args.append(str(scratch))
    log(f"building {stage} image {final.name} (log: {log_path})")
    start = time.monotonic()
    try:
        with open(log_path, "wb") as out:
            # A private mount namespace: the recipe's proc/overlay mounts die with it. The lock fd
            # is inherited so an orphaned build (caller killed) still holds the lock until it ends.
            result = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "bash", str(RECIPE), *stage_args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(lock_fd,),
                timeout=BUILD_TIMEOUT[stage],
                check=False,
            )
        if result.returncode != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-25:]
            raise ImageBuildError(f"{stage} image build failed (rc {result.returncode}):\n" + "\n".join(tail))
        os.rename(tmp, final)
    finally:
        for leftover in (tmp, scratch):
            if leftover.exists():
                _remove_tree(leftover)
    elapsed = time.monotonic() - start
    log(f"built {stage} image in {elapsed:.1f} s")
    return elapsed


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo, as far as the lab needs it."""

    point: str
    fstype: str
    source: str
    options: str  # superblock options: an overlay's lowerdir/upperdir/workdir


def mounts() -> list[Mount]:
    """Current mounts, in mount order."""

    def unescape(text: str) -> str:  # mountinfo escapes space, tab, newline and backslash as \ooo
        return text.encode().decode("unicode_escape")

    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            fstype, source, options = (right.split(" ") + ["", ""])[:3]
            result.append(Mount(unescape(left.split(" ")[4]), fstype, unescape(source), options))
    return result


def _remove_tree(path: Path) -> None:
    """Delete a build tree, first detaching anything a recipe run outside `unshare` left mounted."""
    prefix = str(path).rstrip("/") + "/"
    for point in sorted((m.point for m in mounts() if m.point.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, timeout=60)
    if path.is_dir() and not path.is_symlink():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True, timeout=600)
    else:
        path.unlink(missing_ok=True)


def _sweep_temporaries(cache: Path, log: Log) -> None:
    # Safe under the lock: a build that owns a temporary directory also holds the lock.
    for entry in cache.glob(".tmp-*"):
        log(f"removing interrupted build {entry.name}")
        _remove_tree(entry)


def _in_use(path: Path) -> bool:
    """True if a mounted overlay uses `path` as a layer (a host of a running lab)."""
    return any(str(path) in m.options for m in mounts() if m.fstype == "overlay")


def _prune_other_keys(cache: Path, key: str, log: Log) -> None:
    for entry in cache.iterdir():
        stem, _, entry_key = entry.name.partition("-")
        if stem not in ("base", "monitoring") or entry_key in (key, f"{key}.log"):
            continue
        if entry.suffix == ".log":
            entry.unlink(missing_ok=True)
        elif entry.is_dir() and not _in_use(entry):
            log(f"pruning image {entry.name} of an older recipe")
            _remove_tree(entry)


def image_size_bytes(path: Path) -> int:
    """Disk usage of a cached tree (for reports); `du` counts hard links once, like the disk does."""
    du = shutil.which("du") or "du"
    out = subprocess.run(
        [du, "-sx", "--block-size=1", str(path)], capture_output=True, text=True, check=True, timeout=120
    )
    return int(out.stdout.split()[0])
