"""Platforms and image indexes: reading and normalizing platforms the way containerd does,
and picking from real-looking Docker manifest lists and OCI indexes the entry an engine on a
host would pull (examples and hypothesis properties)."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlfleet.agent.platforms import (
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    Platform,
    PlatformError,
    PlatformMissing,
    choose,
    compatible,
    is_index,
    platforms_of,
)


def _digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


def _entry(
    media_type: str, os: str, arch: str, variant: Optional[str] = None, size: int = 1234
) -> Dict[str, Any]:
    platform = {"architecture": arch, "os": os}
    if variant is not None:
        platform["variant"] = variant
    label = "/".join(p for p in (os, arch, variant) if p)
    return {"mediaType": media_type, "size": size, "digest": _digest(label), "platform": platform}


_DOCKER_IMAGE = "application/vnd.docker.distribution.manifest.v2+json"
_OCI_IMAGE = "application/vnd.oci.image.manifest.v1+json"

# What `docker manifest inspect` shows for a multi-arch image on Docker Hub (alpine-like).
DOCKER_LIST: Dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": DOCKER_MANIFEST_LIST,
    "manifests": [
        _entry(_DOCKER_IMAGE, "linux", "amd64"),
        _entry(_DOCKER_IMAGE, "linux", "arm", "v6"),
        _entry(_DOCKER_IMAGE, "linux", "arm", "v7"),
        _entry(_DOCKER_IMAGE, "linux", "arm64", "v8"),
        _entry(_DOCKER_IMAGE, "linux", "386"),
        _entry(_DOCKER_IMAGE, "linux", "ppc64le"),
        _entry(_DOCKER_IMAGE, "linux", "s390x"),
    ],
}

# What `docker buildx build --platform linux/amd64,linux/arm64,...` pushes: an OCI index with
# a provenance attestation (BuildKit's `unknown/unknown` entry).
OCI_WITH_ATTESTATION: Dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [
        _entry(_OCI_IMAGE, "linux", "amd64"),
        _entry(_OCI_IMAGE, "linux", "arm64"),
        _entry(_OCI_IMAGE, "linux", "arm64", "v8"),
        _entry(_OCI_IMAGE, "linux", "arm", "v7"),
        {
            "mediaType": _OCI_IMAGE,
            "digest": _digest("attestation"),
            "size": 566,
            "annotations": {
                "vnd.docker.reference.digest": _digest("linux/amd64"),
                "vnd.docker.reference.type": "attestation-manifest",
            },
            "platform": {"architecture": "unknown", "os": "unknown"},
        },
    ],
}


def _index(*platforms: str, media_type: str = OCI_INDEX) -> Dict[str, Any]:
    """An index with one entry per `os/arch[/variant]`, digests named after them."""
    entries = []
    for text in platforms:
        os, arch, *variant = text.split("/")
        entries.append(_entry(_OCI_IMAGE, os, arch, variant[0] if variant else None))
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}


# ---------------------------------------------------------------------------------------
# Platform: parse, str, from_machine, normalized


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("windows/amd64", Platform("windows", "amd64")),
        ("linux/x86_64", Platform("linux", "x86_64")),  # as written: normalized() maps it
        ("Linux/AArch64/8", Platform("Linux", "AArch64", "8")),
    ],
)
def test_parse_reads_what_is_written(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "linux",
        "amd64",
        "linux/",
        "/amd64",
        "linux//v8",
        "linux/amd64/",
        "linux/arm64/v8/extra",
        "linux/arm 64",
        "linux/amd64\n",
        "linux/*",
    ],
)
def test_parse_refuses_junk(text: str) -> None:
    with pytest.raises(PlatformError, match="expected os/architecture"):
        Platform.parse(text)


def test_a_platform_cannot_be_made_with_a_component_str_cannot_carry() -> None:
    with pytest.raises(PlatformError, match="architecture 'arm/v7'"):
        Platform("linux", "arm/v7")
    with pytest.raises(PlatformError, match="variant 'v 8'"):
        Platform("linux", "arm64", "v 8")
    with pytest.raises(PlatformError, match=r"os 'linux\\n'"):
        Platform("linux\n", "amd64")


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("arm64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("armv8l", "linux/arm/v8"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
        ("riscv64", "linux/riscv64"),
        ("i686", "linux/386"),
        ("loongarch64", "linux/loong64"),
        ("AARCH64\n", "linux/arm64/v8"),  # as read from a command's output
    ],
)
def test_from_machine_maps_uname_m_to_the_normal_form(machine: str, expected: str) -> None:
    platform = Platform.from_machine(machine)
    assert str(platform) == expected
    assert platform.normalized() == platform


def test_from_machine_names_an_unknown_machine() -> None:
    with pytest.raises(PlatformError, match=r"unknown machine 'sparc64' \(uname -m\); known: "):
        Platform.from_machine("sparc64")


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/i386", "linux/386"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/8", "linux/arm64/v8"),
        ("linux/arm64/v8.0", "linux/arm64/v8"),
        ("linux/arm64/v8.2", "linux/arm64/v8.2"),
        ("linux/arm64/9", "linux/arm64/v9"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/arm/v5", "linux/arm/v5"),
        ("Linux/AMD64", "linux/amd64"),
        ("macos/arm64", "darwin/arm64/v8"),
        ("linux/s390x", "linux/s390x"),
    ],
)
def test_normalized_follows_containerd(written: str, normal: str) -> None:
    assert str(Platform.parse(written).normalized()) == normal


@pytest.mark.parametrize(
    ("want", "vector"),
    [
        ("linux/amd64", ["linux/amd64", "linux/386"]),
        ("linux/amd64/v3", ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"]),
        ("linux/arm/v7", ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm/v5", ["linux/arm/v5"]),
        (
            "linux/arm64/v8",
            ["linux/arm64/v8", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
        ),
        (
            "linux/arm64/v9.1",
            [
                "linux/arm64/v9.1",
                "linux/arm64/v9",
                *(f"linux/arm64/v8.{n}" for n in range(6, 0, -1)),
                "linux/arm64/v8",
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5",
            ],
        ),
        ("linux/s390x", ["linux/s390x"]),
        ("linux/arm64/v7", ["linux/arm64/v7"]),  # a variant containerd does not know
    ],
)
def test_compatible_is_containerds_only(want: str, vector: List[str]) -> None:
    assert [str(p) for p in compatible(Platform.parse(want))] == vector


# ---------------------------------------------------------------------------------------
# Indexes


def test_is_index_by_media_type_or_by_its_manifests_list() -> None:
    assert is_index(DOCKER_LIST) and is_index(OCI_WITH_ATTESTATION)
    no_media_type = {k: v for k, v in OCI_WITH_ATTESTATION.items() if k != "mediaType"}
    assert is_index(no_media_type)
    image = {"schemaVersion": 2, "mediaType": _DOCKER_IMAGE, "config": {}, "layers": []}
    assert not is_index(image)
    assert not is_index({"schemaVersion": 2, "config": {}, "layers": []})


def test_platforms_of_leaves_out_attestations_and_keeps_the_spelling() -> None:
    assert [str(p) for p in platforms_of(OCI_WITH_ATTESTATION)] == [
        "linux/amd64",
        "linux/arm64",
        "linux/arm64/v8",
        "linux/arm/v7",
    ]
    assert len(platforms_of(DOCKER_LIST)) == 7


def test_platforms_of_leaves_out_attestations_known_by_either_sign() -> None:
    index = _index("linux/amd64")
    index["manifests"] += [
        # BuildKit's annotation on a real-looking platform, and unknown/unknown without it
        {
            "digest": _digest("a1"),
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            "platform": {"os": "linux", "architecture": "amd64"},
        },
        {"digest": _digest("a2"), "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": _digest("artifact"), "artifactType": "application/example"},  # no platform
    ]
    assert platforms_of(index) == [Platform("linux", "amd64")]


@pytest.mark.parametrize(
    ("machine", "chosen"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("i686", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
    ],
)
def test_choose_from_a_docker_manifest_list(machine: str, chosen: str) -> None:
    assert choose(DOCKER_LIST, Platform.from_machine(machine)) == _digest(chosen)


@pytest.mark.parametrize(
    ("want", "chosen"),
    [
        (Platform.from_machine("x86_64"), "linux/amd64"),
        # An arm64 host: the entry that says v8 before the one that leaves it implied ...
        (Platform.from_machine("aarch64"), "linux/arm64/v8"),
        # ... and asked for without a variant, the one written that way.
        (Platform.parse("linux/arm64"), "linux/arm64"),
        (Platform.parse("linux/aarch64"), "linux/arm64"),
        (Platform.from_machine("armv7l"), "linux/arm/v7"),
        (Platform.parse("linux/armhf"), "linux/arm/v7"),
        (Platform.from_machine("armv8l"), "linux/arm/v7"),
    ],
)
def test_choose_from_an_oci_index(want: Platform, chosen: str) -> None:
    assert choose(OCI_WITH_ATTESTATION, want) == _digest(chosen)


def test_an_arm64_entry_without_variant_matches_an_arm64_v8_host() -> None:
    index = _index("linux/amd64", "linux/arm64")
    assert choose(index, Platform.from_machine("aarch64")) == _digest("linux/arm64")


def test_an_amd64_entry_written_v1_matches_an_amd64_host() -> None:
    index = _index("linux/arm64", "linux/amd64/v1")
    assert choose(index, Platform.from_machine("x86_64")) == _digest("linux/amd64/v1")


def test_the_nearest_platform_wins_over_index_order() -> None:
    index = _index("linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm64/v8")
    assert choose(index, Platform.from_machine("aarch64")) == _digest("linux/arm64/v8")
    assert choose(index, Platform.from_machine("armv7l")) == _digest("linux/arm/v7")
    index = _index("linux/386", "linux/amd64/v2", "linux/amd64/v3")
    assert choose(index, Platform.parse("linux/amd64/v3")) == _digest("linux/amd64/v3")
    assert choose(index, Platform.parse("linux/amd64/v2")) == _digest("linux/amd64/v2")


def test_older_platforms_are_chosen_as_the_engine_would() -> None:
    # Docker pulls a 386 image on amd64 and arm/v7 on arm64 when that is all there is.
    assert choose(_index("linux/386"), Platform.from_machine("x86_64")) == _digest("linux/386")
    index = _index("linux/amd64", "linux/arm/v6", "linux/arm/v7")
    assert choose(index, Platform.from_machine("aarch64")) == _digest("linux/arm/v7")


def test_index_order_breaks_ties() -> None:
    index = _index("linux/amd64")
    index["manifests"].append({**index["manifests"][0], "digest": _digest("second")})
    assert choose(index, Platform.from_machine("x86_64")) == _digest("linux/amd64")


def test_choose_says_which_platforms_there_are_when_the_host_is_not_one() -> None:
    index = _index("linux/amd64", "linux/s390x", "linux/amd64", media_type=DOCKER_MANIFEST_LIST)
    want = Platform.from_machine("aarch64")
    with pytest.raises(PlatformMissing) as caught:
        choose(index, want)
    assert str(caught.value) == "has no linux/arm64/v8 image (it has linux/amd64, linux/s390x)"
    assert caught.value.want == want
    assert [str(p) for p in caught.value.available] == ["linux/amd64", "linux/s390x", "linux/amd64"]
    assert isinstance(caught.value, ValueError)


def test_choose_over_an_index_of_attestations_only() -> None:
    index = {"mediaType": OCI_INDEX, "manifests": OCI_WITH_ATTESTATION["manifests"][-1:]}
    with pytest.raises(PlatformMissing, match=r"^has no linux/amd64 image \(it lists no platform"):
        choose(index, Platform.from_machine("x86_64"))


def test_an_arm_v6_host_cannot_run_an_arm_v7_image() -> None:
    with pytest.raises(PlatformMissing, match="has no linux/arm/v6 image"):
        choose(OCI_WITH_ATTESTATION, Platform.from_machine("armv6l"))


def test_an_arm_v7_host_takes_an_older_arm_image_never_a_newer_one() -> None:
    armv7l = Platform.from_machine("armv7l")
    index = _index("linux/arm/v6", "linux/arm/v8", "linux/arm/v7")
    assert choose(index, armv7l) == _digest("linux/arm/v7")
    index["manifests"].pop()
    assert choose(index, armv7l) == _digest("linux/arm/v6")
    with pytest.raises(PlatformMissing, match=r"has no linux/arm/v7 image \(it has linux/arm/v8\)"):
        choose(_index("linux/arm/v8"), armv7l)


def test_an_image_for_another_os_is_never_chosen() -> None:
    with pytest.raises(PlatformMissing, match=r"\(it has windows/amd64\)"):
        choose(_index("windows/amd64"), Platform.from_machine("x86_64"))


def test_an_attestation_is_skipped_even_ahead_of_its_image() -> None:
    # Its annotation names a real platform; an engine never pulls it.
    index = _index("linux/arm64/v8", "linux/amd64")
    attestation = {
        "digest": _digest("attestation"),
        "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    index["manifests"].insert(0, attestation)
    index["manifests"].insert(
        0, {**attestation, "platform": {"os": "unknown", "architecture": "unknown"}}
    )
    assert choose(index, Platform.from_machine("x86_64")) == _digest("linux/amd64")


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ({"mediaType": _DOCKER_IMAGE, "layers": []}, "not an image index"),
        ({"mediaType": OCI_INDEX}, "no `manifests` list"),
        ({"mediaType": OCI_INDEX, "manifests": ["sha256:x"]}, "entry 0 is not an object"),
        (
            {"manifests": [{"digest": _digest("x"), "platform": "linux/amd64"}]},
            "entry 0: `platform` is not an object",
        ),
        (
            {"manifests": [{"digest": _digest("x"), "platform": {"os": "linux"}}]},
            "entry 0: platform architecture '' is not valid",
        ),
        (
            {"manifests": [{"platform": {"os": "linux", "architecture": "amd64"}}]},
            r"entry 0 \(linux/amd64\) has no digest",
        ),
    ],
)
def test_a_malformed_index_is_named(manifest: Dict[str, Any], words: str) -> None:
    with pytest.raises(PlatformError, match=words):
        choose(manifest, Platform.from_machine("x86_64"))


# ---------------------------------------------------------------------------------------
# Properties

_component = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True)
_platforms = st.builds(Platform, _component, _component, st.one_of(st.just(""), _component))

# Platforms as indexes and hosts spell them, aliases included.
_spelled = st.builds(
    Platform,
    st.sampled_from(["linux", "Linux", "windows"]),
    st.sampled_from(
        ["amd64", "x86_64", "386", "i386", "arm64", "aarch64", "arm", "armhf", "armel", "s390x"]
    ),
    st.sampled_from(["", "v1", "v2", "v3", "v5", "v6", "v7", "7", "v8", "8", "v8.0", "v8.2", "v9"]),
)


@given(_platforms)
def test_str_and_parse_round_trip(platform: Platform) -> None:
    assert Platform.parse(str(platform)) == platform


@given(_spelled)
def test_normalized_is_idempotent(platform: Platform) -> None:
    normal = platform.normalized()
    assert normal.normalized() == normal
    assert compatible(platform)[0] == normal


@given(st.lists(_spelled, min_size=1, max_size=8), st.data())
def test_an_index_serves_each_of_its_own_platforms_that_very_platform(
    platforms: List[Platform], data: st.DataObject
) -> None:
    index = {
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "digest": _digest(f"{i}"),
                "platform": {"os": p.os, "architecture": p.architecture, "variant": p.variant},
            }
            for i, p in enumerate(platforms)
        ],
    }
    by_digest: Dict[str, Tuple[int, Platform]] = {
        _digest(f"{i}"): (i, p) for i, p in enumerate(platforms)
    }
    want = data.draw(st.sampled_from(platforms))
    order, chosen = by_digest[choose(index, want)]
    assert chosen.normalized() == want.normalized()
    # Spelled as asked when such an entry exists, and then the first of them.
    spelled_so = [
        i
        for i, p in enumerate(platforms)
        if p.normalized() == want.normalized() and p.variant.lower() == want.variant.lower()
    ]
    assert order == spelled_so[0]
