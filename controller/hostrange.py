"""Ansible-style host ranges: `edge[01:20]`, `node-[a:c]`, `web[0:10:2]`.

A pattern is counted before it is expanded: one that would name more than `MAX_RANGE_HOSTS`
hosts is refused without building a single name (`h[0:99999999]` costs nothing to refuse).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

MAX_RANGE_HOSTS = 100_000  # names one pattern may expand to

_RANGE = re.compile(r"\[([^\]:]+):([^\]:]+)(?::([0-9]+))?\]")
_NUMBER = re.compile(r"[0-9]+")
_MAX_DIGITS = 100
_COUNT_SHOWN = 10**15  # a count above this is said as "more than ..."


class HostRangeError(ValueError):
    """A malformed host range; the message says what is wrong with which pattern."""


class HostRangeTooLarge(HostRangeError):
    """A pattern that would expand to more than the limit; `count` is how many (at least)."""

    def __init__(self, pattern: str, count: int, limit: int) -> None:
        shown = f"{count:,}" if count <= _COUNT_SHOWN else f"more than {_COUNT_SHOWN:,}"
        super().__init__(
            f"host range {_quoted(pattern)} expands to {shown} hosts; the limit is {limit:,}"
        )
        self.count = count
        self.limit = limit


@dataclass(frozen=True)
class _Range:
    """The first `[start:end(:step)]` of a pattern: what is around it and what it yields."""

    head: str
    tail: str
    items: Union[range, str]  # numbers (padded to `width`) or letters

    width: int = 0

    def __len__(self) -> int:
        return len(self.items)

    def item(self, index: int) -> str:
        value = self.items[index]
        return str(value).zfill(self.width) if isinstance(value, int) else value

    def names(self) -> List[str]:
        head, tail, width = self.head, self.tail, self.width
        if isinstance(self.items, str):
            return [head + letter + tail for letter in self.items]
        return [head + str(i).zfill(width) + tail for i in self.items]

    @property
    def last(self) -> bool:
        """Whether the names are final: no bracket is left around this range."""
        return not any(b in self.head or b in self.tail for b in "[]")


def count_host_pattern(pattern: str) -> int:
    """How many names `pattern` expands to, without expanding it (a count above 10^15 is
    returned as just above it). Raises HostRangeError on a malformed range."""
    total, text = 1, pattern
    while total <= _COUNT_SHOWN:
        first = _first_range(text, pattern)
        if first is None:
            return total
        total *= len(first)
        text = first.head + first.item(0) + first.tail  # later ranges do not depend on it
    return total


def expand_host_pattern(pattern: str, limit: int = MAX_RANGE_HOSTS) -> List[str]:
    """Expand every `[start:end(:step)]` in a host name; a name without one is returned as is.

    Numeric bounds keep the start's zero padding (`[001:100]`); alphabetic bounds are single
    letters, in Ansible's order (a-z, then A-Z). Raises HostRangeError on a malformed range
    and HostRangeTooLarge (before building any name) when there would be more than `limit`.
    """
    count = count_host_pattern(pattern)
    if count > limit:
        raise HostRangeTooLarge(pattern, count, limit)
    # One range at a time, left to right, as Ansible does (and iteratively: a name may hold
    # many ranges); the order is that of nested loops, the last range the fastest.
    names: List[Tuple[str, bool]] = [(pattern, False)]  # (text, expanded fully)
    while not all(done for _, done in names):
        expanded: List[Tuple[str, bool]] = []
        for text, done in names:
            first = None if done else _first_range(text, pattern)
            if first is None:
                expanded.append((text, True))
            else:
                final = first.last
                expanded += ((name, final) for name in first.names())
            if len(expanded) > limit:  # a guard only: the count above is exact
                raise HostRangeTooLarge(pattern, limit + 1, limit)
        names = expanded
    return [text for text, _ in names]


def _first_range(text: str, pattern: str) -> Optional[_Range]:
    match = _RANGE.search(text)
    if not match:
        if "[" in text or "]" in text:
            raise HostRangeError(
                f"malformed host range in {_quoted(pattern)} (expected e.g. edge[01:20])"
            )
        return None
    start, end, step_text = match.group(1), match.group(2), match.group(3)
    head, tail = text[: match.start()], text[match.end() :]
    step = 1 if step_text is None else int(step_text) if len(step_text) <= _MAX_DIGITS else 0
    if step < 1:
        raise HostRangeError(f"range step must be a number of at least 1 in {_quoted(pattern)}")
    if _NUMBER.fullmatch(start) and _NUMBER.fullmatch(end):
        if max(len(start), len(end)) > _MAX_DIGITS:
            raise HostRangeError(
                f"a range bound in {_quoted(pattern)} has more than {_MAX_DIGITS} digits"
            )
        low, high = int(start), int(end)
        if low > high:
            raise HostRangeError(
                f"range start {start} is after its end {end} in {_quoted(pattern)}"
            )
        width = len(start) if start.startswith("0") else 0
        return _Range(head, tail, range(low, high + 1, step), width)
    letters = string.ascii_letters
    if len(start) == 1 and len(end) == 1 and start in letters and end in letters:
        first, last = letters.index(start), letters.index(end)
        if first > last:
            raise HostRangeError(
                f"range start {start} is after its end {end} in {_quoted(pattern)} "
                "(letters run a-z, then A-Z)"
            )
        return _Range(head, tail, letters[first : last + 1 : step])
    raise HostRangeError(
        f"range [{_cut(start)}:{_cut(end)}] in {_quoted(pattern)} must be two numbers or two "
        "single letters"
    )


def _quoted(pattern: str) -> str:
    return repr(pattern) if len(pattern) <= 80 else f"{pattern[:80]!r}..."


def _cut(text: str) -> str:
    return repr(text)[1:-1] if len(text) <= 20 else f"{repr(text[:20])[1:-1]}..."
