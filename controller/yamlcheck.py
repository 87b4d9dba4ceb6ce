"""Typed readers of located YAML values: each returns the value or raises a ConfigError
naming the key's path and its file:line (pure). They read YAML's shapes (a duration's text,
a size, a list); the rules for the values themselves (ranges, paths, users) are the agent's
(agent/desired.py), judged once the playbook is read."""

from __future__ import annotations

import datetime
import difflib
import math
import re
from typing import Any, Optional, Sequence

from mlfleet.controller.errors import ConfigError
from mlfleet.controller.plaintext import printable
from mlfleet.controller.yamlsource import LocatedDict, LocatedList, shown

# Whitespace, NUL and shell metacharacters: never in a value that reaches a host.
UNSAFE = re.compile(r"[\s;`\x00]|\$\(")
DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|h|m|s))+")  # fullmatch
DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([kmg])b?", re.IGNORECASE)  # fullmatch
SIZE_KIB = {"k": 1, "m": 1024, "g": 1024 * 1024}


def known_keys(
    m: LocatedDict, path: str, known: Sequence[str], required: Sequence[str] = ()
) -> LocatedDict:
    """Refuse keys this level does not know (with a did-you-mean) and missing required ones."""
    for key in m:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(
                f"unknown key {shown(key)} in {path or 'the playbook'}; known keys: "
                f"{', '.join(known)}",
                where=m.where(key),
                hint=f"did you mean {close[0]!r}?" if close else None,
            )
    for key in required:
        if m.get(key) is None:
            raise bad(m.where(key), join_path(path, key), "required")
    return m


def mapping(value: Any, where: str, path: str) -> LocatedDict:
    if not isinstance(value, LocatedDict):
        raise bad(where, path, f"expected a mapping, got {kind(value)}")
    return value


def sequence(value: Any, where: str, path: str, hint: Optional[str] = None) -> LocatedList:
    if not isinstance(value, LocatedList):
        raise bad(where, path, f"expected a list, got {kind(value)}", hint=hint)
    return value


def string(value: Any, where: str, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad(where, path, f"expected a non-empty string, got {kind(value)}")
    return value


def boolean(value: Any, where: str, path: str) -> bool:
    if not isinstance(value, bool):
        raise bad(where, path, f"expected true or false, got {shown(value)}")
    return value


def whole_number(
    value: Any, where: str, path: str, minimum: int, maximum: Optional[int] = None
) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"{minimum}-{maximum}" if maximum is not None else f">= {minimum}"
        raise bad(where, path, f"expected a whole number {bounds}; got {shown(value)}")
    return value


def integer(value: Any, where: str, path: str) -> int:
    """A whole number (its bounds are the agent's to judge)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(where, path, f"expected a whole number; got {shown(value)}")
    return value


def real(value: Any, where: str, path: str) -> float:
    """A finite number (its bounds are the agent's to judge)."""
    if not _finite(value):
        raise bad(where, path, f"expected a number; got {shown(value)}")
    return float(value)


def choice(value: Any, where: str, path: str, options: Sequence[str]) -> str:
    if value not in options:
        raise bad(where, path, f"one of {', '.join(options)}; got {shown(value)}")
    return value


def duration(value: Any, where: str, path: str) -> float:
    """A duration in seconds: `"500ms"`, `"5s"`, `"2m"`, `"1h"`, `"1m30s"`, or a number."""
    if isinstance(value, str):
        if not DURATION.fullmatch(value):
            raise bad(
                where, path, f'{shown(value)} is not a duration like "500ms", "5s", "2m" or "1h"'
            )
        seconds = sum(float(n) * DURATION_UNITS[u] for n, u in DURATION_PART.findall(value))
        if not math.isfinite(seconds):
            raise bad(where, path, f"{shown(value)} is longer than any duration")
        return seconds
    if not _finite(value):
        raise bad(
            where, path, f'expected a duration like "5s" or a number of seconds; got {shown(value)}'
        )
    return float(value)


def size_mib(value: Any, where: str, path: str) -> int:
    """A size: `512m`, `1.5g`, `2048k` (a whole number of MiB) or a plain number of MiB."""
    if isinstance(value, int) and not isinstance(value, bool):
        return whole_number(value, where, path, 1)
    match = SIZE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise bad(where, path, f'{shown(value)} is not a size like "512m", "2g" or a number of MiB')
    kib = float(match.group(1)) * SIZE_KIB[match.group(2).lower()]
    if not math.isfinite(kib) or kib < 1024 or kib % 1024:
        raise bad(where, path, f"{shown(value)} is not a whole number of MiB (at least 1m)")
    return int(kib // 1024)


def json_data(value: Any, where: str, path: str) -> Any:
    """Plain JSON data (a request or an expected answer); YAML dates and the like refused."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise bad(where, path, f"key {shown(key)}: JSON object keys are strings; quote it")
        located = value if isinstance(value, LocatedDict) else None
        return {
            k: json_data(v, located.where(k) if located else where, f"{path}.{printable(k)}")
            for k, v in value.items()
        }
    if isinstance(value, list):
        items = value if isinstance(value, LocatedList) else None
        return [
            json_data(v, items.where(i) if items else where, f"{path}[{i}]")
            for i, v in enumerate(value)
        ]
    if isinstance(value, float) and not math.isfinite(value):
        raise bad(where, path, f"{shown(value)} is not a JSON number")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        raise bad(where, path, f"YAML read {value} as a date; quote it")
    raise bad(where, path, f"{kind(value)} is not JSON data")


def bad(where: str, path: str, what: str, hint: Optional[str] = None) -> ConfigError:
    """The error for a value at `path` (its control characters escaped: keys come from
    the file)."""
    return ConfigError(f"`{printable(path)}`: {what}", where=where, hint=hint)


def _finite(value: Any) -> bool:
    """A number (not a boolean) a float can hold: an int past 1e308 is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def join_path(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {shown(value)}"
    if isinstance(value, str):
        return f"the string {shown(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"
