"""Platforms of multi-arch images: which entry of an image index a host's engine pulls (pure).

A multi-arch image is an index (OCI `application/vnd.oci.image.index.v1+json`, or Docker's
older `application/vnd.docker.distribution.manifest.list.v2+json`) whose entries each name a
platform (`os`, `architecture`, optional `variant`) and the digest of that platform's image.
The engine picks one entry for its own platform; knowing which one in advance is what lets
the controller tell "this image has no arm64 build" before a host fails to pull it, and the
agent's registry probe size the very image its engine will pull.

The rules are containerd's `platforms` package (which the Docker engine uses to pick):

- normalization: `x86_64`/`x86-64` -> `amd64`, `aarch64` -> `arm64`, `i386` -> `386`,
  `armhf` -> `arm/v7`, `armel` -> `arm/v6`, `macos` -> `darwin`, all lower case; an `arm`
  without a variant is `arm/v7`, an `amd64/v1` is plain `amd64`. Unlike containerd, which
  writes arm64 v8 as no variant, the normal form here spells it `arm64/v8` (how Docker names
  an arm64 host's platform); both readings make an arm64 entry without a variant match v8;
- compatibility (`platforms.Only`): an engine on `amd64/vN` also runs `amd64/vN-1` ... plain
  `amd64`, then `386`; on `arm/vN` also `arm/vN-1` ... `arm/v5`; on `arm64/v8.x` also
  `arm64/v8.x-1` ... `arm64/v8`, on `arm64/v9.x` also `v9.x-1` ... `v9`, then `v8.(x+5)` ...
  `v8`; and on any arm64 then `arm/v8` ... `arm/v5`. Nearer platforms are preferred;
- among entries equally near, one whose variant is spelled as asked for comes first (asking
  for `linux/arm64/v8` picks an `arm64/v8` entry over an `arm64` one), then index order.

Entries without a platform and attestation entries (BuildKit's provenance and SBOM manifests:
platform `unknown/unknown`, annotation `vnd.docker.reference.type: attestation-manifest`) are
never chosen. `os.version` and `os.features` (Windows only) are not considered.

Standard library only, Python 3.8: the one home of this rule, for the agent and the controller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)

_ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
_ATTESTATION = "attestation-manifest"

# A component of `os/architecture/variant` (containerd's specifier component).
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+")
_LEVEL = re.compile(r"v(\d+)")
_ARM64_VERSION = re.compile(r"v(\d+)(?:\.(\d+))?")

# `uname -m` -> (architecture, variant); what HostFacts.arch holds.
_MACHINES: Dict[str, Tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv8l": ("arm", "v8"),  # a 32-bit system on an ARMv8 CPU
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "armv5tejl": ("arm", "v5"),
    "armv5l": ("arm", "v5"),
    "ppc64le": ("ppc64le", ""),
    "ppc64": ("ppc64", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "loongarch64": ("loong64", ""),
}


class PlatformError(ValueError):
    """A platform that cannot be read (text, a `uname -m` value, an index entry)."""


@dataclass(frozen=True)
class Platform:
    """An image's or a host's platform as an index entry names it (as written: compare
    `normalized()` forms, or use `choose`)."""

    os: str
    architecture: str
    variant: str = ""

    def __post_init__(self) -> None:
        # Every Platform can be written as `os/arch[/variant]` and read back.
        for name, value in (("os", self.os), ("architecture", self.architecture)):
            if not isinstance(value, str) or not _COMPONENT.fullmatch(value):
                raise PlatformError(f"platform {name} {value!r} is not valid")
        if not isinstance(self.variant, str) or (
            self.variant and not _COMPONENT.fullmatch(self.variant)
        ):
            raise PlatformError(f"platform variant {self.variant!r} is not valid")

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Read `os/architecture[/variant]` (`linux/arm64/v8`), as written: both parts are
        required, because a fleet's platform should not depend on where the controller runs
        (containerd fills a missing part in from its own machine)."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(_COMPONENT.fullmatch(p) for p in parts):
            raise PlatformError(
                f"platform {text!r} is not valid: expected os/architecture[/variant] "
                "such as linux/amd64 or linux/arm64/v8"
            )
        return cls(*parts)

    @classmethod
    def from_machine(cls, machine: str) -> Platform:
        """The platform of a Linux host whose `uname -m` is `machine` (`aarch64` ->
        `linux/arm64/v8`), in normal form."""
        try:
            architecture, variant = _MACHINES[machine.strip().lower()]
        except KeyError:
            raise PlatformError(
                f"unknown machine {machine!r} (uname -m); known: {', '.join(sorted(_MACHINES))}"
            ) from None
        return cls("linux", architecture, variant)

    def normalized(self) -> Platform:
        """The normal form: containerd's normalization, with arm64's default variant
        spelled `v8` (see the module's docstring). Two platforms are the same platform when
        their normal forms are equal."""
        os_name = self.os.lower()
        os_name = "darwin" if os_name == "macos" else os_name
        architecture, variant = _normalize_arch(self.architecture.lower(), self.variant.lower())
        return Platform(os_name, architecture, variant)

    def __str__(self) -> str:
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        return "/".join(parts)


def _normalize_arch(architecture: str, variant: str) -> Tuple[str, str]:
    # containerd's normalizeArch, except that arm64 v8 is spelled out.
    if architecture == "i386":
        return "386", ""
    if architecture in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if architecture in ("aarch64", "arm64"):
        if variant in ("", "8", "v8", "v8.0"):
            return "arm64", "v8"
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if architecture == "armhf":
        return "arm", "v7"
    if architecture == "armel":
        return "arm", "v6"
    if architecture == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return architecture, variant


class PlatformMissing(PlatformError):
    """An index has no image an engine on `want` can run; `available` lists what it has
    (as written, attestations left out). The message is meant to follow the image's name."""

    def __init__(self, want: Platform, available: Sequence[Platform]):
        self.want = want
        self.available = tuple(available)
        listed = ", ".join(dict.fromkeys(str(p) for p in self.available))
        super().__init__(
            f"has no {want} image "
            + (f"(it has {listed})" if listed else "(it lists no platform at all)")
        )


def compatible(want: Platform) -> List[Platform]:
    """The platforms an engine on `want` runs, in normal form, best first (containerd's
    `platforms.Only`): an amd64 host also runs 386 images, an arm64 host arm/v8 to arm/v5."""
    want = want.normalized()
    vector = [want, *_fallbacks(want)]
    return list(dict.fromkeys(vector))  # `want` itself may come round again


def _fallbacks(want: Platform) -> List[Platform]:
    """The older platforms a `want` (in normal form) CPU also runs, best first."""
    os_name, variant = want.os, want.variant
    if want.architecture == "amd64":
        # amd64/vN: vN-1 ... v2, then plain amd64 (v1); any amd64: then 386.
        level = _level(variant or "v1")
        if level is None or level <= 1:
            return [Platform(os_name, "386")]
        older = [Platform(os_name, "amd64", f"v{n}") for n in range(level - 1, 1, -1)]
        return [*older, Platform(os_name, "amd64"), Platform(os_name, "386")]
    if want.architecture == "arm":
        level = _level(variant)
        if level is None or level <= 5:
            return []
        return [Platform(os_name, "arm", f"v{n}") for n in range(level - 1, 4, -1)]
    if want.architecture == "arm64":
        match = _ARM64_VERSION.fullmatch(variant)
        if not match or match.group(1) not in ("8", "9"):
            return []  # a variant containerd does not know: only itself
        major, minor = int(match.group(1)), int(match.group(2) or 0)
        # arm64 v9.x implements v8.(x+5) (containerd's table caps it at v8.9).
        steps = [(8, minor)] if major == 8 else [(9, minor), (8, min(minor + 5, 9))]
        arm64 = [
            Platform(os_name, "arm64", f"v{m}.{n}" if n else f"v{m}")
            for m, top in steps
            for n in range(top, -1, -1)
        ]
        # Any arm64 CPU up to v9 runs 32-bit arm code up to v8.
        return arm64 + compatible(Platform(os_name, "arm", "v8"))
    return []


def _level(variant: str) -> Optional[int]:
    """`v3` -> 3; anything else (`v8.1`, junk) -> None: such a variant matches only itself,
    as in containerd (which reads amd64 and arm levels as whole numbers)."""
    match = _LEVEL.fullmatch(variant)
    return int(match.group(1)) if match else None


def is_index(manifest: Mapping[str, Any]) -> bool:
    """Whether `manifest` is a multi-arch index rather than one platform's image. An OCI
    index may omit `mediaType`; it is then told by its `manifests` list (an image manifest
    has `layers` instead)."""
    media_type = manifest.get("mediaType")
    if media_type is not None:
        return media_type in INDEX_MEDIA_TYPES
    return isinstance(manifest.get("manifests"), list)


def platforms_of(index: Mapping[str, Any]) -> List[Platform]:
    """The platforms an index has images for, as written and in its order (attestation
    entries and entries without a platform left out)."""
    return [platform for platform, _ in _entries(index)]


def choose(index: Mapping[str, Any], want: Platform) -> str:
    """The digest of the entry an engine on `want` pulls (see the module's docstring for
    the order); raises PlatformMissing when it has none such."""
    entries = _entries(index)
    rank = {p: i for i, p in enumerate(compatible(want))}
    asked = want.variant.lower()
    best: Optional[Tuple[Tuple[int, bool, int], str]] = None
    for order, (platform, digest) in enumerate(entries):
        nearness = rank.get(platform.normalized())
        if nearness is None:
            continue
        key = (nearness, platform.variant.lower() != asked, order)
        if best is None or key < best[0]:
            best = (key, digest)
    if best is None:
        raise PlatformMissing(want, [platform for platform, _ in entries])
    return best[1]


def _entries(index: Mapping[str, Any]) -> List[Tuple[Platform, str]]:
    """(platform, digest) of each entry that is an image for a platform."""
    if not is_index(index):
        raise PlatformError(
            f"not an image index (mediaType {index.get('mediaType')!r}): a single-platform "
            "image has no platforms to choose from"
        )
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise PlatformError("image index has no `manifests` list")
    out = []
    for position, entry in enumerate(manifests):
        if not isinstance(entry, Mapping):
            raise PlatformError(f"image index entry {position} is not an object")
        platform = _entry_platform(entry, position)
        if platform is not None:
            digest = entry.get("digest")
            if not isinstance(digest, str) or not digest:
                raise PlatformError(f"image index entry {position} ({platform}) has no digest")
            out.append((platform, digest))
    return out


def _entry_platform(entry: Mapping[str, Any], position: int) -> Optional[Platform]:
    annotations = entry.get("annotations")
    if isinstance(annotations, Mapping) and (
        annotations.get(_ATTESTATION_ANNOTATION) == _ATTESTATION
    ):
        return None
    raw = entry.get("platform")
    if raw is None:
        return None  # an artifact, or an image whose platform only its config tells
    if not isinstance(raw, Mapping):
        raise PlatformError(f"image index entry {position}: `platform` is not an object")
    if raw.get("os") == "unknown" or raw.get("architecture") == "unknown":
        return None  # BuildKit's attestations, even without their annotation
    try:
        return Platform(raw.get("os", ""), raw.get("architecture", ""), raw.get("variant") or "")
    except PlatformError as exc:
        raise PlatformError(f"image index entry {position}: {exc}") from None
