"""One host's failure: whatever is raised while a command works on one host (a refused SSH
login, an SFTP permission error, a dropped connection, an agent answer this controller
cannot read, a bug) becomes that host's outcome and a one-line reason; the command goes on
with the other hosts. `--debug` logs the traceback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, TypeVar

from mlfleet.controller.errors import MlfleetError
from mlfleet.controller.hostops import AgentFailed
from mlfleet.controller.outcomes import Outcome
from mlfleet.controller.transport import HostUnreachable, is_connection_error

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class HostFailure:
    """How one host failed: its outcome and the reason, in one line."""

    outcome: Outcome
    reason: str


def failure_of(exc: Exception) -> HostFailure:
    """The outcome and reason for an exception raised while working on one host (pure): the
    agent could not run (agent_failed), the host could not be reached or the connection
    dropped (unreachable), anything else failed (naming the exception's type)."""
    if isinstance(exc, AgentFailed):
        return HostFailure(Outcome.AGENT_FAILED, str(exc))
    if isinstance(exc, HostUnreachable):
        return HostFailure(Outcome.UNREACHABLE, str(exc))
    if isinstance(exc, MlfleetError):
        return HostFailure(Outcome.FAILED, str(exc))
    said = " ".join(str(exc).split("\n")).strip()
    text = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
    if is_connection_error(exc):
        return HostFailure(Outcome.UNREACHABLE, f"connection to the host failed: {text}")
    return HostFailure(Outcome.FAILED, f"{text} (run again with --debug for the traceback)")


def host_failed(host: str, exc: Exception) -> HostFailure:
    """`failure_of(exc)`, its traceback logged (shown with --debug)."""
    failure = failure_of(exc)
    log.debug("%s failed (%s):", host, failure.outcome.value, exc_info=exc)
    return failure


def on_host(host: str, work: Callable[[], R], failed: Callable[[HostFailure], R]) -> R:
    """`work()`, or `failed(failure)` when anything is raised on the way (an Exception: an
    interrupt still ends the command)."""
    try:
        return work()
    except Exception as exc:
        return failed(host_failed(host, exc))
