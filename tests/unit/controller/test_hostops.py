"""The agent probe's output (one round trip: hash, crontab, then the agent command when the
hash is the expected one) split into its parts, and the probe run by a real shell."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from mlfleet.controller.hostops import _PROBE, MARK, parse_probe
from mlfleet.controller.transport import CommandResult


def test_agent_present_with_crontab() -> None:
    out = f'abc123  /a/mlfleet-agent.pyz\n{MARK}\n* * * * * tick # mlfleet-agent\n{MARK}\n{{"version": "0.1.0"}}\n'
    probe = parse_probe(CommandResult(0, out, ""))
    assert probe.sha256 == "abc123"
    assert probe.crontab == "* * * * * tick # mlfleet-agent\n"
    assert probe.result.code == 0 and probe.result.stdout.strip() == '{"version": "0.1.0"}'


def test_fresh_host_has_no_hash_no_crontab_and_no_command_output() -> None:
    probe = parse_probe(CommandResult(0, f"\n{MARK}\n{MARK}\n", ""))
    assert probe.sha256 is None and probe.crontab == "" and probe.result.stdout == ""


def test_unexpected_output_means_unknown_agent() -> None:
    probe = parse_probe(CommandResult(127, "", "sh: not found"))
    assert probe.sha256 is None and probe.result.code == 127


def _probe(
    tmp_path: Path, agent: bytes, expected: str, *argv: str, stdin: bytes = b""
) -> CommandResult:
    path = tmp_path / "mlfleet-agent.pyz"
    path.write_bytes(agent)
    spool = tmp_path / "root"
    spool.write_text("* * * * * tick # mlfleet-agent\n")
    proc = subprocess.run(["sh", "-c", _PROBE, "sh", str(path), str(spool), expected, *argv],
                          input=stdin, capture_output=True)  # fmt: skip
    return CommandResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_the_command_runs_with_its_stdin_and_exit_code_only_when_the_hash_matches(tmp_path) -> None:
    agent = b"the agent"
    digest = hashlib.sha256(agent).hexdigest()
    command = ["sh", "-c", 'cat; echo " done"; exit 3', "sh"]
    ran = parse_probe(_probe(tmp_path, agent, digest, *command, stdin=b"hello"))
    assert ran.sha256 == digest and ran.crontab.endswith("# mlfleet-agent\n")
    assert (ran.result.code, ran.result.stdout) == (3, "hello done\n")
    # Another agent there (an older release): the command does not run.
    other = parse_probe(_probe(tmp_path, b"an older agent", digest, *command, stdin=b"hello"))
    assert other.sha256 != digest and (other.result.code, other.result.stdout) == (0, "")


def test_the_spool_is_replaced_whole_and_crond_told_to_reload_it(tmp_path) -> None:
    from mlfleet.controller.hostops import _WRITE_SPOOL

    spool, update = tmp_path / "deploy", tmp_path / "cron.update"
    spool.write_text("old entry\n")
    update.write_text("root\n")  # another user's reload, not yet read by crond
    proc = subprocess.run(["sh", "-c", _WRITE_SPOOL, "sh", str(spool), str(update), "deploy"],
                          input=b"new entry # mlfleet-agent\n", capture_output=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert spool.read_text() == "new entry # mlfleet-agent\n" and spool.stat().st_mode & 0o077 == 0
    assert update.read_text() == "root\ndeploy\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cron.update", "deploy"]


class _Answered:
    """A transport whose host answered (only its host is asked for)."""

    def __init__(self) -> None:
        from mlfleet.controller.hosts import Host

        self.host = Host("edge-1", {"mlfleet_python": "/usr/bin/python2.7"})


@pytest.mark.parametrize(
    ("said", "hint"),
    [
        ("bash: line 1: /usr/bin/python2.7: No such file or directory", "mlfleet_python"),
        ('  File "__main__.py", line 3\nSyntaxError: invalid syntax', "mlfleet_python"),
        ("python3: can't open file '/var/lib/mlfleet/mlfleet-agent.pyz': [Errno 2] No such file",
         "mlfleet agent install"),
    ],
)  # fmt: skip
def test_an_agent_that_cannot_run_says_what_to_do(said: str, hint: str) -> None:
    from mlfleet.controller.hostops import AgentFailed, _check_version

    with pytest.raises(AgentFailed) as caught:
        _check_version(_Answered(), CommandResult(127, "", said))  # type: ignore[arg-type]
    assert hint in str(caught.value) and "edge-1" in str(caught.value)
