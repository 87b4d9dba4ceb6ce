"""Benchmark (not a test): the agent's lifecycle on a lab host, through the zipapp over SSH.

Run as root with a lab up (`mlfleet lab up`): `.venv/bin/python bench/agent_lifecycle.py
[--lab NAME] [--host edge-cpu] [--runs 5] [--json OUT]`. Reports: zipapp size; apply wall time (first
install, update); rollback latency = from the failing health verdict (the agent's last
failed round) to the old release answering /version again, seen from outside; `tick`
wall time and peak memory (max RSS of the agent process).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mlfleet.agent.bundle import build_zipapp
from mlfleet.controller.lab import fleet
from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.lab.sample_release import sentiment_desired

TICK_PROBE = r"""
import json, resource, subprocess, sys, time
runs = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-S", sys.argv[1], "tick"], stdout=subprocess.DEVNULL, check=True)
    runs.append(time.perf_counter() - t)
print(json.dumps({"wall_s": runs, "max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def serving_tag(address: str) -> Optional[str]:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/version", timeout=0.5) as resp:
            return json.loads(resp.read())["tag"]
    except OSError:
        return None


def apply(layout: LabLayout, host: Dict[str, Any], registry: str, tag: str) -> Dict[str, Any]:
    """Apply `tag`; returns the result, the agent's events and an outside view of /version."""
    path = Path(host["agent_dir"]) / f"bench-{tag}.json"
    path.write_text(json.dumps(sentiment_desired(registry, host["data_dir"], tag)))
    seen: List[tuple] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append((time.time(), serving_tag(host["address"])))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.time()
    argv = fleet.ssh_argv(
        layout,
        host["name"],
        ["python3", "-S", f"{host['agent_dir']}/mlfleet-agent.pyz", "apply", str(path)],
    )
    proc = subprocess.run(argv, capture_output=True, text=True)
    done.set()
    watcher.join()
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    return {
        "result": json.loads(proc.stdout),
        "events": events,
        "seen": seen,
        "wall_s": time.time() - started,
    }


def measure_ticks(
    layout: LabLayout, host: Dict[str, Any], runs: int
) -> Tuple[Dict[str, float], float]:
    """`runs` ticks of the host's agent, one after the other: their wall time (median, max)
    and the peak RSS of any of them, MiB."""
    agent = f"{host['agent_dir']}/mlfleet-agent.pyz"
    probe = fleet.run_on(
        layout, host["name"], ["python3", "-c", shlex.quote(TICK_PROBE), agent, str(runs)]
    )
    data = json.loads(probe.stdout)
    wall = {
        "median": round(statistics.median(data["wall_s"]), 3),
        "max": round(max(data["wall_s"]), 3),
    }
    return wall, round(data["max_rss_kib"] / 1024, 1)


def rollback_latency(run: Dict[str, Any], old_tag: str) -> float:
    events = run["events"]
    restore = next(i for i, e in enumerate(events) if e.get("event") == "restore")
    verdict = max(
        e["time"] for e in events[:restore] if e.get("event") == "health" and not e.get("ok")
    )
    back = min(t for t, tag in run["seen"] if t > verdict and tag == old_tag)
    return back - verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="lab")
    parser.add_argument("--host", default="edge-cpu")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    layout = LabLayout.named(args.lab)
    status = fleet.status(layout)
    host = next(h for h in status["hosts"] if h["name"] == args.host)
    registry = status["registry"]["address"]
    out: Dict[str, Any] = {"host": args.host}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_zipapp(Path(tmp))
        (Path(host["agent_dir"]) / "mlfleet-agent.pyz").write_bytes(bundle.path.read_bytes())
        out["zipapp_bytes"] = bundle.size
    first = apply(layout, host, registry, "v1")
    out["apply_v1_s"] = round(first["wall_s"], 2)
    out["apply_v1_status"] = first["result"]["status"]
    update = apply(layout, host, registry, "v3")
    out["apply_v3_s"] = round(update["wall_s"], 2)
    out["apply_v3_bytes_pulled"] = update["result"]["bytes_pulled"]
    latencies = []
    for _ in range(args.runs):
        run = apply(layout, host, registry, "v4")
        assert run["result"]["status"] == "rolled_back", run["result"]
        latencies.append(rollback_latency(run, "v3"))
    out["rollback_latency_s"] = {
        "median": round(statistics.median(latencies), 3),
        "min": round(min(latencies), 3),
        "max": round(max(latencies), 3),
        "runs": len(latencies),
    }
    out["tick_s"], out["tick_peak_rss_mib"] = measure_ticks(layout, host, args.runs)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
