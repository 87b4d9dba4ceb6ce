"""Where the controller finds registry credentials: the docker CLI's config (auths,
credential helpers) or a host's own file; what it finds never shows its secret."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from mlfleet.controller.credentials import Credentials
from mlfleet.controller.errors import ConfigError

REGISTRY = "registry.example:5000"
PASSWORD = "s3cret-Pa55"


def _config(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_docker_login_entry_is_found_for_its_registry(tmp_path: Path):
    config = _config(
        tmp_path / "config.json", {"auths": {REGISTRY: {"auth": _auth("ci", PASSWORD)}}}
    )
    found = Credentials().for_registry(REGISTRY, config)
    assert found is not None
    assert (found.username, found.password, found.serveraddress) == ("ci", PASSWORD, REGISTRY)
    assert PASSWORD not in repr(found)
    assert Credentials().for_registry("other.example:5000", config) is None


def test_the_docker_config_dir_is_read_as_the_docker_cli_reads_it(tmp_path: Path, monkeypatch):
    _config(
        tmp_path / "config.json",
        {"auths": {f"https://{REGISTRY}/v1/": {"auth": _auth("u", PASSWORD)}}},
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    found = Credentials().for_registry(REGISTRY)
    assert found is not None and found.password == PASSWORD


def test_an_identity_token_is_kept_as_a_token(tmp_path: Path):
    config = _config(tmp_path / "c.json", {"auths": {REGISTRY: {"identitytoken": "refresh-abc"}}})
    found = Credentials().for_registry(REGISTRY, config)
    assert found is not None and found.identitytoken == "refresh-abc" and not found.password


def _helper(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_a_credential_helper_answers_for_its_registry(tmp_path: Path, monkeypatch):
    _helper(tmp_path, "fake", 'read server; echo "{\\"ServerURL\\": \\"$server\\", '
            '\\"Username\\": \\"robot\\", \\"Secret\\": \\"' + PASSWORD + '\\"}"\n')  # fmt: skip
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    config = _config(tmp_path / "c.json", {"auths": {}, "credHelpers": {REGISTRY: "fake"}})
    found = Credentials().for_registry(REGISTRY, config)
    assert found is not None and (found.username, found.password) == ("robot", PASSWORD)


def test_a_failing_credential_helper_is_one_line_naming_it(tmp_path: Path, monkeypatch):
    _helper(tmp_path, "broken", "echo 'keyring locked' >&2; exit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    config = _config(tmp_path / "c.json", {"credsStore": "broken"})
    with pytest.raises(ConfigError, match="docker-credential-broken") as caught:
        Credentials().for_registry(REGISTRY, config)
    assert "\n" not in str(caught.value)


def test_a_missing_credentials_file_is_refused_with_the_fix(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist") as caught:
        Credentials().for_registry(REGISTRY, str(tmp_path / "nope.json"))
    assert "mlfleet_registry_auth_file" in str(caught.value)
