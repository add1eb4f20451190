#!/bin/bash
# runner-fleet lab stand-in for actions/runner; not GitHub's runner.
# Behaves as actions/runner's src/Misc/layoutroot/config.sh: refuses root unless
# RUNNER_ALLOW_RUNASROOT is set, checks .NET's native dependencies (ldd on the three native
# libraries, libicu through ldconfig) and exits 1 with the real messages when one is missing,
# snapshots the caller's environment (env.sh), then hands over to the listener.
# No `set -e`: like the original, a failing check decides the exit status itself.

user_id=$(id -u)
# we want to snapshot the environment of the config user
if [ "$user_id" -eq 0 ] && [ -z "${RUNNER_ALLOW_RUNASROOT:-}" ]; then
    echo "Must not run with sudo"
    exit 1
fi

# The dependency check runs before the script changes directory, as the original's does: the
# library paths are relative to the caller's working directory.
if [[ "$(uname)" == "Linux" ]]; then
    if ! command -v ldd >/dev/null; then
        echo "Can not find 'ldd'. Please install 'ldd' and try again."
        exit 1
    fi

    message="Execute sudo ./bin/installdependencies.sh to install any missing Dotnet Core 6.0 dependencies."

    for lib in libcoreclr.so libSystem.Security.Cryptography.Native.OpenSsl.so libSystem.IO.Compression.Native.so; do
        if ldd "./bin/$lib" | grep 'not found'; then
            echo "Dependencies is missing for Dotnet Core 6.0"
            echo "$message"
            exit 1
        fi
    done

    if [ -x "$(command -v ldconfig)" ]; then
        ldconfig_command=ldconfig
    else
        ldconfig_command=/sbin/ldconfig
        if ! [ -x "$ldconfig_command" ]; then
            echo "Can not find 'ldconfig' in PATH and '/sbin/ldconfig' doesn't exists either. Please install 'ldconfig' and try again."
            exit 1
        fi
    fi

    libpath=${LD_LIBRARY_PATH:-}
    # shellcheck disable=SC2086 # each LD_LIBRARY_PATH entry is its own argument, as in the original
    if ! "$ldconfig_command" -NXv ${libpath//:/ } 2>&1 | grep libicu >/dev/null 2>&1; then
        echo "Libicu's dependencies is missing for Dotnet Core 6.0"
        echo "$message"
        exit 1
    fi
fi

DIR=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
cd "$DIR" || exit 1

# shellcheck source=env.sh
source ./env.sh

shopt -s nocasematch
if [[ "${1:-}" == "remove" ]]; then
    ./bin/Runner.Listener "$@"
else
    ./bin/Runner.Listener configure "$@"
fi
