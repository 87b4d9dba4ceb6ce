"""The credential an operator placed on a host (agent/host_credentials.py): the host's Docker
client config as the docker CLI reads it, credential helpers (a real helper script on PATH),
and the agent's opt-in 0600 store. No secret may show in any message or repr."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Dict

import pytest

from mlfleet.agent.credential import CredentialError, RegistryCredential
from mlfleet.agent.host_credentials import (
    auths_credential,
    forget_credential,
    host_credential,
    registry_hostname,
    store_credential,
    store_path,
)
from tests.unit.agent.test_registry_auth import (
    IDENTITY_TOKEN,
    PASSWORD,
    USER,
    assert_hidden,
    password_credential,
)

# --- the host's Docker client config -------------------------------------------------------


def write_config(directory: Path, config: Dict[str, Any]) -> Dict[str, str]:
    """A Docker config in `directory`; the environment that points the CLI at it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(directory), "PATH": os.environ.get("PATH", "")}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_docker_config_auths_user_and_password(tmp_path: Path) -> None:
    env = write_config(
        tmp_path / "d", {"auths": {"10.77.0.1:5000": {"auth": b64(f"{USER}:{PASSWORD}")}}}
    )
    found = host_credential("10.77.0.1:5000", str(tmp_path / "agent"), env)
    assert found == RegistryCredential("10.77.0.1:5000", USER, PASSWORD)
    assert host_credential("10.77.0.2:5000", str(tmp_path / "agent"), env) is None


def test_docker_config_keys_with_a_scheme_or_path_match_like_the_cli(tmp_path: Path) -> None:
    config = {
        "auths": {
            "https://10.77.0.1:5000/v1/": {"auth": b64(f"{USER}:{PASSWORD}")},
            "http://other:443": {"identitytoken": IDENTITY_TOKEN},
        }
    }
    env = write_config(tmp_path / "d", config)
    found = host_credential("10.77.0.1:5000", str(tmp_path), env)
    assert found is not None and found.password == PASSWORD
    token = host_credential("other:443", str(tmp_path), env)
    assert token == RegistryCredential("other:443", identitytoken=IDENTITY_TOKEN)


def test_docker_config_found_under_home_without_docker_config(tmp_path: Path) -> None:
    write_config(tmp_path / "home" / ".docker", {"auths": {"r:5000": {"auth": b64("u:p")}}})
    found = host_credential("r:5000", str(tmp_path), {}, home=str(tmp_path / "home"))
    assert found == RegistryCredential("r:5000", "u", "p")
    assert host_credential("r:5000", str(tmp_path), {}, home=str(tmp_path / "nobody")) is None


def test_empty_auths_entry_is_no_credential() -> None:
    # What Docker Desktop leaves beside a credsStore.
    assert auths_credential({"auths": {"r:5000": {}}}, "r:5000", "config.json") is None


def test_malformed_docker_config_names_the_file_not_the_secret(tmp_path: Path) -> None:
    env = write_config(tmp_path / "d", {"auths": {"r:5000": {"auth": "!!" + PASSWORD}}})
    with pytest.raises(CredentialError) as caught:
        host_credential("r:5000", str(tmp_path), env)
    assert str(tmp_path / "d" / "config.json") in str(caught.value)
    assert "auths['r:5000'].auth is not base64" in str(caught.value)
    assert_hidden(caught.value)
    (tmp_path / "d" / "config.json").write_text("{not json")
    with pytest.raises(CredentialError, match=r"config\.json is not JSON"):
        host_credential("r:5000", str(tmp_path), env)


def test_docker_hub_names_are_one() -> None:
    assert registry_hostname("https://index.docker.io/v1/") == "docker.io"
    assert registry_hostname("registry-1.docker.io") == "docker.io"
    assert registry_hostname("https://10.77.0.1:5000/v2/") == "10.77.0.1:5000"


HELPER = """#!/bin/sh
# A credential helper: the protocol of docker/docker-credential-helpers.
[ "$1" = get ] || exit 2
server=$(cat)
echo "$server" >> "$(dirname "$0")/asked"
case "$server" in
  10.77.0.1:5000) echo '{"ServerURL":"10.77.0.1:5000","Username":"ci","Secret":"PASSWORD"}' ;;
  tokens:5000) echo '{"ServerURL":"tokens:5000","Username":"<token>","Secret":"IDENTITY_TOKEN"}' ;;
  broken:5000) echo "the keychain is locked" >&2; exit 1 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
""".replace("IDENTITY_TOKEN", IDENTITY_TOKEN).replace("PASSWORD", PASSWORD)


@pytest.fixture
def helper_env(tmp_path: Path) -> Dict[str, str]:
    """A Docker config whose credsStore is `fake`, with docker-credential-fake on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    env = write_config(tmp_path / "d", {
        "credsStore": "fake",
        "auths": {"10.77.0.1:5000": {}, "gone:5000": {"auth": b64("u:p")}},
    })  # fmt: skip
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def test_credential_helper_found(tmp_path: Path, helper_env: Dict[str, str]) -> None:
    found = host_credential("10.77.0.1:5000", str(tmp_path), helper_env)
    assert found == RegistryCredential("10.77.0.1:5000", USER, PASSWORD)
    assert (tmp_path / "bin" / "asked").read_text() == "10.77.0.1:5000\n"
    token = host_credential("tokens:5000", str(tmp_path), helper_env)
    assert token == RegistryCredential("tokens:5000", identitytoken=IDENTITY_TOKEN)


def test_credential_helper_not_found_is_none_even_with_an_auths_entry(
    tmp_path: Path, helper_env: Dict[str, str]
) -> None:
    # As the docker CLI: a configured helper is the only store asked.
    assert host_credential("gone:5000", str(tmp_path), helper_env) is None


def test_credential_helper_per_registry_wins_over_creds_store(
    tmp_path: Path, helper_env: Dict[str, str]
) -> None:
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    config.update(credsStore="missing", credHelpers={"https://10.77.0.1:5000": "fake"})
    (tmp_path / "d" / "config.json").write_text(json.dumps(config))
    assert host_credential("10.77.0.1:5000", str(tmp_path), helper_env) is not None
    with pytest.raises(CredentialError, match="docker-credential-missing; it is not on PATH"):
        host_credential("tokens:5000", str(tmp_path), helper_env)


def test_credential_helper_failure_is_a_credential_error(
    tmp_path: Path, helper_env: Dict[str, str]
) -> None:
    with pytest.raises(CredentialError, match="docker-credential-fake get failed for broken"):
        host_credential("broken:5000", str(tmp_path), helper_env)


# --- the opt-in store ----------------------------------------------------------------------


def test_store_round_trip_mode_0600_and_merged_per_registry(tmp_path: Path) -> None:
    agent_dir = str(tmp_path / "agent")
    first = password_credential("10.77.0.1:5000")
    second = RegistryCredential("ghcr.io", identitytoken=IDENTITY_TOKEN)
    store_credential(agent_dir, first)
    store_credential(agent_dir, second)
    path = store_path(agent_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(Path(path).read_text())
    assert data == {
        "schema": 1,
        "credentials": {"10.77.0.1:5000": first.to_dict(), "ghcr.io": second.to_dict()},
    }
    assert host_credential("10.77.0.1:5000", agent_dir, {}) == first
    assert host_credential("ghcr.io", agent_dir, {}) == second
    assert [p.name for p in Path(agent_dir).iterdir()] == ["registry-credentials.json"]


def test_store_wins_over_the_docker_config(tmp_path: Path) -> None:
    env = write_config(tmp_path / "d", {"auths": {"r:5000": {"auth": b64("docker:login")}}})
    store_credential(str(tmp_path), password_credential("r:5000"))
    assert host_credential("r:5000", str(tmp_path), env) == password_credential("r:5000")


def test_store_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    store_credential(str(tmp_path), password_credential("r:5000"))
    os.chmod(store_path(str(tmp_path)), 0o644)
    with pytest.raises(CredentialError) as caught:
        host_credential("r:5000", str(tmp_path), {})
    assert f"chmod 600 {store_path(str(tmp_path))}" in str(caught.value)
    assert "(mode 0644)" in str(caught.value)
    assert_hidden(caught.value)
    # Storing again is the fix: the file is replaced by a private one.
    store_credential(str(tmp_path), password_credential("r:5000"))
    assert stat.S_IMODE(os.stat(store_path(str(tmp_path))).st_mode) == 0o600


def test_forget_credential(tmp_path: Path) -> None:
    agent_dir = str(tmp_path)
    assert forget_credential(agent_dir, "r:5000") is False  # no store at all
    store_credential(agent_dir, password_credential("r:5000"))
    store_credential(agent_dir, password_credential("s:5000"))
    assert forget_credential(agent_dir, "r:5000") is True
    assert host_credential("r:5000", agent_dir, {}) is None
    assert host_credential("s:5000", agent_dir, {}) is not None
    assert forget_credential(agent_dir, "s:5000") is True
    assert not os.path.exists(store_path(agent_dir))  # nothing left: no file


def test_malformed_store_names_the_file(tmp_path: Path) -> None:
    path = Path(store_path(str(tmp_path)))
    path.write_text(json.dumps({"schema": 1, "credentials": {"r:5000": {"password": 3}}}))
    path.chmod(0o600)
    with pytest.raises(CredentialError, match=re.escape(f"{path}, r:5000: ")):
        host_credential("r:5000", str(tmp_path), {})
