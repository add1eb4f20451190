#!/usr/bin/env bash
# Keeps one lab host running: `hosts-launch.sh <systemd-nspawn arguments>`.
#
# A host that reboots makes systemd-nspawn exit with 133; a real machine comes back, so this
# starts it again. SIGTERM (what `python -m lab.hosts down` sends) is passed on to nspawn, which
# shuts the host down cleanly, and then this script exits. lab/hosts.py starts it in the host's
# own cgroup scope, so nspawn and everything inside the host land there too.
set -euo pipefail

child=0
stopping=0

stop() {
    stopping=1
    if [ "$child" -ne 0 ]; then
        kill -TERM "$child" 2>/dev/null || true
    fi
}
trap stop TERM INT HUP

while :; do
    systemd-nspawn "$@" &
    child=$!
    # A signal that arrived before $child was known has not been passed on yet.
    if [ "$stopping" -eq 1 ]; then
        kill -TERM "$child" 2>/dev/null || true
    fi
    rc=0
    wait "$child" || rc=$?
    # A trapped signal interrupts `wait`; wait again for nspawn's own exit status.
    while kill -0 "$child" 2>/dev/null; do
        rc=0
        wait "$child" || rc=$?
    done
    child=0
    if [ "$rc" -eq 133 ] && [ "$stopping" -eq 0 ]; then
        echo "lab: host asked to reboot; starting it again" >&2
        continue
    fi
    exit "$rc"
done
