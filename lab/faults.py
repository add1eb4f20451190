"""Fault injection on lab hosts: a tool wrapper that traces the program's scripts and interrupts
them at a chosen call, and a snapshot of everything the program leaves on a host.

The wrapper is installed as /usr/local/bin/<tool> for a set of tools (first in sudo's
secure_path and in the login user's PATH, so it sees the scripts run under sudo and the
preflight run by the login user). Unarmed and untraced it only `exec`s the real tool. It finds
the script that called it (the nearest ancestor whose last argument is a script name: every
command text is `sudo -n /bin/bash -c '<script>' <name>`), the top process of the SSH session and
the sshd above it. With /run/rflab-fault/trace present it appends `script<TAB>tool<TAB>args` for
every call made by a script. A flag file /run/rflab-fault/<tool>.<cell>.flag arms one fault:

    line 1  the script name (exact)
    line 2  a bash pattern the tool's arguments (`$*`) must match
    line 3  which matching call fires (1 = the first)
    line 4  what happens: kill | cut | fail
    line 5  optional: a text one of the calling processes' command lines must contain

- kill: SIGKILL to the session's whole process tree (from the child of sshd down, the tool
  itself last), as a crash leaves it: no trap runs;
- cut: SIGKILL to the sshd session processes serving the command (the `notty` one and its
  `[priv]` monitor): the engine sees the connection end, the script goes on without its
  session (its next write to stdout gets SIGPIPE), as when the network or the engine dies. The
  session's top process is then recorded as a straggler and no later flag fires in it;
- fail: the tool prints a message and exits 1 without running (a tool that fails once).

Each firing appends `cell<TAB>action<TAB>script<TAB>tool<TAB>args` to /run/rflab-fault/fired and
removes the flag, so a fault fires once.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

FAULT_DIR = "/run/rflab-fault"
WRAPPER_DIR = "/usr/local/bin"
# The tools the program's scripts call for their steps (and the preflight's probes). Text
# filters (grep, sed, tr, cat, head) are left alone: they only read.
TOOLS = (
    "chmod",
    "chown",
    "cmp",
    "cp",
    "curl",
    "df",
    "find",
    "flock",
    "id",
    "install",
    "journalctl",
    "ldconfig",
    "mktemp",
    "mv",
    "promtool",
    "rm",
    "rmdir",
    "runuser",
    "sha256sum",
    "systemctl",
    "tar",
    "timeout",
    "touch",
    "uname",
    "useradd",
    "userdel",
)
# Tools whose call changes something on the host: the preferred "between its steps" points.
CHANGING = {
    "chmod",
    "chown",
    "cp",
    "curl",
    "install",
    "mv",
    "rm",
    "rmdir",
    "runuser",
    "systemctl",
    "tar",
    "timeout",
    "touch",
    "useradd",
    "userdel",
}
SCRIPT_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\.(create|delete|retire)\.sh$")

WRAPPER = r"""#!/bin/bash
# rflab fault injection (lab hosts only; lab/faults.py)
tool=${0##*/}
dir=/run/rflab-fault
real=""
for d in /usr/sbin /usr/bin /sbin /bin; do
  if [[ -x "$d/$tool" && ! "$d/$tool" -ef "$0" ]]; then real=$d/$tool; break; fi
done
shopt -s nullglob
flags=("$dir/$tool".*.flag)
if [[ ! -e "$dir/trace" && ${#flags[@]} -eq 0 ]]; then exec "$real" "$@"; fi

script="" top="" sshd="" callers=""
name_re='^[a-z0-9]+(-[a-z0-9]+)*\.(create|delete|retire)\.sh$'
pid=$PPID
while ((pid > 1)); do
  read -r stat 2>/dev/null <"/proc/$pid/stat" || break
  comm=${stat#* (}
  comm=${comm%%) *}
  rest=${stat##*) }
  read -r _ ppid _ <<<"$rest"
  if [[ "$comm" == sshd* ]]; then sshd=$pid; break; fi
  mapfile -d '' -t argv 2>/dev/null <"/proc/$pid/cmdline"
  callers+="${argv[*]} "
  if [[ -z "$script" && ${#argv[@]} -gt 0 && "${argv[-1]}" =~ $name_re ]]; then
    script=${argv[-1]}
  fi
  top=$pid
  pid=$ppid
done
[[ -n "$script" ]] || exec "$real" "$@"
args=$*
args=${args//$'\n'/\\n}
if [[ -e "$dir/trace" ]]; then
  printf '%s\t%s\t%s\n' "$script" "$tool" "$args" >>"$dir/trace"
fi
# A session that was cut goes on as a straggler (its top process keeps its PID): no fault in it.
[[ -e "$dir/stray.$top" ]] && exec "$real" "$@"
for flag in "${flags[@]}"; do
  want_script="" want_args="" want_nth="" action="" want_caller=""
  { IFS= read -r want_script; IFS= read -r want_args; IFS= read -r want_nth; IFS= read -r action
    IFS= read -r want_caller; } 2>/dev/null <"$flag" || true
  [[ "$script" == "$want_script" ]] || continue
  # shellcheck disable=SC2053 # a pattern on purpose
  [[ "$args" == $want_args ]] || continue
  [[ -z "$want_caller" || "$callers" == *"$want_caller"* ]] || continue
  cell=${flag#"$dir/$tool".}
  cell=${cell%.flag}
  seen=0
  read -r seen 2>/dev/null <"$dir/$cell.count" || seen=0
  seen=$((seen + 1))
  if ((seen < ${want_nth:-1})); then
    printf '%s\n' "$seen" >"$dir/$cell.count"
    continue
  fi
  /usr/bin/rm -f -- "$flag" "$dir/$cell.count"
  printf '%s\t%s\t%s\t%s\t%s\n' "$cell" "$action" "$script" "$tool" "$args" >>"$dir/fired"
  case "$action" in
    fail)
      echo "rflab: injected failure of $tool $args" >&2
      exit 1 ;;
    cut)
      : >"$dir/stray.$top"
      victims=()
      if [[ -n "$sshd" ]]; then
        victims+=("$sshd")
        read -r stat <"/proc/$sshd/stat"
        rest=${stat##*) }
        read -r _ ppid _ <<<"$rest"
        mapfile -d '' -t argv 2>/dev/null <"/proc/$ppid/cmdline"
        [[ "${argv[*]}" == *"[priv]"* ]] && victims+=("$ppid")
      fi
      ((${#victims[@]})) && kill -KILL "${victims[@]}" 2>/dev/null
      exec "$real" "$@" ;;
    kill)
      declare -A parent=()
      for f in /proc/[0-9]*/stat; do
        read -r stat 2>/dev/null <"$f" || continue
        rest=${stat##*) }
        read -r _ ppid _ <<<"$rest"
        parent[${stat%% *}]=$ppid
      done
      tree=("$top")
      grew=1
      while ((grew)); do
        grew=0
        for p in "${!parent[@]}"; do
          [[ " ${tree[*]} " == *" $p "* ]] && continue
          if [[ " ${tree[*]} " == *" ${parent[$p]} "* ]]; then tree+=("$p"); grew=1; fi
        done
      done
      others=()
      for p in "${tree[@]}"; do [[ "$p" != "$$" ]] && others+=("$p"); done
      kill -KILL "${others[@]}" 2>/dev/null
      exit 137 ;;
  esac
done
exec "$real" "$@"
"""


def install_script() -> str:
    """Root shell text that installs the wrapper for every tool in TOOLS the host has (a wrapper
    for a missing tool would make `command -v` lie)."""
    tools = " ".join(TOOLS)
    return (
        # World-writable: the preflight runs as the login user, not root.
        f"set -e; mkdir -p {FAULT_DIR}; chmod 0777 {FAULT_DIR}; : > {FAULT_DIR}/fired; chmod 0666 {FAULT_DIR}/fired; "
        f"printf '%s' {shlex.quote(WRAPPER)} > {FAULT_DIR}/wrapper; "
        f"for t in {tools}; do PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v $t >/dev/null || continue; "
        f"install -m 0755 {FAULT_DIR}/wrapper {WRAPPER_DIR}/$t; done"
    )


def uninstall_script() -> str:
    tools = " ".join(f"{WRAPPER_DIR}/{t}" for t in TOOLS)
    return f"/usr/bin/rm -rf -- {tools} {FAULT_DIR}"


def normalize(args: str) -> str:
    """A call's arguments as a bash pattern that matches the same call in another run: the parts
    that differ between runs (mktemp names, runner ids, epoch seconds) become `*`."""
    out = []
    pos = 0
    variable = re.compile(r"tmp\.[A-Za-z0-9]{10}|\.runner-fleet-[A-Za-z0-9]{6}\b|(?<=/runners/)\d+|\d{5,}")
    for m in variable.finditer(args):
        out.append(_glob_quote(args[pos : m.start()]))
        out.append("tmp.*" if m.group().startswith("tmp.") else ".runner-fleet-*" if m.group()[0] == "." else "*")
        pos = m.end()
    out.append(_glob_quote(args[pos:]))
    return "".join(out)


def _glob_quote(text: str) -> str:
    return re.sub(r"([*?\[\]\\()|!@+])", r"\\\1", text)


@dataclass(frozen=True)
class Call:
    script: str
    tool: str
    args: str

    @property
    def pattern(self) -> str:
        return normalize(self.args)


@dataclass(frozen=True)
class Point:
    """One place in a command: the n-th call of `tool` whose arguments match `pattern`."""

    where: str  # start | between | end
    script: str
    tool: str
    pattern: str
    nth: int
    shown: str

    def flag(self, action: str) -> str:
        return f"{self.script}\n{self.pattern}\n{self.nth}\n{action}\n"


def parse_trace(text: str) -> list[Call]:
    calls = []
    for line in text.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3:
            calls.append(Call(*parts))
    return calls


def choose_points(calls: list[Call], between: int = 1) -> list[Point]:
    """Kill points of one command from its calls in a clean run: its first call, `between`
    calls in the middle (preferring calls that change something), and its last call. Only first
    occurrences of a call are used (a wait loop repeats a call a varying number of times)."""
    seen: dict[tuple[str, str, str], int] = {}
    firsts: list[tuple[Call, int]] = []
    for call in calls:
        key = (call.script, call.tool, call.pattern)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            firsts.append((call, 1))
    if not firsts:
        return []

    def point(where: str, index: int) -> Point:
        call, nth = firsts[index]
        shown = f"{call.tool} {call.args}"
        return Point(where, call.script, call.tool, call.pattern, nth, shown[:90])

    points = [point("start", 0)]
    inner = list(range(1, len(firsts) - 1))
    chosen: list[int] = []
    for k in range(between):
        if not inner:
            break
        target = (k + 1) * (len(firsts) - 1) / (between + 1)
        changing = [i for i in inner if firsts[i][0].tool in CHANGING and i not in chosen]
        pool = changing or [i for i in inner if i not in chosen]
        if pool:
            chosen.append(min(pool, key=lambda i: abs(i - target)))
    points += [point("between", i) for i in sorted(chosen)]
    if len(firsts) > 1:
        points.append(point("end", len(firsts) - 1))
    return points


def arm_script(cell: str, point: Point, action: str) -> str:
    """Root shell text that arms `point` with `action` under the name `cell`."""
    return (
        f"mkdir -p {FAULT_DIR} && /usr/bin/rm -f {FAULT_DIR}/{cell}.count && "
        f"printf '%s' {shlex.quote(point.flag(action))} > {FAULT_DIR}/{point.tool}.{cell}.flag"
    )


# --- what the program leaves on a host ------------------------------------------------------

# Files whose content is the registration's own (a new registration writes new ones) or the
# collector's current values: their presence, owner and mode count, not their content.
VOLATILE = (
    ".runner",
    ".runner_migrated",
    ".credentials",
    ".credentials_migrated",
    ".credentials_rsaparams",
    "runner-fleet-runners.prom",
    "runner-fleet-runners.state",
)
SKIP = ("_diag", "_work")

SNAPSHOT_PY = r"""
import hashlib, json, os, pwd, grp, re, subprocess, sys
roots, volatile, skip = json.loads(sys.argv[1])
def owner(st):
    try: u = pwd.getpwuid(st.st_uid).pw_name
    except KeyError: u = str(st.st_uid)
    try: g = grp.getgrgid(st.st_gid).gr_name
    except KeyError: g = str(st.st_gid)
    return u + ":" + g
files = {}
def record(path):
    st = os.lstat(path)
    kind = "l" if os.path.islink(path) else "d" if os.path.isdir(path) else "f" if os.path.isfile(path) else "o"
    desc = f"{kind} {st.st_mode & 0o7777:04o} {owner(st)}"
    if kind == "l":
        desc += " -> " + os.readlink(path)
    elif kind == "f":
        if os.path.basename(path) in volatile:
            desc += " (content not compared)"
        else:
            with open(path, "rb") as handle:
                desc += " " + hashlib.sha256(handle.read()).hexdigest()[:16]
    files[path] = desc
for root in roots:
    if not os.path.lexists(root):
        continue
    record(root)
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d in skip or (dirpath in ("/tmp", "/var/tmp") and d.startswith("systemd-private-")):
                continue
            record(full)
            if not os.path.islink(full):
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            record(os.path.join(dirpath, f))
def lines(*argv):
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    return sorted(l.strip() for l in out.splitlines() if l.strip())
units = {}
for line in lines("systemctl", "list-units", "--all", "--plain", "--no-legend", "--full",
                  "actions.runner.*", "runner-fleet-*", "prometheus*"):
    name, load, active, sub = (line.split() + ["", "", "", ""])[:4]
    # The collector's oneshot service is started by its timer: only whether it failed counts.
    if name.endswith("-runner-metrics.service"):
        active, sub = ("failed", "failed") if active == "failed" else ("-", "-")
    units[name] = f"{load} {active} {sub}"
for line in lines("systemctl", "list-unit-files", "--plain", "--no-legend", "actions.runner.*", "runner-fleet-*"):
    name, state = (line.split() + ["", ""])[:2]
    units[name] = units.get(name, "not-loaded") + " file:" + state
failed = lines("systemctl", "--failed", "--plain", "--no-legend", "--full")
users = sorted(f"{p.pw_name} {p.pw_dir} {p.pw_shell}" for p in pwd.getpwall() if p.pw_name.startswith("github-runner"))
groups = sorted(g.gr_name for g in grp.getgrall() if g.gr_name.startswith("github-runner"))
procs = {}
stray = []
script = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\.(create|delete|retire)\.sh$")
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        st = os.stat(f"/proc/{pid}")
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        comm = open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        continue
    argv = [a.decode(errors="replace") for a in argv if a]
    if argv and script.match(argv[-1]):
        stray.append(f"{pid} {argv[-1]}")
    try: user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError: user = str(st.st_uid)
    if user.startswith("github-runner"):
        key = f"{user} {comm}"
        procs[key] = procs.get(key, 0) + 1
print(json.dumps({"files": files, "units": units, "failed": failed, "users": users, "groups": groups,
                  "processes": procs, "stray": stray}))
"""

ROOTS = (
    "/opt/runner-fleet",
    "/var/lib/runner-fleet",
    "/etc/runner-fleet",
    "/etc/systemd/system",
    "/etc/prometheus",
    "/run/lock",
    "/tmp",
    "/var/tmp",
)


def snapshot_command() -> str:
    """Shell text (run as the login user) printing one host's snapshot as JSON."""
    arg = json.dumps([list(ROOTS), list(VOLATILE), list(SKIP)])
    return f"sudo -n /usr/bin/python3 -c {shlex.quote(SNAPSHOT_PY)} {shlex.quote(arg)}"


def diff(clean: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two snapshots (of anything made of dicts and lists)."""
    found: list[str] = []
    if isinstance(clean, dict) and isinstance(now, dict):
        for key in sorted(set(clean) | set(now)):
            where = f"{prefix}{key}"
            if key not in now:
                found.append(f"missing {where}: {clean[key]}")
            elif key not in clean:
                found.append(f"extra   {where}: {now[key]}")
            else:
                found += diff(clean[key], now[key], where + " ")
    elif clean != now:
        found.append(f"differs {prefix.strip()}: {clean} -> {now}")
    return found
