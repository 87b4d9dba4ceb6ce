"""`mlfleet-agent daemon`: ticks on its interval for its window and leaves (cron starts the
next one), and never runs twice on a host. Real processes, an agent dir in tmp_path and no
engine (a host with no app records needs none)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

from mlfleet.agent.lock import HostLock


def daemon(tmp_path: Path, *args: str) -> List[str]:
    return [sys.executable, "-m", "mlfleet.agent", "daemon", *args, "--agent-dir", str(tmp_path),
            "--docker-host", f"unix://{tmp_path}/no-engine.sock"]  # fmt: skip


def test_a_daemon_with_a_window_ticks_more_than_once_then_leaves(tmp_path: Path):
    done = subprocess.run(daemon(tmp_path, "--interval", "0.2", "--for", "1"), timeout=30)
    assert done.returncode == 0
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["last_tick"] is not None  # the report a tick before the last one wrote
    assert (tmp_path / "metrics" / "mlfleet.prom").exists()


def test_a_second_daemon_leaves_at_once_while_one_runs(tmp_path: Path):
    with HostLock(str(tmp_path / "daemon.lock"), "daemon") as lock:
        lock.acquire(0)
        # Without the lock this daemon (no --for) would tick for good: the timeout fails it.
        done = subprocess.run(daemon(tmp_path, "--interval", "1"), timeout=30)
    assert done.returncode == 0
    assert not (tmp_path / "status.json").exists()  # it did not tick


def test_a_daemon_refuses_an_interval_that_is_not_positive(tmp_path: Path):
    done = subprocess.run(daemon(tmp_path, "--interval", "0"), timeout=30, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 2 and "is not a positive number of seconds" in done.stderr
