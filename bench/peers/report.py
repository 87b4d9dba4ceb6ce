"""The benchmark's report: the machine it ran on, a short table for the terminal and the
markdown page the README links (bench/results/latest.md). Pure over the results dict,
except machine_info()."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

# Targets from the issue, reported against, never asserted.
TARGETS = (
    ("update", "ansible", ">=", 5.0, "fleet update: Ansible at least 5x mlfleet's wall time"),
    ("update", "floor", "<=", 1.5, "fleet update: mlfleet within 1.5x of the floor"),
    ("facts", "ansible", ">=", 3.0, "facts: ansible -m setup at least 3x mlfleet facts"),
)


def _first_line(argv: List[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _collection_version(name: str) -> str:
    try:
        import ansible_collections  # type: ignore[import-not-found]
    except ImportError:
        return "not installed"
    path = Path(next(iter(ansible_collections.__path__))) / name.replace(".", "/") / "MANIFEST.json"
    match = re.search(r'"version":\s*"([^"]+)"', path.read_text()) if path.exists() else None
    return match.group(1) if match else "?"


def _bashrc_s(runs: int = 5) -> Optional[float]:
    """What this machine's /root/.bashrc costs to run. Bash runs it for every command that
    arrives over SSH unless SHLVL says otherwise; the lab's sshd sets SHLVL=1, so the lab
    hosts skip it like hosts with a stock root shell (shown so a reader can tell)."""
    rc = Path.home() / ".bashrc"
    if not rc.exists():
        return None
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(["bash", "-c", f". {rc}"], capture_output=True, timeout=30)
        times.append(time.monotonic() - started)
    return round(sorted(times)[len(times) // 2], 3)


def machine_info() -> Dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    debian = Path("/etc/debian_version")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": platform.node(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "debian": debian.read_text().strip() if debian.exists() else "not Debian",
        "python": platform.python_version(),
        "root_bashrc_s": _bashrc_s(),
        "dockerd": _first_line(["dockerd", "--version"]),
        "openssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
        "mlfleet": _version("mlfleet"),
        "paramiko": _version("paramiko"),
        "ansible": _version("ansible"),
        "ansible-core": _version("ansible-core"),
        "community.docker": _collection_version("community.docker"),
        "pyinfra": _version("pyinfra"),
    }  # fmt: skip


# --- formatting -----------------------------------------------------------------------------


def _cell(stat: Dict[str, float]) -> str:
    return f"{stat['median']:.1f} [{stat['min']:.1f}-{stat['max']:.1f}]"


def _ratio(entry: Dict[str, Any], field: str) -> str:
    ratio = entry.get("ratio_to_mlfleet", {}).get(field)
    return f"{ratio:.2f}x" if ratio is not None else "-"


def _tool_rows(section: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for key, entry in section["results"].items():
        label = section.get("tools", {}).get(key, {}).get("label", key)
        rows.append([label, _cell(entry["wall_s"]), _cell(entry["cpu_s"]), _cell(entry["machine_cpu_s"]),
                     _ratio(entry, "wall_s"), _ratio(entry, "cpu_s")])  # fmt: skip
    return rows


HEAD = ["tool", "wall s", "controller CPU s", "machine CPU s", "wall / mlfleet", "CPU / mlfleet"]


def _text_table(head: List[str], rows: List[List[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def _md_table(head: List[str], rows: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]  # fmt: skip


def target_lines(results: Dict[str, Any]) -> List[str]:
    lines = []
    for item, tool, op, bound, text in TARGETS:
        entry = (results.get(item) or {}).get("results", {})
        if tool not in entry or "mlfleet" not in entry:
            lines.append(f"{text}: not measured")
            continue
        ratio = entry[tool]["ratio_to_mlfleet"]["wall_s"]
        # For the floor the figure is mlfleet / floor.
        value = 1 / ratio if tool == "floor" else ratio
        met = value >= bound if op == ">=" else value <= bound
        line = f"{text}: {value:.2f}x ({'met' if met else 'MISSED'})"
        if tool != "floor" and "floor" in entry:
            # What the floor itself reaches against this tool: the most any tool doing the
            # same job could show here, since the hosts' own work is the same for all.
            ceiling = ratio / entry["floor"]["ratio_to_mlfleet"]["wall_s"]
            line += f"; the floor itself: {ceiling:.2f}x"
        lines.append(line)
    return lines


def _sections(results: Dict[str, Any], table: Any) -> List[str]:
    out: List[str] = []
    update = results.get("update") or {}
    if "results" in update:
        out += ["", f"Fleet update v1 -> v3, {update['hosts']} CPU hosts, {update['runs']} runs; median [min-max]"]  # fmt: skip
        out += table(HEAD, _tool_rows(update))
        rc = update.get("remote_command_s")
        if rc:
            out += [f"One remote command on an open SSH connection (`true`) costs {rc['median']:.3f}s here; every tool pays it per command."]  # fmt: skip
        prof = update.get("mlfleet_profile") or {}
        if prof:
            ph = prof["agent_phase_median_s"]
            out += ["", "mlfleet (same job), where a host's time goes (medians, s): "
                    + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in ph.items())
                    + f"; SSH, agent check and start {prof['ssh_agent_check_and_start_median_s']:.2f}"
                    + f"; controller outside the hosts {prof['controller_outside_hosts_s']['median']:.2f}"]  # fmt: skip
        out += _failure_lines(update)
    elif update:
        out += ["", f"Fleet update: {update}"]
    facts = results.get("facts") or {}
    if "results" in facts:
        out += ["", f"Facts, {facts['hosts']} SSH-only hosts, forks {facts['forks']}, {facts['runs']} runs; median [min-max]"]  # fmt: skip
        out += table(HEAD, _tool_rows(facts))
        out += _failure_lines(facts)
    elif facts:
        out += ["", f"Facts: {facts}"]
    hetero = results.get("hetero") or {}
    if "results" in hetero:
        variants = ", ".join(f"{h} {v}" for h, v in sorted(hetero["variants"].items()))
        out += ["", f"mlfleet alone on the heterogeneous five (variants: {variants})"]
        out += table(HEAD, _tool_rows(hetero))
        out += _failure_lines(hetero)
    elif hetero:
        out += ["", f"Heterogeneous five: {hetero}"]
    out += _agent_lines(results.get("agent"))
    out += _delivery_lines(results.get("delivery"), table)
    out += ["", "Targets (reported, not asserted):", *(f"  {t}" for t in target_lines(results))]
    return out


def _failure_lines(section: Dict[str, Any]) -> List[str]:
    """Timed runs that failed (not in the medians), each with the first line of its reason."""
    return [f"FAILED run {f['run']}: {f['reason'].splitlines()[0]}" for f in section.get("failed_runs") or []]  # fmt: skip


def _agent_lines(agent: Optional[Dict[str, Any]]) -> List[str]:
    if not agent:
        return []
    if "rollback_latency_s" not in agent:
        return ["", f"Agent: {agent}"]
    rb, tick = agent["rollback_latency_s"], agent["tick_s"]
    return ["", f"Agent on {agent['host']}: rollback latency {rb['median']:.2f}s [{rb['min']:.2f}-{rb['max']:.2f}] "
            f"(failing verdict -> old release answering); tick {tick['median']:.2f}s (max {tick['max']:.2f}), "
            f"peak RSS {agent['tick_peak_rss_mib']} MiB; zipapp {agent['zipapp_bytes'] / 1024:.0f} KiB"]  # fmt: skip


def _human(n: Optional[float]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _delivery_lines(delivery: Optional[Dict[str, Any]], table: Any) -> List[str]:
    if not delivery:
        return []
    if "rows" not in delivery:
        return ["", f"Delivery (bytes per host): {delivery}"]
    rows = [[r["host"], r["case"], r["method"], _human(r["link_bytes"]), _human(r["reported_bytes"]),
             f"{r['transfer_s'] or 0:.1f}"] for r in delivery["rows"]]  # fmt: skip
    return ["", "Delivery, bytes per host (bench/delivery.py)",
            *table(["host", "case", "method", "link bytes", "reported", "transfer s"], rows)]  # fmt: skip


def table(results: Dict[str, Any]) -> str:
    """The short report for the terminal."""
    m = results["machine"]
    head = f"mlfleet vs peers on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['date']}"
    return "\n".join(
        [head, *_sections(results, _text_table), f"\n(took {results['duration_s']:.0f}s)"]
    )


def markdown(results: Dict[str, Any]) -> str:
    """bench/results/latest.md: the figures, the machine, what every tool did."""
    m = results["machine"]
    lines = ["# mlfleet against the tools an operator would pick instead", "",
             f"Measured {m['date']} by `./run-bench {results['command']}` in {results['duration_s'] / 60:.0f} min. "
             "Figures are medians of the runs with [min-max]; a ratio is the tool's median over mlfleet's "
             "(same job), so above 1 means slower or costlier than mlfleet. Controller CPU is the user+system "
             "time of the tool's process tree; machine CPU is every core's busy time, which includes the "
             "simulated hosts' own work (they share this machine) and any other load.",
             *(["", f"Note: {results['note']}"] if results.get("note") else []),
             "", "## Machine", "", *_md_table(["what", "value"], [[k, str(v)] for k, v in m.items()])]  # fmt: skip
    lines += ["", "## Figures", "```", *_sections(results, _text_table), "```"]
    for item in ("update", "facts"):
        section = results.get(item) or {}
        if "tools" in section:
            lines += ["", f"## What each tool did ({item})", "",
                      *_md_table(["tool", "does", "does not"],
                                 [[t["label"], t["does"], t["does_not"]] for t in section["tools"].values()])]  # fmt: skip
    lines += ["", "See bench/README.md for how the comparison is set up and why.", ""]
    return "\n".join(lines)
