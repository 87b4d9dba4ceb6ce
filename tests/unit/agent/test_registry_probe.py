"""What a pull would fetch, asked of a real local HTTPS registry stand-in (see
test_registry_auth): the image an index offers this host (the rule itself is agent/platforms.py,
tested in test_platforms), the registry's trust and challenges, and None when the registry
cannot be asked at all."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from mlfleet.agent.credential import RegistryCredential
from mlfleet.agent.platforms import PlatformMissing
from mlfleet.agent.registry_auth import RegistryAuthError, RegistryTrustError
from mlfleet.agent.registry_probe import RemoteImage, plain_http, remote_image
from tests.unit.agent.test_registry_auth import (
    PASSWORD,
    USER,
    Pki,
    RegistryStandIn,
    assert_hidden,
    make_pki,
    trust,
)

SIZES = {"amd64": [1000, 2000], "arm64/v8": [3000], "arm/v7": [40], "arm/v6": [50, 60]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def standin(pki: Pki, request: pytest.FixtureRequest) -> Iterator[RegistryStandIn]:
    registry = RegistryStandIn(pki, getattr(request, "param", "none"))
    registry.push_index("team/model", "v1", SIZES)
    registry.push_image("team/model", "amd64-only", "amd64", [5])
    yield registry
    registry.close()


@pytest.fixture
def certs_dir(tmp_path: Path, pki: Pki, standin: RegistryStandIn) -> Path:
    return trust(tmp_path / "certs.d", standin.address, pki.ca)


def engine_info(registry: str) -> Dict[str, Any]:
    """An engine's /info that reaches `registry` over TLS (loopback registries are
    otherwise the engine's insecure ones)."""
    return {"RegistryConfig": {"IndexConfigs": {registry: {"Secure": True}}}}


def probe(
    standin: RegistryStandIn,
    certs_dir: Path,
    tag: str = "v1",
    arch: str = "x86_64",
    credential: Optional[RegistryCredential] = None,
) -> Optional[RemoteImage]:
    return remote_image(
        f"{standin.address}/team/model:{tag}",
        engine_info(standin.address),
        timeout=5.0,
        credential=credential,
        arch=arch,
        certs_dir=str(certs_dir),
    )


def sizes(image: Optional[RemoteImage]) -> List[int]:
    assert image is not None
    assert len(image.diff_ids) == len(image.layers)
    return [size for _, size in image.layers]


# --- TLS or plain HTTP, as the engine decides -------------------------------------------


def test_plain_http_still_follows_the_engine() -> None:
    assert plain_http("127.0.0.1:5000", {}) is True  # loopback: insecure by default
    assert plain_http("127.0.0.1:5000", engine_info("127.0.0.1:5000")) is False
    insecure = {"RegistryConfig": {"IndexConfigs": {"r:5000": {"Secure": False}}}}
    assert plain_http("r:5000", insecure) is True


# --- against the stand-in ------------------------------------------------------------------


def test_index_picks_the_host_architecture(standin: RegistryStandIn, certs_dir: Path) -> None:
    assert sizes(probe(standin, certs_dir, arch="x86_64")) == SIZES["amd64"]
    assert sizes(probe(standin, certs_dir, arch="aarch64")) == SIZES["arm64/v8"]
    assert sizes(probe(standin, certs_dir, arch="armv7l")) == SIZES["arm/v7"]
    with pytest.raises(PlatformMissing, match=r"has no linux/riscv64 image \(it has linux/amd64, "):
        probe(standin, certs_dir, arch="riscv64")  # not offered: refused, with what it has
    assert probe(standin, certs_dir, arch="sparc64") is None  # a machine of no known platform


def test_arch_defaults_to_the_engines(standin: RegistryStandIn, certs_dir: Path) -> None:
    info = dict(engine_info(standin.address), Architecture="aarch64")
    image = remote_image(f"{standin.address}/team/model:v1", info, certs_dir=str(certs_dir))
    assert sizes(image) == SIZES["arm64/v8"]


def test_a_single_manifest(standin: RegistryStandIn, certs_dir: Path) -> None:
    assert sizes(probe(standin, certs_dir, tag="amd64-only")) == [5]
    # Nothing to choose from: the machine does not matter.
    assert sizes(probe(standin, certs_dir, tag="amd64-only", arch="sparc64")) == [5]


def test_unknown_tag_is_none(standin: RegistryStandIn, certs_dir: Path) -> None:
    assert probe(standin, certs_dir, tag="v9") is None


@pytest.mark.parametrize("standin", ["bearer"], indirect=True)
def test_bearer_credential(standin: RegistryStandIn, certs_dir: Path) -> None:
    credential = RegistryCredential(standin.address, USER, PASSWORD)
    assert sizes(probe(standin, certs_dir, credential=credential)) == SIZES["amd64"]
    assert len(standin.token_requests) == 1  # index, manifest and config share one token


@pytest.mark.parametrize("standin", ["bearer", "basic"], indirect=True)
def test_anonymous_needs_credentials(standin: RegistryStandIn, certs_dir: Path) -> None:
    with pytest.raises(RegistryAuthError, match="needs registry credentials to pull team/model"):
        probe(standin, certs_dir)


@pytest.mark.parametrize("standin", ["basic"], indirect=True)
def test_refused_credentials_raise(standin: RegistryStandIn, certs_dir: Path) -> None:
    assert sizes(probe(standin, certs_dir, credential=RegistryCredential(
        standin.address, USER, PASSWORD))) == SIZES["amd64"]  # fmt: skip
    wrong = RegistryCredential(standin.address, USER, "x" + PASSWORD)
    with pytest.raises(RegistryAuthError, match=f"refused the credentials for {USER}") as caught:
        probe(standin, certs_dir, credential=wrong)
    assert_hidden(caught.value)
    assert "x" + PASSWORD not in str(caught.value)


def test_untrusted_certificate_raises(standin: RegistryStandIn, tmp_path: Path) -> None:
    with pytest.raises(RegistryTrustError, match=f"/etc/docker/certs.d/{standin.address}/ca.crt"):
        probe(standin, tmp_path / "no-certs")


def test_no_route_is_none(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reference = f"127.0.0.1:{port}/team/model:v1"
    info = engine_info(f"127.0.0.1:{port}")
    assert remote_image(reference, info, timeout=2.0, certs_dir=str(tmp_path)) is None
    assert remote_image("Not A Reference", info) is None
