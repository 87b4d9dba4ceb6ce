"""Ansible-style host ranges: `edge[01:20]`, `node-[a:c]`, `web[0:10:2]`."""

from __future__ import annotations

import re
import string
from typing import List

_RANGE = re.compile(r"\[([^\]:]+):([^\]:]+)(?::(\d+))?\]")


def expand_host_pattern(pattern: str) -> List[str]:
    """Expand every `[start:end(:step)]` in a host name; a name without one is returned as is.

    Numeric bounds keep the start's zero padding (`[001:100]`); alphabetic bounds are single
    letters. Raises ValueError with a message on malformed ranges.
    """
    match = _RANGE.search(pattern)
    if not match:
        if "[" in pattern or "]" in pattern:
            raise ValueError(f"malformed host range in {pattern!r} (expected e.g. edge[01:20])")
        return [pattern]
    start, end, step_text = match.group(1), match.group(2), match.group(3)
    step = int(step_text) if step_text else 1
    if step < 1:
        raise ValueError(f"range step must be at least 1 in {pattern!r}")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    items: List[str]
    if start.isdigit() and end.isdigit():
        lo, hi = int(start), int(end)
        if lo > hi:
            raise ValueError(f"range start {start} is after its end {end} in {pattern!r}")
        width = len(start) if start.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(lo, hi + 1, step)]
    elif (
        len(start) == 1
        and len(end) == 1
        and start in string.ascii_letters
        and end in string.ascii_letters
    ):
        if start > end:
            raise ValueError(f"range start {start} is after its end {end} in {pattern!r}")
        items = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise ValueError(
            f"range [{start}:{end}] in {pattern!r} must be two numbers or two single letters"
        )
    return [name for item in items for name in expand_host_pattern(head + item + tail)]
