"""Conformance with Ansible (issue 16): every inventory in tests/fixtures/ansible-inventories/
reads in mlfleet as ansible-inventory reads it, and every --limit pattern of its limits*.txt
selects what Ansible selects.

The expected answers were recorded once from ansible-core (`--list` and `--list-hosts`) by
scripts/record-ansible-conformance into expected/<case>.json, so these tests need no
Ansible. Compared: the set of hosts, each host's groups (`all` and `ungrouped` included), each
host's merged variables, and the set of groups. Values are compared as ansible-inventory
prints them in JSON (see `printed`). The last test, opt-in, re-records where
ansible-inventory is installed and checks that the stored answers are still Ansible's.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

import pytest

from mlfleet.controller.ansible_source import find_ansible_inventory
from mlfleet.controller.ansible_vault import VaultValue
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.inventory import Inventory, load_inventory
from mlfleet.controller.templating import UnsafeText
from tests.paths import FIXTURES, REPO

SUITE = FIXTURES / "ansible-inventories"
EXPECTED = SUITE / "expected"
RECORDER = REPO / "scripts" / "record-ansible-conformance"

# What mlfleet does not read as Ansible does (issue 16). Keys: a case, or `case pattern` for a
# --limit line. Each is a strict xfail: once fixed, its test fails until its entry here is
# removed. Measured against the committed controller at dc12010 (at ba4d60f, when issue 16
# was filed, 24 entries: group_vars/all precedence, Jinja in connection variables, !vault and
# !unsafe, a group named `hosts`, integer host names, INI files, subscripts, `b[1:5]`).
KNOWN_DIFFERENCES: Dict[str, str] = {}

MAX_LINES = 20  # differences shown per failure


@dataclass(frozen=True)
class Case:
    """One folder of the suite, as its SOURCE.txt describes it."""

    name: str
    inventory: Path
    format: str  # yaml | ini

    def expected(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = json.loads((EXPECTED / f"{self.name}.json").read_text("utf-8"))
        return doc


def read_case(source: Path) -> Case:
    fields: Dict[str, str] = {}
    for line in source.read_text("utf-8").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return Case(source.parent.name, source.parent / fields["inventory"], fields["format"])


def read_limits() -> List[Tuple[str, str]]:
    """(case, pattern) of every `case pattern` line of limits*.txt."""
    lines = []
    for path in sorted(SUITE.glob("limits*.txt")):
        for line in path.read_text("utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                case, _, pattern = line.strip().partition(" ")
                lines.append((case, pattern.strip()))
    return lines


CASES = {case.name: case for case in map(read_case, sorted(SUITE.glob("*/SOURCE.txt")))}
LIMITS = read_limits()


def params(keys: Sequence[Any], key: Callable[[Any], str]) -> List[Any]:
    """pytest params, the KNOWN_DIFFERENCES entries marked as strict xfails."""
    marked = []
    for item in keys:
        reason = KNOWN_DIFFERENCES.get(key(item))
        marks = [pytest.mark.xfail(strict=True, reason=f"issue 16: {reason}")] if reason else []
        marked.append(pytest.param(item, marks=marks, id=key(item)))
    return marked


def ansible_installed() -> bool:
    """Whether mlfleet finds an ansible-inventory to read INI files with (its own rule: PATH,
    beside this Python, or $MLFLEET_ANSIBLE_INVENTORY, empty meaning none)."""
    return find_ansible_inventory(os.environ) is not None


# --- comparing --------------------------------------------------------------------------------


def printed(value: Any) -> Any:
    """A value as ansible-inventory's JSON prints it: `!vault` as {"__ansible_vault":
    envelope}, `!unsafe` text as {"__ansible_unsafe": text}, a date or time in ISO format,
    keys as JSON keys ({1: x} -> {"1": x}); anything else unknown to JSON as str()."""

    def ansible_form(item: Any) -> Any:
        if isinstance(item, VaultValue):
            return item.to_json()
        if isinstance(item, UnsafeText):
            return {"__ansible_unsafe": str(item)}
        if isinstance(item, datetime.date):  # a datetime too
            return item.isoformat()
        if isinstance(item, dict):
            return {key: ansible_form(sub) for key, sub in item.items()}
        if isinstance(item, (list, tuple)):
            return [ansible_form(sub) for sub in item]
        return item

    return json.loads(json.dumps(ansible_form(value), default=str))


def short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def first_difference(
    left: Any, right: Any, path: str, sides: Tuple[str, str] = ("Ansible", "mlfleet")
) -> str:
    """Where two values first differ, e.g. `x.a[2]: Ansible 1, mlfleet 2`."""
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            if key not in right:
                return f"{path}.{key}: only {sides[0]} has it ({short(left[key])})"
            if key not in left:
                return f"{path}.{key}: only {sides[1]} has it ({short(right[key])})"
            if left[key] != right[key]:
                return first_difference(left[key], right[key], f"{path}.{key}", sides)
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for i, (one, other) in enumerate(zip(left, right)):
            if one != other:
                return first_difference(one, other, f"{path}[{i}]", sides)
    return f"{path}: {sides[0]} {short(left)}, {sides[1]} {short(right)}"


def names_only(ansible: Sequence[str], mlfleet: Sequence[str], what: str) -> List[str]:
    """`what`: the names only one side has, or nothing when the sets are equal."""
    lines = []
    for side, extra in (
        ("Ansible", set(ansible) - set(mlfleet)),
        ("mlfleet", set(mlfleet) - set(ansible)),
    ):
        if extra:
            lines.append(
                f"{what} only {side} has: {', '.join(sorted(extra)[:10])}"
                + (" ..." if len(extra) > 10 else "")
            )
    return lines


def differences(expected: Mapping[str, Any], inventory: Inventory) -> List[str]:
    """Every way mlfleet's reading differs from Ansible's, one short line each."""
    mlfleet = inventory.to_dict()
    lines = names_only(expected["hosts"], mlfleet["hosts"], "hosts")
    lines += names_only(expected["groups"], mlfleet["groups"], "groups")
    for host in sorted(set(expected["hosts"]) & set(mlfleet["hosts"])):
        theirs, ours = expected["hosts"][host], mlfleet["hosts"][host]
        lines += names_only(theirs["groups"], ours["groups"], f"host {host!r}: groups")
        ours_vars = printed(ours["vars"])
        for var in sorted(set(theirs["vars"]) | set(ours_vars)):
            one, other = only(theirs["vars"], var), only(ours_vars, var)
            if one != other:
                lines.append(f"host {host!r}: " + first_difference(one, other, "vars"))
    return lines


def only(mapping: Mapping[str, Any], key: str) -> Dict[str, Any]:
    return {key: mapping[key]} if key in mapping else {}


def expect(condition: bool, message: str) -> None:
    """Fail with `message` alone (a short diff), not with the test's source around it."""
    if not condition:
        pytest.fail(message, pytrace=False)


def report(case: Case, lines: List[str]) -> str:
    shown = lines[:MAX_LINES] + (
        [f"... and {len(lines) - MAX_LINES} more"] if len(lines) > MAX_LINES else []
    )
    return (
        f"{case.name} ({case.inventory.name}): mlfleet differs from ansible-inventory:\n  "
        + "\n  ".join(shown)
    )


# --- the suite --------------------------------------------------------------------------------


def test_every_case_is_recorded() -> None:
    recorded = {path.stem for path in EXPECTED.glob("*.json")}
    assert recorded == set(CASES), "run scripts/record-ansible-conformance after adding a case"
    for case, pattern in LIMITS:
        assert pattern in CASES[case].expected()["limits"], f"{case} {pattern!r} is not recorded"
    unknown = {key.partition(" ")[0] for key in KNOWN_DIFFERENCES} - set(CASES)
    assert not unknown, f"KNOWN_DIFFERENCES names no such case: {sorted(unknown)}"


@pytest.mark.parametrize(
    "case", params(sorted(CASES.values(), key=lambda c: c.name), key=lambda c: c.name)
)
def test_inventory_reads_as_ansible(case: Case) -> None:
    expected = case.expected()
    if case.format == "ini" and not ansible_installed():
        message = str(refusal(case, "without ansible-inventory, an INI file is refused"))
        expect("INI" in message, f"the refusal does not say the file is INI: {message}")
        return
    if "error" in expected:
        message = str(refusal(case, f"Ansible refuses it: {expected['error']}"))
        named = re.search(re.escape(case.inventory.name) + r":\d+", message)
        expect(bool(named), f"the refusal names no {case.inventory.name}:LINE: {message}")
        return
    lines = differences(expected, load(case))
    expect(not lines, report(case, lines))


def load(case: Case) -> Inventory:
    """mlfleet's reading of an inventory Ansible reads; a refusal fails in one line."""
    try:
        return load_inventory(case.inventory)
    except ConfigError as exc:
        refused = str(exc)  # failed outside the except: no chained traceback
    pytest.fail(f"{case.name}: Ansible reads it, mlfleet refuses it: {refused}", pytrace=False)


def refusal(case: Case, why: str) -> ConfigError:
    """mlfleet's refusal of an inventory it must refuse (`why`)."""
    try:
        load_inventory(case.inventory)
    except ConfigError as exc:
        return exc
    pytest.fail(f"{case.name}: {why}; mlfleet reads it", pytrace=False)


def limit_key(line: Tuple[str, str]) -> str:
    return f"{line[0]} {line[1]}"


def select(inventory: Inventory, pattern: str) -> Union[List[str], ConfigError]:
    """The names `--limit pattern` selects, or mlfleet's refusal."""
    try:
        return [host.name for host in inventory.select(pattern)]
    except ConfigError as exc:
        return exc


@pytest.mark.parametrize("line", params(LIMITS, key=limit_key))
def test_limit_selects_as_ansible(line: Tuple[str, str]) -> None:
    """`--limit PATTERN` selects the hosts `ansible --list-hosts PATTERN` lists, in its order.

    A term matching nothing is ignored with a warning, as Ansible does (`b[1:5],a1` selects
    a1: issue 16, item 5). Where the whole pattern selects nothing, a --limit is refused, as
    ansible-playbook refuses it ('Specified inventory, host pattern and/or --limit leaves us
    with no hosts to target'): one ConfigError naming the term that matched nothing.
    """
    name, pattern = line
    expected = CASES[name].expected()
    inventory = load_inventory(CASES[name].inventory)
    ansible = expected["limits"][pattern]
    if not ansible:
        selected = select(inventory, pattern)
        if not isinstance(selected, ConfigError):
            pytest.fail(
                f"--limit {pattern!r}: Ansible selects no host (so a --limit is refused); "
                f"mlfleet selects {short(selected)}",
                pytrace=False,
            )
        warnings = expected.get("limit_warnings", {}).get(pattern, [])
        unmatched = [w.split("ignoring: ", 1)[1] for w in warnings if "ignoring: " in w]
        named = any(f"'{term}'" in str(selected) for term in unmatched)
        expect(named, f"the refusal names no term Ansible ignored ({unmatched}): {selected}")
        return
    mlfleet = select(inventory, pattern)
    if isinstance(mlfleet, ConfigError):
        pytest.fail(
            f"--limit {pattern!r}: Ansible selects {short(ansible)}; mlfleet: {mlfleet}",
            pytrace=False,
        )
    hosts = f"--limit {pattern!r}: hosts"
    if pattern in expected.get("limit_order_varies", []):
        # Ansible's order here changes from one run to the next (it walks a group's
        # descendants through a set of Group objects, hashed by address): only the hosts count.
        # Everywhere else its order was the same over 64 loads, and is compared.
        expect(sorted(mlfleet) == sorted(ansible), "\n".join(names_only(ansible, mlfleet, hosts)))
        return
    expect(
        mlfleet == ansible,
        "\n".join(names_only(ansible, mlfleet, hosts))
        or f"--limit {pattern!r}: same hosts, another order: Ansible {ansible}, mlfleet {mlfleet}",
    )


# --- live, where Ansible is installed -------------------------------------------------------


@pytest.fixture(scope="module")
def live_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every case recorded afresh with the ansible-inventory mlfleet finds (some 20 s)."""
    out = tmp_path_factory.mktemp("live-conformance")
    binary = find_ansible_inventory(os.environ)
    assert binary is not None
    argv = [
        sys.executable,
        str(RECORDER),
        "--ansible-bin",
        str(Path(binary).parent),
        "--out",
        str(out),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.skipif(not ansible_installed(), reason="ansible-inventory is not installed")
@pytest.mark.parametrize("name", sorted(CASES))
def test_recording_is_still_what_ansible_prints(name: str, live_recording: Path) -> None:
    stored = CASES[name].expected()
    live: Dict[str, Any] = json.loads((live_recording / f"{name}.json").read_text("utf-8"))
    versions = f"recorded with ansible-core {stored.pop('ansible')}, now {live.pop('ansible')}"
    for doc in (stored, live):  # where Ansible's order varies between runs, only the hosts
        for pattern in stored.get("limit_order_varies", []) + live.get("limit_order_varies", []):
            doc.get("limits", {})[pattern] = sorted(doc.get("limits", {}).get(pattern, []))
    lines = [
        first_difference(live.get(key), stored.get(key), key, ("Ansible", "stored"))
        for key in sorted(set(stored) | set(live))
        if stored.get(key) != live.get(key)
    ]
    expect(
        not lines,
        f"{name}: {versions}; re-record with scripts/record-ansible-conformance:\n  "
        + "\n  ".join(lines[:MAX_LINES]),
    )
