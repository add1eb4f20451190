#!/bin/bash
# runner-fleet lab stand-in for actions/runner; not GitHub's runner.
# Behaves as actions/runner's src/Misc/layoutroot/env.sh: records PATH in .path and a few well-known variables in .env
# (appending only those .env does not have yet). Sourced by config.sh from the runner root.

varCheckList=(
    'LANG'
    'JAVA_HOME'
    'ANT_HOME'
    'M2_HOME'
    'ANDROID_HOME'
    'ANDROID_SDK_ROOT'
    'GRADLE_HOME'
    'NVM_BIN'
    'NVM_PATH'
    'LD_LIBRARY_PATH'
    'PERL5LIB'
)

envContents=""
if [ -f ".env" ]; then
    envContents=$(cat .env)
else
    touch .env
fi

writeVar() {
    local checkVar=$1
    local checkDelim="${1}="
    if [[ "$envContents" != *"$checkDelim"* ]] && [ -n "${!checkVar:-}" ]; then
        echo "${checkVar}=${!checkVar}" >>.env
    fi
}

echo "$PATH" >.path

for var_name in "${varCheckList[@]}"; do
    writeVar "${var_name}"
done
