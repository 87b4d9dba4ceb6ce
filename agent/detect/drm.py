"""GPUs as the kernel's DRM subsystem lists them (/sys/class/drm): the way to see GPUs no
vendor detector covers, such as Intel ones, and vendor GPUs whose compute driver is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, List, Optional

from mlfleet.agent.facts import Gpu
from mlfleet.agent.hostroot import HostRoot

DRM_CLASS = "/sys/class/drm"
VENDORS = {"0x10de": "nvidia", "0x1002": "amd", "0x8086": "intel"}
_LABELS = {"nvidia": "NVIDIA", "amd": "AMD", "intel": "Intel"}
# Display-only chips every rack server or VM has (BMC graphics, emulated adapters): they
# have a DRM card but nothing a model could run on, so they are not reported as GPUs.
DISPLAY_ONLY = {
    "0x1a03": "ASPEED BMC graphics",
    "0x102b": "Matrox BMC graphics",
    "0x1af4": "virtio-gpu",
    "0x1b36": "QEMU graphics",
    "0x1234": "Bochs/QEMU standard VGA",
    "0x15ad": "VMware SVGA",
}
_CARD = re.compile(r"^card(\d+)$")  # not connectors such as card0-HDMI-A-1
_PCI_ID = re.compile(r"^0x[0-9a-f]{4}$")


@dataclass(frozen=True)
class DrmCard:
    card: str  # "card1"
    vendor: str  # nvidia | amd | intel | other
    vendor_id: str  # "0x8086"
    device_id: Optional[str]  # "0x56a0"
    render_node: Optional[str]  # "/dev/dri/renderD129"


def parse_pci_id(text: str) -> Optional[str]:
    """A sysfs PCI id file ('0x8086\\n') -> '0x8086'; None when it is not one."""
    value = text.strip().lower()
    return value if _PCI_ID.match(value) else None


def vendor_name(vendor_id: str) -> str:
    """'0x8086' -> 'intel'; unknown vendors are 'other'."""
    return VENDORS.get(vendor_id, "other")


def detect(root: HostRoot) -> List[DrmCard]:
    """One DrmCard per PCI graphics device that has a DRM card node, in card order.

    Cards without a PCI vendor (platform devices: simpledrm, Tegra display, MI300X
    partition nodes) and unreadable vendor files are skipped: there is no warning channel
    here, and such a card is no GPU a container could be given anyway.
    """
    cards = []
    for path in root.glob(f"{DRM_CLASS}/card*"):
        name = path.rsplit("/", 1)[-1]
        match = _CARD.match(name)
        if not match:
            continue
        vendor_id = parse_pci_id(root.read_text(f"{path}/device/vendor") or "")
        if vendor_id is None:
            continue
        device_id = parse_pci_id(root.read_text(f"{path}/device/device") or "")
        cards.append(
            (
                int(match.group(1)),
                DrmCard(
                    card=name,
                    vendor=vendor_name(vendor_id),
                    vendor_id=vendor_id,
                    device_id=device_id,
                    render_node=_render_node(root, path, int(match.group(1)), vendor_id),
                ),
            )
        )
    return [card for _, card in sorted(cards, key=lambda item: item[0])]


def _render_node(root: HostRoot, card_path: str, number: int, vendor_id: str) -> Optional[str]:
    # The device's own drm/ directory names its render node; this holds even when the
    # numbering is off by one (simpledrm held card0 at boot, the GPU became card1 but got
    # renderD128).
    nodes = [p.rsplit("/", 1)[-1] for p in root.glob(f"{card_path}/device/drm/renderD*")]
    if nodes:
        return f"/dev/dri/{sorted(nodes)[0]}"
    # Without that directory, the kernel's default pairing: cardN with renderD(128+N),
    # accepted only when that render node belongs to the same vendor.
    candidate = f"renderD{128 + number}"
    other = parse_pci_id(root.read_text(f"{DRM_CLASS}/{candidate}/device/vendor") or "")
    if other == vendor_id:
        return f"/dev/dri/{candidate}"
    return None


def other_gpus(cards: Iterable[DrmCard], known_vendors: Iterable[str]) -> List[Gpu]:
    """Gpu records for the cards whose vendor no vendor detector reported.

    `known_vendors` are the vendors the NVIDIA, AMD and Jetson detectors found (e.g.
    {"amd"}); their cards are already counted, with better names. Display-only chips are
    left out (see DISPLAY_ONLY).
    """
    known = set(known_vendors)
    gpus = []
    for card in cards:
        if card.vendor in known or card.vendor_id in DISPLAY_ONLY:
            continue
        label = _LABELS.get(card.vendor)
        if label:
            model = f"{label} GPU {card.device_id}" if card.device_id else f"{label} GPU"
        else:
            model = f"GPU {card.vendor_id}:{card.device_id or 'unknown'}"
        gpus.append(
            Gpu(
                vendor=card.vendor,
                model=model,
                device_id=card.device_id,
                render_node=card.render_node,
            )
        )
    return gpus
