"""Run every detector against a host root and assemble HostFacts."""

from __future__ import annotations

import platform
from typing import Callable, List, Optional, Set, TypeVar

from mlfleet.agent.detect import amd, docker, drm, host, jetson, nvidia
from mlfleet.agent.detect.drm import DrmCard
from mlfleet.agent.detect.finding import Finding
from mlfleet.agent.engine_api import default_docker_host
from mlfleet.agent.facts import SCHEMA, AmdFacts, HostFacts, JetsonFacts, NvidiaFacts, OsFacts
from mlfleet.agent.hostroot import HostRoot

T = TypeVar("T")


def _guarded(name: str, warnings: List[str], fn: Callable[[], T], fallback: T) -> T:
    """A detector that fails adds a warning; the others go on."""
    try:
        return fn()
    except Exception as exc:
        warnings.append(f"{name} detection failed: {type(exc).__name__}: {exc}")
        return fallback


def detect_host_facts(root_prefix: str = "/", docker_host: Optional[str] = None) -> HostFacts:
    """Everything the agent knows about the host, read under `root_prefix`."""
    root = HostRoot(root_prefix)
    warnings: List[str] = []
    facts = HostFacts(
        schema=SCHEMA,
        hostname=host.hostname(),
        arch=host.arch(),
        os=_guarded(
            "OS",
            warnings,
            lambda: host.detect_os(root),
            OsFacts(None, None, None, platform.release()),
        ),
        cpus=host.cpus(),
        memory_mib=_guarded("memory", warnings, lambda: host.memory_mib(root), None),
        python=platform.python_version(),
        root=root.prefix,
    )
    # Annotated so that the empty fallbacks take the detector's type.
    found_nvidia: Finding[NvidiaFacts] = _guarded(
        "NVIDIA", warnings, lambda: nvidia.detect(root), Finding()
    )
    found_jetson: Finding[JetsonFacts] = _guarded(
        "Jetson", warnings, lambda: jetson.detect(root), Finding()
    )
    found_amd: Finding[AmdFacts] = _guarded("AMD", warnings, lambda: amd.detect(root), Finding())
    if found_jetson.facts is not None:
        # A Jetson's integrated GPU also has an NVIDIA kernel module (JetPack 6); the Jetson
        # view (L4T, SoC) is the one that decides what runs there.
        found_nvidia = Finding()
    for finding in (found_nvidia, found_jetson, found_amd):
        facts.gpus += finding.gpus
        warnings += finding.warnings
    facts.nvidia = found_nvidia.facts
    facts.jetson = found_jetson.facts
    facts.amd = found_amd.facts

    cards: List[DrmCard] = _guarded("DRM", warnings, lambda: drm.detect(root), [])
    known: Set[str] = {g.vendor for g in facts.gpus}
    others = drm.other_gpus(cards, known)
    for gpu in others:
        if gpu.vendor == "nvidia":
            warnings.append(f"{gpu.model} is present but no NVIDIA driver is loaded")
        elif gpu.vendor == "amd":
            warnings.append(f"{gpu.model} is present but the amdgpu/KFD driver is not loaded")
    facts.gpus += others

    vendors = {g.vendor for g in facts.gpus}
    address = docker_host or default_docker_host(root.prefix)
    facts.docker = _guarded(
        "Docker engine", warnings, lambda: docker.detect(root, address, vendors), None
    )
    if facts.docker and not facts.docker.reachable:
        warnings.append(facts.docker.error or f"Docker engine at {address} is not reachable")
    facts.warnings = warnings
    return facts
