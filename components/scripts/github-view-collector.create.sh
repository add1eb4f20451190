#!/usr/bin/env bash
# Installs the stack's GitHub-view collector on the monitoring host and lists it for Prometheus.
# The view credential (a read-only token, not the stack's admin one) arrives on stdin and goes
# only into TOKEN_FILE (root, 0600), read by systemd's LoadCredential; the collector runs as a
# dynamic user under a hardened unit and serves 127.0.0.1:PORT/metrics. Then, under the
# monitoring host's lock, the target group (job label, environment, role github-view, host)
# goes into TARGETS_DIR beside the stack's target file, atomically. The collector restarts only
# when its program, config, unit or credential changed. A first listing refused by GitHub (a
# wrong credential or scope) fails the deploy with the collector's own words.
# Inputs: STACK COLLECTOR_PATH COLLECTOR CONFIG_DIR CONFIG_FILE CONFIG_JSON TOKEN_FILE UNIT_DIR
#         UNIT UNIT_CONTENT PORT TARGETS_DIR TARGET_FILE TARGET_JSON LOCK_FILE
set -euo pipefail
: "${STACK:?}" "${COLLECTOR_PATH:?}" "${COLLECTOR:?}" "${CONFIG_DIR:?}" "${CONFIG_FILE:?}" "${CONFIG_JSON:?}"
: "${TOKEN_FILE:?}" "${UNIT_DIR:?}" "${UNIT:?}" "${UNIT_CONTENT:?}" "${PORT:?}" "${TARGETS_DIR:?}"
: "${TARGET_FILE:?}" "${TARGET_JSON:?}" "${LOCK_FILE:?}"
# @include lib.sh

read_secret
command -v python3 >/dev/null ||
  die "python3 is not installed on the monitoring host (the GitHub-view collector runs on it)" \
    "install it there (apt-get install python3), then run the same pulumi command again"
# Leftovers of a run killed half-way.
rm -f -- "$TOKEN_FILE.runner-fleet.tmp" "$CONFIG_FILE.runner-fleet.tmp" "$COLLECTOR_PATH.runner-fleet.tmp" \
  "$UNIT_DIR/$UNIT.runner-fleet.tmp"

changed=false
pending="$CONFIG_DIR/.restart-pending"
install -d -m 0755 "$CONFIG_DIR" "$(dirname "$COLLECTOR_PATH")"
# The credential: written with umask 077 so it is never readable by anyone else, not even for
# a moment; compared without printing it.
if [[ ! -f "$TOKEN_FILE" ]] || [[ "$(head -n 1 "$TOKEN_FILE")" != "$GITHUB_TOKEN" ]]; then
  (umask 077 && printf '%s\n' "$GITHUB_TOKEN" >"$TOKEN_FILE.runner-fleet.tmp")
  mv -f "$TOKEN_FILE.runner-fleet.tmp" "$TOKEN_FILE"
  changed=true
fi
chown root:root "$TOKEN_FILE"
chmod 0600 "$TOKEN_FILE"
write_if_changed "$COLLECTOR_PATH" 0755 "$COLLECTOR" && changed=true
write_if_changed "$CONFIG_FILE" 0644 "$CONFIG_JSON" && changed=true
write_if_changed "$UNIT_DIR/$UNIT" 0644 "$UNIT_CONTENT" && changed=true
[[ "$changed" == true ]] && touch "$pending"
systemctl daemon-reload
systemctl enable --quiet "$UNIT"
if [[ -f "$pending" ]] || ! systemctl is-active --quiet "$UNIT"; then
  if ! systemctl is-active --quiet "$UNIT" && curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$PORT/" 2>/dev/null; then
    die "port $PORT on the monitoring host is already in use by another program" \
      "set runner-fleet:prometheus.githubViewPort to a free port (each stack on the host its own), then run pulumi up again"
  fi
  systemctl restart "$UNIT"
fi
rm -f -- "$pending"

page=""
# listed: the collector answers and has finished its first listing, or counted a failure.
listed() {
  page=$(curl -fsS --max-time 3 "http://127.0.0.1:$PORT/metrics" 2>/dev/null || true)
  [[ "$page" == *$'\n'github_runner_github_last_success_timestamp_seconds* ]] || return 1
  [[ "$page" != *$'\ngithub_runner_github_last_success_timestamp_seconds 0\n'* ]] && return 0
  grep -Eq '^github_runner_github_errors_total\{[^}]*\} [1-9]' <<<"$page"
}
if ! wait_for 30 listed; then
  die "the GitHub-view collector ($UNIT) is not answering on 127.0.0.1:$PORT after 30 s" \
    "read its journal above (journalctl -u $UNIT on the monitoring host), fix what it names, then run pulumi up again" \
    "$(journalctl -u "$UNIT" -n 20 --no-pager 2>&1 || true)"
fi
if [[ "$page" == *$'\ngithub_runner_github_last_success_timestamp_seconds 0\n'* ]]; then
  reason=$(journalctl -u "$UNIT" -n 5 --no-pager -o cat 2>/dev/null | grep -F 'github-view:' | tail -n 1 || true)
  if grep -Eq '^github_runner_github_errors_total\{reason="http_4xx"\} [1-9]' <<<"$page"; then
    die "GitHub refused the GitHub-view collector's listing (${reason:-see journalctl -u $UNIT})" \
      "check runner-fleet:githubViewToken: a fine-grained token with Administration: read on the repository (or Self-hosted runners: read on the organization) that has not expired, then run pulumi up again"
  fi
  say "the GitHub-view collector has no listing yet; it keeps trying (${reason:-see journalctl -u $UNIT})"
fi

lock_monitoring_host "$LOCK_FILE"
install -d -m 0755 "$TARGETS_DIR"
if write_if_changed "$TARGETS_DIR/$TARGET_FILE" 0644 "$TARGET_JSON"; then
  say "wrote $TARGETS_DIR/$TARGET_FILE"
fi
say "GitHub-view collector of stack $STACK serving on 127.0.0.1:$PORT ($UNIT)"
