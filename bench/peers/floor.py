"""The floor: what nothing can be much faster than. In parallel over plain `ssh`, one
command line per host: `docker pull`, `docker rm -f`, `docker run` with the same spec as
the other tools, then poll the engine's health status every 0.2 s until healthy.

    python bench/peers/floor.py INVENTORY TAG

No checks, no records, no rollback, no variant selection; the old container is killed,
not stopped.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import List

from mlfleet.controller.hosts import Host
from mlfleet.controller.inventory import load_inventory

PROBE = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"
WAIT = (
    "for i in $(seq 300); do"
    ' s=$(docker inspect -f "{{.State.Health.Status}}" sentiment);'
    ' [ "$s" = healthy ] && exit 0; [ "$s" = unhealthy ] && break; sleep 0.2;'
    " done; echo not healthy: $s >&2; exit 1"
)


def script(host: Host, tag: str) -> str:
    image = f"{host.registry}/mlfleet-lab/sentiment:{tag}-cpu"
    run = [
        "docker", "run", "-d", "--name", "sentiment", "-p", "8080:8080",
        "-v", f"{host.vars['model_data_dir']}:/data:ro",
        "--security-opt", "no-new-privileges", "--restart", "unless-stopped",
        "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
        "--health-cmd", f'python3 -c "{PROBE}"', "--health-interval", "500ms",
        "--health-timeout", "2s", "--health-retries", "3", "--health-start-period", "3s",
        image,
    ]  # fmt: skip
    return (
        f"set -e; docker pull -q {shlex.quote(image)} >/dev/null;"
        " docker rm -f sentiment >/dev/null 2>&1 || true;"
        f" {' '.join(shlex.quote(a) for a in run)} >/dev/null; {WAIT}"
    )


def ssh_argv(host: Host, command: str) -> List[str]:
    return [
        "ssh", "-i", str(host.ssh_key), "-p", str(host.port),
        "-o", f"UserKnownHostsFile={host.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        f"{host.user}@{host.address}", command,
    ]  # fmt: skip


def main() -> int:
    inventory, tag = Path(sys.argv[1]), sys.argv[2]
    hosts = load_inventory(inventory).select(None)
    procs = [(h, subprocess.Popen(ssh_argv(h, script(h, tag)))) for h in hosts]
    failed = [h.name for h, p in procs if p.wait() != 0]
    if failed:
        print(f"floor: failed on {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
