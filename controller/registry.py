"""A small client for the Docker Registry HTTP API v2 (the Distribution registry).

Enough to push images built without a daemon, and to ask what a registry holds (tags,
manifests, digests) before a deployment touches any host. It answers the registry's auth
challenge as the engine does: Basic (Distribution's htpasswd) or Bearer (a token from the
challenge's realm for its service and scope: GHCR, Harbor, GitLab, Docker Hub), one token
per repository. TLS is always verified: against the registry's private CA when one is
configured (`RegistryAccess.ca_file`), else the system's trust.

Written on requests rather than oras-py (0.2.43): oras keeps one token for every
repository and scope, takes TLS verification only as on/off (no CA file), and its
`get_manifest` drops the `Docker-Content-Digest` header digest pinning needs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import requests

from mlfleet.agent.credential import RegistryCredential
from mlfleet.agent.registry_auth import Challenge, parse_challenges
from mlfleet.controller.errors import ExitCode, MlfleetError

CERTS_D = "/etc/docker/certs.d"
"""Where a Docker engine finds a registry's CA (`HOST:PORT/ca.crt`): the controller looks
there too, so one file trusts a private registry for both."""

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_ACCEPT = ", ".join([MANIFEST_V2, OCI_MANIFEST, MANIFEST_LIST, OCI_INDEX])
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


class RegistryError(MlfleetError):
    """The registry refused or could not be reached."""

    exit_code = ExitCode.REGISTRY


class RegistryAuthError(RegistryError):
    """The registry wants credentials that are missing, or refused the ones sent."""


class RegistryTrustError(RegistryError):
    """The registry's TLS certificate is signed by a CA the controller does not trust."""


def trusted_ca(address: str, configured: Optional[str] = None) -> Optional[str]:
    """The CA file that verifies `address`: the configured one (`mlfleet_registry_ca`), else
    the engine's place for it, else None (the system's trust store)."""
    if configured:
        return configured
    path = os.path.join(CERTS_D, address, "ca.crt")
    return path if os.path.isfile(path) else None


@dataclass(frozen=True)
class RegistryAccess:
    """Everything needed to talk to one registry: scheme, trust and credential."""

    address: str
    https: bool = True
    ca_file: Optional[str] = None
    credential: Optional[RegistryCredential] = None

    def client(self, timeout: float = 30.0) -> Registry:
        return Registry(
            self.address,
            https=self.https,
            timeout=timeout,
            ca_file=self.ca_file,
            credential=self.credential,
        )


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    """One registry, e.g. Registry("10.77.0.1:5000") (plain HTTP) or with https=True, a
    private CA and a credential."""

    def __init__(self, address: str, *, https: bool = False, timeout: float = 30.0,
                 ca_file: Optional[str] = None,
                 credential: Optional[RegistryCredential] = None):  # fmt: skip
        self.address = address
        self.base = f"{'https' if https else 'http'}://{address}/v2"
        self.timeout = timeout
        self.ca_file = ca_file
        self.credential = credential
        self.session = requests.Session()
        self._authorization: Dict[str, str] = {}  # repository ("" for /v2/) -> header

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        # Per request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        kwargs.setdefault("verify", self.ca_file or True)
        try:
            return self.session.request(method, url, **kwargs)
        except requests.exceptions.SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                raise RegistryTrustError(
                    f"registry {self.address}: its TLS certificate is not trusted"
                    f" ({'not signed by ' + self.ca_file if self.ca_file else 'unknown CA'})",
                    hint=f"trust its CA: set mlfleet_registry_ca: /path/to/ca.crt, or place it at"
                    f" {CERTS_D}/{self.address}/ca.crt",
                ) from None
            raise RegistryError(f"registry {self.address}: TLS failed: {exc}") from None
        except requests.RequestException as exc:
            said = _ERRNO.search(str(exc))
            raise RegistryError(
                f"registry {self.address} unreachable: {said.group(0) if said else type(exc).__name__}",
                hint="is it up, and reachable from the controller?",
            ) from None

    def _request(
        self, method: str, url: str, *, repo: str = "", **kwargs: Any
    ) -> requests.Response:
        """One request, answering the registry's auth challenge once (then remembered for
        the repository)."""
        headers = dict(kwargs.pop("headers", None) or {})
        if repo in self._authorization:
            headers["Authorization"] = self._authorization[repo]
        resp = self._send(method, url, headers=headers, **kwargs)
        challenge = resp.headers.get("WWW-Authenticate")
        if resp.status_code != 401 or not challenge:
            return resp
        self._authorization[repo] = headers["Authorization"] = self._authorize(challenge)
        body = kwargs.get("data")
        if hasattr(body, "seek"):
            body.seek(0)  # type: ignore[union-attr]
        resp = self._send(method, url, headers=headers, **kwargs)
        if resp.status_code == 401:
            raise self._refused()
        return resp

    def _refused(self) -> RegistryAuthError:
        if self.credential is None:
            return RegistryAuthError(
                f"registry {self.address} needs credentials, and none were found for it",
                hint=f"docker login {self.address} on the controller, or set"
                " mlfleet_registry_auth_file for these hosts",
            )
        who = self.credential.username or "its identity token"
        return RegistryAuthError(
            f"registry {self.address} refused the credentials for {who}",
            hint=f"log in again (docker login {self.address}) or fix mlfleet_registry_auth_file",
        )

    def _challenge(self, header: str) -> Challenge:
        """The Bearer challenge of a 401, else its Basic one (the schemes registries use)."""
        try:
            offered = {c.scheme: c for c in parse_challenges(header)}
        except ValueError:
            offered = {}
        for scheme in ("bearer", "basic"):
            if scheme in offered:
                return offered[scheme]
        raise RegistryError(
            f"registry {self.address} asks for an authentication mlfleet does not speak: {header[:80]}"
        )

    def _authorize(self, header: str) -> str:
        """The Authorization header that answers a challenge."""
        challenge = self._challenge(header)
        cred = self.credential
        if challenge.scheme == "basic":
            if cred is None or not cred.password:
                raise self._refused()
            pair = f"{cred.username}:{cred.password}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        params = {k: v for k, v in challenge.params.items() if k in ("service", "scope")}
        realm = challenge.params.get("realm", "")
        if cred is not None and cred.identitytoken:
            data = dict(params, grant_type="refresh_token", refresh_token=cred.identitytoken,
                        client_id="mlfleet")  # fmt: skip
            resp = self._send("POST", realm, data=data)
        else:
            auth = (cred.username, cred.password) if cred is not None else None
            resp = self._send("GET", realm, params=params, auth=auth)
        if resp.status_code in (401, 403):
            raise self._refused()
        self._check(resp, f"token from {realm}", (200,))
        answer = resp.json()
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise RegistryError(f"registry {self.address}: its token service {realm} sent no token")
        return f"Bearer {token}"

    @staticmethod
    def _check(resp: requests.Response, what: str, ok: Tuple[int, ...]) -> None:
        if resp.status_code not in ok:
            raise RegistryError(f"{what}: HTTP {resp.status_code} {resp.text[:200].strip()}")

    def ping(self) -> bool:
        """Whether the registry answers, with these credentials when it asks for them."""
        try:
            return self._request("GET", self.base + "/", timeout=3).status_code == 200
        except RegistryError:
            return False

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self._request("HEAD", f"{self.base}/{repo}/blobs/{digest}", repo=repo)
        return resp.status_code == 200

    def push_blob(self, repo: str, digest: str, data: Union[bytes, Path, Iterable[bytes]]) -> bool:
        """Upload a blob unless the repository already has it; True when bytes were sent.
        `data` may be an iterable of chunks (sent chunked: a multi-GB layer is streamed, never
        held); the registry checks the bytes against `digest`."""
        if self.has_blob(repo, digest):
            return False
        resp = self._request("POST", f"{self.base}/{repo}/blobs/uploads/", repo=repo)
        self._check(resp, f"start upload to {repo}", (202,))
        location = resp.headers["Location"]
        if location.startswith("/"):
            location = self.base[: -len("/v2")] + location
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(data, Path):
            headers["Content-Length"] = str(data.stat().st_size)
            with data.open("rb") as body:
                resp = self._request(
                    "PUT", f"{location}{sep}digest={digest}", repo=repo, data=body, headers=headers
                )
        else:
            resp = self._request(
                "PUT", f"{location}{sep}digest={digest}", repo=repo, data=data, headers=headers
            )
        self._check(resp, f"upload {digest[:19]} to {repo}", (201,))
        return True

    def blob_chunks(self, repo: str, digest: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """A blob's bytes, streamed (redirects to a storage backend are followed; requests
        drops the Authorization header when the host changes)."""
        resp = self._request("GET", f"{self.base}/{repo}/blobs/{digest}", repo=repo, stream=True)
        with resp:
            self._check(resp, f"blob {digest[:19]} of {repo}", (200,))
            yield from resp.iter_content(chunk)

    def put_manifest(self, repo: str, reference: str, manifest: bytes, media_type: str) -> str:
        resp = self._request(
            "PUT",
            f"{self.base}/{repo}/manifests/{reference}",
            repo=repo,
            data=manifest,
            headers={"Content-Type": media_type},
        )
        self._check(resp, f"push manifest {repo}:{reference}", (201,))
        return resp.headers.get("Docker-Content-Digest", sha256_digest(manifest))

    def get_manifest(self, repo: str, reference: str) -> Optional[Tuple[Dict[str, Any], str]]:
        """(manifest, digest), or None when the registry does not have that reference."""
        found = self.get_manifest_bytes(repo, reference)
        if found is None:
            return None
        raw, _, digest = found
        return json.loads(raw), digest

    def get_manifest_bytes(self, repo: str, reference: str) -> Optional[Tuple[bytes, str, str]]:
        """(the manifest's bytes exactly as stored, its media type, its digest), or None when
        the registry does not have that reference. The digest is the one of the bytes (a
        registry's header is checked against them: a pin must name these bits)."""
        sep = "@" if reference.startswith("sha256:") else ":"
        resp = self._request(
            "GET",
            f"{self.base}/{repo}/manifests/{reference}",
            repo=repo,
            headers={"Accept": _ACCEPT},
        )
        if resp.status_code == 404:
            return None
        self._check(resp, f"manifest {repo}{sep}{reference}", (200,))
        raw = resp.content
        digest = sha256_digest(raw)
        said = resp.headers.get("Docker-Content-Digest")
        if said and said.startswith("sha256:") and said != digest:
            raise RegistryError(
                f"registry {self.address}: manifest {repo}{sep}{reference} does not match its"
                f" digest ({said[:19]}... said, {digest[:19]}... received)"
            )
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return raw, media_type or json.loads(raw).get("mediaType", MANIFEST_V2), digest

    def tags(self, repo: str) -> List[str]:
        resp = self._request("GET", f"{self.base}/{repo}/tags/list", repo=repo)
        if resp.status_code == 404:
            return []
        self._check(resp, f"tags of {repo}", (200,))
        return sorted(resp.json().get("tags") or [])
