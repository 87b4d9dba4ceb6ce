"""The shared YAML loader: whatever the text, a value or one ConfigError line naming the
file:line, never a traceback and never unbounded work (depth, aliases, huge numbers)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from mlfleet.controller import yamlsource
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.yamlsource import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    load_yaml_file,
    load_yaml_text,
    plain,
    shown,
)
from tests.unit.controller.bounded import CAP_SECONDS, within


@pytest.fixture(autouse=True, params=["libyaml", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case with both parsers: libyaml's (when PyYAML has it) and PyYAML's own."""
    if request.param == "libyaml" and not yamlsource.LIBYAML:
        pytest.skip("PyYAML without libyaml")
    monkeypatch.setattr(yamlsource, "LIBYAML", request.param == "libyaml")
    return str(request.param)


def refusal(text: str, source: str = "f.yml") -> str:
    with pytest.raises(ConfigError) as info:
        load_yaml_text(text, source)
    line = str(info.value)
    assert len(line.splitlines()) == 1 and line.isprintable(), line
    return line


def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_values_know_their_lines():
    doc = load_yaml_text("a: 1\nb:\n  - x\n  - y\n", "f.yml")
    assert plain(doc) == {"a": 1, "b": ["x", "y"]}
    assert doc.where("b") == "f.yml:2" and doc["b"].where(1) == "f.yml:4"


def test_a_duplicate_key_is_refused_but_a_merged_key_may_be_overridden():
    assert refusal("a: 1\nb: 2\na: 3\n") == (
        "f.yml:3: duplicate key 'a' (first at line 1) (each key may appear once)"
    )
    doc = load_yaml_text("base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  x: 3\n", "f.yml")
    assert plain(doc["mine"]) == {"x": 3, "y": 2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: !!int abc\n", "f.yml:1: 'abc' is not a valid whole number (!!int)"),
        ("a: !!int 0x\n", "f.yml:1: '0x' is not a valid whole number (!!int)"),
        ("a: !!float pi\n", "f.yml:1: 'pi' is not a valid number (!!float)"),
        ("a: !!bool maybe\n", "f.yml:1: 'maybe' is not a valid boolean (!!bool)"),
        ("a: !!timestamp soon\n", "f.yml:1: 'soon' is not a valid date or time (!!timestamp)"),
        ("a: !!timestamp 2024-13-45\n", "f.yml:1: '2024-13-45' is not a valid date or time"),
        ("\n\nb: !!int 12abc\n", "f.yml:3: '12abc' is not a valid whole number"),
    ],
)
def test_a_value_its_tag_cannot_build_names_the_line(text: str, expected: str):
    assert refusal(text).startswith(expected)


def test_a_list_or_mapping_as_a_key_is_refused():
    assert refusal("x: 1\n? [a]\n: 1\n").startswith(
        "f.yml:2: a key must be a name or a number, not a list"
    )
    assert "not a mapping" in refusal("? {a: 1}\n: 1\n")
    assert "not a set" in refusal("? !!set {a}\n: 1\n")


def test_a_control_character_in_the_text_is_refused_and_shown_escaped():
    line = refusal("é: 1\nb: x\x07y\n")
    assert line.startswith("f.yml:2: not valid YAML: the character \\x07 (#x0007) is not allowed")


def test_control_characters_written_escaped_are_read_and_quoted_back_escaped():
    doc = load_yaml_text('a: "x\\x07\\u2028\\e[0my"\n', "f.yml")
    assert doc["a"] == "x\x07\u2028\x1b[0my"
    assert shown(doc["a"]) == "'x\\x07\\u2028\\x1b[0my'"
    line = refusal('"k\\n\\x1b[31m": 1\n"k\\n\\x1b[31m": 2\n')
    assert "duplicate key 'k\\n\\x1b[31m'" in line


def test_a_source_name_with_control_characters_is_printed_escaped():
    assert refusal("a: [\n", source="in\nv\x1b.yml").startswith("in\\nv\\x1b.yml:")


def test_nesting_is_limited():
    ok = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"  # and the mapping
    assert load_yaml_text(ok, "f.yml") is not None
    assert "nested more than" in refusal("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n")
    deep = "a: " + "[" * 400 + "]" * 400 + "\n"
    assert refusal(deep) == (
        f"f.yml:1: nested more than {MAX_DEPTH} levels deep "
        "(flatten the structure; no mlfleet file needs that depth)"
    )
    block = "".join(" " * i + f"k{i}:\n" for i in range(400))
    assert refusal(block).startswith(f"f.yml:{MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels")


def test_a_billion_laughs_is_refused_at_the_alias_at_once():
    line = within(CAP_SECONDS, refusal, billion_laughs())
    assert line.startswith(
        f"f.yml:6: aliases repeat more than {MAX_ALIAS_NODES:,} nodes in this file, "
        "reached at alias *a4 (111,111 nodes)"
    )


def test_a_merge_key_bomb_is_refused_too():
    lines = ["x0: &x0 {" + ", ".join(f"k{j}: {j}" for j in range(10)) + "}"]
    lines += [f"x{i}: &x{i}\n  <<: [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 12)]
    assert "aliases repeat more than" in within(CAP_SECONDS, refusal, "\n".join(lines) + "\n")


def test_modest_aliases_are_read():
    doc = load_yaml_text(billion_laughs(levels=4), "f.yml")  # 10^5 repeated: fine
    assert len(plain(doc)["a4"]) == 10


def test_an_alias_inside_its_own_anchor_is_a_loop():
    assert refusal("a: &x\n  b: *x\n") == (
        "f.yml:2: alias *x is inside the node it names (a loop) "
        "(an alias can only repeat a node that is complete)"
    )


def test_huge_numbers_are_refused_without_being_read():
    assert refusal("a: " + "9" * 5000 + "\n").startswith(
        "f.yml:1: a number written with 5,000 characters (at most 1,000)"
    )
    sexagesimal = "a: " + ":".join(["1"] + ["00"] * 400) + "\n"  # YAML 1.1 base 60: 60**400
    assert "a number written with 1,201 characters" in refusal(sexagesimal)


def test_dates_and_other_yaml_types_still_load():
    doc = load_yaml_text("d: 2024-01-02\nb: !!binary aGk=\nn: 1:30\n", "f.yml")
    assert doc == {"d": datetime.date(2024, 1, 2), "b": b"hi", "n": 90}


def test_syntax_errors_are_one_line_with_the_line(tmp_path: Path):
    assert refusal("a: 1\nb: [\n").startswith("f.yml:3: not valid YAML:")
    assert refusal("a: 1\n---\nb: 2\n").startswith("f.yml:2: not valid YAML:")
    assert refusal("a: *nothing\n").startswith("f.yml:1: not valid YAML: found undefined alias")


def test_unreadable_files(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"missing.yml: cannot read: No such file"):
        load_yaml_file(tmp_path / "missing.yml")
    latin = tmp_path / "latin.yml"
    latin.write_bytes(b"a: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_file(latin)
    assert str(info.value) == (
        f"{latin}: not UTF-8 text (byte 0xe9 at offset 6) (save the file as UTF-8)"
    )


def test_shown_keeps_messages_short_and_printable():
    assert shown("x" * 1000) == "'" + "x" * 60 + "'... (1,000 characters)"
    assert shown(10**5000) == "a number of about 5,001 digits"
    assert shown([1, 2, 3]) == "a list of 3 items"
