"""The controller's registry client against a registry stand-in that answers as real ones
do: Basic (Distribution's htpasswd) or Bearer (a token service, as GHCR and Harbor), over
plain HTTP or TLS with a private CA. What is asserted is what an operator sees: the manifest,
or one line saying what is wrong and which setting fixes it."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
import urllib.parse
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from mlfleet.agent.credential import RegistryCredential
from mlfleet.controller.errors import ExitCode
from mlfleet.controller.lab import registry_tls
from mlfleet.controller.registry import (
    MANIFEST_V2,
    Registry,
    RegistryAuthError,
    RegistryError,
    RegistryTrustError,
    sha256_digest,
)

PASSWORD = "pa55-w0rd-9"
MANIFEST = b'{"schemaVersion": 2, "mediaType": "' + MANIFEST_V2.encode() + b'", "layers": []}'


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "basic"  # or bearer
    scheme = "http"
    tokens_issued: List[str] = []

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        if url.path == "/token":
            return self._token(urllib.parse.parse_qs(url.query))
        repo = url.path[len("/v2/") :].split("/manifests/")[0] if "/manifests/" in url.path else ""
        if not self._allowed(repo):
            return self._challenge(repo)
        if url.path == "/v2/":
            return self._send(200, b"{}")
        self._send(200, MANIFEST, {"Docker-Content-Digest": sha256_digest(MANIFEST),
                                   "Content-Type": MANIFEST_V2})  # fmt: skip

    def _basic_ok(self) -> bool:
        expected = base64.b64encode(f"ci:{PASSWORD}".encode()).decode()
        return self.headers.get("Authorization") == f"Basic {expected}"

    def _allowed(self, repo: str) -> bool:
        if self.mode == "basic":
            return self._basic_ok()
        return self.headers.get("Authorization") == f"Bearer tok-{repo}"

    def _challenge(self, repo: str) -> None:
        if self.mode == "basic":
            header = 'Basic realm="lab"'
        else:
            port = self.server.server_address[1]  # type: ignore[index]
            realm = f"{self.scheme}://127.0.0.1:{port}/token"
            header = f'Bearer realm="{realm}",service="reg",scope="repository:{repo}:pull"'
        self._send(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', {"WWW-Authenticate": header})

    def _token(self, query: Dict[str, List[str]]) -> None:
        if not self._basic_ok():
            return self._send(401, b"{}")
        repo = query["scope"][0].split(":")[1]
        self.tokens_issued.append(repo)
        self._send(200, json.dumps({"token": f"tok-{repo}"}).encode())

    def _send(self, code: int, body: bytes, headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


def _serve(
    mode: str, context: Optional[ssl.SSLContext] = None
) -> Tuple[http.server.HTTPServer, str]:
    handler = type("H", (_Handler,), {"mode": mode, "tokens_issued": [],
                                      "scheme": "https" if context else "http"})  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def basic() -> Iterator[str]:
    server, address = _serve("basic")
    yield address
    server.shutdown()


@pytest.fixture
def bearer() -> Iterator[Tuple[str, http.server.HTTPServer]]:
    server, address = _serve("bearer")
    yield address, server
    server.shutdown()


def _cred(address: str, password: str = PASSWORD) -> RegistryCredential:
    return RegistryCredential(address, "ci", password)


def test_basic_auth_with_the_right_password_reads_the_manifest(basic: str):
    found = Registry(basic, credential=_cred(basic)).get_manifest("team/model", "v1")
    assert found is not None and found[1] == sha256_digest(MANIFEST)


def test_a_wrong_password_is_one_line_naming_the_user_never_the_password(basic: str):
    with pytest.raises(RegistryAuthError) as caught:
        Registry(basic, credential=_cred(basic, "wrong-one")).get_manifest("team/model", "v1")
    said = str(caught.value)
    assert f"registry {basic} refused the credentials for ci" in said
    assert "wrong-one" not in said and "\n" not in said
    assert caught.value.exit_code == ExitCode.REGISTRY


def test_no_credential_for_a_registry_that_wants_one_says_how_to_log_in(basic: str):
    with pytest.raises(RegistryAuthError, match="needs credentials") as caught:
        Registry(basic).get_manifest("team/model", "v1")
    assert f"docker login {basic}" in str(caught.value)


def test_bearer_tokens_are_fetched_once_per_repository(bearer):
    address, server = bearer
    registry = Registry(address, credential=_cred(address))
    for _ in range(3):
        assert registry.get_manifest("team/model", "v1") is not None
    assert registry.get_manifest("team/other", "v1") is not None
    assert server.RequestHandlerClass.tokens_issued == ["team/model", "team/other"]


def test_a_token_service_that_refuses_the_password_is_a_refusal(bearer):
    address, _ = bearer
    with pytest.raises(RegistryAuthError, match="refused the credentials for ci"):
        Registry(address, credential=_cred(address, "nope")).get_manifest("team/model", "v1")


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Iterator[Tuple[str, Path, Path]]:
    """A TLS registry signed by a private CA; (address, its CA, another CA)."""
    base = tmp_path_factory.mktemp("tls")
    ca_dir, other = base / "ca", base / "other"
    ca_dir.mkdir(), other.mkdir()
    ca = registry_tls.make_ca(ca_dir, "test CA")
    other_ca = registry_tls.make_ca(other, "someone else's CA")
    (base / "srv").mkdir()
    cert, key = registry_tls.make_server_cert(base / "srv", ca_dir, "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server, address = _serve("basic", context)
    yield address, ca, other_ca
    server.shutdown()


def test_a_tls_registry_is_verified_against_its_private_ca(tls):
    address, ca, _ = tls
    registry = Registry(address, https=True, ca_file=str(ca), credential=_cred(address))
    assert registry.get_manifest("team/model", "v1") is not None


def test_an_unknown_ca_is_one_line_naming_the_setting_that_trusts_it(tls):
    address, _, other_ca = tls
    for ca_file in (None, str(other_ca)):
        with pytest.raises(RegistryTrustError) as caught:
            Registry(address, https=True, ca_file=ca_file, credential=_cred(address)).get_manifest(
                "team/model", "v1"
            )
        said = str(caught.value)
        assert "not trusted" in said and "mlfleet_registry_ca" in said
        assert f"/etc/docker/certs.d/{address}/ca.crt" in said


def test_a_registry_that_is_down_says_so_in_one_line():
    with pytest.raises(RegistryError, match=r"unreachable: \[Errno 111\] Connection refused"):
        Registry("127.0.0.1:1", timeout=2).get_manifest("team/model", "v1")
