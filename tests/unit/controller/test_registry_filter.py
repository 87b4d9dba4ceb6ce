"""registry_filter: which request heads a relay lets through to the registry (examples, and
hypothesis properties: nothing outside a pull of the scope passes; no bytes make it raise)."""

from __future__ import annotations

import json
from typing import List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlfleet.agent.variants import Variant
from mlfleet.controller.registry_filter import (
    MAX_HEAD,
    Decision,
    PullScope,
    Verdict,
    decide,
    next_request,
    refusal,
)

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
SCOPE = PullScope.of_images([("reg:5000/team/model:v3", None), ("python:3.11", None)])
PINNED = PullScope.of_images([("reg:5000/team/model:v3", DIGEST)])


def head(request_line: str, *fields: str) -> bytes:
    lines = [request_line, "Host: 127.0.0.1:40000", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def judge(request_line: str, *fields: str, scope: PullScope = SCOPE) -> Decision:
    return decide(head(request_line, *fields), scope)


# --- what a pull sends passes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, why",
    [
        ("GET /v2/ HTTP/1.1", "GET /v2/: the version check"),
        ("HEAD /v2/ HTTP/1.1", "HEAD /v2/: the version check"),
        ("HEAD /v2/team/model/manifests/v3 HTTP/1.1", "a manifest of team/model by tag"),
        ("GET /v2/team/model/manifests/v3 HTTP/1.1", "a manifest of team/model by tag"),
        (f"GET /v2/team/model/manifests/{DIGEST} HTTP/1.1", "by digest"),
        # an index's platform manifest: a digest the controller did not know
        (f"GET /v2/team/model/manifests/{OTHER_DIGEST} HTTP/1.1", "by digest"),
        (f"GET /v2/team/model/blobs/{OTHER_DIGEST} HTTP/1.1", "a blob of team/model"),
        (f"HEAD /v2/team/model/blobs/{DIGEST} HTTP/1.1", "a blob of team/model"),
        # Docker Hub's official image, named as the registry API names it
        ("GET /v2/library/python/manifests/3.11 HTTP/1.1", "a manifest of library/python"),
        (f"GET /v2/team/model/blobs/{DIGEST}?ns=docker.io HTTP/1.1", "a blob of team/model"),
    ],
)
def test_the_requests_of_a_pull_pass(line: str, why: str):
    decision = judge(line, "Accept: application/vnd.oci.image.index.v1+json", "Range: bytes=0-")
    assert decision.allowed, decision.reason
    assert why in decision.reason


def test_what_the_engine_and_the_agent_send_passes():
    engine = (
        "GET /v2/team/model/manifests/v3 HTTP/1.1",
        "User-Agent: docker/27.3.1 go/go1.22.7 git-commit/41ca978 kernel/6.1.0 os/linux arch/amd64",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        "Accept: application/vnd.oci.image.index.v1+json",
        "Authorization: Basic dXNlcjpwYXNz",
        "Accept-Encoding: gzip",
        "Content-Length: 0",
    )
    assert judge(*engine).allowed
    agent = (f"GET /v2/team/model/manifests/{DIGEST} HTTP/1.1", "Accept-Encoding: identity",
             "User-Agent: Python-urllib/3.8", "Accept: */*", "Connection: close")  # fmt: skip
    assert judge(*agent).allowed


def test_a_pinned_image_is_pulled_by_digest_only():
    assert judge(f"GET /v2/team/model/manifests/{DIGEST} HTTP/1.1", scope=PINNED).allowed
    refused = judge("GET /v2/team/model/manifests/v3 HTTP/1.1", scope=PINNED)
    assert refused.verdict is Verdict.DENIED
    assert refused.reason == (
        "GET /v2/team/model/manifests/v3: tag v3 of team/model is not one this deployment pulls"
    )


def test_the_scope_of_a_desired_states_variants():
    variants = [
        Variant("cpu", image="reg:5000/team/model:v3-cpu"),
        Variant("cuda", image="reg:5000/team/model-cuda:v3", digest=DIGEST),
        Variant("hub", image="python"),
        Variant("bare"),  # no image: nothing to serve
    ]
    scope = PullScope.of_variants(variants)
    assert scope.tags == {
        "team/model": frozenset({"v3-cpu"}),
        "team/model-cuda": frozenset(),
        "library/python": frozenset({"latest"}),
    }
    assert scope.repositories() == ["library/python", "team/model", "team/model-cuda"]


def test_without_a_scope_any_repository_is_pulled_and_only_pulled():
    anything = PullScope()
    assert judge("GET /v2/someone/else/manifests/latest HTTP/1.1", scope=anything).allowed
    assert anything.repositories() is None
    for line in ("PUT /v2/someone/else/manifests/latest HTTP/1.1",
                 "POST /v2/someone/else/blobs/uploads/ HTTP/1.1",
                 "GET /v2/_catalog HTTP/1.1"):  # fmt: skip
        assert judge(line, scope=anything).verdict is Verdict.DENIED, line


# --- everything else is refused, with the reason the client reads ----------------------------


@pytest.mark.parametrize(
    "request_line, fields, reason",
    [
        ("PUT /v2/team/model/manifests/v3 HTTP/1.1", (),
         "PUT /v2/team/model/manifests/v3: only GET and HEAD pass (pulls)"),
        (f"DELETE /v2/team/model/manifests/{DIGEST} HTTP/1.1", (),
         f"DELETE /v2/team/model/manifests/{DIGEST}: only GET and HEAD pass (pulls)"),
        ("POST /v2/team/model/blobs/uploads/ HTTP/1.1", (),
         "POST /v2/team/model/blobs/uploads/: only GET and HEAD pass (pulls)"),
        ("PATCH /v2/team/model/blobs/uploads/1 HTTP/1.1", (),
         "PATCH /v2/team/model/blobs/uploads/1: only GET and HEAD pass (pulls)"),
        ("get /v2/ HTTP/1.1", (), "get /v2/: only GET and HEAD pass (pulls)"),
        ("CONNECT 10.0.0.1:443 HTTP/1.1", (), "CONNECT 10.0.0.1:443: only GET and HEAD pass (pulls)"),
        ("GET /v2/other/model/manifests/v3 HTTP/1.1", (),
         "GET /v2/other/model/manifests/v3: repository other/model is not one this deployment pulls"),
        (f"GET /v2/other/blobs/{DIGEST} HTTP/1.1", (),
         f"GET /v2/other/blobs/{DIGEST}: repository other is not one this deployment pulls"),
        ("GET /v2/team/model/manifests/v4 HTTP/1.1", (),
         "GET /v2/team/model/manifests/v4: tag v4 of team/model is not one this deployment pulls"),
        ("GET /v2/_catalog HTTP/1.1", (),
         "GET /v2/_catalog: not a pull (only /v2/, /v2/<repository>/manifests/<reference> and"
         " /v2/<repository>/blobs/<digest>)"),
        ("GET /v2/team/model/tags/list HTTP/1.1", (), "GET /v2/team/model/tags/list: not a pull"),
        ("GET /v2/team/model/blobs/uploads/1 HTTP/1.1", (), "not a pull"),
        ("GET /v2/team/model/blobs/v3 HTTP/1.1", (), "not a pull"),  # blobs by digest only
        ("GET /v2/team/model/../../other/manifests/v3 HTTP/1.1", (), "not a pull"),
        ("GET /v2/other/../team/model/manifests/v3 HTTP/1.1", (), "not a pull"),
        ("GET /v2/team//model/manifests/v3 HTTP/1.1", (), "not a pull"),
        ("GET /v2/./team/model/manifests/v3 HTTP/1.1", (), "not a pull"),
        ("GET /v2 HTTP/1.1", (), "not a pull"),
        ("GET / HTTP/1.1", (), "not a pull"),
        ("GET /v2/Team/Model/manifests/v3 HTTP/1.1", (), "not a pull"),
        ("GET /v2/team/model/manifests/sha256:abc HTTP/1.1", (), "not a pull"),
        ("GET /v2/team/model/manifests/v3/ HTTP/1.1", (), "not a pull"),
        ("GET /v2/team%2fmodel/manifests/v3 HTTP/1.1", (),
         "GET /v2/team%2fmodel/manifests/v3: a percent-encoded request target"),
        ("GET /v2/team/model/manifests/v3?x=%2e%2e HTTP/1.1", (), "a percent-encoded request target"),
        ("GET /v2/other/%2e%2e/team/model/manifests/v3 HTTP/1.1", (), "a percent-encoded"),
        ("GET /v2/team/model/manifests/v3?n=1;x HTTP/1.1", (), "a query a pull does not send"),
        ("GET http://127.0.0.1:5000/v2/ HTTP/1.1", (),
         "GET http://127.0.0.1:5000/v2/: only a path (origin-form) request target passes"),
        ("GET * HTTP/1.1", (), "only a path (origin-form)"),
        ("GET /v2/team/model/manifests/v3 HTTP/1.1", ("Content-Length: 10",),
         "GET /v2/team/model/manifests/v3: a request with a body (Content-Length over 0): a pull"
         " sends none"),
        ("GET /v2/ HTTP/1.1", ("Content-Length: 1",), "a request with a body (Content-Length over 0)"),
        ("GET /v2/ HTTP/1.1", ("Transfer-Encoding: chunked",),
         "GET /v2/: a request with a body (Transfer-Encoding): a pull sends none"),
        ("GET /v2/ HTTP/1.1", ("transfer-encoding: identity",), "a request with a body"),
        ("GET /v2/ HTTP/1.1", ("Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings"),
         "GET /v2/: a protocol upgrade (the relay speaks HTTP/1.1 only)"),
        ("GET /v2/ HTTP/1.1", ("Connection: keep-alive, upgrade",), "a protocol upgrade"),
        ("GET /v2/ HTTP/1.1", ("HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",), "a protocol upgrade"),
    ],
)  # fmt: skip
def test_anything_else_is_denied(request_line: str, fields: Tuple[str, ...], reason: str):
    decision = judge(request_line, *fields)
    assert decision.verdict is Verdict.DENIED
    assert reason in decision.reason


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"GET /v2/ HTTP/1.0\r\n\r\n", "HTTP/1.0: the relay speaks HTTP/1.1 only"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2.0: the relay speaks HTTP/1.1 only"),
        (b"GET /v2/  HTTP/1.1\r\n\r\n", "malformed request line"),
        (b"GET /v2/team model/manifests/v3 HTTP/1.1\r\n\r\n", "malformed request line"),
        (b"\r\nGET /v2/ HTTP/1.1\r\n\r\n", "malformed request line"),
        (b"GET /v2/\xff HTTP/1.1\r\n\r\n", "malformed request line"),
        # a bare LF hides a second request from a filter that splits on CRLF only
        (b"GET /v2/ HTTP/1.1\nHost: x\n\nPUT /v2/team/model/manifests/v3 HTTP/1.1\r\n\r\n",
         "a bare CR or LF in the request head"),
        (b"GET /v2/ HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", "a bare CR or LF"),
        (b"GET /v2/ HTTP/1.1\r\nContent-Length : 5\r\n\r\n", "malformed header field"),
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\n Transfer-Encoding: chunked\r\n\r\n",
         "malformed header field"),  # obs-fold
        (b"GET /v2/ HTTP/1.1\r\nNoColon\r\n\r\n", "malformed header field"),
        (b"GET /v2/ HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", "a control character in header field X-A"),
        (b"GET /v2/ HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
         "more than one Content-Length header field"),
        (b"GET /v2/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "a Content-Length that is not a number"),
        (b"GET /v2/ HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", "not a number"),
        (b"GET /v2/ HTTP/1.1\r\n", "incomplete or oversized request head"),
    ],
)  # fmt: skip
def test_a_malformed_head_is_refused_as_such(raw: bytes, reason: str):
    decision = decide(raw, SCOPE)
    assert decision.verdict is Verdict.MALFORMED
    assert reason in decision.reason


def test_a_long_target_is_cut_in_the_reason():
    decision = judge(f"GET /v2/{'a/' * 2000}manifests/v3 HTTP/1.1")
    assert decision.verdict is Verdict.DENIED
    assert decision.reason.startswith("GET /v2/a/a/") and "...: not a pull" in decision.reason
    assert len(decision.reason) < 300


# --- framing: one head at a time, keep-alive and pipelining ----------------------------------


def test_a_head_is_judged_once_it_is_whole():
    first = head("GET /v2/ HTTP/1.1")
    second = head(f"GET /v2/team/model/blobs/{DIGEST} HTTP/1.1")
    assert next_request(first[:-1], SCOPE) is None
    found = next_request(first + second[:10], SCOPE)
    assert found is not None
    decision, got, rest = found
    assert decision.allowed and got == first and rest == second[:10]
    again = next_request(first + second, SCOPE)
    assert again is not None
    nxt = next_request(again[2], SCOPE)
    assert nxt is not None and nxt[0].allowed and nxt[1] == second and nxt[2] == b""


def test_a_head_that_trickles_in_is_found_across_the_searched_part():
    whole = head("GET /v2/ HTTP/1.1")
    for cut in range(len(whole)):  # the CRLFCRLF split anywhere between two reads
        assert next_request(whole[:cut], SCOPE) is None
        found = next_request(whole, SCOPE, searched=cut)
        assert found is not None and found[1] == whole, cut


def test_a_head_over_64_kib_is_refused():
    big = b"GET /v2/ HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD
    found = next_request(big, SCOPE)
    assert found is not None
    assert found[0].verdict is Verdict.MALFORMED
    assert found[0].reason == "request header section over 64 KiB"
    assert next_request(big[: MAX_HEAD - 10], SCOPE) is None  # still reading
    whole_but_long = next_request(big + b"\r\n\r\n", SCOPE)
    assert whole_but_long is not None and whole_but_long[0].verdict is Verdict.MALFORMED


# --- the relay's own answer ---------------------------------------------------------------------


def _parse(response: bytes) -> Tuple[str, dict, bytes]:
    top, _, body = response.partition(b"\r\n\r\n")
    status, *lines = top.decode("ascii").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return status, fields, body


def test_a_refusal_is_a_403_in_the_registrys_error_format():
    decision = judge("PUT /v2/team/model/manifests/v3 HTTP/1.1")
    status, fields, body = _parse(refusal(decision))
    assert status == "HTTP/1.1 403 Forbidden"
    assert fields["Connection"] == "close"
    assert fields["Content-Type"].startswith("application/json")
    assert int(fields["Content-Length"]) == len(body)
    assert json.loads(body) == {
        "errors": [
            {
                "code": "DENIED",
                "message": "mlfleet relay: PUT /v2/team/model/manifests/v3: only GET and HEAD"
                " pass (pulls)",
            }
        ]
    }


def test_a_malformed_request_gets_a_400_and_a_head_no_body():
    status, _, body = _parse(refusal(decide(b"GET /v2/ HTTP/1.0\r\n\r\n", SCOPE)))
    assert status == "HTTP/1.1 400 Bad Request" and json.loads(body)["errors"][0]["code"]
    status, fields, body = _parse(refusal(judge("HEAD /v2/other/manifests/v3 HTTP/1.1")))
    assert status == "HTTP/1.1 403 Forbidden" and body == b"" and int(fields["Content-Length"]) > 0


# --- properties ---------------------------------------------------------------------------------

_ALLOWED_TAGS = {"team/model": {"v3"}, "library/python": {"3.11"}}


def _is_pull_in_scope(method: str, target: str, fields: List[Tuple[str, str]]) -> bool:
    """An independent statement of what may pass (segments, not regular expressions)."""
    if method not in ("GET", "HEAD") or "%" in target:
        return False
    if any(n.lower() in ("transfer-encoding", "upgrade", "http2-settings") for n, _ in fields):
        return False
    if any(n.lower() == "connection" and "upgrade" in v.lower() for n, v in fields):
        return False
    if any(n.lower() == "content-length" and v.strip("0 ") for n, v in fields):
        return False
    path = target.split("?", 1)[0]
    if path == "/v2/":
        return True
    if not path.startswith("/v2/"):
        return False
    segments = path[len("/v2/") :].split("/")
    if len(segments) < 3 or any(s in ("", ".", "..") for s in segments):
        return False
    repo, kind, ref = "/".join(segments[:-2]), segments[-2], segments[-1]
    if repo not in _ALLOWED_TAGS:
        return False
    is_digest = ref.startswith("sha256:") and len(ref) == 71
    if kind == "blobs":
        return is_digest
    return kind == "manifests" and (is_digest or ref in _ALLOWED_TAGS[repo])


_pieces = st.sampled_from(
    ["team", "model", "other", "library", "python", "manifests", "blobs", "uploads", "tags",
     "list", "_catalog", "v3", "v4", "3.11", "latest", DIGEST, "sha256:ab", "..", ".", "",
     "%2e%2e", "%2F", "Team", "v2", "team/model", "a b", "\u00e9", "?", "?ns=docker.io",
     "?n=1", "#", ";", "\\", "http:", "127.0.0.1:5000"]
)  # fmt: skip
_pull_like = st.builds(
    "/v2/{}/{}/{}{}".format,
    st.sampled_from(["team/model", "library/python", "team", "other/model", "team/model/x"]),
    st.sampled_from(["manifests", "blobs", "tags"]),
    st.sampled_from(["v3", "3.11", "v4", "latest", DIGEST, OTHER_DIGEST, "sha256:ab"]),
    st.sampled_from(["", "", "", "?ns=docker.io", "/", "/..", "%00", "#x"]),
)
_targets = st.one_of(
    _pull_like,
    st.tuples(_pull_like, st.integers(0, 80), _pieces).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    ),
    st.lists(_pieces, min_size=0, max_size=7).map(lambda parts: "/v2/" + "/".join(parts)),
    st.lists(_pieces, min_size=1, max_size=7).map("/".join),
    st.text(max_size=30).map(lambda text: "/v2/team/model/" + text),
)
_harmless = st.tuples(st.sampled_from(["Host", "Accept", "Range"]), st.sampled_from(["*/*", "x"]))
_names = ["Host", "Content-Length", "Transfer-Encoding", "Upgrade", "Connection", "HTTP2-Settings"]
_values = ["0", "00", "1", "12", "chunked", "h2c", "upgrade", "keep-alive", "", " "]
_fields = st.lists(
    _harmless | _harmless | st.tuples(st.sampled_from(_names), st.sampled_from(_values)),
    max_size=4,
)
_methods = st.one_of(
    st.sampled_from(["GET", "HEAD"]),
    st.sampled_from(["PUT", "POST", "PATCH", "DELETE", "OPTIONS", "get"]),
)


@settings(max_examples=300, deadline=None)
@given(_methods, _targets, _fields)
def test_nothing_outside_a_pull_of_the_scope_passes(
    method: str, target: str, fields: List[Tuple[str, str]]
):
    scope = PullScope({repo: frozenset(tags) for repo, tags in _ALLOWED_TAGS.items()})
    lines = [f"{method} {target} HTTP/1.1"] + [f"{n}: {v}" for n, v in fields]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    decision = decide(raw, scope)
    if decision.allowed:
        assert _is_pull_in_scope(method, target, fields), decision.reason
    lengths = [v for n, v in fields if n == "Content-Length"]
    plain = target.isascii() and target.isprintable() and " " not in target and "?" not in target
    framed = len(lengths) <= 1 and all(v.strip().isdigit() for v in lengths)
    if _is_pull_in_scope(method, target, fields) and plain and framed:
        assert decision.allowed, decision.reason  # and what should pass does


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["GET", "HEAD"]),
    st.sampled_from(["team/model", "library/python"]),
    st.sampled_from(["manifests", "blobs"]),
    st.sampled_from([DIGEST, OTHER_DIGEST, "sha512:" + "0f" * 64]),
    st.lists(_harmless, max_size=3),
)
def test_every_pull_of_the_scope_by_digest_passes(
    method: str, repo: str, kind: str, digest: str, fields: List[Tuple[str, str]]
):
    lines = [f"{method} /v2/{repo}/{kind}/{digest} HTTP/1.1"] + [f"{n}: {v}" for n, v in fields]
    decision = decide(
        ("\r\n".join(lines) + "\r\n\r\n").encode("ascii"),
        PullScope({r: frozenset(t) for r, t in _ALLOWED_TAGS.items()}),
    )
    assert decision.allowed, decision.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=400))
def test_no_bytes_make_the_filter_raise(data: bytes, searched: int):
    for raw in (data, b"GET /v2/ HTTP/1.1\r\n" + data, data + b"\r\n\r\n"):
        found: Optional[Tuple[Decision, bytes, bytes]] = next_request(raw, SCOPE, searched)
        assert found is None or isinstance(found[0], Decision)
        decision = decide(raw, SCOPE)
        assert isinstance(refusal(decision), bytes)
        if decision.allowed:  # only the exact grammar passes: a GET/HEAD of a path
            assert raw.startswith((b"GET /v2/", b"HEAD /v2/"))
