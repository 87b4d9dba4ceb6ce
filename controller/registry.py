"""A small client for the Docker Registry HTTP API v2 (the Distribution registry).

Enough to push images built without a daemon, and to ask what a registry holds (tags,
manifests, layer sizes) before a deployment touches any host.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import requests

from mlfleet.controller.errors import MlfleetError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_ACCEPT = ", ".join([MANIFEST_V2, OCI_MANIFEST])


class RegistryError(MlfleetError):
    """The registry refused or could not be reached."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    """One registry, e.g. Registry("10.77.0.1:5000") (plain HTTP) or with https=True."""

    def __init__(self, address: str, *, https: bool = False, timeout: float = 30.0):
        self.address = address
        self.base = f"{'https' if https else 'http'}://{address}/v2"
        self.timeout = timeout
        self.session = requests.Session()

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self.session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise RegistryError(f"registry {self.address} unreachable: {exc}") from None

    @staticmethod
    def _check(resp: requests.Response, what: str, ok: Tuple[int, ...]) -> None:
        if resp.status_code not in ok:
            raise RegistryError(f"{what}: HTTP {resp.status_code} {resp.text[:200].strip()}")

    def ping(self) -> bool:
        try:
            return self.session.get(self.base + "/", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self._request("HEAD", f"{self.base}/{repo}/blobs/{digest}")
        return resp.status_code == 200

    def push_blob(self, repo: str, digest: str, data: Union[bytes, Path]) -> bool:
        """Upload a blob unless the repository already has it; True when bytes were sent."""
        if self.has_blob(repo, digest):
            return False
        resp = self._request("POST", f"{self.base}/{repo}/blobs/uploads/")
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
                    "PUT", f"{location}{sep}digest={digest}", data=body, headers=headers
                )
        else:
            resp = self._request(
                "PUT", f"{location}{sep}digest={digest}", data=data, headers=headers
            )
        self._check(resp, f"upload {digest[:19]} to {repo}", (201,))
        return True

    def put_manifest(self, repo: str, reference: str, manifest: bytes, media_type: str) -> str:
        resp = self._request(
            "PUT",
            f"{self.base}/{repo}/manifests/{reference}",
            data=manifest,
            headers={"Content-Type": media_type},
        )
        self._check(resp, f"push manifest {repo}:{reference}", (201,))
        return resp.headers.get("Docker-Content-Digest", sha256_digest(manifest))

    def get_manifest(self, repo: str, reference: str) -> Optional[Tuple[Dict[str, Any], str]]:
        """(manifest, digest), or None when the registry does not have that reference."""
        resp = self._request(
            "GET", f"{self.base}/{repo}/manifests/{reference}", headers={"Accept": _ACCEPT}
        )
        if resp.status_code == 404:
            return None
        self._check(resp, f"manifest {repo}:{reference}", (200,))
        digest = resp.headers.get("Docker-Content-Digest") or sha256_digest(resp.content)
        return json.loads(resp.content), digest

    def tags(self, repo: str) -> List[str]:
        resp = self._request("GET", f"{self.base}/{repo}/tags/list")
        if resp.status_code == 404:
            return []
        self._check(resp, f"tags of {repo}", (200,))
        return sorted(resp.json().get("tags") or [])
