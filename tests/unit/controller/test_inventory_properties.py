"""The inventory loader and `--limit` cannot be broken by input: YAML text generated from
random group trees (tricky names, ranges, ports, settings and values), then mutated as text
(tags, anchors and aliases, control characters, complex keys, deep nesting, alias bombs),
loads or is refused with one printable ConfigError line, never another exception, and
answers within the safety cap. `--limit` patterns over a small inventory likewise."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hosts import Host
from mlfleet.controller.inventory import Inventory, load_inventory, parse_inventory
from mlfleet.controller.yamlsource import MAX_ALIAS_NODES, MAX_DEPTH, load_yaml_text
from tests.unit.controller.bounded import CAP_SECONDS, within

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NAMES = st.one_of(
    st.sampled_from(
        ["all", "ungrouped", "web", "web1", "gpu", "edge[01:03]", "n[a:c]", "h[0:99999999]",
         "h[0:9][0:9][0:9][0:9][0:9][0:9]", "h[a:Z:5]", "h[3:1]", "h[1:2", "x]", "w[1:3:0]",
         "web1:2222", "web1:99999", "[2001:db8::1]:22", "2001:db8::5", "", " ", "-oProxy",
         "a\nb", "a\x00b", "\x1b[2J", "a\u2028b", "a\ud800", "~", "*", "1", "1.5", "{{ x }}",
         "é", "a" * 300]
    ),
    st.text(alphabet="abgw01-_.[]:", min_size=1, max_size=8),
    st.integers(min_value=-5, max_value=10**30),
    st.booleans(),
    st.none(),
)  # fmt: skip
VAR_NAMES = st.sampled_from(
    ["ansible_host", "ansible_port", "ansible_user", "ansible_become", "ansible_ssh_args",
     "ansible_python_interpreter", "ansible_group_priority", "ansible_private_key_file",
     "mlfleet_registry", "mlfleet_registry_scheme", "mlfleet_transfer", "mlfleet_agent_dir",
     "mlfleet_docker_host", "mlfleet_jump_host", "mlfleet_tick_interval", "mlfleet_bwlimit_kbit",
     "mlfleet_relay_registry", "mlfleet_known_hosts", "tier", "", "x y", "a\x07"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["https", "http", "HTTP", "ftp", "pull", "relay", "cache", "reg:5000", "https://reg:5000",
         "10.0.0.1", "-oProxyCommand=x", "-J ops@bastion", "-o ProxyCommand=nc", "ops@b:22",
         "/opt/x\n* * * * * id", "/var/lib/mlfleet", "relative/path", "unix:///x", "{{ x }}",
         "yes", "maybe", "22", "9" * 40, "", " ", "\x00", "\u2028", "de ploy", "a/b"]
    ),
    st.text(max_size=10),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
    max_leaves=6,
)
HOSTVARS = st.one_of(st.none(), st.dictionaries(VAR_NAMES, VALUES, max_size=4), SCALARS)
GROUP_BODY: st.SearchStrategy[Any] = st.deferred(
    lambda: st.one_of(
        st.none(),
        SCALARS,
        st.lists(NAMES, max_size=2),
        st.fixed_dictionaries(
            {},
            optional={
                "hosts": st.one_of(st.dictionaries(NAMES, HOSTVARS, max_size=4), NAMES),
                "children": st.one_of(st.dictionaries(NAMES, GROUP_BODY, max_size=3), NAMES),
                "vars": st.one_of(st.dictionaries(VAR_NAMES, VALUES, max_size=4), SCALARS),
                "bogus": SCALARS,
            },
        ),
    )
)
DOCUMENTS = st.one_of(
    st.dictionaries(NAMES, GROUP_BODY, min_size=1, max_size=3),
    st.builds(lambda body: {"all": body}, GROUP_BODY),
    VALUES,
)
SNIPPETS = st.sampled_from(
    ["!!int ", "!!int 0x", "!!timestamp ", "!!timestamp 2024-13-45", "!!bool ", "!!float ",
     "!!binary ", "!!set ", "!!omap ", "!!python/object:os.system ", "!custom ", "&a ", "*a",
     "*undefined", "<<: *a\n", "? [a]\n: 1\n", "? {a: 1}\n: 1\n", "\x07", "\x00", "\t", "\r",
     "\u2028", "\ufeff", "[" * 150, "]", "{", "'", '"\\ud800"', '"\\x1b[2J"', "---\n",
     "%YAML 1.1\n", "@", "`", "|\n", ">-\n", ":", "- ", "\n  ", "1:00:00:00:00", "9" * 2000]
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A generated inventory as YAML text, with a few snippets spliced in."""
    text = yaml.safe_dump(
        draw(DOCUMENTS), allow_unicode=True, default_flow_style=draw(st.booleans())
    )
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:at] + draw(SNIPPETS) + text[at:]
    return text


@st.composite
def alias_bombs(draw: st.DrawFn) -> Tuple[int, str]:
    """Anchors nested in anchors (a 'billion laughs', or a modest one) in a group's vars,
    and the number of nodes their aliases repeat."""
    levels = draw(st.integers(min_value=1, max_value=12))
    fan = draw(st.integers(min_value=1, max_value=12))
    merge = draw(st.booleans())
    lines = ["all:", "  hosts: {web1: }", "  vars:", "    a0: &a0 {k: v, j: w}"]
    size, repeated = 5, 0  # nodes of a0: the mapping, two keys, two values
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * fan)
        lines.append(f"    a{i}: &a{i} {{<<: [{refs}]}}" if merge else f"    a{i}: &a{i} [{refs}]")
        repeated += fan * size
        size = (3 if merge else 1) + fan * size
    return repeated, "\n".join(lines) + "\n"


@st.composite
def deep(draw: st.DrawFn) -> Tuple[str, int, str]:
    """Deep nesting, in flow style, block style or as a chain of `children:` (flat in YAML,
    deep in groups): (style, depth, text)."""
    depth = draw(st.integers(min_value=0, max_value=400))
    style = draw(st.sampled_from(["flow", "block", "chain"]))
    if style == "flow":  # the document's mapping, all's, vars', then the lists
        return style, depth + 3, "all:\n  vars:\n    x: " + "[" * depth + "]" * depth + "\n"
    if style == "block":
        text = "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"
        return style, depth, text
    depth //= 4  # a chain's cost is in its groups; 2,000 is the example below
    groups = "".join(f"g{i}:\n  children:\n    g{i + 1}:\n" for i in range(depth))
    return style, depth, groups + f"g{depth}:\n  hosts:\n    h[1:3]:\n"


# One directory for every example's inventory file (a function-scoped tmp_path would be
# shared across examples anyway, and hypothesis says so).
WORKDIR = Path(tempfile.mkdtemp(prefix="mlfleet-inventory-properties-"))


@pytest.fixture(autouse=True, scope="module")
def _mlfleets_own_reader() -> Iterator[None]:
    """These properties are about mlfleet's own reader: text that is no YAML mapping is
    judged without running Ansible's ansible-inventory for each example (as where Ansible is
    not installed; reading INI through it is test_ansible_source's and the conformance
    suite's)."""
    saved = os.environ.get("MLFLEET_ANSIBLE_INVENTORY")
    os.environ["MLFLEET_ANSIBLE_INVENTORY"] = ""
    yield
    if saved is None:
        del os.environ["MLFLEET_ANSIBLE_INVENTORY"]
    else:
        os.environ["MLFLEET_ANSIBLE_INVENTORY"] = saved


atexit.register(shutil.rmtree, WORKDIR, True)


def judged(text: str) -> Optional[Inventory]:
    """Write `text` as an inventory file (a lone surrogate as the invalid UTF-8 it becomes)
    and load it as `mlfleet` does: either it loads (and its hosts' settings read), or it is
    refused with one printable ConfigError line (then None). Anything else fails the test."""
    path = WORKDIR / "hosts.yml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        inventory = within(CAP_SECONDS, load_inventory, path)
    except ConfigError as err:
        line = str(err)
        assert line and len(line.splitlines()) == 1 and line.isprintable(), repr(line)
        return None
    assert isinstance(inventory, Inventory) and "all" in inventory.groups
    for host in inventory.hosts.values():
        assert host.name.isprintable() and host.groups[0] == "all"
        assert host.address and 1 <= host.port <= 65535 and host.user
        assert host.registry_scheme in ("https", "http") and host.transfer
    return inventory


@SETTINGS
@example("all:\n  hosts:\n    h[0:99999999]:\n")
@example("all:\n  hosts:\n    web1:\n  vars: {x: !!timestamp 2024-13-45, y: !!int 0x}\n")
@example("all:\n  hosts:\n    ? [a]\n    : 1\n")
@example('all:\n  hosts:\n    "\\x1b[2J\\u2028":\n')
@given(mutated())
def test_generated_inventories_load_or_are_refused_in_one_line(text: str) -> None:
    judged(text)


@SETTINGS
@given(alias_bombs())
def test_alias_bombs_are_refused_exactly_over_the_budget(bomb: Tuple[int, str]) -> None:
    repeated, text = bomb
    inventory = judged(text)
    assert (inventory is None) == (repeated > MAX_ALIAS_NODES), repeated
    if inventory is not None and repeated < 50_000:  # what `mlfleet inventory --json` walks
        assert json.dumps(inventory.to_dict(), default=str)


@SETTINGS
@example(
    (
        "chain",
        2000,
        "".join(f"g{i}:\n  children:\n    g{i + 1}:\n" for i in range(2000)) + "g2000:\n",
    )
)
@example(("flow", 403, "all:\n  vars:\n    x: " + "[" * 400 + "]" * 400 + "\n"))
@given(deep())
def test_nesting_is_refused_past_the_limit_and_chains_of_groups_resolve(
    case: Tuple[str, int, str],
) -> None:
    style, depth, text = case
    inventory = judged(text)
    if style == "chain":
        assert inventory is not None and len(inventory.groups) == depth + 3  # all, ungrouped
    elif depth > MAX_DEPTH:
        assert inventory is None
    elif style == "flow":  # within the limit: loads (block style is not an inventory)
        assert inventory is not None


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_loads_or_is_refused_in_one_line(text: str) -> None:
    judged(text)


# --- --limit --------------------------------------------------------------------------

SMALL = parse_inventory(
    load_yaml_text(
        "all:\n"
        "  hosts: {bastion: }\n"
        "  children:\n"
        "    gpu:\n"
        "      children:\n"
        "        nvidia: {hosts: {'edge[01:04]': }}\n"
        "        jetson: {hosts: {'node-[a:c]': , edge04: }}\n"
        "    cpu: {hosts: {edge-cpu: }}\n",
        "small.yml",
    ),
    "small.yml",
)
TERMS = st.one_of(
    st.sampled_from(
        ["all", "*", "gpu", "nvidia", "jetson", "cpu", "ungrouped", "edge01", "node-b",
         "edge[01:03]", "edge[01:09]", "edge[0:99999999]", "edge[a:Z]", "edge[", "edge]",
         "~edge0[12]", "~(a+)+$", "~(", "~[", "~" + "(" * 300, "edge-*", "e?ge*", "[!e]*",
         "2001:db8::1", "", " ", "\x1b[2J", "web\n", "é"]
    ),
    st.text(alphabet="aegdu01-*?[]~()+{}|^$\\:!&.", max_size=10),
)  # fmt: skip
PATTERNS = st.builds(
    lambda terms, seps, prefixes: "".join(p + t + s for t, s, p in zip(terms, seps, prefixes)),
    st.lists(TERMS, min_size=1, max_size=4),
    st.lists(st.sampled_from([",", ":", "", " "]), min_size=4, max_size=4),
    st.lists(st.sampled_from(["", "", "!", "&"]), min_size=4, max_size=4),
)


@SETTINGS
@example("edge[0:99999999]")
@example("~(a+)+$,gpu")
@example("!~" + "(" * 300)
@example("gpu:edge[01:03]:&nvidia:!edge02")
@given(st.one_of(PATTERNS, st.text(max_size=30)))
def test_limit_patterns_select_or_are_refused_in_one_line(pattern: str) -> None:
    try:
        hosts: List[Host] = within(CAP_SECONDS, SMALL.select, pattern)
    except ConfigError as err:
        line = str(err)
        assert line and len(line.splitlines()) == 1 and line.isprintable(), repr(line)
        return
    order: Dict[str, int] = {name: i for i, name in enumerate(SMALL.hosts)}
    assert [order[h.name] for h in hosts] == sorted(order[h.name] for h in hosts)
