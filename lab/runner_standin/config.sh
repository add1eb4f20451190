#!/bin/bash
# runner-fleet lab stand-in for actions/runner; not GitHub's runner.
# Same contract as actions/runner's config.sh: refuses root unless RUNNER_ALLOW_RUNASROOT is set,
# snapshots the caller's environment (env.sh), then hands over to the listener.
set -euo pipefail

user_id=$(id -u)
# we want to snapshot the environment of the config user
if [ "$user_id" -eq 0 ] && [ -z "${RUNNER_ALLOW_RUNASROOT:-}" ]; then
    echo "Must not run with sudo"
    exit 1
fi

DIR=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
cd "$DIR"

# shellcheck source=env.sh
source ./env.sh

shopt -s nocasematch
if [[ "${1:-}" == "remove" ]]; then
    exec ./bin/Runner.Listener "$@"
else
    exec ./bin/Runner.Listener configure "$@"
fi
