"""Copy one image from a registry to another by the registry API: the manifest's exact bytes
(so its digest, the pin hosts pull by, is unchanged), and only the blobs the destination
lacks, streamed (a multi-GB layer is never held in memory or written to a temporary file).
An image index is copied whole: its manifests for every platform, so the destination
serves what the source serves and a host's engine picks its own platform.

The relay cache uses it: the controller holds the upstream's TLS session and credential,
and its hosts pull from the copy on the controller's loopback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List

from mlfleet.agent.platforms import is_index
from mlfleet.controller.registry import Registry, RegistryError


@dataclass
class CopyStats:
    digest: str = ""  # the copied manifest's (the index's, for a multi-platform image)
    blobs: int = 0  # blobs fetched from the source (the others the destination had)
    bytes: int = 0  # their size


def _blobs_of(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    config = manifest.get("config")
    return ([config] if isinstance(config, dict) else []) + list(manifest.get("layers") or [])


def copy_image(source: Registry, dest: Registry, repo: str, reference: str) -> CopyStats:
    """Copy `repo:reference` (a tag or a digest) from `source` to `dest`, under the same
    reference. Raises RegistryError when the source does not have it."""
    stats = CopyStats()
    stats.digest = _copy_manifest(source, dest, repo, reference, stats)
    return stats


def _copy_manifest(source: Registry, dest: Registry, repo: str, reference: str,
                   stats: CopyStats) -> str:  # fmt: skip
    found = source.get_manifest_bytes(repo, reference)
    if found is None:
        raise RegistryError(f"registry {source.address} has no {repo}:{reference}")
    raw, media_type, digest = found
    manifest = json.loads(raw)
    if is_index(manifest):
        for child in manifest.get("manifests") or []:
            if dest.get_manifest_bytes(repo, child["digest"]) is None:
                _copy_manifest(source, dest, repo, child["digest"], stats)
    else:
        for blob in _blobs_of(manifest):
            if dest.has_blob(repo, blob["digest"]):
                continue
            dest.push_blob(repo, blob["digest"], source.blob_chunks(repo, blob["digest"]))
            stats.blobs += 1
            stats.bytes += int(blob.get("size") or 0)
    dest.put_manifest(repo, digest, raw, media_type)
    if not reference.startswith("sha256:"):
        dest.put_manifest(repo, reference, raw, media_type)
    return digest
