"""The benchmark's labs: bring them up and down through the CLI, write the inventory every
tool reads, put every host back to a known state between runs, and see what each serves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from mlfleet.controller.lab.images import REPOSITORY
from mlfleet.controller.lab.profiles import DEFAULT_PROFILES_YAML
from peers.measure import BenchError, spread

MLFLEET = [sys.executable, "-m", "mlfleet.controller"]


@dataclass(frozen=True)
class Lab:
    name: str
    subnet: str
    profiles: str  # profiles YAML text, without the subnet

    def cli(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        proc = subprocess.run([*MLFLEET, "lab", "--name", self.name, *args],
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if proc.returncode != 0:
            raise BenchError(
                f"lab {self.name}: `lab {args[0]}` failed: {proc.stderr.strip()[-800:]}"
            )
        return proc

    def up(self, workdir: Path) -> Path:
        """Bring the lab up; returns the inventory it wrote."""
        profiles = workdir / f"{self.name}-profiles.yml"
        # An open registry: the peers' playbooks carry no registry login, and the cost of
        # TLS and credentials is measured on its own (bench/registry_auth.py).
        profiles.write_text(f"subnet: {self.subnet}\nregistry: open\n{self.profiles}")
        inventory = workdir / f"{self.name}-lab.yml"
        self.cli("up", "--profiles", str(profiles), "--inventory", str(inventory))
        return inventory

    def down(self) -> None:
        self.cli("down")

    def status(self) -> Dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)


def cpu_lab(name: str, subnet: str, hosts: int, engine: bool = True) -> Lab:
    # SSH-only hosts run no cron daemon: the agents' minute ticks that mlfleet installs
    # there would otherwise load the cores every tool shares here (on a real fleet they run
    # on the hosts' own CPUs; their cost is in the agent footprint).
    body = "{}" if engine else "{engine: false, cron: false}"
    width = max(2, len(str(hosts)))
    return Lab(name, subnet, f"hosts:\n  cpu[{1:0{width}d}:{hosts:0{width}d}]: {body}\n")


def default_lab(name: str, subnet: str) -> Lab:
    return Lab(name, subnet, DEFAULT_PROFILES_YAML)


def bench_inventory(lab_inventory: Path, out: Path) -> Path:
    """The lab's inventory plus what Ansible needs that mlfleet reads elsewhere: strict
    host-key checking against the lab's known_hosts, and a host Python that has `requests`
    for community.docker (the lab hosts share this machine's files, so this venv's Python
    is on every host). mlfleet's agent runs on the same interpreter (it reads
    ansible_python_interpreter), so no tool pays for a slower Python than another."""
    doc = yaml.safe_load(lab_inventory.read_text())
    top = doc["all"]["vars"]
    top["ansible_python_interpreter"] = os.path.normpath(os.path.abspath(sys.executable))
    top["ansible_ssh_common_args"] = (
        f"-o UserKnownHostsFile={top['mlfleet_known_hosts']} "
        "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes"
    )
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _docker(host: Dict[str, Any], *args: str) -> str:
    proc = subprocess.run(["docker", "-H", host["docker_host"], *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    if proc.returncode != 0:
        raise BenchError(f"{host['name']}: docker {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def reset_host(host: Dict[str, Any], keep_tag_prefix: str = "v1-") -> None:
    """Back to a host nobody deployed to yet, with the v1 images cached: every container
    removed, every other sentiment image removed, the agent's state and cron entry gone
    (its zipapp stays, as on a host mlfleet has seen before). Done locally: the lab hosts'
    files and engine sockets are this machine's."""
    if host["docker_host"]:
        ids = _docker(host, "ps", "-aq").split()
        if ids:
            _docker(host, "rm", "-f", *ids)
        refs = _docker(host, "images", "--format", "{{.Repository}}:{{.Tag}}").split()
        drop = [r for r in refs if "/sentiment:" in r and not r.rsplit(":", 1)[1].startswith(keep_tag_prefix)]  # fmt: skip
        if drop:
            _docker(host, "rmi", "-f", *drop)
    agent_dir = Path(host["agent_dir"])
    for path in agent_dir.glob("*"):
        if path.name != "mlfleet-agent.pyz" and path.is_file():
            path.unlink()
    clear_crontab(host)


def clear_crontab(host: Dict[str, Any]) -> None:
    """Empty root's crontab and tell the host's busybox crond to reload it (as `crontab`
    does): it rereads a changed spool file only when named in cron.update."""
    cron_dir = Path(host["cron_dir"])
    (cron_dir / "root").write_text("")
    (cron_dir / "cron.update").write_text("root\n")


def prepull(hosts: List[Dict[str, Any]], registry: str, tag: str) -> None:
    """Every engine holds `tag` before the runs (two at a time, gently), so no tool's setup
    has all hosts pull the whole image at once."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda h: _docker(h, "pull", "-q", f"{registry}/{REPOSITORY}:{tag}"), hosts))


def reset(hosts: List[Dict[str, Any]], keep_tag_prefix: str = "v1-") -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda h: reset_host(h, keep_tag_prefix), hosts))


def wipe_agents(hosts: List[Dict[str, Any]]) -> None:
    """Hosts mlfleet has never seen: no agent, no state, no cron entry."""
    for host in hosts:
        for path in Path(host["agent_dir"]).glob("*"):
            if path.is_dir():
                shutil.rmtree(path)  # the agent's cache of its own unpacked code
            else:
                path.unlink()
        clear_crontab(host)


def serving_tag(address: str) -> Optional[str]:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/version", timeout=2) as resp:
            return json.loads(resp.read())["tag"]
    except (OSError, ValueError, KeyError):
        return None


def check_serving(hosts: List[Dict[str, Any]], tag: str, what: str) -> None:
    """Every host answers /version with `tag` (seen from the controller's side)."""
    deadline = time.monotonic() + 10
    while True:
        wrong = {h["name"]: serving_tag(h["address"]) for h in hosts}
        wrong = {n: t for n, t in wrong.items() if t != tag}
        if not wrong:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: hosts not serving {tag}: {wrong}")
        time.sleep(0.5)


def remote_command_s(inventory: Path, runs: int = 10) -> Dict[str, float]:
    """What one remote command costs on an open SSH connection (`true`: a session, the login
    shell and its rc files on the host), the unit every tool pays per command it runs."""
    from mlfleet.controller.inventory import load_inventory
    from mlfleet.controller.transport import Connection

    conn = Connection(load_inventory(inventory).select(None)[0]).connect()
    try:
        times = []
        for _ in range(runs):
            started = time.monotonic()
            conn.run(["true"], timeout=30)
            times.append(time.monotonic() - started)
    finally:
        conn.close()
    return spread(times)
