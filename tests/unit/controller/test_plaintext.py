"""Text from hosts shown on the operator's terminal: every control character escaped
visibly, nothing else changed."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from mlfleet.controller.plaintext import printable


def test_terminal_escapes_are_shown_not_sent() -> None:
    body = "oops\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f"
    assert printable(body) == "oops\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x7f"


def test_one_line_output_escapes_line_breaks_and_a_block_keeps_them() -> None:
    text = "line 1\r\n\tline 2\x1b[A"
    assert printable(text) == "line 1\\r\\n\\tline 2\\x1b[A"
    assert printable(text, multiline=True) == "line 1\\r\n\tline 2\\x1b[A"


def test_markup_unicode_and_bidi() -> None:
    # Markup is not this function's business (the CLI never reads markup): kept as is.
    assert printable("[/x] [bold]x[/bold] héllo ✓ 模型") == "[/x] [bold]x[/bold] héllo ✓ 模型"
    # Text that reads otherwise than it is (Trojan Source) and separators are shown.
    assert printable("a\u202eb\u2066c\u2028d") == "a\\u202eb\\u2066c\\u2028d"
    # A lone surrogate (JSON "\ud800") would not even encode to UTF-8.
    assert printable("x\ud800").encode("utf-8") == b"x\\ud800"


@settings(max_examples=300, deadline=1000)
@given(st.text(alphabet=st.characters(exclude_categories=[]), max_size=60))  # surrogates too
def test_the_result_holds_no_control_character_and_encodes(text: str) -> None:
    for multiline in (False, True):
        shown = printable(text, multiline=multiline)
        shown.encode("utf-8")  # no surrogate left
        for char in shown:
            kind = unicodedata.category(char)
            assert kind not in ("Cc", "Cs", "Zl", "Zp") or (multiline and char in "\n\t"), (
                text,
                shown,
            )
        if multiline:
            assert shown.count("\n") == text.count("\n")
        else:
            assert "\n" not in shown
