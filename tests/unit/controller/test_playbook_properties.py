"""The playbook loader cannot be broken by input: YAML written to a file (a valid playbook
with values replaced, removed or suffixed with a newline, keys added, or text that is
hardly YAML at all) loads or is refused with a ConfigError of one line, never any other
exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlfleet.controller.errors import ConfigError
from mlfleet.controller.playbook import hardening_lines, load_playbook
from tests.mutations import mutated_documents

# Each example parses a playbook of some 60 lines (pure-Python YAML, ~5 ms): 100 keep the
# property tests to a second or two each.
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRICKY = st.sampled_from(
    ["", "\n", "\x00", "\x1b]0;title\x07", "root", "00", "0:0", "/etc/../etc", "//etc/",
     "/var/run/docker.sock", "8080:8080\n", "{{ x }}", "{{ x | upper }}", "{tag}", "5s",
     "512m", "25%", "per-variant", "cap_net_raw", "ALL", "127.0.0.1", "::1%eth0", "[/x]"]
)  # fmt: skip
TEXT = st.one_of(TRICKY, st.text(max_size=12), TRICKY.map(lambda t: t + "\n"))
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, 2**63, 0, -1, 65536]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=10,
)

VALID: Dict[str, Any] = {
    "app": "sentiment",
    "image": "{{ mlfleet_registry }}/team/sentiment",
    "tag_template": "{tag}-{variant}",
    "variants": [
        {"name": "cuda12", "gpu": "nvidia", "cuda": "12.2"},
        {"name": "cpu", "image": "reg/m-cpu:{tag}"},
    ],
    "container": {
        "ports": ["8080:8080", {"host": 9000, "container": 9000, "host_ip": "127.0.0.1"}],
        "env": {"LOG_LEVEL": "info"},
        "env_file": "/etc/mlfleet/m.env",
        "mounts": ["{{ data }}:/data:ro", {"source": "/etc/ssl/certs", "target": "/certs"}],
        "user": "10001",
        "memory": "1g",
        "cpus": 2,
        "command": ["python3", "/app/server.py"],
        "cap_add": ["NET_BIND_SERVICE"],
        "read_only": True,
        "writable": ["/var/cache/model"],
        "pids_limit": 256,
        "bind": "127.0.0.1",
        "allow_mounts": ["/etc/ssl/certs"],
    },
    "health": {
        "http": [{"port": 8080, "path": "/health"}],
        "inference": [{"port": 8080, "path": "/p", "request": {"x": 1}, "expect": {"y": 2}}],
        "start_period": "3s",
        "retries": 3,
    },
    "monitor": "10s",
    "retain": 3,
    "grace": "10m",
    "strategy": "auto",
    "rollout": {"canary": 1, "batch": "25%", "max_fail": 0, "on_failure": "pause"},
}

MINIMAL = "app: m\nimage: reg/m\nvariants:\n  - {name: cpu}\n"  # what a test adds is line 5

MUTATED = mutated_documents(lambda: copy.deepcopy(VALID), VALUES, TEXT).map(
    lambda doc: yaml.safe_dump(doc, allow_unicode=False)
)  # a valid playbook with one to three values changed, as YAML text


# Text that is hardly YAML: fragments of playbooks, indentation, flow syntax, anchors, tags.
FRAGMENTS = st.sampled_from(
    ["app: m\n", "image: reg/m\n", "variants:\n", "  - {name: cpu}\n", "container:\n",
     "  ports: ['8080:8080']\n", "  cap_add: [NET_RAW]\n", "  user: 00\n", "  bind: x\n",
     "health: {http: [{port: 1}]}\n", "- a\n", ": b\n", "? [a]\n: 1\n", "&a x\n", "*a\n",
     "!!int z\n", "!!timestamp 2024-13-45\n", "{", "]", "'", '"', "\t", "\x07", "#c\n",
     "  ", "\n", "---\n", "...\n", "key: [1, {a: }]\n"]
)  # fmt: skip
ROUGH_TEXT = st.one_of(
    st.lists(FRAGMENTS, max_size=12).map("".join),
    st.text(max_size=60),
)


@pytest.fixture(scope="module")
def playbook_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("playbooks") / "p.yml"


def judged(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        playbook = load_playbook(path)
    except ConfigError as exc:
        line = str(exc)
        assert line and "\n" not in line and "\r" not in line, line
        return
    for line in hardening_lines(playbook):
        assert "\n" not in line


@SETTINGS
@given(text=MUTATED)
def test_mutated_valid_playbooks(playbook_file: Path, text: str) -> None:
    judged(playbook_file, text)


@SETTINGS
@given(text=ROUGH_TEXT)
def test_text_that_is_hardly_yaml(playbook_file: Path, text: str) -> None:
    judged(playbook_file, text)


def test_the_unmutated_playbook_loads(playbook_file: Path) -> None:
    playbook_file.write_text(yaml.safe_dump(VALID))
    assert load_playbook(playbook_file).container.cap_add == ["NET_BIND_SERVICE"]


def refused_in_one_line(path: Path, text: str) -> str:
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_playbook(path)
    line = str(info.value)
    assert "\n" not in line and "\r" not in line, line
    return line


@pytest.mark.parametrize(
    ("tail", "key"),
    [("container:\n  cpus: 1" + "0" * 400 + "\n", "6: `container.cpus"),
     ("monitor: 1" + "0" * 400 + "\n", "5: `monitor")],
)  # fmt: skip
def test_a_number_past_a_floats_range(playbook_file: Path, tail: str, key: str) -> None:
    line = refused_in_one_line(playbook_file, MINIMAL + tail)
    assert f"p.yml:{key}`" in line


def test_a_control_character_in_a_request_key(playbook_file: Path) -> None:
    line = refused_in_one_line(playbook_file, MINIMAL + (
        'container: {ports: ["80:80"]}\n'
        'health:\n  inference:\n    - {port: 80, path: /p, expect: {}, request: {"a\\n": .inf}}\n'
    ))  # fmt: skip
    assert "p.yml:8: " in line and "inf is not a JSON number" in line


@pytest.mark.parametrize("value", ["[1]", "{a: 1}", "null", "true"])
def test_an_env_name_with_a_newline_stays_on_one_line(playbook_file: Path, value: str) -> None:
    text = MINIMAL + f'container:\n  env:\n    "A\\nB": {value}\n'
    assert "p.yml:7: `container.env['A\\nB']`" in refused_in_one_line(playbook_file, text)
