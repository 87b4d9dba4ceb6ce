"""Relay: images reach a host that cannot reach the registry through an SSH reverse tunnel.

The host's engine pulls from 127.0.0.1:PORT on the host (a loopback registry needs no TLS);
sshd forwards each connection back over the SSH connection to the controller, which
connects it to the registry it can reach. Only the layers the host lacks cross the link
(the engine asks for nothing else), and every byte that does is counted here; an optional
per-host cap (`mlfleet_bwlimit_kbit`) paces what is sent to the host.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import List, Optional, Tuple

import paramiko

from mlfleet.controller.transport import Stream, Transport


class _Pacer:
    """A token bucket for the bytes sent to the host (kbit/s)."""

    def __init__(self, kbit: Optional[int]):
        self.rate = (kbit * 1000 / 8) if kbit else None
        self.allowance = 0.0
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, nbytes: int) -> None:
        if self.rate is None:
            return
        with self.lock:
            now = time.monotonic()
            self.allowance = min(self.rate, self.allowance + (now - self.last) * self.rate)
            self.last = now
            self.allowance -= nbytes
            delay = -self.allowance / self.rate if self.allowance < 0 else 0.0
        if delay > 0:
            time.sleep(delay)


class Relay:
    """One reverse tunnel for one host, open for the host's part of a deployment."""

    def __init__(
        self, conn: Transport, registry: Tuple[str, int], bwlimit_kbit: Optional[int] = None
    ):
        self.conn = conn
        self.registry = registry
        self.pacer = _Pacer(bwlimit_kbit)
        self.bytes_to_host = 0
        self.bytes_from_host = 0
        self.port: Optional[int] = None
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Relay:
        self.port = self.conn.forward_remote(self._serve)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.port is not None:
            self.conn.cancel_forward(self.port)
        for t in list(self._threads):
            t.join(timeout=5)

    def _serve(self, channel: Stream) -> None:
        with self._lock:
            self._threads.append(threading.current_thread())
        try:
            upstream = socket.create_connection(self.registry, timeout=30)
        except OSError:
            channel.close()
            return
        upstream.settimeout(None)
        up = threading.Thread(target=self._pump_to_registry, args=(channel, upstream), daemon=True)
        up.start()
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                self.pacer.wait(len(data))
                channel.sendall(data)
                with self._lock:
                    self.bytes_to_host += len(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            channel.close()
            upstream.close()
            up.join(timeout=5)

    def _pump_to_registry(self, channel: Stream, upstream: socket.socket) -> None:
        try:
            while True:
                data = channel.recv(65536)
                if not data:
                    break
                upstream.sendall(data)
                with self._lock:
                    self.bytes_from_host += len(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass
