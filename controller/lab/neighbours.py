"""Room in the kernel's neighbour (ARP) table for big labs, given back when they go.

Every lab host sits on one L2 bridge with the controller, so the controller's side holds one
neighbour entry per host. The kernel's defaults (`net.ipv4.neigh.default.gc_thresh1/2/3` =
128/512/1024) start collecting entries at 512 and refuse new ones past 1,024
("neighbor table overflow"): a lab of 1,000 hosts then loses connections for a reason no
routed fleet has. A lab that needs more raises the thresholds while it is up; the values found
before are kept in one file shared by every lab (`/run/mlfleet-lab/neighbours.json`, with the
labs that need the room) and put back when the last of them goes down, unless someone else
changed them meanwhile (then they are left as they are).

The thresholds are global (the initial network namespace's), as the kernel keeps them.
"""

from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional

SYSCTL = Path("/proc/sys/net/ipv4/neigh/default")
NAMES = ("gc_thresh1", "gc_thresh2", "gc_thresh3")
# Entries per lab host on the controller's side (its bridge address), and headroom for the
# machine's own neighbours and for IPv6-less churn while hosts restart.
PER_HOST = 1
HEADROOM = 256


def needed(hosts: int, current: Mapping[str, int]) -> Optional[Dict[str, int]]:
    """The thresholds a lab of `hosts` hosts needs, or None when the current ones do (pure).

    gc_thresh2 (where collection starts after 5 s) clears every host, gc_thresh3 (the hard
    limit) twice that; gc_thresh1 (below which nothing is collected) as many as the hosts,
    so a quiet host is not forgotten between two waves. Never lowered; nothing is asked
    while the table holds every host without collecting (gc_thresh1 alone is no reason)."""
    entries = hosts * PER_HOST + HEADROOM
    want = {"gc_thresh1": entries, "gc_thresh2": entries, "gc_thresh3": 2 * entries}
    if all(current.get(k, 0) >= want[k] for k in ("gc_thresh2", "gc_thresh3")):
        return None  # the table holds every host without collecting
    return {k: max(current.get(k, 0), v) for k, v in want.items()}


def read(sysctl: Path = SYSCTL) -> Dict[str, int]:
    return {name: int((sysctl / name).read_text().split()[0]) for name in NAMES}


def _write(values: Mapping[str, int], sysctl: Path) -> None:
    # thresh3 first when raising (the kernel wants 1 <= 2 <= 3 to stay sensible), last when
    # lowering.
    raising = values.get("gc_thresh3", 0) >= read(sysctl)["gc_thresh3"]
    order = reversed(NAMES) if raising else NAMES
    for name in order:
        if name in values:
            (sysctl / name).write_text(f"{values[name]}\n")


@contextmanager
def _registry(path: Path) -> Iterator[Dict[str, object]]:
    """The shared record, read and written under an exclusive lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            record: Dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            record = {}
        yield record
        if record.get("labs"):
            path.write_text(json.dumps(record, sort_keys=True))
        else:
            path.unlink(missing_ok=True)
            path.with_suffix(".lock").unlink(missing_ok=True)


def reserve(lab: str, hosts: int, record: Path, sysctl: Path = SYSCTL) -> Optional[Dict[str, int]]:
    """Raise the thresholds for `lab` if its hosts need it; returns what was set (None:
    nothing was needed). A lab that needs nothing leaves no file behind."""
    if not record.exists() and needed(hosts, read(sysctl)) is None:
        return None
    with _registry(record) as shared:
        current = read(sysctl)
        original = shared.get("original")
        baseline = original if isinstance(original, dict) else current
        if needed(hosts, baseline) is None:
            return None  # the machine's own values hold this lab
        shared.setdefault("original", current)
        want = needed(hosts, current)  # None: another lab raised them enough already
        if want is not None:
            _write(want, sysctl)
        labs = dict(shared.get("labs", {}))  # type: ignore[call-overload]
        labs[lab] = hosts
        shared["labs"] = labs
        shared["set"] = read(sysctl)
        return want


def release(lab: str, record: Path, sysctl: Path = SYSCTL) -> bool:
    """`lab` no longer needs the room; when no lab does, the values found before are put
    back (True), unless they were changed since mlfleet set them."""
    if not record.exists():
        return False
    with _registry(record) as shared:
        labs = dict(shared.get("labs", {}))  # type: ignore[call-overload]
        if lab not in labs:
            return False
        del labs[lab]
        shared["labs"] = labs
        if labs:
            return False
        original = shared.get("original")
        if isinstance(original, dict) and read(sysctl) == shared.get("set"):
            _write({k: int(v) for k, v in original.items()}, sysctl)
            return True
        return False
