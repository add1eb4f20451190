#!/bin/bash
# runner-fleet lab stand-in for actions/runner; not GitHub's runner.
# The service entry point (svc.sh install copies it to the runner root; the unit's ExecStart).
# Behaves as actions/runner's src/Misc/layoutbin/runsvc.sh: PATH from .path, then the service host
# (the original runs ./bin/RunnerService.js under the bundled node; the stand-in's host is
# ./bin/RunnerService, same behaviour) as a child; SIGTERM from systemd reaches only this script
# (KillMode=process) and is passed on as SIGINT, then the script waits for the host to finish.

# convert SIGTERM to SIGINT for the service host
trap 'kill -INT "$PID"' TERM INT

if [ -f ".path" ]; then
    # configure
    PATH=$(cat .path)
    export PATH
    echo ".path=${PATH}"
fi

./bin/RunnerService &
PID=$!
# returns early when TERM/INT arrives (the trap passes it on); then wait for the host to end
wait "$PID"
trap - TERM INT
wait "$PID"
