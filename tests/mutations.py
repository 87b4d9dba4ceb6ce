"""Mutated documents for the property tests of the readers of structured input (the
agent's desired state, the playbook): a valid document with a few of its values replaced,
removed, given a trailing newline, or keys added where they do not belong."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from hypothesis import strategies as st

KeyPath = Tuple[Any, ...]


def key_paths(node: Any, prefix: KeyPath = ()) -> List[KeyPath]:
    """Every key path in a document (the places a mutation may hit)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += key_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += key_paths(value, (*prefix, i))
    return out


def mutated_documents(
    valid: Callable[[], Dict[str, Any]], values: st.SearchStrategy, keys: st.SearchStrategy
) -> st.SearchStrategy:
    """Documents made from a fresh `valid()` with one to three mutations: a value replaced
    by one of `values`, removed, suffixed with a newline, or a key of `keys` added."""
    where = key_paths(valid())

    @st.composite
    def mutated(draw: Any) -> Dict[str, Any]:
        doc = valid()
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(where))
            parent: Any = doc
            try:
                for key in path[:-1]:
                    parent = parent[key]
                current = parent[path[-1]]
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation removed it
            action = draw(st.sampled_from(["replace", "remove", "newline", "add_key"]))
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "remove" and isinstance(parent, dict):
                del parent[path[-1]]
            elif action == "newline" and isinstance(current, str):
                parent[path[-1]] = current + "\n"
            elif action == "add_key" and isinstance(current, dict):
                current[draw(keys)] = draw(values)
        return doc

    return mutated()
