"""A minimal Docker Engine API client over a unix socket or plain TCP (standard library),
enough for the agent to ask an engine about itself."""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any, Optional
from urllib.parse import urlparse


class EngineUnreachable(Exception):
    """The engine did not answer (not running, wrong socket, permission)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def default_docker_host(root_prefix: str = "/") -> str:
    """DOCKER_HOST, else the standard socket under the host root."""
    env = os.environ.get("DOCKER_HOST")
    if env:
        return env
    return "unix://" + os.path.join(root_prefix, "var/run/docker.sock")


class EngineAPI:
    def __init__(self, docker_host: str, timeout: float = 5.0):
        self.docker_host = docker_host
        self.timeout = timeout
        url = urlparse(docker_host)
        if url.scheme == "unix":
            self._unix: Optional[str] = url.path
            self._tcp: Optional[tuple] = None
        elif url.scheme in ("tcp", "http"):
            self._unix = None
            self._tcp = (url.hostname or "localhost", url.port or 2375)
        else:
            raise ValueError(f"unsupported docker host {docker_host!r} (unix:// or tcp://)")

    def _connection(self) -> http.client.HTTPConnection:
        if self._unix is not None:
            return _UnixConnection(self._unix, self.timeout)
        assert self._tcp is not None
        return http.client.HTTPConnection(self._tcp[0], self._tcp[1], timeout=self.timeout)

    def get(self, path: str) -> Any:
        """GET a JSON resource; EngineUnreachable when the engine does not answer."""
        conn = self._connection()
        try:
            conn.request("GET", path, headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read()
        except OSError as exc:
            raise EngineUnreachable(
                f"Docker engine at {self.docker_host} did not answer: {exc}"
            ) from None
        finally:
            conn.close()
        if resp.status != 200:
            raise EngineUnreachable(
                f"Docker engine at {self.docker_host} answered {resp.status} to {path}: {body[:200]!r}"
            )
        return json.loads(body)
