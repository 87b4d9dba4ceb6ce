"""The lab refuses to start where it cannot run, with one line saying what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_missing_programs_or_root_stop_lab_up_in_one_line(tmp_path: Path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "mlfleet.controller", "lab", "--name", "nopkg", "up",
         "--inventory", str(tmp_path / "inv.yml")],
        capture_output=True, text=True, env={**os.environ, "PATH": str(empty)},
    )  # fmt: skip
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    if os.geteuid() == 0:
        assert "missing system packages:" in lines[0] and "apt-get install -y" in lines[0]
        assert "docker-registry" in lines[0]
    else:
        assert "needs root" in lines[0]
    assert not (tmp_path / "inv.yml").exists()
    assert not Path("/var/lib/mlfleet-lab/nopkg").exists()
