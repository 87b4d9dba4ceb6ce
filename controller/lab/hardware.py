"""A host's hardware profile rendered as the files a real machine of that kind has.

`render_root` is pure: it lists the entries (files, stand-in programs, device nodes) under
the host's root prefix; `write_root` puts them on disk. The agent's detectors read the
same paths under that prefix as they read under `/` on a real host.

A host whose GPU driver is not loaded (the classic: a kernel update without the module
rebuilt) is `render_root(profile, driver_loaded=False)`: the kernel's part (module files,
device nodes, DRM and KFD entries) is gone, the user space (nvidia-smi, the toolkit's hook,
rocm-smi, /opt/rocm) stays installed.
"""

from __future__ import annotations

import hashlib
import os
import platform
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from mlfleet.agent.cuda import max_cuda_for_driver
from mlfleet.agent.jetson import JETSON_SOCS
from mlfleet.agent.rocm import gfx_target_version
from mlfleet.controller.lab.profiles import GpuSpec, HostProfile
from mlfleet.controller.lab.standins import nvidia_hook, nvidia_smi, rocm_smi

# PCI ids of the simulated boards (vendor, device), as `/sys/class/drm/card*/device/*` show.
VENDOR_IDS = {"nvidia": "0x10de", "amd": "0x1002", "intel": "0x8086"}
_DEVICE_IDS = {"nvidia": "0x20b2", "amd": "0x740f", "intel": "0x56a0"}
# Character-device numbers real drivers use; the lab's stand-ins get these numbers too.
_NVIDIA_MAJOR, _DRI_MAJOR = 195, 226
# The NVIDIA kernel module's own file: there while the module is loaded, and what the lab's
# toolkit hook looks for before it gives a container a GPU.
DRIVER_FILE = "proc/driver/nvidia/version"


@dataclass(frozen=True)
class RootFile:
    path: str  # relative to the root prefix
    content: Union[str, bytes]
    mode: int = 0o644


@dataclass(frozen=True)
class RootDevice:
    """A stand-in device node. It is a clone of /dev/null (1,3) so that a container given
    this device can open it; its real driver's numbers are kept in `real` for reference."""

    path: str
    real: str  # e.g. "195:0"


Entry = Union[RootFile, RootDevice]


def driver_vendors(profile: HostProfile) -> List[str]:
    """The vendors whose GPU driver the host loads as a kernel module (what `driver_loaded`
    takes away). A Jetson's GPU driver is part of its L4T kernel: not among them."""
    vendors = ["nvidia"] if profile.nvidia_driver else []
    if any(g.vendor == "amd" for g in profile.gpus):
        vendors.append("amd")
    return vendors


def render_root(profile: HostProfile, driver_loaded: bool = True) -> List[Entry]:
    """Every file and device the host's root prefix holds for its profile; without
    `driver_loaded`, what is left of it when the GPU drivers' kernel modules are not loaded."""
    entries: List[Entry] = []
    if profile.nvidia_driver:
        entries += _nvidia(profile, driver_loaded)
    if profile.jetson:
        entries += _jetson(profile)
    if any(g.vendor == "amd" for g in profile.gpus):
        entries += _amd(profile, driver_loaded)
    entries += _drm(profile, () if driver_loaded else driver_vendors(profile))
    if profile.container_toolkit:
        # On a real host the toolkit installs the hook in /usr/bin, where the engine finds it.
        hook: Dict[str, Any] = {"driver": profile.nvidia_driver or "0"}
        if profile.nvidia_driver:
            # What the hook checks before it gives a container a GPU (not on a Jetson).
            hook["driver_file"] = DRIVER_FILE
        entries.append(
            RootFile("usr/bin/nvidia-container-runtime-hook", nvidia_hook.install_text(hook), 0o755)
        )
        if profile.jetson:
            # Jetson engines run GPU containers with runtime="nvidia" (registered by the lab).
            entries.append(RootFile("usr/bin/nvidia-container-runtime", _RUNTIME_WRAPPER, 0o755))
    return entries


_RUNTIME_WRAPPER = """#!/bin/sh
# Stand-in for nvidia-container-runtime: a runc shim that adds nothing of its own.
exec runc "$@"
"""


def _gpu_uuid(host: str, index: int) -> str:
    h = hashlib.sha256(f"{host}/{index}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _nvidia(profile: HostProfile, loaded: bool) -> List[Entry]:
    driver = profile.nvidia_driver or ""
    nvidia_gpus = [g for g in profile.gpus if g.vendor == "nvidia"]
    cuda = max_cuda_for_driver(driver)
    smi_profile = {
        "driver": driver,
        "cuda": f"{cuda[0]}.{cuda[1]}" if cuda else "N/A",
        "mode": profile.nvidia_smi if loaded else "no_driver",
        "gpus": [
            {
                "name": g.model,
                "memory_mib": g.memory_mib,
                "compute_capability": g.compute_capability,
                "uuid": _gpu_uuid(profile.name, i),
                "bus_id": f"00000000:{0x07 + i:02X}:00.0",
            }
            for i, g in enumerate(nvidia_gpus)
        ],
    }
    arch = platform.machine()
    if profile.nvidia_kernel_module == "open":
        nvrm = (
            f"NVRM version: NVIDIA UNIX Open Kernel Module for {arch}  {driver}  Release Build  "
            "(dvs-builder@U16-A24-9-2)  Thu Oct 10 12:15:00 UTC 2024\n"
        )
    else:
        nvrm = f"NVRM version: NVIDIA UNIX {arch} Kernel Module  {driver}  Thu Dec 19 18:56:32 UTC 2023\n"
    nvrm += "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    entries: List[Entry] = [
        RootFile("usr/bin/nvidia-smi", nvidia_smi.install_text(smi_profile), 0o755)
    ]
    if not loaded:
        return entries
    entries += [
        RootFile("sys/module/nvidia/version", driver + "\n"),
        RootFile(DRIVER_FILE, nvrm),
        RootDevice("dev/nvidiactl", f"{_NVIDIA_MAJOR}:255"),
        RootDevice("dev/nvidia-uvm", "508:0"),
    ]
    entries += [
        RootDevice(f"dev/nvidia{i}", f"{_NVIDIA_MAJOR}:{i}") for i in range(len(nvidia_gpus))
    ]
    return entries


def _jetson(profile: HostProfile) -> List[Entry]:
    jetson = profile.jetson
    assert jetson is not None
    major, _, rest = jetson.l4t.partition(".")
    revision = rest or "0"
    board = {"tegra234": "t186ref", "tegra194": "t186ref", "tegra186": "t186ref"}.get(
        jetson.soc, "t210ref"
    )
    entries: List[Entry] = [
        RootFile("proc/device-tree/model", jetson.model + "\0"),
        RootFile(
            "proc/device-tree/compatible",
            f"nvidia,p3737-0000+p3701-0000\0nvidia,{jetson.soc}\0".encode(),
        ),
        RootDevice("dev/nvhost-ctrl-gpu", "508:1"),
    ]
    if jetson.release_file:
        entries.append(
            RootFile(
                "etc/nv_tegra_release",
                f"# R{major} (release), REVISION: {revision}, GCID: 32790763, BOARD: {board}, "
                "EABI: aarch64, DATE: Wed Mar 15 07:54:12 UTC 2023\n"
                "# KERNEL_VARIANT: oot\n",
            )
        )
    # Newer L4T releases drop the file; the package database still names the version.
    entries.append(
        RootFile(
            "var/lib/dpkg/status",
            "Package: nvidia-l4t-core\nStatus: install ok installed\nArchitecture: arm64\n"
            f"Version: {jetson.l4t}-20250107212440\n"
            f"Description: NVIDIA Core Package (compute capability {JETSON_SOCS[jetson.soc][0]})\n\n",
        )
    )
    return entries


def _amd(profile: HostProfile, loaded: bool) -> List[Entry]:
    amd_gpus = [g for g in profile.gpus if g.vendor == "amd"]
    entries: List[Entry] = _kfd(amd_gpus) if loaded else []
    if profile.rocm:
        entries.append(RootFile("opt/rocm/.info/version", f"{profile.rocm}-119\n"))
        smi = {
            "rocm": profile.rocm,
            "gpus": [
                {"name": g.model, "gfx": g.gfx, "memory_mib": g.memory_mib,
                 "device_id": _DEVICE_IDS["amd"]}
                for g in amd_gpus
            ],
        }  # fmt: skip
        entries.append(RootFile("usr/bin/rocm-smi", rocm_smi.install_text(smi), 0o755))
    return entries


def _kfd(amd_gpus: Sequence[GpuSpec]) -> List[Entry]:
    """The amdgpu driver's compute interface: /dev/kfd and the KFD topology."""
    entries: List[Entry] = [RootDevice("dev/kfd", "511:0")]
    topo = "sys/class/kfd/kfd/topology/nodes"
    # Node 0 is the CPU: KFD lists it with gfx_target_version 0.
    entries.append(RootFile(f"{topo}/0/name", "\n"))
    entries.append(
        RootFile(
            f"{topo}/0/properties",
            _kfd_properties(cpu_cores=os.cpu_count() or 1, simd=0, gfx=0, vendor=0, device=0,
                            render_minor=0),
        )
    )  # fmt: skip
    for i, gpu in enumerate(amd_gpus, start=1):
        assert gpu.gfx is not None
        entries += [
            RootFile(f"{topo}/{i}/name", gpu.gfx + "\n"),
            RootFile(
                f"{topo}/{i}/properties",
                _kfd_properties(
                    cpu_cores=0,
                    simd=416,
                    gfx=gfx_target_version(gpu.gfx),
                    vendor=0x1002,
                    device=int(_DEVICE_IDS["amd"], 16),
                    render_minor=127 + i,
                ),
            ),
            RootFile(
                f"{topo}/{i}/mem_banks/0/properties",
                f"heap_type 1\nsize_in_bytes {gpu.memory_mib * 1024 * 1024}\nflags 0\n"
                "width 4096\nmem_clk_max 1600\n",
            ),
        ]
    return entries


def _kfd_properties(
    *, cpu_cores: int, simd: int, gfx: int, vendor: int, device: int, render_minor: int
) -> str:
    return (
        f"cpu_cores_count {cpu_cores}\nsimd_count {simd}\nmem_banks_count 1\n"
        f"gfx_target_version {gfx}\nvendor_id {vendor}\ndevice_id {device}\n"
        f"location_id 0\ndrm_render_minor {render_minor}\nmax_engine_clk_fcompute 1700\n"
    )


def _drm(profile: HostProfile, unloaded: Sequence[str]) -> List[Entry]:
    """DRM cards and nodes of the GPUs whose driver is loaded (a card keeps its number)."""
    entries: List[Entry] = []
    for i, gpu in enumerate(profile.gpus):
        if gpu.vendor in unloaded:
            continue
        card = f"sys/class/drm/card{i}/device"
        entries += [
            RootFile(f"{card}/vendor", VENDOR_IDS[gpu.vendor] + "\n"),
            RootFile(f"{card}/device", _DEVICE_IDS[gpu.vendor] + "\n"),
            RootFile(
                f"sys/class/drm/renderD{128 + i}/device/vendor", VENDOR_IDS[gpu.vendor] + "\n"
            ),
        ]
        if gpu.vendor in ("amd", "intel"):
            entries += [
                RootDevice(f"dev/dri/card{i}", f"{_DRI_MAJOR}:{i}"),
                RootDevice(f"dev/dri/renderD{128 + i}", f"{_DRI_MAJOR}:{128 + i}"),
            ]
    return entries


def write_root(root: Path, entries: List[Entry]) -> None:
    """Create the entries under `root` (files are rewritten, devices already there kept).
    Device stand-ins are char devices (1,3) when the kernel lets us make them, else empty
    files: detection only needs them to exist."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        path = root / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(entry, RootFile):
            data = entry.content.encode() if isinstance(entry.content, str) else entry.content
            # Whole or not at all: a live host's agent may run this program right now.
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.chmod(entry.mode)
            tmp.replace(path)
        elif not os.path.lexists(path):
            try:
                os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            except PermissionError:
                path.touch()


def unloaded_entries(profile: HostProfile) -> List[Entry]:
    """What the host's root holds only while its GPU drivers are loaded."""
    left = {e.path for e in render_root(profile, driver_loaded=False)}
    return [e for e in render_root(profile) if e.path not in left]


def remove_root(root: Path, entries: List[Entry]) -> None:
    """Remove the entries from `root`, and the directories that leaves empty (an unloaded
    module leaves no /sys/module/nvidia, no KFD topology node behind)."""
    for entry in entries:
        path = root / entry.path
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == root or root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break  # not empty: it holds something else
