"""What a relay lets through to the registry: the requests of a pull of the deployment's
images, and nothing else (pure, no I/O).

A relay's tunnel end is a port on the host's loopback; any local user there can connect to
it, so the relay reads each HTTP/1.1 request head the host sends and passes only

    GET|HEAD /v2/                                   the version check
    GET|HEAD /v2/<repository>/manifests/<reference> an image's manifest (or index)
    GET|HEAD /v2/<repository>/blobs/<digest>        a layer or an image config

for a repository of the deployment (the routes of the Distribution API a pull uses,
distribution/docs/spec/api.md). By tag, only the tags the deployment pulls; by digest, any
(an index names its platform manifests by digests the controller does not know before the
engine picks one; a blob is addressed by its content). Everything else is refused: other
methods (push, delete), other routes (`/v2/_catalog`, tag lists, uploads), other
repositories, a request with a body, a protocol upgrade, another HTTP version, a request
target that is not a plain path (absolute-form, percent-encoding, `..`, a query other than
plain `name=value` pairs).

The head is parsed strictly (RFC 9112: CRLF line ends, a token before each colon with no
space, no control characters), and a head that is not strictly well formed is refused as
malformed: the relay forwards an accepted head as it came, so the registry must read it
exactly as the relay did. Requests carry no body here, so the bytes after one head are the
next request (keep-alive, pipelining), read by this filter in turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple, Union

from mlfleet.agent.imageref import NAME_MAX, PATH, TAG, ImageRef
from mlfleet.agent.variants import Variant

MAX_HEAD = 64 * 1024
"""The longest request head (request line and header fields) the relay reads."""

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
_FIELD_NAME = re.compile(_TOKEN)
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_DIGEST = r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}"
_MANIFEST = re.compile(rf"/v2/(?P<repo>{PATH.pattern})/manifests/(?P<ref>{TAG.pattern}|{_DIGEST})")
_BLOB = re.compile(rf"/v2/(?P<repo>{PATH.pattern})/blobs/(?:{_DIGEST})")
# containerd's resolver may add `?ns=docker.io` to a mirror's URLs; nothing else a pull sends.
_QUERY = re.compile(r"[A-Za-z0-9._-]+=[A-Za-z0-9._-]*(?:&[A-Za-z0-9._-]+=[A-Za-z0-9._-]*)*")
_SHOWN = 120  # characters of a request target quoted in a reason


@dataclass(frozen=True)
class PullScope:
    """The images a relay serves. `tags`: each repository, as the registry API names it
    (`library/python` for Docker Hub's `python`), and the tags it may be fetched by; its
    manifests by digest and its blobs are always allowed. None: any repository and any tag
    (a relay given no scope still serves nothing but pulls)."""

    tags: Optional[Mapping[str, FrozenSet[str]]] = None

    @classmethod
    def of_images(cls, images: Iterable[Tuple[str, Optional[str]]]) -> PullScope:
        """The scope of these (image reference, pinned digest or None) pairs: an image
        pulled by digest (pinned, or named with `@sha256:`) allows no tag, since the host
        asks for the digest; one pulled by tag allows that tag (`latest` when it names
        none). ImageRefError for a reference that is not one."""
        tags: Dict[str, set] = {}
        for image, digest in images:
            ref = ImageRef.parse(image)
            allowed = tags.setdefault(ref.api_repository, set())
            if digest is None and ref.digest is None:
                allowed.add(ref.reference)
        return cls({repo: frozenset(names) for repo, names in tags.items()})

    @classmethod
    def of_variants(cls, variants: Iterable[Variant]) -> PullScope:
        """The scope of a desired state's variants (`desired.parsed_variants()`): each one's
        image, by its pinned digest when it has one."""
        return cls.of_images((v.image, v.digest) for v in variants if v.image is not None)

    def repositories(self) -> Optional[List[str]]:
        """The repositories served, sorted; None for any."""
        return None if self.tags is None else sorted(self.tags)


class Verdict(Enum):
    """What the relay does with a request: pass it to the registry, or answer it itself."""

    PASS = 0
    DENIED = 403  # well formed, but not a pull of the deployment's images
    MALFORMED = 400  # not a request the relay reads one way only

    @property
    def status(self) -> int:
        return self.value


@dataclass(frozen=True)
class Decision:
    """One request's verdict and why, in plain words (`GET /v2/: the version check`).
    `head_request`: it was a HEAD, so a refusal is sent without a body."""

    verdict: Verdict
    reason: str
    head_request: bool = False

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.PASS


def _denied(reason: str, head_request: bool = False) -> Decision:
    return Decision(Verdict.DENIED, reason, head_request)


def _malformed(reason: str) -> Decision:
    return Decision(Verdict.MALFORMED, reason)


def _shown(text: str) -> str:
    """A request target for a reason: printable ASCII already, cut short."""
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def next_request(
    buffer: Union[bytes, bytearray], scope: PullScope, searched: int = 0
) -> Optional[Tuple[Decision, bytes, bytes]]:
    """The first request in `buffer` (the bytes read from one tunnelled connection, not yet
    judged): None while its head is incomplete, else (decision, head, the bytes after it).
    A head longer than MAX_HEAD is refused as malformed. `searched`: how many bytes of
    `buffer` an earlier call already found no head end in (a head that trickles in is not
    scanned from its start again)."""
    start = max(0, searched - 3)
    end = buffer.find(b"\r\n\r\n", start, MAX_HEAD + 4)
    if end < 0:
        if len(buffer) >= MAX_HEAD + 4:
            return _malformed(f"request header section over {MAX_HEAD // 1024} KiB"), b"", b""
        return None
    head, rest = bytes(buffer[: end + 4]), bytes(buffer[end + 4 :])
    return decide(head, scope), head, rest


def decide(head: bytes, scope: PullScope) -> Decision:
    """Whether the request whose head (request line, header fields, the empty line) is
    `head` may go to the registry: a pull in `scope`, strictly well formed. Never raises."""
    if len(head) > MAX_HEAD + 4 or not head.endswith(b"\r\n\r\n"):
        return _malformed("incomplete or oversized request head")
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        return _malformed("a bare CR or LF in the request head (lines end with CRLF)")
    request_line = _REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        return _malformed("malformed request line (METHOD SP /path SP HTTP/1.1)")
    method, target, version = (part.decode("ascii") for part in request_line.groups())
    if version != "HTTP/1.1":
        return _malformed(f"{version}: the relay speaks HTTP/1.1 only")
    fields: List[Tuple[str, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _FIELD_NAME.fullmatch(name) is None:
            return _malformed("malformed header field (a token, then a colon, no space before it)")
        value = value.strip(b" \t")
        if _FIELD_VALUE.fullmatch(value) is None:
            return _malformed(f"a control character in header field {name.decode('ascii')}")
        fields.append((name.decode("ascii").lower(), value))
    framing = _malformed_framing(fields)
    if framing is not None:
        return framing
    head_request = method == "HEAD"
    request = f"{method} {_shown(target)}"
    if method not in ("GET", "HEAD"):
        return _denied(f"{request}: only GET and HEAD pass (pulls)", head_request)
    extra = _body_or_upgrade(fields)
    if extra is not None:
        return _denied(f"{request}: {extra}", head_request)
    return _route(request, target, scope, head_request)


def _malformed_framing(fields: List[Tuple[str, bytes]]) -> Optional[Decision]:
    """A body length the relay and the registry could read two ways."""
    lengths = [value for name, value in fields if name == "content-length"]
    if len(lengths) > 1:
        return _malformed("more than one Content-Length header field")
    if lengths and not lengths[0].isdigit():
        return _malformed("a Content-Length that is not a number")
    return None


def _body_or_upgrade(fields: List[Tuple[str, bytes]]) -> Optional[str]:
    """What a pull never sends: a body, a protocol upgrade."""
    for name, value in fields:
        tokens = [t.strip().lower() for t in value.split(b",")]
        if name == "transfer-encoding":
            return "a request with a body (Transfer-Encoding): a pull sends none"
        if name == "content-length" and value.strip(b"0"):
            return "a request with a body (Content-Length over 0): a pull sends none"
        if name in ("upgrade", "http2-settings") or (name == "connection" and b"upgrade" in tokens):
            return "a protocol upgrade (the relay speaks HTTP/1.1 only)"
    return None


def _route(request: str, target: str, scope: PullScope, head_request: bool) -> Decision:
    if not target.startswith("/"):
        return _denied(f"{request}: only a path (origin-form) request target passes", head_request)
    path, question, query = target.partition("?")
    if "%" in target:
        return _denied(f"{request}: a percent-encoded request target", head_request)
    if question and _QUERY.fullmatch(query) is None:
        return _denied(f"{request}: a query a pull does not send", head_request)
    if path == "/v2/":
        return Decision(Verdict.PASS, f"{request}: the version check", head_request)
    # No pull's path is longer (the bound also keeps the matching below short).
    fits = len(path) <= len("/v2//manifests/") + NAME_MAX + len("sha512:") + 128
    manifest = _MANIFEST.fullmatch(path) if fits else None
    blob = _BLOB.fullmatch(path) if fits and manifest is None else None
    found = manifest or blob
    if found is None or len(found.group("repo")) > NAME_MAX:
        return _denied(
            f"{request}: not a pull (only /v2/, /v2/<repository>/manifests/<reference> and"
            " /v2/<repository>/blobs/<digest>)",
            head_request,
        )
    repo = found.group("repo")
    if scope.tags is not None and repo not in scope.tags:
        return _denied(
            f"{request}: repository {repo} is not one this deployment pulls", head_request
        )
    if manifest is None:
        return Decision(Verdict.PASS, f"{request}: a blob of {repo}", head_request)
    reference = manifest.group("ref")
    if ":" in reference:
        return Decision(Verdict.PASS, f"{request}: a manifest of {repo} by digest", head_request)
    if scope.tags is not None and reference not in scope.tags[repo]:
        return _denied(
            f"{request}: tag {reference} of {repo} is not one this deployment pulls", head_request
        )
    return Decision(Verdict.PASS, f"{request}: a manifest of {repo} by tag", head_request)


def refusal(decision: Decision) -> bytes:
    """The relay's own answer to a refused request: 403 (or 400 for a malformed one) with a
    body in the registry's error format, and `Connection: close` (the relay then closes the
    connection). A HEAD's answer has no body."""
    status = decision.verdict.status
    phrase = "Forbidden" if status == 403 else "Bad Request"
    message = f"mlfleet relay: {decision.reason}"
    body = json.dumps({"errors": [{"code": "DENIED", "message": message}]}).encode("ascii")
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head if decision.head_request else head + body
