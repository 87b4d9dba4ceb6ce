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
            "env_file": "/etc/mlfleet/m.env",
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
    assert err.path == () and str(err).startswith("unknown key 'surprise'; known keys: app, ")


def test_dotted():
    assert dotted(("container", "ports", 0, "host")) == "container.ports[0].host"
    assert dotted(("variants", 2)) == "variants[2]"
    assert dotted(()) == ""


# --- hardening ----------------------------------------------------------------------------


def test_a_state_without_the_hardening_keys_means_the_hardened_defaults():
    container = DesiredState.from_dict(valid()).container
    assert container.cap_add == [] and container.writable == [] and container.allow_mounts == []
    assert container.read_only is True and container.pids_limit == 1024


@pytest.mark.parametrize("user", ["root", "0", "00", "0:0", "000:1000", "root:app"])
def test_root_in_any_spelling_is_refused_in_one_line(user: str):
    err = refused(with_value(("container", "user"), user))
    assert str(err) == (
        f"`container.user`: {user!r} is root; set container.allow_root: true if the model"
        " really needs it"
    )


@pytest.mark.parametrize("user", ["10001", "1000:0", "0100", "app", "root0"])
def test_users_that_are_not_root(user: str):
    assert DesiredState.from_dict(with_value(("container", "user"), user)).container.user == user


SENSITIVE_MOUNTS = [
    ("/", "'/' is /, a sensitive host path; name / in container.allow_mounts"),
    ("/etc", "'/etc' is /etc, a sensitive host path; name /etc in"),
    ("/etc/../etc", "'/etc/../etc' is /etc, a sensitive host path; name /etc in"),
    ("//etc", "'//etc' is /etc, a sensitive"),
    ("/etc/", "'/etc/' is /etc, a sensitive"),
    ("/srv/../etc/shadow", "is under /etc, a sensitive host path; name /etc/shadow in"),
    ("/var/run/docker.sock", "'/var/run/docker.sock' is the Docker socket (whoever reaches it"),
    ("/run/docker.sock", "'/run/docker.sock' is the Docker socket"),
    ("/run/containerd/containerd.sock", "is under /run, a sensitive"),
    ("/proc/1/root", "is under /proc, a sensitive"),
    ("/sys/fs/cgroup", "is under /sys, a sensitive"),
    ("/dev/sda", "is under /dev, a sensitive"),
    ("/boot", "is /boot, a sensitive"),
    ("/root/.ssh", "is under /root, a sensitive"),
    ("/var/lib/docker/volumes", "is under /var/lib/docker, a sensitive"),
    ("/var/lib/mlfleet/registry-credentials.json", "is under /var/lib/mlfleet, a sensitive"),
    ("/usr", "is /usr, a sensitive"),
]


@pytest.mark.parametrize(("source", "words"), SENSITIVE_MOUNTS)
def test_sensitive_host_paths_are_refused_as_mounts(source: str, words: str):
    err = refused(with_value(("container", "mounts", 0, "source"), source))
    assert err.path == ("container", "mounts", 0, "source")
    assert words in err.problem and "\n" not in str(err)
    assert err.problem.endswith("container.allow_mounts if the model really needs it")


@pytest.mark.parametrize("source", ["/srv/w", "/usr/share/models", "/var/lib/models", "/etcetera"])
def test_other_host_paths_mount(source: str):
    state = DesiredState.from_dict(with_value(("container", "mounts", 0, "source"), source))
    assert state.container.mounts[0].source == source


def test_a_sensitive_path_mounts_when_allow_mounts_names_it():
    data = with_value(("container", "mounts", 0, "source"), "/etc/ssl/certs")
    data["container"]["allow_mounts"] = ["/etc/ssl/certs/"]  # named in any spelling
    assert DesiredState.from_dict(data).container.mounts[0].source == "/etc/ssl/certs"
    data["container"]["mounts"].append({"source": "/etc/ssl/private", "target": "/k"})
    assert refused(data).path == ("container", "mounts", 1, "source")  # only what it names


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/etc/mlfleet/sentiment.env", True),
        ("/srv/secrets/model.env", True),
        ("/etc/mlfleet", False),
        ("/etc/default/sentiment", False),
        ("/etc/mlfleet/../passwd", False),
        ("/proc/self/environ", False),
        ("/root/.aws/credentials", False),
        ("/var/lib/mlfleet/registry-credentials.json", False),
    ],
)
def test_where_an_env_file_may_be(path: str, ok: bool):
    data = with_value(("container", "env_file"), path)
    if ok:
        assert DesiredState.from_dict(data).container.env_file == path
    else:
        err = refused(data)
        assert err.path == ("container", "env_file")
        assert "a sensitive host path; keep env files in /etc/mlfleet/" in err.problem


NEW_RULES = [
    (("container", "cap_add"), ["NET_BIND_SERVIC"],
     "'NET_BIND_SERVIC' is not a capability Docker knows; did you mean NET_BIND_SERVICE?"),
    (("container", "cap_add"), ["ALL"], "ALL would give back every capability"),
    (("container", "cap_add"), ["CHOWN", "CHOWN"], "CHOWN is already listed as cap_add[0]"),
    (("container", "cap_add"), "CHOWN", "expected a list of capabilities, got the string"),
    (("container", "pids_limit"), 0, "expected a whole number 1-4194304"),
    (("container", "pids_limit"), 2**40, "expected a whole number 1-4194304"),
    (("container", "pids_limit"), True, "expected a whole number 1-4194304"),
    (("container", "read_only"), "no", "expected true or false; got 'no'"),
    (("container", "allow_root"), 1, "expected true or false; got 1"),
    (("container", "writable"), ["/"], "is the root filesystem (set read_only: false)"),
    (("container", "writable"), ["/proc/x"], "'/proc/x' is /proc; a tmpfs cannot go there"),
    (("container", "writable"), ["cache"], "'cache' is not an absolute path"),
    (("container", "writable"), ["/data"], "/data is already the target of container.mounts[0]"),
    (("container", "writable"), ["/c", "/c/"], "/c is already listed as writable[0]"),
    (("container", "allow_mounts"), "/etc", "expected a list of absolute paths, got the string"),
    (("container", "mounts", 0, "source"), "/srv/a:/etc", "contains whitespace, a control"),
    (("container", "mounts", 0, "target"), "/data\n", "contains whitespace, a control"),
    (("container", "ports", 0, "host_ip"), "::1%eth0", "host_ip '::1%eth0' is not an IP"),
    (("container", "ports", 0, "host_ip"), 2130706433, "host_ip 2130706433 is not an IP"),
    (("container", "cpus"), 10**400, "expected a number above 0 (at most 65536)"),
    (("container", "env", "TOKEN"), "a\x00b", "contains a NUL character"),
    (("monitor_s",), 10**400, "expected a number >= 0 (seconds, at most 31622400: a year)"),
    (("health", "timing", "deadline_s"), 1e300, "expected a number >= 0 (seconds"),
    (("health", "http", 0, "body_contains"), 5, "expected a string; got the number 5"),
    (("health", "docker"), "yes", "expected true or false"),
    (("deployment",), "d\n1", "expected a string without control characters"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "words"), NEW_RULES)
def test_the_new_rules_name_the_key_path(path: Tuple[Any, ...], value: Any, words: str):
    err = refused(with_value(path, value))
    assert err.path[: len(path)] == path
    assert words in err.problem and "\n" not in str(err)


# --- names are matched whole ----------------------------------------------------------------

TRAILING_NEWLINES = [
    (("app",), "sentiment\n"),
    (("tag",), "v3\n"),
    (("container", "user"), "app\n"),
    (("variants", 1, "name"), "cpu\n"),
    (("variants", 0, "cuda"), "12.2\n"),
    (("variants", 0, "min_compute_capability"), "7.0\n"),
    (("variants", 0), {"name": "rocm", "gpu": "amd", "rocm": "6.0", "gfx": ["gfx90a\n"]}),
    (("variants", 0), {"name": "rocm", "gpu": "amd", "rocm": "6.0\n"}),
    (("variants", 0, "cuda"), "\u0661\u0662.2"),  # Arabic-Indic digits are not a version
]


@pytest.mark.parametrize(("path", "value"), TRAILING_NEWLINES)
def test_a_trailing_newline_is_not_part_of_a_name(path: Tuple[Any, ...], value: Any):
    err = refused(with_value(path, value))
    assert err.path[0] == path[0] and "\n" not in str(err)


def test_an_env_name_with_a_trailing_newline_is_quoted_in_one_line():
    data = copy.deepcopy(valid())
    data["container"]["env"]["LOG\n"] = "x"
    err = refused(data)
    assert str(err) == (
        "`container.env['LOG\\n']`: not a valid environment variable name (letters, digits, _)"
    )


# --- the shape ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "desired state must be a JSON object, got a list"),
        (dict(valid(), schema=True), "schema True; this agent reads schema 1"),
        (dict(valid(), container="ports"), "`container`: expected a mapping, got the string 'ports'"),
        (with_value(("container", "ports"), {"host": 1}), "`container.ports`: expected a list, got a mapping"),
        (with_value(("container", "ports", 0), {"hots": 1, "container": 2}),
         "`container.ports[0]`: unknown key 'hots' (did you mean 'host'?); known keys: container, host, protocol, host_ip"),
        (with_value(("container", "ports", 0), {"container": 2}), "`container.ports[0].host`: required"),
        ({k: v for k, v in valid().items() if k != "app"}, "`app`: required"),
        (with_value(("container", "env"), ["A=1"]), "`container.env`: expected a mapping, got a list"),
        (with_value(("health", "timing"), [1]), "`health.timing`: expected a mapping, got a list"),
    ],
)  # fmt: skip
def test_a_wrong_shape_is_named_with_its_path(data: Any, message: str):
    assert str(refused(data)) == message


def test_dotted_quotes_keys_that_are_not_plain_words():
    assert dotted(("container", "env", "A B")) == "container.env['A B']"
    assert dotted(("container", "env", "LOG_LEVEL")) == "container.env.LOG_LEVEL"


def test_a_stored_release_from_before_the_rules_is_still_read():
    """A release an older agent deployed (env file in /etc, the Docker socket mounted, uid
    00) keeps running and self-healing; only a new deployment is judged by the rules."""
    data = with_value(("container", "env_file"), "/etc/m.env")
    data["container"]["mounts"].append({"source": "/var/run/docker.sock", "target": "/s"})
    data["container"]["user"] = "00"
    assert refused(data).path == ("container", "env_file")
    stored = DesiredState.from_record(data)
    assert stored.container.env_file == "/etc/m.env" and stored.container.user == "00"
    assert stored.container.read_only is True  # hardened by the defaults all the same
    with pytest.raises(DesiredStateError):  # the shape and values are still checked
        DesiredState.from_record(with_value(("container", "ports", 0, "host"), 0))
