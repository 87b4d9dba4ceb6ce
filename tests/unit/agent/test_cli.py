"""The agent's command line keeps its directory private: what it writes is 0600 in 0700
directories whatever umask it was started with, and a directory an older agent left open is
tightened and said once in the history. In process, an agent dir in tmp_path and no engine
(a host with no app records needs none)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from mlfleet.agent.cli import main
from mlfleet.agent.state import StateStore


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask a cron job or an SSH session usually has."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _state_args(agent: Path) -> List[str]:
    return ["--agent-dir", str(agent), "--docker-host", f"unix://{agent}/no-engine.sock"]


def _modes(top: Path) -> Dict[str, str]:
    found = {".": oct(top.stat().st_mode & 0o777)}
    found.update({str(p.relative_to(top)): oct(p.stat().st_mode & 0o777) for p in top.rglob("*")})
    return found


def _history(agent: Path, capsys: pytest.CaptureFixture) -> Dict[str, Any]:
    assert main(["history", "--json", *_state_args(agent)]) == 0
    return json.loads(capsys.readouterr().out)


def test_what_a_tick_writes_is_private_and_the_umask_is_given_back(
    tmp_path: Path, loose_umask: None, capsys: pytest.CaptureFixture
) -> None:
    agent = tmp_path / "agent"
    assert main(["tick", *_state_args(agent)]) == 0
    assert _modes(agent) == {
        ".": "0o700",
        "agent.lock": "0o600",
        "metrics": "0o700",
        "metrics/mlfleet.prom": "0o600",
        "state.db": "0o600",
        "state.db-shm": "0o600",
        "state.db-wal": "0o600",
        "status.json": "0o600",
    }
    assert os.umask(0o022) == 0o022  # a caller in the same process gets its own back


def test_an_older_agents_open_directory_is_tightened_and_said_once(
    tmp_path: Path, loose_umask: None, capsys: pytest.CaptureFixture
) -> None:
    agent = tmp_path / "agent"
    agent.mkdir(mode=0o755)
    agent.chmod(0o755)
    older = StateStore(str(agent / "state.db"))
    older.event("succeeded", "v1 is serving", app="sentiment")
    older.close()
    (agent / "state.db").chmod(0o644)
    (agent / "tick.log").write_text("an older tick\n")
    history = _history(agent, capsys)
    assert {m for m in _modes(agent).values()} <= {"0o700", "0o600"}
    said = [e for e in history["events"] if e["kind"] == "secured"]
    assert [e["message"] for e in said] == [
        f"the agent's directory was open to other users: made private ({agent} 0755 -> 0700,"
        " state.db 0644 -> 0600, tick.log 0644 -> 0600); the agent keeps it 0700 and its files"
        " 0600"
    ]
    again = _history(agent, capsys)
    assert [e["kind"] for e in again["events"]] == ["secured", "succeeded"]


def test_a_fresh_install_is_made_private_without_a_word(
    tmp_path: Path, loose_umask: None, capsys: pytest.CaptureFixture
) -> None:
    """As the controller leaves a host it installed (or upgraded): the directory and the
    agent 0755. Made private; nothing in them was anyone's to read, nothing to say."""
    agent = tmp_path / "agent"
    agent.mkdir(mode=0o755)
    (agent / "mlfleet-agent.pyz").write_text("#!/usr/bin/env python3\n")
    (agent / "mlfleet-agent.pyz").chmod(0o755)
    assert _history(agent, capsys)["events"] == []
    assert _modes(agent)["."] == "0o700" and _modes(agent)["mlfleet-agent.pyz"] == "0o700"
