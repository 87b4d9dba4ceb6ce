"""Ask an image's registry what a pull would fetch (layer digests and compressed sizes),
before the engine pulls anything, so preflight can refuse a host without the disk room, or
one the registry will not serve (credentials, an untrusted certificate: registry_auth)."""

from __future__ import annotations

import ipaddress
import json
import platform
import socket
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from mlfleet.agent.credential import RegistryCredential
from mlfleet.agent.imageref import ImageRef, split_host_port
from mlfleet.agent.platforms import Platform, PlatformMissing, choose, is_index
from mlfleet.agent.registry_auth import CERTS_DIR, RegistrySession

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


def remote_image(
    reference: str,
    engine_info: Dict[str, Any],
    timeout: float = 10.0,
    credential: Optional[RegistryCredential] = None,
    arch: Optional[str] = None,
    certs_dir: str = CERTS_DIR,
) -> Optional[RemoteImage]:
    """The layers a pull of `reference` fetches, for a host whose `uname -m` is `arch` (the
    engine's architecture when not given; an index entry chosen as the engine would, see
    agent/platforms.py), trusting the registry and answering its challenges with
    `credential` as the engine would. None when the registry cannot be asked (no route,
    timeout, an odd answer): the pull itself is then the only judge. PlatformMissing when
    its index has no image for this host (naming the platforms it has); RegistryAuthError or
    RegistryTrustError (from registry_auth) when it refuses this host: the pull would fail
    the same way, so apply says why before pulling."""
    try:
        registry, repo, tag = split_reference(reference)
    except ValueError:
        return None
    plain = plain_http(registry, engine_info)
    machine = arch or engine_info.get("Architecture") or platform.machine()
    base = f"{'http' if plain else 'https'}://{registry}/v2/{repo}"
    try:
        session = RegistrySession(
            registry, credential, plain_http=plain, timeout=timeout, certs_dir=certs_dir
        )

        def get_json(path: str, accept: str) -> Any:
            return json.loads(session.get(f"{base}/{path}", accept, repo))

        manifest = get_json(f"manifests/{tag}", _ACCEPT)
        if isinstance(manifest, dict) and is_index(manifest):
            # This host's entry; a PlatformError (a ValueError) when there is none or the
            # machine is one the platform table does not know.
            digest = choose(manifest, Platform.from_machine(machine))
            manifest = get_json(f"manifests/{digest}", _ACCEPT)
        config = get_json(f"blobs/{manifest['config']['digest']}", "*/*")
        layers = [(layer["digest"], int(layer["size"])) for layer in manifest["layers"]]
        return RemoteImage(layers, list(config["rootfs"]["diff_ids"]))
    except PlatformMissing:
        raise  # the engine's pull would fail the same way, in words less clear
    except (OSError, ValueError, KeyError, TypeError):  # urllib's errors are OSErrors
        return None
