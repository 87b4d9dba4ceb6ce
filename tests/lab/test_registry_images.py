"""What a real registry's tags do to a deployment: a tag pushed again is deployed by its new
digest (and rolled back to the old bits), a multi-platform tag serves the host's own
platform, and an index without the host's platform is refused naming what it has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

from mlfleet.controller.lab import lab_registry
from mlfleet.controller.lab.images import push_index_image
from tests.lab.playbooks import PLAYBOOK
from tests.lab.sshrun import ssh


def cli(lab, state: Path, *args: str, limit: str = "edge-cpu") -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "mlfleet.controller", "-i", str(lab["inventory"]),
            "-p", str(PLAYBOOK), "--state", str(state), "--limit", limit, *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=900)


def deploy(lab, state: Path, tag: str) -> Dict[str, dict]:
    proc = cli(lab, state, "deploy", "--tag", tag, "--canary", "0", "--batch", "100%", "--json")
    assert proc.stdout.strip(), proc.stderr[-2000:]
    return {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}


def serving(host) -> Optional[str]:
    """The tag the model server's image was built as, asked on the host's port 8080."""
    code, out, _ = ssh(host, "curl -sf -m 5 http://127.0.0.1:8080/version")
    return json.loads(out)["tag"] if code == 0 else None


def test_a_tag_pushed_again_is_deployed_by_its_new_digest_and_rolled_back_to_the_old(
    agent_hosts, tmp_path
):
    lab = agent_hosts
    host = lab["hosts_by_name"]["edge-cpu"]
    registry = lab_registry.client(lab["registry"])
    state = tmp_path / "state.db"
    first = push_index_image(registry, "moving", ("amd64",), source_tag="v1")[0]
    result = deploy(lab, state, "moving")["edge-cpu"]
    assert result["result"] == "updated" and result["digest"].endswith(f"@{first}"), result
    assert serving(host) == "v1"
    # Someone pushes the same tag again, with other bits (here: the v2 server).
    second = push_index_image(registry, "moving", ("amd64",), source_tag="v2")[0]
    assert second != first
    result = deploy(lab, state, "moving")["edge-cpu"]
    assert result["result"] == "updated" and result["digest"].endswith(f"@{second}"), result
    assert serving(host) == "v2"
    back = cli(lab, state, "rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert serving(host) == "v1"  # the old bits, though the tag names the new ones


def test_a_multi_platform_tag_serves_the_hosts_platform_and_one_without_it_is_refused(
    agent_hosts, tmp_path
):
    lab = agent_hosts
    host = lab["hosts_by_name"]["edge-cpu"]
    registry = lab_registry.client(lab["registry"])
    state = tmp_path / "state.db"
    index = push_index_image(registry, "multi", ("arm64", "amd64"), source_tag="v1")[0]
    result = deploy(lab, state, "multi")["edge-cpu"]
    assert result["result"] in ("updated", "unchanged") and result["digest"].endswith(f"@{index}")
    _, arch, _ = ssh(host, "docker image inspect -f '{{.Architecture}}' " + result["image"])
    assert arch.strip() == "amd64" and serving(host) == "v1"

    push_index_image(registry, "armonly", ("arm64",), source_tag="v1")
    # No stored facts: the host's agent refuses in preflight, before touching what serves.
    refused = deploy(lab, state, "armonly")["edge-cpu"]
    assert refused["result"] == "failed", refused
    assert "has no linux/amd64 image (it has linux/arm64/v8)" in refused["reason"], refused
    assert serving(host) == "v1"
    # With stored facts the controller refuses before any host is touched, in one line.
    assert cli(lab, state, "facts").returncode == 0
    proc = cli(lab, state, "deploy", "--tag", "armonly", "--canary", "0")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(line) == 1 and "has no linux/amd64 image (it has linux/arm64/v8)" in line[0], line
    assert "needed by edge-cpu" in line[0] and serving(host) == "v1"
