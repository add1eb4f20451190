#!/usr/bin/env bash
# Installs this stack's node exporter on its own port: the pinned release, SHA-256 verified,
# under a hardened systemd unit; the textfile collector directory carries the runner metrics.
# Inputs: HOST_NAME EXPORTER_VERSION EXPORTER_URL EXPORTER_SHA256 EXPORTER_DIR RELEASE_MARKER
#         TEXTFILE_DIR PORT UNIT_DIR UNIT UNIT_CONTENT
set -euo pipefail
: "${HOST_NAME:?}" "${EXPORTER_VERSION:?}" "${EXPORTER_URL:?}" "${EXPORTER_SHA256:?}" "${EXPORTER_DIR:?}"
: "${RELEASE_MARKER:?}" "${TEXTFILE_DIR:?}" "${PORT:?}" "${UNIT_DIR:?}" "${UNIT:?}" "${UNIT_CONTENT:?}"
# @include lib.sh

release_dir="$EXPORTER_DIR/$EXPORTER_VERSION"
binary="$release_dir/node_exporter"
marker="$release_dir/$RELEASE_MARKER"
changed=false
# Scratch space inside this stack's exporter directory, never /tmp: whatever a run killed half-way
# left there (its EXIT trap never ran) is removed by the next run.
download="$EXPORTER_DIR/.download"
rm -rf -- "$download" "$binary.tmp" "$marker.tmp"
if [[ ! -x "$binary" || ! -f "$marker" || "$(cat "$marker")" != "$EXPORTER_SHA256" ]]; then
  install -d -m 0700 "$download"
  trap 'rm -rf -- "$download"' EXIT
  download_verified "$HOST_NAME" "node exporter $EXPORTER_VERSION" "$EXPORTER_URL" "$EXPORTER_SHA256" \
    "$download/exporter.tar.gz"
  tar -xzf "$download/exporter.tar.gz" -C "$download" --no-same-owner --strip-components=1
  install -d -m 0755 "$release_dir"
  install -m 0755 "$download/node_exporter" "$binary.tmp"
  mv -f "$binary.tmp" "$binary"
  printf '%s\n' "$EXPORTER_SHA256" >"$marker.tmp"
  mv -f "$marker.tmp" "$marker"
  rm -rf -- "$download"
  changed=true
fi
install -d -m 0755 "$TEXTFILE_DIR"

# A restart owed by an earlier run that was killed half-way is remembered in a marker.
pending="$EXPORTER_DIR/.restart-pending"
[[ "$changed" == true ]] && touch "$pending"
if write_if_changed "$UNIT_DIR/$UNIT" 0644 "$UNIT_CONTENT"; then
  touch "$pending"
fi
[[ -f "$pending" ]] && changed=true
systemctl daemon-reload
systemctl enable --quiet "$UNIT"
if [[ "$changed" == true ]] || ! systemctl is-active --quiet "$UNIT"; then
  if ! systemctl is-active --quiet "$UNIT" && curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$PORT/" 2>/dev/null; then
    die "port $PORT is already in use by another program (hosts[].exporterPort)" \
      "choose a free port for hosts[].exporterPort (ss -ltnp shows who holds $PORT), then pulumi up"
  fi
  systemctl restart "$UNIT"
fi
rm -f -- "$pending"

exporter_answers() {
  # Read the whole page first: `curl | grep -q` under pipefail fails when grep stops reading early.
  local page
  page=$(curl -fsS --max-time 3 "http://127.0.0.1:$PORT/metrics" 2>/dev/null || true)
  [[ "$page" == *$'\n'node_exporter_build_info* ]]
}
if wait_for 30 exporter_answers; then
  # Older releases of this stack's exporter are no longer referenced by the unit.
  find "$EXPORTER_DIR" -mindepth 1 -maxdepth 1 -type d ! -name "$EXPORTER_VERSION" -exec rm -rf -- {} +
  say "$HOST_NAME: node exporter $EXPORTER_VERSION serving on :$PORT ($UNIT)"
  exit 0
fi
journal=$(journalctl -u "$UNIT" -n 20 --no-pager 2>&1 || true)
die "the node exporter ($UNIT) is not answering on :$PORT after 30 s" \
  "read its journal above (journalctl -u $UNIT), fix what it names, then run again" "$journal"
