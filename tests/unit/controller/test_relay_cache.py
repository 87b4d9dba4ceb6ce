"""The relay cache's registry configuration (pure): loopback only, proxy of the upstream."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlfleet.controller.relay_cache import config_text


def test_cache_listens_on_loopback_and_proxies_the_upstream(tmp_path: Path):
    config = yaml.safe_load(config_text("10.77.0.1:5000", False, 41234, tmp_path / "data"))
    assert config["http"]["addr"] == "127.0.0.1:41234"
    assert config["proxy"] == {"remoteurl": "http://10.77.0.1:5000"}
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")
    https = yaml.safe_load(config_text("registry.example.com", True, 1, tmp_path))
    assert https["proxy"]["remoteurl"] == "https://registry.example.com"


def test_the_cache_holds_the_upstream_credential_in_its_config_only(tmp_path: Path):
    """The credential is in the text piped to the registry's stdin, nowhere else."""
    from mlfleet.agent.credential import RegistryCredential

    cred = RegistryCredential("reg.example:5000", "robot", "pw-9")
    config = yaml.safe_load(config_text("reg.example:5000", True, 1, tmp_path, cred))
    assert config["proxy"] == {
        "remoteurl": "https://reg.example:5000", "username": "robot", "password": "pw-9",
    }  # fmt: skip
    token = RegistryCredential("reg.example:5000", identitytoken="tok-1")
    proxied = yaml.safe_load(config_text("reg.example:5000", True, 1, tmp_path, token))["proxy"]
    assert (proxied["username"], proxied["password"]) == ("<token>", "tok-1")
