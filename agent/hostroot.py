"""Reading a host through a root prefix: files and programs as the host has them.

The detectors read only through this, so the agent runs unchanged on a host (`/`), in a
container with the host mounted at `/host`, or on a lab host with its own hardware root.
"""

from __future__ import annotations

import glob
import os
import subprocess
from dataclasses import dataclass
from typing import List, Optional, Sequence

# Where programs live on a host, in PATH order; ROCm's tools may live only in its own bin.
PROGRAM_DIRS = (
    "usr/local/sbin",
    "usr/local/bin",
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
    "opt/rocm/bin",
)
DEFAULT_TIMEOUT = 5.0


class ProgramHung(Exception):
    """A program did not finish within its timeout and was killed."""


@dataclass(frozen=True)
class ProgramResult:
    returncode: int
    stdout: str
    stderr: str


class HostRoot:
    def __init__(self, prefix: str = "/", program_timeout: float = DEFAULT_TIMEOUT):
        self.prefix = os.path.abspath(prefix or "/")
        self.program_timeout = program_timeout

    def path(self, host_path: str) -> str:
        """The local path of a host path, e.g. /sys/module/nvidia/version."""
        return os.path.join(self.prefix, host_path.lstrip("/"))

    def read_text(self, host_path: str) -> Optional[str]:
        """The file's text, or None when it does not exist or cannot be read."""
        try:
            with open(self.path(host_path), "rb") as fh:
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return None

    def read_bytes(self, host_path: str) -> Optional[bytes]:
        try:
            with open(self.path(host_path), "rb") as fh:
                return fh.read()
        except OSError:
            return None

    def exists(self, host_path: str) -> bool:
        return os.path.lexists(self.path(host_path))

    def glob(self, pattern: str) -> List[str]:
        """Host paths (not local ones) matching a host-path pattern, sorted."""
        base = self.prefix.rstrip("/")
        return sorted(p[len(base) :] or "/" for p in glob.glob(self.path(pattern)))

    def which(self, program: str) -> Optional[str]:
        """The host path of a program in the usual PATH directories, or None."""
        for d in PROGRAM_DIRS:
            host_path = f"/{d}/{program}"
            local = self.path(host_path)
            if os.path.isfile(local) and os.access(local, os.X_OK):
                return host_path
        return None

    def run(self, program: str, args: Sequence[str]) -> Optional[ProgramResult]:
        """Run a host program (None when it is not installed); ProgramHung when it does not
        finish within the root's program timeout (a wedged GPU driver hangs nvidia-smi)."""
        timeout = self.program_timeout
        host_path = self.which(program)
        if host_path is None:
            return None
        proc = subprocess.Popen(
            [self.path(host_path), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.communicate(timeout=1)
            except subprocess.TimeoutExpired:
                pass  # stuck in the kernel (a wedged driver): abandon it rather than hang too
            raise ProgramHung(
                f"{host_path} did not finish within {timeout:.0f}s and was killed"
            ) from None
        return ProgramResult(
            proc.returncode,
            out.decode("utf-8", errors="replace"),
            err.decode("utf-8", errors="replace"),
        )
