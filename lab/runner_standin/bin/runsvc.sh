#!/bin/bash
# runner-fleet lab stand-in for actions/runner; not GitHub's runner.
# The service entry point (svc.sh install copies it to the runner root; the unit's ExecStart).
# Like actions/runner's runsvc.sh: the listener runs as a child and SIGTERM from systemd is passed
# on to it as SIGINT, so it can end its session and job before the service stops.
set -euo pipefail

trap 'kill -INT "$PID" 2>/dev/null || true' TERM INT

if [ -f ".path" ]; then
    # configure
    PATH=$(cat .path)
    export PATH
    echo ".path=${PATH}"
fi

echo "Starting Runner listener with startup type: service"
./bin/Runner.Listener run --startuptype service &
PID=$!
echo "Started listener process, pid: $PID"
# Returns early when TERM/INT arrives (the trap forwards it); then wait for the listener to finish.
wait "$PID" || true
trap - TERM INT
wait "$PID"
