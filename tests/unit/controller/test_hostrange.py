from __future__ import annotations

import pytest

from mlfleet.controller.hostrange import expand_host_pattern


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
    with pytest.raises(ValueError):
        expand_host_pattern(pattern)
