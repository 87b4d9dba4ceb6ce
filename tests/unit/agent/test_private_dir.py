"""The agent's directory made private: what an older agent left open to other users is
tightened (not what a link points to, not what another user owns), and said in one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pytest

from mlfleet.agent.private_dir import Tightened, private_mode, summary, tighten, worth_saying


def _modes(top: Path) -> Dict[str, str]:
    found = {".": oct(top.stat().st_mode & 0o777)}
    for path in sorted(top.rglob("*")):
        if not path.is_symlink():
            found[str(path.relative_to(top))] = oct(path.stat().st_mode & 0o777)
    return found


def _older_agents_dir(tmp_path: Path) -> Path:
    """An agent's directory as an older agent left it under umask 022."""
    agent = tmp_path / "agent"
    (agent / "metrics").mkdir(parents=True)
    (agent / "cache" / "old").mkdir(parents=True)
    for name in ("state.db", "state.db-wal", "tick.log", "metrics/mlfleet.prom", "cache/old/x.py"):
        (agent / name).write_text("x")
    (agent / "mlfleet-agent.pyz").write_text("#!/usr/bin/env python3\n")
    (agent / "mlfleet-agent.pyz").chmod(0o755)
    for d in (agent, agent / "metrics", agent / "cache", agent / "cache" / "old"):
        d.chmod(0o755)
    for f in agent.rglob("*"):
        if f.is_file() and f.name != "mlfleet-agent.pyz":
            f.chmod(0o644)
    return agent


def test_private_mode_keeps_only_the_owners_bits() -> None:
    assert private_mode(0o100644) == 0o600
    assert private_mode(0o40777) == 0o700
    assert private_mode(0o755) == 0o700
    assert private_mode(0o600) == 0o600


def test_an_older_agents_directory_is_made_private_once(tmp_path: Path) -> None:
    agent = _older_agents_dir(tmp_path)
    outside = tmp_path / "someones-file"
    outside.write_text("not the agent's")
    outside.chmod(0o644)
    (agent / "link").symlink_to(outside)
    changed = tighten(str(agent))
    assert _modes(agent) == {
        ".": "0o700",
        "cache": "0o700",
        "cache/old": "0o700",
        "cache/old/x.py": "0o600",
        "metrics": "0o700",
        "metrics/mlfleet.prom": "0o600",
        "mlfleet-agent.pyz": "0o700",
        "state.db": "0o600",
        "state.db-wal": "0o600",
        "tick.log": "0o600",
    }
    assert oct(outside.stat().st_mode & 0o777) == "0o644"  # a link is not followed
    assert Tightened(str(agent / "state.db"), 0o644, 0o600) in changed
    assert Tightened(str(agent), 0o755, 0o700) in changed
    assert len(changed) == 10
    assert tighten(str(agent)) == []  # nothing left to say the next time


def test_a_file_of_another_user_is_left_alone(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    agent = tmp_path / "agent"
    agent.mkdir(mode=0o700)
    theirs = agent / "theirs"
    theirs.write_text("x")
    theirs.chmod(0o644)
    os.chown(theirs, 65534, 65534)
    assert tighten(str(agent)) == []
    assert oct(theirs.stat().st_mode & 0o777) == "0o644"


def test_no_directory_nothing_to_do(tmp_path: Path) -> None:
    assert tighten(str(tmp_path / "none")) == []


def test_the_historys_line_names_the_first_changes_and_counts_the_rest() -> None:
    changed = [Tightened("/var/lib/mlfleet", 0o755, 0o700)] + [
        Tightened(f"/var/lib/mlfleet/f{n}", 0o644, 0o600) for n in range(6)
    ]
    assert summary("/var/lib/mlfleet", changed) == (
        "the agent's directory was open to other users: made private (/var/lib/mlfleet 0755 ->"
        " 0700, f0 0644 -> 0600, f1 0644 -> 0600, f2 0644 -> 0600, f3 0644 -> 0600 and 2 more);"
        " the agent keeps it 0700 and its files 0600"
    )


def test_only_what_held_the_agents_data_is_news() -> None:
    """A fresh install or an upgrade leaves the directory and the agent's code 0755 (the
    controller's copy): tightened without a word; a record left readable is said."""
    agent = "/var/lib/mlfleet"
    fresh = [Tightened(agent, 0o755, 0o700), Tightened(f"{agent}/mlfleet-agent.pyz", 0o755, 0o700)]
    assert not worth_saying(agent, fresh)
    assert not worth_saying(agent, [])
    assert worth_saying(agent, [*fresh, Tightened(f"{agent}/state.db", 0o644, 0o600)])
    assert worth_saying(agent + "/", [Tightened(f"{agent}/tick.log", 0o644, 0o600)])
