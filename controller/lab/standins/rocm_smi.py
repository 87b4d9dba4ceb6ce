"""Stand-in for ``rocm-smi`` that prints what the real tool prints for a profile.

The lab installs it on simulated AMD hosts (see ``install_text``) so the agent's
parsers meet the real text and JSON formats, including the differences between
ROCm releases. Each version-dependent fact names its source.

Standalone on purpose: standard library only, Python 3.8, and no
``from __future__`` import, because the installer puts ``PROFILE = ...`` above
this source.
"""

import json
import platform
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

# ROCm 6.0 renamed the product keys to title case and added Subsystem ID, Device Rev,
# Node ID, GUID and GFX Version: ROCm 4.0 prints "Card series/model/vendor/SKU"
# (ROCm/legacy-rocm-build#1351), so does the rocm_smi.py of the 5.x branch
# (ROCm/rocm_smi_lib python_smi_tools/rocm_smi.py, showProductName); a 6.0.x install
# prints "Card Series ... GFX Version" (ROCm/rocm_smi_lib#159, March 2024).
TITLE_KEYS_MIN = (6, 0)
# 6.0.x printed "gfx" + decimal digits, e.g. "gfx9010" for gfx90a (ROCm/rocm_smi_lib#159)
# and "gfx11000" for gfx1100 (a ROCm 6.0.2 capture); later captures print LLVM names
# ("gfx90a", "gfx942", "gfx1101"). Fixed in 6.1 is assumed, not verified.
GFX_NAME_FIXED_MIN = (6, 1)
# The log is 80 columns wide up to 5.6 (ROCm/ROCm#2408, ROCm/legacy-rocm-build#1351)
# and 90 wide later (a "Card series" capture with 90 columns, so before 6.0; 5.7 assumed).
WIDE_LOG_MIN = (5, 7)
# The two-line "Concise Info" table with Partitions appears in 6.1-era captures
# (MI300X, amdgpu 6.7.0); older releases print the one-line table.
NEW_CONCISE_MIN = (6, 1)

VENDOR = "Advanced Micro Devices, Inc. [AMD/ATI]"
# Plausible per-product identifiers when the profile gives none: (SKU, subsystem id).
_KNOWN = (
    ("MI300X", "M3000100", "0x74a1"),
    ("MI250", "D65209", "0x0b0c"),
    ("MI210", "D67301", "0x0c34"),
    ("MI100", "D34316", "0x0c34"),
)


class UsageError(Exception):
    """An argument this stand-in does not know (argparse-style, exit 2)."""


# ----------------------------------------------------------------------------- install


def install_text(profile: Dict[str, Any]) -> str:
    """Return the program text the lab writes to a host for ``profile``."""
    from mlfleet.controller.lab.standins import program_text

    return program_text(__file__, profile)


# ----------------------------------------------------------------------------- helpers


def _version(text: str) -> Tuple[int, ...]:
    """'6.1.2' -> (6, 1, 2); non-digits end a component."""
    parts = []
    for piece in str(text).split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or "0"))
    return tuple(parts)


def gfx_label(gfx: str, rocm: Tuple[int, ...]) -> str:
    """The "GFX Version" value this release prints for an LLVM target name."""
    if rocm >= GFX_NAME_FIXED_MIN or not gfx.startswith("gfx") or len(gfx) < 6:
        return gfx
    try:  # gfx90a -> major 9, minor 0, stepping 0xa -> 9*1000 + 0*100 + 10
        major, minor, step = int(gfx[3:-2]), int(gfx[-2], 16), int(gfx[-1], 16)
    except ValueError:
        return gfx
    return f"gfx{major * 1000 + minor * 100 + step}"


def _known(name: str) -> Tuple[str, str]:
    """Plausible (SKU, subsystem id) for a product name."""
    for fragment, sku, subsystem in _KNOWN:
        if fragment in name:
            return sku, subsystem
    return "N/A", "0x0000"


def _card(profile: Dict[str, Any], index: int) -> Dict[str, Any]:
    """Every value printed for one GPU."""
    gpu = profile["gpus"][index]
    name = str(gpu["name"])
    sku, subsystem = _known(name)
    total = int(gpu["memory_mib"]) * 1024 * 1024
    return {
        "name": name,
        "device_id": str(gpu.get("device_id", "0x0000")),
        "sku": str(gpu.get("sku", sku)),
        "subsystem": str(gpu.get("subsystem_id", subsystem)),
        "rev": str(gpu.get("device_rev", "0x02")),
        "node": str(gpu.get("node_id", index + 1)),  # node 0 is the CPU
        "guid": str(gpu.get("guid", 12345 + 1111 * index)),
        "gfx": str(gpu.get("gfx", "")),
        "vram_total": total,
        "vram_used": int(gpu.get("memory_used_b", 10960896)),
        "power_cap": float(gpu.get("power_cap_w", 300.0)),
    }


def _write(text: str) -> None:
    """Write UTF-8 whatever the locale, as the concise table holds a degree sign."""
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:
        sys.stdout.write(text)
    else:
        stream.write(text.encode("utf-8"))
        stream.flush()


# ----------------------------------------------------------------------------- sections


def product_fields(card: Dict[str, Any], rocm: Tuple[int, ...]) -> List[Tuple[str, str, str]]:
    """(key, tabs, value) rows of --showproductname for this release."""
    if rocm < TITLE_KEYS_MIN:
        # 5.x: "Card model" is the subsystem id (0xc34 on an MI100, legacy-rocm-build#1351).
        return [
            ("Card series", "\t\t", card["name"]),
            ("Card model", "\t\t", card["subsystem"]),
            ("Card vendor", "\t\t", VENDOR),
            ("Card SKU", "\t\t", card["sku"]),
        ]
    return [
        ("Card Series", "\t\t", card["name"]),
        ("Card Model", "\t\t", card["device_id"]),
        ("Card Vendor", "\t\t", VENDOR),
        ("Card SKU", "\t\t", card["sku"]),
        ("Subsystem ID", "\t", card["subsystem"]),
        ("Device Rev", "\t\t", card["rev"]),
        ("Node ID", "\t\t", card["node"]),
        ("GUID", "\t\t", card["guid"]),
        ("GFX Version", "\t\t", gfx_label(card["gfx"], rocm)),
    ]


def memory_fields(card: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    """(key, tabs, value) rows of --showmeminfo vram."""
    return [
        ("VRAM Total Memory (B)", "", str(card["vram_total"])),
        ("VRAM Total Used Memory (B)", "", str(card["vram_used"])),
    ]


def _driver_version(profile: Dict[str, Any]) -> str:
    """amdgpu version; with the in-tree driver rocm-smi shows the kernel release."""
    return str(profile.get("driver_version", platform.release()))


class _Log:
    """Builds the text log: centred '=' banners, GPU[n] lines, closing banner."""

    def __init__(self, rocm: Tuple[int, ...]) -> None:
        self.width = 90 if rocm >= WIDE_LOG_MIN else 80
        self.lines = ["", "", self.spacer(" ROCm System Management Interface ")]

    def spacer(self, title: str = "") -> str:
        """rocm_smi.py's printLogSpacer: str.center with '='."""
        return title.center(self.width, "=")

    def section(self, title: str, body: List[str]) -> None:
        """A titled block closed by a plain spacer line."""
        self.lines.append(self.spacer(f" {title} "))
        self.lines.extend(body)
        self.lines.append(self.spacer())

    def text(self) -> str:
        """The whole log, closing banner included."""
        return "\n".join([*self.lines, self.spacer(" End of ROCm SMI Log ")]) + "\n"


def _gpu_lines(index: int, fields: List[Tuple[str, str, str]]) -> List[str]:
    """'GPU[0]\\t\\t: Key: \\t\\tvalue' lines."""
    return [f"GPU[{index}]\t\t: {key}: {tabs}{value}" for key, tabs, value in fields]


def _vram_percent(card: Dict[str, Any]) -> str:
    """VRAM% cell, right-aligned in four characters as in the real table."""
    return f"{100 * card['vram_used'] // max(card['vram_total'], 1):>3}%"


def _concise_rows(
    cards: List[Dict[str, Any]], rocm: Tuple[int, ...]
) -> Tuple[Tuple[int, ...], List[Sequence[str]]]:
    """Minimum column widths and the heading plus data rows of one table generation."""
    if rocm >= NEW_CONCISE_MIN:
        rows: List[Sequence[str]] = [
            (
                "Device",
                "[Model : Revision]",
                "Temp",
                "Power",
                "Partitions",
                "SCLK",
                "MCLK",
                "Fan",
                "Perf",
                "PwrCap",
                "VRAM%",
                "GPU%",
            ),
            ("", "Name (20 chars)", "(Junction)", "(Socket)", "(Mem, Compute)"),
        ]
        for i, c in enumerate(cards):
            rows.append(
                (
                    str(i),
                    f"[{c['device_id']} : {c['rev']}]",
                    f"{35.0 + i:.1f}°C",
                    f"{40.0 + i:.1f}W",
                    "N/A, N/A",
                    "800Mhz",
                    "1600Mhz",
                    "0%",
                    "auto",
                    f"{c['power_cap']:.1f}W",
                    _vram_percent(c),
                    "0%",
                )
            )
            rows.append(("", c["name"][:20]))
        return (8, 22, 12, 10, 16, 8, 8, 5, 6, 8, 7, 6), rows
    rows = [
        (
            "GPU",
            "Temp (DieEdge)",
            "AvgPwr",
            "SCLK",
            "MCLK",
            "Fan",
            "Perf",
            "PwrCap",
            "VRAM%",
            "GPU%",
        )
    ]
    for i, c in enumerate(cards):
        rows.append(
            (
                str(i),
                f"{35.0 + i:.1f}c",
                f"{40.0 + i:.1f}W",
                "800Mhz",
                "1600Mhz",
                "0%",
                "auto",
                f"{c['power_cap']:.1f}W",
                _vram_percent(c),
                "0%",
            )
        )
    return (5, 16, 8, 8, 9, 5, 6, 8, 7, 6), rows


def _concise(profile: Dict[str, Any], rocm: Tuple[int, ...]) -> str:
    """The summary table printed without arguments (best effort, two generations)."""
    cards = [_card(profile, i) for i in range(len(profile["gpus"]))]
    minimum, rows = _concise_rows(cards, rocm)
    heads = 2 if rocm >= NEW_CONCISE_MIN else 1
    # Widen a column when a value would touch its neighbour (two spaces kept).
    widths = [max([w] + [len(r[i]) + 2 for r in rows if i < len(r)]) for i, w in enumerate(minimum)]
    width = sum(widths)
    table = ["".join(cell.ljust(w) for cell, w in zip(row, widths)).ljust(width) for row in rows]
    lines = [
        "",
        "",
        " ROCm System Management Interface ".center(width, "="),
        " Concise Info ".center(width, "="),
        *table[:heads],
        "=" * width,
        *table[heads:],
        "=" * width,
        " End of ROCm SMI Log ".center(width, "="),
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line

_USAGE = (
    "usage: rocm-smi [-h] [--showdriverversion] [--showproductname] "
    "[--showmeminfo TYPE [TYPE ...]] [--json]\n"
)


def parse_args(argv: Sequence[str]) -> Dict[str, Any]:
    """The requested sections, in rocm-smi's own spelling."""
    wanted: Dict[str, Any] = {
        "json": False,
        "product": False,
        "memory": False,
        "driver": False,
        "help": False,
    }
    position = 0
    while position < len(argv):
        arg = argv[position]
        position += 1
        if arg == "--json":
            wanted["json"] = True
        elif arg == "--showproductname":
            wanted["product"] = True
        elif arg == "--showdriverversion":
            wanted["driver"] = True
        elif arg in ("-h", "--help"):
            wanted["help"] = True
        elif arg == "--showmeminfo":
            kinds = []
            while position < len(argv) and not argv[position].startswith("-"):
                kinds.append(argv[position].lower())
                position += 1
            if kinds != ["vram"]:
                raise UsageError(f"--showmeminfo: only 'vram' is simulated, got {kinds}")
            wanted["memory"] = True
        else:
            raise UsageError(f"unrecognized arguments: {arg}")
    return wanted


def render(profile: Dict[str, Any], wanted: Dict[str, Any]) -> str:
    """Text or JSON for the requested sections."""
    rocm = _version(str(profile.get("rocm", "6.0.0")))
    cards = [_card(profile, i) for i in range(len(profile["gpus"]))]
    if wanted["json"]:
        data: Dict[str, Dict[str, str]] = {}
        for index, card in enumerate(cards):
            if not (wanted["product"] or wanted["memory"]):
                break
            entry = data.setdefault(f"card{index}", {})
            if wanted["product"]:
                entry.update((k, v) for k, _, v in product_fields(card, rocm))
            if wanted["memory"]:
                entry.update((k, v) for k, _, v in memory_fields(card))
        if wanted["driver"]:
            data["system"] = {"Driver version": _driver_version(profile)}
        return json.dumps(data) + "\n"
    log = _Log(rocm)
    if wanted["driver"]:
        log.section("Version of System Component", [f"Driver version: {_driver_version(profile)}"])
    if wanted["product"]:
        body = []
        for index, card in enumerate(cards):
            body += _gpu_lines(index, product_fields(card, rocm))
        log.section("Product Info", body)
    if wanted["memory"]:
        body = []
        for index, card in enumerate(cards):
            body += _gpu_lines(index, memory_fields(card))
        log.section("Memory Usage (Bytes)", body)
    return log.text()


def main(argv: Sequence[str], profile: Optional[Dict[str, Any]] = None) -> int:
    """Entry point: answer ``argv`` as the profile's ROCm release would."""
    profile = profile if profile is not None else globals().get("PROFILE")
    if not isinstance(profile, dict):
        sys.stderr.write("rocm-smi (lab stand-in): no PROFILE installed\n")
        return 2
    try:
        wanted = parse_args(argv)
    except UsageError as error:
        sys.stderr.write(_USAGE + f"rocm-smi: error: {error}\n")
        return 2
    if wanted["help"]:
        _write(_USAGE)
        return 0
    if not (wanted["product"] or wanted["memory"] or wanted["driver"]):
        _write(_concise(profile, _version(str(profile.get("rocm", "6.0.0")))))
        return 0
    _write(render(profile, wanted))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
