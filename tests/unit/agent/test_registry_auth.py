"""Registry authentication and trust against a real local HTTPS registry stand-in (a CA and
a server certificate made here, Basic and Bearer challenges, a token service), and the
credential's way to the engine (`X-Registry-Auth`); the credential found on the host is
test_host_credentials'. No secret may show in any message or repr."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import ipaddress
import json
import re
import ssl
import threading
import traceback
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mlfleet.agent.credential import RegistryCredential
from mlfleet.agent.engine_api import EngineAPI, EngineError
from mlfleet.agent.registry_auth import (
    Challenge,
    RegistryAuthError,
    RegistryAuthorizer,
    RegistrySession,
    RegistryTrustError,
    parse_challenges,
    tls_context,
    token_request,
)

USER = "ci"
PASSWORD = "s3cret-Pa55word"
IDENTITY_TOKEN = "idtok-9f8e7d6c5b4a"
SECRETS = (PASSWORD, IDENTITY_TOKEN, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


def assert_hidden(exc: BaseException) -> None:
    """Nothing a user or a log could see of `exc` carries a secret."""
    seen = str(exc) + repr(exc) + "".join(traceback.format_exception(type(exc), exc, None))
    for secret in SECRETS:
        assert secret not in seen


# --- a CA and a server certificate for 127.0.0.1 ---------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA's certificate (PEM)
    cert: Path  # the server's certificate, for IP 127.0.0.1, signed by the CA
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path) -> Pki:
    """A throwaway CA and a server certificate it signed for 127.0.0.1 (EC keys: fast)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("mlfleet test CA"))
        .issuer_name(_name("mlfleet test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


def trust(certs_dir: Path, registry: str, ca: Path) -> Path:
    """Place the CA where the engine (and tls_context) look for it."""
    (certs_dir / registry).mkdir(parents=True, exist_ok=True)
    (certs_dir / registry / "ca.crt").write_bytes(ca.read_bytes())
    return certs_dir


# --- the registry stand-in ---------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SERVICE = "standin,registry"  # a comma inside the quotes, as a parser must keep it


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TokenRequest:
    method: str
    params: Dict[str, str]  # query or form, secrets left out
    user: str  # "" for an anonymous request


class RegistryStandIn:
    """A Distribution-like registry on 127.0.0.1 over TLS: `/v2/<repo>/manifests/<ref>`,
    `/v2/<repo>/blobs/<digest>`, and its token service at `/token`. `auth`: "none",
    "basic" (htpasswd) or "bearer" (the token spec; anonymous tokens grant nothing)."""

    def __init__(self, pki: Pki, auth: str = "none"):
        self.auth = auth
        self.users = {USER: PASSWORD}
        self.refresh_tokens = {IDENTITY_TOKEN: USER}
        self.manifests: Dict[Tuple[str, str], Tuple[str, bytes]] = {}
        self.blobs: Dict[str, bytes] = {}
        self.token_requests: List[TokenRequest] = []
        self._tokens: Dict[str, Tuple[str, str]] = {}  # token -> (user, scope)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pki.cert), str(pki.key))
        self._server = _StandInServer(("127.0.0.1", 0), _StandInHandler)
        self._server.standin = self
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # The images it holds.

    def push_image(self, repo: str, tag: str, arch: str, layer_sizes: List[int]) -> str:
        """One platform's image under `tag`; returns its manifest digest."""
        layers = [bytes([i % 251]) * size for i, size in enumerate(layer_sizes)]
        config = json.dumps({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(b"diff" + x) for x in layers]},
        }).encode()  # fmt: skip
        for blob in (config, *layers):
            self.blobs[sha256(blob)] = blob
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha256(x), "size": len(x)} for x in layers],
        }).encode()  # fmt: skip
        self.manifests[(repo, tag)] = (OCI_MANIFEST, manifest)
        self.manifests[(repo, sha256(manifest))] = (OCI_MANIFEST, manifest)
        return sha256(manifest)

    def push_index(self, repo: str, tag: str, platforms: Mapping[str, List[int]]) -> None:
        """An image index under `tag`: one image per `arch[/variant]`, plus a build
        attestation (platform unknown/unknown) as buildx pushes it."""
        entries: List[Dict[str, Any]] = []
        for name, sizes in platforms.items():
            arch, _, variant = name.partition("/")
            digest = self.push_image(repo, f"only-{arch}{variant}", arch, sizes)
            platform: Dict[str, str] = {"architecture": arch, "os": "linux"}
            if variant:
                platform["variant"] = variant
            entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "platform": platform})
        attestation = self.push_image(repo, "attestation", "unknown", [7])
        entries.append({
            "mediaType": OCI_MANIFEST, "digest": attestation,
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        })  # fmt: skip
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        self.manifests[(repo, tag)] = (OCI_INDEX, body.encode())

    # Its authentication.

    def challenge(self, repo: str) -> str:
        if self.auth == "basic":
            return 'Basic realm="Registry Realm"'
        return (
            f'Bearer realm="https://{self.address}/token",service="{SERVICE}",'
            f'scope="repository:{repo}:pull"'
        )

    def allows(self, authorization: str, repo: str) -> bool:
        if self.auth == "none":
            return True
        scheme, _, value = authorization.partition(" ")
        if self.auth == "basic" and scheme == "Basic":
            return self._basic_user(value) is not None
        if self.auth == "bearer" and scheme == "Bearer" and value in self._tokens:
            user, scope = self._tokens[value]
            return bool(user) and scope == f"repository:{repo}:pull"
        return False

    def _basic_user(self, value: str) -> Optional[str]:
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user if self.users.get(user) == password else None

    def issue_token(self, method: str, params: Dict[str, str], authorization: str) -> Any:
        """The token service's answer: (status, JSON body)."""
        user = ""
        if method == "POST":
            user = self.refresh_tokens.get(params.get("refresh_token", ""), "")
            if params.get("grant_type") != "refresh_token" or not user:
                return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
        elif authorization:
            scheme, _, value = authorization.partition(" ")
            user = (self._basic_user(value) if scheme == "Basic" else None) or ""
            if not user:
                return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
        shown = {k: v for k, v in params.items() if k != "refresh_token"}
        self.token_requests.append(TokenRequest(method, shown, user))
        if params.get("service") != SERVICE:
            return 400, {"errors": [{"code": "DENIED", "message": "wrong service"}]}
        token = f"tok-{len(self._tokens)}"
        self._tokens[token] = (user, params.get("scope", ""))
        key = "access_token" if method == "POST" else "token"
        return 200, {key: token, "expires_in": 300}


class _StandInServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    standin: RegistryStandIn


class _StandInHandler(http.server.BaseHTTPRequestHandler):
    server: _StandInServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet tests
        pass

    def _answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._answer(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def do_GET(self) -> None:
        standin = self.server.standin
        path, _, query = self.path.partition("?")
        if path == "/token":
            params = dict(urllib.parse.parse_qsl(query))
            self._json(*standin.issue_token("GET", params, self.headers.get("Authorization", "")))
            return
        match = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
        if match is None:
            self._json(404, {"errors": [{"code": "NOT_FOUND"}]})
            return
        repo, kind, ref = match.groups()
        if not standin.allows(self.headers.get("Authorization", ""), repo):
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED"}]}).encode()
            self._answer(401, body, {"WWW-Authenticate": standin.challenge(repo)})
            return
        if kind == "blobs" and ref in standin.blobs:
            self._answer(200, standin.blobs[ref], {"Content-Type": "application/octet-stream"})
        elif kind == "manifests" and (repo, ref) in standin.manifests:
            media_type, body = standin.manifests[(repo, ref)]
            self._answer(200, body, {"Content-Type": media_type})
        else:
            self._json(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        params = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        if self.path.partition("?")[0] != "/token":
            self._json(404, {})
            return
        self._json(*self.server.standin.issue_token("POST", params, ""))


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def standin(pki: Pki, request: pytest.FixtureRequest) -> Iterator[RegistryStandIn]:
    registry = RegistryStandIn(pki, getattr(request, "param", "none"))
    registry.push_image("team/model", "v1", "amd64", [100, 200])
    yield registry
    registry.close()


@pytest.fixture
def certs_dir(tmp_path: Path, pki: Pki, standin: RegistryStandIn) -> Path:
    return trust(tmp_path / "certs.d", standin.address, pki.ca)


def session(
    standin: RegistryStandIn, certs_dir: Path, credential: Optional[RegistryCredential] = None
) -> RegistrySession:
    return RegistrySession(standin.address, credential, certs_dir=str(certs_dir))


def manifest_url(standin: RegistryStandIn, repo: str = "team/model", ref: str = "v1") -> str:
    return f"https://{standin.address}/v2/{repo}/manifests/{ref}"


def password_credential(registry: str, password: str = PASSWORD) -> RegistryCredential:
    return RegistryCredential(registry, username=USER, password=password)


# --- challenges (pure) -------------------------------------------------------------------


def test_challenges_keep_commas_inside_quotes() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="a,b",'
        'scope="repository:team/model:pull,push"'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.example/token",
                "service": "a,b",
                "scope": "repository:team/model:pull,push",
            },
        )
    ]


def test_challenges_several_in_one_header_schemes_and_names_lowercase() -> None:
    header = 'BASIC Realm="Registry \\"Realm\\"", Bearer realm=https://a/t , service = x'
    assert parse_challenges(header) == [
        Challenge("basic", {"realm": 'Registry "Realm"'}),
        Challenge("bearer", {"realm": "https://a/t", "service": "x"}),
    ]


def test_challenges_unreadable_header_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        parse_challenges('Bearer realm="https://a/t')
    assert parse_challenges("") == []


def test_token_request_with_a_password_is_a_basic_authenticated_get() -> None:
    challenge = Challenge("bearer", {"realm": "https://a/token?x=1", "service": "s", "scope": "c"})
    req = token_request(challenge, password_credential("r:5000"))
    assert req.get_method() == "GET"
    assert req.full_url == "https://a/token?x=1&service=s&scope=c"
    assert req.get_header("Authorization", "").startswith("Basic ")
    assert token_request(challenge, None).get_header("Authorization") is None


def test_token_request_with_an_identity_token_is_the_refresh_token_grant() -> None:
    challenge = Challenge("bearer", {"realm": "https://a/token", "service": "s", "scope": "c"})
    req = token_request(challenge, RegistryCredential("r:5000", identitytoken=IDENTITY_TOKEN))
    assert req.get_method() == "POST"
    assert req.get_header("Authorization") is None
    form = dict(urllib.parse.parse_qsl((req.data or b"").decode()))  # type: ignore[union-attr]
    assert form == {
        "grant_type": "refresh_token",
        "refresh_token": IDENTITY_TOKEN,
        "service": "s",
        "scope": "c",
        "client_id": "mlfleet",
    }


def test_credentials_never_go_to_a_plain_http_or_file_realm() -> None:
    authorizer = RegistryAuthorizer("r:5000", password_credential("r:5000"))
    for realm in ("http://evil/token", "file:///etc/shadow"):
        with pytest.raises(RegistryAuthError, match="https:// token service") as caught:
            authorizer.authorization([Challenge("bearer", {"realm": realm})], "team/model")
        assert_hidden(caught.value)
    anonymous = RegistryAuthorizer("r:5000")
    with pytest.raises(RegistryAuthError, match="file:///etc/shadow"):
        anonymous.authorization([Challenge("bearer", {"realm": "file:///etc/shadow"})])


# --- against the stand-in: trust -----------------------------------------------------------


def test_trusted_by_its_ca_in_certs_d(standin: RegistryStandIn, certs_dir: Path) -> None:
    body = session(standin, certs_dir).get(manifest_url(standin), OCI_MANIFEST)
    assert json.loads(body)["schemaVersion"] == 2


def test_unknown_ca_is_a_trust_error_naming_the_certs_d_path(
    standin: RegistryStandIn, tmp_path: Path
) -> None:
    with pytest.raises(RegistryTrustError) as caught:
        session(standin, tmp_path / "empty").get(manifest_url(standin), OCI_MANIFEST)
    message = str(caught.value)
    assert message.startswith(f"{standin.address}: its certificate is not trusted: ")
    assert f"place its CA at /etc/docker/certs.d/{standin.address}/ca.crt" in message
    assert caught.value.registry == standin.address


def test_a_certificate_for_another_address_says_so(
    standin: RegistryStandIn, pki: Pki, tmp_path: Path
) -> None:
    registry = f"localhost:{standin.port}"  # the certificate names only 127.0.0.1
    certs = trust(tmp_path / "certs.d", registry, pki.ca)
    sess = RegistrySession(registry, certs_dir=str(certs))
    with pytest.raises(RegistryTrustError, match="not valid for this address"):
        sess.get(f"https://{registry}/v2/team/model/manifests/v1", OCI_MANIFEST)


def test_tls_context_loads_every_crt_and_refuses_half_a_client_pair(
    tmp_path: Path, pki: Pki
) -> None:
    trust(tmp_path, "r:5000", pki.ca)
    (tmp_path / "r:5000" / "extra.crt").write_bytes(pki.ca.read_bytes())
    context = tls_context("r:5000", str(tmp_path))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(c["subject"] == ((("commonName", "mlfleet test CA"),),)
               for c in context.get_ca_certs())  # fmt: skip
    (tmp_path / "r:5000" / "client.cert").write_bytes(pki.cert.read_bytes())
    with pytest.raises(RegistryTrustError, match=r"client\.cert has no client\.key"):
        tls_context("r:5000", str(tmp_path))
    (tmp_path / "r:5000" / "client.key").write_bytes(pki.key.read_bytes())
    tls_context("r:5000", str(tmp_path))  # a whole pair loads
    (tmp_path / "r:5000" / "broken.crt").write_text("not a certificate")
    with pytest.raises(RegistryTrustError, match=r"broken\.crt: not a usable certificate"):
        tls_context("r:5000", str(tmp_path))


# --- against the stand-in: Basic -----------------------------------------------------------


@pytest.mark.parametrize("standin", ["basic"], indirect=True)
def test_basic_with_the_right_password(standin: RegistryStandIn, certs_dir: Path) -> None:
    sess = session(standin, certs_dir, password_credential(standin.address))
    assert json.loads(sess.get(manifest_url(standin), OCI_MANIFEST))["schemaVersion"] == 2


@pytest.mark.parametrize("standin", ["basic"], indirect=True)
def test_basic_with_a_wrong_password_is_refused(standin: RegistryStandIn, certs_dir: Path) -> None:
    wrong = password_credential(standin.address, PASSWORD + "-old")
    with pytest.raises(RegistryAuthError) as caught:
        session(standin, certs_dir, wrong).get(manifest_url(standin), OCI_MANIFEST, "team/model")
    assert str(caught.value).startswith(f"{standin.address} refused the credentials for {USER}")
    assert caught.value.username == USER
    assert PASSWORD + "-old" not in str(caught.value) + repr(caught.value)
    assert_hidden(caught.value)


@pytest.mark.parametrize("standin", ["basic"], indirect=True)
def test_basic_anonymous_needs_credentials(standin: RegistryStandIn, certs_dir: Path) -> None:
    with pytest.raises(RegistryAuthError) as caught:
        session(standin, certs_dir).get(manifest_url(standin), OCI_MANIFEST, "team/model")
    assert str(caught.value).startswith(f"{standin.address} needs registry credentials")
    assert caught.value.username is None


# --- against the stand-in: Bearer ----------------------------------------------------------


@pytest.mark.parametrize("standin", ["bearer"], indirect=True)
def test_bearer_fetches_a_token_with_service_and_scope(
    standin: RegistryStandIn, certs_dir: Path
) -> None:
    sess = session(standin, certs_dir, password_credential(standin.address))
    assert json.loads(sess.get(manifest_url(standin), OCI_MANIFEST))["schemaVersion"] == 2
    assert standin.token_requests == [
        TokenRequest("GET", {"service": SERVICE, "scope": "repository:team/model:pull"}, USER)
    ]


@pytest.mark.parametrize("standin", ["bearer"], indirect=True)
def test_bearer_tokens_are_kept_per_scope(standin: RegistryStandIn, certs_dir: Path) -> None:
    standin.push_image("team/other", "v1", "amd64", [10])
    sess = session(standin, certs_dir, password_credential(standin.address))
    manifest = json.loads(sess.get(manifest_url(standin), OCI_MANIFEST))
    sess.get(f"https://{standin.address}/v2/team/model/blobs/{manifest['config']['digest']}", "*/*")
    assert len(standin.token_requests) == 1  # the blob shares the manifest's scope
    sess.get(manifest_url(standin, "team/other"), OCI_MANIFEST)
    assert len(standin.token_requests) == 2  # another repository: another scope
    sess.get(manifest_url(standin), OCI_MANIFEST)
    assert [r.params["scope"] for r in standin.token_requests] == [
        "repository:team/model:pull",
        "repository:team/other:pull",
    ]  # back to the first: its token was kept


@pytest.mark.parametrize("standin", ["bearer"], indirect=True)
def test_bearer_with_an_identity_token(standin: RegistryStandIn, certs_dir: Path) -> None:
    credential = RegistryCredential(standin.address, identitytoken=IDENTITY_TOKEN)
    sess = session(standin, certs_dir, credential)
    assert json.loads(sess.get(manifest_url(standin), OCI_MANIFEST))["schemaVersion"] == 2
    [request] = standin.token_requests
    assert (request.method, request.user, request.params["grant_type"]) == (
        "POST",
        USER,
        "refresh_token",
    )


@pytest.mark.parametrize("standin", ["bearer"], indirect=True)
def test_bearer_anonymous_needs_credentials(standin: RegistryStandIn, certs_dir: Path) -> None:
    with pytest.raises(RegistryAuthError) as caught:
        session(standin, certs_dir).get(manifest_url(standin), OCI_MANIFEST, "team/model")
    assert str(caught.value).startswith(
        f"{standin.address} needs registry credentials to pull team/model"
    )
    assert standin.token_requests[0].user == ""  # it asked anonymously first, as docker does


@pytest.mark.parametrize("standin", ["bearer"], indirect=True)
def test_bearer_wrong_password_or_token_is_refused_without_the_secret(
    standin: RegistryStandIn, certs_dir: Path
) -> None:
    for credential in (
        password_credential(standin.address, "nope-" + PASSWORD),
        RegistryCredential(standin.address, identitytoken="stale-" + IDENTITY_TOKEN),
    ):
        with pytest.raises(RegistryAuthError, match="refused the credentials for") as caught:
            session(standin, certs_dir, credential).get(manifest_url(standin), OCI_MANIFEST)
        assert_hidden(caught.value)
        assert "nope-" not in str(caught.value) and "stale-" not in str(caught.value)
    assert "its identity token" in str(caught.value)
    assert caught.value.username is None


# --- the credential's way to the engine ------------------------------------------------------


class _EngineHandler(http.server.BaseHTTPRequestHandler):
    received: List[Tuple[str, Dict[str, str]]] = []
    fail = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        type(self).received.append((self.path, dict(self.headers.items())))
        if type(self).fail:
            body = b'{"message":"unauthorized: authentication required"}'
            self.send_response(500)
        else:
            body = b'{"status":"Pulling from team/model"}\n{"status":"Downloaded"}\n'
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def engine() -> Iterator[EngineAPI]:
    """An engine stand-in on TCP that records what a pull sends."""
    _EngineHandler.received = []
    _EngineHandler.fail = False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EngineHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield EngineAPI(f"tcp://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


def test_pull_sends_the_credential_as_x_registry_auth(engine: EngineAPI) -> None:
    credential = password_credential("10.77.0.1:5000")
    events = list(engine.pull("10.77.0.1:5000/team/model", "v1", auth=credential))
    assert events[-1] == {"status": "Downloaded"}
    [(path, headers)] = _EngineHandler.received
    assert path == "/v1.41/images/create?fromImage=10.77.0.1%3A5000%2Fteam%2Fmodel&tag=v1"
    sent = json.loads(base64.urlsafe_b64decode(headers["X-Registry-Auth"]))
    assert sent == {"serveraddress": "10.77.0.1:5000", "username": USER, "password": PASSWORD}


def test_pull_without_a_credential_sends_no_header(engine: EngineAPI) -> None:
    list(engine.pull("10.77.0.1:5000/team/model", "v1"))
    assert "X-Registry-Auth" not in _EngineHandler.received[0][1]


def test_a_refused_pull_says_nothing_of_the_credential(engine: EngineAPI) -> None:
    _EngineHandler.fail = True
    with pytest.raises(EngineError) as caught:
        list(engine.pull("r:5000/m", "v1", auth=password_credential("r:5000")))
    assert "authentication required" in str(caught.value)
    header = password_credential("r:5000").x_registry_auth()
    assert header not in str(caught.value) + repr(caught.value)
    assert_hidden(caught.value)
