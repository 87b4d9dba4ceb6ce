"""Benchmark (not a test): bytes and time to get the model image onto a host, by mlfleet's
relay, by a plain registry pull, and by `docker save | ssh docker load` (Kamal's
registry-free answer), for a first install (v1 on an empty engine) and an update (v1 -> v3).

Run as root: `.venv/bin/python bench/delivery.py [--runs 1] [--link-kbit 20000]
[--json OUT.json]`. It brings up its own lab `dl` (10.73.0.0/24): `src` (an engine that
holds the image, the "build machine" save|load reads from), `edge` (unlimited link) and
`cell` (a link rate-limited to --link-kbit both ways by `tbf`), and takes it down at the end
(`--keep` leaves it up).

Per case and host:
- link_bytes: what crossed the host's link towards it, read from the kernel's counter of
  the host's veth on the bridge side (everything: layers, SSH, TCP/IP headers, the agent's
  own traffic). The independent measure.
- reported_bytes: what mlfleet itself reports for the host (relay: counted in the tunnel;
  pull: the compressed sizes of the layers the engine fetched); save|load: the stream's size.
- transfer_s: the delivery alone (mlfleet: the agent's preflight, i.e. the pull; save|load:
  the pipe). deploy_s: mlfleet's whole deploy of the host (start, health and inference
  checks and the 10 s monitor window of playbooks/sentiment.yml included).
Every case starts from an engine wiped of images and containers (first install), then the
update lands on top of v1.
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
from typing import Any, Dict, List, Optional

from mlfleet.controller.lab import fleet
from mlfleet.controller.lab.images import REPOSITORY
from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.registry import Registry

NAME = "dl"
SUBNET = "10.73.0.0/24"
PLAYBOOK = Path(__file__).parents[1] / "playbooks" / "sentiment.yml"
METHODS = ("relay", "pull", "save|load", "save|gzip|load")
WIPE = (
    "docker ps -aq | xargs -r docker rm -f >/dev/null; "
    "docker images -aq | xargs -r docker rmi -f >/dev/null 2>&1; "
    'docker image prune -af >/dev/null; rm -rf "$MLFLEET_AGENT_DIR"/*'
)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mlfleet.controller", *args],
                          capture_output=True, text=True)  # fmt: skip
    if check and proc.returncode != 0:
        raise SystemExit(f"mlfleet {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc


def on_host(layout: LabLayout, host: str, script: str) -> str:
    proc = fleet.run_on(layout, host, [script], timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{host}: {script!r} failed: {proc.stderr[-1000:]}")
    return proc.stdout


def link_rx(layout: LabLayout, host: str) -> int:
    """Bytes sent towards the host over its link (the bridge side's transmit counter)."""
    return int(Path(f"/sys/class/net/{layout.veth(host)}/statistics/tx_bytes").read_text())


def by_mlfleet(layout: LabLayout, inventory: Path, state: Path, host: str, tag: str,
               method: str) -> Dict[str, Any]:  # fmt: skip
    before = link_rx(layout, host)
    started = time.monotonic()
    proc = cli("-i", str(inventory), "-p", str(PLAYBOOK), "--state", str(state), "--limit", host,
               "deploy", "--tag", tag, "--transfer", method, "--canary", "0", "--json", check=False)  # fmt: skip
    wall = time.monotonic() - started
    result = json.loads(proc.stdout)["hosts"][0]
    if result["result"] != "updated":
        raise SystemExit(f"{host}: deploy {tag} by {method}: {result}")
    return {
        "link_bytes": link_rx(layout, host) - before,
        "reported_bytes": result["bytes"],
        "transfer_s": result["timings"].get("preflight_s"),
        "deploy_s": round(wall, 2),
    }


def by_save_load(
    layout: LabLayout, registry: str, host: str, tag: str, gzip: bool
) -> Dict[str, Any]:
    """`docker save` on the build machine piped over SSH into `docker load` on the host."""
    ref = f"{registry}/{REPOSITORY}:{tag}-cpu"
    save = f"docker save {ref}" + (" | gzip" if gzip else "")
    load = "gunzip | docker load" if gzip else "docker load"
    before = link_rx(layout, host)
    started = time.monotonic()
    src = subprocess.Popen(fleet.ssh_argv(layout, "src", [save]), stdout=subprocess.PIPE)
    dst = subprocess.Popen(fleet.ssh_argv(layout, host, [load]), stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL)  # fmt: skip
    assert src.stdout is not None and dst.stdin is not None
    streamed = 0
    while chunk := src.stdout.read(1 << 20):
        dst.stdin.write(chunk)
        streamed += len(chunk)
    dst.stdin.close()
    if src.wait() != 0 or dst.wait() != 0:
        raise SystemExit(f"{host}: save|load of {ref} failed")
    return {
        "link_bytes": link_rx(layout, host) - before,
        "reported_bytes": streamed,
        "transfer_s": round(time.monotonic() - started, 2),
        "deploy_s": None,
    }


def measure(layout: LabLayout, inventory: Path, registry: str, host: str, method: str,
            work: Path) -> Dict[str, Dict[str, Any]]:  # fmt: skip
    """First install of v1 on a wiped engine, then the update to v3."""
    on_host(layout, host, WIPE)
    out = {}
    state = work / f"state-{host}-{method.replace('|', '-')}-{time.monotonic_ns()}.db"
    for case, tag in (("first install v1", "v1"), ("update v1->v3", "v3")):
        if method in ("relay", "pull"):
            out[case] = by_mlfleet(layout, inventory, state, host, tag, method)
        else:
            out[case] = by_save_load(layout, registry, host, tag, gzip="gzip" in method)
    return out


def layer_sizes(registry: str, tag: str) -> List[int]:
    found = Registry(registry).get_manifest(REPOSITORY, f"{tag}-cpu")
    if found is None:
        raise SystemExit(f"the registry at {registry} has no {REPOSITORY}:{tag}-cpu")
    manifest, _ = found
    return [layer["size"] for layer in manifest["layers"]]


def median_runs(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        if not values:
            out[key] = None
            continue
        out[key] = statistics.median(values)
        if len(values) > 1:
            out[f"{key}_min"], out[f"{key}_max"] = min(values), max(values)
    return out


def human(n: Optional[float]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(report: Dict[str, Any]) -> str:
    lines = [f"{'host':6} {'case':17} {'method':15} {'link bytes':>11} {'reported':>11} "
             f"{'transfer s':>10} {'deploy s':>8}"]  # fmt: skip
    for row in report["rows"]:
        lines.append(
            f"{row['host']:6} {row['case']:17} {row['method']:15} {human(row['link_bytes']):>11} "
            f"{human(row['reported_bytes']):>11} {row['transfer_s'] or 0:10.1f} "
            f"{row['deploy_s'] if row['deploy_s'] is not None else '-':>8}"
        )
    for host, ratio in report["update_ratio_save_load_to_relay"].items():
        lines.append(f"{host}: v1->v3 over the link, save|load / relay = {ratio:.0f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="repeats per case (median reported)")
    parser.add_argument("--link-kbit", type=int, default=20000, help="the rate-limited link")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    args = parser.parse_args()
    layout = LabLayout(NAME)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        profiles = work / "profiles.yml"
        # Open registry: this compares delivery methods (bench/registry_auth.py the cost of
        # TLS and credentials), and `docker save` needs the source engine to pull anonymously.
        profiles.write_text(f"subnet: {SUBNET}\nregistry: open\nhosts:\n  src: {{}}\n  edge: {{}}\n"
                            f"  cell: {{link_kbit: {args.link_kbit}}}\n")  # fmt: skip
        inventory = work / "inventory.yml"
        cli("lab", "--name", NAME, "up", "--profiles", str(profiles), "--inventory", str(inventory))
        try:
            registry = json.loads(cli("lab", "--name", NAME, "status", "--json").stdout)[
                "registry"
            ]["address"]
            on_host(layout, "src", f"docker pull -q {registry}/{REPOSITORY}:v1-cpu && "
                    f"docker pull -q {registry}/{REPOSITORY}:v3-cpu")  # fmt: skip
            sizes = {tag: layer_sizes(registry, tag) for tag in ("v1", "v3")}
            rows = []
            for host in ("edge", "cell"):
                for method in METHODS:
                    runs = [
                        measure(layout, inventory, registry, host, method, work)
                        for _ in range(args.runs)
                    ]
                    for case in runs[0]:
                        rows.append({"host": host, "case": case, "method": method,
                                     **median_runs([r[case] for r in runs])})  # fmt: skip
        finally:
            if not args.keep:
                cli("lab", "--name", NAME, "down", check=False)
    ratios = {}
    for host in ("edge", "cell"):
        update = {
            r["method"]: r["link_bytes"]
            for r in rows
            if r["host"] == host and r["case"].startswith("update")
        }
        ratios[host] = update["save|load"] / max(1, update["relay"])
    report = {
        "benchmark": "delivery",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "link_kbit": {"edge": None, "cell": args.link_kbit},
        "runs": args.runs,
        # What an ideal delivery sends: every compressed layer for a first install, the one
        # differing layer for the update (plus manifests and config).
        "compressed_layers": sizes,
        "rows": rows,
        "update_ratio_save_load_to_relay": ratios,
    }
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
