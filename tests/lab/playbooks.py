"""The lab's sentiment playbook as the lab tests deploy it: the shipped file
(playbooks/sentiment.yml, what the demo and users run) with a 3 s monitor window instead of
10 s. No lab test deploys through the controller a release that fails only inside the monitor
window (v5 is tried through the agent, with its own window), so every wave of every test
would otherwise wait 7 s for nothing."""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path

from tests.paths import REPO

SHIPPED = REPO / "playbooks" / "sentiment.yml"
_SHIPPED_MONITOR = "\nmonitor: 10s "
_TEST_MONITOR = "\nmonitor: 3s  "


def _test_playbook() -> Path:
    text = SHIPPED.read_text()
    if text.count(_SHIPPED_MONITOR) != 1:
        raise RuntimeError(
            f"{SHIPPED} no longer sets `monitor: 10s`: update tests/lab/playbooks.py"
        )
    directory = tempfile.TemporaryDirectory(prefix="mlfleet-test-playbook-")
    atexit.register(directory.cleanup)
    path = Path(directory.name) / "sentiment.yml"
    path.write_text(text.replace(_SHIPPED_MONITOR, _TEST_MONITOR))
    return path


PLAYBOOK = _test_playbook()
