"""The lab's network and disks: a bridge on the controller side, one namespace per host
joined to it by a veth pair, rate limits, a blocked registry route, loop-mounted disks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import List

from mlfleet.controller.lab.processes import run


def interface_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def create_bridge(name: str, address: str, prefixlen: int) -> None:
    run(["ip", "link", "add", name, "type", "bridge"])
    run(["ip", "addr", "add", f"{address}/{prefixlen}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_interface(name: str) -> None:
    if interface_exists(name):
        run(["ip", "link", "del", name], check=False)


def interfaces_with_prefix(prefix: str) -> List[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix))


def list_netns() -> List[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def create_host_netns(netns: str, veth: str, bridge: str, address: str, prefixlen: int) -> None:
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    run(["ip", "link", "set", veth, "master", bridge, "up"])
    run(["ip", "-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])


def delete_netns(netns: str) -> None:
    run(["ip", "netns", "del", netns], check=False)


def delete_all(links: List[str], netns: List[str]) -> None:
    """Delete links, then namespaces, in one `ip -batch` (one process for a lab of any
    size; `-force` goes on past one that is already gone)."""
    lines = [f"link del {name}" for name in links] + [f"netns del {name}" for name in netns]
    if lines:
        subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, check=False)  # fmt: skip


def rate_limit(netns: str, veth: str, kbit: int) -> None:
    """Token-bucket limit on both directions of a host's link (netem is not available)."""
    spec = ["tbf", "rate", f"{kbit}kbit", "burst", "32kbit", "latency", "400ms"]
    run(["tc", "qdisc", "replace", "dev", veth, "root", *spec])
    run(["tc", "qdisc", "replace", "dev", "eth0", "root", *spec], netns=netns)


def block_tcp(netns: str, address: str, port: int) -> None:
    """Make `address:port` unreachable from inside the namespace (an air-gapped site)."""
    run(
        ["iptables", "-w", "-I", "OUTPUT", "-p", "tcp", "-d", address, "--dport", str(port),
         "-j", "REJECT", "--reject-with", "tcp-reset"],
        netns=netns,
    )  # fmt: skip


def set_link(veth: str, up: bool) -> None:
    run(["ip", "link", "set", veth, "up" if up else "down"])


def link_is_up(veth: str) -> bool:
    """Whether the controller's end of a host's link is up (`set_link` takes it down)."""
    try:
        flags = int(Path(f"/sys/class/net/{veth}/flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 0x1)  # IFF_UP


def listening(netns: str, address: str, port: int) -> bool:
    """Whether a TCP socket in the namespace listens on `address:port`."""
    return bool(run(["ss", "-Hltn", "src", f"{address}:{port}"], check=False, netns=netns).strip())


def netns_pids(netns: str) -> List[int]:
    """Every process in the namespace: its daemons, their sessions, what cron started."""
    return [int(p) for p in run(["ip", "netns", "pids", netns], check=False).split() if p.isdigit()]


def make_loop_disk(image: Path, mountpoint: Path, size_mib: int) -> None:
    image.parent.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    with image.open("wb") as fh:
        fh.truncate(size_mib * 1024 * 1024)
    run(["mkfs.ext4", "-q", "-F", str(image)])
    run(["mount", "-o", "loop", str(image), str(mountpoint)])


def mounts_under(path: Path) -> List[str]:
    """Mount points at or below `path`, deepest first."""
    prefix = str(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: -p.count("/"))


def unmount_all(path: Path) -> None:
    for _ in range(3):  # a mount may be stacked on itself (dockerd binds its data root)
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            if run(["umount", point], check=False) == "" and os.path.ismount(point):
                run(["umount", "-l", point], check=False)
