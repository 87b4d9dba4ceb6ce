"""The agent's directory is private: the directory and every directory in it 0700, its
files 0600 or tighter (the record, its -wal and -shm, logs, locks, reports, caches, keys).

What the agent creates is private from the start (umask 077, set before anything is
written); what an older agent or an operator left open to other users is tightened
(`tighten`) when a command that works in the directory starts, and said once in the
host's history (`summary`).

Python 3.8 compatible and stdlib only: part of the agent."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import List

from mlfleet.agent.protocol import EventKind

PRIVATE_UMASK = 0o077
SHOWN = 5
# The kind of the history's event (with no app) that says what was tightened.
EVENT_KIND = EventKind.SECURED.value
# The agent's own code, as the controller installs it (0755) on each install or upgrade:
# tightened like the rest, but not news (the same bytes as on the controller; no data).
AGENT_ARCHIVE = "mlfleet-agent.pyz"  # changes named in the history's line; the rest are counted


def private_mode(mode: int) -> int:
    """The permission bits `mode` keeps once private: the owner's only (pure)."""
    return stat.S_IMODE(mode) & ~0o077


@dataclass(frozen=True)
class Tightened:
    """A file or directory that was open to other users, and its modes before and after."""

    path: str
    was: int
    now: int

    def describe(self, agent_dir: str) -> str:
        name = os.path.relpath(self.path, agent_dir)
        return f"{agent_dir if name == '.' else name} {self.was:04o} -> {self.now:04o}"


def tighten(agent_dir: str) -> List[Tightened]:
    """Take every permission of group and others off the agent's directory and all in it
    that the agent's user owns (symbolic links are not followed: a link's target is not
    the agent's). Returns what changed; [] when all was private (or there is no directory)."""
    changed: List[Tightened] = []
    uid = os.geteuid()

    def visit(path: str, info: os.stat_result) -> None:
        if info.st_uid != uid or stat.S_ISLNK(info.st_mode):
            return
        if info.st_mode & 0o077:
            now = private_mode(info.st_mode)
            try:
                os.chmod(path, now)  # not a link (lstat said so), and only we write here
            except OSError:
                return  # best effort: a read-only filesystem keeps what it has
            changed.append(Tightened(path, stat.S_IMODE(info.st_mode), now))

    def walk(directory: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)  # said in order
        except OSError:
            return
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            visit(entry.path, info)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == uid:
                walk(entry.path)

    try:
        top = os.lstat(agent_dir)
    except OSError:
        return []
    if not stat.S_ISDIR(top.st_mode):
        return []
    visit(agent_dir, top)
    walk(agent_dir)
    return changed


def worth_saying(agent_dir: str, tightened: List[Tightened]) -> bool:
    """Whether what `tighten` changed held anything of the agent's (pure): not when only the
    directory and the agent's code were open, as a fresh install or an upgrade leaves them
    (a directory's listing shows names; a file's own mode guards what it holds)."""
    quiet = {os.path.abspath(agent_dir), os.path.abspath(os.path.join(agent_dir, AGENT_ARCHIVE))}
    return any(os.path.abspath(t.path) not in quiet for t in tightened)


def summary(agent_dir: str, tightened: List[Tightened]) -> str:
    """The history's line about what `tighten` changed (pure)."""
    named = ", ".join(t.describe(agent_dir) for t in tightened[:SHOWN])
    more = f" and {len(tightened) - SHOWN} more" if len(tightened) > SHOWN else ""
    return (
        f"the agent's directory was open to other users: made private ({named}{more});"
        " the agent keeps it 0700 and its files 0600"
    )
