#!/bin/sh
# Fails fast, with every reason at once, when a host cannot carry runners.
# POSIX sh on purpose: it must be able to report that bash or sudo is missing.
# Inputs: HOST_NAME EXPECTED_ARCH MIN_DISK_MB INSTALL_ROOT
set -eu
: "${HOST_NAME:?}" "${EXPECTED_ARCH:?}" "${MIN_DISK_MB:?}" "${INSTALL_ROOT:?}"

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
if command -v sudo >/dev/null 2>&1 && ! sudo -n true >/dev/null 2>&1; then
  add "user $(id -un) cannot run sudo without a password (needs NOPASSWD: no terminal is attached)"
fi
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
    add "the runner's native dependency libicu is missing (ldconfig finds no libicu; actions/runner's config.sh refuses to run without it): $how; or run the runner release's bin/installdependencies.sh as root"
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
  exit 1
fi
echo "runner-fleet: host $HOST_NAME passed preflight ($os $arch, systemd, sudo, $((free_kb / 1024)) MB free)"
