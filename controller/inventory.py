"""Ansible-style YAML inventories, read as they are: groups, hosts, ranges and variables.

    all:
      vars: {ansible_user: deploy}
      children:
        gpu:
          vars: {mlfleet_registry: "10.0.0.1:5000"}
          children:
            jetson: {hosts: {"orin[1:2]": null}}
          hosts:
            edge[01:03]:
            edge04: {ansible_host: 10.0.0.14, ansible_port: 2222}

A group has `hosts:` (host pattern -> its variables, or nothing), `children:` (group name ->
group body, or nothing) and `vars:`. A group or a host may be listed in several places; its
settings add up. Host patterns take Ansible's ranges (`edge[01:20]`, `node-[a:c]`) and an
optional `:port`. Beside the inventory file, `group_vars/<group>` and `host_vars/<host>` (a
`.yml`, `.yaml`, `.json` or extension-less file, or a directory of them) are read as Ansible
reads them.

Membership: a host belongs to every group that lists it, to their ancestors and to `all`; a
host in no group but `all` is also in `ungrouped`.

Variable precedence, lowest to highest (Ansible's rule):

1. `all`'s `vars:`, then `group_vars/all`;
2. the host's other groups' `vars:`, ordered by depth (a parent before its children; depth
   is the longest chain of `children:` down from `all`), then by `ansible_group_priority`
   (default 1; higher applies later, so wins), then by name (alphabetically later wins);
   then their `group_vars/` files in the same order;
3. the host's own variables: where the host is listed more than once, the listing later in
   the file wins, key by key;
4. `host_vars/<host>`.

Where Ansible only warns (an unknown key in a group, a `--limit` term that matches nothing),
mlfleet refuses with the file:line. Ansible orders a group's own `hosts:` after the hosts of
its `children:`; here hosts keep the order in which they first appear in the file.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hostrange import expand_host_pattern
from mlfleet.controller.hosts import Host, as_int
from mlfleet.controller.yamlsource import LocatedDict, LocatedList, load_yaml_file, plain

GROUP_KEYS = ("hosts", "children", "vars")

_GROUP_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# Ansible's vars-file lookup: `<name>` (file or directory) first, then these extensions.
_VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")

# ("group" | "host", name) -> that name's mappings from group_vars/ or host_vars/
VarsLookup = Callable[[str, str], Sequence[LocatedDict]]


@dataclass
class Inventory:
    """Hosts (in file order) with merged variables, and every group's members (`all` and
    `ungrouped` always among the groups, as in Ansible)."""

    source: str
    hosts: Dict[str, Host]
    groups: Dict[str, List[str]]  # group -> host names, incl. through children

    def select(self, pattern: Optional[str]) -> List[Host]:
        """Hosts matching an Ansible `--limit` pattern, in inventory order.

        Terms are separated by commas (or colons); each is a host or group name, a glob
        (`edge-*`), a regex (`~edge-(t4|cpu)`), a host range (`edge[01:03]`) or `all`/`*`.
        `!term` excludes and `&term` intersects, applied after the plain terms. None or
        `all` selects every host. A term that matches nothing is a ConfigError.
        """
        if pattern is None:
            return list(self.hosts.values())
        terms = split_host_pattern(pattern)
        if not terms:
            raise ConfigError("empty --limit", hint="name hosts or groups, e.g. edge-t4,nvidia")
        plain = [t for t in terms if t[0] not in "!&"] or ["all"]
        chosen: Dict[str, None] = {}
        for term in plain:
            chosen.update(dict.fromkeys(self._match(term)))
        for term in (t for t in terms if t[0] == "&"):
            keep = set(self._match(term[1:]))
            chosen = {name: None for name in chosen if name in keep}
        for term in (t for t in terms if t[0] == "!"):
            drop = set(self._match(term[1:]))
            chosen = {name: None for name in chosen if name not in drop}
        return [host for name, host in self.hosts.items() if name in chosen]

    def to_dict(self) -> Dict[str, Any]:
        """Plain data for `mlfleet inventory --json`."""
        return {
            "hosts": {
                name: {"groups": list(host.groups), "vars": plain(host.vars)}
                for name, host in self.hosts.items()
            },
            "groups": {name: list(members) for name, members in self.groups.items()},
        }

    def _match(self, term: str) -> List[str]:
        """Host names for one term: Ansible's rule, groups first, then hosts by name."""
        if term in ("all", "*"):
            return list(self.hosts)
        if not term:
            raise ConfigError("empty term in --limit", hint="write `!name` or `&name`")
        matches = self._matcher(term)
        is_pattern = term.startswith("~") or any(c in term for c in "*?[")
        groups = [
            g for g in self.groups if matches(g) and not (is_pattern and g in ("all", "ungrouped"))
        ]
        found: Dict[str, None] = {}
        for group in groups:
            found.update(dict.fromkeys(self.groups[group]))
        if not groups or is_pattern:
            found.update(dict.fromkeys(h for h in self.hosts if matches(h)))
        if groups or found:
            return list(found)
        return self._range_or_fail(term)

    @staticmethod
    def _matcher(term: str) -> Callable[[str], bool]:
        if term.startswith("~"):
            try:
                regex = re.compile(term[1:])
            except re.error as exc:
                raise ConfigError(
                    f"{term!r} in --limit is not a valid regular expression: {exc}"
                ) from None
            return lambda name: regex.match(name) is not None
        if any(c in term for c in "*?["):
            return lambda name: fnmatch.fnmatchcase(name, term)
        return lambda name: name == term

    def _range_or_fail(self, term: str) -> List[str]:
        names: List[str] = []
        if "[" in term and not term.startswith("~"):
            try:
                names = expand_host_pattern(term)
            except ValueError:
                names = []
        missing = [n for n in names if n not in self.hosts]
        if names and not missing:
            return names
        if names:
            raise ConfigError(
                f"unknown host {missing[0]!r} in --limit (from {term!r})",
                hint=_close_names(missing[0], self._names()),
            )
        if term.startswith("~") or any(c in term for c in "*?["):
            raise ConfigError(
                f"no host or group matches {term!r} in --limit",
                hint=_close_names(term, self._names()),
            )
        raise ConfigError(
            f"unknown host or group {term!r} in --limit", hint=_close_names(term, self._names())
        )

    def _names(self) -> List[str]:
        return [*self.groups, *self.hosts]


def split_host_pattern(pattern: str) -> List[str]:
    """Split a `--limit` pattern into terms, as Ansible does: on commas if there are any,
    else on colons outside `[...]` (unless the whole pattern is an IPv6 address)."""
    if "," in pattern:
        parts = pattern.split(",")
    elif _is_ipv6(pattern.strip()):
        parts = [pattern]
    else:
        parts = re.findall(r"(?:[^\s:\[\]]|\[[^\]]*\])+", pattern)
    return [p.strip() for p in parts if p.strip()]


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.strip("[]")).version == 6
    except ValueError:
        return False


def _close_names(term: str, names: Iterable[str]) -> str:
    core = term.lstrip("~")
    close = difflib.get_close_matches(core, list(dict.fromkeys(names)), n=5, cutoff=0.5)
    if close:
        return "did you mean " + ", ".join(close) + "?"
    known = list(dict.fromkeys(names))
    shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    return f"known hosts and groups: {shown}"


# --- loading -----------------------------------------------------------------------------


def load_inventory(path: Path) -> Inventory:
    """Read an inventory file and the `group_vars/` and `host_vars/` beside it."""
    doc = load_yaml_file(path)
    base = path.parent
    return parse_inventory(
        doc, str(path), vars_files=lambda kind, name: find_vars_files(base, kind, name)
    )


def find_vars_files(base: Path, kind: str, name: str) -> List[LocatedDict]:
    """The variable mappings of `<base>/<kind>_vars/<name>` (kind: group or host), found and
    ordered as Ansible does: `<name>` (a file, or a directory read recursively in sorted
    order), else `<name>.yml`, `.yaml` or `.json`."""
    if "/" in name or name.startswith("."):
        return []
    docs = [_vars_doc(f) for f in _vars_files(base / f"{kind}_vars", name)]
    return [d for d in docs if d is not None]


def _vars_files(directory: Path, name: str) -> List[Path]:
    for ext in _VARS_EXTENSIONS:
        candidate = directory / (name + ext)
        if candidate.is_dir():
            return _dir_vars_files(candidate)
        if candidate.is_file():
            return [candidate]
    return []


def _dir_vars_files(directory: Path) -> List[Path]:
    found: List[Path] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.name.endswith("~"):
            continue
        if path.is_dir() and not path.suffix:
            found += _dir_vars_files(path)
        elif path.is_file() and path.suffix in _VARS_EXTENSIONS:
            found.append(path)
    return found


def _vars_doc(path: Path) -> Optional[LocatedDict]:
    doc = load_yaml_file(path)
    if doc is None:
        return None
    if not isinstance(doc, LocatedDict):
        raise ConfigError(
            "a vars file must be a mapping of variable names to values", where=_where(doc, path)
        )
    return doc


def parse_inventory(
    doc: Any,
    source: str,
    *,
    vars_files: Optional[VarsLookup] = None,
) -> Inventory:
    """Validate and resolve a parsed inventory document (from yamlsource).

    `vars_files` gives the `group_vars/` and `host_vars/` mappings of a group or host (see
    `find_vars_files`); without it, only the document counts and parsing is pure.
    """
    if doc is None:
        raise ConfigError(
            "the inventory is empty", where=source, hint="expected e.g. `all:` with `hosts:`"
        )
    if not isinstance(doc, LocatedDict):
        raise ConfigError(
            "an inventory must be a mapping of group names (normally just `all:`)",
            where=_where(doc, source),
            hint="INI inventories are not read; convert one with "
            "`ansible-inventory -i FILE --list --yaml`",
        )
    builder = _Builder(source, doc.where("all") if "all" in doc else doc.where())
    for key, body in doc.items():
        loc = doc.where(key)
        if key in GROUP_KEYS:
            raise ConfigError(
                f"`{key}:` at the top level of the inventory",
                where=loc,
                hint="put it under a group, normally `all:`",
            )
        builder.group(_group_name(key, loc), body, loc)
    return builder.finish(vars_files or (lambda kind, name: ()))


@dataclass
class _Group:
    name: str
    where: str
    vars: Dict[str, Any] = field(default_factory=dict)
    origins: Dict[str, str] = field(default_factory=dict)
    priority: int = 1
    hosts: Dict[str, None] = field(default_factory=dict)  # direct members, ordered
    children: Dict[str, str] = field(default_factory=dict)  # child -> where it is listed
    parents: Dict[str, None] = field(default_factory=dict)


@dataclass
class _HostEntry:
    where: str
    vars: Dict[str, Any] = field(default_factory=dict)
    origins: Dict[str, str] = field(default_factory=dict)


class _Builder:
    """Collects groups and hosts while walking the document, then resolves them."""

    def __init__(self, source: str, all_where: str) -> None:
        self.source = source
        self.groups: Dict[str, _Group] = {"all": _Group("all", all_where)}
        self.hosts: Dict[str, _HostEntry] = {}

    def group(self, name: str, body: Any, where: str) -> None:
        group = self.groups.setdefault(name, _Group(name, where))
        if body is None:
            return
        if not isinstance(body, LocatedDict):
            raise ConfigError(
                f"group {name!r} must be a mapping, not {_kind(body)}",
                where=where,
                hint="a group has `hosts:`, `children:` and `vars:` (each optional)",
            )
        for key, value in body.items():
            loc = body.where(key)
            if key == "vars":
                self._group_vars(group, value, loc)
            elif key == "hosts":
                self._hosts(group, value, loc)
            elif key == "children":
                self._children(group, value, loc)
            else:
                raise ConfigError(
                    f"unknown key {key!r} in group {name!r}",
                    where=loc,
                    hint="a group has `hosts:`, `children:` and `vars:`; "
                    "group variables go under `vars:`",
                )

    def _group_vars(self, group: _Group, doc: Any, where: str) -> None:
        if doc is None:
            return
        if not isinstance(doc, LocatedDict):
            raise ConfigError(
                f"`vars` of group {group.name!r} must be a mapping, not {_kind(doc)}",
                where=where,
                hint="write one `name: value` per line",
            )
        for key, value in doc.items():
            loc = doc.where(key)
            _check_var_name(key, loc)
            if key == "ansible_group_priority":  # ordering, not a variable (as in Ansible)
                priority = as_int(value)
                if priority is None:
                    raise ConfigError(
                        f"`ansible_group_priority` of group {group.name!r} must be a whole "
                        f"number, not {value!r}",
                        where=loc,
                    )
                group.priority = priority
                continue
            group.vars[key], group.origins[key] = value, loc

    def _hosts(self, group: _Group, doc: Any, where: str) -> None:
        for key, body, loc in _entries(doc, where, f"`hosts` of group {group.name!r}", _HOSTS_HINT):
            pattern, port = _split_port(_name_text(key, "host", loc), loc)
            try:
                names = expand_host_pattern(pattern)
            except ValueError as exc:
                raise ConfigError(str(exc), where=loc, hint=_RANGE_HINT) from None
            if body is not None and not isinstance(body, LocatedDict):
                raise ConfigError(
                    f"host {pattern!r}: expected its variables as a mapping, not {_kind(body)}",
                    where=loc,
                    hint=f"e.g. `{pattern}: {{ansible_host: 10.0.0.5}}`, or nothing after the colon",
                )
            located: Optional[LocatedDict] = body
            for name in names:
                if any(c.isspace() for c in name):
                    raise ConfigError(f"host name {name!r} contains whitespace", where=loc)
                entry = self.hosts.setdefault(name, _HostEntry(loc))
                group.hosts[name] = None
                if port is not None:
                    entry.vars["ansible_port"], entry.origins["ansible_port"] = port, loc
                if located is None:
                    continue
                for var, value in located.items():
                    _check_var_name(var, located.where(var))
                    entry.vars[var], entry.origins[var] = value, located.where(var)

    def _children(self, group: _Group, doc: Any, where: str) -> None:
        what = f"`children` of group {group.name!r}"
        hint = "list child groups as keys: `gpu:` on its own line, or `gpu: {hosts: ...}`"
        for key, body, loc in _entries(doc, where, what, hint):
            name = _group_name(key, loc)
            if name == "all":
                raise ConfigError(
                    "`all` cannot be a child group", where=loc, hint="every group is inside `all`"
                )
            if name == group.name:
                raise ConfigError(f"group {name!r} lists itself as a child", where=loc)
            group.children.setdefault(name, loc)
            self.group(name, body, loc)
            self.groups[name].parents[group.name] = None

    def finish(self, vars_files: VarsLookup) -> Inventory:
        self._place_ungrouped()
        for group in self.groups.values():  # top-level groups hang under `all`
            if group.name != "all" and not group.parents:
                self.groups["all"].children.setdefault(group.name, group.where)
                group.parents["all"] = None
        self._refuse_cycles()
        depth: Dict[str, int] = {}
        for name in self.groups:
            self._depth(name, depth)
        group_files = {g: vars_files("group", g) for g in self.groups}
        hosts: Dict[str, Host] = {}
        for name, entry in self.hosts.items():
            names = sorted(
                self._ancestry(name), key=lambda g: (depth[g], self.groups[g].priority, g)
            )
            own_files = vars_files("host", name)
            merged, origins = self._merge(entry, names, group_files, own_files)
            host = Host(name, merged, tuple(names), origins, entry.where)
            host.validate()
            hosts[name] = host
        members = {g: [h for h, host in hosts.items() if g in host.groups] for g in self.groups}
        return Inventory(source=self.source, hosts=hosts, groups=members)

    def _place_ungrouped(self) -> None:
        """Hosts in no group but `all` go to `ungrouped`; nobody else stays there."""
        ungrouped = self.groups.setdefault("ungrouped", _Group("ungrouped", self.source))
        listed = {
            h for g in self.groups.values() if g.name not in ("all", "ungrouped") for h in g.hosts
        }
        ungrouped.hosts = {h: None for h in self.hosts if h not in listed}

    def _refuse_cycles(self) -> None:
        state: Dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(name: str, path: List[str]) -> None:
            state[name] = 1
            for child, loc in self.groups[name].children.items():
                if state.get(child) == 1:
                    chain = " -> ".join([*path[path.index(child) :], child])
                    raise ConfigError(
                        f"groups form a loop: {chain}",
                        where=loc,
                        hint="a group cannot contain one of its ancestors",
                    )
                if child not in state:
                    visit(child, [*path, child])
            state[name] = 2

        for name in self.groups:
            if name not in state:
                visit(name, [name])

    def _depth(self, name: str, depth: Dict[str, int]) -> int:
        if name not in depth:
            parents = self.groups[name].parents
            depth[name] = max((self._depth(p, depth) + 1 for p in parents), default=0)
        return depth[name]

    def _ancestry(self, host: str) -> List[str]:
        found: Dict[str, None] = {}
        todo = [g.name for g in self.groups.values() if host in g.hosts] + ["all"]
        while todo:
            name = todo.pop()
            if name not in found:
                found[name] = None
                todo.extend(self.groups[name].parents)
        return list(found)

    def _merge(
        self,
        entry: _HostEntry,
        groups: List[str],
        group_files: Mapping[str, Sequence[LocatedDict]],
        own_files: Sequence[LocatedDict],
    ) -> Tuple[Dict[str, Any], Dict[str, str]]:
        """Apply the layers in precedence order (see the module docstring)."""
        others = [g for g in groups if g != "all"]
        layers: List[Tuple[Mapping[str, Any], Callable[[str], str]]] = []
        everyone = self.groups["all"]
        layers.append((everyone.vars, everyone.origins.__getitem__))
        layers += [(d, d.where) for d in group_files.get("all", ())]
        layers += [(self.groups[g].vars, self.groups[g].origins.__getitem__) for g in others]
        layers += [(d, d.where) for g in others for d in group_files.get(g, ())]
        layers.append((entry.vars, entry.origins.__getitem__))
        layers += [(d, d.where) for d in own_files]
        merged: Dict[str, Any] = {}
        origins: Dict[str, str] = {}
        for values, where in layers:
            for var, value in values.items():
                _check_var_name(var, where(var))
                merged[var], origins[var] = value, where(var)
        return merged, origins


_RANGE_HINT = "ranges look like edge[01:20] or node-[a:c]"
_HOSTS_HINT = "write each host as a key: `web1:` on its own line, or `web1: {ansible_host: ...}`"


def _entries(doc: Any, where: str, what: str, hint: str) -> List[Tuple[Any, Any, str]]:
    """(key, value, file:line) of a `hosts:`/`children:` mapping; a lone name is accepted
    (as Ansible does) and nothing means none."""
    if doc is None:
        return []
    if isinstance(doc, str):
        return [(doc, None, where)]
    if not isinstance(doc, LocatedDict):
        raise ConfigError(f"{what} must be a mapping, not {_kind(doc)}", where=where, hint=hint)
    return [(key, value, doc.where(key)) for key, value in doc.items()]


def _split_port(pattern: str, where: str) -> Tuple[str, Optional[int]]:
    """`web1:2222` -> ("web1", 2222); colons inside `[...]` ranges and bare IPv6 addresses
    are not ports."""
    depth, colons = 0, []
    for i, char in enumerate(pattern):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == ":" and depth == 0:
            colons.append(i)
    if pattern.startswith("[") and _is_ipv6(pattern.partition("]")[0] + "]"):
        address, _, tail = pattern[1:].partition("]")
        head, port_text = address, tail[1:] if tail.startswith(":") else None
        if tail and port_text is None:
            raise ConfigError(f"host {pattern!r}: expected [address]:port", where=where)
    elif len(colons) == 1:
        head, port_text = pattern[: colons[0]], pattern[colons[0] + 1 :]
    else:
        return pattern, None
    if port_text is None:
        return head, None
    port = as_int(port_text)
    if port is None or not 1 <= port <= 65535:
        raise ConfigError(
            f"host {pattern!r}: port {port_text!r} is not a number from 1 to 65535",
            where=where,
            hint="write host:port, e.g. web1:2222",
        )
    return head, port


def _name_text(key: Any, what: str, where: str) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, int, float)) or not str(key).strip():
        raise ConfigError(f"{what} name {key!r} is not a name", where=where)
    return str(key)


def _group_name(key: Any, where: str) -> str:
    name = _name_text(key, "group", where)
    if not _GROUP_NAME.match(name):
        raise ConfigError(
            f"group name {name!r} is not valid",
            where=where,
            hint="use letters, digits and underscores; dashes and dots are accepted",
        )
    return name


def _check_var_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"variable name {name!r} is not text", where=where)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _where(doc: Any, source: Any) -> str:
    return doc.where() if isinstance(doc, (LocatedDict, LocatedList)) else str(source)
