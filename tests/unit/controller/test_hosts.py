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


def test_the_cron_entry_ticks_each_minute_or_runs_a_daemon_for_the_minute():
    from mlfleet.controller.hostops import cron_line

    minute = cron_line(host(mlfleet_agent_dir="/opt/mlfleet"))
    assert minute.startswith("* * * * * python3 -S /opt/mlfleet/mlfleet-agent.pyz tick ")
    seconds = cron_line(host(mlfleet_agent_dir="/opt/mlfleet", mlfleet_tick_interval=5))
    assert seconds.startswith(
        "* * * * * python3 -S /opt/mlfleet/mlfleet-agent.pyz daemon --interval 5 "
    )
    assert " --for 60 " in seconds and seconds.endswith("# mlfleet-agent")


@pytest.mark.parametrize("value", [0, 61, "5s", 2.5, True])
def test_a_bad_tick_interval_names_host_variable_and_line(value: Any):
    with pytest.raises(ConfigError) as info:
        host(mlfleet_tick_interval=value).validate()
    assert info.value.where == "inv.yml:7" and "`mlfleet_tick_interval`" in info.value.message
    assert "from 1 to 60" in info.value.message
