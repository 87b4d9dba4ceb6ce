"""The agent probe's output (one round trip: hash, crontab, version) split into its parts."""

from __future__ import annotations

from mlfleet.controller.hostops import MARK, parse_probe
from mlfleet.controller.transport import CommandResult


def test_agent_present_with_crontab() -> None:
    out = f'abc123  /a/mlfleet-agent.pyz\n{MARK}\n* * * * * tick # mlfleet-agent\n{MARK}\n{{"version": "0.1.0"}}\n'
    probe = parse_probe(CommandResult(0, out, ""))
    assert probe.sha256 == "abc123"
    assert probe.crontab == "* * * * * tick # mlfleet-agent\n"
    assert probe.version.code == 0 and probe.version.stdout.strip() == '{"version": "0.1.0"}'


def test_fresh_host_has_no_hash_no_crontab_and_a_failed_version() -> None:
    probe = parse_probe(CommandResult(2, f"{MARK}\n{MARK}\n", "python3: can't open file"))
    assert probe.sha256 is None and probe.crontab == ""
    assert probe.version.code == 2 and "can't open" in probe.version.stderr


def test_unexpected_output_means_unknown_agent() -> None:
    probe = parse_probe(CommandResult(127, "", "sh: not found"))
    assert probe.sha256 is None and probe.version.code == 127
