"""Timing one tool's run: wall time, the controller's CPU time and the whole machine's.

Controller CPU is user + system time of the command's whole process tree, read from
getrusage(RUSAGE_CHILDREN) deltas. This process is a child subreaper, so helpers that a tool
leaves running in the background (Ansible's ssh ControlPersist masters) are re-parented to
us; they are ended and reaped after the run, and their CPU counts too. Machine CPU is the
busy time of every core from /proc/stat: the controller plus everything the simulated hosts
did (sshd, agents, engines, containers) on this one machine, plus any other load on it.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PR_SET_CHILD_SUBREAPER = 36
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A benchmark step failed; the message says which and why."""


@dataclass
class Sample:
    wall_s: float
    cpu_s: float  # the controller: the command's process tree
    machine_cpu_s: float  # every process on the machine

    def rounded(self) -> Dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def _subreaper(on: bool) -> None:
    """While on, orphaned descendants of our commands become our children (to count and
    reap them). Only on during a timed run: the lab's daemons must never be ours."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise BenchError(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}")


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLOCK_TICKS


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _our_children() -> List[int]:
    me = str(os.getpid())
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.rindex(")") + 2 :].split()[1] == me:
            pids.append(int(stat.parent.name))
    return pids


def end_leftovers() -> None:
    """End and reap whatever a command left running under us (re-parented orphans)."""
    for pid in _our_children():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)
    for pid in _our_children():
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def run_timed(
    argv: Sequence[str],
    what: str,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 900,
    log: Optional[Path] = None,
) -> Sample:
    """Run argv to completion and measure it; a non-zero exit is a BenchError naming `what`
    (the output goes to `log`, whose tail is in the message)."""
    _subreaper(True)
    cpu0, busy0, t0 = _children_cpu_s(), machine_busy_s(), time.monotonic()
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.run(
            list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: no result within {timeout:.0f}s") from None
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
        wall, busy = time.monotonic() - t0, machine_busy_s() - busy0
        end_leftovers()
        _subreaper(False)
    sample = Sample(wall_s=wall, cpu_s=_children_cpu_s() - cpu0, machine_cpu_s=busy)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:] if log else ""
        raise BenchError(f"{what}: exit {proc.returncode}\n{tail}")
    return sample


def spread(values: Sequence[float]) -> Dict[str, float]:
    """Median and spread (min, max) of a series, rounded for reports."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }
