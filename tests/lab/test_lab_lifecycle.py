"""`lab up` is idempotent and repairs a crashed run; `lab down` leaves nothing behind.

Uses its own small lab instance (name "lc", subnet 10.78.0.0/24) beside the shared one."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.lab.processes import alive
from tests.conftest import mlfleet
from tests.lab.leftovers import what_remains

NAME = "lc"
PROFILES = """\
subnet: 10.78.0.0/24
hosts:
  box: {docker_disk_mib: 200}
  bare: {engine: false}
"""


def status() -> dict:
    return json.loads(mlfleet("lab", "--name", NAME, "status", "--json").stdout)


def pids() -> dict:
    """Each host's daemon pids, from the lab's state file."""
    state = json.loads(LabLayout(NAME).state_file.read_text())
    return {h["name"]: dict(h["pids"]) for h in state["hosts"]}


def test_up_is_idempotent_repairs_a_crash_and_down_leaves_nothing(tmp_path: Path):
    layout = LabLayout(NAME)
    profiles = tmp_path / "profiles.yml"
    profiles.write_text(PROFILES)
    inventory = tmp_path / "inventory.yml"
    up = ("lab", "--name", NAME, "up", "--profiles", str(profiles), "--inventory", str(inventory))
    try:
        mlfleet(*up)
        first = pids()
        assert all(alive(p) for host in first.values() for p in host.values())
        assert inventory.exists() and "10.78.0.2" in inventory.read_text()

        # Up again with everything healthy: nothing is restarted.
        again = mlfleet(*up)
        assert "already up" in again.stderr
        assert pids() == first

        # A crash: the engine and sshd of one host die hard. `up` repairs the lab.
        os.kill(first["box"]["dockerd"], signal.SIGKILL)
        os.kill(first["box"]["sshd"], signal.SIGKILL)
        assert not all(status()["hosts"][0]["running"].values())
        mlfleet(*up)
        repaired = status()
        assert all(all(h["running"].values()) for h in repaired["hosts"])
    finally:
        mlfleet("lab", "--name", NAME, "down", check=False)

    assert what_remains(layout) == []
    gone = mlfleet("lab", "--name", NAME, "status", check=False)
    assert gone.returncode == 3 and "is not up" in gone.stderr


def test_status_of_a_lab_that_is_not_up_is_one_line():
    result = mlfleet("lab", "--name", "absent", "status", "--json", check=False)
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0 and "mlfleet lab up" in result.stderr


@pytest.mark.parametrize("bad", ["Bad", "toolongname", "x-y"])
def test_bad_lab_names_are_refused(bad: str):
    result = mlfleet("lab", "--name", bad, "status", check=False)
    assert result.returncode == 2 and "lab name" in result.stderr
