"""Plain-text renderings of facts and selections for operators at a terminal."""

from __future__ import annotations

from typing import List

from mlfleet.agent.facts import HostFacts


def facts_text(facts: HostFacts) -> str:
    lines: List[str] = [
        f"host      {facts.hostname} ({facts.arch}, {facts.os.pretty_name or facts.os.id}, "
        f"kernel {facts.os.kernel}, {facts.cpus} CPUs, {facts.memory_mib} MiB, python {facts.python})"
    ]
    if facts.root != "/":
        lines.append(f"root      {facts.root}")
    for i, gpu in enumerate(facts.gpus):
        detail = (gpu.compute_capability and f"compute {gpu.compute_capability}") or gpu.gfx or ""
        memory = f"{gpu.memory_mib} MiB" if gpu.memory_mib else ""
        lines.append(f"gpu {i}     {gpu.vendor} {gpu.model} {memory} {detail}".rstrip())
    if not facts.gpus:
        lines.append("gpus      none")
    if facts.nvidia:
        n = facts.nvidia
        state = f" [{n.error}]" if n.error else ""
        lines.append(
            f"nvidia    driver {n.driver_version}, CUDA <= {n.cuda_version} (from {n.source}){state}"
        )
    if facts.jetson:
        j = facts.jetson
        lines.append(f"jetson    L4T {j.l4t}, JetPack {j.jetpack}, {j.soc} ({j.model})")
    if facts.amd:
        a = facts.amd
        lines.append(
            f"amd       ROCm {a.rocm_version or 'not installed'}, /dev/kfd {'present' if a.kfd else 'missing'}"
        )
    d = facts.docker
    if d and d.reachable:
        support = ", ".join(d.gpu_support) or "none"
        lines.append(
            f"docker    {d.version} (API {d.api_version}), {d.storage_driver}, {d.data_root}, "
            f"{d.free_disk_mib} MiB free; GPU wiring: {support}"
        )
    elif d:
        lines.append(f"docker    unreachable at {d.host}")
    lines += [f"warning   {w}" for w in facts.warnings]
    return "\n".join(lines)


def selection_text(selection: object) -> str:
    data = selection.to_dict()  # type: ignore[attr-defined]
    lines = [f"variant   {data['variant'] or 'none fits this host'}"]
    lines += [f"rejected  {r['variant']}: {r['reason']}" for r in data["rejected"]]
    lines += [f"note      {n}" for n in data.get("notes", [])]
    lines += [f"warning   {w}" for w in data.get("warnings", [])]
    return "\n".join(lines)
