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


@dataclass(frozen=True)
class Platform:
    """What an image index entry must be for this host (the OCI platform fields)."""

    architecture: str
    variant: str = ""
    os: str = "linux"


# uname -m (and the engine's `Architecture`) -> the OCI platform; the Go names map to
# themselves, so `arch` may be given either way.
_PLATFORMS = {
    "x86_64": Platform("amd64"),
    "amd64": Platform("amd64"),
    "aarch64": Platform("arm64", "v8"),
    "arm64": Platform("arm64", "v8"),
    "armv7l": Platform("arm", "v7"),
    "armv6l": Platform("arm", "v6"),
    "i686": Platform("386"),
    "i386": Platform("386"),
}


def host_platform(machine: str) -> Platform:
    """`x86_64` -> linux/amd64, `aarch64` -> linux/arm64/v8, `armv7l` -> linux/arm/v7; also
    `arm/v7` and other OCI names as written."""
    if machine in _PLATFORMS:
        return _PLATFORMS[machine]
    architecture, _, variant = machine.partition("/")
    return Platform(architecture, variant)


def _rank(entry: Dict[str, Any], want: Platform) -> Optional[int]:
    """How well an index entry fits (0 best), None when this host cannot run it. arm64
    has only v8, written or not; an arm/vN host runs vN, an unmarked entry, then older
    variants (containerd's platform matcher)."""
    platform_ = entry.get("platform") or {}
    if platform_.get("os") != want.os or platform_.get("architecture") != want.architecture:
        return None  # also attestations, whose platform is unknown/unknown
    variant = platform_.get("variant") or ""
    if variant == want.variant or (want.architecture == "arm64" and variant in ("", "v8")):
        return 0
    if not variant:
        return 1
    if want.architecture == "arm" and variant[1:].isdigit() and want.variant[1:].isdigit():
        older = int(want.variant[1:]) - int(variant[1:])
        return 1 + older if older > 0 else None
    return None if want.variant else 1


def pick_platform(entries: List[Dict[str, Any]], want: Platform) -> Optional[Dict[str, Any]]:
    """The index entry the engine would pull on a `want` host (pure), None when none fits."""
    ranks = [_rank(entry, want) for entry in entries]
    ranked = [(rank, i) for i, rank in enumerate(ranks) if rank is not None]
    return entries[min(ranked)[1]] if ranked else None


def remote_image(
    reference: str,
    engine_info: Dict[str, Any],
    timeout: float = 10.0,
    credential: Optional[RegistryCredential] = None,
    arch: Optional[str] = None,
    certs_dir: str = CERTS_DIR,
) -> Optional[RemoteImage]:
    """The layers a pull of `reference` fetches, for a host of `arch` (the engine's
    architecture when not given), trusting the registry and answering its challenges with
    `credential` as the engine would. None when the registry cannot be asked (no route,
    timeout, an odd answer): the pull itself is then the only judge. RegistryAuthError or
    RegistryTrustError (from registry_auth) when it refuses this host: the pull would too,
    so apply says why before pulling."""
    try:
        registry, repo, tag = split_reference(reference)
    except ValueError:
        return None
    plain = plain_http(registry, engine_info)
    want = host_platform(arch or engine_info.get("Architecture") or platform.machine())
    base = f"{'http' if plain else 'https'}://{registry}/v2/{repo}"
    try:
        session = RegistrySession(
            registry, credential, plain_http=plain, timeout=timeout, certs_dir=certs_dir
        )

        def get_json(path: str, accept: str) -> Any:
            return json.loads(session.get(f"{base}/{path}", accept, repo))

        manifest = get_json(f"manifests/{tag}", _ACCEPT)
        if "manifests" in manifest:  # an index: this platform's entry
            entry = pick_platform(manifest["manifests"], want)
            if entry is None:
                return None
            manifest = get_json(f"manifests/{entry['digest']}", _ACCEPT)
        config = get_json(f"blobs/{manifest['config']['digest']}", "*/*")
        layers = [(layer["digest"], int(layer["size"])) for layer in manifest["layers"]]
        return RemoteImage(layers, list(config["rootfs"]["diff_ids"]))
    except (OSError, ValueError, KeyError, TypeError):  # urllib's errors are OSErrors
        return None
