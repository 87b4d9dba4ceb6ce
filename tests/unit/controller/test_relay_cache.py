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
