"""Daemons the lab starts (sshd, dockerd, crond, registry): started detached, recorded by
pid, stopped by pid; plus the sweep that finds what a crashed run left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set

from mlfleet.controller.errors import LabError


def start_daemon(
    cmd: Sequence[str],
    log: Path,
    *,
    netns: Optional[str] = None,
    uts: Optional[Path] = None,
    env: Optional[Dict[str, str]] = None,
) -> int:
    """Start `cmd` in its own session (it outlives us), optionally inside a network
    namespace via nsenter (not `ip netns exec`: that remounts /sys and breaks dockerd)
    and a UTS namespace (the host's own hostname)."""
    argv = list(cmd)
    if netns or uts:
        ns = [f"--net=/run/netns/{netns}"] if netns else []
        ns += [f"--uts={uts}"] if uts else []
        argv = ["nsenter", *ns, "--", *argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    return proc.pid


def alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def _reap(pid: int) -> None:
    # Daemons we started in this process are our children: collect them so they do not
    # linger as zombies (which `alive` treats as dead anyway).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pid(pid: Optional[int], *, expect: str, timeout: float = 20.0) -> None:
    """SIGTERM, up to `timeout` seconds, then SIGKILL. `expect` must occur in the process's
    command line, so a pid recycled by an unrelated process is never signalled."""
    if pid and alive(pid) and expect in cmdline(pid):
        terminate_all([pid], grace=timeout)


def _all_pids() -> List[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def pids_mentioning(markers: Iterable[str]) -> Set[int]:
    """Processes whose command line names one of `markers` (lab paths), with all their
    descendants (containers under a shim, sessions under sshd)."""
    marks = [m for m in markers if m]
    me = os.getpid()
    roots = {p for p in _all_pids() if p != me and any(m in cmdline(p) for m in marks)}
    children: Dict[int, List[int]] = {}
    for pid in _all_pids():
        children.setdefault(_ppid(pid), []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found or pid == me:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        for _ in range(30):
            _reap(pid)
            if not alive(pid):
                break
            time.sleep(0.05)


def terminate_all(pids: Iterable[int], grace: float = 5.0) -> None:
    """What a shutdown does to the processes left: SIGTERM, up to `grace` seconds for them
    to exit, then SIGKILL."""
    targets = [p for p in pids if p != os.getpid()]
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for pid in targets:
            _reap(pid)
        if not any(alive(pid) for pid in targets):
            return
        time.sleep(0.1)
    kill_all([pid for pid in targets if alive(pid)])


def kill_cgroups(prefix: str) -> None:
    """Kill every process in cgroups named `prefix*` (containers of a lab engine, which
    runs them under its own --cgroup-parent) and remove those cgroups."""
    root = Path("/sys/fs/cgroup")
    dirs: List[Path] = []
    for controller in [root, *[p for p in root.iterdir() if p.is_dir()]] if root.exists() else []:
        try:
            dirs += [d for d in controller.iterdir() if d.is_dir() and d.name.startswith(prefix)]
        except OSError:
            continue
    for top in dirs:
        for procs in top.rglob("cgroup.procs"):
            try:
                pids = [int(x) for x in procs.read_text().split()]
            except OSError:
                continue
            kill_all(pids)
    for top in dirs:
        # Deepest first: a cgroup can only be removed when it has no children.
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


def run(cmd: Sequence[str], *, check: bool = True, netns: Optional[str] = None) -> str:
    """Run a short command; on failure a LabError with its stderr."""
    argv = list(cmd)
    if netns:
        argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise LabError(
            f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise LabError(f"{what} not ready after {timeout:.0f}s")
