"""Inline env values at rest: sealed with the host's key (pure), read back from a container's
Config.Env only when every value matches (pure, and as a property), and the key file made
once, private, and refused when it is not a key."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlfleet.agent.sealed_env import (
    KEY_BYTES,
    SealKeyError,
    load_key,
    matches,
    recover_env,
    seal,
    seal_spec,
)

KEY = b"k" * KEY_BYTES
OTHER_KEY = b"o" * KEY_BYTES


def test_a_sealed_value_is_a_keyed_hash_that_shows_nothing_of_the_value() -> None:
    sealed = seal(KEY, "API_TOKEN", "s3cret-value")
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{64}", sealed)
    assert "s3cret" not in sealed
    assert seal(KEY, "API_TOKEN", "s3cret-value") == sealed  # "unchanged" can be told
    assert seal(OTHER_KEY, "API_TOKEN", "s3cret-value") != sealed  # another host's tells nothing
    assert seal(KEY, "OTHER_NAME", "s3cret-value") != sealed  # one secret, two names: unlike
    assert matches(KEY, "API_TOKEN", "s3cret-value", sealed)
    assert not matches(KEY, "API_TOKEN", "s3cret-valuE", sealed)


def test_seal_spec_seals_only_the_inline_env_and_leaves_its_argument_alone() -> None:
    spec: Dict[str, Any] = {
        "app": "a",
        "container": {"env": {"A": "1", "B": "two"}, "env_file": "/etc/x"},
    }
    sealed = seal_spec(spec, KEY)
    assert sealed == {
        "app": "a",
        "container": {"env": {"A": seal(KEY, "A", "1"), "B": seal(KEY, "B", "two")},
                      "env_file": "/etc/x"},
    }  # fmt: skip
    assert spec["container"]["env"] == {"A": "1", "B": "two"}
    assert seal_spec({"app": "a"}, KEY) == {"app": "a"}


def _sealed(env: Dict[str, str]) -> Dict[str, str]:
    return {name: seal(KEY, name, value) for name, value in env.items()}


def test_recover_env_reads_the_values_back_from_a_container_that_holds_them_all() -> None:
    recorded = _sealed({"TOKEN": "s3cret", "MODE": "fast=yes"})
    engine_env = ["PATH=/usr/bin", "TOKEN=s3cret", "MODE=fast=yes", "LANG"]
    assert recover_env(KEY, recorded, engine_env, {}) == {"TOKEN": "s3cret", "MODE": "fast=yes"}
    assert recover_env(KEY, recorded, ["TOKEN=s3cret", "MODE=slow"], {}) is None
    assert recover_env(KEY, recorded, ["TOKEN=s3cret"], {}) is None
    assert recover_env(OTHER_KEY, recorded, engine_env, {}) is None
    assert recover_env(KEY, {}, [], {}) == {}


def test_a_name_the_env_file_sets_needs_no_value_of_its_own() -> None:
    """In the container the env file's value wins (container_config), so the inline one
    the engine never kept is not needed."""
    recorded = _sealed({"TOKEN": "inline", "MODE": "fast"})
    engine_env = ["TOKEN=from-file", "MODE=fast"]
    assert recover_env(KEY, recorded, engine_env, {"TOKEN": "from-file"}) == {
        "TOKEN": "from-file",
        "MODE": "fast",
    }


NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
ENVS = st.dictionaries(NAMES, st.text(max_size=30), max_size=6)


@settings(max_examples=150, deadline=1000)
@given(env=ENVS, noise=ENVS)
def test_what_a_container_holds_comes_back_exactly_and_nothing_else(
    env: Dict[str, str], noise: Dict[str, str]
) -> None:
    recorded = _sealed(env)
    held = {**noise, **env}
    engine_env = [f"{name}={value}" for name, value in held.items()]
    assert recover_env(KEY, recorded, engine_env, {}) == env
    for name in env:
        changed = [f"{n}={v}" + ("x" if n == name else "") for n, v in held.items()]
        assert recover_env(KEY, recorded, changed, {}) is None


def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    agent_dir = tmp_path / "agent"
    key = load_key(str(agent_dir))
    path = agent_dir / "env.key"
    assert len(key) == KEY_BYTES and path.read_bytes() == key
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(agent_dir.stat().st_mode & 0o777) == "0o700"
    assert load_key(str(agent_dir)) == key
    assert sorted(os.listdir(agent_dir)) == ["env.key"]  # no temporary file left


def test_a_key_left_open_to_others_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "env.key"
    path.write_bytes(KEY)
    path.chmod(0o644)
    assert load_key(str(tmp_path)) == KEY
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_file_that_is_not_a_key_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "env.key").write_text("hello\n")
    with pytest.raises(SealKeyError) as caught:
        load_key(str(tmp_path))
    assert str(caught.value) == (
        f"{tmp_path}/env.key: not the agent's key for env values (a file of 32 bytes); move it"
        " away and the agent makes a new one (releases recorded before then cannot be"
        " recreated without a deployment)"
    )
