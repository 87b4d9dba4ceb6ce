"""The relay's pump: real TCP on loopback. A small threaded HTTP/1.1 server stands in for the
registry and records what reaches it; a loopback listener stands in for the host's tunnel
end (each connection made to it is handed to the relay as its SSH channel would be)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

from mlfleet.agent.registry_probe import remote_image
from mlfleet.controller.registry import MANIFEST_V2, Registry, RegistryError, sha256_digest
from mlfleet.controller.registry_filter import PullScope
from mlfleet.controller.relay import Relay
from mlfleet.controller.relay_cache import RelayCache
from mlfleet.controller.transport import StreamHandler
from tests.unit.controller.test_relay_cache import push_image

DIGEST = "sha256:" + "ab" * 32
BLOB = bytes(range(256)) * 16384  # 4 MiB
SCOPE = PullScope.of_images([("reg:5000/team/model:v3", None)])


class _Registry(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a registry speaks

    def _answer(self) -> None:
        server: RecordingRegistry = self.server  # type: ignore[assignment]
        with server.lock:
            server.seen.append((self.command, self.path))
        body = BLOB if "/blobs/" in self.path else f"{self.command} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class RecordingRegistry(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Registry)
        self.lock = threading.Lock()
        self.seen: List[Tuple[str, str]] = []
        self.connections = 0

    def process_request(self, request: object, client_address: object) -> None:
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)  # type: ignore[arg-type]

    @property
    def address(self) -> Tuple[str, int]:
        return ("127.0.0.1", self.server_address[1])


class _Channel:
    """A tunnelled connection as the relay sees it: a socket with a paramiko Channel's
    close (which wakes a recv blocked in another thread) and shutdown_write."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def recv(self, nbytes: int) -> bytes:
        return self.sock.recv(nbytes)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class LoopbackTunnels:
    """`forward_remote` as sshd's reverse tunnel does it, with a loopback listener: each
    connection to the port runs the handler in a thread of its own."""

    def __init__(self) -> None:
        self.listener: Optional[socket.socket] = None

    def forward_remote(self, handler: StreamHandler) -> int:
        listener = self.listener = socket.create_server(("127.0.0.1", 0))

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=handler, args=(_Channel(conn),), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return listener.getsockname()[1]

    def cancel_forward(self, port: int) -> None:
        if self.listener is not None:
            self.listener.close()


@pytest.fixture
def registry() -> Iterator[RecordingRegistry]:
    server = RecordingRegistry()
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _relay(registry: RecordingRegistry, scope: Optional[PullScope] = SCOPE) -> Relay:
    return Relay(LoopbackTunnels(), registry.address, None, scope=scope)


def _exchange(relay: Relay, raw: bytes, half_close: bool = False) -> bytes:
    """Send `raw` on a fresh connection to the tunnel end; all that comes back until the
    relay closes the connection."""
    with socket.create_connection(("127.0.0.1", relay.port or 0), timeout=10) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            data = sock.recv(65536)
            if not data:
                return out
            out += data


def _request(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def test_a_pull_passes_and_the_registry_sees_exactly_it(registry: RecordingRegistry):
    pull = [
        ("GET", "/v2/"),
        ("HEAD", "/v2/team/model/manifests/v3"),
        ("GET", "/v2/team/model/manifests/v3"),
        ("GET", f"/v2/team/model/blobs/{DIGEST}"),
    ]
    with _relay(registry) as relay:
        client = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
        bodies = []
        for method, path in pull:  # one keep-alive connection, as the engine's
            client.request(method, path)
            response = client.getresponse()
            assert response.status == 200
            bodies.append(response.read())
        client.close()
    assert registry.seen == pull
    assert registry.connections == 1
    assert hashlib.sha256(bodies[-1]).digest() == hashlib.sha256(BLOB).digest()
    assert relay.bytes_to_host > len(BLOB) and relay.refusals == 0


@pytest.mark.parametrize(
    "method, path, reason",
    [
        ("PUT", "/v2/team/model/manifests/v3", "only GET and HEAD pass (pulls)"),
        ("DELETE", f"/v2/team/model/manifests/{DIGEST}", "only GET and HEAD pass (pulls)"),
        ("POST", "/v2/team/model/blobs/uploads/", "only GET and HEAD pass (pulls)"),
        ("GET", "/v2/other/model/manifests/v3", "repository other/model is not one this"),
        ("GET", "/v2/_catalog", "not a pull"),
        ("GET", "/v2/team/model/../../other/manifests/v3", "not a pull"),
    ],
)
def test_anything_else_never_reaches_the_registry(
    registry: RecordingRegistry, method: str, path: str, reason: str
):
    with _relay(registry) as relay:
        answer = _exchange(relay, _request(method, path))
    top, _, body = answer.partition(b"\r\n\r\n")
    assert top.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Connection: close" in top  # and it was closed: _exchange read to the end
    error = json.loads(body)["errors"][0]
    assert error["code"] == "DENIED"
    assert error["message"].startswith(f"mlfleet relay: {method} {path}: ")
    assert reason in error["message"]
    assert registry.seen == [] and registry.connections == 0
    assert relay.refusals == 1 and reason in relay.refused[0]


def test_a_malformed_request_gets_a_400(registry: RecordingRegistry):
    with _relay(registry) as relay:
        oversized = _exchange(relay, b"GET /v2/ HTTP/1.1\r\nX-Pad: " + b"a" * 70000)
        smuggled = _exchange(
            relay,
            b"GET /v2/ HTTP/1.1\nHost: x\n\nPUT /v2/team/model/manifests/v3 HTTP/1.1\r\n\r\n",
        )
    for answer in (oversized, smuggled):
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"over 64 KiB" in oversized and b"a bare CR or LF" in smuggled
    assert registry.seen == []


def test_a_refusal_after_a_pull_on_the_same_connection(registry: RecordingRegistry):
    with _relay(registry) as relay:
        client = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
        client.request("GET", "/v2/team/model/manifests/v3")
        first = client.getresponse()
        assert (first.status, first.read()) == (200, b"GET /v2/team/model/manifests/v3")
        client.request("PUT", "/v2/team/model/manifests/v3", body=b"{}")
        second = client.getresponse()
        assert second.status == 403
        assert b"only GET and HEAD pass" in second.read()
        assert second.will_close
        client.close()
    assert registry.seen == [("GET", "/v2/team/model/manifests/v3")]


def test_pipelined_pulls_pass_in_order(registry: RecordingRegistry):
    """Two requests in one segment: both reach the registry, answers come back in order."""
    both = _request("GET", "/v2/") + _request("GET", "/v2/team/model/manifests/v3")
    with _relay(registry) as relay:
        answer = _exchange(relay, both, half_close=True)
    assert registry.seen == [("GET", "/v2/"), ("GET", "/v2/team/model/manifests/v3")]
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    first, _, second = answer.partition(b"\r\n\r\nGET /v2/HTTP/1.1 200 OK\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert second.endswith(b"\r\n\r\nGET /v2/team/model/manifests/v3")
    assert relay.bytes_to_host == len(answer) and relay.bytes_from_host == len(both)


def test_a_refusal_pipelined_behind_a_pull_stops_there(registry: RecordingRegistry):
    """The pull is answered, the PUT and what follows it never reach the registry, the
    refusal comes after the answer the registry owed, then the connection is closed."""
    three = (
        _request("GET", "/v2/team/model/manifests/v3")
        + _request("PUT", "/v2/team/model/manifests/v3")
        + _request("GET", "/v2/")
    )
    with _relay(registry) as relay:
        answer = _exchange(relay, three)
    assert registry.seen == [("GET", "/v2/team/model/manifests/v3")]
    owed, _, refusal = answer.partition(b"GET /v2/team/model/manifests/v3")
    assert owed.startswith(b"HTTP/1.1 200 OK\r\n")
    assert refusal.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"PUT /v2/team/model/manifests/v3: only GET and HEAD pass" in refusal


def test_without_a_scope_the_relay_still_serves_only_pulls(registry: RecordingRegistry):
    with _relay(registry, scope=None) as relay:
        pulled = _exchange(relay, _request("GET", "/v2/any/repo/manifests/latest"), True)
        pushed = _exchange(relay, _request("PUT", "/v2/any/repo/manifests/latest"))
    assert pulled.startswith(b"HTTP/1.1 200 OK")
    assert pushed.startswith(b"HTTP/1.1 403 Forbidden")
    assert registry.seen == [("GET", "/v2/any/repo/manifests/latest")]


def test_a_registry_that_cannot_be_reached_closes_the_connection():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()  # nothing listens there
    with Relay(LoopbackTunnels(), closed, scope=SCOPE) as relay:
        assert _exchange(relay, _request("GET", "/v2/")) == b""


def test_a_refused_upload_still_gets_its_refusal(registry: RecordingRegistry):
    """The client's body is read and dropped, not left unread (a close on unread bytes
    resets the connection, and the client could lose the 403)."""
    with _relay(registry) as relay:
        client = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
        client.request("PATCH", "/v2/team/model/blobs/uploads/1", body=b"\0" * 600_000)
        response = client.getresponse()
        assert response.status == 403
        assert b"PATCH /v2/team/model/blobs/uploads/1: only GET and HEAD" in response.read()
        client.close()
    assert registry.seen == []


def test_a_real_registry_serves_the_agents_probe_and_refuses_nothing_it_should_not_see(
    tmp_path: Path,
):
    """Distribution's registry (the relay cache's) behind the relay: the agent's own probe
    (urllib) and a blob pass; a push through the relay is refused and changes nothing."""
    cache = RelayCache(Registry("127.0.0.1:9"), root=tmp_path).start()
    try:
        local = cache.local()
        layer = os.urandom(300_000)
        digest, _ = push_image(local, "v1", [layer])
        scope = PullScope.of_images([("reg:5000/team/model:v1", None)])
        with Relay(LoopbackTunnels(), cache.address, scope=scope) as relay:
            remote = remote_image(f"{relay.address}/team/model:v1", {})
            assert remote is not None
            assert remote.layers == [(sha256_digest(layer), len(layer))]
            through = Registry(relay.address)
            assert b"".join(through.blob_chunks("team/model", sha256_digest(layer))) == layer
            with pytest.raises(RegistryError, match="start upload to team/model: HTTP 403"):
                through.push_blob("team/model", sha256_digest(b"x"), b"x")
            with pytest.raises(RegistryError, match="push manifest team/model:v1: HTTP 403"):
                through.put_manifest("team/model", "v1", b"{}", MANIFEST_V2)
            with pytest.raises(RegistryError, match="HTTP 403"):
                through.tags("team/model")
        assert (local.get_manifest("team/model", "v1") or ({}, ""))[1] == digest
        assert relay.refusals == 3
    finally:
        cache.stop()
