#!/bin/bash
# runner-fleet lab stand-in for actions/runner; not GitHub's runner.
# Runs the listener in the foreground. exec, so SIGTERM/SIGINT reach the listener itself, which
# ends its session and any job process and exits 0.
set -euo pipefail
DIR=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
exec "$DIR/bin/Runner.Listener" run "$@"
