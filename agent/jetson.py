"""NVIDIA Jetson facts: SoCs, L4T -> JetPack, and which L4T a container may run on."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from mlfleet.agent.cuda import parse_version

# SoC (last entry of /proc/device-tree/compatible) -> (compute capability, board family).
JETSON_SOCS: Dict[str, Tuple[str, str]] = {
    "tegra234": ("8.7", "NVIDIA Jetson AGX Orin Developer Kit"),
    "tegra194": ("7.2", "NVIDIA Jetson AGX Xavier Developer Kit"),
    "tegra186": ("6.2", "NVIDIA Jetson TX2 Developer Kit"),
    "tegra210": ("5.3", "NVIDIA Jetson Nano Developer Kit"),
}

# L4T release -> JetPack release, from NVIDIA's JetPack archive.
_JETPACK: Dict[str, str] = {
    "36.4.3": "6.2",
    "36.4.0": "6.1",
    "36.3.0": "6.0",
    "36.2.0": "6.0 DP",
    "35.6.0": "5.1.4",
    "35.5.0": "5.1.3",
    "35.4.1": "5.1.2",
    "35.3.1": "5.1.1",
    "35.2.1": "5.1",
    "35.1.0": "5.0.2",
    "32.6.1": "4.6",
    "32.5.2": "4.5.1",
    "32.5.1": "4.5.1",
    "32.5.0": "4.5",
}


def jetpack_for_l4t(l4t: str) -> Optional[str]:
    """'35.3.1' -> '5.1.1'; the 32.7.x line maps to 4.6.x; None when unknown."""
    if l4t in _JETPACK:
        return _JETPACK[l4t]
    parts = l4t.split(".")
    if len(parts) >= 2 and parts[:2] == ["32", "7"]:
        return "4.6." + (parts[2] if len(parts) > 2 else "0")
    return None


def l4t_mismatch(image_l4t: str, host_l4t: str) -> Optional[str]:
    """Why an image built for `image_l4t` cannot run on a host with `host_l4t`, or None.

    NVIDIA's rules: any 35.x image runs on any 35.x host; 36.x splits at 36.4 (images
    below 36.4 with hosts below it, 36.4+ with 36.4+); older releases need the same
    major.minor (r32.7 images on r32.7 hosts).
    """
    image, host = parse_version(image_l4t), parse_version(host_l4t)
    if image[0] != host[0]:
        return f"host runs L4T {host_l4t}; variant is built for L4T {image_l4t} (a different major release)"
    if image[0] == 35:
        return None
    if image[0] >= 36:
        image_new, host_new = image[:2] >= (36, 4), host[:2] >= (36, 4)
        if image_new != host_new:
            side = "36.4 or newer" if image_new else "older than 36.4"
            return f"host runs L4T {host_l4t}; variant's L4T {image_l4t} needs a host {side}"
        return None
    if image[:2] != host[:2]:
        return f"host runs L4T {host_l4t}; variant's L4T {image_l4t} needs the same {image[0]}.{image[1]} release"
    return None
