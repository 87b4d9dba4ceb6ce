"""Ask an image's registry what a pull would fetch (layer digests and compressed sizes),
before the engine pulls anything, so preflight can refuse a host without the disk room."""

from __future__ import annotations

import ipaddress
import json
import platform
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from mlfleet.agent.imageref import ImageRef, split_host_port

_ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])  # fmt: skip


@dataclass
class RemoteImage:
    layers: List[Tuple[str, int]]  # (digest, compressed size)
    diff_ids: List[str]  # uncompressed layer ids, same order


def split_reference(reference: str) -> Tuple[str, str, str]:
    """'10.77.0.1:5000/team/model:v3' -> ('10.77.0.1:5000', 'team/model', 'v3'): the registry
    API's address, repository and manifest reference (see `ImageRef`; ImageRefError, a
    ValueError, when `reference` is not an image reference)."""
    ref = ImageRef.parse(reference)
    return ref.registry_address, ref.api_repository, ref.reference


def plain_http(registry: str, engine_info: Dict[str, Any]) -> bool:
    """Whether the engine talks to this registry without TLS (its insecure registries)."""
    host = split_host_port(registry)[0]
    config = engine_info.get("RegistryConfig") or {}
    index = (config.get("IndexConfigs") or {}).get(registry)
    if index is not None:
        return not index.get("Secure", True)
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return False
    if address.is_loopback:
        return True
    return any(
        address in ipaddress.ip_network(c) for c in config.get("InsecureRegistryCIDRs") or []
    )


def _get(url: str, accept: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def remote_image(
    reference: str, engine_info: Dict[str, Any], timeout: float = 10.0
) -> Optional[RemoteImage]:
    """The layers a pull of `reference` fetches, or None when the registry cannot be asked
    (authentication, no route): the pull itself is then the only judge."""
    try:
        registry, repo, tag = split_reference(reference)
    except ValueError:
        return None
    base = f"{'http' if plain_http(registry, engine_info) else 'https'}://{registry}/v2/{repo}"
    try:
        body = _get(f"{base}/manifests/{tag}", _ACCEPT, timeout)
        manifest = json.loads(body)
        if "manifests" in manifest:  # a list: pick this platform's entry
            arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(
                platform.machine(), platform.machine()
            )
            entry = next(
                (
                    m
                    for m in manifest["manifests"]
                    if (m.get("platform") or {}).get("architecture") == arch
                ),
                None,
            )
            if entry is None:
                return None
            body = _get(f"{base}/manifests/{entry['digest']}", _ACCEPT, timeout)
            manifest = json.loads(body)
        config = _get(f"{base}/blobs/{manifest['config']['digest']}", "*/*", timeout)
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None
    return RemoteImage(
        [(layer["digest"], int(layer["size"])) for layer in manifest["layers"]], diff_ids
    )
