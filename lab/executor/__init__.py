"""Executor: runs the Pulumi program under mocks and carries out its remote commands over SSH
as pulumi-command 1.2.1 would, with a local state file and the engine's diff rules (see lab/EXECUTOR.md)."""

from lab.executor.engine import Execution, Operation, RunReport, run_program
from lab.executor.ssh import Connection, Endpoint, RemoteCommandError, RunResult, SSHTransport, run_command

__all__ = [
    "Connection",
    "Endpoint",
    "Execution",
    "Operation",
    "RemoteCommandError",
    "RunReport",
    "RunResult",
    "SSHTransport",
    "run_command",
    "run_program",
]
