"""Stand-ins for vendor GPU tools, installed into simulated lab hosts.

Each module is a standalone, standard-library-only program: the lab writes
``install_text(profile)`` to a host's root prefix so the agent meets output in
the exact formats the real tools print, on a machine without GPUs.
"""

from __future__ import annotations

import json
from typing import Any, Dict

SHEBANG = "#!/usr/bin/env python3\n"
PROFILE_PREFIX = "PROFILE = "


def program_text(source_path: str, profile: Dict[str, Any]) -> str:
    """A stand-in module (its source file) as an installed program: a shebang, its
    profile (read as JSON at start, so booleans and nulls survive), then the source."""
    with open(source_path, encoding="utf-8") as handle:
        source = handle.read()
    if source.startswith(SHEBANG):
        # An installed copy already carries a header: replace it, do not double it.
        source = source.split("\n", 2)[2]
    profile_line = f"{PROFILE_PREFIX}__import__('json').loads({json.dumps(profile)!r})\n"
    return SHEBANG + profile_line + source
