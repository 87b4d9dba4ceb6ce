"""One apply or tick at a time on a host: an exclusive lock file that says who holds it."""

from __future__ import annotations

import fcntl
import json
import os
import time
from typing import IO, Optional


class AgentBusy(Exception):
    """Another agent command holds the lock."""


class HostLock:
    def __init__(self, path: str, command: str):
        self.path = path
        self.command = command
        self._fh: Optional[IO[str]] = None

    def holder(self) -> str:
        try:
            with open(self.path) as fh:
                info = json.loads(fh.read() or "{}")
        except (OSError, ValueError):
            return "another mlfleet-agent"
        since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
        return (
            f"mlfleet-agent {info.get('command', '?')} (pid {info.get('pid', '?')}, since {since})"
        )

    def acquire(self, wait_s: float) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held for the lock's lifetime
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.close()
                    raise AgentBusy(f"{self.holder()} holds {self.path}") from None
                time.sleep(0.2)
        try:  # who holds it, for the next one's message: best effort (a full disk)
            fh.seek(0)
            fh.truncate()
            fh.write(
                json.dumps({"pid": os.getpid(), "command": self.command, "since": time.time()})
            )
            fh.flush()
        except OSError:
            pass
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> HostLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
