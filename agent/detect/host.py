"""The host itself: architecture, OS, kernel, CPUs, memory, Python."""

from __future__ import annotations

import os
import platform
import shlex
import socket
from typing import Dict, Optional

from mlfleet.agent.facts import OsFacts
from mlfleet.agent.hostroot import HostRoot
from mlfleet.agent.variants import normalize_arch


def parse_os_release(text: str) -> Dict[str, str]:
    """/etc/os-release (shell-style KEY=value, values may be quoted)."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("'\"")]
        values[key] = parts[0] if parts else ""
    return values


def parse_meminfo_mib(text: str) -> Optional[int]:
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def _read_host_file(root: HostRoot, path: str) -> Optional[str]:
    # Files every Linux host has; a hardware-only root prefix (the lab's) may lack them,
    # and then the machine's own are the truth.
    return root.read_text(path) or HostRoot("/").read_text(path)


def detect_os(root: HostRoot) -> OsFacts:
    release = parse_os_release(_read_host_file(root, "/etc/os-release") or "")
    return OsFacts(
        id=release.get("ID"),
        version_id=release.get("VERSION_ID"),
        pretty_name=release.get("PRETTY_NAME"),
        kernel=platform.release(),
    )


def memory_mib(root: HostRoot) -> Optional[int]:
    text = _read_host_file(root, "/proc/meminfo")
    return parse_meminfo_mib(text) if text else None


def hostname() -> str:
    return socket.gethostname()


def arch() -> str:
    return normalize_arch(platform.machine().lower())


def cpus() -> int:
    return os.cpu_count() or 1
