"""The relay cache: a registry on the controller's loopback that the controller fills from
the upstream (TLS with a private CA, htpasswd credentials: the kind Distribution's own
pull-through mode cannot proxy). Against real Distribution registry processes on loopback;
no lab needed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest
import yaml

from mlfleet.agent.credential import RegistryCredential
from mlfleet.controller.image_copy import copy_image
from mlfleet.controller.lab import registry_tls
from mlfleet.controller.registry import (
    CONFIG_V1,
    LAYER_GZIP,
    MANIFEST_V2,
    OCI_INDEX,
    Registry,
    RegistryAuthError,
    sha256_digest,
)
from mlfleet.controller.relay_cache import RelayCache, config_text, registry_binary

REPO = "team/model"


def test_the_cache_listens_on_loopback_and_holds_no_secret(tmp_path: Path):
    config = yaml.safe_load(config_text(41234, tmp_path / "data"))
    assert config["http"]["addr"] == "127.0.0.1:41234"
    assert "proxy" not in config and "auth" not in config
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Registry, Registry]]:
    """A TLS registry with a private CA that requires a login; (client with the login,
    client without one)."""
    try:
        binary = registry_binary()
    except Exception:
        pytest.fail("these tests need the Distribution registry (apt-get install docker-registry)")
    work = tmp_path_factory.mktemp("upstream")
    (work / "ca").mkdir()
    (work / "tls").mkdir()
    registry_tls.ensure_ca(work / "ca", "test CA")
    tls = registry_tls.ensure_server_cert(work / "tls", work / "ca", "127.0.0.1")
    password = registry_tls.new_password()
    registry_tls.write_private(work / "htpasswd", registry_tls.htpasswd_line("robot", password))
    address = f"127.0.0.1:{_port()}"
    (work / "config.yml").write_text(
        registry_tls.registry_config(
            address, work / "data", tls, work / "htpasswd", log_level="warn"
        )
    )
    with (work / "log").open("wb") as log:
        proc = subprocess.Popen([binary, "serve", str(work / "config.yml")], stdout=log, stderr=log)
    ca = str(work / "ca" / registry_tls.CA_CERT)
    login = Registry(address, https=True, ca_file=ca,
                     credential=RegistryCredential(address, "robot", password))  # fmt: skip
    anonymous = Registry(address, https=True, ca_file=ca)
    deadline = time.monotonic() + 15
    while not login.ping():
        assert time.monotonic() < deadline and proc.poll() is None, (work / "log").read_text()
        time.sleep(0.05)
    yield login, anonymous
    proc.terminate()
    proc.wait(timeout=10)


def push_image(registry: Registry, tag: str, layers: list, arch: str = "amd64") -> Tuple[str, int]:
    """Push an image of `layers` (bytes each) as `tag`; (manifest digest, its bytes)."""
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [sha256_digest(b) for b in layers]}}).encode()  # fmt: skip
    registry.push_blob(REPO, sha256_digest(config), config)
    for blob in layers:
        registry.push_blob(REPO, sha256_digest(blob), blob)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": sha256_digest(config)},
        "layers": [{"mediaType": LAYER_GZIP, "size": len(b), "digest": sha256_digest(b)} for b in layers],
    }, indent=3).encode()  # fmt: skip
    return registry.put_manifest(REPO, tag, manifest, MANIFEST_V2), len(manifest)


@pytest.fixture
def cache(upstream, tmp_path: Path) -> Iterator[RelayCache]:
    relay = RelayCache(upstream[0], root=tmp_path).start()
    yield relay
    relay.stop()


def test_an_image_is_copied_from_a_tls_registry_with_a_login_digest_unchanged(upstream, cache):
    login, _ = upstream
    base, top = os.urandom(300_000), os.urandom(2_000_000)
    digest, _ = push_image(login, "v1-cpu", [base, top])
    stats = cache.fill(REPO, digest)
    assert stats is not None and stats.digest == digest
    assert stats.blobs == 3  # config and both layers
    assert 2_300_000 < stats.bytes < 2_300_000 + 1_000
    raw, _, served = cache.local().get_manifest_bytes(REPO, digest) or (b"", "", "")
    assert served == digest == sha256_digest(raw)  # the exact bytes: the pin still names them
    assert b"".join(cache.local().blob_chunks(REPO, sha256_digest(top))) == top
    assert cache.fill(REPO, digest) is None  # once per deployment


def test_only_the_blobs_the_cache_lacks_cross_the_upstream_link(upstream, cache):
    login, _ = upstream
    base = os.urandom(500_000)
    first, _ = push_image(login, "v2-cpu", [base, os.urandom(1000)])
    cache.fill(REPO, first)
    top = os.urandom(70_000)
    second, _ = push_image(login, "v3-cpu", [base, top])
    stats = cache.fill(REPO, second)
    assert stats is not None
    assert stats.blobs == 2  # the new config and the new top layer; the base was there
    assert len(top) <= stats.bytes < len(top) + 2_000


def test_a_tag_is_copied_under_its_tag_too(upstream, cache):
    login, _ = upstream
    digest, _ = push_image(login, "v4-cpu", [os.urandom(1000)])
    assert cache.fill(REPO, "v4-cpu") is not None
    assert (cache.local().get_manifest(REPO, "v4-cpu") or ({}, ""))[1] == digest


def test_a_multi_platform_index_is_copied_whole(upstream, cache):
    login, _ = upstream
    amd, amd_size = push_image(login, "v5-amd64", [os.urandom(1000)])
    arm, arm_size = push_image(login, "v5-arm64", [os.urandom(1000)], arch="arm64")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": MANIFEST_V2, "digest": amd, "size": amd_size,
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": MANIFEST_V2, "digest": arm, "size": arm_size,
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    ]}).encode()  # fmt: skip
    digest = login.put_manifest(REPO, "v5", index, OCI_INDEX)
    stats = copy_image(login, cache.local(), REPO, "v5")
    assert stats.digest == digest
    for child in (amd, arm):
        assert cache.local().get_manifest(REPO, child) is not None


def test_without_the_login_the_copy_is_refused_in_words(upstream, tmp_path):
    login, anonymous = upstream
    digest, _ = push_image(login, "v6-cpu", [os.urandom(1000)])
    relay = RelayCache(anonymous, root=tmp_path).start()
    try:
        with pytest.raises(RegistryAuthError, match="needs credentials"):
            relay.fill(REPO, digest)
    finally:
        relay.stop()
