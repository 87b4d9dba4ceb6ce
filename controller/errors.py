"""Errors the CLI turns into one clear line (what, where, what to do) and an exit code."""

from __future__ import annotations


class MlfleetError(Exception):
    """An error a user can act on. `where` names the file:line, host or setting."""

    exit_code = 1

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
    """Invalid input file: inventory, playbook, lab profiles."""

    exit_code = 2


class LabError(MlfleetError):
    """The lab could not be brought up, inspected or torn down."""

    exit_code = 3
