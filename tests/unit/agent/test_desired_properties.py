"""The desired-state reader cannot be broken by input: whatever JSON-like value arrives
(arbitrary values, mutated valid documents, wrong types, huge numbers, control characters,
trailing newlines), `DesiredState.from_dict` returns a valid state or raises its own
DesiredStateError with a one-line message; and a state it accepts always makes a hardened
Engine API body."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlfleet.agent.container_config import container_config, labels
from mlfleet.agent.desired import DesiredState, DesiredStateError
from tests.mutations import mutated_documents

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text with what breaks naive readers: control characters, newlines, NUL, non-ASCII digits.
TRICKY = st.sampled_from(
    ["", "\n", "\x00", "\x1b[2J", "root", "0", "00", "/etc", "//etc/", "/var/run/docker.sock",
     "sentiment\n", "v1\n", "\u0660", "../", "a:b", "NET_BIND_SERVICE", "ALL", "tcp", "udp"]
)  # fmt: skip
TEXT = st.one_of(TRICKY, st.text(max_size=12), TRICKY.map(lambda t: t + "\n"))
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.sampled_from([10**400, -(10**400), 0, -1, 65536, 4194305]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


def valid() -> Dict[str, Any]:
    return {
        "schema": 1,
        "app": "sentiment",
        "deployment": "d-1",
        "tag": "v3",
        "variants": [
            {"name": "cuda12", "gpu": "nvidia", "cuda": "12.2", "image": "r:5000/m:v3-cuda12"},
            {"name": "cpu", "image": "r:5000/m:v3-cpu"},
        ],
        "container": {
            "ports": [{"container": 8080, "host": 8080, "host_ip": "127.0.0.1"}],
            "env": {"LOG_LEVEL": "info"},
            "env_file": "/etc/mlfleet/m.env",
            "mounts": [{"source": "/srv/w", "target": "/data"}],
            "user": "10001:10001",
            "memory_mib": 512,
            "cpus": 1.5,
            "command": ["python3", "/app/server.py"],
            "cap_add": ["NET_BIND_SERVICE"],
            "read_only": True,
            "writable": ["/var/cache/model"],
            "pids_limit": 256,
            "allow_mounts": ["/etc/ssl/certs"],
        },
        "health": {
            "http": [{"port": 8080, "path": "/health", "status": 200}],
            "tcp": [{"port": 8080}],
            "exec": [{"command": ["true"]}],
            "inference": [{"port": 8080, "path": "/p", "request": {}, "expect": {}}],
            "timing": {"start_period_s": 0, "interval_s": 0.5},
        },
        "monitor_s": 0,
        "retain": 2,
    }


def judged(data: Any) -> None:
    """The property: a valid state (that makes a hardened body), or one line of our own."""
    try:
        state = DesiredState.from_dict(copy.deepcopy(data))
    except DesiredStateError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message
        if exc.path[:1] != ("variants",):  # agent/variants.py quotes a bad value whole
            assert len(message) < 1000, message
        return
    assert DesiredState.from_dict(state.to_dict()) == state  # what it accepts, it reads back
    body = container_config(
        state.container, "r/m:v1", state.container.user, {}, labels("a", 1, "t", "v", "d"), {}
    )
    json.dumps(body, allow_nan=False)  # the engine gets JSON it can read
    host = body["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert 1 <= host["PidsLimit"] <= 4194304 and "Privileged" not in host


@SETTINGS
@given(JSON)
def test_any_json_value(data: Any) -> None:
    judged(data)


@SETTINGS
@given(st.dictionaries(st.sampled_from([*valid(), "surprise"]), JSON, max_size=6))
def test_documents_of_the_right_keys_with_any_values(data: Dict[str, Any]) -> None:
    judged(dict(data, schema=1))


@SETTINGS
@given(mutated_documents(valid, JSON, TEXT))
def test_mutated_valid_documents(data: Dict[str, Any]) -> None:
    judged(data)


def test_the_unmutated_document_is_valid() -> None:
    state = DesiredState.from_dict(valid())
    assert state.container.cap_add == ["NET_BIND_SERVICE"]
