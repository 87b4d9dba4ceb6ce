"""Typed host settings: every `mlfleet_*` variable is read through `Host`, checked, and a
bad value is one line naming the host, the variable and where its value came from."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hosts import Host


def host(**hostvars: Any) -> Host:
    origins: Dict[str, str] = {k: "inv.yml:7" for k in hostvars}
    return Host("edge01", dict(hostvars), origins=origins, where="inv.yml:3")


@pytest.mark.parametrize(
    ("hostvars", "scheme", "https"),
    [
        ({}, "https", True),
        ({"mlfleet_registry_scheme": "https"}, "https", True),
        ({"mlfleet_registry_scheme": "http"}, "http", False),
        ({"mlfleet_registry_scheme": " http "}, "http", False),
        ({"mlfleet_registry_scheme": "HTTP"}, "http", False),
        ({"mlfleet_registry_scheme": None}, "https", True),
    ],
)
def test_registry_scheme(hostvars: Dict[str, Any], scheme: str, https: bool):
    h = host(**hostvars)
    assert (h.registry_scheme, h.registry_https) == (scheme, https)


@pytest.mark.parametrize("value", ["ftp", "http://", "", 1, True])
def test_a_bad_registry_scheme_names_host_variable_and_line(value: Any):
    h = host(mlfleet_registry_scheme=value)
    with pytest.raises(ConfigError) as info:
        h.validate()
    err = info.value
    assert err.where == "inv.yml:7" and "host 'edge01'" in err.message
    assert "`mlfleet_registry_scheme`" in err.message
    assert len(str(err).splitlines()) == 1


def test_each_host_has_its_own_scheme():
    lab, hub = host(mlfleet_registry_scheme="http"), host()
    assert (lab.registry_https, hub.registry_https) == (False, True)
