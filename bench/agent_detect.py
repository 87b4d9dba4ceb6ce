"""Benchmark (not a test): wall time and peak memory of `mlfleet-agent detect --json` on
each host of a running lab, through the real zipapp over SSH.

Run as root with a lab up: `.venv/bin/python bench/agent_detect.py [--lab NAME] [--runs N]`.
Each run is a fresh `python3 mlfleet-agent.pyz detect --json` process on the host; peak
memory is that process's max RSS (getrusage of the child).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
from pathlib import Path
from typing import Any, Dict

from mlfleet.agent.bundle import build_zipapp
from mlfleet.controller.lab import fleet
from mlfleet.controller.lab.layout import LabLayout

PROBE = r"""
import json, resource, subprocess, sys, time
runs = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    p = subprocess.run([sys.executable, sys.argv[1], "detect", "--json"], stdout=subprocess.PIPE)
    runs.append(time.perf_counter() - t)
    assert p.returncode == 0
print(json.dumps({"wall_s": runs, "max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="lab")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    layout = LabLayout.named(args.lab)
    status = fleet.status(layout)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_zipapp(Path(tmp))
        results: Dict[str, Any] = {"zipapp_bytes": bundle.size, "hosts": {}}
        for host in status["hosts"]:
            name = host["name"]
            target = f"{host['agent_dir']}/mlfleet-agent.pyz"
            Path(target).write_bytes(bundle.path.read_bytes())  # the lab host's disk is ours
            proc = fleet.run_on(
                layout, name, ["python3", "-c", shlex.quote(PROBE), target, str(args.runs)]
            )
            if proc.returncode != 0:
                raise SystemExit(f"{name}: {proc.stderr}")
            data = json.loads(proc.stdout)
            results["hosts"][name] = {
                "median_s": round(statistics.median(data["wall_s"]), 3),
                "min_s": round(min(data["wall_s"]), 3),
                "max_s": round(max(data["wall_s"]), 3),
                "peak_rss_mib": round(data["max_rss_kib"] / 1024, 1),
            }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
