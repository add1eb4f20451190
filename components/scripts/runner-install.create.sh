#!/usr/bin/env bash
# Installs (or upgrades) the pinned actions/runner release into the runner's directory.
# The tarball is SHA-256 verified before anything is extracted; a marker written last makes a
# re-run after a kill start over cleanly, and makes an unchanged re-run a no-op.
# Inputs: RUNNER_NAME RUNNER_DIR DOWNLOAD_DIR RELEASE_MARKER RUNNER_USER RUNNER_VERSION RUNNER_URL
#         RUNNER_SHA256
set -euo pipefail
: "${RUNNER_NAME:?}" "${RUNNER_DIR:?}" "${DOWNLOAD_DIR:?}" "${RELEASE_MARKER:?}" "${RUNNER_USER:?}"
: "${RUNNER_VERSION:?}" "${RUNNER_URL:?}" "${RUNNER_SHA256:?}"
# @include lib.sh

marker="$RUNNER_DIR/$RELEASE_MARKER"
want="$RUNNER_VERSION $RUNNER_SHA256 $RUNNER_USER"
download=$DOWNLOAD_DIR
# What a run killed half-way left behind (its EXIT trap never ran): the download and a marker
# being written. Never anything else: the release marker is written last.
rm -rf -- "$download" "$marker.tmp"

# A unit left stopped by an upgrade that was killed half-way is started again (also on a no-op run).
start_if_enabled() {
  if [[ -f "$RUNNER_DIR/.service" ]]; then
    local unit
    unit=$(<"$RUNNER_DIR/.service")
    if systemctl is-enabled --quiet "$unit" 2>/dev/null && ! systemctl is-active --quiet "$unit"; then
      say "$RUNNER_NAME: starting $unit"
      systemctl start "$unit"
    fi
  fi
}
if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
  start_if_enabled
  say "$RUNNER_NAME: runner $RUNNER_VERSION already installed"
  exit 0
fi

install -d -m 0700 -o root -g root "$download"
trap 'rm -rf -- "$download"' EXIT
tarball="$download/runner.tar.gz"
download_verified "$RUNNER_NAME" "runner $RUNNER_VERSION" "$RUNNER_URL" "$RUNNER_SHA256" "$tarball"

# An upgrade replaces files under a running service: stop it, and start it again afterwards.
unit=""
if [[ -f "$RUNNER_DIR/.service" ]]; then
  unit=$(cat "$RUNNER_DIR/.service")
fi
if [[ -n "$unit" ]] && systemctl is-active --quiet "$unit"; then
  say "$RUNNER_NAME: stopping $unit for the upgrade"
  timeout 330 systemctl stop "$unit"
fi

install -d -m 0750 -o "$RUNNER_USER" -g "$RUNNER_USER" "$RUNNER_DIR"
tar -xzf "$tarball" -C "$RUNNER_DIR" --no-same-owner
chown -R "$RUNNER_USER:$RUNNER_USER" "$RUNNER_DIR"
printf '%s\n' "$want" >"$marker.tmp"
mv -f "$marker.tmp" "$marker"

rm -rf -- "$download"
start_if_enabled
say "$RUNNER_NAME: runner $RUNNER_VERSION installed in $RUNNER_DIR"
