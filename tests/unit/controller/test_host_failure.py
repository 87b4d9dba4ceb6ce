"""Whatever is raised while a command works on one host is that host's outcome and a
one-line reason (the commands themselves are run with raising fake hosts in
test_deploy.py)."""

from __future__ import annotations

import errno
import logging
import socket

import paramiko
import pytest

from mlfleet.controller.errors import ConfigError
from mlfleet.controller.host_failure import failure_of, host_failed, on_host
from mlfleet.controller.hostops import AgentFailed
from mlfleet.controller.outcomes import Outcome
from mlfleet.controller.transport import HostKeyRevoked, HostUnreachable


@pytest.mark.parametrize(
    ("error", "outcome", "reason"),
    [
        (AgentFailed("agent status: schema 2", where="edge-1"), Outcome.AGENT_FAILED,
         "edge-1: agent status: schema 2"),
        (HostKeyRevoked("host key of edge-1 is marked @revoked in kh:3", where="edge-1"),
         Outcome.UNREACHABLE, "edge-1: host key of edge-1 is marked @revoked in kh:3"),
        (ConfigError("host 'edge-1': `mlfleet_transfer` must be ..."), Outcome.FAILED,
         "host 'edge-1': `mlfleet_transfer` must be ..."),
        (paramiko.SSHException("Channel closed."), Outcome.UNREACHABLE,
         "connection to the host failed: SSHException: Channel closed."),
        (paramiko.AuthenticationException("Authentication failed."), Outcome.UNREACHABLE,
         "connection to the host failed: AuthenticationException: Authentication failed."),
        (socket.timeout("timed out"), Outcome.UNREACHABLE,
         "connection to the host failed: TimeoutError: timed out"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), Outcome.UNREACHABLE,
         "connection to the host failed: ConnectionResetError: [Errno 104] Connection reset by peer"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), Outcome.UNREACHABLE,
         "connection to the host failed: OSError: [Errno 113] No route to host"),
        (EOFError(), Outcome.UNREACHABLE, "connection to the host failed: EOFError"),
        (PermissionError(errno.EACCES, "Permission denied"), Outcome.FAILED,
         "PermissionError: [Errno 13] Permission denied (run again with --debug for the traceback)"),
        (KeyError("apps"), Outcome.FAILED,
         "KeyError: 'apps' (run again with --debug for the traceback)"),
        (RuntimeError("two\nlines"), Outcome.FAILED,
         "RuntimeError: two lines (run again with --debug for the traceback)"),
    ],
)  # fmt: skip
def test_each_exception_is_an_outcome_and_one_line(
    error: Exception, outcome: Outcome, reason: str
) -> None:
    failure = failure_of(error)
    assert (failure.outcome, failure.reason) == (outcome, reason)
    assert "\n" not in failure.reason


def test_the_traceback_is_logged_for_debug(caplog: pytest.LogCaptureFixture) -> None:
    def work() -> str:
        raise ValueError("bad answer")

    with caplog.at_level(logging.DEBUG, logger="mlfleet"):
        said = on_host("edge-1", work, lambda f: f"{f.outcome.value}: {f.reason}")
    assert said.startswith("failed: ValueError: bad answer")
    (record,) = caplog.records
    assert record.getMessage() == "edge-1 failed (failed):"
    assert record.exc_info is not None and record.exc_info[0] is ValueError


def test_an_interrupt_is_not_a_host_failure() -> None:
    def work() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        on_host("edge-1", work, lambda f: f.reason)


def test_a_failure_is_logged_even_when_the_error_is_one_of_ours(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="mlfleet"):
        failure = host_failed("edge-2", HostUnreachable("cannot reach it", where="edge-2"))
    assert failure.outcome is Outcome.UNREACHABLE
    assert [r.getMessage() for r in caplog.records] == ["edge-2 failed (unreachable):"]
