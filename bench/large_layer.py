"""Benchmark (not a test): one 2 GiB layer of random bytes (compression cannot hide it),
delivered to a host by pull and by relay from the lab's TLS + credentials registry, once
with the link untouched and once with the link cut in the middle of that layer. What it
shows: bytes on the host's link against the layer's size (a download that resumes after
the cut must not send the finished part again), and the time against the link's capacity.

Run as root: `.venv/bin/python bench/large_layer.py [--mib 2048] [--link-kbit 200000]
[--cut-s 30] [--json OUT.json]`. It brings up its own lab `big` (10.71.0.0/24, the
default secure registry) with one host `edge` whose link is rate-limited to --link-kbit
both ways by `tbf`, and takes it down at the end (`--keep` leaves it up). Disk: about
3 x the layer on the machine's own disk (the lab registry, the controller's relay cache,
the host's engine), all removed with the lab.

Every case starts from a host wiped of images and the agent's state, then serving v1 (the
lab's base and app layers are on it); the deployment of the payload tag then needs the
2 GiB layer and a small top layer. In a `cut` case the host's link goes down (its
bridge-side veth) once the link has carried half the layer, for --cut-s seconds.

Per case:
- link_bytes: what crossed the host's link towards it during the deployment (the kernel's
  counter of its veth on the bridge side: layers, SSH, TCP/IP headers, everything).
- layer_bytes: the compressed size of the layers the host lacked (the 2 GiB one and the
  top one); `overhead` = link_bytes / layer_bytes - 1.
- transfer_s: the agent's preflight (the pull, by either method); capacity_s: what the
  missing layers take at the link's rate; for a cut case the cut's length is included in
  transfer_s (the link carried nothing then).
- deploy_s: the whole `mlfleet deploy` (relay: the copy into the controller's relay cache
  before the host's apply, and the 10 s monitor window of playbooks/sentiment.yml).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from mlfleet.controller.lab import fleet, lab_registry
from mlfleet.controller.lab.images import REPOSITORY, push_payload_image
from mlfleet.controller.lab.layout import LabLayout

NAME = "big"
SUBNET = "10.71.0.0/24"
HOST = "edge"
TAG = "big"
PLAYBOOK = Path(__file__).parents[1] / "playbooks" / "sentiment.yml"
WIPE = (
    "docker ps -aq | xargs -r docker rm -f >/dev/null; "
    "docker images -aq | xargs -r docker rmi -f >/dev/null 2>&1; "
    'docker image prune -af >/dev/null; rm -rf "$MLFLEET_AGENT_DIR"/*'
)


def cli(env: Dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mlfleet.controller", *args],
                          capture_output=True, text=True, env=env)  # fmt: skip
    if check and proc.returncode != 0:
        raise SystemExit(f"mlfleet {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc


def link_rx(layout: LabLayout) -> int:
    """Bytes sent towards the host over its link (the bridge side's transmit counter)."""
    return int(Path(f"/sys/class/net/{layout.veth(HOST)}/statistics/tx_bytes").read_text())


def deploy_argv(inventory: Path, state: Path, tag: str, method: str) -> List[str]:
    return [sys.executable, "-m", "mlfleet.controller", "-i", str(inventory), "-p", str(PLAYBOOK),
            "--state", str(state), "--limit", HOST, "deploy", "--tag", tag,
            "--transfer", method, "--canary", "0", "--json"]  # fmt: skip


def one_case(layout: LabLayout, env: Dict[str, str], inventory: Path, work: Path, method: str,
             cut_at: Optional[int], cut_s: float) -> Dict[str, Any]:  # fmt: skip
    """Wipe, serve v1, then deploy the payload tag (cutting the link once `cut_at` bytes
    crossed it, when given)."""
    proc = fleet.run_on(layout, HOST, [WIPE], timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{HOST}: wipe failed: {proc.stderr[-1000:]}")
    state = work / f"state-{method}-{time.monotonic_ns()}.db"
    first = subprocess.run(deploy_argv(inventory, state, "v1", method), capture_output=True,
                           text=True, env=env)  # fmt: skip
    if first.returncode != 0:
        raise SystemExit(f"{HOST}: deploy v1 by {method} failed: {first.stderr[-2000:]}")
    before = link_rx(layout)
    cut: Dict[str, float] = {}
    started = time.monotonic()
    deploy = subprocess.Popen(deploy_argv(inventory, state, TAG, method), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    said: List[str] = []
    assert deploy.stderr is not None
    reader = threading.Thread(target=lambda: said.extend(deploy.stderr or ()), daemon=True)
    reader.start()
    try:
        while cut_at is not None and deploy.poll() is None:
            if link_rx(layout) - before >= cut_at:
                cut["at_bytes"] = link_rx(layout) - before
                cut["at_s"] = round(time.monotonic() - started, 1)
                fleet.link(layout, HOST, False)
                time.sleep(cut_s)
                fleet.link(layout, HOST, True)
                cut["s"] = cut_s
                break
            time.sleep(0.05)
        out, _ = deploy.communicate(timeout=7200)
    finally:
        fleet.link(layout, HOST, True)
    wall = time.monotonic() - started
    reader.join(timeout=10)
    result = json.loads(out)["hosts"][0]
    if result["result"] != "updated":
        raise SystemExit(f"{HOST}: deploy {TAG} by {method}: {result}\n{''.join(said)[-2000:]}")
    return {
        "method": method,
        "cut": cut or None,
        "link_bytes": link_rx(layout) - before,
        "reported_bytes": result["bytes"],
        "transfer_s": result["timings"].get("preflight_s"),
        "deploy_s": round(wall, 1),
        "engine_retries": sum("Retrying" in line for line in said),
        "progress": [line.strip() for line in said if "pull" in line or "layer" in line][-6:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=2048, help="the large layer's size (MiB)")
    parser.add_argument("--link-kbit", type=int, default=200000, help="the host's link rate")
    parser.add_argument("--cut-s", type=float, default=30.0, help="how long the link is down")
    parser.add_argument("--methods", default="pull,relay")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    args = parser.parse_args()
    layout = LabLayout(NAME)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        # The relay cache (the controller's copy of the layer) lives here, removed at the end.
        env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"))
        profiles = work / "profiles.yml"
        profiles.write_text(
            f"subnet: {SUBNET}\nhosts:\n  {HOST}: {{link_kbit: {args.link_kbit}}}\n"
        )
        inventory = work / "inventory.yml"
        cli(
            env,
            "lab",
            "--name",
            NAME,
            "up",
            "--profiles",
            str(profiles),
            "--inventory",
            str(inventory),
        )
        try:
            registry = json.loads(cli(env, "lab", "--name", NAME, "status", "--json").stdout)[
                "registry"
            ]
            started = time.monotonic()
            # The lab's own layer cache: the base and app layers are those the lab pushed.
            layers = push_payload_image(lab_registry.client(registry, timeout=600),
                                        layout.cache, TAG, args.mib)  # fmt: skip
            print(f"pushed {REPOSITORY}:{TAG} ({args.mib} MiB payload) in "
                  f"{time.monotonic() - started:.0f}s", file=sys.stderr)  # fmt: skip
            layers[2].path.unlink()  # the payload's compressed copy: the registry has it
            missing = layers[2].size + layers[3].size  # the payload and the top layer
            rows = []
            for method in args.methods.split(","):
                for cut_at in (None, missing // 2):
                    row = one_case(layout, env, inventory, work, method, cut_at, args.cut_s)
                    row["overhead"] = round(row["link_bytes"] / missing - 1, 4)
                    print(json.dumps(row), file=sys.stderr)
                    rows.append(row)
        finally:
            if not args.keep:
                cli(env, "lab", "--name", NAME, "down", check=False)
    capacity_s = missing * 8 / (args.link_kbit * 1000)
    report = {
        "benchmark": "large_layer",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "command": " ".join(sys.argv),
        "link_kbit": args.link_kbit,
        "payload_mib": args.mib,
        "layer_bytes": missing,
        "capacity_s": round(capacity_s, 1),
        "rows": rows,
    }
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def table(report: Dict[str, Any]) -> str:
    gib = report["layer_bytes"] / 2**30
    lines = [f"missing layers {gib:.3f} GiB; at {report['link_kbit'] / 1000:.0f} Mbit/s the link "
             f"needs {report['capacity_s']:.0f} s",
             f"{'method':7} {'cut':>9} {'link GiB':>9} {'overhead':>9} {'transfer s':>10} "
             f"{'vs capacity':>11} {'deploy s':>8} {'retries':>7}"]  # fmt: skip
    for row in report["rows"]:
        cut = row["cut"]
        down = cut["s"] if cut else 0.0
        speed = (row["transfer_s"] - down) / report["capacity_s"] if row["transfer_s"] else 0
        lines.append(
            f"{row['method']:7} {f'{down:.0f}s' if cut else '-':>9} "
            f"{row['link_bytes'] / 2**30:9.3f} {row['overhead'] * 100:8.2f}% "
            f"{row['transfer_s'] or 0:10.1f} {speed:10.2f}x {row['deploy_s']:8.1f} "
            f"{row['engine_retries']:7}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
