"""Stopping the lab's processes: a shutdown's SIGTERM, then SIGKILL for what ignores it."""

from __future__ import annotations

import subprocess
import time

from mlfleet.controller.lab.processes import alive, terminate_all


def test_terminate_all_kills_what_ignores_sigterm_after_the_grace_period():
    polite = subprocess.Popen(["sleep", "30"])
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    time.sleep(0.2)  # let the shell set its trap
    started = time.monotonic()
    terminate_all([polite.pid, stubborn.pid], grace=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert not alive(polite.pid) and not alive(stubborn.pid)


def test_terminate_all_returns_as_soon_as_all_are_gone():
    child = subprocess.Popen(["sleep", "30"])
    started = time.monotonic()
    terminate_all([child.pid], grace=10)
    assert time.monotonic() - started < 2 and not alive(child.pid)
