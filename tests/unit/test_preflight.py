"""The host preflight's native-dependency step, run as rendered under /bin/sh against a fake apt.

The fakes (`apt-get`, `apt-cache`, `dpkg`, `dpkg-query`, `ldconfig`, `sudo`, `id`) record every
call and keep a package database in a directory: installing a package marks it installed, and
a libicu package makes `ldconfig` list libicu, as on a Debian host. `id` says the login user is
not root, so the install goes through `sudo -n` as on a real host. The rest of the preflight
(systemd, disk, ...) runs for real on this machine; these tests look only at the dependency
lines and the apt calls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from components import layout
from components.remote import Script
from components.runner_host import DEPENDENCY_TIMEOUT_SECONDS

# What actions/runner's src/Misc/layoutbin/installdependencies.sh installs on Debian 12 (bookworm):
# the first of each of its lists that bookworm's archive has.
BOOKWORM = ["libkrb5-3", "zlib1g", "liblttng-ust1", "libssl3", "libicu72"]
# Ubuntu 24.04 (noble) renamed libraries for 64-bit time_t: the t64 names come first in the lists.
NOBLE = ["libkrb5-3", "zlib1g", "liblttng-ust1t64", "libssl3t64", "libicu74"]

REAL_TOOLS = (
    "sh",
    "uname",
    "grep",
    "awk",
    "date",
    "df",
    "timeout",
    "dirname",
    "sleep",
    "cat",
    "env",
    "sort",
    "tail",
    "true",
)
FAKES = {
    "id": """#!/bin/sh
case "$1" in -u) echo 1000 ;; -un) echo deploy ;; *) echo "uid=1000(deploy)" ;; esac
""",
    "sudo": """#!/bin/sh
[ "$*" = "-n true" ] || echo "sudo $*" >> "$FAKE/calls"
[ "$1" = -n ] && shift
exec "$@"
""",
    "dpkg-query": """#!/bin/sh
# dpkg-query -W -f=FORMAT PKG
pkg=$3
if grep -qx "$pkg" "$FAKE/installed" 2>/dev/null; then echo "install ok installed"; exit 0; fi
echo "dpkg-query: no packages found matching $pkg" >&2; exit 1
""",
    "dpkg": """#!/bin/sh
echo "dpkg $*" >> "$FAKE/calls"
""",
    "apt-cache": """#!/bin/sh
# apt-cache policy PKG
pkg=$2
echo "$pkg:"
echo "  Installed: (none)"
if grep -qx "$pkg" "$FAKE/available" 2>/dev/null; then echo "  Candidate: 1.0-1"; else echo "  Candidate: (none)"; fi
""",
    "apt-get": """#!/bin/sh
echo "apt-get $*" >> "$FAKE/calls"
[ -n "${FAKE_APT_SLEEP:-}" ] && sleep "$FAKE_APT_SLEEP"
[ -n "${FAKE_APT_FAIL:-}" ] && { echo "E: Unable to locate package" >&2; exit 100; }
install=false
for arg in "$@"; do
  case "$arg" in
    install) install=true ;;
    -*|*=*) ;;
    *) if [ "$install" = true ]; then echo "$arg" >> "$FAKE/installed"; echo "Setting up $arg (1.0-1) ..."; fi ;;
  esac
done
""",
    "ldconfig": """#!/bin/sh
if grep -q '^libicu' "$FAKE/installed" 2>/dev/null; then echo "	libicuuc.so.72 -> libicuuc.so.72.1"; fi
echo "	libc.so.6 -> libc.so.6"
""",
}


def preflight(fake: Path, *, install: bool, timeout: int = DEPENDENCY_TIMEOUT_SECONDS, **env: str):
    text = Script(
        "host-preflight.create.sh",
        {
            "HOST_NAME": "host-1",
            "EXPECTED_ARCH": os.uname().machine,
            "MIN_DISK_MB": 0,
            "INSTALL_ROOT": layout.install_root("production"),
            "INSTALL_DEPENDENCIES": install,
            "DEPENDENCY_TIMEOUT": timeout,
        },
        sudo=False,
    ).text()
    environment = {
        "PATH": str(fake / "bin"),
        "FAKE": str(fake),
        "LANG": "C",
        **env,
    }
    started = time.monotonic()
    result = subprocess.run(["/bin/sh", "-c", text], capture_output=True, text=True, env=environment, check=False)
    return result, time.monotonic() - started


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(0o755)
    # Only these real tools on PATH, so the host's own apt and dpkg are never reached.
    for tool in REAL_TOOLS:
        real = shutil.which(tool)
        if real:
            (bin_dir / tool).symlink_to(real)
    (tmp_path / "calls").write_text("")
    return tmp_path


def calls(fake: Path) -> list[str]:
    return (fake / "calls").read_text().splitlines()


def apt_calls(fake: Path) -> list[str]:
    return [c for c in calls(fake) if not c.startswith("sudo ")]


def offer(fake: Path, packages: list[str], installed: list[str] = ()) -> None:
    (fake / "available").write_text("".join(p + "\n" for p in packages))
    (fake / "installed").write_text("".join(p + "\n" for p in installed))


def test_without_the_key_a_missing_libicu_fails_naming_the_key_and_nothing_is_installed(fake):
    offer(fake, BOOKWORM)
    result, _ = preflight(fake, install=False)
    assert result.returncode == 1
    assert "the runner's native dependency libicu is missing" in result.stderr
    assert "runner-fleet:hosts[].installDependencies: true for host host-1" in result.stderr
    assert "sudo apt-get update && sudo apt-get install -y" in result.stderr
    assert calls(fake) == []


@pytest.mark.parametrize("release", [BOOKWORM, NOBLE], ids=["debian-12", "ubuntu-24.04"])
def test_with_the_key_installs_the_runners_own_package_choice_through_sudo_then_passes_the_check(fake, release):
    # Both releases' archives offer several of each list; the first of each list wins, as in
    # installdependencies.sh (its lists are tried in order).
    offer(fake, [*release, "libssl1.1", "libicu67", "liblttng-ust0"])
    result, _ = preflight(fake, install=True)
    assert apt_calls(fake) == [
        "dpkg --configure -a",
        "apt-get -q -o DPkg::Lock::Timeout=60 -o Acquire::Retries=2 -o Dpkg::Use-Pty=0 "
        "-o APT::Update::Error-Mode=any update",
        "apt-get -q -o DPkg::Lock::Timeout=60 -o Acquire::Retries=2 -o Dpkg::Use-Pty=0 install -y "
        "-o Dpkg::Options::=--force-confold " + " ".join(release),
    ]
    assert all(c.startswith("sudo -n env DEBIAN_FRONTEND=noninteractive timeout ") for c in calls(fake)[::2])
    assert "libicu" not in result.stderr  # the check after the install finds it
    assert "runner-fleet: host host-1: installing the runner's native dependencies with apt-get" in result.stdout
    assert f"(at most {DEPENDENCY_TIMEOUT_SECONDS}s)" in result.stdout
    assert "runner-fleet: host host-1: installed " + " ".join(release) in result.stdout


def test_a_re_run_after_the_install_calls_no_apt_at_all(fake):
    offer(fake, BOOKWORM)
    preflight(fake, install=True)
    (fake / "calls").write_text("")
    result, _ = preflight(fake, install=True)
    assert calls(fake) == []
    assert "runner-fleet: host host-1: the runner's native dependencies are installed" in result.stdout
    assert "libicu" not in result.stderr


def test_only_the_missing_lists_are_installed(fake):
    offer(fake, BOOKWORM, installed=["libkrb5-3", "zlib1g", "liblttng-ust1", "libssl1.1"])
    preflight(fake, install=True)
    assert apt_calls(fake)[-1].endswith("--force-confold libicu72")


def test_an_install_that_overruns_its_bound_is_stopped_and_says_the_next_run_goes_on(fake):
    offer(fake, BOOKWORM)
    result, seconds = preflight(fake, install=True, timeout=2, FAKE_APT_SLEEP="30")
    assert seconds < 10
    assert result.returncode == 1
    assert "did not finish within 2s (hosts[].installDependencies)" in result.stderr
    assert "goes on where this run stopped" in result.stderr


def test_a_list_the_package_sources_do_not_offer_is_named(fake):
    offer(fake, [p for p in BOOKWORM if not p.startswith("libicu")])
    result, _ = preflight(fake, install=True)
    assert "none of the packages 'libicu80 libicu79" in result.stderr
    assert "libicu52' is available from the host's package sources (hosts[].installDependencies)" in result.stderr
    assert "libicu is still missing after the install" in result.stderr
    assert apt_calls(fake)[-1].endswith("--force-confold libkrb5-3 zlib1g liblttng-ust1 libssl3")


def test_a_failing_apt_get_is_reported_with_its_exit_status(fake):
    offer(fake, BOOKWORM)
    result, _ = preflight(fake, install=True, FAKE_APT_FAIL="1")
    assert "apt-get could not refresh the package lists (exit 100" in result.stderr


def test_a_host_without_apt_is_told_the_key_covers_debian_and_ubuntu_only(fake):
    offer(fake, BOOKWORM)
    (fake / "bin" / "apt-get").unlink()
    result, _ = preflight(fake, install=True)
    assert "hosts[].installDependencies is set but the host has no apt-get/dpkg" in result.stderr
    assert calls(fake) == []
