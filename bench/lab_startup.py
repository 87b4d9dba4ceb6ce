"""Benchmark (not a test): how long `mlfleet lab up` takes cold and warm, and the memory
its daemons use. Run as root: `.venv/bin/python bench/lab_startup.py [--profiles FILE]`.

cold: no cached base layer (debootstrap + compress + push), a fresh lab;
warm: the base layer cached, a fresh lab; again: `lab up` on a lab that is up (no-op).
Memory: RSS and PSS summed over every process of the lab (sshd, dockerd, containerd,
crond, registry), read from /proc right after `up`. Uses its own lab name and subnet.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.lab.processes import cmdline, pids_mentioning
from mlfleet.controller.lab.profiles import DEFAULT_PROFILES_YAML

NAME = "bench"
SUBNET = "10.76.0.0/24"


def mlfleet(*args: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "mlfleet.controller", "lab", "--name", NAME, *args],
                   check=True, capture_output=True)  # fmt: skip
    return time.monotonic() - started


def memory_kib(layout: LabLayout) -> dict:
    rss = pss = 0
    by_kind: dict = {}
    for pid in pids_mentioning([str(layout.base) + "/", str(layout.run) + "/"]):
        try:
            fields = dict(
                line.split(":", 1)
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
            )
        except OSError:
            continue
        r, p = int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])
        rss, pss = rss + r, pss + p
        kind = Path(cmdline(pid).split()[0]).name if cmdline(pid) else "?"
        by_kind[kind] = by_kind.get(kind, 0) + p
    return {"rss_kib": rss, "pss_kib": pss, "pss_by_program_kib": by_kind}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=Path, help="profiles YAML (default: the built-in five)")
    parser.add_argument("--skip-cold", action="store_true", help="keep the cached base layer")
    args = parser.parse_args()
    layout = LabLayout(NAME)
    with tempfile.TemporaryDirectory() as tmp:
        profiles = Path(tmp) / "profiles.yml"
        text = (
            args.profiles.read_text()
            if args.profiles
            else f"subnet: {SUBNET}\n" + DEFAULT_PROFILES_YAML
        )
        profiles.write_text(text)
        up = ("up", "--profiles", str(profiles), "--inventory", str(Path(tmp) / "inv.yml"))
        result: dict = {"machine": f"{platform.node()} {platform.machine()}, {platform.platform()}"}
        mlfleet("down")
        if not args.skip_cold:
            mlfleet("down", "--purge")
            result["cold_s"] = round(mlfleet(*up), 2)
            mlfleet("down")
        result["warm_s"] = round(mlfleet(*up), 2)
        result["again_s"] = round(mlfleet(*up), 2)
        time.sleep(2)  # let the engines settle after start-up
        result["hosts"] = len(json.loads(subprocess.run(
            [sys.executable, "-m", "mlfleet.controller", "lab", "--name", NAME, "status", "--json"],
            check=True, capture_output=True, text=True).stdout)["hosts"])  # fmt: skip
        result["memory"] = memory_kib(layout)
        result["down_s"] = round(mlfleet("down"), 2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
