"""Typed host settings: every `mlfleet_*` variable is read through `Host`, checked, and a
bad value is one line naming the host, the variable and where its value came from."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hosts import _SETTINGS, Host


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
    assert minute.startswith("* * * * * umask 077; python3 -S /opt/mlfleet/mlfleet-agent.pyz tick ")
    seconds = cron_line(host(mlfleet_agent_dir="/opt/mlfleet", mlfleet_tick_interval=5))
    assert seconds.startswith(
        "* * * * * umask 077; python3 -S /opt/mlfleet/mlfleet-agent.pyz daemon --interval 5 "
    )
    assert " --for 60 " in seconds and seconds.endswith("# mlfleet-agent")


@pytest.mark.parametrize("value", [0, 61, "5s", 2.5, True])
def test_a_bad_tick_interval_names_host_variable_and_line(value: Any):
    with pytest.raises(ConfigError) as info:
        host(mlfleet_tick_interval=value).validate()
    assert info.value.where == "inv.yml:7" and "`mlfleet_tick_interval`" in info.value.message
    assert "from 1 to 60" in info.value.message


# --- every text setting is checked where it is read --------------------------------------


def refusal(**hostvars: Any) -> str:
    with pytest.raises(ConfigError) as info:
        host(**hostvars).validate()
    line = str(info.value)
    assert len(line.splitlines()) == 1 and line.isprintable(), line
    assert line.startswith("inv.yml:7: host 'edge01': ")
    return line


@pytest.mark.parametrize(
    ("hostvars", "message"),
    [
        ({"ansible_user": "../../etc/cron.d/x"}, "`ansible_user` must be a login name"),
        ({"ansible_user": "-oProxyCommand=x"}, "`ansible_user` must be a login name"),
        ({"ansible_user": "de ploy"}, "`ansible_user` must be one word, without spaces"),
        ({"ansible_host": "-oProxyCommand=x"}, "`ansible_host` must be a host name or an address"),
        ({"ansible_host": "10.0.0.1 evil"}, "`ansible_host` must be one word"),
        ({"mlfleet_python": "-c"}, "`mlfleet_python` must be a path or command"),
        ({"mlfleet_python": "python3; id"}, "`mlfleet_python` must be one word"),
        ({"mlfleet_agent_dir": "/opt/x\n* * * * * id"}, "`mlfleet_agent_dir` holds a control character ('\\n')"),
        ({"mlfleet_registry_ca": "/etc/ca\x00.pem"}, "`mlfleet_registry_ca` holds a control character ('\\x00')"),
        ({"ansible_host": "edge\u200b01"}, "`ansible_host` holds an unprintable character ('\\u200b')"),
        ({"mlfleet_registry": "https://reg:5000"}, "`mlfleet_registry` must be a registry's host:port"),
        ({"mlfleet_docker_host": "unix:// /x"}, "`mlfleet_docker_host` must be one word"),
        ({"ansible_port": "9" * 5000}, "`ansible_port` must be a whole number from 1 to 65535, not '99999"),
        ({"mlfleet_bwlimit_kbit": 10**12}, "`mlfleet_bwlimit_kbit` must be a whole number from 1 to 100,000,000"),
        ({"mlfleet_relay_registry": "reg:5000/x"}, "`mlfleet_relay_registry` must be upstream, cache"),
        ({"mlfleet_jump_host": "ops@bastion\x07"}, "`mlfleet_jump_host` must be a jump host like user@bastion:22, not 'ops@bastion\\x07' (it holds a control character)"),
        ({"mlfleet_transfer": "pull\x1b[2J"}, "`mlfleet_transfer` holds a control character"),
        ({"mlfleet_registry_scheme": "HTTPS\n1"}, "`mlfleet_registry_scheme` holds a control character"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_line_naming_host_variable_and_line(
    hostvars: Dict[str, Any], message: str
):
    assert message in refusal(**hostvars)


def test_good_settings_of_the_same_kinds_read():
    h = host(
        ansible_user="ec2-user", ansible_host="2001:db8::5", mlfleet_python="/usr/bin/python3",
        mlfleet_registry="reg.internal:5000", mlfleet_docker_host="unix:///run/docker.sock",
        mlfleet_relay_registry="cache", mlfleet_bwlimit_kbit="20000",
    )  # fmt: skip
    h.validate()
    assert (h.user, h.address, h.python, h.registry) == (
        "ec2-user", "2001:db8::5", "/usr/bin/python3", "reg.internal:5000",
    )  # fmt: skip
    assert host(ansible_user="svc.deploy@corp").user == "svc.deploy@corp"


def _unusable(var: str) -> Any:
    if var.startswith("ansible_ssh_") and var.endswith("_args"):
        return "-o ProxyCommand=nc"  # refused: mlfleet does not run a ProxyCommand
    return object()  # not text, number or boolean: every setting refuses it


@pytest.mark.parametrize("setting", sorted(_SETTINGS))
def test_each_setting_reads_exactly_the_variables_its_table_names(setting: str):
    # validate() reads a setting again only for hosts whose values of these differ, so
    # the table must name every variable the setting reads, and the setting all of them.
    for var in _SETTINGS[setting]:
        with pytest.raises(ConfigError):
            getattr(host(**{var: _unusable(var)}), setting)
    others = {v: _unusable(v) for names in _SETTINGS.values() for v in names}
    for var in _SETTINGS[setting]:
        others.pop(var, None)
    getattr(host(**others), setting)  # reads none of the other settings' variables


def test_values_found_good_are_not_read_again_but_a_hosts_own_are():
    shared = {"ansible_user": "deploy", "mlfleet_registry": "reg:5000"}
    checked: set = set()
    Host("a", dict(shared), origins={}, where="inv.yml:3").validate(checked)
    assert ("user", (id(None), id(shared["ansible_user"]))) in checked
    bad = Host("b", {**shared, "ansible_user": "a/b"}, origins={}, where="inv.yml:9")
    with pytest.raises(ConfigError, match=r"inv\.yml:9: host 'b': `ansible_user` must be"):
        bad.validate(checked)
