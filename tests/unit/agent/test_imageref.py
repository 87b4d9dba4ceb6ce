"""Image references: the distribution/reference grammar, Docker's registry rule, exact
round trips (examples and hypothesis properties)."""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mlfleet.agent.imageref import (
    ImageRef,
    ImageRefError,
    is_tag,
    parse_image_ref,
    split_host_port,
)
from mlfleet.agent.registry_probe import split_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("10.77.0.1:5000/team/model:v3", "10.77.0.1:5000", "team/model", "v3", None),
        ("registry.example/m", "registry.example", "m", None, None),
        ("localhost/m:1", "localhost", "m", "1", None),
        ("[::1]:5000/team/m:v1-cpu", "[::1]:5000", "team/m", "v1-cpu", None),
        ("ubuntu", None, "ubuntu", None, None),
        ("ubuntu:24.04", None, "ubuntu", "24.04", None),
        ("team/model:v2", None, "team/model", "v2", None),
        (f"docker.io/library/m@{DIGEST}", "docker.io", "library/m", None, DIGEST),
        (f"r:5000/m:v1@{DIGEST}", "r:5000", "m", "v1", DIGEST),
        ("MyRegistry/m", "MyRegistry", "m", None, None),
        ("a__b/c-d.e---f_g:T_1.x", None, "a__b/c-d.e---f_g", "T_1.x", None),
    ],
)
def test_parse(
    text: str, registry: Optional[str], repository: str, tag: Optional[str], digest: Optional[str]
):
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry, repository, tag, digest,
    )  # fmt: skip
    assert str(ref) == text and parse_image_ref(text) == ref


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "non-empty"),
        ("Reg/UPPER", "repository 'UPPER'"),
        ("team/Model", "repository 'team/Model'"),
        ("reg:5000 /x", "registry"),
        ("r/m:", "tag ''"),
        ("r/m:.v1", "tag '.v1'"),
        ("r/m:" + "v" * 129, "tag"),
        ("r/m@sha256:abc", "digest"),
        ("r/m@", "digest"),
        ("r//m", "repository"),
        ("r/m-", "repository"),
        ("r/-m", "repository"),
        ("reg;rm/m", "repository"),
        ("reg;rm.io/m", "registry"),
        ("r.io/" + "a" * 260, "longer than 255"),
    ],
)
def test_refused(text: str, words: str):
    with pytest.raises(ImageRefError, match=words.replace("(", r"\(")):
        ImageRef.parse(text)


def test_registry_api_views():
    ref = ImageRef.parse("10.77.0.1:5000/team/model:v3")
    assert ref.registry_address == "10.77.0.1:5000" and ref.api_repository == "team/model"
    assert ref.address() == ("10.77.0.1", 5000) and ref.reference == "v3"
    assert ref.engine_name_and_tag() == ("10.77.0.1:5000/team/model", "v3")
    hub = ImageRef.parse("ubuntu")
    assert hub.on_docker_hub and hub.registry_address == "registry-1.docker.io"
    assert hub.api_repository == "library/ubuntu" and hub.reference == "latest"
    assert hub.address() == ("registry-1.docker.io", 443)
    assert ImageRef.parse("r.example/m").address() == ("r.example", 443)
    assert ImageRef.parse("[::1]:5000/m").address() == ("::1", 5000)
    pinned = ImageRef.parse(f"r:5000/m:v1@{DIGEST}")
    assert pinned.reference == DIGEST and pinned.engine_name_and_tag() == ("r:5000/m", DIGEST)


def test_with_registry_keeps_the_image():
    ref = ImageRef.parse("10.77.0.1:5000/team/model:v3")
    assert str(ref.with_registry("127.0.0.1:41234")) == "127.0.0.1:41234/team/model:v3"
    assert (
        str(ImageRef.parse("ubuntu:24.04").with_registry("m:5000")) == "m:5000/library/ubuntu:24.04"
    )
    with pytest.raises(ImageRefError, match="registry"):
        ref.with_registry("not a host")


def test_a_registryless_repository_that_looks_like_a_registry_is_refused():
    with pytest.raises(ImageRefError, match="starts like a registry"):
        ImageRef(None, "a.b/c")


def test_split_host_port_and_is_tag():
    assert split_host_port("h:5000") == ("h", 5000)
    assert split_host_port("h") == ("h", 443)
    assert split_host_port("[fe80::1]") == ("fe80::1", 443)
    assert is_tag("v1.2_x-3") and not is_tag("-v1") and not is_tag("v 1") and not is_tag("")


def test_split_reference_is_the_probes_view_of_it():
    assert split_reference("10.77.0.1:5000/team/model:v3") == (
        "10.77.0.1:5000", "team/model", "v3",
    )  # fmt: skip
    assert split_reference("ubuntu") == ("registry-1.docker.io", "library/ubuntu", "latest")
    assert split_reference("team/m:v1") == ("registry-1.docker.io", "team/m", "v1")
    assert split_reference(f"r:5000/m@{DIGEST}") == ("r:5000", "m", DIGEST)
    assert split_reference("localhost/m:1") == ("localhost", "m", "1")
    with pytest.raises(ValueError):
        split_reference("Not/A/Ref")


# --- properties ------------------------------------------------------------------------------

component = st.from_regex(r"[a-z0-9]{1,4}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,3}){0,2}", fullmatch=True)
repository = st.lists(component, min_size=1, max_size=3).map("/".join)
domain = st.one_of(
    st.from_regex(r"[a-z0-9]{1,5}(?:\.[A-Za-z0-9][A-Za-z0-9-]{0,4}[A-Za-z0-9])+", fullmatch=True),
    st.just("localhost"),
    st.from_regex(r"\[[0-9a-f:]{2,8}\]", fullmatch=True),
    st.from_regex(r"[a-z]{1,6}", fullmatch=True),  # a bare host: only with a port
)
port = st.one_of(st.none(), st.integers(1, 65535))
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
digest = st.from_regex(r"sha(?:256|512)(?:\+b64)?:[0-9a-f]{32,70}", fullmatch=True)


@st.composite
def refs(draw: st.DrawFn) -> ImageRef:
    registry: Optional[str] = None
    if draw(st.booleans()):
        host, p = draw(domain), draw(port)
        if p is None and not ("." in host or host == "localhost" or host.startswith("[")):
            p = 5000  # a bare name is a registry only with a port (else Docker Hub's path)
        registry = host if p is None else f"{host}:{p}"
    try:
        return ImageRef(
            registry,
            draw(repository),
            draw(st.one_of(st.none(), tag)),
            draw(st.one_of(st.none(), digest)),
        )
    except ImageRefError:
        assume(False)
        raise


@given(refs())
def test_property_str_then_parse_gives_the_same_reference(ref: ImageRef):
    assert ImageRef.parse(str(ref)) == ref


@given(refs())
def test_property_parse_then_str_gives_the_same_text(ref: ImageRef):
    text = str(ref)
    assert str(ImageRef.parse(text)) == text


@given(refs(), st.sampled_from(["127.0.0.1:5001", "mirror.local", "[::1]:5000"]))
def test_property_with_registry_moves_only_the_registry(ref: ImageRef, mirror: str):
    moved = ref.with_registry(mirror)
    assert moved.registry == mirror and (moved.tag, moved.digest) == (ref.tag, ref.digest)
    assert moved.api_repository == ref.api_repository == moved.repository
    assert ImageRef.parse(str(moved)) == moved


@given(st.text(max_size=40))
def test_property_parse_refuses_with_an_image_ref_error_or_round_trips(text: str):
    try:
        ref = ImageRef.parse(text)
    except ImageRefError:
        return
    assert str(ref) == text
