"""A secret in a model's env (an inventory variable filled into the playbook's
`container.env`) reaches the model and nothing else mlfleet keeps: not the agent's state
or files on the host (its directory is private), not the controller's state DB or output,
not a process's arguments. What is left is the engine's own records of the container in
its data and exec roots (`docker inspect` shows env; it is how a removed container gets
its env back)."""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from mlfleet.controller.lab.layout import LabLayout
from tests.conftest import TEST_LAB
from tests.lab.playbooks import PLAYBOOK
from tests.lab.sshrun import ssh
from tests.lab.test_controller import serving
from tests.lab.test_private_registry import Sampler, files_under

HOST = "edge-cpu"
# The engine's data and exec roots (dockerd's and containerd's records of each container,
# its env included: `docker inspect` reads them back). Not mlfleet's to keep or to clean.
ENGINE_OWN = {"docker", "containerd", "moby"}


def test_a_secret_env_value_is_kept_nowhere_but_in_the_container(agent_hosts, tmp_path):
    lab = agent_hosts
    secret = "s3cr3t-" + secrets.token_hex(12)
    doc = yaml.safe_load(Path(lab["inventory"]).read_text())
    doc["all"]["vars"]["model_api_token"] = secret
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(doc))
    text = PLAYBOOK.read_text()
    assert "\ncontainer:\n" in text
    playbook = tmp_path / "secret.yml"
    playbook.write_text(
        text.replace(
            "\ncontainer:\n", '\ncontainer:\n  env: {API_TOKEN: "{{ model_api_token }}"}\n', 1
        )
    )
    state = tmp_path / "state.db"
    host = lab["hosts_by_name"][HOST]
    tag = "v1" if not (serving(host) or "").startswith("v1/") else "v2"
    with Sampler() as sampled:
        proc = subprocess.run(
            [sys.executable, "-m", "mlfleet.controller", "-i", str(inventory), "-p", str(playbook),
             "--state", str(state), "--limit", HOST, "deploy", "--tag", tag, "--json"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (serving(host) or "").startswith(tag + "/")
    # The model has it: the one place it belongs.
    code, cid, err = ssh(host, "docker ps -q --no-trunc --filter label=io.mlfleet.app=sentiment")
    cid = cid.strip()
    assert code == 0 and len(cid) == 64, (cid, err)
    code, out, err = ssh(host, f"docker exec {cid} printenv API_TOKEN")
    assert code == 0 and out.strip() == secret, (out, err)
    # The agent's directory is private.
    agent_dir = Path(host["agent_dir"])
    assert stat.S_IMODE(agent_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((agent_dir / "state.db").stat().st_mode) == 0o600
    layout = LabLayout.named(TEST_LAB)
    leaks, scanned = [], 0
    for path in files_under(layout.base, layout.run, tmp_path):
        if path in (inventory, playbook) or ENGINE_OWN & set(path.parts):
            continue  # the operator's own files; the engine's records of the container
        try:
            data = path.read_bytes()
        except OSError:
            continue
        scanned += 1
        if secret.encode() in data:
            leaks.append(str(path))
    if secret in proc.stdout + proc.stderr:
        leaks.append("the deployment's output")
    model = [data for cgroup, data in sampled.samples if cid in cgroup]
    others = [data for cgroup, data in sampled.samples if cid not in cgroup]
    leaks += [f"process sample {i}" for i, data in enumerate(others) if secret.encode() in data]
    assert any(secret.encode() in data for data in model)  # the sampler did see the model
    assert len(others) > 100
    assert scanned > 100 and leaks == []
    # History and status say what ran, never the value.
    shown = subprocess.run(
        [sys.executable, "-m", "mlfleet.controller", "-i", str(inventory), "-p", str(playbook),
         "--state", str(state), "--limit", HOST, "history", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0 and secret not in shown.stdout
    assert json.loads(proc.stdout)["hosts"][0]["result"] == "updated"
