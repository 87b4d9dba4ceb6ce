"""A private registry as at a real site (TLS with the lab's own CA, credentials required):
deployments by pull and by relay, the password nowhere but the login it came from, the
opt-in credential store, and bad input refused in one line before any host is touched."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import pytest
import yaml

from mlfleet.controller.lab import lab_registry, registry_tls
from mlfleet.controller.lab.images import push_payload_image
from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.relay_cache import cache_root
from tests.conftest import TEST_LAB
from tests.lab.conftest import agent
from tests.lab.playbooks import PLAYBOOK
from tests.lab.sshrun import ssh
from tests.lab.test_controller import serving

SKIP_DIRS = {"overlay2", "image", "buildkit"}  # image layer contents: the registry's bytes
BIG = 64 << 20


def cli(lab, work: Path, *args: str, inventory: Optional[Path] = None,
        limit: str = "edge-cpu,edge-air") -> subprocess.CompletedProcess:  # fmt: skip
    argv = [sys.executable, "-m", "mlfleet.controller", "-i", str(inventory or lab["inventory"]),
            "-p", str(PLAYBOOK), "--state", str(work / "state.db"), "--limit", limit, *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=900)


def with_vars(lab, work: Path, **group_vars: Any) -> Path:
    """A copy of the lab's inventory with extra variables for every host."""
    doc = yaml.safe_load(Path(lab["inventory"]).read_text())
    doc["all"]["vars"].update(group_vars)
    inventory = work / f"inventory-{len(list(work.glob('inventory-*')))}.yml"
    inventory.write_text(yaml.safe_dump(doc))
    return inventory


def secret_forms(lab) -> List[bytes]:
    """The password as it could leak: itself, in a Basic header or a docker config's
    `auth`, and in the engine's X-Registry-Auth header."""
    cred = lab_registry.credential(lab["registry"])
    assert cred is not None
    pair = f"{cred.username}:{cred.password}".encode()
    return [cred.password.encode(), base64.b64encode(pair), cred.x_registry_auth().encode()]


class Sampler:
    """Every process's arguments and environment, with its cgroup (a container's processes
    are told apart by it), sampled while a deployment runs."""

    def __init__(self) -> None:
        self.samples: List[Tuple[str, bytes]] = []  # (cgroup, cmdline or environ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def seen(self) -> List[bytes]:
        return [data for _, data in self.samples]

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cgroup = Path(f"/proc/{pid}/cgroup").read_text()
                    for part in ("cmdline", "environ"):
                        self.samples.append((cgroup, Path(f"/proc/{pid}/{part}").read_bytes()))
                except OSError:
                    pass
            self._stop.wait(0.2)


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    if path.is_file() and not path.is_symlink() and path.stat().st_size < BIG:
                        yield path
                except OSError:
                    continue


def test_a_deployment_by_pull_and_by_relay_leaves_the_password_nowhere(agent_hosts, tmp_path):
    """edge-cpu pulls from the TLS registry with the credential its apply got on stdin;
    edge-air, which cannot reach it, pulls through the controller's relay cache, which the
    controller filled with the credential. Then every file the lab and mlfleet wrote, the state DB,
    the JSON output and every process's arguments and environment seen meanwhile are
    searched for the password in every form it could take."""
    lab = agent_hosts
    cpu, air = lab["hosts_by_name"]["edge-cpu"], lab["hosts_by_name"]["edge-air"]
    busy = {serving(cpu), serving(air)}
    tag = next(t for t in ("v1", "v2", "v3") if not any(s and s.startswith(t) for s in busy))
    ssh(cpu, f"docker rmi -f $(docker images -q '*/*/sentiment:{tag}-*') 2>/dev/null")
    with Sampler() as sampled:
        proc = cli(lab, tmp_path, "deploy", "--tag", tag, "--transfer", "auto",
                   "--canary", "0", "--batch", "100%", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    hosts = {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}
    assert (hosts["edge-cpu"]["transfer"], hosts["edge-air"]["transfer"]) == ("pull", "relay")
    assert serving(cpu) == f"{tag}/cpu" and serving(air) == f"{tag}/cpu"
    assert hosts["edge-cpu"]["bytes"] > 0  # it did pull, with the credential

    layout = LabLayout.named(TEST_LAB)
    login = Path(lab["registry"]["docker_config"])  # where the credential lives, by design
    forms = secret_forms(lab)
    leaks = []
    scanned = 0
    for path in files_under(layout.base, layout.run, cache_root(), tmp_path):
        if path == login:
            continue
        try:
            data = path.read_bytes()
        except OSError:  # a host's namespace handle (/run/.../uts): no file content
            continue
        scanned += 1
        leaks += [f"{path} ({i})" for i, form in enumerate(forms) if form in data]
    for i, text in enumerate([proc.stdout.encode(), proc.stderr.encode(), *sampled.seen]):
        leaks += [f"process sample {i} ({j})" for j, form in enumerate(forms) if form in text]
    assert scanned > 100 and len(sampled.seen) > 100
    assert leaks == []
    assert stat.S_IMODE(login.stat().st_mode) == 0o600


def test_the_opt_in_store_lets_a_host_pull_again_alone(agent_hosts, tmp_path):
    """With mlfleet_store_pull_credentials the credential is kept on the host (0600) and its
    agent pulls a lost image again with no controller and no login; without it, a later
    deployment takes it away again."""
    lab = agent_hosts
    host = lab["hosts_by_name"]["edge-4090"]
    store = Path(host["agent_dir"]) / "registry-credentials.json"
    kept = with_vars(lab, tmp_path, mlfleet_store_pull_credentials=True)
    busy = serving(host) or ""
    tag = "v2" if not busy.startswith("v2") else "v3"
    proc = cli(lab, tmp_path, "deploy", "--tag", tag, inventory=kept, limit="edge-4090")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    ssh(host, "docker rm -f $(docker ps -aq --filter label=io.mlfleet.app=sentiment) >/dev/null;"
              " docker rmi -f $(docker images -q '*/*/sentiment:*') >/dev/null")  # fmt: skip
    assert serving(host) is None
    code, out, err = agent(host, "tick --json")
    assert code == 0, err
    assert serving(host) == f"{tag}/cpu", out
    again = "v1" if tag != "v1" else "v3"
    proc = cli(lab, tmp_path, "deploy", "--tag", again, limit="edge-4090")  # no opt-in
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not store.exists()


@pytest.mark.parametrize("case", ["wrong password", "unknown CA", "registry down", "no login"])
def test_bad_registry_input_is_one_line_exit_7_and_no_host_touched(agent_hosts, tmp_path, case):
    lab = agent_hosts
    before = {n: serving(lab["hosts_by_name"][n]) for n in ("edge-cpu", "edge-air")}
    address = lab["registry"]["address"]
    if case == "wrong password":
        wrong = tmp_path / "wrong.json"
        wrong.write_text(json.dumps(registry_tls.docker_config(address, "mlfleet", "not-it")))
        inventory = with_vars(lab, tmp_path, mlfleet_registry_auth_file=str(wrong))
        said = f"registry {address} refused the credentials for mlfleet"
    elif case == "unknown CA":
        (tmp_path / "ca").mkdir()
        other = registry_tls.make_ca(tmp_path / "ca", "not the lab's CA")
        inventory = with_vars(lab, tmp_path, mlfleet_registry_ca=str(other))
        said = "its TLS certificate is not trusted"
    elif case == "registry down":
        inventory = with_vars(lab, tmp_path, mlfleet_registry=address.replace(":5000", ":5999"))
        said = "unreachable"
    else:
        empty = tmp_path / "empty.json"
        empty.write_text("{}")
        inventory = with_vars(lab, tmp_path, mlfleet_registry_auth_file=str(empty))
        said = f"registry {address} needs credentials"
    proc = cli(lab, tmp_path, "deploy", "--tag", "v2", inventory=inventory)
    assert proc.returncode == 7, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and said in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "not-it" not in proc.stderr
    if case == "unknown CA":
        assert "mlfleet_registry_ca" in lines[0]
    time.sleep(0.5)
    assert {n: serving(lab["hosts_by_name"][n]) for n in before} == before


def test_a_login_revoked_mid_rollout_fails_the_hosts_not_yet_updated(agent_hosts, tmp_path):
    """The registry revokes the controller's login while the canary is in its monitor
    window (a token revoked or expired mid-rollout): the canary stays on the new release,
    healthy; the next wave's host fails its preflight with the registry's refusal, before
    touching anything, and goes on serving what it served."""
    lab = agent_hosts
    names = ("edge-cpu", "edge-4090")
    before = {n: serving(lab["hosts_by_name"][n]) for n in names}
    # A tag no host has pulled yet (a host holding the image by its digest needs no registry).
    tag = f"revoked{time.monotonic_ns() % 10**6}"
    push_payload_image(lab_registry.client(lab["registry"]), LabLayout(TEST_LAB).cache, tag, 1)
    argv = [sys.executable, "-m", "mlfleet.controller", "-i", str(lab["inventory"]),
            "-p", str(PLAYBOOK), "--state", str(tmp_path / "state.db"), "--limit",
            ",".join(names), "deploy", "--tag", tag, "--canary", "1", "--batch", "100%",
            "--json"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    said: List[str] = []
    canary = ""
    try:
        for line in proc.stderr:
            said.append(line)
            words = line.lstrip("· ")
            if words.startswith("canary:") and not canary:
                canary = words.split(":", 1)[1].strip()
            if canary and canary in line and "started" in line:  # its monitor window runs
                lab_registry.revoke_login(LabLayout(TEST_LAB), True)
                break
        out, rest = proc.communicate(timeout=900)
    finally:
        lab_registry.revoke_login(LabLayout(TEST_LAB), False)
    said.append(rest)
    assert canary in names and proc.returncode == 1, "".join(said)[-3000:]
    later = next(n for n in names if n != canary)
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert hosts[canary]["result"] == "updated", hosts[canary]
    assert (serving(lab["hosts_by_name"][canary]) or "").startswith(tag + "/")
    assert hosts[later]["result"] == "failed", hosts[later]
    refusal = f"refused the credentials for {lab_registry.USER}"
    assert refusal in hosts[later]["reason"], hosts[later]
    assert serving(lab["hosts_by_name"][later]) == before[later]
    assert "Traceback" not in "".join(said)
