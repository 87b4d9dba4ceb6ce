"""The real `mlfleet` command line, run as a user runs it: a bad option or input is one line
and exit 2, never a traceback; the global options work after the subcommand too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from tests.paths import REPO

PLAYBOOK = REPO / "playbooks" / "sentiment.yml"
INVENTORY = """\
all:
  children:
    edge:
      hosts:
        edge-cpu: {ansible_host: 127.0.0.1, ansible_port: 1}
        edge-t4: {ansible_host: 127.0.0.1, ansible_port: 1}
"""


def mlfleet(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    argv = [sys.executable, "-m", "mlfleet.controller", "-i", str(inventory), "-p", str(PLAYBOOK),
            "--state", str(tmp_path / "state.db"), *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--max-fail", "abc"], "--max-fail"),
        (["--batch", "0"], "--batch"),
        (["--batch", "1,0"], "--batch"),
        (["--canary", "-1"], "--canary"),
        (["--canary", "some"], "--canary"),
        (["--forks", "0"], "--forks"),
        (["--transfer", "carrier-pigeon"], "--transfer"),
        (["--on-failure", "panic"], "--on-failure"),
        (["--limit", "edge-nope"], "edge-nope"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(tmp_path: Path, args: List[str], said: str) -> None:
    proc = mlfleet(tmp_path, "deploy", "--tag", "v1", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout


def test_a_missing_tag_is_one_line_too(tmp_path: Path) -> None:
    proc = mlfleet(tmp_path, "deploy")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--tag" in proc.stderr


def test_global_options_work_after_the_subcommand(tmp_path: Path) -> None:
    proc = mlfleet(tmp_path, "inventory", "--json", "--limit", "edge-t4")
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)["hosts"]) == ["edge-t4"]
    # The same host set as with --limit before the subcommand.
    before = subprocess.run(
        [sys.executable, "-m", "mlfleet.controller", "-i", str(tmp_path / "hosts.yml"), "--limit", "edge-t4",
         "inventory", "--json"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert json.loads(before.stdout) == json.loads(proc.stdout)


def test_an_unreachable_host_is_reported_not_raised(tmp_path: Path) -> None:
    proc = mlfleet(tmp_path, "status", "--json", "--forks", "2")
    assert proc.returncode == 5, proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]
    assert {h["host"]: h["health"] for h in hosts} == {
        "edge-cpu": "unreachable",
        "edge-t4": "unreachable",
    }
    assert "Traceback" not in proc.stderr
