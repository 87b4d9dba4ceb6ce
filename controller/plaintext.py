"""Text from hosts, files and users made safe to show on the operator's terminal: every
control character escaped visibly (`\\x1b`, `\\r`, `\\x9b`), so a health response body, a
container log or a host name can neither move the cursor, clear the screen, retitle the
window nor forge a line of mlfleet's own output. The one place that escaping is decided;
the CLI passes every message, reason and value it prints through `printable` (and prints
it as plain text, never as rich markup)."""

from __future__ import annotations

from itertools import chain
from typing import Dict

# C0 controls, DEL and the C1 controls (0x9b is a one-byte CSI to many terminals); the
# bidirectional overrides and isolates (text that reads otherwise than it is, CVE-2021-42574);
# the line and paragraph separators; lone surrogates (which cannot even be encoded to
# UTF-8: printing one would raise on a strict stdout).
_CONTROLS = chain(
    range(0x00, 0x20),
    [0x7F],
    range(0x80, 0xA0),
    [0x061C, 0x200E, 0x200F, 0x2028, 0x2029],
    range(0x202A, 0x202F),
    range(0x2066, 0x206A),
    range(0xD800, 0xE000),
)
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_ONE_LINE: Dict[int, str] = {code: _escape(code) for code in _CONTROLS}
# Multi-line output (a traceback, a block of log lines) keeps its newlines and tabs.
_BLOCK: Dict[int, str] = {k: v for k, v in _ONE_LINE.items() if k not in (0x09, 0x0A)}


def printable(text: object, *, multiline: bool = False) -> str:
    """`text` with every control character escaped visibly; newlines and tabs too, unless
    `multiline` (then only those two are kept as they are). Pure; safe for any str."""
    return str(text).translate(_BLOCK if multiline else _ONE_LINE)
