"""Relay: images reach a host that cannot reach the registry through an SSH reverse tunnel.

The host's engine pulls from 127.0.0.1:PORT on the host (a loopback registry needs no TLS);
sshd forwards each connection back over the SSH connection to the controller, which
connects it to the registry it can reach. Only the layers the host lacks cross the link
(the engine asks for nothing else), and every byte that does is counted here; an optional
per-host cap (`mlfleet_bwlimit_kbit`) paces what is sent to the host.

Any local user of the host can connect to that port while the host applies, so the relay
reads each request and passes only the pulls of the deployment's images (registry_filter:
GET and HEAD of /v2/, of manifests and blobs of its repositories); it answers anything else
itself, 403 (400 for a malformed request) in the registry's error format, and closes the
connection. A connection whose first request is refused never reaches the registry. The
registry's answers are streamed back as they come, never parsed or held.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import List, Optional, Protocol, Tuple, runtime_checkable

import paramiko

from mlfleet.controller.registry_filter import Decision, PullScope, next_request, refusal
from mlfleet.controller.transport import Stream, StreamHandler

REFUSALS_KEPT = 20
"""How many refused requests a relay remembers (`Relay.refused`)."""
_DRAIN_S = 30.0  # how long a refusal waits for the registry to finish its earlier answers
# After a refusal, what the client still sends (a refused upload's body) is read and dropped
# for a moment before the connection closes: closing on unread bytes resets the connection,
# and the client could lose the refusal it was sent.
_LINGER_S = 1.0
_LINGER_BYTES = 1 << 20


class Tunnels(Protocol):
    """What a relay needs of a host's transport (`controller.transport.Transport` has it)."""

    def forward_remote(self, handler: StreamHandler) -> int: ...

    def cancel_forward(self, port: int) -> None: ...


@runtime_checkable
class _HalfClosable(Protocol):
    """A stream that can end what it sends and still read (a paramiko Channel can)."""

    def shutdown_write(self) -> None: ...


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
    """One reverse tunnel for one host, open for the host's part of a deployment. `scope`:
    the images it serves (`PullScope.of_variants(desired.parsed_variants())`); None serves
    pulls of any repository, and nothing but pulls."""

    def __init__(
        self,
        conn: Tunnels,
        registry: Tuple[str, int],
        bwlimit_kbit: Optional[int] = None,
        scope: Optional[PullScope] = None,
    ):
        self.conn = conn
        self.registry = registry
        self.scope = scope or PullScope()
        self.pacer = _Pacer(bwlimit_kbit)
        self.bytes_to_host = 0
        self.bytes_from_host = 0
        self.refused: List[str] = []  # the first REFUSALS_KEPT refusals' reasons (plain text)
        self.refusals = 0
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
        """One tunnelled connection: its requests, judged one by one, go to the registry (a
        connection opened at the first one that passes); its answers come back on another
        thread. A refusal stops the requests, lets the registry finish the answers it owes,
        then answers the refused request and closes."""
        with self._lock:
            self._threads.append(threading.current_thread())
        upstream: Optional[socket.socket] = None
        answers: Optional[threading.Thread] = None
        refusing = threading.Event()
        refused: Optional[Decision] = None
        buffer, searched = bytearray(), 0  # what the host sent that is not judged yet
        try:
            while refused is None:
                found = next_request(buffer, self.scope, searched)
                if found is None:
                    searched = len(buffer)
                    data = channel.recv(65536)
                    if not data:
                        break
                    with self._lock:
                        self.bytes_from_host += len(data)
                    buffer += data
                    continue
                decision, head, rest = found
                buffer, searched = bytearray(rest), 0
                if not decision.allowed:
                    refused = decision
                    break
                if upstream is None:
                    upstream = socket.create_connection(self.registry, timeout=30)
                    upstream.settimeout(None)
                    answers = threading.Thread(
                        target=self._answer, args=(upstream, channel, refusing), daemon=True
                    )
                    answers.start()
                upstream.sendall(head)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the host or the registry went away (or the registry cannot be reached)
        finally:
            self._finish(channel, upstream, answers, refused, refusing)

    def _finish(self, channel: Stream, upstream: Optional[socket.socket],
                answers: Optional[threading.Thread], refused: Optional[Decision],
                refusing: threading.Event) -> None:  # fmt: skip
        if refused is not None:
            refusing.set()  # the answers' thread leaves the channel open for the refusal
            self._record(refused)
        if upstream is not None:
            try:
                upstream.shutdown(socket.SHUT_WR)  # no more requests: it answers what it has
            except OSError:
                pass
        drained = True
        if answers is not None:
            answers.join(timeout=_DRAIN_S if refused is not None else None)
            drained = not answers.is_alive()
        try:
            if refused is not None and drained:
                channel.sendall(refusal(refused))
                if isinstance(channel, _HalfClosable):
                    channel.shutdown_write()  # a client reading to the end has it all now
                self._linger(channel)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            channel.close()
            if upstream is not None:
                upstream.close()

    def _answer(self, upstream: socket.socket, channel: Stream, refusing: threading.Event) -> None:
        """The registry's answers to the host, as they come (counted and paced)."""
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
            if not refusing.is_set():
                channel.close()  # the registry ended the connection: so does the tunnel

    def _linger(self, channel: Stream) -> None:
        """Read and drop what the client still sends, until it closes, for _LINGER_S at
        most (a timer closes the channel) and _LINGER_BYTES."""
        timer = threading.Timer(_LINGER_S, channel.close)
        timer.daemon = True
        timer.start()
        try:
            dropped = 0
            while dropped < _LINGER_BYTES:
                data = channel.recv(65536)
                if not data:
                    break
                dropped += len(data)
                with self._lock:
                    self.bytes_from_host += len(data)
        finally:
            timer.cancel()

    def _record(self, decision: Decision) -> None:
        with self._lock:
            self.refusals += 1
            if len(self.refused) < REFUSALS_KEPT:
                self.refused.append(decision.reason)
