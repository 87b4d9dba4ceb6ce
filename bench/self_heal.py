"""Benchmark (not a test): how long a host stays dark after someone removes what serves, with
no controller in sight. On a lab host serving a release deployed by `mlfleet deploy` (its
cron entry installed), for each way of healing (cron: a tick each minute; the agent's
`daemon --interval 5`) and each fault (`docker rm -f` of the serving container; that and
`docker rmi -f` of its image, so the tick pulls it again by digest from the lab registry):
the time from the fault to the release answering /version again, seen from outside. Also
the tick's wall time and peak RSS when there is nothing to repair.

Run as root with a lab up and a release deployed (`./run-demo` leaves one):
`.venv/bin/python bench/self_heal.py [--lab lab] [--host edge-cpu] [--runs 3] [--json OUT]`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

from agent_lifecycle import measure_ticks, serving_tag  # the same probes as that benchmark's

from mlfleet.controller.lab import fleet
from mlfleet.controller.lab.layout import LabLayout


def current_release(layout: LabLayout, host: Dict[str, Any]) -> Dict[str, Any]:
    proc = fleet.run_on(layout, host["name"], ["python3", "-S", f"{host['agent_dir']}/mlfleet-agent.pyz", "status", "--json"])  # fmt: skip
    current = json.loads(proc.stdout)["apps"][0]["current"]
    if not current:
        raise SystemExit(f"{host['name']} serves nothing: deploy a release first (./run-demo)")
    return dict(current)


def dark_for(layout: LabLayout, host: Dict[str, Any], image_too: bool, limit_s: float) -> float:
    """Remove the serving container (and its image); seconds until the same tag answers."""
    release = current_release(layout, host)
    tag = serving_tag(host["address"])
    if tag != release["tag"]:
        raise SystemExit(f"{host['name']}: {tag} answers, {release['tag']} is recorded")
    command = f"docker rm -f {shlex.quote(release['container'])} >/dev/null"
    if image_too:
        command += f" && docker rmi -f {shlex.quote(release['image'])} >/dev/null"
    started, fault_at = time.monotonic(), time.time()
    fleet.run_on(layout, host["name"], ["sh", "-c", shlex.quote(command)])
    while time.monotonic() - started < limit_s:
        if serving_tag(host["address"]) == tag:
            dark = time.monotonic() - started
            settled(layout, host, fault_at, limit_s)
            return dark
        time.sleep(0.1)
    raise SystemExit(f"{host['name']}: {tag} did not answer again within {limit_s:.0f} s")


def settled(layout: LabLayout, host: Dict[str, Any], fault_at: float, limit_s: float) -> None:
    """Wait until the agent finished this repair (its checks passed, `repaired` recorded
    after the fault), so that the next fault does not land in the middle of it."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        proc = fleet.run_on(layout, host["name"], ["python3", "-S", f"{host['agent_dir']}/mlfleet-agent.pyz", "status", "--json"])  # fmt: skip
        app = json.loads(proc.stdout)["apps"][0]
        last = app.get("last_event") or {}
        if last.get("event") == "repaired" and last.get("time", 0) > fault_at:
            return
        time.sleep(0.5)
    raise SystemExit(f"{host['name']}: the repair did not finish within {limit_s:.0f} s")


def summary(values: List[float]) -> Dict[str, Any]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "runs": len(values),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="lab")
    parser.add_argument("--host", default="edge-cpu")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    layout = LabLayout.named(args.lab)
    status = fleet.status(layout)
    host = next(h for h in status["hosts"] if h["name"] == args.host)
    agent = f"{host['agent_dir']}/mlfleet-agent.pyz"
    spool = Path(host["cron_dir"]) / "root"
    crontab = spool.read_text()
    if "mlfleet-agent" not in crontab:
        raise SystemExit(f"{args.host} has no mlfleet cron entry: deploy with mlfleet first")
    out: Dict[str, Any] = {"host": args.host}
    for image_too in (False, True):
        fault = "container and image removed" if image_too else "container removed"
        out[f"cron, {fault}"] = summary(
            [dark_for(layout, host, image_too, 180) for _ in range(args.runs)]
        )
        print(json.dumps({f"cron, {fault}": out[f"cron, {fault}"]}), flush=True)
    # The daemon instead of cron: the cron entry is taken out meanwhile.
    spool.write_text("")
    (Path(host["cron_dir"]) / "cron.update").write_text("root\n")
    daemon = fleet.ssh_argv(layout, args.host, ["sh", "-c", shlex.quote(
        f"nohup python3 -S {agent} daemon --interval 5 >/dev/null 2>&1 & echo $!"
    )])  # fmt: skip
    pid = subprocess.run(daemon, capture_output=True, text=True, check=True).stdout.strip()
    try:
        for image_too in (False, True):
            fault = "container and image removed" if image_too else "container removed"
            out[f"daemon --interval 5, {fault}"] = summary(
                [dark_for(layout, host, image_too, 60) for _ in range(args.runs)]
            )
            print(
                json.dumps({f"daemon, {fault}": out[f"daemon --interval 5, {fault}"]}), flush=True
            )
    finally:
        fleet.run_on(layout, args.host, ["kill", pid])
        spool.write_text(crontab)
        (Path(host["cron_dir"]) / "cron.update").write_text("root\n")
    time.sleep(1)
    out["tick_nothing_to_repair_s"], out["tick_peak_rss_mib"] = measure_ticks(layout, host, 10)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
