"""The fleet lock holds across controllers: two operators with two state DBs (two laptops)
deploying to the same hosts at once. The lock is kept on the hosts, so the second one is
refused with the first one's name, touches nothing, and `mlfleet lock status` (from either
controller) shows who holds it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

from tests.lab.playbooks import PLAYBOOK
from tests.lab.test_controller import serving

HOSTS = "edge-cpu,edge-4090"


def argv(lab, state: Path, *args: str, limit: str = HOSTS) -> List[str]:
    return [sys.executable, "-m", "mlfleet.controller", "-i", str(lab["inventory"]),
            "-p", str(PLAYBOOK), "--state", str(state), "--limit", limit, *args]  # fmt: skip


def test_a_second_controller_is_refused_with_the_holders_name(agent_hosts, tmp_path):
    lab = agent_hosts
    names = HOSTS.split(",")
    before = {n: serving(lab["hosts_by_name"][n]) for n in names}
    tag = next(t for t in ("v1", "v2", "v3")
               if not any((b or "").startswith(t + "/") for b in before.values()))  # fmt: skip
    first = subprocess.Popen(
        argv(lab, tmp_path / "laptop-a.db", "deploy", "--tag", tag, "--canary", "1", "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert first.stderr is not None
    said: List[str] = []
    for line in first.stderr:  # the lock is taken before the canary starts
        said.append(line)
        if "canary:" in line:
            break
    second = subprocess.run(
        argv(lab, tmp_path / "laptop-b.db", "deploy", "--tag", "v3", "--limit", "edge-4090"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    shown = subprocess.run(argv(lab, tmp_path / "laptop-b.db", "lock", "status", "--json"),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    _, rest = first.communicate(timeout=900)
    said.append(rest)
    # The second: one line, exit 4, the holder named; nothing of its own touched.
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert second.returncode == 4, second.stderr
    assert len(lines) == 1 and "the fleet lock on edge-4090 is held by " in lines[0], lines
    assert f"deploy sentiment {tag}" in lines[0] and "Traceback" not in second.stderr
    # `lock status` from the other laptop read it from the hosts.
    assert shown.returncode == 0, shown.stderr
    held = json.loads(shown.stdout)["hosts"]
    assert {h["host"] for h in held if h["holder"]} == set(names), held
    assert {h["holder"]["reason"] for h in held if h["holder"]} == {f"deploy sentiment {tag}"}
    # The first finished its deployment and gave the lock back.
    assert first.returncode == 0, "".join(said)[-3000:]
    assert all((serving(lab["hosts_by_name"][n]) or "").startswith(tag + "/") for n in names)
    free = subprocess.run(argv(lab, tmp_path / "laptop-b.db", "lock", "status", "--json"),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert not [h for h in json.loads(free.stdout)["hosts"] if h["holder"]], free.stdout
