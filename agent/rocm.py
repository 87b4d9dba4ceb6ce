"""AMD GPU target names and the KFD topology encoding of them."""

from __future__ import annotations

import re

_GFX = re.compile(r"^gfx(\d{1,2})([0-9a-f])([0-9a-f])$")


def gfx_target_version(gfx: str) -> int:
    """'gfx90a' -> 90010 (major*10000 + minor*100 + stepping), as KFD's topology writes it."""
    m = _GFX.match(gfx.strip().lower())
    if not m:
        raise ValueError(f"not an AMD GPU target name: {gfx!r} (expected e.g. gfx90a, gfx1100)")
    return int(m.group(1)) * 10000 + int(m.group(2), 16) * 100 + int(m.group(3), 16)


def gfx_name(target_version: int) -> str:
    """90010 -> 'gfx90a'; the inverse of gfx_target_version."""
    major, rest = divmod(target_version, 10000)
    minor, stepping = divmod(rest, 100)
    return f"gfx{major}{minor:x}{stepping:x}"
