"""A thin Docker Engine API client over a unix socket or plain TCP (standard library).

Why not the docker SDK: the agent ships as one zipapp that must run on Python 3.8 hosts,
and the SDK's current releases (and requests/urllib3) no longer support 3.8. The Engine
API is plain JSON over HTTP; each method below is one endpoint, no second abstraction.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode, urlparse

from mlfleet.agent.credential import RegistryCredential

API = "/v1.41"  # Docker 20.10; newer engines accept older API versions


class EngineUnreachable(Exception):
    """The engine did not answer (not running, wrong socket, permission)."""


class EngineError(Exception):
    """The engine answered with an error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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


def demux(raw: bytes) -> str:
    """Docker's multiplexed stdout/stderr stream (8-byte frame headers) as text."""
    out, pos = [], 0
    while pos + 8 <= len(raw):
        stream, size = struct.unpack(">BxxxL", raw[pos : pos + 8])
        if stream not in (0, 1, 2):
            return raw.decode("utf-8", errors="replace")  # a TTY stream: not framed
        out.append(raw[pos + 8 : pos + 8 + size])
        pos += 8 + size
    return b"".join(out).decode("utf-8", errors="replace")


class EngineAPI:
    def __init__(self, docker_host: str, timeout: float = 30.0):
        self.docker_host = docker_host
        self.timeout = timeout
        url = urlparse(docker_host)
        if url.scheme == "unix":
            self._unix: Optional[str] = url.path
            self._tcp: Optional[Tuple[str, int]] = None
        elif url.scheme in ("tcp", "http"):
            self._unix = None
            self._tcp = (url.hostname or "localhost", url.port or 2375)
        else:
            raise ValueError(f"unsupported docker host {docker_host!r} (unix:// or tcp://)")

    # --- transport ---------------------------------------------------------------------

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        t = self.timeout if timeout is None else timeout
        if self._unix is not None:
            return _UnixConnection(self._unix, t)
        assert self._tcp is not None
        return http.client.HTTPConnection(self._tcp[0], self._tcp[1], timeout=t)

    def _open(
        self,
        method: str,
        path: str,
        params: Optional[Dict[str, Any]],
        body: Any,
        timeout: Optional[float],
        headers: Optional[Mapping[str, str]] = None,
    ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = API + path + ("?" + urlencode(params) if params else "")
        sent = {"Host": "docker", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        conn = self._connection(timeout)
        try:
            conn.request(method, url, body=data, headers=sent)
            return conn, conn.getresponse()
        except OSError as exc:
            conn.close()
            raise EngineUnreachable(
                f"Docker engine at {self.docker_host} did not answer: {exc}"
            ) from None

    def request(
        self,
        method: str,
        path: str,
        params: Optional[Dict[str, Any]] = None,
        body: Any = None,
        timeout: Optional[float] = None,
        raw: bool = False,
    ) -> Any:
        """One call; the decoded JSON answer (or bytes when raw); EngineError on 4xx/5xx."""
        conn, resp = self._open(method, path, params, body, timeout)
        try:
            payload = resp.read()
        except OSError as exc:
            raise EngineUnreachable(
                f"Docker engine at {self.docker_host} broke off: {exc}"
            ) from None
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                message = json.loads(payload).get("message", "")
            except ValueError:
                message = payload.decode(errors="replace")
            raise EngineError(resp.status, message.strip() or f"HTTP {resp.status}")
        if raw:
            return payload
        return json.loads(payload) if payload.strip() else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    # --- system --------------------------------------------------------------------------

    def version(self) -> Dict[str, Any]:
        return self.get("/version")

    def info(self) -> Dict[str, Any]:
        return self.get("/info")

    # --- images --------------------------------------------------------------------------

    def image_inspect(self, reference: str) -> Optional[Dict[str, Any]]:
        try:
            return self.get(f"/images/{quote(reference, safe='')}/json")
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise

    def images(self) -> List[Dict[str, Any]]:
        return self.get("/images/json")

    def pull(
        self,
        repository: str,
        tag: str,
        timeout: float = 900.0,
        auth: Optional[RegistryCredential] = None,
    ) -> Iterator[Dict[str, Any]]:
        """Pull, yielding the engine's progress messages; EngineError on a failed pull.
        With `auth`, the engine answers the registry's challenge with it (the header's value
        is a secret: no message here carries it)."""
        headers = {"X-Registry-Auth": auth.x_registry_auth()} if auth is not None else None
        conn, resp = self._open(
            "POST", "/images/create", {"fromImage": repository, "tag": tag}, None, timeout, headers
        )
        try:
            if resp.status >= 400:
                payload = resp.read()
                try:
                    message = json.loads(payload).get("message", "")
                except ValueError:
                    message = payload.decode(errors="replace")
                raise EngineError(resp.status, message.strip())
            while True:
                line = resp.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                if "error" in event:
                    raise EngineError(500, event.get("error", "pull failed"))
                yield event
        except OSError as exc:
            raise EngineUnreachable(f"pull from {self.docker_host} broke off: {exc}") from None
        finally:
            conn.close()

    def image_tag(self, image: str, repository: str, tag: str) -> None:
        self.request(
            "POST", f"/images/{quote(image, safe='')}/tag", {"repo": repository, "tag": tag}
        )

    def image_remove(self, image: str) -> None:
        self.request("DELETE", f"/images/{quote(image, safe='')}")

    # --- containers ----------------------------------------------------------------------

    def list_containers(self, filters: Dict[str, List[str]]) -> List[Dict[str, Any]]:
        """Running containers that match Docker's list filters, e.g. {"publish": ["8080/tcp"]}
        (those publishing host port 8080)."""
        return self.request("GET", "/containers/json", {"filters": json.dumps(filters)}) or []

    def container_create(self, name: str, config: Dict[str, Any]) -> str:
        return self.request("POST", "/containers/create", {"name": name}, config)["Id"]

    def container_start(self, container: str) -> None:
        self.request("POST", f"/containers/{container}/start")

    def container_stop(self, container: str, timeout_s: int = 10) -> None:
        try:
            self.request(
                "POST", f"/containers/{container}/stop", {"t": timeout_s}, timeout=timeout_s + 30
            )
        except EngineError as exc:
            if exc.status != 304:  # already stopped
                raise

    def container_remove(self, container: str, force: bool = True) -> None:
        try:
            self.request(
                "DELETE", f"/containers/{container}", {"force": "1" if force else "0", "v": "1"}
            )
        except EngineError as exc:
            if exc.status != 404:
                raise

    def container_inspect(self, container: str) -> Optional[Dict[str, Any]]:
        try:
            return self.get(f"/containers/{container}/json")
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise

    def container_logs(self, container: str, tail: int = 50) -> str:
        try:
            raw = self.request(
                "GET",
                f"/containers/{container}/logs",
                {"stdout": "1", "stderr": "1", "tail": str(tail)},
                raw=True,
            )
        except EngineError:
            return ""
        return demux(raw)

    def exec_run(
        self, container: str, command: List[str], timeout: float = 10.0
    ) -> Tuple[int, str]:
        """Run a command in the container: (exit code, combined output)."""
        created = self.request(
            "POST",
            f"/containers/{container}/exec",
            body={"Cmd": command, "AttachStdout": True, "AttachStderr": True},
        )
        raw = self.request(
            "POST",
            f"/exec/{created['Id']}/start",
            body={"Detach": False},
            timeout=timeout,
            raw=True,
        )
        state = self.get(f"/exec/{created['Id']}/json")
        return int(state.get("ExitCode") if state.get("ExitCode") is not None else -1), demux(raw)
