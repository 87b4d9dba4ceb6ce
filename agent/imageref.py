"""Image references (`registry:5000/team/model:v3-cuda12@sha256:...`): the one parser of them
on both sides, following the grammar of distribution/reference (reference.go, the grammar
Docker itself parses with) and Docker's rule for telling a registry from a path:

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path        (at most 255 characters)
    domain     := host [ ":" port ]          host: DNS name or [IPv6]
    path       := component [ "/" component ]*
    component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex{32,}

The first part of a name is a registry only when it has a `.` or a `:`, is `localhost`, or
has an uppercase letter or `[` (splitDockerDomain, plus IPv6); otherwise the image is on Docker Hub. Pure,
standard library only (the agent runs it on hosts with Python 3.8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional, Tuple

DOCKER_HUB = "registry-1.docker.io"
"""Where Docker Hub's registry API answers (`docker.io` is only its name)."""
_HUB_NAMES = ("docker.io", "index.docker.io", DOCKER_HUB)
NAME_MAX = 255

_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])"
DOMAIN = re.compile(rf"{_HOST}(?::[0-9]+)?")
COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
PATH = re.compile(rf"{COMPONENT.pattern}(?:/{COMPONENT.pattern})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}")


class ImageRefError(ValueError):
    """Not an image reference; the message says which part is wrong (plain words)."""


def is_tag(text: str) -> bool:
    """Whether `text` is a Docker tag: letters, digits, `_ . -`, 1-128, not starting `.`/`-`."""
    return isinstance(text, str) and TAG.fullmatch(text) is not None


def split_host_port(registry: str, default_port: int = 443) -> Tuple[str, int]:
    """`10.77.0.1:5000` -> ("10.77.0.1", 5000); `[::1]:5000` -> ("::1", 5000);
    `registry.example` -> ("registry.example", default_port)."""
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    name, colon, port = registry.rpartition(":")
    if colon and name and port.isdigit():
        return name, int(port)
    return registry, default_port


def _looks_like_registry(first: str) -> bool:
    return (
        "." in first
        or ":" in first
        or first.startswith("[")
        or first == "localhost"
        or first.lower() != first
    )


@dataclass(frozen=True)
class ImageRef:
    """One image reference, each part as written. `registry` None: the reference names no
    registry (Docker Hub). `str()` gives the reference back exactly."""

    registry: Optional[str]
    repository: str  # the path: `team/model`
    tag: Optional[str] = None
    digest: Optional[str] = None  # `sha256:...`

    def __post_init__(self) -> None:
        if self.registry is not None and not DOMAIN.fullmatch(self.registry):
            raise ImageRefError(f"registry {self.registry!r} is not a host or host:port")
        if not PATH.fullmatch(self.repository or ""):
            raise ImageRefError(
                f"repository {self.repository!r}: lowercase letters and digits, separated by"
                " '.', '_', '__', '-' or '/'"
            )
        first, slash, _ = self.repository.partition("/")
        if self.registry is None and slash and _looks_like_registry(first):
            raise ImageRefError(
                f"repository {self.repository!r} starts like a registry; name the registry"
            )
        if len(self.name) > NAME_MAX:
            raise ImageRefError(f"{self.name[:40]}...: longer than {NAME_MAX} characters")
        if self.tag is not None and not is_tag(self.tag):
            raise ImageRefError(
                f"tag {self.tag!r}: 1-128 letters, digits, '_', '.', '-', not starting with"
                " '.' or '-'"
            )
        if self.digest is not None and not DIGEST.fullmatch(self.digest):
            raise ImageRefError(f"digest {self.digest!r} is not like sha256:<64 hex digits>")

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """The reference in `text`; ImageRefError says what is wrong."""
        if not isinstance(text, str) or not text:
            raise ImageRefError("an image reference must be a non-empty string")
        name, at, digest = text.partition("@")
        tag: Optional[str] = None
        colon = name.rfind(":")
        if colon > name.rfind("/"):
            name, tag = name[:colon], name[colon + 1 :]
        first, slash, rest = name.partition("/")
        if slash and _looks_like_registry(first):
            return cls(first, rest, tag, digest if at else None)
        return cls(None, name, tag, digest if at else None)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    @property
    def name(self) -> str:
        """Registry and repository as written, without tag or digest."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def on_docker_hub(self) -> bool:
        return self.registry is None or self.registry in _HUB_NAMES

    @property
    def registry_address(self) -> str:
        """Where the registry's HTTP API answers (`host[:port]`, Docker Hub's for none)."""
        return DOCKER_HUB if self.on_docker_hub else str(self.registry)

    @property
    def api_repository(self) -> str:
        """The repository as the registry API names it (`library/` before Hub's official
        images)."""
        if self.on_docker_hub and "/" not in self.repository:
            return f"library/{self.repository}"
        return self.repository

    @property
    def reference(self) -> str:
        """What `/v2/<repository>/manifests/<reference>` asks for: the digest, else the tag,
        else `latest`."""
        return self.digest or self.tag or "latest"

    def address(self) -> Tuple[str, int]:
        """The registry's (host, port) to connect to (443 when the reference names none)."""
        return split_host_port(self.registry_address)

    def with_registry(self, registry: str) -> ImageRef:
        """The same image on another registry (a mirror, the relay's tunnel end)."""
        return replace(self, registry=registry, repository=self.api_repository)

    def engine_name_and_tag(self) -> Tuple[str, str]:
        """(name, tag) as the Engine API's `fromImage`/`repo` and `tag` want them; `tag` is
        the digest when there is one, `latest` when neither is given."""
        return self.name, self.reference


def parse_image_ref(text: str) -> ImageRef:
    """Shorthand for `ImageRef.parse`."""
    return ImageRef.parse(text)
