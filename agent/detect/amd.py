"""AMD GPUs: the KFD topology (what the kernel driver sees), names from rocm-smi, and the
ROCm userspace version.

The KFD topology is authoritative for which GPUs exist and their gfx target; rocm-smi only
adds marketing names, because its own "GFX Version" and key spelling change between ROCm
releases.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mlfleet.agent.detect.finding import Finding
from mlfleet.agent.facts import AmdFacts, Gpu
from mlfleet.agent.hostroot import HostRoot, ProgramHung
from mlfleet.agent.rocm import gfx_name

KFD_NODES = "/sys/class/kfd/kfd/topology/nodes"
KFD_DEVICE = "/dev/kfd"
ROCM_VERSION_FILE = "/opt/rocm/.info/version"
PRODUCT_ARGS = ("--showproductname", "--json")
# HSA heap types of a GPU node's memory banks that are the card's own memory (frame
# buffer, CPU-visible and not); 0 is system memory, which an APU's node reports.
VRAM_HEAPS = (1, 2)
_MIB = 1024 * 1024
_GFX_LLVM = re.compile(r"^\d{1,2}[0-9a-f]{2}$")
_CARD_KEY = re.compile(r"^card(\d+)$")
_HEX_ONLY = re.compile(r"^0x[0-9a-fA-F]+$")


@dataclass(frozen=True)
class KfdGpu:
    """One GPU node of the KFD topology."""

    node: int
    gfx: Optional[str]  # "gfx90a"; None when the target number makes no sense
    device_id: Optional[str]  # "0x740f"
    render_minor: Optional[int]  # 128 -> /dev/dri/renderD128
    pci_bus_id: Optional[str]  # "0000:43:00.0"


@dataclass(frozen=True)
class ProductName:
    """One card of `rocm-smi --showproductname --json`."""

    model: Optional[str]  # "AMD Instinct MI210"; None when rocm-smi gives no usable name
    gfx: Optional[str]  # normalised to the LLVM name, "gfx90a"


# ----------------------------------------------------------------------------- parsers


def parse_kfd_properties(text: str) -> Dict[str, int]:
    """KFD `properties` text (`name value` lines) -> {name: value}; ValueError on a bad line."""
    props: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"line {number} ({line.strip()!r}) is not a 'name value' pair")
        props[parts[0]] = int(parts[1])
    return props


def gfx_from_target(target: int) -> Optional[str]:
    """90010 -> 'gfx90a'; None for 0 (a CPU node) or a number with no valid digits."""
    major, rest = divmod(target, 10000)
    minor, stepping = divmod(rest, 100)
    if major == 0 or minor > 15 or stepping > 15:
        return None
    return gfx_name(target)


def kfd_gpu(node: int, props: Dict[str, int]) -> Optional[KfdGpu]:
    """The GPU a node's properties describe, or None for a CPU node (gfx_target_version 0)."""
    if "gfx_target_version" not in props:
        raise ValueError("it has no gfx_target_version line")
    target = props["gfx_target_version"]
    if target == 0:
        return None
    device = props.get("device_id")
    minor = props.get("drm_render_minor")
    location = props.get("location_id")
    bus_id = None
    if location:  # bus << 8 | device << 3 | function, as the PCI core numbers it
        domain = props.get("domain", 0)
        bus_id = f"{domain:04x}:{location >> 8:02x}:{(location >> 3) & 0x1F:02x}.{location & 7:x}"
    return KfdGpu(
        node=node,
        gfx=gfx_from_target(target),
        device_id=f"0x{device:04x}" if device else None,
        render_minor=minor or None,
        pci_bus_id=bus_id,
    )


def parse_mem_bank(text: str) -> Tuple[int, int]:
    """A memory bank's `properties` -> (heap_type, size_in_bytes); ValueError when malformed."""
    props = parse_kfd_properties(text)
    for key in ("heap_type", "size_in_bytes"):
        if key not in props:
            raise ValueError(f"it has no {key} line")
    return props["heap_type"], props["size_in_bytes"]


def vram_mib(banks: Sequence[Tuple[int, int]]) -> Optional[int]:
    """MiB of the frame-buffer banks; None when there are none (an APU shares system RAM)."""
    sizes = [size for heap, size in banks if heap in VRAM_HEAPS]
    return sum(sizes) // _MIB if sizes else None


def parse_rocm_version(text: str) -> Optional[str]:
    """`/opt/rocm/.info/version` ('6.1.2-119', or plain '6.4.1') -> '6.1.2'; None if not one."""
    lines = text.strip().splitlines()
    match = re.match(r"^(\d+\.\d+(?:\.\d+)?)(?:$|[-.~+])", lines[0].strip() if lines else "")
    return match.group(1) if match else None


def parse_gfx_label(label: str) -> Optional[str]:
    """rocm-smi's "GFX Version" -> the LLVM target name, e.g. 'gfx90a'; None if unreadable.

    ROCm 6.0.x printed major*1000 + minor*100 + stepping in decimal ('gfx9010' for gfx90a,
    'gfx11000' for gfx1100); later releases print the LLVM name, sometimes with features
    ('gfx942:sramecc+:xnack-'). A decimal form has 4 digits starting with 9 or 5 digits,
    which no LLVM name has (those are 3 characters for gfx9, 4 starting with 1 after).
    """
    name = label.strip().lower().split(":")[0]
    if not name.startswith("gfx"):
        return None
    digits = name[3:]
    if digits.isdigit() and (len(digits) == 5 or (len(digits) == 4 and digits[0] == "9")):
        major, rest = divmod(int(digits), 1000)
        minor, stepping = divmod(rest, 100)
        if minor > 15 or stepping > 15:
            return None
        return f"gfx{major}{minor:x}{stepping:x}"
    return name if _GFX_LLVM.match(digits) else None


def _series(card: Dict[str, object]) -> Optional[str]:
    # "Card Series" from ROCm 6.0, "Card series" before; some captures only carry
    # "Device Name". "N/A" and bare PCI ids (ROCm 4.0 printed "0x738c") name nothing.
    for key in ("Card Series", "Card series", "Device Name"):
        value = str(card.get(key, "")).strip()
        if value and value != "N/A" and not _HEX_ONLY.match(value):
            return value
    return None


def parse_product_names(text: str) -> List[ProductName]:
    """`rocm-smi --showproductname --json` output -> one ProductName per card, card0 first.

    Text around the JSON (warnings some releases print) is ignored; ValueError when there
    is no JSON object.
    """
    start = text.find("{")
    if start < 0:
        raise ValueError("there is no JSON object in it")
    data, _ = json.JSONDecoder().raw_decode(text, start)
    if not isinstance(data, dict):
        raise ValueError("the JSON is not an object")
    cards = []
    for key, value in data.items():
        match = _CARD_KEY.match(str(key))
        if match and isinstance(value, dict):
            cards.append((int(match.group(1)), value))
    cards.sort(key=lambda item: item[0])  # card10 after card9, not after card1
    return [
        ProductName(model=_series(card), gfx=parse_gfx_label(str(card.get("GFX Version", ""))))
        for _, card in cards
    ]


# ----------------------------------------------------------------------------- detector


def detect(root: HostRoot) -> Finding[AmdFacts]:
    """AMD GPUs and ROCm facts of the host; an empty Finding when KFD shows no GPU."""
    warnings: List[str] = []
    found: List[Tuple[KfdGpu, str]] = []
    for node, path in _node_dirs(root):
        gpu = _read_node(root, node, path, warnings)
        if gpu is not None:
            found.append((gpu, path))
    if not found:
        return Finding(warnings=warnings)

    names = _product_names(root, [gpu.gfx for gpu, _ in found], warnings)
    gpus = [
        Gpu(
            vendor="amd",
            model=name or _generic_name(gpu),
            memory_mib=_memory(root, path, warnings),
            gfx=gpu.gfx,
            pci_bus_id=gpu.pci_bus_id,
            device_id=gpu.device_id,
            render_node=f"/dev/dri/renderD{gpu.render_minor}" if gpu.render_minor else None,
        )
        for (gpu, path), name in zip(found, names)
    ]
    kfd = root.exists(KFD_DEVICE)
    if not kfd:
        warnings.append(
            f"the KFD topology shows {len(gpus)} AMD GPU(s) but {KFD_DEVICE} is missing: "
            "nothing can run ROCm work here (in a container, pass --device /dev/kfd)"
        )
    facts = AmdFacts(
        rocm_version=_rocm_version(root, warnings), kfd=kfd, render_nodes=_render_nodes(root)
    )
    return Finding(gpus=gpus, facts=facts, warnings=warnings)


def _node_dirs(root: HostRoot) -> List[Tuple[int, str]]:
    nodes = []
    for path in root.glob(KFD_NODES + "/*"):
        name = path.rsplit("/", 1)[-1]
        if name.isdigit():
            nodes.append((int(name), path))
    return sorted(nodes)  # numeric: node 10 after node 9


def _read_node(root: HostRoot, node: int, path: str, warnings: List[str]) -> Optional[KfdGpu]:
    props_path = f"{path}/properties"
    text = root.read_text(props_path)
    if text is None:
        warnings.append(f"{props_path} could not be read; skipped KFD node {node}")
        return None
    try:
        return kfd_gpu(node, parse_kfd_properties(text))
    except ValueError as exc:
        warnings.append(f"{props_path}: {exc}; skipped KFD node {node}")
        return None


def _memory(root: HostRoot, node_path: str, warnings: List[str]) -> Optional[int]:
    banks = []
    for bank_path in root.glob(f"{node_path}/mem_banks/*/properties"):
        text = root.read_text(bank_path)
        if text is None:
            continue
        try:
            banks.append(parse_mem_bank(text))
        except ValueError as exc:
            warnings.append(f"{bank_path}: {exc}; its size is not counted")
    return vram_mib(banks)


def _generic_name(gpu: KfdGpu) -> str:
    return f"AMD GPU {gpu.gfx or gpu.device_id or 'of unknown type'}"


def _product_names(
    root: HostRoot, gfxs: Sequence[Optional[str]], warnings: List[str]
) -> List[Optional[str]]:
    """Names from rocm-smi in KFD node order, None where rocm-smi cannot tell."""
    none: List[Optional[str]] = [None] * len(gfxs)
    command = "rocm-smi " + " ".join(PRODUCT_ARGS)
    try:
        result = root.run("rocm-smi", PRODUCT_ARGS)
    except ProgramHung as exc:
        warnings.append(f"{exc}; AMD GPUs are named by their gfx target")
        return none
    except OSError as exc:
        warnings.append(f"{command} could not be started ({exc}); AMD GPUs are named by gfx")
        return none
    if result is None:  # no ROCm userspace
        return none
    try:
        products = parse_product_names(result.stdout)
    except ValueError as exc:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        warnings.append(
            f"{command} exited with status {result.returncode} and its output is not the "
            f"expected JSON ({exc}{': ' + said[0][:120] if said else ''}); "
            "AMD GPUs are named by their gfx target"
        )
        return none
    if len(products) != len(gfxs):
        warnings.append(
            f"{command} lists {len(products)} GPU(s) but the KFD topology has {len(gfxs)}; "
            "cannot tell which name belongs to which GPU, so they are named by gfx target"
        )
        return none
    names: List[Optional[str]] = []
    for index, (product, gfx) in enumerate(zip(products, gfxs)):
        if product.gfx and gfx and product.gfx != gfx:
            warnings.append(
                f"{command} says card{index} is {product.gfx} but KFD says {gfx}; "
                "not using its name"
            )
            names.append(None)
        else:
            names.append(product.model)
    return names


def _rocm_version(root: HostRoot, warnings: List[str]) -> Optional[str]:
    text = root.read_text(ROCM_VERSION_FILE)
    if text is None:
        rocm_smi = root.which("rocm-smi")
        if rocm_smi:
            warnings.append(
                f"{rocm_smi} is installed but {ROCM_VERSION_FILE} is missing, so the ROCm "
                "version is unknown (a distribution's rocm-smi package?)"
            )
        return None
    version = parse_rocm_version(text)
    if version is None:
        warnings.append(
            f"{ROCM_VERSION_FILE} holds {text.strip()[:40]!r}, not a ROCm version like "
            "6.1.2-119; the ROCm version is unknown"
        )
    return version


def _render_nodes(root: HostRoot) -> List[str]:
    def minor(path: str) -> int:
        digits = path.rsplit("renderD", 1)[-1]
        return int(digits) if digits.isdigit() else 1 << 30

    return sorted(root.glob("/dev/dri/renderD*"), key=lambda p: (minor(p), p))
