"""Errors the CLI turns into one clear line (what, where, what to do) and an exit code, and
the one table of exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What `mlfleet` exits with. Each error class and each per-host outcome maps to one."""

    OK = 0
    FAILED = 1  # a deployment failed or halted; a host's apply or rollback failed
    USAGE = 2  # bad input: options, inventory, playbook, an image missing in the registry
    LAB = 3  # the lab could not be brought up, inspected or torn down
    LOCKED = 4  # the fleet lock is held by another deployment
    UNREACHABLE = 5  # hosts could not be reached (the others were done)
    AGENT_FAILED = 6  # hosts answered, but their agent could not run (Python, cron, protocol)
    REGISTRY = 7  # the registry: credentials missing or refused, certificate untrusted, away


class MlfleetError(Exception):
    """An error a user can act on. `where` names the file:line, host or setting."""

    exit_code: int = ExitCode.FAILED

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(MlfleetError):
    """Invalid input: options, inventory, playbook, lab profiles."""

    exit_code = ExitCode.USAGE


class LabError(MlfleetError):
    """The lab could not be brought up, inspected or torn down."""

    exit_code = ExitCode.LAB
