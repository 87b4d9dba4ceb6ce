"""The Docker engine: reachable or not, what it is, and which GPUs it can wire in."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Set

from mlfleet.agent.engine_api import EngineAPI, EngineUnreachable
from mlfleet.agent.facts import DockerFacts
from mlfleet.agent.hostroot import HostRoot

NVIDIA_HOOKS = ("nvidia-container-runtime-hook", "nvidia-cdi-hook")
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")


def engine_facts(version: Dict[str, Any], info: Dict[str, Any], docker_host: str) -> DockerFacts:
    """Facts from the engine's /version and /info answers (pure)."""
    return DockerFacts(
        reachable=True,
        host=docker_host,
        version=version.get("Version"),
        api_version=version.get("ApiVersion"),
        storage_driver=info.get("Driver"),
        data_root=info.get("DockerRootDir"),
        runtimes=sorted((info.get("Runtimes") or {}).keys()),
        default_runtime=info.get("DefaultRuntime"),
    )


def gpu_wiring(
    facts: DockerFacts,
    hook: Optional[str],
    cdi_specs: List[str],
    kfd: bool,
    dri: bool,
    gpu_vendors: Set[str],
) -> None:
    """Fill `gpu_support` and its evidence: what this engine can really wire (pure)."""
    support: List[str] = []
    evidence: List[str] = []
    if hook:
        # The engine registers its NVIDIA device driver (`--gpus`) only when the toolkit's
        # hook is on its PATH; the standard PATH directories are what engines run with.
        support.append("nvidia")
        evidence.append(f"nvidia: {hook} is on the engine's PATH")
    elif "nvidia" in gpu_vendors:
        evidence.append(
            "nvidia: no nvidia-container-runtime-hook on the engine's PATH "
            "(the NVIDIA container toolkit is not installed)"
        )
    if "nvidia" in facts.runtimes:
        support.append("nvidia-runtime")
        evidence.append("nvidia-runtime: the engine has a runtime named nvidia")
    if cdi_specs:
        major = _major(facts.version)
        if major is not None and major >= 25:
            support.append("cdi")
            evidence.append(f"cdi: NVIDIA CDI spec {cdi_specs[0]}")
        else:
            evidence.append(
                f"cdi: spec {cdi_specs[0]} present but Docker {facts.version} has no CDI (25+)"
            )
    if kfd and dri:
        support.append("amd")
        evidence.append("amd: /dev/kfd and /dev/dri are present")
    elif "amd" in gpu_vendors:
        evidence.append("amd: /dev/kfd or /dev/dri is missing (amdgpu kernel driver not loaded?)")
    if dri and "intel" in gpu_vendors:
        support.append("intel")
        evidence.append("intel: /dev/dri is present")
    facts.gpu_support = support
    facts.gpu_evidence = evidence


def _major(version: Optional[str]) -> Optional[int]:
    try:
        return int((version or "").split(".")[0])
    except ValueError:
        return None


def free_disk_mib(root: HostRoot, data_root: Optional[str]) -> Optional[int]:
    """Free space where the engine keeps images: under the root prefix when the host is
    mounted there, else the path as the engine names it."""
    if not data_root:
        return None
    for path in (root.path(data_root), data_root):
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        return int(st.f_bavail * st.f_frsize // (1024 * 1024))
    return None


def nvidia_cdi_specs(root: HostRoot) -> List[str]:
    specs = []
    for d in CDI_DIRS:
        for path in root.glob(d + "/*"):
            if path.endswith((".yaml", ".yml", ".json")) and "nvidia.com/gpu" in (
                root.read_text(path) or ""
            ):
                specs.append(path)
    return specs


def detect(root: HostRoot, docker_host: str, gpu_vendors: Set[str]) -> DockerFacts:
    api = EngineAPI(docker_host)
    try:
        facts = engine_facts(api.get("/version"), api.get("/info"), docker_host)
    except EngineUnreachable as exc:
        return DockerFacts(reachable=False, host=docker_host, error=str(exc))
    hook = next((p for p in (root.which(h) for h in NVIDIA_HOOKS) if p), None)
    gpu_wiring(
        facts,
        hook=hook,
        cdi_specs=nvidia_cdi_specs(root),
        kfd=root.exists("/dev/kfd"),
        dri=bool(root.glob("/dev/dri/renderD*")),
        gpu_vendors=gpu_vendors,
    )
    facts.free_disk_mib = free_disk_mib(root, facts.data_root)
    return facts
