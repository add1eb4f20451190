"""Bad input is refused at the door: each value below runs the real program under the mocks
harness and must fail with a message naming its key path, before any resource is registered.

The table covers classes, each with its members: control characters in every kind of value,
values of the wrong type, alias spellings, URL templates parsed as str.format parses them,
plain-http URLs, accounts a destroy would delete, system directories, one machine under two
spellings, names GitHub compares case-insensitively, names the runner would truncate, ports,
host keys pulumi-command cannot verify, and broken sibling stack files.
"""

from __future__ import annotations

import base64
import copy
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from fleet import config as fleet_config
from fleet.config import ConfigError
from tests import conftest
from tests.conftest import PROJECT, completed_stack_config, fake_host_key, run_program

Config = dict[str, Any]


@pytest.fixture
def registrations(monkeypatch) -> list[str]:
    """Every resource the program registers (the Stack itself aside)."""
    seen: list[str] = []
    original = conftest.RecordingMonitor.RegisterResource

    def spy(self, request):  # noqa: N802 - gRPC method name
        if request.type != "pulumi:pulumi:Stack":
            seen.append(f"{request.type}::{request.name}")
        return original(self, request)

    monkeypatch.setattr(conftest.RecordingMonitor, "RegisterResource", spy)
    return seen


def refused(config: Config, stack: str, registrations: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        run_program(config, stack)
    assert registrations == [], "resources were registered before validation passed"
    return str(caught.value)


def ssh_key(kind: str, *fields: bytes) -> str:
    blob = b"".join(len(f).to_bytes(4, "big") + f for f in (kind.encode(), *fields))
    return f"{kind} {base64.b64encode(blob).decode()}"


def host(c: Config, i: int = 0) -> Config:
    return c["hosts"][i]


def runner(c: Config, i: int = 0, j: int = 0) -> Config:
    return c["hosts"][i]["runners"][j]


def organization(c: Config) -> None:
    c["github"] = {"organization": "paws"}


def new_runner_version(c: Config) -> None:
    c["runner"] = {"version": "2.399.0", "sha256": {"x64": "a" * 64}}


Case = tuple[Callable[[Config], Any], str, str]

# name: (change to the committed production stack, key path, fragment of the message)
CASES: dict[str, Case] = {
    # --- control characters, in every kind of value (a newline splits rendered scripts) ---
    "host name with a trailing newline": (
        lambda c: host(c).update(name="Serotonin-paws360\n"),
        "hosts[0].name",
        "U+000A",
    ),
    "runner name with a tab": (lambda c: runner(c).update(name="a\tb"), "hosts[0].runners[0].name", "U+0009"),
    "label with a trailing newline": (
        lambda c: runner(c).update(labels=["production", "primary\n"]),
        "hosts[0].runners[0].labels[1]",
        "U+000A",
    ),
    "label with a zero-width space": (
        lambda c: runner(c).update(labels=["pro\u200bduction"]),
        "hosts[0].runners[0].labels[0]",
        "U+200B",
    ),
    "address with a trailing newline": (
        lambda c: host(c).update(address="192.168.0.13\n"),
        "hosts[0].address",
        "U+000A",
    ),
    "host key with a trailing newline": (
        lambda c: host(c).update(hostKey=fake_host_key("a") + "\n"),
        "hosts[0].hostKey",
        "U+000A",
    ),
    "ssh user with a trailing newline": (lambda c: host(c).update(sshUser="root\n"), "hosts[0].sshUser", "U+000A"),
    "runner user with a carriage return": (
        lambda c: host(c).update(runnerUser="gha\r"),
        "hosts[0].runnerUser",
        "U+000D",
    ),
    "scrape interval with a trailing newline": (
        lambda c: c["prometheus"].update(scrapeInterval="15s\n"),
        "prometheus.scrapeInterval",
        "U+000A",
    ),
    "job name with a right-to-left override": (
        lambda c: c["prometheus"].update(jobName="health\u202e"),
        "prometheus.jobName",
        "U+202E",
    ),
    "targets dir with a trailing newline": (
        lambda c: c["prometheus"].update(targetsDir="/etc/prometheus/rf\n"),
        "prometheus.targetsDir",
        "U+000A",
    ),
    "server URL with a trailing newline": (
        lambda c: c["github"].update(serverUrl="https://ghe.example.com\n"),
        "github.serverUrl",
        "U+000A",
    ),
    "repository with a trailing newline": (
        lambda c: c["github"].update(repository="rmnanney/PAWS360\n"),
        "github.repository",
        "U+000A",
    ),
    "URL template with a newline": (
        lambda c: c.update(runner={"urlTemplate": "https://mirror.example.com/\n{version}/{arch}.tgz"}),
        "runner.urlTemplate",
        "U+000A",
    ),
    "checksum with a trailing newline": (
        lambda c: c.update(runner={"version": "2.399.0", "sha256": {"x64": "a" * 64 + "\n"}}),
        "runner.sha256.x64",
        "U+000A",
    ),
    "version with a trailing newline": (
        lambda c: c.update(runner={"version": "2.334.0\n"}),
        "runner.version",
        "U+000A",
    ),
    "github token that is no token": (
        lambda c: c.update(githubToken="null"),
        "githubToken",
        "too short to be a GitHub token",
    ),
    "github token with a trailing newline": (
        lambda c: c.update(githubToken=c["githubToken"] + "\n"),
        "githubToken",
        "without whitespace or control characters",
    ),
    "view token set in plain text": (
        lambda c: c.update(githubViewToken="github_pat_VIEWtoken0123456789abcdef"),
        "githubViewToken",
        "must be a secret",
    ),
    # --- values of the wrong type: a clear problem, never a crash ---
    "hosts is a mapping": (lambda c: c.update(hosts={"a": 1}), "runner-fleet:hosts", "must be a list of hosts"),
    "a host is a string": (lambda c: c["hosts"].__setitem__(0, "Serotonin"), "hosts[0]", "must be a mapping"),
    "exporter port as a string": (
        lambda c: host(c).update(exporterPort="9102"),
        "hosts[0].exporterPort",
        "must be an integer, got '9102'",
    ),
    "exporter port as a boolean": (
        lambda c: host(c).update(exporterPort=True),
        "hosts[0].exporterPort",
        "must be an integer",
    ),
    "labels as one string": (
        lambda c: runner(c).update(labels="production,primary"),
        "hosts[0].runners[0].labels",
        "must be a list",
    ),
    "runners as a mapping": (lambda c: host(c).update(runners={"name": "x"}), "hosts[0].runners", "must be a list"),
    "github as a list": (lambda c: c.update(github=["rmnanney/PAWS360"]), "runner-fleet:github", "must be a mapping"),
    "checkAccess as a string": (
        lambda c: c["github"].update(checkAccess="yes"),
        "github.checkAccess",
        "must be true or false",
    ),
    "minDiskMb as a string": (lambda c: host(c).update(minDiskMb="2048"), "hosts[0].minDiskMb", "must be an integer"),
    "protect as yes": (lambda c: c.update(protect="yes"), "protect", "must be true or false, got 'yes'"),
    "protect as a number": (lambda c: c.update(protect=1), "protect", "must be true or false"),
    "protect capitalised": (lambda c: c.update(protect="True"), "protect", "must be true or false"),
    "host protect as a string": (
        lambda c: host(c).update(protect="false"),
        "hosts[0].protect",
        "must be true or false",
    ),
    "installDependencies as a string": (
        lambda c: host(c).update(installDependencies="yes"),
        "hosts[0].installDependencies",
        "must be true or false",
    ),
    "installDependencies in another spelling": (
        lambda c: host(c).update(install_dependencies=True),
        "hosts[0].install_dependencies",
        "installDependencies",
    ),
    "prometheus port as a float": (lambda c: c["prometheus"].update(port=9090.5), "prometheus.port", "an integer"),
    "runner section as a number": (lambda c: c.update(runner=5), "runner-fleet:runner", "must be a mapping"),
    "host name as a number": (lambda c: host(c).update(name=5), "hosts[0].name", "must be a string"),
    "jump host as a string": (
        lambda c: host(c).update(jumpHost="bastion"),
        "hosts[0].jumpHost",
        "must be a mapping",
    ),
    "checksums as a string": (
        lambda c: c.update(runner={"version": "2.399.0", "sha256": "a" * 64}),
        "runner.sha256",
        "must be a mapping",
    ),
    "no runners": (lambda c: host(c).update(runners=[]), "hosts[0].runners", "must list at least one"),
    # --- the documented camelCase names only: an alias cannot bypass a rule ---
    "snake_case key": (
        lambda c: host(c).update(exporter_port=host(c).pop("exporterPort")),
        "hosts[0].exporter_port",
        "the key is spelled 'exporterPort'",
    ),
    "both spellings of one key": (
        lambda c: host(c).update(exporter_port=9999),
        "hosts[0].exporter_port",
        "is not a known key",
    ),
    "snake_case runner user equal to the ssh user": (
        lambda c: host(c).update(runner_user="root"),
        "hosts[0].runner_user",
        "the key is spelled 'runnerUser'",
    ),
    # --- URL templates, parsed the way str.format formats them ---
    "positional placeholder": (
        lambda c: c.update(runner={"urlTemplate": "https://m.example.com/{0}/{version}.tgz"}),
        "runner.urlTemplate",
        "placeholder {0} is not allowed",
    ),
    "conversion in a placeholder": (
        lambda c: c.update(runner={"urlTemplate": "https://m.example.com/{version!r}.tgz"}),
        "runner.urlTemplate",
        "placeholder {version!r} is not allowed",
    ),
    "format spec in a placeholder": (
        lambda c: c.update(runner={"urlTemplate": "https://m.example.com/{version:>10}.tgz"}),
        "runner.urlTemplate",
        "placeholder {version:>10} is not allowed",
    ),
    "unbalanced opening brace": (
        lambda c: c.update(runner={"urlTemplate": "https://m.example.com/{version.tgz"}),
        "runner.urlTemplate",
        "is not a valid template",
    ),
    "stray closing brace": (
        lambda c: c.update(exporter={"urlTemplate": "https://m.example.com/{version}}.tgz"}),
        "exporter.urlTemplate",
        "is not a valid template",
    ),
    "attribute access in a placeholder": (
        lambda c: c.update(runner={"urlTemplate": "https://m.example.com/{version.real}.tgz"}),
        "runner.urlTemplate",
        "placeholder {version.real} is not allowed",
    ),
    "index in a placeholder": (
        lambda c: c.update(runner={"urlTemplate": "https://m.example.com/{version[0]}.tgz"}),
        "runner.urlTemplate",
        "placeholder {version[0]} is not allowed",
    ),
    "template without the version": (
        lambda c: c.update(runner={"urlTemplate": "https://m.example.com/runner-{arch}.tgz"}),
        "runner.urlTemplate",
        "must contain {version}",
    ),
    "escaped braces render into the URL": (
        lambda c: c.update(exporter={"urlTemplate": "https://m.example.com/{version}/{{goarch}}.tgz"}),
        "exporter.urlTemplate",
        "renders to an invalid URL",
    ),
    "template with a query": (
        lambda c: c.update(runner={"urlTemplate": "https://m.example.com/{version}.tgz?token=abc"}),
        "runner.urlTemplate",
        "may not have a query",
    ),
    "template with credentials": (
        lambda c: c.update(runner={"urlTemplate": "https://u:p@m.example.com/{version}.tgz"}),
        "runner.urlTemplate",
        "carries credentials",
    ),
    "template over ftp": (
        lambda c: c.update(exporter={"urlTemplate": "ftp://m.example.com/{version}.tgz"}),
        "exporter.urlTemplate",
        "is not an http(s) URL",
    ),
    "template over plain http": (
        lambda c: c.update(runner={"urlTemplate": "http://m.example.com/{version}/{arch}.tgz"}),
        "runner.urlTemplate",
        "is plain http",
    ),
    "template over plain HTTP in capitals": (
        lambda c: c.update(exporter={"urlTemplate": "HTTP://m.example.com/{version}/{goarch}.tgz"}),
        "exporter.urlTemplate",
        "is plain http",
    ),
    # --- GitHub URLs: https only, no credentials, no path on the server ---
    "server URL over plain http": (
        lambda c: c["github"].update(serverUrl="http://ghe.example.com"),
        "github.serverUrl",
        "is plain http",
    ),
    "API URL over plain http": (
        lambda c: c["github"].update(serverUrl="https://ghe.example.com", apiUrl="http://ghe.example.com/api/v3"),
        "github.apiUrl",
        "is plain http",
    ),
    "server URL with the repository in it": (
        lambda c: c["github"].update(serverUrl="https://github.com/rmnanney"),
        "github.serverUrl",
        "root URL (no path)",
    ),
    "API URL as the server URL": (
        lambda c: c["github"].update(serverUrl="https://api.github.com"),
        "github.serverUrl",
        "is the API URL",
    ),
    "server URL with credentials": (
        lambda c: c["github"].update(serverUrl="https://user:ghp_x@ghe.example.com"),
        "github.serverUrl",
        "carries credentials",
    ),
    "API URL with a fragment": (
        lambda c: c["github"].update(apiUrl="https://api.github.com/#x"),
        "github.apiUrl",
        "may not have a query or fragment",
    ),
    "API URL on another server than the server URL": (
        lambda c: c["github"].update(serverUrl="https://ghe.example.com", apiUrl="https://api.github.com"),
        "github.apiUrl",
        "is not on ghe.example.com",
    ),
    # --- accounts that a destroy would delete (userdel --force) ---
    "runner user is the ssh user": (
        lambda c: host(c).update(sshUser="deploy", runnerUser="deploy"),
        "hosts[0].runnerUser",
        "is this host's sshUser",
    ),
    "runner user is the jump host's ssh user": (
        lambda c: host(c).update(
            runnerUser="ops", jumpHost={"address": "10.0.0.1", "sshUser": "ops", "hostKey": fake_host_key("j")}
        ),
        "hosts[0].runnerUser",
        "is its jumpHost.sshUser",
    ),
    "runner user is prometheus's ssh user on the same machine": (
        lambda c: (
            host(c).update(address="192.168.0.200", runnerUser="monitor"),
            c["prometheus"].update(sshUser="monitor"),
        ),
        "hosts[0].runnerUser",
        "prometheus.sshUser on the same machine",
    ),
    "runner user root": (lambda c: host(c).update(runnerUser="root"), "hosts[0].runnerUser", "system or login account"),
    "runner user prometheus": (
        lambda c: host(c).update(runnerUser="prometheus"),
        "hosts[0].runnerUser",
        "system or login account",
    ),
    "runner user nobody": (lambda c: host(c).update(runnerUser="nobody"), "hosts[0].runnerUser", "system or login"),
    "runner user sshd": (lambda c: host(c).update(runnerUser="sshd"), "hosts[0].runnerUser", "system or login"),
    "runner user systemd-*": (
        lambda c: host(c).update(runnerUser="systemd-network"),
        "hosts[0].runnerUser",
        "system or login",
    ),
    "runner user ubuntu": (lambda c: host(c).update(runnerUser="ubuntu"), "hosts[0].runnerUser", "system or login"),
    "runner user in uppercase": (lambda c: host(c).update(runnerUser="GHA"), "hosts[0].runnerUser", "Linux user name"),
    "runner user of 33 characters": (
        lambda c: host(c).update(runnerUser="g" * 33),
        "hosts[0].runnerUser",
        "at most 32",
    ),
    "runner user of another stack on the same machine": (
        lambda c: host(c, 1).update(runnerUser="github-runner-staging"),
        "hosts[1].runnerUser",
        "is also the runner user of stack 'staging' (Pulumi.staging.yaml)",
    ),
    # --- system directories and paths that are not plain ---
    "targets dir /": (lambda c: c["prometheus"].update(targetsDir="/"), "prometheus.targetsDir", "system directory"),
    "targets dir /etc": (lambda c: c["prometheus"].update(targetsDir="/etc"), "prometheus.targetsDir", "system"),
    "targets dir /etc/prometheus": (
        lambda c: c["prometheus"].update(targetsDir="/etc/prometheus"),
        "prometheus.targetsDir",
        "system directory",
    ),
    "targets dir /usr": (lambda c: c["prometheus"].update(targetsDir="/usr/"), "prometheus.targetsDir", "system"),
    "targets dir /var": (lambda c: c["prometheus"].update(targetsDir="/var"), "prometheus.targetsDir", "system"),
    "targets dir under /tmp": (
        lambda c: c["prometheus"].update(targetsDir="/tmp/targets"),  # noqa: S108 - the refused value
        "prometheus.targetsDir",
        "world-writable",
    ),
    "targets dir under /proc": (
        lambda c: c["prometheus"].update(targetsDir="/proc/self/x"),
        "prometheus.targetsDir",
        "virtual",
    ),
    "targets dir with ..": (
        lambda c: c["prometheus"].update(targetsDir="/etc/prometheus/../ssh"),
        "prometheus.targetsDir",
        "plain absolute path",
    ),
    "targets dir with //": (
        lambda c: c["prometheus"].update(targetsDir="/etc//prometheus"),
        "prometheus.targetsDir",
        "plain absolute path",
    ),
    "relative targets dir": (
        lambda c: c["prometheus"].update(targetsDir="prometheus/targets"),
        "prometheus.targetsDir",
        "is not an absolute path",
    ),
    "config path /etc/passwd": (
        lambda c: c["prometheus"].update(configPath="/etc/passwd"),
        "prometheus.configPath",
        "is not a Prometheus configuration file",
    ),
    "config path inside the targets dir": (
        lambda c: c["prometheus"].update(targetsDir="/srv/prom/conf", configPath="/srv/prom/conf/prometheus.yml"),
        "prometheus.targetsDir",
        "holds (or is the directory of) configPath",
    ),
    "promtool in a world-writable tree": (
        lambda c: c["prometheus"].update(promtool="/tmp/promtool"),  # noqa: S108 - the refused value
        "prometheus.promtool",
        "world-writable",
    ),
    "promtool as a directory": (
        lambda c: c["prometheus"].update(promtool="/usr/bin"),
        "prometheus.promtool",
        "is a directory",
    ),
    "relative promtool": (
        lambda c: c["prometheus"].update(promtool="bin/promtool"),
        "prometheus.promtool",
        "is not an absolute path",
    ),
    # --- addresses: one machine under two spellings, and what no machine's address is ---
    "IPv4 with leading zeros": (
        lambda c: host(c).update(address="192.168.000.013"),
        "hosts[0].address",
        "is not an IP address or DNS host name",
    ),
    "IPv4-mapped IPv6 of another host": (
        lambda c: host(c, 1).update(address="::ffff:192.168.0.13"),
        "hosts[1].address",
        "address '192.168.0.13' is already runner-fleet:hosts[0].address",
    ),
    "DNS name in another case with the root dot": (
        lambda c: (host(c).update(address="runner.example.com"), host(c, 1).update(address="Runner.Example.COM.")),
        "hosts[1].address",
        "is already runner-fleet:hosts[0].address",
    ),
    "one host key on two hosts": (
        lambda c: host(c, 1).update(hostKey=host(c)["hostKey"]),
        "hosts[1].hostKey",
        "one machine listed twice",
    ),
    "hex IPv4 shorthand": (lambda c: host(c).update(address="0x7f.1"), "hosts[0].address", "ending in a number"),
    "loopback address": (lambda c: host(c).update(address="127.0.0.1"), "hosts[0].address", "loopback"),
    "localhost": (lambda c: c["prometheus"].update(address="localhost"), "prometheus.address", "names each machine"),
    "unspecified address": (
        lambda c: host(c).update(address="0.0.0.0"),  # noqa: S104
        "hosts[0].address",
        "not the address of one",
    ),
    "multicast address": (lambda c: host(c).update(address="224.0.0.1"), "hosts[0].address", "not the address of one"),
    "IPv6 zone index": (lambda c: host(c).update(address="fe80::1%eth0"), "hosts[0].address", "zone index"),
    "underscore in a DNS name": (
        lambda c: host(c).update(address="runner_1.example.com"),
        "hosts[0].address",
        "is not an IP address or DNS host name",
    ),
    "IPv6 runner host address": (
        lambda c: host(c).update(address="2001:db8::13"),
        "hosts[0].address",
        "cannot be a scrape target",
    ),
    "host as its own jump host": (
        lambda c: host(c).update(jumpHost={"address": "192.168.0.13", "hostKey": fake_host_key("j")}),
        "hosts[0].jumpHost",
        "is the host itself",
    ),
    # --- names GitHub compares case-insensitively ---
    "runner names differing in case": (
        lambda c: runner(c, 1).update(name="SEROTONIN-paws360"),
        "hosts[1].runners[0].name",
        "compares runner names case-insensitively",
    ),
    "labels differing in case": (
        lambda c: runner(c).update(labels=["production", "PRODUCTION"]),
        "hosts[0].runners[0].labels[1]",
        "duplicate label 'PRODUCTION'",
    ),
    "runner groups differing in case": (
        lambda c: c.update(github={"organization": "paws", "runnerGroups": [{"name": "fast"}, {"name": "Fast"}]}),
        "github.runnerGroups[1].name",
        "duplicate runner group 'Fast'",
    ),
    "runner group spelled unlike its declaration": (
        lambda c: (
            c.update(github={"organization": "paws", "runnerGroups": [{"name": "fast"}]}),
            runner(c).update(group="Fast"),
        ),
        "hosts[0].runners[0].group",
        "is declared as 'fast'",
    ),
    "runner group named Default": (
        lambda c: c.update(github={"organization": "paws", "runnerGroups": [{"name": "default"}]}),
        "github.runnerGroups[0].name",
        "GitHub's own group",
    ),
    # --- names that would be truncated or are too long ---
    "unit name over the runner's 150 characters": (
        lambda c: (c["github"].update(repository="rmnanney/" + "r" * 80), runner(c).update(name="n" * 60)),
        "hosts[0].runners[0].name",
        "truncates names over 150",
    ),
    "runner name of 65 characters": (lambda c: runner(c).update(name="r" * 65), "hosts[0].runners[0].name", "1-64"),
    "label of 101 characters": (
        lambda c: runner(c).update(labels=["l" * 101]),
        "hosts[0].runners[0].labels[0]",
        "1-100",
    ),
    # --- ports ---
    "exporter port below 1024": (lambda c: host(c).update(exporterPort=80), "hosts[0].exporterPort", "below 1024"),
    "exporter port 0": (
        lambda c: host(c).update(exporterPort=0),
        "hosts[0].exporterPort",
        "greater than or equal to 1",
    ),
    "exporter port 70000": (
        lambda c: host(c).update(exporterPort=70000),
        "hosts[0].exporterPort",
        "less than or equal",
    ),
    "exporter port of another stack on the same machine": (
        lambda c: host(c, 1).update(exporterPort=9103),
        "hosts[1].exporterPort",
        "port 9103 on 192.168.0.51 is already used by stack 'staging'",
    ),
    "exporter port is prometheus's ssh port on the same machine": (
        lambda c: (host(c).update(address="192.168.0.200", exporterPort=2222), c["prometheus"].update(sshPort=2222)),
        "hosts[0].exporterPort",
        "is prometheus.sshPort on the same machine",
    ),
    "prometheus port is its ssh port": (
        lambda c: c["prometheus"].update(port=22),
        "prometheus.port",
        "is also prometheus.sshPort",
    ),
    "ssh port 0": (lambda c: host(c).update(sshPort=0), "hosts[0].sshPort", "greater than or equal to 1"),
    # --- host keys pulumi-command cannot verify, or that are not keys ---
    "ssh-rsa host key": (
        lambda c: host(c).update(hostKey=ssh_key("ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xab" * 256)),
        "hosts[0].hostKey",
        "ssh-keyscan -t ed25519",
    ),
    "ssh-dss host key": (
        lambda c: c["prometheus"].update(hostKey=ssh_key("ssh-dss", b"p", b"q", b"g", b"y")),
        "prometheus.hostKey",
        "expected a public host key line",
    ),
    "ed25519 key of the wrong length": (
        lambda c: host(c).update(hostKey=ssh_key("ssh-ed25519", b"\x01" * 31)),
        "hosts[0].hostKey",
        "not a well-formed ssh-ed25519 key",
    ),
    "host certificate instead of a key": (
        lambda c: host(c).update(hostKey=ssh_key("ssh-ed25519-cert-v01@openssh.com", b"n", b"\x01" * 32)),
        "hosts[0].hostKey",
        "expected a public host key line",
    ),
    "ecdsa key on another curve than it says": (
        lambda c: host(c).update(hostKey=ssh_key("ecdsa-sha2-nistp256", b"nistp384", b"\x04" + b"\x01" * 64)),
        "hosts[0].hostKey",
        "not a well-formed ecdsa-sha2-nistp256 key",
    ),
    # --- labels that send the wrong jobs here ---
    "windows label": (lambda c: runner(c).update(labels=["windows"]), "hosts[0].runners[0].labels[0]", "Windows jobs"),
    "macOS label": (lambda c: runner(c).update(labels=["macOS"]), "hosts[0].runners[0].labels[0]", "macOS jobs"),
    "arm64 label on an x64 host": (
        lambda c: runner(c).update(labels=["arm64"]),
        "hosts[0].runners[0].labels[0]",
        "contradicts the host's arch",
    ),
    # --- scope ---
    "repository with .git": (
        lambda c: c["github"].update(repository="rmnanney/PAWS360.git"),
        "github.repository",
        "drop the '.git' suffix",
    ),
    "repository with three parts": (
        lambda c: c["github"].update(repository="a/b/c"),
        "github.repository",
        "owner/name",
    ),
    "organization with a dot": (lambda c: c.update(github={"organization": "my.org"}), "github.organization", "1-39"),
    "repository and organization": (
        lambda c: c["github"].update(organization="paws"),
        "runner-fleet:github",
        "set exactly one of repository",
    ),
    # --- artifacts, durations, secrets ---
    "arm64 host without an arm64 checksum": (
        lambda c: (new_runner_version(c), host(c).update(arch="arm64"), runner(c).update(labels=["production"])),
        "runner.sha256.arm64",
        "is required: host(s) 'Serotonin-paws360' are arm64",
    ),
    "version with a v": (lambda c: c.update(exporter={"version": "v1.8.2"}), "exporter.version", "like 1.2.3"),
    "zero scrape interval": (
        lambda c: c["prometheus"].update(scrapeInterval="0s"),
        "prometheus.scrapeInterval",
        "positive",
    ),
    "scrape interval without a unit": (
        lambda c: c["prometheus"].update(scrapeInterval="15"),
        "prometheus.scrapeInterval",
        "Prometheus duration",
    ),
    "public key as the private key": (
        lambda c: c.update(sshPrivateKey=fake_host_key("k")),
        "sshPrivateKey",
        "is a public key",
    ),
    "passphrase-protected private key": (
        lambda c: c.update(
            sshPrivateKey="-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n"
            "AAAA\n-----END RSA PRIVATE KEY-----\n"
        ),
        "sshPrivateKey",
        "protected by a passphrase",
    ),
    "unknown key with a newline": (
        lambda c: host(c).update({"exporterPort\n": 9102}),
        "hosts[0].'exporterPort\\n'",
        "is not a known key",
    ),
    "insecure-http opt-in at the top level": (
        lambda c: c.update(allowInsecureHttp=True),
        "runner-fleet:allowInsecureHttp",
        "is not a known key",
    ),
    # --- Grafana (the dashboard's provisioning on the monitoring host) ---
    "grafana section without its provisioning directory": (
        lambda c: c.update(grafana={"dashboardsDir": "/var/lib/grafana/dashboards"}),
        "grafana.provisioningDir",
        "required",
    ),
    "grafana provisioning dir relative": (
        lambda c: c.update(grafana={"provisioningDir": "grafana/provisioning"}),
        "grafana.provisioningDir",
        "is not an absolute path",
    ),
    "grafana provisioning dir /etc": (
        lambda c: c.update(grafana={"provisioningDir": "/etc"}),
        "grafana.provisioningDir",
        "system directory",
    ),
    "grafana dashboards dir under /tmp": (
        lambda c: c.update(grafana={"provisioningDir": "/etc/grafana/provisioning", "dashboardsDir": "/tmp/d"}),  # noqa: S108
        "grafana.dashboardsDir",
        "world-writable",
    ),
    "grafana dashboards dir with ..": (
        lambda c: c.update(grafana={"provisioningDir": "/etc/grafana/provisioning", "dashboardsDir": "/var/lib/../x"}),
        "grafana.dashboardsDir",
        "plain absolute path",
    ),
    "grafana service with a newline": (
        lambda c: c.update(grafana={"provisioningDir": "/etc/grafana/provisioning", "service": "grafana-server\n"}),
        "grafana.service",
        "U+000A",
    ),
    "grafana as a list": (lambda c: c.update(grafana=["/etc/grafana/provisioning"]), "grafana", "mapping"),
    "grafana key in another spelling": (
        lambda c: c.update(grafana={"provisioning_dir": "/etc/grafana/provisioning"}),
        "grafana.provisioning_dir",
        "provisioningDir",
    ),
}


def mutated(change: Callable[[Config], Any], stack: str = "production") -> Config:
    config = completed_stack_config(stack)
    change(config)
    return config


def key_path(path: str) -> str:
    return path if path.startswith("runner-fleet:") or path.startswith("Pulumi.") else f"runner-fleet:{path}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_naming_its_key_before_anything_is_registered(name, registrations):
    change, path, fragment = CASES[name]
    message = refused(mutated(change), "production", registrations)
    lines = [line.strip() for line in message.splitlines()[1:]]
    assert any(line.startswith(f"{key_path(path)}: ") and fragment in line for line in lines), message


def test_the_table_holds_at_least_sixty_bad_inputs():
    assert len(CASES) >= 60


def test_the_same_program_registers_resources_for_the_good_config(registrations):
    """The spy sees registrations: an empty list above means nothing was registered."""
    run_program(completed_stack_config("production"), "production")
    assert len(registrations) > 10


def test_a_secret_value_never_appears_in_the_message(registrations):
    config = completed_stack_config("production")
    config["githubToken"] += "\n"
    message = refused(config, "production", registrations)
    assert config["githubToken"].strip() not in message


def test_runner_user_may_not_be_another_stacks_login(tmp_path, monkeypatch, registrations):
    """Staging logs in as `deploy` on the machine production's secondary runs on: production may
    not name its runner user `deploy` there (production's destroy would delete that login), and
    may not log in as staging's runner user (staging's destroy would delete it)."""
    files = stack_files(tmp_path, monkeypatch)
    staging = committed_yaml("staging")
    staging["config"]["runner-fleet:hosts"][0]["sshUser"] = "deploy"
    write_yaml(files / "Pulumi.staging.yaml", staging)
    config = completed_stack_config("production")
    config["hosts"][1]["runnerUser"] = "deploy"
    message = refused(config, "production", registrations)
    assert (
        "runner-fleet:hosts[1].runnerUser: runner user 'deploy' on 192.168.0.51 is the sshUser of stack 'staging'"
        in (message)
    )
    config = completed_stack_config("production")
    config["hosts"][1]["sshUser"] = "github-runner-staging"
    message = refused(config, "production", registrations)
    assert (
        "runner-fleet:hosts[1].sshUser: sshUser 'github-runner-staging' on 192.168.0.51 is the runner user" in message
    )


def test_the_monitoring_login_may_not_be_another_stacks_runner_user(tmp_path, monkeypatch, registrations):
    """Staging runs runners on the monitoring machine as `monitor`: production may not log in
    there as `monitor` (staging's destroy would delete the login)."""
    files = stack_files(tmp_path, monkeypatch)
    staging = committed_yaml("staging")
    staging["config"]["runner-fleet:hosts"].append(
        {
            "name": "monitor",
            "address": "192.168.0.200",
            "role": "secondary",
            "exporterPort": 9110,
            "runnerUser": "monitor",
            "runners": [{"name": "monitor-staging"}],
        }
    )
    write_yaml(files / "Pulumi.staging.yaml", staging)
    config = completed_stack_config("production")
    config["prometheus"]["sshUser"] = "monitor"
    message = refused(config, "production", registrations)
    assert "runner-fleet:prometheus.sshUser: sshUser 'monitor' on 192.168.0.200 is the runner user of stack" in message


WRONG_VALUES = [None, 7, True, "x\n", [], {}, [None], {"a": None}]


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a config: mappings' keys, lists' items, and the containers themselves."""
    out = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += leaves(item, (*path, i))
    return out


def replaced(config: Config, path: tuple[Any, ...], new: Any) -> Config:
    config = copy.deepcopy(config)
    target = config
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    return config


@pytest.mark.parametrize("path", leaves(completed_stack_config("production")), ids=str)
def test_a_value_of_any_wrong_type_anywhere_is_a_problem_never_a_crash(path, registrations):
    """No TypeError or AttributeError: each wrong value is a problem naming where it is."""
    base = completed_stack_config("production")
    for new in WRONG_VALUES:
        config = replaced(base, path, new)
        try:
            run_program(config, "production")
        except ConfigError as exc:
            assert registrations == []
            top = path[0]
            assert f"runner-fleet:{top}" in str(exc), (path, new, str(exc))
        else:  # the wrong-looking values that are valid: any port for Prometheus, no custom labels
            assert (path[-1], new) in (("port", 7), ("labels", [])), (path, new)
            registrations.clear()


def test_the_same_runner_in_another_case_of_the_scope_is_another_stacks(registrations):
    """GitHub compares owner, repository and runner names case-insensitively."""
    config = completed_stack_config("staging")
    config["github"]["repository"] = "RMNANNEY/paws360"
    config["hosts"][0]["runners"][0]["name"] = "DELL-R640-01-RUNNER"
    message = refused(config, "staging", registrations)
    assert (
        "runner-fleet:hosts[0].runners[0].name: runner 'DELL-R640-01-RUNNER' is already managed by stack 'production'"
        in message
    )


def test_runner_units_of_two_scopes_may_not_collide_on_one_machine(tmp_path, monkeypatch, registrations):
    """On github.com the unit is actions.runner.<owner>-<repo>.<name>.service: repositories
    `a-b/c` and `a/b-c` are two scopes with one unit name for a runner of the same name."""
    files = stack_files(tmp_path, monkeypatch)
    production = committed_yaml("production")
    production["config"]["runner-fleet:github"]["repository"] = "ops-fleet/ci"
    write_yaml(files / "Pulumi.production.yaml", production)
    config = completed_stack_config("staging")
    config["github"]["repository"] = "ops/fleet-ci"
    config["hosts"][0]["runners"][0]["name"] = "dell-r640-01-runner"
    message = refused(config, "staging", registrations)
    assert (
        "runner-fleet:hosts[0].runners[0].name: the runner's unit "
        "'actions.runner.ops-fleet-ci.dell-r640-01-runner.service' on 192.168.0.51 is also a unit of stack "
        "'production'" in message
    )


# --- sibling stack files ---------------------------------------------------------------


def committed_yaml(stack: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((PROJECT / f"Pulumi.{stack}.yaml").read_text())


def write_yaml(path, data) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data))


def stack_files(tmp_path, monkeypatch):
    """A copy of the project's stack files that a test may break."""
    for stack in ("production", "staging"):
        shutil.copy(PROJECT / f"Pulumi.{stack}.yaml", tmp_path / f"Pulumi.{stack}.yaml")
    monkeypatch.setattr(fleet_config, "STACK_FILES_DIR", tmp_path)
    return tmp_path


BROKEN_FILES = {
    "bad YAML": ("config:\n  runner-fleet:hosts: [\n", "is not valid YAML at line"),
    "a list at the top": ("- config\n", "must be a YAML mapping with a 'config' key"),
    "config is a list": ("config:\n  - a\n", "'config' must be a mapping"),
    "hosts is a mapping": ("config:\n  runner-fleet:hosts: {a: 1}\n", "runner-fleet:hosts: must be a list of hosts"),
    "a host is a string": ("config:\n  runner-fleet:hosts: [x]\n", "runner-fleet:hosts[0]: must be a mapping"),
    "an exporter port of the wrong type": (
        "config:\n  runner-fleet:hosts:\n    - {address: 192.168.0.13, exporterPort: x, runners: []}\n",
        "runner-fleet:hosts[0].exporterPort:",
    ),
    "a malformed address": (
        "config:\n  runner-fleet:hosts:\n    - {address: '192.168.0.300', exporterPort: 9200}\n",
        "runner-fleet:hosts[0].address:",
    ),
    "github of the wrong type": ("config:\n  runner-fleet:github: [a]\n", "runner-fleet:github: must be a mapping"),
    "prometheus of the wrong type": ("config:\n  runner-fleet:prometheus: 5\n", "runner-fleet:prometheus: must be"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_FILES))
def test_a_broken_sibling_stack_file_is_a_problem_of_that_file(name, tmp_path, monkeypatch, registrations):
    text, fragment = BROKEN_FILES[name]
    files = stack_files(tmp_path, monkeypatch)
    (files / "Pulumi.broken.yaml").write_text(text)
    config = completed_stack_config("production")
    config["hosts"][0]["role"] = "tertiary"  # this stack's own problem stays visible
    message = refused(config, "production", registrations)
    lines = [line.strip() for line in message.splitlines()[1:]]
    assert any(line.startswith("Pulumi.broken.yaml: ") and fragment in line for line in lines), message
    assert any(line.startswith("runner-fleet:hosts[0].role: ") for line in lines), message


def test_a_stack_file_ending_in_yml_is_compared_too(tmp_path, monkeypatch, registrations):
    files = stack_files(tmp_path, monkeypatch)
    (files / "Pulumi.edge.yml").write_text(
        "config:\n  runner-fleet:hosts:\n    - {address: 192.168.0.13, exporterPort: 9102, runners: [{name: e}]}\n"
    )
    message = refused(completed_stack_config("production"), "production", registrations)
    assert "runner-fleet:hosts[0].exporterPort: port 9102 on 192.168.0.13 is already used by stack 'edge'" in message


def test_a_sibling_file_with_unpinned_keys_and_secrets_is_fine(tmp_path, monkeypatch):
    """The committed files lack host keys and secrets: that is not a problem of theirs."""
    stack_files(tmp_path, monkeypatch)
    assert run_program(completed_stack_config("production"), "production").commands()


def test_one_scrape_job_reads_one_directory(tmp_path, monkeypatch, registrations):
    files = stack_files(tmp_path, monkeypatch)
    staging = committed_yaml("staging")
    staging["config"]["runner-fleet:prometheus"]["targetsDir"] = "/etc/prometheus/staging"
    write_yaml(files / "Pulumi.staging.yaml", staging)
    message = refused(completed_stack_config("production"), "production", registrations)
    assert "runner-fleet:prometheus.targetsDir: job 'github-runner-health' on 192.168.0.200 reads" in message


# --- what stays accepted -----------------------------------------------------------------


def test_normalized_values_reach_the_program():
    """One machine has one spelling: what the program gets is the normalized value."""
    config = completed_stack_config("production")
    config["hosts"][0]["address"] = "::FFFF:192.168.0.13"
    config["github"]["serverUrl"] = "HTTPS://GitHub.com:443/"
    run = run_program(config, "production")
    assert run.outputs["exporters"]["Serotonin-paws360"] == "http://192.168.0.13:9102/metrics"
    create = run.by_name("Serotonin-paws360-registration").inputs["create"]
    assert "REGISTRATION_URL=https://github.com/rmnanney/PAWS360" in create


def test_plain_http_on_a_test_network_needs_the_explicit_opt_in():
    config = completed_stack_config("production")
    config["github"] = {"repository": "lab/repo", "serverUrl": "http://10.249.31.1:8080", "allowInsecureHttp": True}
    config["runner"] = {
        "version": "2.334.0",
        "urlTemplate": "http://10.249.31.1:8080/actions/runner/releases/download/v{version}/r-{arch}-{version}.tgz",
    }
    for host_spec in config["hosts"]:
        host_spec["runners"][0]["name"] += "-lab"
    assert run_program(copy.deepcopy(config), "production").commands()
    config["github"]["allowInsecureHttp"] = False
    with pytest.raises(ConfigError, match=r"github\.serverUrl: 'http://10\.249\.31\.1:8080' is plain http"):
        run_program(config, "production")


def test_http_over_loopback_is_not_insecure():
    config = completed_stack_config("production")
    config["github"].update(serverUrl="http://127.0.0.1:8080", apiUrl="http://127.0.0.1:8080/api/v3")
    assert run_program(config, "production").commands()


def test_ecdsa_host_keys_are_accepted():
    config = completed_stack_config("production")
    config["hosts"][0]["hostKey"] = ssh_key("ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x07" * 64) + " root@x"
    assert run_program(config, "production").commands()


def test_a_stack_name_too_long_for_grafanas_dashboard_uid_is_refused_only_with_grafana(registrations):
    """The stack's dashboard uid is runner-fleet-<stack>; Grafana refuses uids over 40 characters."""
    stack = "a" * 28
    config = completed_stack_config("production")
    config["grafana"] = {"provisioningDir": "/etc/grafana/provisioning"}
    message = refused(config, stack, registrations)
    assert f"runner-fleet:grafana: the stack's dashboard uid runner-fleet-{stack} is longer than the 40" in message
    assert "at most 27 characters" in message
