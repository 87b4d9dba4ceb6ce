"""Variant selection: the first variant, in playbook order, that will really run on a host,
and for every variant tried before it the reason it would not (pure).

Reasons are written for operators, with the numbers that decided them; several failed
checks of one variant are joined with "; ". A GPU the Docker engine cannot wire into a
container does not count, and a host whose GPUs are unusable for that reason gets a
warning as well, so that a GPU host quietly running a CPU image is seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mlfleet.agent.cuda import max_cuda_for_driver, min_driver_for_cuda, parse_version
from mlfleet.agent.facts import DockerFacts, Gpu, HostFacts
from mlfleet.agent.jetson import JETSON_SOCS, l4t_mismatch
from mlfleet.agent.variants import Variant, normalize_arch

VENDOR_LABELS: Dict[str, str] = {"nvidia": "NVIDIA", "amd": "AMD", "intel": "Intel"}


@dataclass
class Rejection:
    variant: str
    reason: str


@dataclass
class Selection:
    """The chosen variant (None when none fits) and why each earlier one was passed over."""

    variant: Optional[str]
    rejected: List[Rejection] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "variant": self.variant,
            "rejected": [{"variant": r.variant, "reason": r.reason} for r in self.rejected],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


@dataclass
class Fit:
    """What checking one variant against the host found."""

    reasons: List[str] = field(default_factory=list)  # empty: the variant fits
    warnings: List[str] = field(default_factory=list)  # shown whether or not it fits
    notes: List[str] = field(default_factory=list)  # shown only if it is selected


def select_variant(variants: Sequence[Variant], facts: HostFacts) -> Selection:
    """Try `variants` in order against `facts`; the first that fits wins."""
    selection = Selection(variant=None)
    for variant in variants:
        fit = check_variant(variant, facts)
        for warning in fit.warnings:
            if warning not in selection.warnings:
                selection.warnings.append(warning)
        if not fit.reasons:
            selection.variant = variant.name
            selection.notes.extend(fit.notes)
            break
        selection.rejected.append(Rejection(variant.name, "; ".join(fit.reasons)))
    return selection


def check_variant(variant: Variant, facts: HostFacts) -> Fit:
    """Every reason `variant` cannot run on the host described by `facts`."""
    fit = Fit()
    host_arch = normalize_arch(facts.arch)
    if variant.arch and host_arch not in variant.arch:
        fit.reasons.append(f"host is {host_arch}; variant is built for {', '.join(variant.arch)}")
    if variant.is_jetson:
        _check_jetson(variant, facts, fit)
    elif variant.gpu == "nvidia":
        _check_nvidia_dgpu(variant, facts, fit)
    elif variant.gpu == "amd":
        _check_amd(variant, facts, fit)
    elif variant.gpu == "intel":
        _check_intel(variant, facts, fit)
    return fit


# --- NVIDIA discrete GPUs -------------------------------------------------------------


def _check_nvidia_dgpu(variant: Variant, facts: HostFacts, fit: Fit) -> None:
    gpus = facts.gpus_of("nvidia")
    if facts.jetson is not None:
        fit.reasons.append(
            f"host is a Jetson (L4T {facts.jetson.l4t}); variant is a discrete-GPU image"
        )
        return
    if not gpus and facts.nvidia is None:
        fit.reasons.append("no NVIDIA GPU on this host")
        return
    _check_wiring(variant, facts, gpus, fit)
    driver_ok = _check_driver(variant, facts, gpus, fit)
    if driver_ok:
        _count_gpus(variant, gpus, fit)


def _check_driver(variant: Variant, facts: HostFacts, gpus: List[Gpu], fit: Fit) -> bool:
    """Add the driver's reason, if any; True when the driver can run the variant."""
    nvidia = facts.nvidia
    if nvidia is None:
        fit.reasons.append(f"{_describe(gpus)} {_is(gpus)} present but no NVIDIA driver is loaded")
        return False
    if nvidia.error:
        fit.reasons.append(f"the NVIDIA driver is not usable: {nvidia.error}")
        return False
    if not nvidia.driver_version:
        fit.reasons.append(
            f"NVIDIA driver version unknown; cannot tell whether it runs CUDA {variant.cuda}"
        )
        return False
    if variant.cuda is None:  # parse_variants requires it; a hand-built Variant may not
        fit.reasons.append("variant does not say which CUDA it is built with")
        return False
    driver = nvidia.driver_version
    cuda = _major_minor(variant.cuda)
    needed = min_driver_for_cuda(cuda, variant.cuda_minor_compat)
    try:
        too_old = needed is None or parse_version(driver) < parse_version(needed)
    except ValueError:
        fit.reasons.append(f"NVIDIA driver version {driver!r} cannot be read as a version")
        return False
    if not too_old:
        newest = max_cuda_for_driver(driver)
        if newest is not None and newest < cuda:
            fit.notes.append(
                f"driver {driver} supports CUDA <= {_dotted(newest)}; variant {variant.name}"
                f" (CUDA {variant.cuda}) relies on minor-version compatibility (no JIT of newer PTX)"
            )
        return True
    fit.reasons.append(
        f"{_driver_supports(driver)}; variant {variant.name} is built with CUDA {variant.cuda}"
        f" ({_needs_driver(cuda, needed, variant.cuda_minor_compat)})"
    )
    return False


def _driver_supports(driver: str) -> str:
    newest = max_cuda_for_driver(driver)
    if newest is None:
        return f"driver {driver} is older than any CUDA 11 driver"
    return f"driver {driver} supports CUDA <= {_dotted(newest)}"


def _needs_driver(cuda: Tuple[int, int], needed: Optional[str], minor_compat: bool) -> str:
    if needed is None:
        return f"this agent's driver table does not cover CUDA {_dotted(cuda)}"
    if minor_compat:
        return f"needs driver >= {needed} with minor-version compatibility"
    return f"needs driver >= {needed}; minor-version compatibility is off for this variant"


# --- NVIDIA Jetson ----------------------------------------------------------------------


def _check_jetson(variant: Variant, facts: HostFacts, fit: Fit) -> None:
    jetson = facts.jetson
    if variant.l4t is None:  # parse_variants requires it; a hand-built Variant may not
        fit.reasons.append("variant does not say which L4T release it is built for")
        return
    if jetson is None:
        if facts.gpus_of("nvidia"):
            fit.reasons.append(
                f"host has a discrete NVIDIA GPU, not a Jetson; variant is an L4T {variant.l4t} image"
            )
        else:
            fit.reasons.append(
                f"host is not a Jetson (no L4T release found); variant is built for L4T {variant.l4t}"
            )
        return
    gpus = facts.gpus_of("nvidia") or [_jetson_gpu(facts)]
    _check_wiring(variant, facts, gpus, fit)
    try:
        mismatch = l4t_mismatch(variant.l4t, jetson.l4t)
    except ValueError:
        mismatch = f"host's L4T release {jetson.l4t!r} cannot be read as a version"
    if mismatch:
        fit.reasons.append(mismatch)
    _count_gpus(variant, gpus, fit)


def _jetson_gpu(facts: HostFacts) -> Gpu:
    """The integrated GPU of a Jetson whose detector listed none: known from its SoC."""
    jetson = facts.jetson
    assert jetson is not None
    soc = JETSON_SOCS.get(jetson.soc or "")
    return Gpu(
        vendor="nvidia",
        model=jetson.model or (soc[1] if soc else "NVIDIA Jetson"),
        compute_capability=soc[0] if soc else None,
    )


# --- AMD and Intel ------------------------------------------------------------------------


def _check_amd(variant: Variant, facts: HostFacts, fit: Fit) -> None:
    gpus = facts.gpus_of("amd")
    if not gpus:
        fit.reasons.append("no AMD GPU on this host")
        return
    _check_wiring(variant, facts, gpus, fit)
    amd = facts.amd
    if amd is None or not amd.kfd:
        fit.reasons.append(
            f"{_describe(gpus)} {_is(gpus)} present but /dev/kfd is missing"
            " (the amdgpu kernel driver is not loaded)"
        )
    if variant.rocm:
        _check_rocm(variant, amd.rocm_version if amd else None, fit)
    _count_gpus(variant, gpus, fit)


def _check_rocm(variant: Variant, host_rocm: Optional[str], fit: Fit) -> None:
    assert variant.rocm is not None
    wanted = _major_minor(variant.rocm)
    release = _leading_version(host_rocm) if host_rocm else None
    if release is None:
        # The container brings its own ROCm userspace; only the kernel driver comes from the host.
        what = "no ROCm userspace" if not host_rocm else f"ROCm {host_rocm!r} (not a version)"
        fit.notes.append(
            f"host has {what}; variant {variant.name} brings its own ROCm {variant.rocm} userspace"
        )
        return
    if release[:2] < wanted:
        fit.reasons.append(f"host has ROCm {host_rocm}; variant needs ROCm >= {variant.rocm}")


def _check_intel(variant: Variant, facts: HostFacts, fit: Fit) -> None:
    gpus = facts.gpus_of("intel")
    if not gpus:
        fit.reasons.append("no Intel GPU on this host")
        return
    _check_wiring(variant, facts, gpus, fit)
    _count_gpus(variant, gpus, fit)


# --- Engine wiring ------------------------------------------------------------------------


def _check_wiring(variant: Variant, facts: HostFacts, gpus: List[Gpu], fit: Fit) -> None:
    """Reject (and warn) when the engine cannot hand the host's GPUs to a container."""
    vendor = VENDOR_LABELS[variant.gpu]
    docker = facts.docker
    if docker is None or not docker.reachable:
        where = f" at {docker.host}" if docker is not None else ""
        why = f": {docker.error}" if docker is not None and docker.error else ""
        reason = f"the Docker engine{where} could not be asked which GPUs it can use{why}"
        fit.reasons.append(reason)
        fit.warnings.append(f"{reason}; {vendor} GPU variants were skipped")
        return
    missing = _missing_wiring(variant, docker)
    if missing is None:
        return
    reason = f"{_describe(gpus)} {_is(gpus)} present but the Docker engine cannot use {_it(gpus)}: {missing}"
    fit.reasons.append(reason)
    fit.warnings.append(f"{reason}; {vendor} GPU variants were skipped")


def _missing_wiring(variant: Variant, docker: DockerFacts) -> Optional[str]:
    """What the engine lacks to wire this variant's GPUs, or None when it has it."""
    support = set(docker.gpu_support)
    if variant.is_jetson:
        if "nvidia-runtime" in support:
            return None
        return (
            "no nvidia runtime (Jetson containers get the GPU with runtime=nvidia: install the"
            " NVIDIA container toolkit and run `nvidia-ctk runtime configure`)"
        )
    if variant.gpu == "nvidia":
        if support & {"nvidia", "cdi"}:
            return None
        runtime = "nvidia-runtime" in support or "nvidia" in docker.runtimes
        # The detector notes a CDI spec the engine is too old to use (CDI needs Docker 25+).
        spec_unused = any(e.startswith("cdi:") for e in docker.gpu_evidence)
        pieces = ["no nvidia-container-runtime-hook on its PATH"]
        if not runtime:
            pieces.append("no nvidia runtime")
        if spec_unused:
            pieces.append(
                f"a CDI spec that Docker {docker.version or '(version unknown)'} cannot use (CDI needs 25 or newer)"
            )
        else:
            pieces.append("no CDI spec")
        if runtime:
            fix = "the nvidia runtime alone does not serve GPU requests: put the toolkit's hook on dockerd's PATH"
        else:
            fix = "install the NVIDIA container toolkit"
        return f"{', '.join(pieces)} ({fix})"
    if variant.gpu in support:
        return None
    devices = "/dev/kfd and /dev/dri" if variant.gpu == "amd" else "/dev/dri"
    return f"the engine reports no way to pass {devices} into a container"


# --- Per-GPU requirements -------------------------------------------------------------------


def _count_gpus(variant: Variant, gpus: List[Gpu], fit: Fit) -> None:
    """Count the GPUs that meet every per-GPU requirement; too few is a reason."""
    failures: List[str] = []
    good: List[Gpu] = []
    for gpu in gpus:
        problems = _gpu_problems(variant, gpu)
        if problems:
            failures.extend(p for p in problems if p not in failures)
        else:
            good.append(gpu)
    vendor = VENDOR_LABELS[variant.gpu]
    if len(good) >= variant.min_gpus:
        if failures:
            fit.notes.append(
                f"{_count(len(good), vendor + ' GPU')} of {len(gpus)} qualify for variant"
                f" {variant.name}: {'; '.join(failures)}"
            )
        return
    if good or not failures:
        qualify = " that qualify" if failures else ""
        fit.reasons.append(
            f"variant needs {_count(variant.min_gpus, vendor + ' GPU')}{qualify};"
            f" host has {len(good)}"
        )
    fit.reasons.extend(failures)


def _gpu_problems(variant: Variant, gpu: Gpu) -> List[str]:
    """Why one host GPU does not count for `variant` (empty when it does)."""
    problems = [
        _compute_problem(variant, gpu),
        _memory_problem(variant, gpu),
        _gfx_problem(variant, gpu),
    ]
    return [p for p in problems if p]


def _compute_problem(variant: Variant, gpu: Gpu) -> Optional[str]:
    wanted = variant.min_compute_capability
    if wanted is None:
        return None
    if gpu.compute_capability is None:
        return f"compute capability of {gpu.model} is unknown; variant needs >= {wanted}"
    try:
        too_low = parse_version(gpu.compute_capability) < parse_version(wanted)
    except ValueError:
        return f"{gpu.model} reports compute capability {gpu.compute_capability!r}; variant needs >= {wanted}"
    if too_low:
        return f"{gpu.model} has compute capability {gpu.compute_capability}; variant needs >= {wanted}"
    return None


def _memory_problem(variant: Variant, gpu: Gpu) -> Optional[str]:
    wanted = variant.min_gpu_memory_mib
    if wanted is None:
        return None
    if gpu.memory_mib is None:
        return f"memory of {gpu.model} is unknown; variant needs >= {wanted} MiB"
    if gpu.memory_mib < wanted:
        return f"{gpu.model} has {gpu.memory_mib} MiB of memory; variant needs >= {wanted} MiB"
    return None


def _gfx_problem(variant: Variant, gpu: Gpu) -> Optional[str]:
    if not variant.gfx:
        return None
    targets = ", ".join(variant.gfx)
    if gpu.gfx is None:
        return f"GPU target of {gpu.model} is unknown; variant is built for {targets}"
    if gpu.gfx.lower() not in variant.gfx:
        return f"host GPU is {gpu.gfx}; variant is built for {targets}"
    return None


# --- Wording ------------------------------------------------------------------------------


def _describe(gpus: List[Gpu]) -> str:
    """'Tesla T4', '2x NVIDIA A100-SXM4-80GB', or '3 GPUs (A, B)' for a mix."""
    models = list(dict.fromkeys(g.model for g in gpus))
    if not gpus:
        return "the GPU"
    if len(gpus) == 1:
        return gpus[0].model
    if len(models) == 1:
        return f"{len(gpus)}x {models[0]}"
    return f"{len(gpus)} GPUs ({', '.join(models)})"


def _is(gpus: List[Gpu]) -> str:
    return "are" if len(gpus) > 1 else "is"


def _it(gpus: List[Gpu]) -> str:
    return "them" if len(gpus) > 1 else "it"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _major_minor(text: str) -> Tuple[int, int]:
    parts = parse_version(text)
    return parts[0], parts[1]


def _dotted(version: Tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


_LEADING_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")


def _leading_version(text: str) -> Optional[Tuple[int, int]]:
    """'6.1.2-119' -> (6, 1); None when the text starts with no major.minor."""
    m = _LEADING_VERSION.match(text)
    return (int(m.group(1)), int(m.group(2))) if m else None
