"""YAML loading that remembers where every value came from (file:line) and refuses
duplicate keys, so that bad input gets a message naming the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mlfleet.controller.errors import ConfigError


class LocatedDict(dict):
    """A mapping from YAML that knows the line of itself and of each of its keys."""

    source: str = "<string>"
    line: int = 0
    key_lines: dict[Any, int]

    def where(self, key: Any | None = None) -> str:
        line = self.key_lines.get(key, self.line) if key is not None else self.line
        return f"{self.source}:{line}"


class LocatedList(list):
    """A sequence from YAML that knows the line of itself and of each item."""

    source: str = "<string>"
    line: int = 0
    item_lines: list[int]

    def where(self, index: int | None = None) -> str:
        if index is not None and index < len(self.item_lines):
            return f"{self.source}:{self.item_lines[index]}"
        return f"{self.source}:{self.line}"


def _loader_for(source: str) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LocatedDict:
        loader.flatten_mapping(node)
        result = LocatedDict()
        result.source, result.line, result.key_lines = source, node.start_mark.line + 1, {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in result:
                first = result.key_lines[key]
                raise ConfigError(
                    f"duplicate key {key!r} (first at line {first})",
                    where=f"{source}:{key_node.start_mark.line + 1}",
                    hint="each key may appear once",
                )
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LocatedList:
        result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
        result.source, result.line = source, node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return Loader


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text; syntax errors become a ConfigError naming source:line."""
    try:
        return yaml.load(text, Loader=_loader_for(source))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"not valid YAML: {exc.problem}", where=f"{source}{line}") from None


def load_yaml_file(path: Path) -> Any:
    """Read and parse a YAML file; a missing file is a ConfigError, not a traceback."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=str(path)) from None
    return load_yaml_text(text, str(path))


def plain(value: Any) -> Any:
    """LocatedDict/LocatedList as plain dicts and lists (for JSON, and equality with plain data)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
