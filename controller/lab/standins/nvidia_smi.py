"""Stand-in for ``nvidia-smi`` that prints exactly what the real tool prints.

The lab installs it on simulated hosts (see ``install_text``) so the agent's
parsers meet real formats without a GPU. Layouts and messages were matched
against output captured from real drivers; each fact names its source.

Standalone on purpose: standard library only, Python 3.8, and no
``from __future__`` import, because the installer puts ``PROFILE = ...`` above
this source.
"""

import datetime
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Version gates (driver versions as tuples). Sources are public captures:
# - compute_cap: rejected with 'Field "compute_cap" is not a valid field to query.' by
#   470.82.01 (NVIDIA/TensorRT-LLM#735), 470.182.03 (huggingface/candle#733) and
#   470.256.02 (canonical/inference-snaps#89); accepted by 525.89.02
#   (chelsea0x3b/dfdx#619) and every later capture. No capture of 495/510/515 was
#   found: R510 (first release after the 470/495 branches) is the assumed cut.
COMPUTE_CAP_MIN = (510,)
# Second line "NVML library version: 535.86" after the mismatch message: seen from
# 535.86 up to 615.71 in public logs; 460/470-era reports show only the first line.
NVML_LINE_MIN = (535,)
# The "MIG M." row (GPU table) and GI/CI columns (processes) appear from 450.57
# (rossumai/nvgpu#15); 410.48 has neither (m0nad/Diamorphine#13).
MIG_ROWS_MIN = (450,)
# 530.x/535.x widened the table to 89 columns (hershey890/cs259 README, NVIDIA/go-nvml#75);
# 545+ to 91 columns with wider bus and memory columns (550.x, 555.42.02, 570.x, 580.x).
MID_LAYOUT_MIN = (530,)
WIDE_LAYOUT_MIN = (545,)
# Wider PID column in the processes table: 570.133.20 (speaches-ai/speaches#438) and
# later; 550.x and 555.42.02 still have the narrow one. 560/565 unverified.
WIDE_PID_MIN = (570,)
# 580.126.09 draws the rule under the banner with "+" (bottlerocket-core-kit#834);
# 570.133.x still uses "|". 575 unverified.
PLUS_RULE_MIN = (580,)
# 610.43.03 renames the banner fields to "KMD Version" / "CUDA UMD Version"
# (projectbluefin/finpilot#160). The exact first release is unverified.
KMD_WORDING_MIN = (610,)

NAME_CLASSIC = 18  # names longer than this print as name[:15] + "..."
NAME_WIDE = 27  # names longer than this print as name[:24] + "..."

# Board power limits (W) by name fragment, first match wins; only for plausible tables.
_POWER_CAPS = (
    ("GH200", 900),
    ("H200", 700),
    ("H100 PCIe", 350),
    ("H100 NVL", 400),
    ("H100", 700),
    ("A100-SXM", 400),
    ("A100 80GB PCIe", 300),
    ("A100-PCIE", 250),
    ("A30", 165),
    ("A40", 300),
    ("A10", 150),
    ("L40S", 350),
    ("L40", 300),
    ("L4", 72),
    ("T4", 70),
    ("V100-SXM", 300),
    ("V100", 250),
    ("K80", 149),
    ("4090", 450),
    ("3090", 350),
    ("3080", 320),
)
_MIG_CAPABLE = ("A100", "A30", "H100", "H200", "GH200", "B200", "GB200")
_CONSUMER = ("GeForce", "RTX", "TITAN", "Quadro")


class UsageError(Exception):
    """A command line this stand-in does not support (exit 2, like the real tool)."""


# ----------------------------------------------------------------------------- install


def install_text(profile: Dict[str, Any]) -> str:
    """Return the program text the lab writes to a host for ``profile``."""
    from mlfleet.controller.lab.standins import program_text

    return program_text(__file__, profile)


# ----------------------------------------------------------------------------- helpers


def _version(text: str) -> Tuple[int, ...]:
    """'550.54.15' -> (550, 54, 15); non-digits end a component."""
    parts = []
    for piece in str(text).split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or "0"))
    return tuple(parts)


def _nvml_version(driver: str) -> str:
    """NVML reports major.minor of the driver ('550.54.15' -> '550.54')."""
    return ".".join(driver.split(".")[:2])


def _power_cap(name: str) -> int:
    """Plausible board power limit for a product name."""
    for fragment, watts in _POWER_CAPS:
        if fragment in name:
            return watts
    return 250


def _short_name(name: str, limit: int) -> str:
    """Truncate like nvidia-smi: keep limit-3 characters and add '...'."""
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _gpu_view(profile: Dict[str, Any], index: int) -> Dict[str, Any]:
    """Every value the tables and queries print for one GPU."""
    gpu = profile["gpus"][index]
    name = str(gpu["name"])
    consumer = any(word in name for word in _CONSUMER)
    cap = int(gpu.get("power_cap_w", _power_cap(name)))
    total = int(gpu["memory_mib"])
    idle_used = 0 if _version(profile["driver"]) < MID_LAYOUT_MIN else 1
    used = int(gpu.get("memory_used_mib", idle_used))
    return {
        "index": index,
        "name": name,
        "uuid": str(gpu.get("uuid", f"GPU-00000000-0000-0000-0000-{index:012d}")),
        "bus_id": str(gpu.get("bus_id", f"00000000:{7 + 0x10 * index:02X}:00.0")),
        "serial": str(gpu.get("serial", "[N/A]")),
        "cc": str(gpu.get("compute_capability", "")),
        "total": total,
        "used": used,
        "free": max(total - used, 0),
        "temp": 30 + (index * 3) % 7,
        "power": round(cap * 0.15 + index % 3, 2),
        "cap": cap,
        "fan": "30%" if consumer else "N/A",
        "pm": "Off" if consumer else "On",
        "perf": "P8" if consumer else "P0",
        "disp": "Off",
        "ecc": "N/A" if consumer else "0",
        "mig": "Disabled" if any(m in name for m in _MIG_CAPABLE) else "N/A",
        "util": 0,
        "mode": "Default",
    }


def _write(lines: List[str]) -> None:
    """Print lines the way the tool does: one trailing newline."""
    sys.stdout.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- summary


class _Layout:
    """Column widths and fixed rows of one generation of the summary table."""

    def __init__(self, driver: Tuple[int, ...]) -> None:
        if driver >= WIDE_LAYOUT_MIN:
            self.kind, self.cols = "wide", (41, 24, 22)
        elif driver >= MID_LAYOUT_MIN:
            self.kind, self.cols = "mid", (41, 22, 22)
        else:
            self.kind, self.cols = "classic", (31, 22, 22)
        self.driver = driver
        self.width = sum(self.cols) + 4

    def rule(self, fill: str, left: str, right: str) -> str:
        """A horizontal line across the three columns, joints drawn with '+'."""
        return left + "+".join(fill * n for n in self.cols) + right

    def full(self, fill: str = "-") -> str:
        """A rule across the full width, no column joints."""
        return "+" + fill * (self.width - 2) + "+"

    def boxed(self, text: str) -> str:
        """One full-width row with ``text`` left-aligned."""
        return "|" + text.ljust(self.width - 2) + "|"

    def row(self, left: str, middle: str, right: str) -> str:
        """One three-column row."""
        return "|" + "|".join((left, middle, right)) + "|"


def _banner(layout: _Layout, driver: str, cuda: str) -> str:
    """Banner line; field widths measured on real captures of each layout."""
    if layout.kind == "classic":
        return f"| NVIDIA-SMI {driver:<13}Driver Version: {driver:<13}CUDA Version: {cuda:<9}|"
    if layout.kind == "mid":
        return f"| NVIDIA-SMI {driver:<23}Driver Version: {driver:<13}CUDA Version: {cuda:<9}|"
    if layout.driver >= KMD_WORDING_MIN:
        return f"| NVIDIA-SMI {driver:<23}KMD Version: {driver:<14}CUDA UMD Version: {cuda:<9}|"
    return f"| NVIDIA-SMI {driver:<23}Driver Version: {driver:<15}CUDA Version: {cuda:<9}|"


_LEFT_HEADS = {
    "classic": (" GPU  Name        Persistence-M", " Fan  Temp  Perf  Pwr:Usage/Cap"),
    "mid": (
        " GPU  Name                 Persistence-M ",
        " Fan  Temp   Perf          Pwr:Usage/Cap ",
    ),
}
_LEFT_HEADS["wide"] = _LEFT_HEADS["mid"]
_RIGHT_HEADS = (" Volatile Uncorr. ECC ", " GPU-Util  Compute M. ")


def _column_heads(layout: _Layout) -> List[str]:
    """The two heading rows; the middle column is right-aligned to its width."""
    bus = " Bus-Id" + "Disp.A ".rjust(layout.cols[1] - 7)
    usage = "Memory-Usage ".rjust(layout.cols[1])
    left1, left2 = _LEFT_HEADS[layout.kind]
    return [layout.row(left1, bus, _RIGHT_HEADS[0]), layout.row(left2, usage, _RIGHT_HEADS[1])]


def _gpu_rows(layout: _Layout, g: Dict[str, Any]) -> List[str]:
    """The two or three table rows of one GPU."""
    left_w, mid_w, _right_w = layout.cols
    index, pm, power, cap = int(g["index"]), g["pm"], int(g["power"]), int(g["cap"])
    head = f" {g['fan']:>3}   {int(g['temp']):>2}C    {g['perf']:>2}"
    if layout.kind == "classic":
        left1 = f"{index:>4}  {_short_name(g['name'], NAME_CLASSIC):<18}  {pm:<3}  "
        left2 = f"{head}   {power:>3}W / {cap:>3}W "
    else:
        left1 = f"{index:>4}  {_short_name(g['name'], NAME_WIDE):<31}{pm:<3} "
        if layout.kind == "mid":
            left2 = f"{head}{power:>16}W / {cap:>3}W "
        else:
            left2 = f"{head}{power:>15}W / {cap:>4}W "
    used, total = int(g["used"]), int(g["total"])
    if layout.kind == "wide":
        mid1 = f"   {g['bus_id']} {g['disp']:>3} "
        mid2 = f"{used:>8}MiB / {total:>6}MiB "
    else:
        mid1 = f" {g['bus_id']} {g['disp']:>3} "
        mid2 = f"{used:>7}MiB / {total:>5}MiB "
    rows = [
        layout.row(left1, mid1, f"{g['ecc']:>21} "),
        layout.row(left2, mid2, f"{int(g['util']):>7}%{g['mode']:>13} "),
    ]
    if layout.driver >= MIG_ROWS_MIN:
        rows.append(layout.row(" " * left_w, " " * mid_w, f"{g['mig']:>21} "))
    return rows


def _process_heads(layout: _Layout) -> List[str]:
    """Column heads of the processes table (three generations)."""
    if layout.driver < MIG_ROWS_MIN:
        return [
            layout.boxed(" Processes:" + " " * 55 + "GPU Memory "),
            layout.boxed("  GPU       PID   Type   Process name" + " " * 29 + "Usage"),
        ]
    gap = {"classic": 18, "mid": 28, "wide": 30}[layout.kind]
    if layout.driver >= WIDE_PID_MIN:
        first = "  GPU   GI   CI              PID   Type   Process name" + " " * (gap - 6)
    else:
        first = "  GPU   GI   CI        PID   Type   Process name" + " " * gap
    usage_gap = {"classic": 51, "mid": 61, "wide": 63}[layout.kind]
    return [
        layout.boxed(" Processes:"),
        layout.boxed(first + "GPU Memory "),
        layout.boxed("        ID   ID" + " " * usage_gap + "Usage"),
    ]


def render_summary(
    profile: Dict[str, Any], indices: Optional[Sequence[int]] = None, now: Optional[float] = None
) -> List[str]:
    """Lines of plain ``nvidia-smi``: timestamp, GPU table, empty processes table."""
    driver = str(profile["driver"])
    layout = _Layout(_version(driver))
    if indices is None:
        indices = range(len(profile.get("gpus", [])))
    # ctime pads the day with a space ("Sat Sep  2 03:07:47 2023"); real output ends
    # the line with seven spaces.
    lines = [
        time.ctime(now) + "       ",
        layout.full(),
        _banner(layout, driver, str(profile.get("cuda", ""))),
    ]
    # Under the banner the rule starts with "|" but ends with "+" (all captures < 580).
    lines.append(layout.rule("-", "+" if layout.driver >= PLUS_RULE_MIN else "|", "+"))
    lines.extend(_column_heads(layout))
    if layout.driver >= MIG_ROWS_MIN:
        lines.append(layout.row(" " * layout.cols[0], " " * layout.cols[1], f"{'MIG M.':>21} "))
    lines.append(layout.rule("=", "|", "|"))
    for index in indices:
        lines.extend(_gpu_rows(layout, _gpu_view(profile, index)))
        lines.append(layout.rule("-", "+", "+"))
    lines.append(" " * layout.width)
    lines.append(layout.full())
    lines.extend(_process_heads(layout))
    lines.append("|" + "=" * (layout.width - 2) + "|")
    lines.append(layout.boxed("  No running processes found"))
    lines.append(layout.full())
    return lines


# ----------------------------------------------------------------------------- queries


def _fixed(value: float) -> str:
    """Two decimals, as nvidia-smi prints watts."""
    return f"{value:.2f}"


# field -> (unit or "", value). Units show in the header always, in values unless nounits.
_FIELDS: Dict[str, Tuple[str, Callable[[Dict[str, Any], Dict[str, Any]], str]]] = {
    "timestamp": ("", lambda g, p: datetime.datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]),
    "driver_version": ("", lambda g, p: str(p["driver"])),
    "count": ("", lambda g, p: str(len(p["gpus"]))),
    "index": ("", lambda g, p: str(g["index"])),
    "name": ("", lambda g, p: g["name"]),
    "serial": ("", lambda g, p: g["serial"]),
    "uuid": ("", lambda g, p: g["uuid"]),
    "pci.bus_id": ("", lambda g, p: g["bus_id"]),
    "persistence_mode": ("", lambda g, p: "Enabled" if g["pm"] == "On" else "Disabled"),
    "pstate": ("", lambda g, p: g["perf"]),
    "compute_mode": ("", lambda g, p: g["mode"]),
    "compute_cap": ("", lambda g, p: g["cc"]),
    "memory.total": ("MiB", lambda g, p: str(g["total"])),
    "memory.used": ("MiB", lambda g, p: str(g["used"])),
    "memory.free": ("MiB", lambda g, p: str(g["free"])),
    "temperature.gpu": ("", lambda g, p: str(g["temp"])),
    "utilization.gpu": ("%", lambda g, p: str(g["util"])),
    "utilization.memory": ("%", lambda g, p: "0"),
    "power.draw": ("W", lambda g, p: _fixed(g["power"])),
    "power.limit": ("W", lambda g, p: _fixed(g["cap"])),
}
_ALIASES = {
    "gpu_name": "name",
    "gpu_serial": "serial",
    "gpu_uuid": "uuid",
    "gpu_bus_id": "pci.bus_id",
}


def _unknown_field(fields: Sequence[str], driver: Tuple[int, ...]) -> Optional[str]:
    """First field this driver's nvidia-smi would refuse, if any."""
    for field in fields:
        canonical = _ALIASES.get(field, field)
        if canonical not in _FIELDS:
            return field
        if canonical == "compute_cap" and driver < COMPUTE_CAP_MIN:
            return field
    return None


def render_query(
    profile: Dict[str, Any], fields: Sequence[str], options: Sequence[str], indices: Sequence[int]
) -> List[str]:
    """CSV lines of ``--query-gpu``: header unless noheader, units unless nounits."""
    lines = []
    if "noheader" not in options:
        heads = []
        for field in fields:
            unit = _FIELDS[_ALIASES.get(field, field)][0]
            heads.append(f"{field} [{unit}]" if unit else field)
        lines.append(", ".join(heads))
    for index in indices:
        view = _gpu_view(profile, index)
        cells = []
        for field in fields:
            unit, getter = _FIELDS[_ALIASES.get(field, field)]
            value = getter(view, profile)
            cells.append(value if not unit or "nounits" in options else f"{value} {unit}")
        lines.append(", ".join(cells))
    return lines


# ----------------------------------------------------------------------------- other modes


def render_list(profile: Dict[str, Any], indices: Sequence[int]) -> List[str]:
    """Lines of ``nvidia-smi -L``."""
    lines = []
    for index in indices:
        view = _gpu_view(profile, index)
        lines.append(f"GPU {index}: {view['name']} (UUID: {view['uuid']})")
    return lines


def render_version(profile: Dict[str, Any]) -> List[str]:
    """Lines of ``nvidia-smi --version`` as captured on 560.94 to 590.48.01 drivers.

    Printed for every driver here; whether old branches (470) know ``--version`` is unverified.
    """
    driver = str(profile["driver"])
    return [
        f"NVIDIA-SMI version  : {driver}",
        f"NVML version        : {_nvml_version(driver)}",
        f"DRIVER version      : {driver}",
        f"CUDA Version        : {profile.get('cuda', '')}",
    ]


def render_mismatch(profile: Dict[str, Any]) -> List[str]:
    """What every call prints when the kernel module and the library disagree.

    stdout, exit 18 (mozilla/translations#1167, anderskm/gputil#55).
    """
    driver = str(profile["driver"])
    lines = ["Failed to initialize NVML: Driver/library version mismatch"]
    if _version(driver) >= NVML_LINE_MIN:
        lines.append(f"NVML library version: {_nvml_version(driver)}")
    return lines


# What every call prints when the kernel module is not loaded (a kernel update without the
# module rebuilt: GoogleCloudPlatform/compute-gpu-installation#18, NVIDIA/nvidia-docker#988);
# stdout, exit 9, "NVIDIA driver is not loaded" in the return codes of nvidia-smi(1).
NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
NO_DRIVER_EXIT = 9


def _hang() -> None:
    """Block like nvidia-smi on a wedged driver, until the caller kills us."""
    while True:
        time.sleep(3600)


# ----------------------------------------------------------------------------- command line


def _take(argv: Sequence[str], position: int, flag: str) -> Tuple[str, int]:
    """Value of ``--flag=value`` or ``--flag value``; returns it and the next position."""
    arg = argv[position]
    if "=" in arg:
        return arg.split("=", 1)[1], position + 1
    if position + 1 >= len(argv):
        raise UsageError(f"option {flag} needs a value")
    return argv[position + 1], position + 2


def parse_args(argv: Sequence[str]) -> Dict[str, Any]:
    """Split the command line into an action and its settings."""
    request: Dict[str, Any] = {"action": "summary", "fields": None, "format": None, "id": None}
    position = 0
    while position < len(argv):
        arg = argv[position]
        name = arg.split("=", 1)[0]
        if arg in ("-L", "--list-gpus"):
            request["action"], position = "list", position + 1
        elif arg == "--version":
            request["action"], position = "version", position + 1
        elif arg in ("-h", "--help"):
            request["action"], position = "help", position + 1
        elif name == "--query-gpu":
            value, position = _take(argv, position, name)
            request["action"], request["fields"] = "query", [f.strip() for f in value.split(",")]
        elif name == "--format":
            value, position = _take(argv, position, name)
            request["format"] = [f.strip() for f in value.split(",")]
        elif name in ("-i", "--id"):
            request["id"], position = _take(argv, position, name)
        else:
            raise UsageError(f"ERROR: Option {arg} is not recognized. Please run 'nvidia-smi -h'.")
    return request


def _select(profile: Dict[str, Any], wanted: Optional[str]) -> Optional[List[int]]:
    """GPU indices matching ``-i`` (index, UUID or PCI bus id); None if there are none."""
    count = len(profile.get("gpus", []))
    if wanted is None:
        return list(range(count)) or None
    chosen = []
    for token in wanted.split(","):
        for index in range(count):
            view = _gpu_view(profile, index)
            if token in (str(index), view["uuid"], view["bus_id"]):
                chosen.append(index)
    return chosen or None


def _query(profile: Dict[str, Any], request: Dict[str, Any], indices: List[int]) -> int:
    """Run ``--query-gpu``; exit 2 on an unknown field, printed like the real tool."""
    options = request["format"]
    if (
        not options
        or options[0] != "csv"
        or any(o not in ("csv", "noheader", "nounits") for o in options)
    ):
        raise UsageError(
            "nvidia-smi (lab stand-in): --query-gpu needs --format=csv[,noheader][,nounits]"
        )
    bad = _unknown_field(request["fields"], _version(profile["driver"]))
    if bad is not None:
        # stdout, then an empty line, exit 2 (CoHDI/composable-resource-operator#37).
        _write([f'Field "{bad}" is not a valid field to query.', ""])
        return 2
    _write(render_query(profile, request["fields"], options, indices))
    return 0


def _usage() -> List[str]:
    """A short help text (the real one is far longer)."""
    return [
        "NVIDIA System Management Interface (lab stand-in)",
        "",
        "    nvidia-smi [-i ID] [-L | --version | --query-gpu=FIELDS --format=csv[,noheader]"
        "[,nounits]]",
    ]


def main(argv: Sequence[str], profile: Optional[Dict[str, Any]] = None) -> int:
    """Entry point: behave as the profile's driver would for ``argv``."""
    profile = profile if profile is not None else globals().get("PROFILE")
    if not isinstance(profile, dict):
        sys.stderr.write("nvidia-smi (lab stand-in): no PROFILE installed\n")
        return 2
    mode = profile.get("mode", "ok")
    if mode == "hang":
        _hang()
    if mode == "mismatch":
        _write(render_mismatch(profile))
        return 18
    if mode == "no_driver":
        _write([NO_DRIVER])
        return NO_DRIVER_EXIT
    try:
        request = parse_args(argv)
        if request["action"] == "help":
            _write(_usage())
            return 0
        if request["action"] == "version":
            _write(render_version(profile))
            return 0
        indices = _select(profile, request["id"])
        if indices is None:
            _write(["No devices were found"])
            return 6
        if request["action"] == "query":
            return _query(profile, request, indices)
        if request["action"] == "list":
            _write(render_list(profile, indices))
            return 0
        _write(render_summary(profile, indices))
        return 0
    except UsageError as error:
        sys.stderr.write(f"{error}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
