"""Benchmark (not a test): `mlfleet deploy` v1 -> v3 on a running lab, wall time and where
the time goes. Run as root with a lab up: `.venv/bin/python bench/deploy_fleet.py [--lab NAME]
[--runs 3] [-- extra deploy options]`.

Each run deploys v1 (so every host starts from it) and then times `deploy --tag v3` as a
user runs it, with its own state DB. The split comes from the controller's record: per wave
its wall time, and per host the agent's own phase timings (select, preflight with the pull,
start, health, monitor window); the rest of a host's time is SSH, agent install and
process start-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from mlfleet.controller.state import ControllerState

PHASES = ("select_s", "preflight_s", "start_s", "health_s", "monitor_s", "total_s")


def mlfleet(state: Path, inventory: str, *args: str) -> Dict[str, Any]:
    argv = [sys.executable, "-m", "mlfleet.controller", "-i", inventory, "-p", "playbooks/sentiment.yml",
            "--state", str(state), *args, "--json"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"deploy failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default="inventory/lab.yml")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="extra deploy options, after --")
    args = parser.parse_args()
    runs: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        state_path = Path(tmp) / "state.db"
        for _ in range(args.runs):
            mlfleet(state_path, args.inventory, "deploy", "--tag", "v1", *args.extra)
            started = time.monotonic()
            out = mlfleet(state_path, args.inventory, "deploy", "--tag", "v3", *args.extra)
            wall = time.monotonic() - started
            rows = ControllerState(state_path).host_results(deployment_id=out["deployment"])
            waves: Dict[str, List[float]] = {}
            for row in rows:
                waves.setdefault(row["wave"], []).append(row["finished"])
            starts = {r["wave"]: r["started"] for r in sorted(rows, key=lambda r: r["started"])}
            runs.append({
                "wall_s": wall,
                "waves": {w: max(ends) - starts[w] for w, ends in waves.items()},
                "agent": {p: statistics.median(r["timings"].get(p, 0) for r in rows) for p in PHASES},
                "host_s": statistics.median(r["duration_s"] for r in rows),
                "bytes": sum(r["bytes"] for r in rows),
            })  # fmt: skip
    summary = {
        "runs": len(runs),
        "deploy_v1_to_v3_wall_s": {
            "median": round(statistics.median(r["wall_s"] for r in runs), 2),
            "min": round(min(r["wall_s"] for r in runs), 2),
            "max": round(max(r["wall_s"] for r in runs), 2),
        },
        "per_wave_s": {
            w: round(statistics.median(r["waves"][w] for r in runs), 2) for w in runs[0]["waves"]
        },
        "per_host_median_s": round(statistics.median(r["host_s"] for r in runs), 2),
        "agent_phase_median_s": {
            p: round(statistics.median(r["agent"][p] for r in runs), 3) for p in PHASES
        },
        "bytes_per_update": runs[-1]["bytes"],
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
