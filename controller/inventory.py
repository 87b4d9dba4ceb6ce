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

1. `all`'s `vars:` in the inventory file;
2. the host's other groups' `vars:` in the inventory file, ordered by depth (a parent before
   its children; depth is the longest chain of `children:` down from `all`), then by
   `ansible_group_priority` (default 1; higher applies later, so wins), then by name
   (alphabetically later wins);
3. `group_vars/all`, then the other groups' `group_vars/` files in the same order (so a
   `group_vars/all` value beats any group's `vars:` in the file, as in ansible/ansible#23258);
4. the host's own variables: where the host is listed more than once, the listing later in
   the file wins, key by key;
5. `host_vars/<host>`.

Every top-level key is a group, as in Ansible (a top-level `hosts:` is a group named
`hosts`). A host name that YAML reads as a number (`1234:`) is refused, as Ansible refuses
it. Values tagged `!vault` stay encrypted (controller/ansible_vault.py) and `!unsafe` text is
never a template; a group_vars/host_vars file wholly encrypted with ansible-vault is
decrypted with the configured vault password. Where Ansible only warns about the file (an
unknown key in a group, a value that is not a mapping), mlfleet refuses with the file:line.
`Inventory.hosts` keep the order in which they first appear in the file; a group's hosts in
Ansible's order (its own, then its children's) are `Inventory.ordered_members`, which
`--limit` subscripts count in. Settings (controller/hosts.py) are checked for the hosts a
`--limit` selects; a template mlfleet does not evaluate, or a vault value, is read only for
the hosts a command touches (`Inventory.touched`).

Limits, each refused in one line naming the file:line before the work is done: a host range
expands to at most 100,000 names (`hostrange.MAX_RANGE_HOSTS`), an inventory holds at most
`MAX_HOSTS` hosts and `MAX_MEMBERSHIPS` places of a host in a group (its groups' ancestors
included), and finding hosts' groups follows at most `MAX_RESOLVE_STEPS` parent links.
Groups may nest (`children:`) as deep as a file lists them: they are walked without
recursion, and hosts listed in the same groups share one resolution (their groups and
merged group variables), so a fleet of 100,000 hosts resolves in about a second. The YAML
itself is bounded by yamlsource (nesting depth, aliases). A `--limit` has at most
`MAX_LIMIT_TERMS` terms; a `~regex` that repeats a repetition is refused.
"""

from __future__ import annotations

import datetime
import difflib
import fnmatch
import importlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from mlfleet.controller.ansible_vault import HEADER, KEYRING, SecretText, VaultValue, hide_text
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hostrange import (
    MAX_RANGE_HOSTS,
    HostRangeError,
    HostRangeTooLarge,
    count_host_pattern,
    expand_host_pattern,
)
from mlfleet.controller.hosts import Host, as_int
from mlfleet.controller.plaintext import printable
from mlfleet.controller.templating import UnsafeText
from mlfleet.controller.yamlsource import (
    LocatedDict,
    LocatedList,
    load_yaml_file,
    load_yaml_text,
    shown,
)

GROUP_KEYS = ("hosts", "children", "vars")
MAX_HOSTS = 100_000  # hosts in one inventory
MAX_MEMBERSHIPS = 1_000_000  # (host, group) places, ancestors included, summed over hosts
MAX_RESOLVE_STEPS = 5_000_000  # parent links followed to find the groups of all hosts
MAX_LIMIT_TERMS = 10_000  # terms of one --limit

_GROUP_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Ansible's vars-file lookup: `<name>` (file or directory) first, then these extensions.
_VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")
_MAX_REGEX_CHARS = 1_000
_SPLIT_ON_COLONS = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")

# ("group" | "host", name) -> that name's mappings from group_vars/ or host_vars/
VarsLookup = Callable[[str, str], Sequence[LocatedDict]]


@dataclass
class Selection:
    """What a `--limit` selects: the hosts in inventory order, and a warning for each term
    that matched nothing (Ansible ignores such a term, with the same warning)."""

    hosts: List[Host]
    unmatched: List[str]  # terms (without a subscript) that matched no host or group

    @property
    def warnings(self) -> List[str]:
        return [f"no host or group matches {shown(t)} in --limit; ignored" for t in self.unmatched]


@dataclass
class Inventory:
    """Hosts (in file order) with merged variables, and every group's members (`all` and
    `ungrouped` always among the groups, as in Ansible). `tree` keeps each group's own hosts
    and child groups in the order they were listed, for Ansible's order of a group's hosts
    (what a `group[0]` subscript counts in)."""

    source: str
    hosts: Dict[str, Host]
    groups: Dict[str, List[str]]  # group -> host names, incl. through children
    tree: Dict[str, Tuple[List[str], List[str]]] = field(default_factory=dict, repr=False)
    warnings: List[str] = field(default_factory=list)  # what Ansible warns about, skipped
    _ordered: Dict[str, List[str]] = field(default_factory=dict, repr=False, compare=False)
    _checked: Set[Tuple[str, Tuple[int, ...]]] = field(
        default_factory=set, repr=False, compare=False
    )  # settings found good (Host.validate)

    def select(
        self, pattern: Optional[str], warn: Optional[Callable[[str], None]] = None
    ) -> List[Host]:
        """Hosts matching an Ansible `--limit` pattern, in inventory order (see `match`).

        A term that matches nothing is passed to `warn` (as Ansible warns); a pattern that
        selects no host at all is a ConfigError, as it is for Ansible. The settings of the
        hosts selected are checked (`Host.validate`): a bad value is a ConfigError with its
        file:line, while a template mlfleet cannot evaluate fails only when a command reads it
        (`touched`), so it stops only the hosts a command really works on.
        """
        found = self.match(pattern)
        if not found.hosts and self.hosts:
            missing = found.unmatched[0] if found.unmatched else None
            raise ConfigError(
                f"--limit {shown(pattern)} selects no host"
                + (f": no host or group matches {shown(missing)}" if missing else ""),
                hint=_close_names(missing, self._names()) if missing else None,
            )
        for host in found.hosts:
            host.validate(self._checked, templates=False)
        for message in [*self.warnings, *found.warnings]:
            if warn is not None:
                warn(message)
        return found.hosts

    def touched(self, hosts: Iterable[Host]) -> None:
        """Check the hosts a command will work on, templates included: raises the first
        setting mlfleet cannot read (a template it does not evaluate) as one ConfigError."""
        for host in hosts:
            host.validate(self._checked, templates=True)

    def match(self, pattern: Optional[str]) -> Selection:
        """What an Ansible `--limit` pattern selects, by Ansible's rules (its
        InventoryManager), pure.

        Terms are separated by commas (or colons); each is a host or group name, a glob
        (`edge-*`, `db-[a-c]`), a regex (`~edge-(t4|cpu)`) or `all`. A name or glob may end in
        a subscript, `group[0]`, `group[-1]`, `group[0:2]` or `group[1:]`, counted in the
        group's host order (its own hosts, then its children's). `&term` intersects and
        `!term` excludes, after the plain terms. None selects every host. A plain term that
        is a host's name is that host; otherwise a term selects the hosts of the groups it
        matches, and (when no group matches, or it is a glob or regex) the hosts it matches.
        A term matching nothing is a warning; an `!term` that matches nothing is refused (a
        typo there would select the very host it meant to leave out).
        """
        if pattern is None:
            return Selection(list(self.hosts.values()), [])
        terms = split_host_pattern(pattern)
        if not terms:
            raise ConfigError("empty --limit", hint="name hosts or groups, e.g. edge-t4,nvidia")
        if len(terms) > MAX_LIMIT_TERMS:
            raise ConfigError(
                f"--limit has {len(terms):,} terms; the limit is {MAX_LIMIT_TERMS:,}",
                hint="name groups instead of their hosts",
            )
        unmatched: List[str] = []
        plain_terms = [t for t in terms if t[0] not in "!&"] or ["all"]
        chosen: Dict[str, None] = {}
        for term in plain_terms:
            if term in self.hosts:  # Ansible: a plain term naming a host is that host
                chosen[term] = None
            else:
                chosen.update(dict.fromkeys(self._term(term, unmatched)))
        for term in (t for t in terms if t[0] == "&"):
            keep = set(self._term(term[1:], unmatched))
            chosen = {name: None for name in chosen if name in keep}
        for term in (t for t in terms if t[0] == "!"):
            before = len(unmatched)
            drop = set(self._term(term[1:], unmatched))
            if len(unmatched) > before:
                raise ConfigError(
                    f"no host or group matches {shown(term[1:])} in the exclusion {shown(term)} "
                    "of --limit",
                    hint=_close_names(term[1:], self._names()),
                )
            chosen = {name: None for name in chosen if name not in drop}
        hosts = [host for name, host in self.hosts.items() if name in chosen]
        return Selection(hosts, unmatched)

    def to_dict(self) -> Dict[str, Any]:
        """Plain data for `mlfleet inventory --json`."""
        return {
            "hosts": {
                name: {"groups": list(host.groups), "vars": _listed(host.vars)}
                for name, host in self.hosts.items()
            },
            "groups": {name: list(members) for name, members in self.groups.items()},
        }

    def ordered_members(self, group: str) -> List[str]:
        """The hosts of a group in Ansible's order (Group.get_hosts): its own hosts in the
        order listed, then those of its child groups, level by level (children in the order
        listed; Ansible's order below the first level depends on hashing, this is one of the
        orders it can give)."""
        if group not in self._ordered:
            if group not in self.tree:
                return list(self.groups.get(group, ()))
            levels, seen_groups = [group], {group}
            out: Dict[str, None] = {}
            while levels:
                following: List[str] = []
                for name in levels:
                    own, children = self.tree[name]
                    out.update(dict.fromkeys(own))
                    for child in children:
                        if child not in seen_groups:
                            seen_groups.add(child)
                            following.append(child)
                levels = following
            self._ordered[group] = list(out)
        return self._ordered[group]

    def _term(self, term: str, unmatched: List[str]) -> List[str]:
        """Host names for one term without its `!`/`&` (Ansible's _match_one_pattern)."""
        if not term:
            raise ConfigError("empty term in --limit", hint="write `!name` or `&name`")
        expr, subscript = _split_subscript(term)
        names, any_group = self._enumerate(expr)
        if not names and not any_group:
            unmatched.append(expr)
        if subscript is None or not names:
            return names
        start, end = subscript
        if not end:  # Ansible: [x] and [x:0] are one host
            if not -len(names) <= start < len(names):
                raise ConfigError(
                    f"no host matches the subscript of {shown(term)} in --limit: "
                    f"{shown(expr)} has {len(names)} host{'s' if len(names) != 1 else ''}",
                    hint="subscripts count from 0: group[0] is the first host, group[-1] the last",
                )
            return [names[start]]
        return names[start : (len(names) if end == -1 else end + 1)]

    def _enumerate(self, expr: str) -> Tuple[List[str], bool]:
        """Ansible's _enumerate_matches: the hosts of the groups `expr` matches, then (when
        no group matches, or it is a glob or regex) the hosts it matches by name; and
        whether any group matched (an empty group is no warning)."""
        if not expr.startswith("~") and not any(c in expr for c in "?*["):
            # A name: looked up, not matched against every name. Ansible looks at the hosts
            # too when no group has it, or when it holds a dot (`web1.example.com`).
            groups = [expr] if expr in self.groups else []
            found = list(self.ordered_members(expr)) if groups else []
            if (not groups or "." in expr) and expr in self.hosts:
                found.append(expr)
            return found, bool(groups)
        matches = self._matcher(expr)
        groups = [g for g in self.groups if matches(g)]
        found = [name for group in groups for name in self.ordered_members(group)]
        found.extend(h for h in self.hosts if matches(h))  # a glob or regex: hosts as well
        return found, bool(groups)

    @staticmethod
    def _matcher(term: str) -> Callable[[str], bool]:
        """A `~regex` or a glob (Ansible's _match_list: a regex matches from the start)."""
        if term.startswith("~"):
            regex = limit_regex(term)
            return lambda name: regex.match(name) is not None
        glob = re.compile(fnmatch.translate(term))
        return lambda name: glob.match(name) is not None

    def _names(self) -> List[str]:
        return [*self.groups, *self.hosts]


# Ansible's PATTERN_WITH_SUBSCRIPT: `pattern[3]`, `pattern[-1]`, `pattern[0:2]`, `pattern[1:]`
_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]")


def _split_subscript(term: str) -> Tuple[str, Optional[Tuple[int, Optional[int]]]]:
    """(the pattern, (start, end or None for one host; end -1: to the last)) of a term;
    a regex has no subscript. Ansible's old `[x-y]` is read as `[x:y]`, as Ansible does."""
    found = None if term.startswith("~") else _SUBSCRIPT.fullmatch(term)
    if found is None:
        return term, None
    expr, index, start, _, end = found.groups()
    if index is not None:
        return expr, (int(index), None)
    return expr, (int(start), int(end) if end else -1)


def _listed(value: Any) -> Any:
    """A value as `ansible-inventory --list` prints it: vault-encrypted values as
    `{"__ansible_vault": ENVELOPE}`, never decrypted, `!unsafe` text as
    `{"__ansible_unsafe": TEXT}`, dates in ISO form; values of a wholly encrypted vars file
    (which ansible-inventory prints in clear) as `<vault-encrypted in FILE>`."""
    if isinstance(value, VaultValue):
        return value.to_json()
    if isinstance(value, SecretText):  # from a vault-encrypted vars file: never shown
        return str(value.shown)
    if isinstance(value, UnsafeText):
        return {"__ansible_unsafe": str(value)}
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_listed(v) for v in value]
    return value


def split_host_pattern(pattern: str) -> List[str]:
    """Split a `--limit` pattern into terms, as Ansible does: on commas if there are any,
    else on colons outside `[...]` (unless the whole pattern is an IPv6 address)."""
    if "," in pattern:
        parts = pattern.split(",")
    elif _is_ipv6(pattern.strip()):
        parts = [pattern]
    else:
        if pattern.count("[") != pattern.count("]"):
            raise ConfigError(
                f"unbalanced brackets in --limit {shown(pattern)}",
                hint="a range looks like edge[01:03]; separate terms with commas",
            )
        parts = _SPLIT_ON_COLONS.findall(pattern)
    return [p.strip() for p in parts if p.strip()]


def limit_regex(term: str) -> re.Pattern[str]:
    """The regex of a `~regex` term in --limit; one that does not compile, or that repeats
    a repetition (`(a+)+`, whose matching can take exponential time), is a ConfigError."""
    if len(term) > _MAX_REGEX_CHARS:
        raise ConfigError(
            f"the regular expression {shown(term)} in --limit is longer than "
            f"{_MAX_REGEX_CHARS:,} characters"
        )
    try:
        regex = re.compile(term[1:])
    except (re.error, RecursionError, OverflowError) as exc:
        raise ConfigError(
            f"{shown(term)} in --limit is not a valid regular expression: {printable(str(exc))}"
        ) from None
    if _nested_repeat(term[1:]):
        raise ConfigError(
            f"{shown(term)} in --limit repeats a repetition (like `(a+)+`), which can take "
            "exponential time to match",
            hint="write it without the outer repetition, e.g. ~(a+) or ~edge-.*",
        )
    return regex


def _nested_repeat(pattern: str) -> bool:
    """Whether a repeat (`+`, `*`, `{2,}`) holds another one, read from Python's own regex
    parser (a private module: without it, the check is skipped)."""
    try:
        parser: Any = importlib.import_module("re._parser")
        tree = parser.parse(pattern)
    except Exception:  # compile() above already judged the syntax
        return False
    repeats = {parser.MAX_REPEAT, parser.MIN_REPEAT, getattr(parser, "POSSESSIVE_REPEAT", None)}

    def inner(op: Any, arg: Any) -> List[Any]:
        if op is parser.SUBPATTERN:
            return [arg[-1]]
        if op is parser.BRANCH:
            return list(arg[1])
        if op in (parser.ASSERT, parser.ASSERT_NOT):
            return [arg[1]]
        if op is getattr(parser, "ATOMIC_GROUP", None):
            return [arg]
        return []

    def walk(items: Any, inside: bool) -> bool:
        for op, arg in items:
            if op in repeats:
                many = arg[1] is parser.MAXREPEAT or arg[1] > 1
                if (many and inside) or walk(arg[2], inside or many):
                    return True
            elif any(walk(sub, inside) for sub in inner(op, arg)):
                return True
        return False

    try:
        return walk(tree, False)
    except RecursionError:
        return True


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.strip("[]")).version == 6
    except ValueError:
        return False


def _close_names(term: str, names: Iterable[str]) -> str:
    core = term.lstrip("~")[:200]
    known = list(dict.fromkeys(names))
    close = difflib.get_close_matches(core, known[:20_000], n=5, cutoff=0.5)
    if close:
        return "did you mean " + ", ".join(close) + "?"
    shown_names = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    return f"known hosts and groups: {shown_names}"


# --- loading -----------------------------------------------------------------------------


def load_inventory(path: Path) -> Inventory:
    """Read an inventory file and the `group_vars/` and `host_vars/` beside it; an inventory
    only Ansible reads (INI, a directory, a plugin config, a script) through Ansible's own
    ansible-inventory (controller/ansible_source.py), where it is installed."""
    from mlfleet.controller import ansible_source

    kind = ansible_source.kind_of(path)
    if kind != "yaml":
        return ansible_source.load_with_ansible(
            path,
            kind,
            binary=ansible_source.find_ansible_inventory(os.environ),
            vault_password_files=KEYRING.password_files,
            vault_ids=KEYRING.vault_ids,
        )
    doc = load_yaml_file(path)
    return parse_inventory(doc, str(path), vars_files=VarsFiles(path.parent))


def load_selected_hosts(path: Path, limit: Optional[str]) -> List[Host]:
    """The hosts `limit` selects from the inventory at `path`, every setting of every host
    checked, without touching a host: what `mlfleet check` and each command read first.
    Any bad input is one ConfigError line."""
    inventory = load_inventory(path)
    hosts = inventory.select(limit)
    inventory.touched(hosts)
    return hosts


def find_vars_files(base: Path, kind: str, name: str) -> List[LocatedDict]:
    """The variable mappings of `<base>/<kind>_vars/<name>` (kind: group or host), found and
    ordered as Ansible does: `<name>` (a file, or a directory read recursively in sorted
    order), else `<name>.yml`, `.yaml` or `.json`."""
    return VarsFiles(base)(kind, name)


class VarsFiles:
    """The `group_vars/` and `host_vars/` beside an inventory, as a VarsLookup. Each
    directory is listed once, so a name without a file costs no file-system call (an
    inventory may name 100,000 hosts)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._listings: Dict[str, FrozenSet[str]] = {}

    def __call__(self, kind: str, name: str) -> List[LocatedDict]:
        if "/" in name or "\x00" in name or name.startswith("."):
            return []
        directory = self.base / f"{kind}_vars"
        present = self._listing(directory)
        docs = [_vars_doc(f) for f in _vars_files(directory, name, present)]
        return [d for d in docs if d is not None]

    def _listing(self, directory: Path) -> FrozenSet[str]:
        key = str(directory)
        if key not in self._listings:
            try:
                self._listings[key] = frozenset(os.listdir(directory))
            except OSError:  # no such directory (the usual case), or not one
                self._listings[key] = frozenset()
        return self._listings[key]


def _vars_files(directory: Path, name: str, present: FrozenSet[str]) -> List[Path]:
    for ext in _VARS_EXTENSIONS:
        if name + ext not in present:
            continue
        candidate = directory / (name + ext)
        if candidate.is_dir():
            return _dir_vars_files(candidate)
        if candidate.is_file():
            return [candidate]
    return []


def _dir_vars_files(top: Path) -> List[Path]:
    """The vars files under a directory, depth first in sorted order (a subdirectory's files
    where its name sorts); without recursion, and each directory once (a symlink loop)."""
    found: List[Path] = []
    seen = {top.resolve()}
    stack = [iter(_sorted_entries(top))]
    while stack:
        for path in stack[-1]:
            if path.name.startswith(".") or path.name.endswith("~"):
                continue
            if path.is_dir() and not path.suffix:
                if path.resolve() not in seen:
                    seen.add(path.resolve())
                    stack.append(iter(_sorted_entries(path)))
                    break
            elif path.is_file() and path.suffix in _VARS_EXTENSIONS:
                found.append(path)
        else:
            stack.pop()
    return found


def _sorted_entries(directory: Path) -> List[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError as exc:
        raise ConfigError(
            f"cannot read the directory: {exc.strerror or type(exc).__name__}",
            where=printable(str(directory)),
        ) from None


def _vars_doc(path: Path) -> Optional[LocatedDict]:
    doc = load_yaml_file(path)
    if isinstance(doc, str) and doc.startswith(HEADER):  # a file ansible-vault encrypted
        doc = _encrypted_vars_doc(path)
    if doc is None:
        return None
    if not isinstance(doc, LocatedDict):
        raise ConfigError(
            "a vars file must be a mapping of variable names to values", where=_where(doc, path)
        )
    for key in doc:
        _check_var_name(key, doc.where(key))
    return doc


def _encrypted_vars_doc(path: Path) -> Any:
    """A whole vars file encrypted with ansible-vault: decrypted (a password is needed, as
    Ansible needs one to read such an inventory at all), its text values kept as SecretText,
    which no listing, message or record shows."""
    where = printable(str(path))
    envelope = path.read_text(encoding="utf-8")  # read as YAML already: readable, UTF-8
    text = KEYRING.reveal(VaultValue(envelope, where), f"the vars file {where}")
    return hide_text(load_yaml_text(text, str(path)), where)


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
            "the inventory is empty",
            where=printable(source),
            hint="expected e.g. `all:` with `hosts:`",
        )
    if not isinstance(doc, LocatedDict):
        raise ConfigError(
            "an inventory must be a mapping of group names (normally just `all:`)",
            where=_where(doc, source),
            hint="INI inventories are not read; convert one with "
            "`ansible-inventory -i FILE --list --yaml`",
        )
    builder = _Builder(source, doc.where("all") if "all" in doc else doc.where())
    for key, body in doc.items():  # every top-level key is a group, `hosts:` too (Ansible)
        loc = doc.where(key)
        builder.group(_group_name(key, loc), body, loc, top_level=True)
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
    groups: Dict[str, None] = field(default_factory=dict)  # groups listing it directly


# A host's groups in the order their variables apply, with those variables merged.
_Resolved = Tuple[Tuple[str, ...], Dict[str, Any], Dict[str, str]]


class _Builder:
    """Collects groups and hosts while walking the document, then resolves them."""

    def __init__(self, source: str, all_where: str) -> None:
        self.source = source
        self.groups: Dict[str, _Group] = {"all": _Group("all", all_where)}
        self.hosts: Dict[str, _HostEntry] = {}
        self.warnings: List[str] = []  # what Ansible warns about and skips, with file:line
        self.listings = 0  # host names listed under groups, ranges expanded
        self.steps = 0  # parent links followed to find hosts' groups

    def group(self, name: str, body: Any, where: str, top_level: bool = False) -> bool:
        """Read a group's body; False (with a warning, as Ansible skips it) when the body
        is not a group definition (text, a list), which defines nothing."""
        if body is not None and not isinstance(body, LocatedDict):
            self.warnings.append(
                f"{where}: skipping {shown(name)}: it is {_kind(body)}, not a group definition "
                "(a mapping with `hosts:`, `children:`, `vars:`), as Ansible skips it"
            )
            return False
        group = self.groups.setdefault(name, _Group(name, where))
        if body is None:
            return True
        for key, value in body.items():
            loc = body.where(key)
            if key == "vars":
                self._group_vars(group, value, loc)
            elif key == "hosts":
                self._hosts(group, value, loc)
            elif key == "children":
                self._children(group, value, loc)
            elif top_level and name in GROUP_KEYS:  # e.g. hosts listed at the top level
                raise ConfigError(
                    f"unknown key {shown(key)} in group {shown(name)}",
                    where=loc,
                    hint=f"a top-level `{name}:` is a group named {name}, as in Ansible; "
                    f"to list {name} of every host, put `{name}:` under `all:`",
                )
            else:
                raise ConfigError(
                    f"unknown key {shown(key)} in group {shown(name)}",
                    where=loc,
                    hint="a group has `hosts:`, `children:` and `vars:`; "
                    "group variables go under `vars:`",
                )
        return True

    def _group_vars(self, group: _Group, doc: Any, where: str) -> None:
        if doc is None:
            return
        if not isinstance(doc, LocatedDict):
            raise ConfigError(
                f"`vars` of group {shown(group.name)} must be a mapping, not {_kind(doc)}",
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
                        f"`ansible_group_priority` of group {shown(group.name)} must be a whole "
                        f"number, not {shown(value)}",
                        where=loc,
                    )
                group.priority = priority
                continue
            group.vars[key], group.origins[key] = value, loc

    def _hosts(self, group: _Group, doc: Any, where: str) -> None:
        what = f"`hosts` of group {shown(group.name)}"
        for key, body, loc in _entries(doc, where, what, _HOSTS_HINT):
            if isinstance(key, (int, float)) and not isinstance(key, bool):
                raise ConfigError(
                    f"host name {shown(key)} is a number, not text (Ansible refuses it too)",
                    where=loc,
                    hint=f"quote it: '{key}':",
                )
            pattern, port = _split_port(_name_text(key, "host", loc), loc)
            names = self._expand(group, pattern, loc)
            if body is not None and not isinstance(body, LocatedDict):
                raise ConfigError(
                    f"host {shown(pattern)}: expected its variables as a mapping, not "
                    f"{_kind(body)}",
                    where=loc,
                    hint="e.g. `web1: {ansible_host: 10.0.0.5}`, or nothing after the colon",
                )
            located: Optional[LocatedDict] = body
            if located is not None:
                for var in located:
                    _check_var_name(var, located.where(var))
            for name in names:
                entry = self.hosts.get(name)
                if entry is None:
                    check_host_name(name, loc)
                    if len(self.hosts) >= MAX_HOSTS:
                        raise ConfigError(
                            f"the inventory names more than {MAX_HOSTS:,} hosts (the limit), "
                            f"reached at {shown(pattern)}",
                            where=loc,
                            hint="split the fleet into several inventories",
                        )
                    entry = self.hosts[name] = _HostEntry(loc)
                group.hosts[name] = None
                entry.groups[group.name] = None
                if port is not None:
                    entry.vars["ansible_port"], entry.origins["ansible_port"] = port, loc
                if located is not None:
                    for var, value in located.items():
                        entry.vars[var], entry.origins[var] = value, located.where(var)

    def _expand(self, group: _Group, pattern: str, where: str) -> List[str]:
        """The names of a host pattern, its count checked against the limits first."""
        try:
            count = count_host_pattern(pattern)
            if count > MAX_RANGE_HOSTS:
                raise HostRangeTooLarge(pattern, count, MAX_RANGE_HOSTS)
            if self.listings + count > MAX_MEMBERSHIPS:
                raise ConfigError(
                    f"groups list hosts more than {MAX_MEMBERSHIPS:,} times (the limit), "
                    f"reached at {shown(pattern)} in group {shown(group.name)}",
                    where=where,
                    hint="list a host in fewer groups, or split the fleet into inventories",
                )
            names = expand_host_pattern(pattern)
        except HostRangeTooLarge as exc:
            raise ConfigError(str(exc), where=where) from None
        except HostRangeError as exc:
            raise ConfigError(str(exc), where=where, hint=_RANGE_HINT) from None
        self.listings += len(names)
        return names

    def _children(self, group: _Group, doc: Any, where: str) -> None:
        what = f"`children` of group {shown(group.name)}"
        hint = "list child groups as keys: `gpu:` on its own line, or `gpu: {hosts: ...}`"
        for key, body, loc in _entries(doc, where, what, hint):
            name = _group_name(key, loc)
            if name == "all":
                raise ConfigError(
                    "`all` cannot be a child group", where=loc, hint="every group is inside `all`"
                )
            if name == group.name:
                raise ConfigError(f"group {shown(name)} lists itself as a child", where=loc)
            if not self.group(name, body, loc) and name not in self.groups:
                # Ansible links a skipped child only if that group exists already.
                raise ConfigError(
                    f"{shown(name)} under group {shown(group.name)} is not a known group, and "
                    "what is written under it is no group definition",
                    where=loc,
                    hint="define the group (`hosts:`, `children:`, `vars:` under it) or list "
                    "its hosts under `hosts:`",
                )
            group.children.setdefault(name, loc)
            self.groups[name].parents[group.name] = None

    # --- resolving: linear in groups, their links, hosts and memberships ----------------

    def finish(self, vars_files: VarsLookup) -> Inventory:
        self._place_ungrouped()
        for group in self.groups.values():  # top-level groups hang under `all`
            if group.name != "all" and not group.parents:
                self.groups["all"].children.setdefault(group.name, group.where)
                group.parents["all"] = None
        self._refuse_cycles()
        depth = self._depths()
        order = sorted(self.groups, key=lambda g: (depth[g], self.groups[g].priority, g))
        rank = {name: i for i, name in enumerate(order)}
        group_files = {g: _checked(vars_files("group", g)) for g in self.groups}
        resolved: Dict[FrozenSet[str], _Resolved] = {}
        memberships = 0
        hosts: Dict[str, Host] = {}
        for name, entry in self.hosts.items():
            key = frozenset(entry.groups)
            if key not in resolved:
                resolved[key] = self._resolve(key, rank, group_files)
            names, group_vars, group_origins = resolved[key]
            memberships += len(names)
            if memberships > MAX_MEMBERSHIPS:
                raise ConfigError(
                    f"hosts are in groups more than {MAX_MEMBERSHIPS:,} times, counting each "
                    f"group's ancestors (the limit), reached at host {shown(name)}",
                    where=entry.where,
                    hint="nest groups less deeply or list hosts in fewer groups",
                )
            merged, origins = dict(group_vars), dict(group_origins)
            for values, where in [
                (entry.vars, entry.origins.__getitem__),
                *((d, d.where) for d in _checked(vars_files("host", name))),
            ]:
                for var, value in values.items():
                    merged[var], origins[var] = value, where(var)
            hosts[name] = Host(name, merged, names, origins, entry.where)
        members: Dict[str, List[str]] = {g: [] for g in self.groups}
        for name, host in hosts.items():
            for group_name in host.groups:
                members[group_name].append(name)
        tree = {
            name: (list(group.hosts), list(group.children)) for name, group in self.groups.items()
        }
        own, children = tree["all"]  # Ansible makes `ungrouped` the first child of `all`
        tree["all"] = (own, ["ungrouped", *(c for c in children if c != "ungrouped")])
        return Inventory(
            source=self.source, hosts=hosts, groups=members, tree=tree, warnings=self.warnings
        )

    def _place_ungrouped(self) -> None:
        """Hosts in no group but `all` go to `ungrouped`; nobody else stays there."""
        ungrouped = self.groups.setdefault("ungrouped", _Group("ungrouped", self.source))
        for entry in self.hosts.values():
            entry.groups.pop("ungrouped", None)
        ungrouped.hosts = {}
        for name, entry in self.hosts.items():
            if not any(g != "all" for g in entry.groups):
                ungrouped.hosts[name] = None
                entry.groups["ungrouped"] = None

    def _refuse_cycles(self) -> None:
        """A loop of `children:` is refused with its chain; depth first, without recursion
        (a chain of groups may be thousands long)."""
        state: Dict[str, int] = {}  # 1: on the current path, 2: done
        for root in self.groups:
            if root in state:
                continue
            path = [root]
            state[root] = 1
            stack = [iter(self.groups[root].children.items())]
            while stack:
                for child, loc in stack[-1]:
                    if state.get(child) == 1:
                        raise ConfigError(
                            f"groups form a loop: {_chain([*path[path.index(child) :], child])}",
                            where=loc,
                            hint="a group cannot contain one of its ancestors",
                        )
                    if child not in state:
                        state[child] = 1
                        path.append(child)
                        stack.append(iter(self.groups[child].children.items()))
                        break
                else:
                    state[path.pop()] = 2
                    stack.pop()

    def _depths(self) -> Dict[str, int]:
        """Each group's longest chain of `children:` down from `all` (groups in topological
        order: a group once all its parents are placed)."""
        depth = {"all": 0}
        waiting = {name: len(group.parents) for name, group in self.groups.items()}
        ready = ["all"]
        while ready:
            name = ready.pop()
            for child in self.groups[name].children:
                depth[child] = max(depth.get(child, 0), depth[name] + 1)
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        return depth

    def _resolve(
        self,
        direct: FrozenSet[str],
        rank: Mapping[str, int],
        group_files: Mapping[str, Sequence[LocatedDict]],
    ) -> _Resolved:
        """The groups of a host listed directly in `direct` (their ancestors and `all`), in
        the order their variables apply, and those variables merged (see the module
        docstring): the same for every host listed in the same groups."""
        found: Dict[str, None] = dict.fromkeys([*direct, "all"])
        todo = list(found)
        while todo:
            parents = self.groups[todo.pop()].parents
            self.steps += len(parents) + 1
            for parent in parents:
                if parent not in found:
                    found[parent] = None
                    todo.append(parent)
        if self.steps > MAX_RESOLVE_STEPS:
            raise ConfigError(
                f"the groups' `children:` links take more than {MAX_RESOLVE_STEPS:,} steps to "
                f"resolve (the limit), reached at a host of group {shown(min(direct))}",
                where=self.groups[min(direct)].where,
                hint="list a group under fewer parents: under one of its ancestors is enough",
            )
        names = tuple(sorted(found, key=rank.__getitem__))
        others = [g for g in names if g != "all"]
        # Ansible's default VARIABLE_PRECEDENCE: every group's inventory-file `vars:` (`all`
        # first), then group_vars/all, then the other groups' group_vars/ files.
        layers: List[Tuple[Mapping[str, Any], Callable[[str], str]]] = []
        everyone = self.groups["all"]
        layers.append((everyone.vars, everyone.origins.__getitem__))
        layers += [(self.groups[g].vars, self.groups[g].origins.__getitem__) for g in others]
        layers += [(d, d.where) for d in group_files.get("all", ())]
        layers += [(d, d.where) for g in others for d in group_files.get(g, ())]
        merged: Dict[str, Any] = {}
        origins: Dict[str, str] = {}
        for values, where in layers:
            for var, value in values.items():
                merged[var], origins[var] = value, where(var)
        return names, merged, origins


_RANGE_HINT = "ranges look like edge[01:20] or node-[a:c]"
_HOSTS_HINT = "write each host as a key: `web1:` on its own line, or `web1: {ansible_host: ...}`"


def _checked(docs: Sequence[LocatedDict]) -> Sequence[LocatedDict]:
    """Vars-file mappings with their variable names checked (a lookup may come from a
    caller of parse_inventory, not only from VarsFiles)."""
    for doc in docs:
        for key in doc:
            _check_var_name(key, doc.where(key))
    return docs


def _chain(names: List[str]) -> str:
    if len(names) <= 8:
        return " -> ".join(names)
    return (
        f"{' -> '.join(names[:3])} -> ... -> {' -> '.join(names[-3:])} ({len(names) - 1:,} groups)"
    )


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
            raise ConfigError(f"host {shown(pattern)}: expected [address]:port", where=where)
    elif len(colons) == 1:
        head, port_text = pattern[: colons[0]], pattern[colons[0] + 1 :]
    else:
        return pattern, None
    if port_text is None:
        return head, None
    port = as_int(port_text)
    if port is None or not 1 <= port <= 65535:
        raise ConfigError(
            f"host {shown(pattern)}: port {shown(port_text)} is not a number from 1 to 65535",
            where=where,
            hint="write host:port, e.g. web1:2222",
        )
    return head, port


def _name_text(key: Any, what: str, where: str) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, int, float)) or not str(key).strip():
        raise ConfigError(f"{what} name {shown(key)} is not a name", where=where)
    return str(key)


def check_host_name(name: str, where: str) -> None:
    """An empty or unprintable host name is refused; spaces are accepted, as Ansible accepts
    them (`hosts: node1 node2` is one host named "node1 node2"): such a name cannot be an
    SSH address, which `Host.address` says for a host a command touches."""
    if name and name.isprintable():  # the usual case, at C speed
        return
    if not name.strip():
        raise ConfigError(f"host name {shown(name)} is empty", where=where)
    if not name.isprintable():
        raise ConfigError(
            f"host name {shown(name)} contains a control or other unprintable character",
            where=where,
            hint="a host name is printable text; its address can go in `ansible_host`",
        )


def _group_name(key: Any, where: str) -> str:
    name = _name_text(key, "group", where)
    if not _GROUP_NAME.fullmatch(name):
        raise ConfigError(
            f"group name {shown(name)} is not valid",
            where=where,
            hint="use letters, digits and underscores; dashes and dots are accepted",
        )
    return name


def _check_var_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"variable name {shown(name)} is not text", where=where)
    if not name.isprintable():
        raise ConfigError(
            f"variable name {shown(name)} contains a control or other unprintable character",
            where=where,
        )


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return shown(value)


def _where(doc: Any, source: Any) -> str:
    return doc.where() if isinstance(doc, (LocatedDict, LocatedList)) else printable(str(source))
