"""What a lab instance left behind on this machine, for the tests that check `lab down`."""

from __future__ import annotations

from pathlib import Path
from typing import List

from mlfleet.controller.lab import network
from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.lab.processes import pids_mentioning


def what_remains(layout: LabLayout) -> List[str]:
    found: List[str] = []
    found += [f"directory {p}" for p in (layout.base, layout.run) if p.exists()]
    if network.interface_exists(layout.bridge):
        found.append(f"bridge {layout.bridge}")
    found += [f"interface {i}" for i in network.interfaces_with_prefix(layout.veth_prefix)]
    found += [f"netns {ns}" for ns in network.list_netns() if ns.startswith(layout.netns_prefix)]
    found += [
        f"mount {m}" for m in network.mounts_under(layout.base) + network.mounts_under(layout.run)
    ]
    found += [
        f"process {p}" for p in pids_mentioning([str(layout.base) + "/", str(layout.run) + "/"])
    ]
    found += [f"cgroup {c}" for c in Path("/sys/fs/cgroup").glob(f"*/{layout.cgroup_prefix}*")]
    return found
