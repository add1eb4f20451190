"""Every failure a step foresees ends with ONE line naming the host, the step, the cause and what
to do (lib.sh `die` / `failure_line`), and a failure nobody foresaw ends with the same kind of line
(lib.sh's ERR trap). Checked two ways: every `die` call site in the scripts gives a cause and an
action (a static reading of the call), and scripts run here with a failing fake tool end with the
line, in the exact format."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from components import shell
from fleet import hostkeys

SCRIPTS = shell.SCRIPTS_DIR
LINE = re.compile(
    r"^runner-fleet: FAILED on (?P<host>[^,]+), step (?P<step>[^:]+): (?P<cause>.+)\. To fix: (?P<action>.+)\.$"
)


def _scripts_with_lib() -> list[str]:
    return sorted(p.name for p in SCRIPTS.glob("*.sh") if shell.INCLUDE in p.read_text() or p.name == "lib.sh")


def _words(text: str, start: int) -> list[str]:
    """The shell words of the command starting at `start`, raw (quotes and expansions kept),
    up to its end: an unquoted newline (not after a backslash), `;`, `&&`, `||` or `)`."""
    words: list[str] = []
    word = ""
    i = start
    quote = ""  # "'" or '"'
    depth = 0  # $( ... ) and ${ ... } nesting outside single quotes
    while i < len(text):
        c = text[i]
        if quote == "'":
            word += c
            if c == "'":
                quote = ""
        elif c == "\\" and i + 1 < len(text):
            if text[i + 1] == "\n" and not quote:
                i += 2
                if word:
                    words.append(word)
                    word = ""
                continue
            word += text[i : i + 2]
            i += 1
        elif c == '"':
            word += c
            quote = "" if quote == '"' else '"'
        elif c == "'" and not quote:
            word += c
            quote = "'"
        elif text.startswith(("$(", "${"), i):
            word += text[i : i + 2]
            depth += 1
            i += 1
        elif c in ")}" and depth:
            word += c
            depth -= 1
        elif quote or depth:
            word += c
        elif c in " \t":
            if word:
                words.append(word)
                word = ""
        elif c in "\n;)" or text.startswith(("&&", "||"), i):
            break
        else:
            word += c
        i += 1
    if word:
        words.append(word)
    return words


_CALL = re.compile(r"(?:^|[\s;&|(])die(?=[ \t])", re.M)


def die_calls(text: str) -> list[tuple[int, list[str]]]:
    """(line number, argument words) of every `die` call in a script (its definition excluded)."""
    calls = []
    for m in _CALL.finditer(text):
        start = m.end()
        line_start = text.rfind("\n", 0, m.start()) + 1
        if text[line_start : m.start()].lstrip().startswith("#"):
            continue
        calls.append((text.count("\n", 0, m.start()) + 1, _words(text, start)))
    return calls


def _literal(word: str) -> str:
    """What a word says by itself: quotes, $(...), ${...} and $VAR taken out."""
    out = re.sub(r"\$\([^()]*\)|\$\{[^{}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\$[0-9?#@*]", "", word)
    return out.replace('"', "").replace("'", "").strip()


@pytest.mark.parametrize("name", _scripts_with_lib())
def test_every_die_call_gives_a_cause_and_an_action(name):
    text = (SCRIPTS / name).read_text()
    problems = []
    for line, words in die_calls(text):
        if len(words) not in (2, 3):
            problems.append(f"line {line}: {len(words)} arguments (want CAUSE ACTION [DETAIL]): {words}")
            continue
        cause, action = (_literal(w) for w in words[:2])
        if len(cause) < 10:
            problems.append(f"line {line}: the cause says nothing by itself: {words[0]}")
        if len(action) < 10:
            problems.append(f"line {line}: the action says nothing by itself: {words[1]}")
        if "\n" in cause or "\n" in action:
            problems.append(f"line {line}: cause and action are one line each (put the rest in DETAIL)")
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_the_scanner_reads_die_calls_as_bash_does():
    text = (
        'x || die "a $b c" \\\n  "do $(echo d) e"\n'
        '[[ -f f ]] || die "one: $(cat "$f" | wc -l)" "two" "$detail"\n'
        "  *) die 'only one' ;;\n"
        "# die in a comment\n"
    )
    assert die_calls(text) == [
        (1, ['"a $b c"', '"do $(echo d) e"']),
        (3, ['"one: $(cat "$f" | wc -l)"', '"two"', '"$detail"']),
        (4, ["'only one'"]),
    ]


# --- the line itself, from bash -------------------------------------------------------------------


def _bash(body: str, step: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    """Run `body` after lib.sh as a step script runs (`bash -c TEXT NAME`, set -euo pipefail)."""
    text = "set -euo pipefail\n" + shell.script_text("lib.sh") + "\n" + body
    return subprocess.run(
        ["bash", "-c", text, step],
        input=stdin,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


def _last_line(result: subprocess.CompletedProcess) -> re.Match[str]:
    lines = result.stderr.rstrip("\n").splitlines()
    assert lines, result
    match = LINE.match(lines[-1])
    assert match, lines[-1]
    return match


def test_die_prints_detail_first_then_the_one_line():
    result = _bash(
        'die "the work disk has 12 MB free" "free disk space under /opt, then run again" "detail 1\ndetail 2"',
        "runner-install.create.sh",
        {"HOST_NAME": "dell-r640-01-runner", "RUNNER_NAME": "r1"},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "detail 1",
        "detail 2",
        "runner-fleet: FAILED on dell-r640-01-runner, step runner-install.create (runner r1): "
        "the work disk has 12 MB free. To fix: free disk space under /opt, then run again.",
    ]


def test_without_a_host_name_the_line_names_the_machine():
    result = _bash('die "cause text" "action text"', "prometheus-scrape-job.create.sh")
    match = _last_line(result)
    assert match["host"] == subprocess.run(["uname", "-n"], capture_output=True, text=True).stdout.strip()
    assert match["step"] == "prometheus-scrape-job.create"


def test_an_unforeseen_failure_ends_with_the_line_naming_the_command():
    result = _bash(
        "f() { grep -q nothing-here /dev/null; }\nif f; then :; fi\nf || true\nx=$(false; echo y)\nf\necho unreachable",
        "runner-install.create.sh",
        {"HOST_NAME": "h1"},
    )
    assert result.returncode == 1 and "unreachable" not in result.stdout
    # Only the one real failure printed a line (tested commands and $(...) do not).
    assert result.stderr.count("FAILED") == 1
    match = _last_line(result)
    assert match["host"] == "h1"
    assert "`grep -q nothing-here /dev/null` failed with exit status 1" in match["cause"]


def test_a_timed_out_command_says_so():
    result = _bash("timeout 0.2 sleep 5", "runner-service.create.sh", {"RUNNER_NAME": "r1"})
    assert result.returncode == 124
    assert "`timeout 0.2 sleep 5` timed out" in _last_line(result)["cause"]


# --- real scripts with a failing fake tool --------------------------------------------------------


def _run_script(name: str, variables: dict[str, str], tmp_path: Path, stdin: str = "") -> subprocess.CompletedProcess:
    text = shell.render(name, variables)
    return subprocess.run(
        ["bash", "-c", text, name],
        input=stdin,
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
        check=False,
    )


def _fake(tmp_path: Path, tool: str, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / tool
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def test_a_revoked_credential_ends_with_restore_the_credential(tmp_path):
    # curl as GitHub answers a revoked credential: 401, {"message": "Bad credentials"}.
    _fake(
        tmp_path,
        "curl",
        "printf '%s\\n%s' '{\"message\": \"Bad credentials\"}' 401\n",
    )
    runner_dir = tmp_path / "runner"
    runner_dir.mkdir()
    result = _run_script(
        "runner-registration.create.sh",
        {
            "RUNNER_NAME": "lab-primary",
            "RUNNER_DIR": str(runner_dir),
            "RUNNER_USER": "nobody",
            "REGISTRATION_URL": "https://github.com/o/r",
            "API_URL": "https://api.github.com",
            "SCOPE_PATH": "repos/o/r",
            "CUSTOM_LABELS": "",
            "RUNNER_GROUP": "",
            "DISABLE_UPDATE": "true",
            "UNIT_DIR": str(tmp_path / "units"),
        },
        tmp_path,
        stdin="ghp_revoked\n",
    )
    assert result.returncode == 1, result.stderr
    match = _last_line(result)
    assert match["step"] == "runner-registration.create (runner lab-primary)"
    assert (
        "GitHub refused the stack's credential (401 Bad credentials) while minting a registration token"
        in (match["cause"])
    )
    assert match["action"].startswith("restore a valid credential: pulumi config set --secret runner-fleet:githubToken")
    assert "ghp_revoked" not in result.stderr + result.stdout


def test_a_missing_prometheus_config_ends_with_what_to_set(tmp_path):
    result = _run_script(
        "prometheus-scrape-job.create.sh",
        {
            "CONFIG_PATH": str(tmp_path / "prometheus.yml"),
            "TARGETS_DIR": str(tmp_path / "targets"),
            "TARGETS_GLOB": str(tmp_path / "targets" / "*.json"),
            "JOB_NAME": "github-runner-health",
            "JOB_BLOCK": "  - job_name: x",
            "MANAGE_CONFIG": "true",
            "SERVICE": "prometheus",
            "PROMTOOL": "promtool",
            "PROM_URL": "http://127.0.0.1:1",
            "LOCK_FILE": str(tmp_path / "lock"),
            "RULES_FILE": str(tmp_path / "rules.yml"),
            "RULES": "groups: []",
        },
        tmp_path,
    )
    assert result.returncode == 1
    match = _last_line(result)
    assert match["cause"] == f"Prometheus configuration {tmp_path / 'prometheus.yml'} does not exist"
    assert "prometheus.configPath" in match["action"]


def test_a_checksum_mismatch_ends_with_what_to_check(tmp_path):
    _fake(tmp_path, "curl", 'while (($#)); do if [[ $1 == -o ]]; then shift; echo tampered >"$1"; fi; shift; done\n')
    result = subprocess.run(
        [
            "bash",
            "-c",
            "set -euo pipefail\n" + shell.script_text("lib.sh") + "\n"
            f'download_verified r1 "the runner" https://example.invalid/r.tgz {"0" * 64} {tmp_path / "r.tgz"}',
            "runner-install.create.sh",
        ],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
        check=False,
    )
    match = _last_line(result)
    assert "checksum mismatch for https://example.invalid/r.tgz" in match["cause"]
    assert "sha256 in the stack config" in match["action"]


# --- the program's own failures -------------------------------------------------------------------


def test_the_programs_lines_have_the_scripts_format():
    """The reach check (fleet/hostkeys.py) words its failures as lib.sh's failure_line does."""
    from_bash = _bash('failure_line "c c" "a a"', "x.sh", {"HOST_NAME": "h"}).stdout.strip()
    assert hostkeys.failure_line("h", "x", "c c", "a a") == from_bash
