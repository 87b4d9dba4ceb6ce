"""The desired state's validation: every rule in one place, each error naming the key path
of the bad value (the playbook maps it back to its file:line)."""

from __future__ import annotations

import copy
from typing import Any, Dict, Tuple

import pytest

from mlfleet.agent.desired import DesiredState, DesiredStateError, KeyPath, dotted

DIGEST = "sha256:" + "b" * 64


def valid() -> Dict[str, Any]:
    return {
        "schema": 1,
        "app": "sentiment",
        "deployment": "d-1",
        "tag": "v3",
        "variants": [
            {"name": "cuda12", "gpu": "nvidia", "cuda": "12.2", "image": "r:5000/m:v3-cuda12"},
            {"name": "cpu", "image": f"r:5000/m@{DIGEST}"},
        ],
        "container": {
            "ports": [
                {"container": 8080, "host": 8080},
                {"container": 53, "host": 5353, "protocol": "udp", "host_ip": "127.0.0.1"},
            ],
            "env": {"LOG_LEVEL": "info"},
            "env_file": "/etc/m.env",
            "mounts": [{"source": "/srv/w", "target": "/data"}],
            "user": "10001:10001",
            "memory_mib": 512,
            "cpus": 1.5,
            "command": ["python3", "/app/server.py"],
        },
        "health": {
            "http": [{"port": 8080, "path": "/health", "status": 204}],
            "tcp": [{"port": 8080}],
            "exec": [{"command": ["true"]}],
            "inference": [{"port": 8080, "path": "/p", "request": {}, "expect": {}}],
            "timing": {"start_period_s": 0, "interval_s": 0.5},
        },
        "monitor_s": 0,
        "retain": 2,
    }


def with_value(path: KeyPath, value: Any) -> Dict[str, Any]:
    data = copy.deepcopy(valid())
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def refused(data: Dict[str, Any]) -> DesiredStateError:
    with pytest.raises(DesiredStateError) as info:
        DesiredState.from_dict(data)
    return info.value


def test_a_valid_state_round_trips():
    state = DesiredState.from_dict(valid())
    assert DesiredState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("app",), "Sentiment", "lowercase"),
        (("tag",), "v3;reboot", "not a Docker tag"),
        (("deployment",), "", "required"),
        (("strategy",), "blue-green", "one of auto, stop-first, start-first"),
        (("retain",), 1, "expected a whole number >= 2"),
        (("monitor_s",), -1, "expected a number >= 0"),
        (("grace_s",), float("nan"), "expected a number >= 0"),
        (("variants", 0, "image"), "R/M", "not an image reference"),
        (("container", "env", "1BAD"), "x", "not a valid environment variable name"),
        (("container", "env", "DEBUG"), True, "True is not a string"),
        (("container", "env_file"), "secrets.env", "'secrets.env' is not an absolute path"),
        (("container", "mounts", 0, "source"), "srv/w", "'srv/w' is not an absolute path"),
        (("container", "mounts", 0, "target"), "data", "'data' is not an absolute path"),
        (("container", "ports", 0, "host"), 70000, "host port 70000 is outside 1-65535"),
        (("container", "ports", 1, "container"), 0, "container port 0 is outside 1-65535"),
        (("container", "ports", 1, "protocol"), "sctp", "tcp or udp"),
        (("container", "ports", 1, "host_ip"), "999.1.1.1", "not an IP address"),
        (("container", "user"), "root", "is root"),
        (("container", "user"), "0:0", "is root"),
        (("container", "user"), "a b", "is not a user"),
        (("container", "memory_mib"), 0, "whole number of MiB >= 1"),
        (("container", "cpus"), 0, "expected a number above 0"),
        (("container", "command"), [], "the list is empty"),
        (("container", "command"), "python3 server.py", "expected a list of strings"),
        (("health", "timing", "timeout_s"), 0, "must be above 0"),
        (("health", "timing", "start_period_s"), -1, "expected a number >= 0"),
        (("health", "timing", "retries"), 0, "expected a whole number >= 1"),
        (("health", "http", 0, "path"), "health", "must start with /"),
        (("health", "http", 0, "status"), 700, "HTTP status 100-599"),
        (("health", "inference", 0, "path"), "/a b", "no whitespace"),
        (("health", "inference", 0, "tolerance"), -1, "expected a number >= 0"),
        (("health", "exec", 0, "command"), [], "the list is empty"),
    ],
)
def test_each_rule_names_the_key_path(path: Tuple[Any, ...], value: Any, words: str):
    err = refused(with_value(path, value))
    assert err.path == path
    assert words in err.problem
    assert str(err) == f"`{dotted(path)}`: {err.problem}"


def test_checked_ports_must_be_published():
    err = refused(with_value(("health", "tcp", 0, "port"), 9000))
    assert err.path == ("health", "tcp", 0, "port")
    assert err.problem == "9000 is not published by container.ports (published: 53, 8080)"


def test_a_host_port_bound_twice_names_the_second():
    ports = [{"container": 8080, "host": 80}, {"container": 81, "host": 80}]
    err = refused(with_value(("container", "ports"), ports))
    assert err.path == ("container", "ports", 1)
    assert "already bound by container.ports[0]" in err.problem
    same_port_other_protocol = [ports[0], {"container": 81, "host": 80, "protocol": "udp"}]
    DesiredState.from_dict(with_value(("container", "ports"), same_port_other_protocol))


def test_root_with_allow_root():
    data = with_value(("container", "user"), "root")
    data["container"]["allow_root"] = True
    assert DesiredState.from_dict(data).container.user == "root"


def test_variant_errors_name_the_variant():
    data = with_value(("variants", 1), {"name": "cuda12", "image": "r/m:v1"})
    err = refused(data)
    assert err.path == ("variants", 1) and "already used by variants[0]" in err.problem


def test_schema_and_shape_errors_have_no_path():
    err = refused(dict(valid(), schema=2))
    assert err.path == () and "schema 2" in str(err)
    err = refused(dict(valid(), surprise=1))
    assert err.path == () and "malformed" in str(err)


def test_dotted():
    assert dotted(("container", "ports", 0, "host")) == "container.ports[0].host"
    assert dotted(("variants", 2)) == "variants[2]"
    assert dotted(()) == ""
