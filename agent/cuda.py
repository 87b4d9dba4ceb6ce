"""NVIDIA's CUDA toolkit / driver compatibility facts, in one place.

Sources: NVIDIA's CUDA Toolkit release notes, table 3 ("CUDA Toolkit and Corresponding
Driver Versions", Linux x86_64) and the minor-version compatibility rule. See
shared/reference/hardware-facts.md.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

Version = Tuple[int, ...]

# CUDA toolkit (major, minor) -> minimum Linux driver for full (not minor-version) support.
CUDA_MIN_DRIVER: Dict[Tuple[int, int], str] = {
    (11, 0): "450.51.05",
    (11, 1): "455.23",
    (11, 2): "460.27.03",
    (11, 3): "465.19.01",
    (11, 4): "470.42.01",
    (11, 5): "495.29.05",
    (11, 6): "510.39.01",
    (11, 7): "515.43.04",
    (11, 8): "520.61.05",
    (12, 0): "525.60.13",
    (12, 1): "530.30.02",
    (12, 2): "535.54.03",
    (12, 3): "545.23.06",
    (12, 4): "550.54.14",
    (12, 5): "555.42.02",
    (12, 6): "560.28.03",
    (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
    (13, 1): "590.44.01",
    (13, 2): "595.45.04",
}

# Minor-version compatibility: any toolkit of a major release runs (with a limited feature
# set: no JIT of newer PTX) on a driver at least this new.
MINOR_COMPAT_MIN_DRIVER: Dict[int, str] = {11: "450.80.02", 12: "525", 13: "580"}


def parse_version(text: str) -> Version:
    """'535.146.02' -> (535, 146, 2). Raises ValueError on anything else."""
    parts = text.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in parts)


def max_cuda_for_driver(driver: str) -> Optional[Tuple[int, int]]:
    """The newest CUDA toolkit a driver fully supports (what `nvidia-smi` shows), or None."""
    have = parse_version(driver)
    best: Optional[Tuple[int, int]] = None
    for cuda, needed in CUDA_MIN_DRIVER.items():
        if have >= parse_version(needed) and (best is None or cuda > best):
            best = cuda
    return best


def min_driver_for_cuda(cuda: Tuple[int, int], minor_compat: bool) -> Optional[str]:
    """The oldest driver that runs an image built with toolkit `cuda`, or None if unknown."""
    if minor_compat and cuda[0] in MINOR_COMPAT_MIN_DRIVER:
        return MINOR_COMPAT_MIN_DRIVER[cuda[0]]
    if cuda in CUDA_MIN_DRIVER:
        return CUDA_MIN_DRIVER[cuda]
    # A toolkit newer than the table within a known major still needs at least the newest
    # listed entry of that major.
    known = [c for c in CUDA_MIN_DRIVER if c[0] == cuda[0] and c <= cuda]
    return CUDA_MIN_DRIVER[max(known)] if known else None
