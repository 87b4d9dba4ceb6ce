"""Benchmark (not a test): what a private registry costs. Per host: a whole-image pull
(the lab's `v1-cpu`, about 58 MiB) from a TLS registry that asks for credentials (the
engine answers its challenge with the deployment's X-Registry-Auth) against the same pull
from an open plain-HTTP registry, wall time and bytes on the host's link. Per deployment:
resolving every image the plan needs to a digest (deploy.check_images) for 100 hosts.

Run as root: `.venv/bin/python bench/registry_auth.py [--runs 5] [--hosts 100]
[--json OUT.json]`. It brings up its own lab `ra` (10.72.0.0/24) with one CPU host twice,
first with `registry: secure`, then `registry: open`, and takes it down at the end.

- pull_s: the engine's pull alone (POST /images/create until its stream ends), from an
  engine wiped of images each run.
- link_bytes: what crossed the host's link towards it (the kernel's counter of its veth on
  the bridge side: layers, TLS records, HTTP, TCP/IP headers).
- resolve_s: check_images for --hosts hosts that share the lab host's variables and have no
  stored facts (so each needs all four variants): the credential lookup per host and the
  manifest requests (one per image and credential, shared by the hosts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import yaml

from mlfleet.agent.engine_api import EngineAPI
from mlfleet.controller.deploy import check_images
from mlfleet.controller.hosts import Host
from mlfleet.controller.lab import lab_registry
from mlfleet.controller.lab.images import REPOSITORY
from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.playbook import load_playbook
from mlfleet.controller.session import FleetSession
from mlfleet.controller.state import ControllerState

NAME = "ra"
SUBNET = "10.72.0.0/24"
HOST = "h1"
PLAYBOOK = Path(__file__).parents[1] / "playbooks" / "sentiment.yml"


def cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "mlfleet.controller", "lab", "--name", NAME, *args],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"mlfleet lab {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc.stdout


def link_rx(layout: LabLayout) -> int:
    return int(Path(f"/sys/class/net/{layout.veth(HOST)}/statistics/tx_bytes").read_text())


def wipe(engine: EngineAPI) -> None:
    for image in engine.images():
        engine.request("DELETE", f"/images/{image['Id']}", {"force": "true"})


def pulls(registry: Dict[str, Any], runs: int) -> List[Dict[str, float]]:
    layout = LabLayout(NAME)
    engine = EngineAPI(layout.docker_host(HOST))
    credential = lab_registry.credential(registry)
    name = f"{registry['address']}/{REPOSITORY}"
    out = []
    for _ in range(runs):
        wipe(engine)
        before, started = link_rx(layout), time.perf_counter()
        for _ in engine.pull(name, "v1-cpu", auth=credential):
            pass
        out.append(
            {"pull_s": time.perf_counter() - started, "link_bytes": link_rx(layout) - before}
        )
    return out


def resolutions(inventory: Path, hosts: int, runs: int, work: Path) -> List[float]:
    doc = yaml.safe_load(inventory.read_text())
    base = dict(doc["all"]["vars"])  # the lab's registry, its CA and its login file
    fleet = [Host(f"h{i:04d}", dict(base)) for i in range(hosts)]
    playbook = load_playbook(PLAYBOOK)
    out = []
    for run in range(runs):
        state = ControllerState(work / f"state-{run}.db")
        session = FleetSession(fleet, state, connector=lambda h: None, progress=lambda h, m: None)  # type: ignore[arg-type,return-value]
        started = time.perf_counter()
        check_images(session, playbook, "v1", {})
        out.append(time.perf_counter() - started)
    return out


def summary(values: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the lab needs network namespaces")
    results: Dict[str, Any] = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.platform()}",
        "command": " ".join(sys.argv),
        "runs": args.runs,
        "hosts": args.hosts,
    }
    with tempfile.TemporaryDirectory(prefix="mlfleet-bench-ra-") as tmp:
        work = Path(tmp)
        for mode in ("secure", "open"):
            profiles = work / f"{mode}.yml"
            profiles.write_text(f"subnet: {SUBNET}\nregistry: {mode}\nhosts:\n  {HOST}: {{}}\n")
            inventory = work / f"{mode}-inventory.yml"
            print(f"lab {NAME} up, registry {mode} ...", file=sys.stderr)
            cli("up", "--profiles", str(profiles), "--inventory", str(inventory))
            try:
                registry = json.loads(cli("status", "--json"))["registry"]
                rows = pulls(registry, args.runs)
                results[mode] = {
                    "pull_s": summary([r["pull_s"] for r in rows]),
                    "link_bytes": summary([r["link_bytes"] for r in rows]),
                    "resolve_s": summary(resolutions(inventory, args.hosts, args.runs, work)),
                }
            finally:
                cli("down")
    for mode in ("secure", "open"):
        r = results[mode]
        print(f"{mode:7} pull {r['pull_s']['median']:.2f} s [{r['pull_s']['min']:.2f}-{r['pull_s']['max']:.2f}]"
              f"  link {r['link_bytes']['median'] / 1048576:.2f} MiB"
              f" [{r['link_bytes']['min'] / 1048576:.2f}-{r['link_bytes']['max'] / 1048576:.2f}]"
              f"  resolve {args.hosts} hosts {r['resolve_s']['median'] * 1000:.0f} ms"
              f" [{r['resolve_s']['min'] * 1000:.0f}-{r['resolve_s']['max'] * 1000:.0f}]")  # fmt: skip
    extra = results["secure"]["link_bytes"]["median"] - results["open"]["link_bytes"]["median"]
    slower = results["secure"]["pull_s"]["median"] - results["open"]["pull_s"]["median"]
    print(
        f"TLS + credentials per host pull: {slower * 1000:+.0f} ms, {extra / 1024:+.1f} KiB on the link"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
