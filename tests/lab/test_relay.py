"""Images reach a host without a registry route through the controller's SSH relay, and only
the layers it lacks cross its link (counted in the tunnel)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlfleet.controller.lab.images import REPOSITORY
from mlfleet.controller.registry import Registry

PLAYBOOK = Path(__file__).parents[2] / "playbooks" / "sentiment.yml"
SLACK = 64 * 1024  # manifests, config and HTTP/TLS-free protocol bytes


def deploy(lab, state: Path, tag: str, *extra: str) -> dict:
    argv = ["-i", str(lab["inventory"]), "-p", str(PLAYBOOK), "--state", str(state), "--limit", "edge-air,edge-cpu",
            "deploy", "--tag", tag, "--canary", "0", "--batch", "100%", "--json", *extra]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "mlfleet.controller", *argv], capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}


def layer_bytes(lab, tag: str) -> list:
    manifest, _ = Registry(lab["registry"]["address"]).get_manifest(REPOSITORY, f"{tag}-cpu")
    return [layer["size"] for layer in manifest["layers"]]


def test_relay_first_install_then_update_sends_only_missing_layers(agent_hosts, tmp_path):
    lab = agent_hosts
    state = tmp_path / "state.db"
    # auto: edge-cpu reaches the registry and pulls; edge-air cannot and gets the relay.
    first = deploy(lab, state, "v1", "--transfer", "auto")
    assert first["edge-cpu"]["transfer"] == "pull"
    air = first["edge-air"]
    assert air.get("transfer") == "relay" and air["result"] in ("updated", "unchanged"), air
    if air["result"] == "updated":
        whole = sum(layer_bytes(lab, "v1"))
        assert whole * 0.9 <= air["bytes"] <= whole * 1.1 + SLACK, (air["bytes"], whole)
    update = deploy(lab, state, "v3", "--transfer", "auto")["edge-air"]
    assert update["result"] == "updated" and update["variant"] == "cpu", update
    top = layer_bytes(lab, "v3")[-1]
    assert top * 0.9 <= update["bytes"] <= top * 1.1 + SLACK, (update["bytes"], top)
    code = subprocess.run(
        [sys.executable, "-m", "mlfleet.controller", "lab", "--name", "t", "ssh", "edge-air",
         "docker images --format '{{.Repository}}:{{.Tag}}' | grep -c 127.0.0.1 || true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert code.stdout.strip() == "0"  # tagged under its canonical name, the relay's name gone
