"""Benchmark (not a test): mlfleet against the tools an operator would pick instead, on the
same lab, in the same run. Run as root through `./run-bench` (it installs Ansible and
pyinfra into .venv), or `.venv/bin/python bench/compare.py [--hosts 8] [--runs 3]
[--facts-hosts 100] [--only update,facts,hetero,agent,delivery]`.

- update: fleet update v1 -> v3 on N CPU hosts (lab `peer`, 10.75.0.0/24): mlfleet (the
  same job, and as shipped), an Ansible playbook, a pyinfra deploy and the floor (ssh +
  docker CLI). Runs alternate, every run starts from v1 on every host (reset untimed).
- facts: facts from M SSH-only hosts (lab `fan`, 10.74.0.0/24): mlfleet facts (first contact
  and agent present), `ansible -m setup`, pyinfra facts.
- hetero: mlfleet alone on the default heterogeneous five (lab `lab`, 10.77.0.0/24): v1 ->
  v3 with a variant per host.
- agent: rollback latency, tick wall time and memory, zipapp size (bench/agent_lifecycle.py
  on the five).
- delivery: bytes per host for v1 -> v3 by relay, pull and save|load (bench/delivery.py, its
  own lab `dl`; skipped while that lab is up for other work).

Writes bench/results/latest.json and latest.md and prints the table. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from peers import labs, report, tools
from peers.measure import BenchError, Sample, run_timed, spread

from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.state import ControllerState

BENCH = Path(__file__).resolve().parent
ITEMS = ("update", "facts", "hetero", "agent", "delivery")
PHASES = ("select_s", "preflight_s", "start_s", "health_s", "monitor_s", "total_s")


def log(message: str) -> None:
    print(f"· {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def rotated(items: List[str], run: int) -> List[str]:
    """A different tool goes first in every run, so none always runs on a cold or warm machine."""
    k = run % len(items)
    return items[k:] + items[:k]


def summarize(samples: Dict[str, List[Sample]], base: str) -> Dict[str, Any]:
    """Per tool: wall, controller CPU and machine CPU (median, min, max), and the ratios of
    its medians to `base`'s (above 1: slower or costlier than `base`)."""
    out: Dict[str, Any] = {}
    for key, runs in samples.items():
        if not runs:
            continue
        out[key] = {
            f: spread([getattr(s, f) for s in runs]) for f in ("wall_s", "cpu_s", "machine_cpu_s")
        }
        out[key]["runs"] = [s.rounded() for s in runs]  # fmt: skip
    if base in out:
        for entry in out.values():
            entry["ratio_to_" + base.replace("-", "_")] = {
                f: round(entry[f]["median"] / out[base][f]["median"], 2)
                for f in ("wall_s", "cpu_s", "machine_cpu_s")
                if out[base][f]["median"] > 0
            }
    return out


# --- item 1: fleet update -------------------------------------------------------------------


def mlfleet_profile(state: Path, deployments: List[int], wall: List[float]) -> Dict[str, Any]:
    """Where mlfleet's time goes, from its own record: per host the agent's phases and the
    host's whole time; the rest of the wall time is the controller's (start-up, image check
    in the registry, lock, state)."""
    db = ControllerState(state)
    rows = [r for d in deployments for r in db.host_results(deployment_id=d)]
    per_run_host_max = [max(r["duration_s"] for r in db.host_results(deployment_id=d)) for d in deployments]  # fmt: skip
    phases = {p: spread([r["timings"].get(p, 0.0) for r in rows])["median"] for p in PHASES}
    host_s = spread([r["duration_s"] for r in rows])
    outside = [w - h for w, h in zip(wall, per_run_host_max)]
    return {
        "agent_phase_median_s": phases,
        "host_s": host_s,
        "ssh_agent_check_and_start_median_s": round(host_s["median"] - phases["total_s"], 3),
        "controller_outside_hosts_s": spread(outside),
    }


SETUP_TRIES = 3


def start_from_v1(key: str, hosts: List[Dict[str, Any]], inventory: Path, forks: int, work: Path, name: str) -> None:  # fmt: skip
    """Every host reset and on v1, put there by `key` itself (untimed). A loaded machine can
    make a model server miss its start period: the setup is tried again, never the timed run."""
    for attempt in range(1, SETUP_TRIES + 1):
        labs.reset(hosts)
        argv, env = tools.update_command(key, "v1", inventory, forks, work, f"{name}-v1-{attempt}")
        try:
            run_timed(argv, f"{key}: deploy v1", env, log=work / f"{name}-v1-{attempt}.log")
            labs.check_serving(hosts, "v1", f"{key} v1")
            return
        except BenchError as exc:
            log(f"{key}: setup v1 failed (try {attempt}/{SETUP_TRIES}): {str(exc).splitlines()[0]}")
            if attempt == SETUP_TRIES:
                raise


def setup_or_record(key: str, hosts: List[Dict[str, Any]], inventory: Path, forks: int, work: Path,
                    name: str, failures: List[Dict[str, Any]]) -> bool:  # fmt: skip
    """start_from_v1; when even its retries fail, that run is recorded as failed and skipped."""
    try:
        start_from_v1(key, hosts, inventory, forks, work, name)
    except BenchError as exc:
        failures.append({"tool": key, "run": name, "reason": "setup v1: " + str(exc)[-1500:]})
        return False
    return True


def timed_update(key: str, hosts: List[Dict[str, Any]], inventory: Path, forks: int, work: Path,
                 name: str, failures: List[Dict[str, Any]]) -> Optional[Sample]:  # fmt: skip
    """The timed v1 -> v3 run; a failed run is recorded with its reason, not retried."""
    argv, env = tools.update_command(key, "v3", inventory, forks, work, name)
    try:
        sample = run_timed(argv, f"{key}: update to v3", env, log=work / f"{name}-v3.log")
        labs.check_serving(hosts, "v3", f"{key} v3")
    except BenchError as exc:
        failures.append({"tool": key, "run": name, "reason": str(exc)[-1500:]})
        log(f"{name}: FAILED: {str(exc).splitlines()[0]}")
        return None
    log(f"{name}: {sample.wall_s:.1f}s wall, {sample.cpu_s:.1f}s controller CPU")
    return sample


def bench_update(args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    lab = labs.cpu_lab("peer", "10.75.0.0/24", args.hosts)
    log(f"update: lab {lab.name} up ({args.hosts} CPU hosts)")
    inventory = labs.bench_inventory(lab.up(work), work / "peer-bench.yml")
    status = lab.status()
    hosts = status["hosts"]
    remote_command = labs.remote_command_s(inventory)
    labs.prepull(hosts, status["registry"]["address"], "v1-cpu")
    keys = [t.key for t in tools.UPDATE_TOOLS]
    samples: Dict[str, List[Sample]] = {k: [] for k in keys}
    failures: List[Dict[str, Any]] = []
    deployments: List[int] = []
    try:
        for run in range(args.runs):
            for key in rotated(keys, run):
                name = f"update-{key}-{run + 1}"
                if not setup_or_record(key, hosts, inventory, args.hosts, work, name, failures):
                    continue
                sample = timed_update(key, hosts, inventory, args.hosts, work, name, failures)
                if sample is None:
                    continue
                samples[key].append(sample)
                if key == "mlfleet":
                    deployments.append(ControllerState(work / "state-mlfleet.db").deployments(1)[0]["id"])  # fmt: skip
    finally:
        if not args.keep_labs:
            labs.reset(hosts)
            lab.down()
    result = summarize(samples, "mlfleet")
    walls = [s.wall_s for s in samples["mlfleet"]]
    return {
        "hosts": args.hosts,
        "runs": args.runs,
        "remote_command_s": remote_command,
        "failed_runs": failures,
        "tools": {t.key: {"label": t.label, "does": t.does, "does_not": t.does_not} for t in tools.UPDATE_TOOLS},
        "results": result,
        "mlfleet_profile": mlfleet_profile(work / "state-mlfleet.db", deployments, walls),
    }  # fmt: skip


# --- item 2: facts --------------------------------------------------------------------------


def bench_facts(args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    lab = labs.cpu_lab("fan", "10.74.0.0/24", args.facts_hosts, engine=False)
    log(f"facts: lab {lab.name} up ({args.facts_hosts} SSH-only hosts)")
    started = time.monotonic()
    inventory = labs.bench_inventory(lab.up(work), work / "fan-bench.yml")
    lab_up_s = time.monotonic() - started
    hosts = lab.status()["hosts"]
    forks = args.facts_hosts
    samples: Dict[str, List[Sample]] = {t.key: [] for t in tools.FACTS_TOOLS}
    failures: List[Dict[str, Any]] = []
    try:
        for run in range(args.runs):
            for group in rotated(["mlfleet", "ansible", "pyinfra"], run):
                keys = ["mlfleet-first", "mlfleet"] if group == "mlfleet" else [group]
                for key in keys:
                    if key == "mlfleet-first":
                        labs.wipe_agents(hosts)
                    name = f"facts-{key}-{run + 1}"
                    argv, env = tools.facts_command(key, inventory, forks, work, name)
                    try:
                        sample = run_timed(argv, f"{key}: facts", env, log=work / f"{name}.log")
                    except BenchError as exc:
                        failures.append({"tool": key, "run": name, "reason": str(exc)[-1500:]})
                        log(f"{name}: FAILED: {str(exc).splitlines()[0]}")
                        continue
                    samples[key].append(sample)
                    log(f"{name}: {sample.wall_s:.1f}s wall, {sample.cpu_s:.1f}s controller CPU")
    finally:
        if not args.keep_labs:
            lab.down()
    return {
        "hosts": args.facts_hosts,
        "forks": forks,
        "runs": args.runs,
        "lab_up_s": round(lab_up_s, 1),
        "failed_runs": failures,
        "tools": {t.key: {"label": t.label, "does": t.does, "does_not": t.does_not} for t in tools.FACTS_TOOLS},
        "results": summarize(samples, "mlfleet"),
    }  # fmt: skip


# --- mlfleet alone on the heterogeneous five: update, agent footprint, delivery ---------------


def bench_hetero(args: argparse.Namespace, work: Path, lab: labs.Lab) -> Dict[str, Any]:
    inventory = labs.bench_inventory(work / f"{lab.name}-lab.yml", work / "five-bench.yml")
    hosts = lab.status()["hosts"]
    samples: Dict[str, List[Sample]] = {"mlfleet": [], "mlfleet-shipped": []}
    failures: List[Dict[str, Any]] = []
    for run in range(args.runs):
        for key in rotated(list(samples), run):
            name = f"five-{key}-{run + 1}"
            if not setup_or_record(key, hosts, inventory, len(hosts), work, name, failures):
                continue
            sample = timed_update(key, hosts, inventory, len(hosts), work, name, failures)
            if sample is not None:
                samples[key].append(sample)
    variants = {r["host"]: r["variant"] for r in ControllerState(work / "state-mlfleet.db").host_results(limit=len(hosts))}  # fmt: skip
    labs.reset(hosts)
    labels = {t.key: {"label": t.label, "does": t.does, "does_not": t.does_not} for t in tools.UPDATE_TOOLS if t.key in samples}  # fmt: skip
    return {"hosts": len(hosts), "variants": variants, "tools": labels, "failed_runs": failures,
            "results": summarize(samples, "mlfleet")}  # fmt: skip


def run_script(argv: List[str], what: str, out: Path, timeout: float) -> Dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=BENCH.parent)
    if proc.returncode != 0:
        raise BenchError(f"{what}: exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
    data = json.loads(out.read_text())
    data["bench_wall_s"] = round(time.monotonic() - started, 1)
    return data


def bench_agent(args: argparse.Namespace, work: Path, lab: labs.Lab) -> Dict[str, Any]:
    out = work / "agent.json"
    argv = [sys.executable, str(BENCH / "agent_lifecycle.py"), "--lab", lab.name, "--runs", str(max(args.runs, 3)), "--json", str(out)]  # fmt: skip
    return run_script(argv, "agent_lifecycle.py", out, 1200)


def bench_delivery(args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    script = BENCH / "delivery.py"
    if not script.exists():
        return {"missing": "bench/delivery.py is not there yet"}
    if LabLayout.named("dl").state_file.exists():
        return {"skipped": "lab `dl` is up for other work; run bench/delivery.py on its own"}
    out = work / "delivery.json"
    return run_script([sys.executable, str(script), "--json", str(out)], "delivery.py", out, 2400)


def bench_five(args: argparse.Namespace, work: Path, wanted: List[str]) -> Dict[str, Any]:
    lab = labs.default_lab("lab", "10.77.0.0/24")
    log("hetero/agent: lab lab up (the default five)")
    lab.up(work)
    out: Dict[str, Any] = {}
    try:
        if "hetero" in wanted:
            out["hetero"] = guarded("hetero", lambda: bench_hetero(args, work, lab))
        if "agent" in wanted:
            log("agent: bench/agent_lifecycle.py on edge-cpu")
            out["agent"] = guarded("agent", lambda: bench_agent(args, work, lab))
    finally:
        if not args.keep_labs:
            lab.down()
    return out


def guarded(item: str, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """One item's failure is reported in its place; the other items still run."""
    try:
        return fn()
    except (BenchError, subprocess.TimeoutExpired, ValueError, KeyError, OSError) as exc:
        log(f"{item}: FAILED: {exc}")
        return {"failed": str(exc)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8, help="CPU hosts for the update comparison")
    parser.add_argument("--runs", type=int, default=3, help="repeats of every measurement")
    parser.add_argument("--facts-hosts", type=int, default=100, help="SSH-only hosts for facts")
    parser.add_argument(
        "--only", default=",".join(ITEMS), help="comma list of: " + ", ".join(ITEMS)
    )
    parser.add_argument(
        "--out", type=Path, default=BENCH / "results", help="where latest.json/.md go"
    )
    parser.add_argument("--keep-labs", action="store_true", help="leave the labs up afterwards")
    parser.add_argument("--note", default="", help="a line for the report, e.g. what else ran")
    args = parser.parse_args()
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(ITEMS))
    if unknown or not 1 <= args.hosts <= 200 or not 1 <= args.facts_hosts <= 250 or args.runs < 1:
        parser.error(f"bad item(s) {unknown}" if unknown else "--hosts 1..200, --facts-hosts 1..250, --runs >= 1")  # fmt: skip
    started = time.monotonic()
    results: Dict[str, Any] = {"machine": report.machine_info(), "command": " ".join(sys.argv[1:]),
                               "note": args.note}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mlfleet-bench-") as tmp:
        work = {item: Path(tmp) / item for item in ("update", "facts", "five")}
        for path in work.values():
            path.mkdir()
        if "update" in wanted:
            results["update"] = guarded("update", lambda: bench_update(args, work["update"]))
        if "facts" in wanted:
            results["facts"] = guarded("facts", lambda: bench_facts(args, work["facts"]))
        if {"hetero", "agent"} & set(wanted):
            results.update(guarded("five", lambda: bench_five(args, work["five"], wanted)))
        if "delivery" in wanted:
            log("delivery: bench/delivery.py (its own lab dl)")
            results["delivery"] = guarded("delivery", lambda: bench_delivery(args, Path(tmp)))
    results["duration_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "latest.md").write_text(report.markdown(results))
    print(report.table(results))
    log(f"wrote {args.out / 'latest.json'} and latest.md in {results['duration_s']:.0f}s")
    failed = [k for k, v in results.items() if isinstance(v, dict) and "failed" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
