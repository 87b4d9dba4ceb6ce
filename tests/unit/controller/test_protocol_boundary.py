"""The controller reads agent messages only through agent/protocol.py: no module of it looks
a protocol field up by a string key (`x["status"]`, `x.get("variant")`). This is the grep
the issue asked for, done with the parser so that comments and strings do not count."""

from __future__ import annotations

import ast
import dataclasses
from typing import Iterator, List, Set, Tuple

from mlfleet.agent import facts, protocol, selection
from tests.paths import REPO

# Modules that hold the controller's own records, not agent messages: the lab's status, the
# inventory, the playbook (it writes the desired state, which the agent validates), the state
# DB, the fleet lock's holder file and the registry client (with the registries' image indexes and Docker's client config).
# Their string keys are their own formats.
OWN_FORMATS = {"lab", "state.py", "inventory.py", "playbook.py", "hosts.py", "yamlcheck.py",
               "yamlsource.py", "registry.py", "relay_cache.py", "hostrange.py",
               "credentials.py", "image_copy.py", "fleet_lock.py"}  # fmt: skip
# Functions of cli.py that render those own formats (history rows, the lab's status).
OWN_RENDERERS = {"history_cmd", "_print_status", "inventory_cmd", "lock_status"}


def protocol_keys() -> Set[str]:
    """Every field name of every message record (nested ones included)."""
    records = [
        protocol.ApplyResult, protocol.Event, protocol.HostStatus, protocol.AppStatus,
        protocol.ReleaseView, protocol.HealthSample, protocol.VersionInfo, selection.Selection,
        selection.Rejection, facts.HostFacts, facts.Gpu, facts.NvidiaFacts, facts.AmdFacts,
        facts.JetsonFacts, facts.DockerFacts, facts.OsFacts,
    ]  # fmt: skip
    keys = {f.name for record in records for f in dataclasses.fields(record)}
    return keys | {"schema", "event", "apps", "current"}


def lookups(tree: ast.AST) -> Iterator[Tuple[int, str, str]]:
    """(line, function, key) of each x["key"] and x.get("key") outside OWN_RENDERERS."""

    def walk(node: ast.AST, function: str) -> Iterator[Tuple[int, str, str]]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
            if function in OWN_RENDERERS:
                return
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            yield node.lineno, function, node.slice.value
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, function, node.args[0].value
        for child in ast.iter_child_nodes(node):
            yield from walk(child, function)

    yield from walk(tree, "<module>")


def test_the_controller_reads_agent_messages_only_through_the_protocol() -> None:
    keys = protocol_keys()
    found: List[str] = []
    for path in sorted((REPO / "controller").rglob("*.py")):
        relative = path.relative_to(REPO / "controller")
        if relative.parts[0] in OWN_FORMATS:
            continue
        for line, function, key in lookups(ast.parse(path.read_text())):
            if key in keys:
                found.append(f"controller/{relative}:{line} ({function}): [{key!r}]")
    assert not found, "string-key lookups of agent message fields:\n" + "\n".join(found)


def test_the_check_finds_what_it_looks_for() -> None:
    code = 'def f(r):\n    return r["status"], r.get("variant"), r.status\n'
    assert [(line, key) for line, _, key in lookups(ast.parse(code))] == [
        (2, "status"),
        (2, "variant"),
    ]
    assert {"status", "variant", "driver_version", "last_tick"} <= protocol_keys()


def test_a_controller_module_with_a_lookup_would_fail() -> None:
    # The same scan over the controller as it was before the protocol (1647e75's deploy.py).
    before = 'def _current(status, app):\n    for entry in status.get("apps", []):\n        return entry["current"]\n'
    assert {key for _, _, key in lookups(ast.parse(before))} & protocol_keys() == {
        "apps",
        "current",
    }
