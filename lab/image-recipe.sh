#!/usr/bin/env bash
# Recipe for the lab hosts' root filesystems. Its text is part of the cache key (lab/image.py),
# so any edit here rebuilds the image on the next `python -m lab.hosts build`.
#
#   image-recipe.sh base TARGET
#       Debian bookworm minbase + systemd, sshd, sudo, python3 and the lab fix-ups, in TARGET.
#   image-recipe.sh monitoring BASE LAYER SCRATCH
#       Debian's `prometheus` package installed with apt on top of BASE; only the changed files
#       land in LAYER (an overlayfs upper directory), SCRATCH holds the overlay's work/merged dirs.
#
# lab/image.py runs this inside a private mount namespace (`unshare --mount`), so the proc and
# overlay mounts made here vanish with the process even if it is killed half-way.
set -euo pipefail

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# procps and iputils-ping: what an operator (and the lab tests) expect on any Debian host.
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,sudo,curl,ca-certificates,iproute2,procps,iputils-ping,libicu72
# Recommends stay out: prometheus recommends prometheus-node-exporter, which the program under
# test installs itself.
MONITORING_PACKAGES=(prometheus prometheus-alertmanager)

in_root() {
    local root=$1
    shift
    DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 chroot "$root" "$@"
}

stage_base() {
    local target=$1
    timeout 900 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$target" "$MIRROR"

    # An empty machine-id (the lab writes one per host); dbus reads the same id.
    : >"$target/etc/machine-id"
    mkdir -p "$target/var/lib/dbus"
    ln -sfn /etc/machine-id "$target/var/lib/dbus/machine-id"
    # minbase ships no /etc/hosts: without it "localhost" does not resolve (Prometheus needs it).
    cat >"$target/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
    # debootstrap copies the build machine's hostname and resolver; the hosts have neither.
    rm -f "$target/etc/hostname"
    printf '# Lab hosts have no resolver; names come from /etc/hosts.\n' >"$target/etc/resolv.conf"
    chmod 0644 "$target/etc/resolv.conf"
    # What Debian's installer and cloud images write; pam_env complains on every login without it.
    printf 'LANG=C.UTF-8\n' >"$target/etc/default/locale"
    # Host keys are generated per host at `up`; none may be shared through the image.
    rm -f "$target"/etc/ssh/ssh_host_*

    in_root "$target" systemctl enable systemd-networkd.service
    # No resolver and no consoles to log in on; getty would only fail or wait.
    in_root "$target" systemctl mask systemd-resolved.service getty.target console-getty.service

    # The login user of the lab contract: key-only (password field "*"), NOPASSWD sudo.
    in_root "$target" useradd --create-home --shell /bin/bash deploy
    in_root "$target" usermod --password '*' deploy
    printf 'deploy ALL=(ALL:ALL) NOPASSWD: ALL\n' >"$target/etc/sudoers.d/deploy"
    chmod 0440 "$target/etc/sudoers.d/deploy"
    in_root "$target" visudo -c -q

    # Package lists are dropped (50 MB): the hosts have no route to a mirror, and a layer built
    # later refreshes its own lists instead of shadowing these with whiteouts.
    in_root "$target" apt-get clean
    rm -f "$target"/var/cache/apt/*.bin "$target"/var/lib/apt/lists/*_*
}

stage_monitoring() {
    local base=$1 layer=$2 scratch=$3
    local root=$scratch/merged
    mkdir -p "$layer" "$scratch/work" "$root"
    mount -t overlay runner-fleet-lab-build \
        -o "lowerdir=$base,upperdir=$layer,workdir=$scratch/work" "$root"
    mount -t proc proc "$root/proc"
    # apt inside the chroot resolves the mirror with the build machine's resolver.
    mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
    # No daemon may start inside the chroot (the package's init script would otherwise run);
    # systemd starts prometheus when the host boots.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"

    timeout 600 env DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get update
    timeout 900 env DEBIAN_FRONTEND=noninteractive chroot "$root" \
        apt-get install -y --no-install-recommends "${MONITORING_PACKAGES[@]}"
    in_root "$root" apt-get clean

    rm -f "$root/usr/sbin/policy-rc.d" "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*_*
    umount "$root/etc/resolv.conf" "$root/proc"

    # What the lab promises about the monitoring host; fail the build rather than the tests.
    test -L "$root/etc/systemd/system/multi-user.target.wants/prometheus.service"
    if in_root "$root" dpkg-query -W -f='${Status}' prometheus-node-exporter 2>/dev/null \
        | grep -q 'install ok installed'; then
        echo "prometheus-node-exporter must not be installed on lab hosts" >&2
        exit 1
    fi
    umount "$root"
}

case "${1:-}" in
base)
    [ "$#" -eq 2 ] || { echo "usage: $0 base TARGET" >&2; exit 2; }
    stage_base "$2"
    ;;
monitoring)
    [ "$#" -eq 4 ] || { echo "usage: $0 monitoring BASE LAYER SCRATCH" >&2; exit 2; }
    stage_monitoring "$2" "$3" "$4"
    ;;
*)
    echo "usage: $0 base TARGET | monitoring BASE LAYER SCRATCH" >&2
    exit 2
    ;;
esac
