"""`runner-fleet`: operator commands next to the Pulumi program (`python -m fleet ...`).

    runner-fleet orphans [--stack NAME]... [--delete [--grace 14d]] [--json]
    runner-fleet host-keys --stack NAME [--ssh-key FILE] [--timeout S] [--json]
    pulumi stack export | runner-fleet verify --stack NAME --state - --ssh-key FILE [--json]
    pulumi stack export | runner-fleet diagnose --stack NAME --state - --ssh-key FILE [--host H] [--json]

Each subcommand documents its exit codes in `--help`. The GitHub credential is read from the
environment variable RUNNER_FLEET_GITHUB_TOKEN or from `--token-file FILE` (`-` = stdin), never
from the command line, and is never printed. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import yaml
from pydantic import TypeAdapter, ValidationError

from fleet.config import NAMESPACE, GitHubSettings
from fleet.github_api import ApiError, GitHubApi, Runner

TOKEN_ENV = "RUNNER_FLEET_GITHUB_TOKEN"  # noqa: S105 - the name of the variable, not a credential
STDIN = "-"
DEFAULT_GRACE = "3d"

# Exit codes of `orphans`.
EXIT_CLEAN = 0
EXIT_ORPHANS = 1
EXIT_USAGE = 2
EXIT_GITHUB = 3
EXIT_DELETE_FAILED = 4
# Exit codes of `host-keys` (0 and 2 as above).
EXIT_HOSTKEY_MISMATCH = 1
EXIT_HOSTKEY_UNSCANNED = 3

_DURATION = re.compile(r"^([0-9]+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# The clock the grace period is measured with (tests move it).
now: Callable[[], float] = time.time


class UsageError(Exception):
    """A problem the operator fixes (exit code 2)."""


class Output:
    """stdout for results, stderr for progress; the credential is masked in both."""

    def __init__(self, out: TextIO, err: TextIO, secret: str | None = None):
        self.out, self.err, self.secret = out, err, secret

    def _mask(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    def result(self, text: str) -> None:
        print(self._mask(text), file=self.out, flush=True)

    def progress(self, text: str) -> None:
        print(self._mask(f"runner-fleet: {text}"), file=self.err, flush=True)


# --- stacks -------------------------------------------------------------------------------


@dataclass
class Scope:
    """One registration scope (repository or organization on one GitHub) and who declares what in it."""

    api_url: str
    path: str  # repos/O/R | orgs/O
    stacks: list[str] = field(default_factory=list)
    declared: set[str] = field(default_factory=set)  # runner names, lower-case

    @property
    def key(self) -> tuple[str, str]:
        return (self.api_url.lower(), self.path.lower())


def read_stacks(project_dir: Path) -> dict[str, tuple[GitHubSettings, list[str]]]:
    """Every Pulumi.<stack>.yaml of the project: its GitHub settings and declared runner names."""
    stacks: dict[str, tuple[GitHubSettings, list[str]]] = {}
    files = sorted(project_dir.glob("Pulumi.*.yaml"))
    if not files:
        raise UsageError(f"no Pulumi.<stack>.yaml in {project_dir} (use --project-dir)")
    for path in files:
        stack = path.name[len("Pulumi.") : -len(".yaml")]
        try:
            config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
            settings = TypeAdapter(GitHubSettings).validate_python(config.get(f"{NAMESPACE}:github"))
        except (OSError, yaml.YAMLError, ValidationError, AttributeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UsageError(f"{path.name}: cannot read {NAMESPACE}:github: {first}") from None
        names = []
        hosts = config.get(f"{NAMESPACE}:hosts") or []
        for host in hosts if isinstance(hosts, list) else []:
            for runner in (host.get("runners") or []) if isinstance(host, dict) else []:
                if isinstance(runner, dict) and isinstance(runner.get("name"), str):
                    names.append(runner["name"])
        stacks[stack] = (settings, names)
    return stacks


def scopes_for(stacks: dict[str, tuple[GitHubSettings, list[str]]], selected: list[str]) -> list[Scope]:
    """The scopes of the selected stacks, each with the runners every stack declares there."""
    unknown = sorted(set(selected) - set(stacks))
    if unknown:
        raise UsageError(f"no stack file for {', '.join(unknown)} (known: {', '.join(sorted(stacks))})")
    every: dict[tuple[str, str], Scope] = {}
    for stack, (settings, names) in stacks.items():
        scope = Scope(settings.effective_api_url, settings.scope_path)
        scope = every.setdefault(scope.key, scope)
        scope.stacks.append(stack)
        scope.declared.update(n.lower() for n in names)
    wanted = []
    for stack in selected or sorted(stacks):
        settings, _ = stacks[stack]
        scope = every[Scope(settings.effective_api_url, settings.scope_path).key]
        if scope not in wanted:
            wanted.append(scope)
    return wanted


# --- the offline ledger -------------------------------------------------------------------


def default_ledger() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "runner-fleet" / "offline-since.json"


class Ledger:
    """When each orphan was first seen offline. GitHub does not say since when a runner is
    offline, so the grace period counts from the first run that saw it offline; a run that sees
    it online or busy starts the count again. Losing the file only delays deletions."""

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text())
            self.entries: dict[str, float] = {str(k): float(v) for k, v in data.get("offline_since", {}).items()}
        except FileNotFoundError:
            self.entries = {}
        except (OSError, ValueError, AttributeError) as e:
            raise UsageError(f"{path}: unreadable ledger ({e}); move it away to start afresh") from None

    @staticmethod
    def key(scope: Scope, runner: Runner) -> str:
        return f"{scope.api_url}/{scope.path}#{runner.id}"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"offline_since": self.entries}, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.path)


# --- orphans ------------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 14d, 36h, 2w")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _human(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None


def read_token(token_file: str | None, stdin: TextIO) -> str:
    if token_file:
        try:
            text = stdin.read() if token_file == STDIN else Path(token_file).read_text()
        except OSError as e:
            raise UsageError(f"cannot read the token file: {e.strerror}") from None
        token = text.strip()
        source = "stdin" if token_file == STDIN else token_file
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        source = TOKEN_ENV
    if not token:
        raise UsageError(f"no GitHub credential: set {TOKEN_ENV} or pass --token-file FILE (- for stdin)")
    if any(c.isspace() for c in token):
        raise UsageError(f"the GitHub credential from {source} is not a single token")
    return token


def _decide(api: GitHubApi, scope: Scope, runner: Runner, ledger: Ledger, args: argparse.Namespace) -> dict[str, Any]:
    """What happens to one orphan; deletes it when it is offline, idle and past the grace period."""
    key = Ledger.key(scope, runner)
    entry: dict[str, Any] = {
        "id": runner.id,
        "name": runner.name,
        "status": runner.status,
        "busy": runner.busy,
        "labels": list(runner.labels),
    }
    if runner.busy or runner.status != "offline":
        ledger.entries.pop(key, None)
        entry.update(offline_since=None, action="kept", reason="busy" if runner.busy else runner.status)
        return entry
    since = ledger.entries.setdefault(key, now())
    entry["offline_since"] = _iso(since)
    offline_for = now() - since
    if not args.delete:
        entry.update(action="listed", reason=f"offline for at least {_human(offline_for)}")
        return entry
    if offline_for < args.grace:
        entry.update(action="kept", reason=f"offline for {_human(offline_for)} of {args.grace_text} grace")
        return entry
    # Fresh look right before deleting: it may have come back since the list was read.
    fresh = api.get_runner(scope.path, runner.id)
    if fresh is None:
        ledger.entries.pop(key, None)
        entry.update(action="gone", reason="no longer registered")
        return entry
    if fresh.busy or fresh.status != "offline":
        ledger.entries.pop(key, None)
        entry.update(status=fresh.status, busy=fresh.busy, action="kept", reason="busy" if fresh.busy else "online")
        return entry
    try:
        api.delete_runner(scope.path, runner.id)
    except ApiError as e:
        if e.status == 422:  # GitHub: still running a job
            ledger.entries.pop(key, None)
            entry.update(busy=True, action="kept", reason="busy (GitHub refused the deletion: 422)")
        elif e.status == 404:
            ledger.entries.pop(key, None)
            entry.update(action="gone", reason="no longer registered")
        else:
            entry.update(action="failed", reason=str(e))
        return entry
    ledger.entries.pop(key, None)
    entry.update(action="deleted", reason=f"offline for {_human(offline_for)}")
    return entry


def cmd_orphans(args: argparse.Namespace, out: Output, stdin: TextIO) -> int:
    stacks = read_stacks(Path(args.project_dir))
    scopes = scopes_for(stacks, args.stack or [])
    token = read_token(args.token_file, stdin)
    out.secret = token
    ledger = Ledger(Path(args.ledger) if args.ledger else default_ledger())
    report: list[dict[str, Any]] = []
    code = EXIT_CLEAN
    try:
        for scope in scopes:
            try:
                api = GitHubApi(scope.api_url, token, log=out.progress)
            except ValueError as e:
                raise UsageError(f"stacks {', '.join(sorted(scope.stacks))}: {e}") from None
            out.progress(f"listing the runners of {scope.path} on {scope.api_url}")
            runners = api.list_runners(scope.path, lambda n, total: out.progress(f"  {n}/{total} runners read"))
            known = {Ledger.key(scope, r) for r in runners}
            prefix = f"{scope.api_url}/{scope.path}#"
            for key in [k for k in ledger.entries if k.startswith(prefix) and k not in known]:
                del ledger.entries[key]  # registrations that went away
            orphans = [r for r in runners if r.name.lower() not in scope.declared]
            out.progress(f"{len(runners)} registered, {len(orphans)} declared by no stack")
            entries = []
            for runner in orphans:
                entry = _decide(api, scope, runner, ledger, args)
                if entry["action"] == "deleted":
                    out.progress(f"deleted {runner.name} (id {runner.id})")
                entries.append(entry)
            report.append(
                {
                    "scope": scope.path,
                    "api_url": scope.api_url,
                    "stacks": sorted(scope.stacks),
                    "registered": len(runners),
                    "declared": len(scope.declared),
                    "orphans": entries,
                }
            )
    except ApiError as e:
        out.progress(f"GitHub could not be queried: {e}")
        ledger.save()
        return EXIT_GITHUB
    ledger.save()
    entries = [e for s in report for e in s["orphans"]]
    if any(e["action"] == "failed" for e in entries):
        code = EXIT_DELETE_FAILED
    elif any(e["action"] in ("listed", "kept") for e in entries):
        code = EXIT_ORPHANS
    if args.json:
        out.result(json.dumps({"exit_code": code, "scopes": report}, indent=1))
    else:
        _print_orphans(out, report)
    return code


def _print_orphans(out: Output, report: list[dict[str, Any]]) -> None:
    for scope in report:
        out.result(
            f"{scope['scope']} on {scope['api_url']}: {scope['registered']} registered, "
            f"{scope['declared']} declared by stack(s) {', '.join(scope['stacks'])}, "
            f"{len(scope['orphans'])} orphan(s)"
        )
        if not scope["orphans"]:
            continue
        rows = [("ID", "NAME", "STATUS", "BUSY", "OFFLINE SINCE", "ACTION")]
        for e in scope["orphans"]:
            rows.append(
                (
                    str(e["id"]),
                    e["name"],
                    e["status"],
                    "yes" if e["busy"] else "no",
                    e["offline_since"] or "-",
                    f"{e['action']}: {e['reason']}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            out.result("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[5])


# --- verify -------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace, out: Output, stdin: TextIO) -> int:
    from fleet import verify

    if args.state == STDIN and args.token_file == STDIN:
        raise UsageError("--state - and --token-file - cannot both read stdin")
    config_file = Path(args.config_file or Path(args.project_dir) / f"Pulumi.{args.stack}.yaml")
    try:
        endpoints = verify.read_endpoints(config_file)
        try:
            text = stdin.read() if args.state == STDIN else Path(args.state).read_text()
        except OSError as e:
            raise UsageError(f"cannot read the state {args.state}: {e.strerror}") from None
        deployed = verify.read_export(text)
        key = verify.load_private_key(Path(args.ssh_key))
    except verify.VerifyError as e:
        raise UsageError(str(e)) from None
    if not deployed:
        raise UsageError(f"the state of stack {args.stack} holds no fleet command: nothing was deployed to verify")
    token = read_token(args.token_file, stdin)
    out.secret = token
    cache = Path(args.cache_dir) if args.cache_dir else verify.default_cache()
    try:
        report = verify.verify(
            args.stack,
            deployed,
            endpoints,
            ssh=lambda endpoint, script: verify.ssh_run(endpoint, key, script, timeout=args.timeout),
            runners=verify.github_runners(token, out.progress),
            fetch=lambda url, sha256: verify.fetch_release(url, sha256, cache),
            progress=out.progress,
        )
    except verify.VerifyError as e:
        raise UsageError(str(e)) from None
    if args.json:
        out.result(json.dumps(report.to_json(), indent=1))
    else:
        for line in verify.render_text(report):
            out.result(line)
    return report.exit_code


def cmd_diagnose(args: argparse.Namespace, out: Output, stdin: TextIO) -> int:
    from fleet import diagnose, verify

    if args.state == STDIN and args.token_file == STDIN:
        raise UsageError("--state - and --token-file - cannot both read stdin")
    config_file = Path(args.config_file or Path(args.project_dir) / f"Pulumi.{args.stack}.yaml")
    try:
        endpoints = verify.read_endpoints(config_file)
        try:
            text = stdin.read() if args.state == STDIN else Path(args.state).read_text()
        except OSError as e:
            raise UsageError(f"cannot read the state {args.state}: {e.strerror}") from None
        plans = diagnose.plan(verify.read_export(text), endpoints, args.host)
        key = verify.load_private_key(Path(args.ssh_key))
    except verify.VerifyError as e:
        raise UsageError(str(e)) from None
    if not plans:
        raise UsageError(f"the state of stack {args.stack} holds no runner")
    token = read_token(args.token_file, stdin)
    out.secret = token
    result = diagnose.diagnose(
        args.stack,
        plans,
        ssh=lambda endpoint, script: verify.ssh_run(endpoint, key, script, timeout=args.timeout),
        runners=verify.github_runners(token, out.progress),
        outputs=diagnose.read_outputs(text),
        progress=out.progress,
    )
    if args.json:
        out.result(json.dumps(result.to_json(), indent=1))
    else:
        for line in diagnose.render_text(result):
            out.result(line)
    return result.exit_code


def cmd_host_keys(args: argparse.Namespace, out: Output, stdin: TextIO) -> int:
    from fleet import hostkeys

    config_file = Path(args.config_file or Path(args.project_dir) / f"Pulumi.{args.stack}.yaml")
    try:
        pins = hostkeys.read_pins(config_file)
    except hostkeys.HostKeyError as e:
        raise UsageError(str(e)) from None
    if not pins:
        raise UsageError(f"{config_file}: no machine configured")
    key = None
    if args.ssh_key:
        from fleet import verify

        try:
            key = verify.load_private_key(Path(args.ssh_key))
        except verify.VerifyError as e:
            raise UsageError(str(e)) from None
    out.progress(f"scanning {len(pins)} machine(s) of stack {args.stack} ({args.timeout:g} s each, in parallel)")
    scans = hostkeys.scan_all(pins, args.timeout, private_key=key)
    if any(s.status == hostkeys.MISMATCH for s in scans):
        code = EXIT_HOSTKEY_MISMATCH
    elif all(s.ok for s in scans):
        code = EXIT_CLEAN
    else:
        code = EXIT_HOSTKEY_UNSCANNED
    if args.json:
        out.result(json.dumps({"exit_code": code, "machines": [s.to_json(args.stack) for s in scans]}, indent=1))
    else:
        for s in scans:
            out.result(hostkeys.describe(s, args.stack))
    return code


HOST_KEYS_HELP = """\
Checks the SSH host key each machine of a stack presents against the key pinned in the stack's
config file (hosts[].hostKey, prometheus.hostKey, their jumpHost.hostKey). pulumi-command's own
message for a machine showing another key is only "ssh: handshake failed: ssh: host key
mismatch", without the machine, the address or the keys. For every machine this prints its
address and the pinned key's SHA256 fingerprint; for a mismatch also the presented key's
fingerprint and the exact command that re-pins it, e.g.

  runner-fleet host-keys --stack production
  dell-r640-01-runner (192.168.0.51:22): host key mismatch: pinned SHA256:… (runner-fleet:hosts[1].hostKey),
    presented SHA256:…; … re-pin: pulumi config set --stack production --path 'runner-fleet:hosts[1].hostKey' '…'

Re-pin only after checking the presented fingerprint out of band (the machine's console:
`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`): a changed key may also be someone in the
middle. The scan is a key exchange, restricted to the pinned key's type, never a login: it needs
no credential, and each machine gets --timeout seconds (all in parallel). A machine behind a
jump host is scanned through the jump host when --ssh-key is given (a login to the jump host,
with its pinned key checked), else reported as not scanned.

exit codes:
  0  every machine presents its pinned key
  1  at least one machine presents another key (each printed with its re-pin command)
  2  usage or configuration error (bad arguments, unreadable config or key)
  3  no mismatch, but a machine could not be scanned (unreachable, sshd wedged, behind a jump host)
"""


DIAGNOSE_HELP = f"""\
Tells why a runner is sick without logging into its host. For each runner of the stack (or of
--host only) it collects over SSH, read-only and with the pinned host key: the service's state
and recent journal lines, the errors of its newest _diag/Runner_*.log, the disk under the runner
and its _work directory, memory, whether libicu is loadable, the exporter's answer; from GitHub
the registration's status; from the state the last deploy's outputs. It prints the causes found,
the most likely first (a deprecated runner version, a deleted or revoked registration, a missing
native dependency, a full work disk, a stopped service, ...), each with its evidence and a fix.
Lines that look like a credential are masked.

  pulumi stack export --stack production | \\
    runner-fleet diagnose --stack production --state - --ssh-key ~/.ssh/runner-fleet --host dell-r640-01-runner

Credential: ${TOKEN_ENV}, or --token-file FILE (- reads stdin, unless --state is -).

exit codes:
  0  no problem found
  1  at least one cause found (listed, most likely first)
  2  usage or configuration error
  3  nothing found, but a host could not be reached
"""


VERIFY_HELP = f"""\
Compares each host of a stack with what the stack deployed, which `pulumi refresh` cannot do
(pulumi-command has no Read: a refresh returns the stored state and never looks at the host).
What was deployed is read from the stack's state, the output of `pulumi stack export` (no
--show-secrets needed: the checks use no secret input); connection details (address, sshPort,
sshUser, pinned hostKey, jumpHost) from the stack's config file. Over SSH, with the pinned host
key only (a host showing any other key is refused), it checks: the units, the runner metrics
conf, the collector and the target file by the SHA-256 of their content; the runner release and
the node exporter binary file by file against the pinned tarball (downloaded from the state's
URL once, its SHA-256 checked, cached in --cache-dir); the units enabled and active; the
exporter answering; the scrape job in the Prometheus config. On GitHub: each runner registered
with exactly its labels, and online.

  pulumi stack export --stack production | \\
    runner-fleet verify --stack production --state - --ssh-key ~/.ssh/runner-fleet

Credential: ${TOKEN_ENV}, or --token-file FILE (- reads stdin, unless --state is -).

exit codes:
  0  in sync: every host matches what was deployed
  1  drifted: at least one difference (each printed with host, object, expected and found)
  2  usage or configuration error (bad arguments, unreadable state/config/key, no credential)
  3  not fully checked: a host or GitHub could not be reached, or a host key was refused; the
     differences found elsewhere are still reported
"""


# --- argument parsing ---------------------------------------------------------------------

ORPHANS_HELP = f"""\
Lists the runner registrations in each selected stack's scope (repository or organization)
that no stack of the project declares: every Pulumi.<stack>.yaml in --project-dir is read, so a
runner of another stack in the same scope is never an orphan. With --delete, removes those that
are offline and idle and have been seen offline for at least --grace; an online or busy runner
is never touched (its state is read again right before the deletion; GitHub's 422 for a busy
runner keeps it).

GitHub does not say since when a runner is offline: the ledger (--ledger, default
$XDG_STATE_HOME/runner-fleet/offline-since.json) records when a run first saw each orphan
offline, and a run that sees it online or busy starts the count again. So `--delete` deletes
nothing on its first run; run it daily (or list first, then delete after the grace).

Credential: ${TOKEN_ENV}, or --token-file FILE (- reads stdin), e.g.
  pulumi config get runner-fleet:githubToken | runner-fleet orphans --token-file -

exit codes:
  0  no orphan remains (none found, or every one deleted)
  1  orphans remain (listed; or kept: online, busy, within the grace period)
  2  usage or configuration error (bad arguments, unreadable stack file, no credential)
  3  GitHub could not be queried (bad credential, no access, unreachable after retries)
  4  a deletion failed (other than busy); the rest of the report is complete
"""


class _Parser(argparse.ArgumentParser):
    """No abbreviated options (`--token` must not mean `--token-file`), and an unknown argument
    is not echoed: it may be a credential someone tried to pass on the command line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message = "unrecognized arguments (not shown, they may hold a credential); see --help"
        super().error(message)


def _host_check_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """What `verify` and `diagnose` both need: the stack's state and config, SSH and GitHub access."""
    parser.add_argument("--stack", required=True, metavar="NAME", help=f"the stack to {verb}")
    parser.add_argument("--state", required=True, metavar="FILE", help="output of `pulumi stack export` (- for stdin)")
    parser.add_argument("--project-dir", default=".", help="directory with Pulumi.<stack>.yaml (default: .)")
    parser.add_argument("--config-file", metavar="FILE", help="the stack's config (default: Pulumi.<stack>.yaml)")
    parser.add_argument("--ssh-key", required=True, metavar="FILE", help="SSH private key file for the hosts")
    parser.add_argument(
        "--token-file", metavar="FILE", help=f"file with the GitHub credential, - for stdin ({TOKEN_ENV})"
    )
    parser.add_argument("--timeout", type=float, default=20.0, help="SSH connect timeout in seconds (default 20)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runner-fleet",
        description="Operator commands for the runner fleet (next to the Pulumi program).",
        epilog="Each command has --help with its exit codes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    orphans = sub.add_parser(
        "orphans",
        help="list (and with --delete remove) runner registrations no stack declares",
        description=ORPHANS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    orphans.add_argument(
        "--stack",
        action="append",
        metavar="NAME",
        help="stack whose scope to check (repeatable; default: every stack file)",
    )
    orphans.add_argument("--project-dir", default=".", help="directory with Pulumi.<stack>.yaml (default: .)")
    orphans.add_argument(
        "--token-file", metavar="FILE", help=f"file with the GitHub credential, - for stdin ({TOKEN_ENV})"
    )
    orphans.add_argument("--delete", action="store_true", help="delete orphans offline for longer than --grace")
    orphans.add_argument(
        "--grace",
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help=f"how long an orphan must have been seen offline before --delete removes it (default {DEFAULT_GRACE})",
    )
    orphans.add_argument("--ledger", metavar="FILE", help="where first-seen-offline times are kept")
    orphans.add_argument("--json", action="store_true", help="print the report as JSON")
    orphans.set_defaults(func=cmd_orphans)

    check = sub.add_parser(
        "verify",
        help="compare each host with what the stack deployed (drift the engine cannot see)",
        description=VERIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _host_check_options(check, "verify")
    check.add_argument("--cache-dir", metavar="DIR", help="where pinned release tarballs are cached")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=cmd_verify)

    diag = sub.add_parser(
        "diagnose",
        help="tell why a runner is sick (service, journal, _diag, disk, memory, GitHub)",
        description=DIAGNOSE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _host_check_options(diag, "diagnose")
    diag.add_argument("--host", metavar="NAME", help="only this host (its name or address in the config)")
    diag.add_argument("--json", action="store_true", help="print the report as JSON")
    diag.set_defaults(func=cmd_diagnose)

    keys = sub.add_parser(
        "host-keys",
        help="compare each machine's SSH host key with the pinned one; print the re-pin command",
        description=HOST_KEYS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.add_argument("--stack", required=True, metavar="NAME", help="the stack whose machines to scan")
    keys.add_argument("--project-dir", default=".", help="directory with Pulumi.<stack>.yaml (default: .)")
    keys.add_argument("--config-file", metavar="FILE", help="the stack's config (default: Pulumi.<stack>.yaml)")
    keys.add_argument(
        "--ssh-key", metavar="FILE", help="SSH private key, to scan machines behind a jump host through it"
    )
    keys.add_argument(
        "--timeout", type=float, default=10.0, help="seconds each machine gets to connect and show its key (default 10)"
    )
    keys.add_argument("--json", action="store_true", help="print the report as JSON")
    keys.set_defaults(func=cmd_host_keys)
    return parser


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "orphans":
        try:
            args.grace_text = args.grace
            args.grace = parse_duration(args.grace)
        except argparse.ArgumentTypeError as e:
            parser.error(str(e))
    out = Output(sys.stdout, sys.stderr)
    try:
        return args.func(args, out, stdin or sys.stdin)
    except UsageError as e:
        out.progress(str(e))
        return EXIT_USAGE
