#!/bin/sh
# Fails fast, with every reason at once, when a host cannot carry runners.
# POSIX sh on purpose: it must be able to report that bash or sudo is missing.
# With INSTALL_DEPENDENCIES=true (hosts[].installDependencies) it first installs the runner's
# native dependencies with apt-get, as the runner's own bin/installdependencies.sh does, bounded by
# DEPENDENCY_TIMEOUT seconds; a re-run after a kill finishes what dpkg left half-done.
# Inputs: HOST_NAME EXPECTED_ARCH MIN_DISK_MB INSTALL_ROOT INSTALL_DEPENDENCIES DEPENDENCY_TIMEOUT
set -eu
: "${HOST_NAME:?}" "${EXPECTED_ARCH:?}" "${MIN_DISK_MB:?}" "${INSTALL_ROOT:?}"
: "${INSTALL_DEPENDENCIES:?}" "${DEPENDENCY_TIMEOUT:?}"

# A non-root login user's PATH usually lacks the sbin directories; the scripts run under sudo.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
problems=""
add() { problems="${problems}
  - $1"; }

os=$(uname -s)
[ "$os" = Linux ] || add "operating system is $os, not Linux"
[ -d /run/systemd/system ] || add "systemd is not the init system (/run/systemd/system is missing)"
arch=$(uname -m)
[ "$arch" = "$EXPECTED_ARCH" ] || add "architecture is $arch, the stack says $EXPECTED_ARCH (hosts[].arch)"
for tool in bash sudo curl tar gzip sha256sum systemctl runuser useradd flock timeout df; do
  command -v "$tool" >/dev/null 2>&1 || add "required command '$tool' is not installed"
done
root_ok=true
if [ "$(id -u)" != 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; }; then
  root_ok=false
fi
if command -v sudo >/dev/null 2>&1 && ! sudo -n true >/dev/null 2>&1; then
  add "user $(id -un) cannot run sudo without a password (needs NOPASSWD: no terminal is attached)"
fi

# The packages actions/runner's bin/installdependencies.sh installs on Debian/Ubuntu
# (src/Misc/layoutbin/installdependencies.sh): one package of each line, the first of the line
# the host's package sources offer (it tries them in this order).
DEPENDENCY_GROUPS="libkrb5-3
zlib1g
liblttng-ust1t64 liblttng-ust1 liblttng-ust0
libssl3t64 libssl3 libssl1.1 libssl1.0.2 libssl1.0.0
libicu80 libicu79 libicu78 libicu77 libicu76 libicu75 libicu74 libicu73 libicu72 libicu71 libicu70 libicu69 libicu68 libicu67 libicu66 libicu65 libicu63 libicu60 libicu57 libicu55 libicu52"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
pkg_installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
started=$(date +%s)
left() { echo $((DEPENDENCY_TIMEOUT - ($(date +%s) - started))); }
# Runs "$@" as root within what is left of DEPENDENCY_TIMEOUT; 124 when time ran out.
bounded() {
  remaining=$(left)
  [ "$remaining" -gt 0 ] || return 124
  as_root env DEBIAN_FRONTEND=noninteractive timeout "$remaining" "$@"
}
apt_opts="-q -o DPkg::Lock::Timeout=60 -o Acquire::Retries=2 -o Dpkg::Use-Pty=0"
install_dependencies() {
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    add "hosts[].installDependencies is set but the host has no apt-get/dpkg (only Debian and Ubuntu are supported): install libicu with the system's package manager, or run the runner release's bin/installdependencies.sh as root"
    return 0
  fi
  missing=""
  while read -r group; do
    found=""
    for pkg in $group; do
      if pkg_installed "$pkg"; then found=$pkg; break; fi
    done
    [ -n "$found" ] || missing="$missing
$group"
  done <<EOF_GROUPS
$DEPENDENCY_GROUPS
EOF_GROUPS
  if [ -z "$missing" ]; then
    echo "runner-fleet: host $HOST_NAME: the runner's native dependencies are installed"
    return 0
  fi
  if [ "$root_ok" != true ]; then
    add "hosts[].installDependencies is set but user $(id -un) cannot become root (sudo -n) to install them"
    return 0
  fi
  echo "runner-fleet: host $HOST_NAME: installing the runner's native dependencies with apt-get (at most ${DEPENDENCY_TIMEOUT}s)"
  # A run killed while dpkg was unpacking leaves packages half-configured: finish them first.
  rc=0
  bounded dpkg --configure -a || rc=$?
  if [ "$rc" = 0 ]; then
    echo "runner-fleet: host $HOST_NAME: apt-get update"
    # Error-Mode=any: an unreachable source fails the update (apt >= 2.1; older apt ignores it).
    # shellcheck disable=SC2086 # apt_opts is a list of options
    bounded apt-get $apt_opts -o APT::Update::Error-Mode=any update || rc=$?
  fi
  if [ "$rc" = 124 ]; then
    add "installing the runner's native dependencies did not finish within ${DEPENDENCY_TIMEOUT}s (hosts[].installDependencies): check the host's package sources and run the deploy again; it goes on where this run stopped"
    return 0
  elif [ "$rc" != 0 ]; then
    add "apt-get could not refresh the package lists (exit $rc; its messages are above): check the host's package sources (hosts[].installDependencies)"
    return 0
  fi
  packages=""
  while read -r group; do
    [ -n "$group" ] || continue
    chosen=""
    for pkg in $group; do
      candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" {print $2}')
      if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then chosen=$pkg; break; fi
    done
    if [ -n "$chosen" ]; then
      packages="$packages $chosen"
    else
      add "none of the packages '$group' is available from the host's package sources (hosts[].installDependencies)"
    fi
  done <<EOF_MISSING
$missing
EOF_MISSING
  [ -n "$packages" ] || return 0
  echo "runner-fleet: host $HOST_NAME: apt-get install$packages"
  # shellcheck disable=SC2086 # apt_opts and packages are lists
  bounded apt-get $apt_opts install -y -o Dpkg::Options::=--force-confold $packages || rc=$?
  if [ "$rc" = 124 ]; then
    add "installing the runner's native dependencies did not finish within ${DEPENDENCY_TIMEOUT}s (hosts[].installDependencies): run the deploy again; it goes on where this run stopped"
  elif [ "$rc" != 0 ]; then
    add "apt-get install$packages failed (exit $rc; its messages are above) (hosts[].installDependencies)"
  else
    echo "runner-fleet: host $HOST_NAME: installed$packages in $(($(date +%s) - started))s"
  fi
}
[ "$INSTALL_DEPENDENCIES" != true ] || install_dependencies
# .NET's native dependencies, checked as the runner's own config.sh checks them (ldconfig, no
# root needed): without libicu config.sh exits 1 and the runner cannot register.
if command -v ldconfig >/dev/null 2>&1; then
  if ! ldconfig -NXv 2>/dev/null | grep -q libicu; then
    if command -v apt-get >/dev/null 2>&1; then
      # the newest libicuNN the host's package lists know (Debian 12: libicu72, Ubuntu 24.04: libicu74)
      pkg=$(apt-cache pkgnames libicu 2>/dev/null | grep -E '^libicu[0-9]+(t64)?$' | sort -V | tail -n1 || true)
      how="sudo apt-get update && sudo apt-get install -y ${pkg:-libicu<N> (the libicu package of the release)}"
    elif command -v dnf >/dev/null 2>&1; then
      how="sudo dnf install -y libicu"
    elif command -v yum >/dev/null 2>&1; then
      how="sudo yum install -y libicu"
    elif command -v zypper >/dev/null 2>&1; then
      how="sudo zypper install -y libicu"
    else
      how="install the ICU libraries (libicu) with the system's package manager"
    fi
    if [ "$INSTALL_DEPENDENCIES" = true ]; then
      add "the runner's native dependency libicu is still missing after the install (ldconfig finds no libicu)"
    else
      add "the runner's native dependency libicu is missing (ldconfig finds no libicu; actions/runner's config.sh refuses to run without it): $how; or set runner-fleet:hosts[].installDependencies: true for host $HOST_NAME and the deploy installs it"
    fi
  fi
else
  add "required command 'ldconfig' is not installed (the runner's config.sh uses it to find libicu)"
fi
# Free space where the runners will live: the nearest existing parent of INSTALL_ROOT.
dir=$INSTALL_ROOT
while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
free_kb=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
need_kb=$((MIN_DISK_MB * 1024))
if [ "${free_kb:-0}" -lt "$need_kb" ]; then
  add "only $((free_kb / 1024)) MB free under $dir, at least $MIN_DISK_MB MB needed (hosts[].minDiskMb)"
fi

if [ -n "$problems" ]; then
  echo "runner-fleet: host $HOST_NAME is not fit to carry runners:$problems" >&2
  echo "runner-fleet: FAILED on $HOST_NAME, step host-preflight.create: the host is not fit to carry runners (the problems listed above). To fix: fix each problem listed above (or set the hosts[] key it names), then run pulumi up again." >&2
  exit 1
fi
echo "runner-fleet: host $HOST_NAME passed preflight ($os $arch, systemd, sudo, $((free_kb / 1024)) MB free)"
