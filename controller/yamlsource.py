"""YAML loading that remembers where every value came from (file:line) and refuses
duplicate keys, so that bad input gets a message naming the line.

Whatever the text, loading ends in a value or in one ConfigError line, never in a traceback
and never in unbounded work: nesting is limited to `MAX_DEPTH` levels, and aliases may add
at most `MAX_ALIAS_NODES` nodes to a document (PyYAML shares an alias's node, but whoever
walks the result, e.g. to print it as JSON, sees it expanded: a "billion laughs" of ten
nested aliases is 10^9 nodes in a file of a few hundred bytes). A value YAML cannot build
(`!!int abc`, `!!timestamp`, a list as a key) is refused with its line. These limits
protect every file read here: inventories, group_vars/host_vars, playbooks, lab profiles.
Ansible's own tags are read as Ansible reads them: `!vault` is a VaultValue (kept encrypted;
controller/ansible_vault.py) and `!unsafe` text an UnsafeText (never a template).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from mlfleet.controller.ansible_vault import VaultValue
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.plaintext import printable
from mlfleet.controller.templating import UnsafeText

LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))  # PyYAML built with libyaml
MAX_DEPTH = 100  # levels of nested lists and mappings
MAX_ALIAS_NODES = 1_000_000  # nodes aliases may add to one document, counted expanded
MAX_NUMBER_CHARS = 1_000  # a longer whole number is refused unread (base 60 grows fast)
MAX_SHOWN_CHARS = 60  # how much of a value a message quotes

_MERGE_TAG = "tag:yaml.org,2002:merge"
_TAG_NAMES = {
    "tag:yaml.org,2002:int": "whole number (!!int)",
    "tag:yaml.org,2002:float": "number (!!float)",
    "tag:yaml.org,2002:bool": "boolean (!!bool)",
    "tag:yaml.org,2002:null": "null (!!null)",
    "tag:yaml.org,2002:timestamp": "date or time (!!timestamp)",
    "tag:yaml.org,2002:binary": "base64 text (!!binary)",
}


class LocatedDict(dict):
    """A mapping from YAML that knows the line of itself and of each of its keys."""

    source: str = "<string>"
    line: int = 0
    key_lines: dict[Any, int]

    def where(self, key: Any | None = None) -> str:
        line = self.key_lines.get(key, self.line) if key is not None else self.line
        return f"{printable(self.source)}:{line}"


class LocatedList(list):
    """A sequence from YAML that knows the line of itself and of each item."""

    source: str = "<string>"
    line: int = 0
    item_lines: list[int]

    def where(self, index: int | None = None) -> str:
        if index is not None and index < len(self.item_lines):
            return f"{printable(self.source)}:{self.item_lines[index]}"
        return f"{printable(self.source)}:{self.line}"


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """`value` quoted for a one-line message: repr-like (every unprintable character
    escaped), at most about `limit` characters (a longer value is cut and says how long it
    was). Paths and other text named bare go through plaintext.printable."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    if isinstance(value, (dict, list, tuple, set)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value):,} items"
    text = printable(repr(value))
    return text if len(text) <= limit else f"{text[:limit]}..."


class _Loader(Composer, SafeConstructor):
    """PyYAML's composer and safe constructor with LocatedDict/LocatedList, the depth and
    alias budgets, and every construction failure turned into a ConfigError naming the
    line. The text is scanned and parsed by libyaml when PyYAML has it (`_CLoader`, five
    times faster on a large inventory), else by PyYAML's own Python parser (`_PyLoader`);
    composing stays here in Python either way, where the budgets are counted."""

    source = "<string>"

    if TYPE_CHECKING:  # the parser half (libyaml's or PyYAML's) brings these

        def peek_event(self) -> Any: ...

        def dispose(self) -> None: ...

    def _start(self, source: str) -> None:
        self.source = source
        self._depth = 0
        self._alias_nodes = 0
        self._sizes: Dict[int, int] = {}  # id(node) -> nodes it holds, aliases expanded

    # --- composing (text -> nodes): depth and alias budgets ----------------------------

    def compose_node(self, parent: Optional[Node], index: Any) -> Optional[Node]:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor) if event.anchor is not None else None
            if target is not None:
                self._count_alias(event, target)
            return super().compose_node(parent, index)
        if isinstance(event, yaml.ScalarEvent):
            node = super().compose_node(parent, index)
            if node is not None:
                self._sizes[id(node)] = 1
            return node
        if self._depth >= MAX_DEPTH:
            raise ConfigError(
                f"nested more than {MAX_DEPTH} levels deep",
                where=self._at(event.start_mark),
                hint="flatten the structure; no mlfleet file needs that depth",
            )
        self._depth += 1
        node = super().compose_node(parent, index)
        self._depth -= 1
        if node is not None:
            self._sizes[id(node)] = 1 + sum(self._size(child) for child in _children(node))
        return node

    def _count_alias(self, event: yaml.AliasEvent, target: Node) -> None:
        size = self._sizes.get(id(target))
        if size is None:  # the anchored node is still being read: the alias is inside it
            raise ConfigError(
                f"alias *{printable(str(event.anchor))} is inside the node it names (a loop)",
                where=self._at(event.start_mark),
                hint="an alias can only repeat a node that is complete",
            )
        self._alias_nodes += size
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise ConfigError(
                f"aliases repeat more than {MAX_ALIAS_NODES:,} nodes in this file, reached at "
                f"alias *{printable(str(event.anchor))} ({size:,} nodes)",
                where=self._at(event.start_mark),
                hint="aliases nested in aliases multiply, a 'billion laughs'; "
                "write the values out or nest fewer aliases",
            )

    def _size(self, node: Node) -> int:
        return self._sizes.get(id(node), 1)

    # --- constructing (nodes -> values): any failure names the node's line --------------

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if (
            isinstance(node, ScalarNode)
            and node.tag == "tag:yaml.org,2002:int"
            and len(node.value) > MAX_NUMBER_CHARS
        ):
            raise ConfigError(
                f"a number written with {len(node.value):,} characters (at most "
                f"{MAX_NUMBER_CHARS:,})",
                where=self._at(node.start_mark),
                hint="quote it if it is text",
            )
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError):
            raise self._unbuildable(node) from None

    def _unbuildable(self, node: Node) -> ConfigError:
        what = _TAG_NAMES.get(node.tag, f"value tagged {printable(node.tag)}")
        if isinstance(node, ScalarNode):
            return ConfigError(
                f"{shown(node.value)} is not a valid {what}",
                where=self._at(node.start_mark),
                hint="fix the value, or quote it and drop the tag to keep it as text",
            )
        return ConfigError(
            f"this {'list' if isinstance(node, SequenceNode) else 'mapping'} cannot be read as a {what}",
            where=self._at(node.start_mark),
        )

    def _at(self, mark: Any) -> str:
        return f"{printable(self.source)}:{mark.line + 1}"


def _children(node: Node) -> list:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _construct_mapping(loader: _Loader, node: MappingNode) -> LocatedDict:
    # Duplicates are refused among the keys written here; keys brought by a merge
    # (`<<: *base`) may be overridden, as YAML says.
    own = {id(key_node) for key_node, _ in node.value if key_node.tag != _MERGE_TAG}
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.source, result.line, result.key_lines = loader.source, node.start_mark.line + 1, {}
    written: Dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not _hashable(key):
            raise ConfigError(
                f"a key must be a name or a number, not {_kind(key)}",
                where=f"{printable(loader.source)}:{line}",
                hint="`? [a, b]` and `? {a: b}` keys are not read; write the key as text",
            )
        if id(key_node) in own:
            if key in written:
                raise ConfigError(
                    f"duplicate key {shown(key)} (first at line {written[key]})",
                    where=f"{printable(loader.source)}:{line}",
                    hint="each key may appear once",
                )
            written[key] = line
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_sequence(loader: _Loader, node: SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.source, result.line = loader.source, node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


class _PyLoader(_Loader, yaml.SafeLoader):
    def __init__(self, text: str, source: str) -> None:
        yaml.SafeLoader.__init__(self, text)
        self._start(source)


if LIBYAML:
    from yaml._yaml import CParser

    class _CLoader(_Loader, CParser, Resolver):  # Composer's methods win over CParser's
        def __init__(self, text: str, source: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start(source)


def _construct_vault(loader: _Loader, node: Node) -> VaultValue:
    """`!vault |` (Ansible Vault): the envelope kept encrypted, exactly as written."""
    if not isinstance(node, ScalarNode):
        raise ConfigError(
            "a `!vault` value must be the encrypted text, not a list or mapping",
            where=loader._at(node.start_mark),
            hint="write it as ansible-vault encrypt_string prints it",
        )
    return VaultValue(str(node.value), loader._at(node.start_mark))


def _construct_unsafe(loader: _Loader, node: Node) -> Any:
    """`!unsafe` (Ansible's tag): the text as written, never a template; on a list or a
    mapping, every string in it."""
    if isinstance(node, ScalarNode):
        return UnsafeText(node.value)
    if isinstance(node, SequenceNode):
        items = _construct_sequence(loader, node)
        for i, item in enumerate(items):
            if isinstance(item, str):
                items[i] = UnsafeText(item)
        return items
    mapping = _construct_mapping(loader, node)  # type: ignore[arg-type]
    for key, item in mapping.items():
        if isinstance(item, str):
            mapping[key] = UnsafeText(item)
    return mapping


_LOADERS: List[Any] = [_PyLoader, _CLoader] if LIBYAML else [_PyLoader]
for _loader in _LOADERS:
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
    _loader.add_constructor("!vault", _construct_vault)
    _loader.add_constructor("!unsafe", _construct_unsafe)


def _hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text; bad YAML, a value YAML cannot build and input over the limits
    (module docstring) become one ConfigError naming source:line."""
    loader: Optional[_Loader] = None
    try:
        # Reading starts in the constructor: it checks every character. libyaml reads
        # UTF-8, which a lone surrogate (written as "\ud800" in Python) cannot be.
        loader = _CLoader(text, source) if LIBYAML and _utf8(text) else _PyLoader(text, source)
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        at = _line_of(text, exc.position, in_bytes=not isinstance(loader, _PyLoader))
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[0])
        raise ConfigError(
            f"not valid YAML: the character {printable(chr(code))} (#x{code:04x}) is not "
            "allowed in YAML text",
            where=f"{printable(source)}:{at}",
            hint=r'remove it, or write it escaped in a double-quoted string ("\x07")',
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = printable(str(exc.problem or exc.context or "cannot be read"))
        raise ConfigError(
            f"not valid YAML: {problem}", where=f"{printable(source)}{line}"
        ) from None
    except yaml.YAMLError as exc:
        first = printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ConfigError(f"not valid YAML: {first}", where=printable(source)) from None
    except RecursionError:  # a safety net: MAX_DEPTH keeps the walks well within Python's
        raise ConfigError("nested too deeply to read", where=printable(source)) from None
    finally:
        if loader is not None:
            loader.dispose()


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _line_of(text: str, position: Any, in_bytes: bool) -> int:
    """The line of a reader's position (libyaml counts bytes of UTF-8, PyYAML characters)."""
    if not isinstance(position, int):
        return 0
    if in_bytes:
        return text.encode("utf-8")[:position].count(b"\n") + 1
    return text.count("\n", 0, position) + 1


def load_yaml_file(path: Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a ConfigError, not a
    traceback."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot read: {reason}", where=printable(str(path))) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start:,})",
            where=printable(str(path)),
            hint="save the file as UTF-8",
        ) from None
    return load_yaml_text(text, str(path))


def plain(value: Any) -> Any:
    """LocatedDict/LocatedList as plain dicts and lists (for JSON, and equality with plain data)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
