"""NVIDIA Jetson: the L4T release, the board and SoC from the device tree, and its one
integrated GPU (which shares the board's RAM)."""

from __future__ import annotations

import re
from typing import Dict, Iterator, List, Optional, Tuple

from mlfleet.agent.detect.finding import Finding
from mlfleet.agent.facts import Gpu, JetsonFacts
from mlfleet.agent.hostroot import HostRoot
from mlfleet.agent.jetson import JETSON_SOCS, jetpack_for_l4t

RELEASE_FILE = "/etc/nv_tegra_release"
DPKG_STATUS = "/var/lib/dpkg/status"
L4T_PACKAGE = "nvidia-l4t-core"
# /proc/device-tree is a link to the second; a container may see only one of them.
DEVICE_TREE_DIRS = ("/proc/device-tree", "/sys/firmware/devicetree/base")
MEMINFO = "/proc/meminfo"

_RELEASE = re.compile(r"^#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")
_L4T = re.compile(r"^\d+\.\d+(?:\.\d+)?$")
_SOC = re.compile(r"^nvidia,(tegra\d+)$")
_MEM_TOTAL = re.compile(r"^MemTotal:\s*(\d+)\s*kB\s*$", re.MULTILINE)


# ----------------------------------------------------------------------------- parsers


def parse_nv_tegra_release(text: str) -> Optional[str]:
    """First line '# R35 (release), REVISION: 3.1, GCID: ...' -> '35.3.1'; None otherwise."""
    lines = text.splitlines()
    match = _RELEASE.match(lines[0].strip() if lines else "")
    if not match:
        return None
    parts = [match.group(1), *match.group(2).split(".")]
    while len(parts) < 3:  # "REVISION: 4" would mean 36.4.0
        parts.append("0")
    return ".".join(parts)


def _stanzas(text: str) -> Iterator[Dict[str, str]]:
    """dpkg control stanzas as {field: first-line value}; continuation lines are skipped."""
    stanza: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            stanza[key.strip()] = value.strip()
    if stanza:
        yield stanza


def parse_dpkg_version(status: str, package: str = L4T_PACKAGE) -> Optional[str]:
    """The version of an installed package in /var/lib/dpkg/status text, or None.

    A package removed with its configuration kept ('deinstall ok config-files') does not
    count: its files, and so its L4T release, are gone.
    """
    for stanza in _stanzas(status):
        if stanza.get("Package") == package:
            state = stanza.get("Status", "").split()
            if state and state[-1] == "installed" and stanza.get("Version"):
                return stanza["Version"]
    return None


def l4t_from_package_version(version: str) -> Optional[str]:
    """nvidia-l4t-core '36.4.3-20250107174145' -> '36.4.3'; None if it names no release."""
    upstream = version.split(":", 1)[-1].split("-", 1)[0]  # drop an epoch, then the build
    return upstream if _L4T.match(upstream) else None


def parse_dt_string(data: bytes) -> Optional[str]:
    """A device-tree string property (NUL-terminated) -> text; None when empty."""
    text = data.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
    return text or None


def parse_dt_string_list(data: bytes) -> List[str]:
    """A device-tree string list (NUL-separated, e.g. `compatible`) -> its entries."""
    entries = (part.decode("utf-8", errors="replace").strip() for part in data.split(b"\0"))
    return [entry for entry in entries if entry]


def soc_from_compatible(entries: List[str]) -> Optional[str]:
    """The SoC, e.g. 'tegra234', from the `nvidia,tegraNNN` entry of a compatible list.

    Not simply the last entry: JetPack 6 on an AGX Orin ends the list with
    'nvidia,tegra23x' (NVIDIA/jetson-gpio#125).
    """
    socs = [match.group(1) for match in map(_SOC.match, entries) if match]
    return socs[-1] if socs else None


def parse_mem_total_mib(text: str) -> Optional[int]:
    """/proc/meminfo 'MemTotal:  4059240 kB' -> 3964 (MiB); None when there is no such line."""
    match = _MEM_TOTAL.search(text)
    return int(match.group(1)) // 1024 if match else None


# ----------------------------------------------------------------------------- detector


def detect(root: HostRoot) -> Finding[JetsonFacts]:
    """The Jetson facts and GPU of the host; an empty Finding when it is not a Jetson."""
    dt_dir, model_raw, compatible = _device_tree(root)
    soc = soc_from_compatible(compatible)
    tegra = soc is not None or any(entry.startswith("nvidia,tegra") for entry in compatible)
    release = root.read_text(RELEASE_FILE)
    if not tegra and release is None:
        return Finding()  # the dpkg database is not read on every other host

    warnings: List[str] = []
    l4t, source = _l4t(root, release, warnings)
    if l4t is None:
        what = f"SoC {soc}" if soc else "a Tegra device tree"
        warnings.append(
            f"this looks like an NVIDIA Jetson ({what}) but no L4T release was found in "
            f"{RELEASE_FILE} or as an installed {L4T_PACKAGE} in {DPKG_STATUS}; "
            "without L4T its GPU cannot run CUDA containers"
        )
        return Finding(warnings=warnings)

    model = parse_dt_string(model_raw) if model_raw is not None else None
    if soc is None:
        warnings.append(
            f"no nvidia,tegraNNN entry in {dt_dir or DEVICE_TREE_DIRS[0]}/compatible; "
            "the Jetson's SoC and CUDA compute capability are unknown"
        )
    elif soc not in JETSON_SOCS:
        warnings.append(
            f"SoC {soc} is not in the agent's Jetson table; its CUDA compute capability is unknown"
        )
    known = JETSON_SOCS.get(soc or "")
    gpu = Gpu(
        vendor="nvidia",
        model=model or (known[1] if known else "NVIDIA Jetson"),
        memory_mib=_memory_mib(root, warnings),
        compute_capability=known[0] if known else None,
    )
    facts = JetsonFacts(l4t=l4t, jetpack=jetpack_for_l4t(l4t), soc=soc, model=model, source=source)
    return Finding(gpus=[gpu], facts=facts, warnings=warnings)


def _device_tree(root: HostRoot) -> Tuple[Optional[str], Optional[bytes], List[str]]:
    for dt_dir in DEVICE_TREE_DIRS:
        compatible = root.read_bytes(f"{dt_dir}/compatible")
        if compatible is not None:
            return dt_dir, root.read_bytes(f"{dt_dir}/model"), parse_dt_string_list(compatible)
    return None, None, []


def _l4t(root: HostRoot, release: Optional[str], warnings: List[str]) -> Tuple[Optional[str], str]:
    """(L4T release, where it came from): the release file first, then the package."""
    from_file = parse_nv_tegra_release(release) if release is not None else None
    if release is not None and from_file is None:
        first = (release.splitlines() or [""])[0].strip()
        warnings.append(
            f"{RELEASE_FILE}: the first line {first[:80]!r} is not in the form "
            f"'# R35 (release), REVISION: 3.1, ...'; trying the {L4T_PACKAGE} package"
        )
    status = root.read_text(DPKG_STATUS)
    version = parse_dpkg_version(status) if status is not None else None
    from_package = l4t_from_package_version(version) if version else None
    if version and from_package is None:
        warnings.append(
            f"{DPKG_STATUS}: {L4T_PACKAGE} version {version!r} does not start with an "
            "L4T release like 36.4.3"
        )
    if from_file and from_package and from_file != from_package:
        warnings.append(
            f"L4T releases disagree: {RELEASE_FILE} says {from_file}, the installed "
            f"{L4T_PACKAGE} says {from_package} (an interrupted upgrade?); using {from_file}"
        )
    if from_file:
        return from_file, "nv_tegra_release"
    if from_package:
        return from_package, "dpkg"
    return None, ""


def _memory_mib(root: HostRoot, warnings: List[str]) -> Optional[int]:
    text = root.read_text(MEMINFO)
    if text is None:
        return None
    mib = parse_mem_total_mib(text)
    if mib is None:
        warnings.append(f"{MEMINFO} has no 'MemTotal: N kB' line; the Jetson's memory is unknown")
    return mib
