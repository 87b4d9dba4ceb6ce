"""`mlfleet facts` at fleet size (issue 17): labs of 100 to 2,000 SSH-only hosts on this one
machine, first contact (no agent on any host) and agent present; Ansible's `-m setup` and
pyinfra's facts on the same lab at one size, in the same run.

    .venv/bin/python bench/facts_at_scale.py [--sizes 100,500,1000,2000] [--runs 1]
        [--peers-at 1000] [--forks 100] [--out bench/results/facts_at_scale.json]

Per size and tool: wall time, the controller's CPU (its whole process tree) and that per host,
the machine's CPU (every core, the hosts' sshd and Python included: they share this
machine), the controller's peak RSS (the largest process of its tree), and how many hosts
answered. Per lab: the time `lab up` took and the memory one SSH-only host holds (the drop in
MemAvailable across `lab up`, over the hosts). Figures are the median of `--runs` with the
spread. Needs root; brings its lab (`big`, 10.71.0.0/21) up and down itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).parent))

from peers import labs, tools
from peers.measure import BenchError, machine_busy_s, spread

SUBNET = "10.71.0.0/21"  # 2,046 addresses
LAB = "big"
PEERS = ("ansible", "pyinfra")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise BenchError("no MemAvailable in /proc/meminfo")


def timed(argv: List[str], env: Dict[str, str], out: Path) -> Dict[str, float]:
    """Run argv through a small wrapper that reports its tree's CPU and largest RSS."""
    wrapper = (
        "import resource, subprocess, sys, json\n"
        "with open(sys.argv[1], 'wb') as out:\n"
        "    code = subprocess.call(sys.argv[3:], stdout=out, stderr=subprocess.STDOUT)\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "open(sys.argv[2], 'w').write(json.dumps({'cpu_s': r.ru_utime + r.ru_stime,"
        " 'rss_mib': r.ru_maxrss / 1024, 'code': code}))\n"
    )
    stats = out.with_suffix(".rusage.json")
    busy0, t0 = machine_busy_s(), time.monotonic()
    subprocess.run([sys.executable, "-c", wrapper, str(out), str(stats), *argv], env=env,
                   check=False, timeout=3600)  # fmt: skip
    wall, busy = time.monotonic() - t0, machine_busy_s() - busy0
    usage = json.loads(stats.read_text())
    return {"wall_s": wall, "cpu_s": usage["cpu_s"], "machine_cpu_s": busy,
            "rss_mib": usage["rss_mib"], "code": usage["code"]}  # fmt: skip


def answered(tool: str, output: Path, hosts: int) -> int:
    """Hosts that answered, from the tool's own output."""
    text = output.read_text(errors="replace")
    if tool.startswith("mlfleet"):
        doc = json.loads(text[text.index("{") :])
        return sum(1 for facts in doc["hosts"].values() if "error" not in facts)
    if tool == "ansible":
        return sum(1 for line in text.splitlines() if " | SUCCESS =>" in line)
    return hosts - text.count("Error:")  # pyinfra: one line per failed host


def bench_size(size: int, args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    lab = labs.cpu_lab(LAB, SUBNET, size, engine=False)
    before = mem_available_kib()
    started = time.monotonic()
    inventory = labs.bench_inventory(lab.up(work), work / f"{LAB}-{size}.yml")
    lab_up_s = time.monotonic() - started
    per_host_kib = (before - mem_available_kib()) / size
    log(f"{size} hosts up in {lab_up_s:.0f}s, {per_host_kib / 1024:.1f} MiB per host")
    hosts = lab.status()["hosts"]
    keys = ["mlfleet-first", "mlfleet"] + (list(PEERS) if size == args.peers_at else [])
    runs: Dict[str, List[Dict[str, float]]] = {k: [] for k in keys}
    try:
        for run in range(args.runs):
            for key in keys:
                if key == "mlfleet-first":
                    labs.wipe_agents(hosts)
                name = f"facts-{size}-{key}-{run + 1}"
                argv, env = tools.facts_command(key, inventory, args.forks, work, name)
                sample = timed(list(argv), env, work / f"{name}.log")
                sample["answered"] = answered(key, work / f"{name}.log", size)
                runs[key].append(sample)
                partial = work.parent / "partial.jsonl"  # kept if the run is cut short
                with open(partial, "a") as fh:
                    fh.write(json.dumps({"hosts": size, "tool": key, **sample}) + "\n")
                if args.out:
                    args.out.with_suffix(".partial.jsonl").write_text(partial.read_text())
                log(f"{name}: {sample['wall_s']:.1f}s wall, {sample['cpu_s']:.1f}s controller "
                    f"CPU, {sample['rss_mib']:.0f} MiB, {sample['answered']}/{size} answered")  # fmt: skip
    finally:
        lab.down()
    return {
        "hosts": size,
        "lab_up_s": round(lab_up_s, 1),
        "mib_per_host": round(per_host_kib / 1024, 2),
        "tools": {key: summary(samples, size) for key, samples in runs.items()},
    }


def summary(samples: List[Dict[str, float]], size: int) -> Dict[str, Any]:
    def of(field: str) -> Dict[str, float]:
        return spread([s[field] for s in samples])

    return {
        "wall_s": of("wall_s"),
        "cpu_s": of("cpu_s"),
        "cpu_ms_per_host": round(1000 * statistics.median(s["cpu_s"] for s in samples) / size, 1),
        "machine_cpu_s": of("machine_cpu_s"),
        "rss_mib": of("rss_mib"),
        "answered_min": min(int(s["answered"]) for s in samples),
        "exit_codes": sorted({int(s["code"]) for s in samples}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000,2000")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--peers-at", type=int, default=1000, help="size that also runs Ansible and pyinfra (0: none)")  # fmt: skip
    parser.add_argument("--forks", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "facts_at_scale.json")  # fmt: skip
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(not 1 <= s <= 2000 for s in sizes):
        parser.error("sizes from 1 to 2000")
    results = []
    with TemporaryDirectory(prefix="mlfleet-bench-scale-") as tmp:
        for size in sizes:
            work = Path(tmp) / str(size)
            work.mkdir()
            results.append(bench_size(size, args, work))
    report = {
        "machine": {
            "cores": os.cpu_count(),
            "mem_available_gib": round(mem_available_kib() / 2**20, 1),
        },
        "command": " ".join(sys.argv),
        "forks": args.forks,
        "runs": args.runs,
        "sizes": results,
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
