"""Shared fixtures. Lab tests (marker `lab`) share one lab per test session: brought up
once through the real CLI, torn down at the end, also when tests fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

# The session lab uses its own name and subnet, so a developer's own `mlfleet lab up`
# (name "lab", 10.77.0.0/24) can stay up while the suite runs.
TEST_LAB = "t"
TEST_SUBNET = "10.79.0.0/24"
LAB_TESTS = Path(__file__).resolve().parent / "lab"


def mlfleet(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real `mlfleet` CLI (the one a user runs)."""
    result = subprocess.run(
        [sys.executable, "-m", "mlfleet.controller", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"mlfleet {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def lab_profiles_text() -> str:
    from mlfleet.controller.lab.profiles import DEFAULT_PROFILES_YAML

    # The default five, plus hosts for the per-host options.
    return (
        f"subnet: {TEST_SUBNET}\n"
        + DEFAULT_PROFILES_YAML
        + "  edge-air: {registry: false, docker_disk_mib: 400, link_kbit: 40000}\n"
        + "  edge-disk: {docker_disk_mib: 700}\n"
        + "  ssh[1:2]: {engine: false}\n"
    )


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root; run the README's test command as root (or -m 'not lab')")
    work = tmp_path_factory.mktemp("lab")
    profiles = work / "profiles.yml"
    profiles.write_text(lab_profiles_text())
    inventory = work / "inventory.yml"
    try:
        mlfleet(
            "lab",
            "--name",
            TEST_LAB,
            "up",
            "--profiles",
            str(profiles),
            "--inventory",
            str(inventory),
        )
        status = json.loads(mlfleet("lab", "--name", TEST_LAB, "status", "--json").stdout)
        status["inventory"] = inventory
        status["hosts_by_name"] = {h["name"]: h for h in status["hosts"]}
        yield status
    finally:
        from mlfleet.controller.lab.layout import LabLayout
        from tests.lab.leftovers import what_remains

        mlfleet("lab", "--name", TEST_LAB, "down", check=False)
        remains = what_remains(LabLayout(TEST_LAB))
        assert remains == [], f"`lab down` left: {remains}"


def pytest_collection_modifyitems(items: list) -> None:
    # Lab tests live under tests/lab/; mark them so `-m "not lab"` runs the rest alone.
    for item in items:
        if Path(str(item.fspath)).parent == LAB_TESTS:  # not tests/unit/controller/lab
            item.add_marker(pytest.mark.lab)
