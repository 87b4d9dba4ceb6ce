from __future__ import annotations

import pytest

from mlfleet.controller.hostrange import (
    MAX_RANGE_HOSTS,
    HostRangeError,
    HostRangeTooLarge,
    count_host_pattern,
    expand_host_pattern,
)
from tests.unit.controller.bounded import CAP_SECONDS, within


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("web", ["web"]),
        ("edge[01:03]", ["edge01", "edge02", "edge03"]),
        ("node-[a:c]", ["node-a", "node-b", "node-c"]),
        ("n[0:6:3]", ["n0", "n3", "n6"]),
        ("r[1:2]-c[a:b]", ["r1-ca", "r1-cb", "r2-ca", "r2-cb"]),
        ("cpu[8:10]", ["cpu8", "cpu9", "cpu10"]),
    ],
)
def test_expands_ansible_ranges(pattern: str, expected: list):
    assert expand_host_pattern(pattern) == expected


@pytest.mark.parametrize("pattern", ["e[3:1]", "e[a:3]", "e[1:2", "e[aa:bb]", "e[1:5:0]"])
def test_rejects_malformed_ranges(pattern: str):
    with pytest.raises(HostRangeError):
        expand_host_pattern(pattern)


def test_letters_run_as_in_ansible_lower_then_upper_case():
    assert expand_host_pattern("n[y:B]") == ["ny", "nz", "nA", "nB"]
    with pytest.raises(HostRangeError, match=r"range start A is after its end z"):
        expand_host_pattern("n[A:z]")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("h[0:9999999]", "host range 'h[0:9999999]' expands to 10,000,000 hosts; the limit is 100,000"),
        ("h[0:99999999]", "host range 'h[0:99999999]' expands to 100,000,000 hosts; the limit is 100,000"),
        ("r[1:100]-c[1:1001]", "host range 'r[1:100]-c[1:1001]' expands to 100,100 hosts; the limit is 100,000"),
        ("h[0:9]" * 40, "expands to more than 1,000,000,000,000,000 hosts; the limit is 100,000"),
    ],
)  # fmt: skip
def test_a_range_over_the_limit_is_refused_before_any_name_is_built(pattern: str, message: str):
    with pytest.raises(HostRangeTooLarge) as info:
        within(CAP_SECONDS, expand_host_pattern, pattern)
    assert message in str(info.value) and info.value.limit == MAX_RANGE_HOSTS


def test_the_limit_itself_is_accepted_and_counting_needs_no_expansion():
    assert len(expand_host_pattern("h[1:100000]")) == MAX_RANGE_HOSTS
    assert count_host_pattern("h[0:99999999][a:c]") == 300_000_000
    assert count_host_pattern("web") == 1
    with pytest.raises(HostRangeTooLarge, match="expands to 4 hosts; the limit is 3"):
        expand_host_pattern("h[1:4]", limit=3)


def test_many_ranges_in_one_name_expand_without_recursion():
    assert expand_host_pattern("x" + "[1:1]" * 2000) == ["x" + "1" * 2000]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("h[0:" + "9" * 200 + "]", "has more than 100 digits"),
        ("h[²:³]", "must be two numbers or two single letters"),
        ("h[1:3]x[", "malformed host range in 'h[1:3]x['"),
        ("h\x1b[31m", "malformed host range in 'h\\x1b[31m'"),
    ],
)
def test_odd_ranges_are_one_clear_refusal(pattern: str, message: str):
    with pytest.raises(HostRangeError) as info:
        expand_host_pattern(pattern)
    assert message in str(info.value) and str(info.value).isprintable()
