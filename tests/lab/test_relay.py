"""Images reach a host without a registry route through the controller's SSH relay, and only
the layers it lacks cross its link (counted in the tunnel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import yaml

from mlfleet.controller.lab import lab_registry
from mlfleet.controller.lab.images import REPOSITORY, push_payload_image
from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.lab.processes import pids_mentioning
from mlfleet.controller.state import ControllerState
from tests.conftest import TEST_LAB, mlfleet
from tests.lab.playbooks import PLAYBOOK

SLACK = 64 * 1024  # manifests, config and HTTP/TLS-free protocol bytes


def deploy_argv(lab, state: Path, tag: str, *extra: str, limit: str = "edge-air,edge-cpu",
                inventory: Optional[Path] = None) -> list:  # fmt: skip
    return [sys.executable, "-m", "mlfleet.controller", "-i", str(inventory or lab["inventory"]), "-p", str(PLAYBOOK),
            "--state", str(state), "--limit", limit,
            "deploy", "--tag", tag, "--canary", "0", "--batch", "100%", "--json", *extra]  # fmt: skip


def deploy(lab, state: Path, tag: str, *extra: str, env: Optional[dict] = None, **options) -> dict:
    argv = deploy_argv(lab, state, tag, *extra, **options)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}


def layer_bytes(lab, tag: str) -> list:
    found = lab_registry.client(lab["registry"]).get_manifest(REPOSITORY, f"{tag}-cpu")
    assert found is not None, f"the lab registry has no {tag}-cpu"
    manifest, _ = found
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
    recorded = ControllerState(state).host_results(host="edge-air")[0]  # newest first
    assert (recorded["bytes"], recorded["transfer"]) == (update["bytes"], "relay")
    code = subprocess.run(
        [sys.executable, "-m", "mlfleet.controller", "lab", "--name", "t", "ssh", "edge-air",
         "docker images --format '{{.Repository}}:{{.Tag}}' | grep -c 127.0.0.1 || true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert code.stdout.strip() == "0"  # tagged under its canonical name, the relay's name gone


def with_host_vars(lab, tmp_path: Path, host: str, **hostvars) -> Path:
    """A copy of the lab's inventory with extra variables for one host (in host_vars/)."""
    inventory = tmp_path / "inventory.yml"
    shutil.copy(lab["inventory"], inventory)
    (tmp_path / "host_vars").mkdir(exist_ok=True)
    (tmp_path / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(hostvars))
    return inventory


def payload_image(lab, tag: str, mib: int) -> list:
    registry = lab_registry.client(lab["registry"])
    return push_payload_image(registry, LabLayout(TEST_LAB).cache, tag, mib)


def serving_inside(name: str) -> Optional[str]:
    """The tag that answers on the host's port 8080, asked from inside the host's own network
    namespace (so it is seen while the host's link is cut)."""
    proc = subprocess.run(
        ["nsenter", f"--net=/run/netns/{LabLayout(TEST_LAB).netns(name)}",
         "curl", "-sf", "-m", "5", "http://127.0.0.1:8080/version"],
        capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(proc.stdout)["tag"] if proc.returncode == 0 else None


def test_bandwidth_cap_paces_the_relay_and_only_this_deployments_pulls_pass(agent_hosts, tmp_path):
    """A capped relay paces the layer; while its tunnel is open, anyone on the host tries
    the registry's write and listing API through it: refused by the relay (403, never
    reaching the registry), and the deployment goes on and says so."""
    lab = agent_hosts
    state = tmp_path / "state.db"
    assert deploy(lab, state, "v1", "--transfer", "relay", limit="edge-air")["edge-air"]["result"] in (
        "updated", "unchanged")  # fmt: skip
    layers = payload_image(lab, "capped", 4)
    kbit = 4000
    inventory = with_host_vars(lab, tmp_path, "edge-air", mlfleet_bwlimit_kbit=kbit)
    argv = deploy_argv(lab, state, "capped", "--transfer", "relay", limit="edge-air",
                       inventory=inventory)  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    said: list = []
    port = None
    for line in proc.stderr:
        said.append(line)
        if "relay: the host pulls through 127.0.0.1:" in line:
            port = int(line.rsplit("127.0.0.1:", 1)[1].split()[0])
            break
    assert port, "".join(said)
    netns = ["nsenter", f"--net=/run/netns/{LabLayout(TEST_LAB).netns('edge-air')}"]
    base = f"http://127.0.0.1:{port}/v2"
    code = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
    tries = {
        "catalog": [*code, f"{base}/_catalog"],
        "upload": [*code, "-X", "POST", f"{base}/{REPOSITORY}/blobs/uploads/"],
        "delete": [*code, "-X", "DELETE", f"{base}/{REPOSITORY}/manifests/capped-cpu"],
        "other repository": [*code, f"{base}/someone/else/manifests/latest"],
        "another tag": [*code, f"{base}/{REPOSITORY}/manifests/v1-cpu"],
    }
    codes = {what: subprocess.run([*netns, *cmd], capture_output=True, text=True, timeout=30).stdout
             for what, cmd in tries.items()}  # fmt: skip
    out, rest = proc.communicate(timeout=600)
    said.append(rest)
    assert codes == {what: "403" for what in tries}, codes
    air = {h["host"]: h for h in json.loads(out)["hosts"]}["edge-air"]
    assert air["result"] == "updated", (air, "".join(said)[-2000:])
    assert any("relay: refused 5 request(s)" in line for line in said), "".join(said)[-2000:]
    missing = layers[2].size + layers[3].size
    assert missing * 0.9 <= air["bytes"] <= missing * 1.1 + SLACK, (air["bytes"], missing)
    # The cap is a floor on the transfer time: the bytes cannot have crossed faster.
    at_cap = air["bytes"] * 8 / (kbit * 1000)
    assert air["timings"]["preflight_s"] >= 0.8 * at_cap, (air["timings"], at_cap)


def test_link_cut_during_a_large_layer_old_release_serves_throughout(agent_hosts, tmp_path):
    lab = agent_hosts
    state = tmp_path / "state.db"
    assert deploy(lab, state, "v1", "--transfer", "relay", limit="edge-air")["edge-air"]["result"] in (
        "updated", "unchanged")  # fmt: skip
    assert serving_inside("edge-air") == "v1"
    layers = payload_image(lab, "cut", 24)
    # 2 MB/s through the relay: the 24 MiB layer takes ~12 s, the link goes down at 3 s for 6 s.
    inventory = with_host_vars(lab, tmp_path, "edge-air", mlfleet_bwlimit_kbit=16000)
    argv = deploy_argv(
        lab, state, "cut", "--transfer", "relay", limit="edge-air", inventory=inventory
    )
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list = []
    stderr = proc.stderr  # a local: the narrowing below holds inside the lambda
    assert stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
    reader.start()
    seen: list = []  # (when the probe started, the tag answering or None)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            started = time.monotonic()
            seen.append((started, serving_inside("edge-air")))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 60
        while not any("relay:" in line for line in list(lines)):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.1)
        time.sleep(3)
        cut = time.monotonic()
        mlfleet("lab", "--name", TEST_LAB, "link", "edge-air", "down")
        time.sleep(6)
    finally:
        mlfleet("lab", "--name", TEST_LAB, "link", "edge-air", "up")
    restored = time.monotonic()
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=600)
    done.set()
    watcher.join()
    reader.join(timeout=5)
    air = {h["host"]: h for h in json.loads(out)["hosts"]}["edge-air"]
    # v1 answered from the start, through the cut, until the link was back (the layer was
    # still crossing then); afterwards only ever v1, then the stop-first gap, then the new
    # release: never v1 again once replaced, never a half-pulled release.
    before = [tag for t, tag in seen if t <= restored]
    assert [t for t, _ in seen if cut <= t <= restored] and set(before) == {"v1"}, seen
    rank = {"v1": 0, None: 1, "cut": 2}
    after = [rank[tag] for t, tag in seen if t > restored]
    assert after == sorted(after), seen
    if air["result"] == "updated":
        # Completed after the link came back: the whole image, verified, serving.
        found = lab_registry.client(lab["registry"]).get_manifest(REPOSITORY, "cut-cpu")
        assert found is not None, "the lab registry has no cut-cpu"
        _, digest = found
        assert air["digest"] == f"{air['image'].rsplit(':', 1)[0]}@{digest}", air
        assert serving_inside("edge-air") == "cut"
        # Only what the host lacked crossed (the 60 MB base it holds was not sent again);
        # a layer cut half-way may be fetched again, at most once more.
        missing = layers[2].size + layers[3].size
        assert missing * 0.9 <= air["bytes"] <= 2 * missing + SLACK, (air["bytes"], missing)
    else:
        assert air["result"] == "failed" and air["reason"], air
        assert serving_inside("edge-air") == "v1"


def test_relay_through_the_controllers_pull_through_cache(agent_hosts, tmp_path):
    lab = agent_hosts
    state = tmp_path / "state.db"
    layers = payload_image(lab, "cached", 2)
    inventory = with_host_vars(lab, tmp_path, "edge-air", mlfleet_relay_registry="cache")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = deploy(
        lab, state, "cached", "--transfer", "relay", limit="edge-air", inventory=inventory, env=env
    )
    air = result["edge-air"]
    assert air["result"] == "updated", air
    assert serving_inside("edge-air") == "cached"
    missing = layers[2].size + layers[3].size
    assert missing * 0.9 <= air["bytes"] <= missing * 1.1 + SLACK, (air["bytes"], missing)
    # The layers came through the cache mlfleet ran (it keeps them for the next host) ...
    blobs = list(
        (tmp_path / "cache" / "mlfleet" / "relay").glob(
            "*/data/docker/registry/v2/blobs/sha256/*/*"
        )
    )
    assert layers[2].digest.split(":")[1] in {b.name for b in blobs}, blobs
    # ... and the cache stopped with the deployment.
    assert not pids_mentioning([str(tmp_path / "cache")])


def test_relay_refuses_layers_the_disk_cannot_hold_before_sending_them(agent_hosts, tmp_path):
    lab = agent_hosts
    state = tmp_path / "state.db"
    assert deploy(lab, state, "v1", "--transfer", "relay", limit="edge-air")["edge-air"]["result"] in (
        "updated", "unchanged")  # fmt: skip
    # edge-air's engine has a 400 MiB disk: a 140 MiB layer needs more once unpacked.
    layers = payload_image(lab, "huge", 140)
    air = deploy(lab, state, "huge", "--transfer", "relay", limit="edge-air")["edge-air"]
    assert air["result"] == "failed", air
    assert (
        "not enough disk" in air["reason"]
        and f"{(layers[2].size + layers[3].size) / 1048576:.1f} MiB" in air["reason"]
    ), air
    assert air["bytes"] < SLACK, air  # the manifest and config crossed, no layer
    assert serving_inside("edge-air") == "v1"
