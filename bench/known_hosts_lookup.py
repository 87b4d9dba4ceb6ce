"""Benchmark (not a test): what one connection's host-key lookup costs on the controller
against the size of known_hosts, before and after the shared cache of issue 17.

Run: `.venv/bin/python bench/known_hosts_lookup.py [--sizes 100,1000,10000] [--json OUT]`.
No lab, no root, no network: each size is a known_hosts file of that many lines (ECDSA
keys, names like the lab's, all plain or all hashed as OpenSSH's HashKnownHosts writes
them), and a lookup is what a connect does before the handshake's verdict:

- **before** (controller/transport.py as of `--before`, 8463a77 by default, loaded from git):
  `KnownHosts.load` (the whole file parsed), a new `SSHClient` given every key of it
  (`KnownHosts.fill`), paramiko's lookup of the host's name, the key compared;
- **after** (this tree): `KnownHostsCache.get` (a stat; the parse happened at the first
  lookup, timed apart as "first"), `Connection.host_key_client` (a new `SSHClient` given the
  host's keys only), the same lookup and comparison.

Each lookup is of another host of the file, timed alone (perf_counter); the figures are the
median and the [min-max] spread over `--lookups` lookups (`--before-lookups` for before,
which takes seconds per lookup at 10,000 lines)."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Dict, List

import paramiko

from mlfleet.controller.hosts import Host
from mlfleet.controller.transport import Connection, KnownHostsCache

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "8463a77"  # the parent of the cache's commit


def load_before(rev: str) -> types.ModuleType:
    """controller/transport.py as it was at `rev`, as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:controller/transport.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("mlfleet.controller.transport_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:controller/transport.py", "exec"), module.__dict__)
    return module


def address(i: int) -> str:
    return f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"


def write_known_hosts(path: Path, lines: int, hashed: bool, keys: List[paramiko.PKey]) -> None:
    with path.open("w") as fh:
        for i in range(lines):
            name = paramiko.HostKeys.hash_host(address(i)) if hashed else address(i)
            key = keys[i % len(keys)]
            fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")


def timed(lookup: Callable[[int], None], hosts: List[int]) -> List[float]:
    out = []
    for i in hosts:
        t = time.perf_counter()
        lookup(i)
        out.append(time.perf_counter() - t)
    return out


def summary(seconds: List[float]) -> Dict[str, float]:
    us = sorted(s * 1e6 for s in seconds)
    return {"median_us": statistics.median(us), "min_us": us[0], "max_us": us[-1], "n": len(us)}


def measure(before: types.ModuleType, lines: int, hashed: bool, keys: List[paramiko.PKey],
            lookups: int, before_lookups: int, tmp: Path) -> Dict[str, Any]:  # fmt: skip
    kh = tmp / f"known_hosts-{lines}-{'hashed' if hashed else 'plain'}"
    write_known_hosts(kh, lines, hashed, keys)
    rng = random.Random(lines)

    def expect(client: paramiko.SSHClient, i: int) -> None:
        # paramiko's SSHClient.connect: the host's name looked up, its key of the type
        # compared (client.py, server_hostkey_name .. BadHostKeyException)
        found = client.get_host_keys().get(address(i))
        assert found is not None and found.get(keys[i % len(keys)].get_name()) == keys[i % len(keys)]  # fmt: skip

    def old(i: int) -> None:
        known = before.KnownHosts.load(str(kh), f"h{i}")
        client = paramiko.SSHClient()
        known.fill(client.get_host_keys())
        client.set_missing_host_key_policy(before._HostKeyPolicy(known, f"h{i}", False))
        expect(client, i)

    cache = KnownHostsCache()

    def new(i: int) -> None:
        conn = Connection(Host(f"h{i}", {"ansible_host": address(i), "mlfleet_known_hosts": str(kh)}),
                          known_hosts_cache=cache)  # fmt: skip
        known = cache.get(conn.host.known_hosts, conn.host.name)
        expect(conn.host_key_client(known, address(i), 22), i)

    first = timed(new, [rng.randrange(lines)])
    after = timed(new, [rng.randrange(lines) for _ in range(lookups)])
    was = timed(old, [rng.randrange(lines) for _ in range(before_lookups)])
    return {"lines": lines, "names": "hashed" if hashed else "plain", "before": summary(was),
            "after_first": summary(first), "after": summary(after)}  # fmt: skip


def show(us: float) -> str:
    return f"{us / 1e3:.1f} ms" if us >= 1000 else f"{us:.0f} us"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--before-lookups", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="the git revision of 'before'")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    before = load_before(args.before)
    keys = [paramiko.ECDSAKey.generate() for _ in range(64)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for hashed in (False, True):
            for lines in (int(s) for s in args.sizes.split(",")):
                row = measure(before, lines, hashed, keys, args.lookups, args.before_lookups,
                              Path(tmp))  # fmt: skip
                rows.append(row)
                b, f, a = row["before"], row["after_first"], row["after"]
                print(f"{lines:>6} lines {row['names']:>6}: before {show(b['median_us'])}"
                      f" [{show(b['min_us'])}-{show(b['max_us'])}] (n={b['n']}),"
                      f" after {show(a['median_us'])} [{show(a['min_us'])}-{show(a['max_us'])}]"
                      f" (n={a['n']}; the first, with the parse: {show(f['median_us'])}),"
                      f" {b['median_us'] / a['median_us']:.0f}x", flush=True)  # fmt: skip
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
               "paramiko": paramiko.__version__}  # fmt: skip
    print(f"machine: {machine}")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
