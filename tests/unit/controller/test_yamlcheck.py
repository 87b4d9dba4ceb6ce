"""Typed readers of YAML values: a bad value is one printable line naming its path and
file:line, whatever the value (huge numbers, control characters, a trailing newline)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from mlfleet.controller import yamlcheck as check
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.yamlsource import load_yaml_text


def refusal(read: Callable[..., Any], value: Any) -> str:
    with pytest.raises(ConfigError) as info:
        read(value, "p.yml:4", "health.timeout")
    line = str(info.value)
    assert len(line.splitlines()) == 1 and line.isprintable(), line
    assert line.startswith("p.yml:4: `health.timeout`: ")
    return line


@pytest.mark.parametrize("read", [check.real, check.duration])
def test_a_whole_number_past_a_floats_range_is_refused(read: Callable[..., Any]):
    assert "a number of about 401 digits" in refusal(read, 10**400)


def test_a_duration_too_long_for_a_float_is_refused():
    assert "is longer than any duration" in refusal(check.duration, "1" + "0" * 400 + "s")


@pytest.mark.parametrize("value", ["5s\n", "1m\n30s", "\u0665s", "5 s", ""])
def test_a_duration_is_the_whole_text_in_ascii_digits(value: str):
    assert "is not a duration" in refusal(check.duration, value)


@pytest.mark.parametrize("value", ["512m\n", "\u0665g", "1" + "0" * 400 + "g"])
def test_a_size_is_the_whole_text_and_finite(value: str):
    assert "MiB" in refusal(check.size_mib, value)


def test_the_good_forms_still_read():
    assert check.duration("1m30s", "w", "p") == 90.0
    assert check.size_mib("1.5g", "w", "p") == 1536
    assert check.real(2**70, "w", "p") == float(2**70)


def test_a_json_key_with_control_characters_is_escaped_in_the_path():
    doc = load_yaml_text('request:\n  "a\\n\\x1b[2J": .inf\n', "p.yml")
    with pytest.raises(ConfigError) as info:
        check.json_data(doc["request"], doc.where("request"), "health.inference[0].request")
    assert str(info.value) == (
        "p.yml:2: `health.inference[0].request.a\\n\\x1b[2J`: inf is not a JSON number"
    )


def test_quoted_values_are_cut_short():
    line = refusal(check.boolean, "x" * 5000)
    assert "(5,000 characters)" in line and len(line) < 200
