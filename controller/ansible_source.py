"""Inventories mlfleet's own YAML reader does not read, read through Ansible's own reader.

INI files, directories of inventory sources, inventory plugin configurations (a cloud's
`*.aws_ec2.yml`, `netbox.yml`, `constructed.yml`), inventory scripts and TOML files are
what `ansible-inventory -i SOURCE --list` prints: its hosts, groups and every host's
variables merged exactly as Ansible merges them (group_vars/ and host_vars/ beside the
source included). ansible-inventory is an optional extra (`pip install 'mlfleet[ansible]'`);
without it, such a source is one line saying what it is and how to proceed.

- `kind_of(path)` tells the kinds apart from a look at the file (no full parse), as Ansible's
  own plugins would decide: "yaml" (mlfleet reads it itself), "ini", "directory", "plugin",
  "script" or "toml".
- `find_ansible_inventory(environ)` finds the ansible-inventory to run.
- `load_with_ansible(path, kind, binary=...)` runs it (argv, no shell, stdin closed, a
  timeout) and turns its JSON into an `Inventory` with `inventory_from_ansible_json`, a pure
  function; a failure is one ConfigError line with Ansible's own reason (`ansible_failure`).

Vault: ansible-inventory (2.19) prints an inline `!vault` value as `{"__ansible_vault":
"<the envelope>"}`, with or without a password; it becomes an ansible_vault.VaultValue,
still encrypted (decrypted only where a command needs it, as for a YAML inventory). A
wholly encrypted vars file is another matter: ansible-inventory cannot read it without the
password (one line saying so) and, given one (`--vault-password-file`, `--vault-id`, or
ANSIBLE_VAULT_PASSWORD_FILE / ansible.cfg, which it reads itself), prints its values
decrypted. `!unsafe` values arrive as `{"__ansible_unsafe": text}` and become
templating.UnsafeText, as the YAML reader makes them (text never evaluated as a template).

What --list does not say, and so an Inventory from it does not know: the file:line of a
value (its origin is the source), `ansible_group_priority` (a host's groups are ordered by
depth, then name), and the place of hosts listed directly under `all` among the others
(hosts follow Ansible's walk of the groups, see `_host_order`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from mlfleet.controller import inventory
from mlfleet.controller.ansible_vault import PASSWORD_HINT, VaultValue
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hosts import Host
from mlfleet.controller.plaintext import printable
from mlfleet.controller.templating import UnsafeText
from mlfleet.controller.yamlsource import shown

KINDS = ("yaml", "ini", "directory", "plugin", "script", "toml")
ANSIBLE_INVENTORY_ENV = "MLFLEET_ANSIBLE_INVENTORY"  # a path; empty: as if not installed
TIMEOUT_SECONDS = 120.0
INSTALL_HINT = "install the extra: pip install 'mlfleet[ansible]'"

# Ansible only warns where a source (or a file in a directory) cannot be parsed, and goes on
# with less or no inventory; mlfleet refuses instead (a deployment to half a fleet because a
# file was skipped is worse than no deployment). The rest only quiets what is noise here.
ANSIBLE_SETTINGS: Dict[str, str] = {
    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
    "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
    "ANSIBLE_LOCALHOST_WARNING": "False",
    "ANSIBLE_DEPRECATION_WARNINGS": "False",
    "ANSIBLE_DEVEL_WARNING": "False",
    "ANSIBLE_NOCOLOR": "True",
    "ANSIBLE_FORCE_COLOR": "False",
    "ANSIBLE_VERBOSITY": "0",  # a traceback only comes with -vvv
    "PYTHONWARNINGS": "ignore",  # e.g. cryptography's DeprecationWarnings on stderr
}

_SNIFF_BYTES = 1 << 20  # a plugin config is small; an inventory's kind shows in its head
_YAML_EXTENSIONS = (".yml", ".yaml")  # where Ansible's `auto` plugin looks for `plugin:`
# A top-level `plugin:` key, as Ansible's auto plugin reads it (a YAML inventory with one is
# refused by its yaml plugin: "Plugin configuration YAML file, not YAML inventory").
_PLUGIN_KEY = re.compile(r"""^(?:plugin|"plugin"|'plugin')[ \t]*:(?:\s|$)""", re.M)
# A YAML mapping key at the start of a line: `all:`, `"web servers":`, `? complex`.
_YAML_KEY = re.compile(r"""^(?:"[^"]*"|'[^']*'|[^\s"'#][^\s]*?)[ \t]*:(?:[ \t]|$)""")
_YAML_START = ("---", "...", "%", "{", "- ", "? ", "&", "*", "!")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# ansible-core 2.19: "[WARNING]: Failed to parse inventory with 'ini' plugin: REASON";
# up to 2.18: "[WARNING]:  * Failed to parse SOURCE with ini plugin: REASON"; releases
# older still: "Plugin ini failed: REASON".
_PLUGIN_FAILURES = (
    re.compile(r"Failed to parse inventory with '(?P<plugin>[\w.]+)' plugin: (?P<reason>.*)"),
    re.compile(
        r"\* Failed to parse (?P<origin>.+?) with (?P<plugin>[\w.]+) plugin: (?P<reason>.*)"
    ),
    re.compile(r"^Plugin (?P<plugin>[\w.]+) failed: (?P<reason>.*)"),
)
_ORIGIN = re.compile(r"^Origin: (?P<origin>.+?(?::\d+)?)(?::\d+)?$")  # path[:line][:column]
_ERROR = re.compile(r"^(?:\[ERROR\]: |ERROR! )(?P<reason>.*)")
_INI_PREFIX = "Failed to parse inventory: "  # the ini plugin's, before its reason
_GENERIC_ERRORS = ("No inventory was parsed", "Completely failed to parse inventory source")
_PLUGIN_OF_KIND = {
    "ini": "ini",
    "plugin": "auto",
    "script": "script",
    "yaml": "yaml",
    "toml": "toml",
}
_VAULT_HINT = f"a vault-encrypted file needs its password: {PASSWORD_HINT}"

# group -> its hosts (or its children), as --list lists them
_Listing = Dict[str, List[str]]


# --- which kind of source -----------------------------------------------------------------


def kind_of(path: Path) -> str:
    """What kind of inventory source `path` is, from a look at it (no full parse): one of
    `KINDS`. Ansible tries its plugins in turn (script, auto, yaml, ini, toml) and keeps the
    first that parses; this picks the one that would, for the sources people write:

    - a directory: "directory" (Ansible reads every file in it);
    - an executable file starting with `#!` (or a binary): "script";
    - a `.yml`/`.yaml` file with a top-level `plugin:` key: "plugin";
    - a `.toml` file: "toml";
    - a file whose first line that is not blank or a comment is an INI section (`[web]`,
      `[web:vars]`), or a host line that is no YAML (`web1 ansible_host=10.0.0.1`, `web1`):
      "ini" (Ansible reads any file that is not a YAML mapping as INI);
    - anything else, an empty file and a path that cannot be read included: "yaml", for
      mlfleet's own reader and its errors.
    """
    if path.is_dir():
        return "directory"
    try:
        with open(path, "rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    except OSError:
        return "yaml"
    if os.access(path, os.X_OK) and (head.startswith(b"#!") or head.startswith(b"\x7fELF")):
        return "script"  # an executable without either is no script to Ansible (exec fails)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    if path.suffix.lower() in _YAML_EXTENSIONS and _PLUGIN_KEY.search(text):
        return "plugin"
    if path.suffix.lower() == ".toml":
        return "toml"
    return "ini" if _looks_like_ini(text) else "yaml"


def _looks_like_ini(text: str) -> bool:
    """The first line that is neither blank nor a comment is INI, not YAML."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):  # a section; as YAML a list, which is no inventory
            return True
        return not (line.startswith(_YAML_START) or line == "-" or _YAML_KEY.match(line))
    return False


def find_ansible_inventory(environ: Mapping[str, str]) -> Optional[str]:
    """The ansible-inventory to run: `$MLFLEET_ANSIBLE_INVENTORY` if set (empty: none, as
    if Ansible were not installed), else the one on `$PATH`, else the one beside this
    Python (the same virtualenv, whose bin/ may not be on PATH); None if there is none."""
    if ANSIBLE_INVENTORY_ENV in environ:
        return environ[ANSIBLE_INVENTORY_ENV] or None
    found = shutil.which("ansible-inventory", path=environ.get("PATH"))
    if found:
        return found
    beside = Path(sys.executable).parent / "ansible-inventory"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


# --- running ansible-inventory (the thin shell) -------------------------------------------


def ansible_inventory_command(
    binary: str,
    path: Path,
    vault_password_files: Sequence[str] = (),
    vault_ids: Sequence[str] = (),
) -> List[str]:
    """The argv that lists `path`'s inventory as JSON, every host's variables merged (no
    `--export`: that one keeps group variables on their groups). Options take their
    values with `=`, so a path starting with `-` stays a path."""
    argv = [binary, f"--inventory={path}", "--list"]
    argv += [f"--vault-id={v}" for v in vault_ids]
    argv += [f"--vault-password-file={f}" for f in vault_password_files]
    return argv


def ansible_environment(environ: Mapping[str, str]) -> Dict[str, str]:
    """The environment ansible-inventory runs in: the caller's (ANSIBLE_CONFIG, vault
    password settings and a plugin's cloud credentials live there) with `ANSIBLE_SETTINGS`."""
    return {**environ, **ANSIBLE_SETTINGS}


def load_with_ansible(
    path: Path,
    kind: str,
    *,
    binary: Optional[str],
    vault_password_files: Sequence[str] = (),
    vault_ids: Sequence[str] = (),
    timeout: float = TIMEOUT_SECONDS,
    environ: Optional[Mapping[str, str]] = None,
) -> inventory.Inventory:
    """The inventory `ansible-inventory` reads from `path` (of `kind`, from `kind_of`).

    `binary` None (see `find_ansible_inventory`): a ConfigError saying what the source is
    and how to proceed. `vault_password_files` and `vault_ids` (as given on mlfleet's
    command line) are passed on: ansible-inventory needs a password only for a wholly
    encrypted vars file; inline vault values stay encrypted either way. It runs in the
    caller's directory and environment (`environ`, default os.environ), so an ansible.cfg
    there applies as it would to the user's own ansible-inventory. Ansible's failure, a
    timeout or output that is no inventory: one ConfigError line naming the file.
    """
    if binary is None:
        raise not_installed(path, kind)
    argv = ansible_inventory_command(binary, path, vault_password_files, vault_ids)
    env = ansible_environment(os.environ if environ is None else environ)
    code, out, err = _run(argv, env, timeout, path)
    if code != 0:
        raise ansible_failure(err.decode("utf-8", errors="replace"), code, path, kind)
    try:
        doc = json.loads(out)
    except ValueError as exc:
        raise ConfigError(
            f"ansible-inventory printed no JSON inventory ({exc})",
            where=printable(str(path)),
            hint=f"run `{shlex.join(argv)}` to see what it prints",
        ) from None
    return inventory_from_ansible_json(doc, str(path))


def _run(
    argv: List[str], env: Mapping[str, str], timeout: float, path: Path
) -> Tuple[int, bytes, bytes]:
    """Run `argv` to its end in a session of its own, output read whole; on a timeout or an
    interrupt, the whole session (a plugin's or script's children too) is killed."""
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env), start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise ConfigError(
            f"cannot run {printable(argv[0])}: {exc.strerror or type(exc).__name__}",
            where=printable(str(path)),
            hint=f"set {ANSIBLE_INVENTORY_ENV} to an ansible-inventory, or {INSTALL_HINT}",
        ) from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        raise ConfigError(
            f"ansible-inventory did not finish within {timeout:g} s",
            where=printable(str(path)),
            hint="a plugin may be waiting for its cloud or its credentials; try "
            f"`ansible-inventory -i {shlex.quote(str(path))} --list`",
        ) from None
    except BaseException:
        _kill_session(proc)
        raise
    return proc.returncode, out, err


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


# --- messages (pure, but for a look at a directory's failed file) -------------------------


def not_installed(path: Path, kind: str) -> ConfigError:
    """The line for a source only Ansible reads, when ansible-inventory is not installed."""
    where = printable(str(path))
    convert = f"ansible-inventory -i {shlex.quote(str(path))} --list --yaml > inventory.yml"
    what = {
        "ini": "an INI inventory",
        "toml": "a TOML inventory",
        "directory": "a directory of inventory sources",
        "plugin": "an inventory plugin configuration (`plugin:`)",
        "script": "an executable inventory script",
    }.get(kind, f"a {kind} inventory source")
    if kind == "plugin":
        hint = f"{INSTALL_HINT}, and the plugin's collection (ansible-galaxy collection install)"
    elif kind == "directory":
        hint = f"{INSTALL_HINT}, or point -i at one YAML inventory file"
    else:
        hint = f"{INSTALL_HINT}, or convert it once: {convert}"
    return ConfigError(
        f"{what}, which mlfleet reads through Ansible's ansible-inventory (not found)",
        where=where,
        hint=hint,
    )


def ansible_failure(stderr: str, returncode: int, path: Path, kind: str) -> ConfigError:
    """One line for ansible-inventory's failure: Ansible's own reason (the plugin that
    matches the source's kind, for a file it could not parse; for a directory, the file's
    own kind), and the file it names; never a traceback."""
    lines = [_ANSI.sub("", line).strip() for line in stderr.splitlines()]
    failures = _plugin_failures(lines)
    errors = [m.group("reason").strip() for m in map(_ERROR.match, lines) if m]
    specific = [e for e in errors if not e.startswith(_GENERIC_ERRORS)]
    failed_source = next(
        (e.split("inventory source ", 1)[1] for e in errors if e.startswith(_GENERIC_ERRORS[1])),
        None,
    )
    reason, origin = _pick_failure(failures, specific, failed_source, path, kind)
    if reason is None:
        last = next((line for line in reversed(lines) if line), "")
        reason = errors[0] if errors else last or f"it exited with status {returncode}"
    hint = (
        _VAULT_HINT
        if "vault" in reason.lower() and "secret" in reason.lower()
        else f"`ansible-inventory -i {shlex.quote(str(path))} --list` shows Ansible's whole message"
    )
    return ConfigError(
        f"ansible-inventory cannot read it: {_visible(reason)}",
        where=_visible(origin or str(path)),
        hint=hint,
    )


def _visible(text: str) -> str:
    """Ansible's words as one printable line: controls escaped (plaintext.printable), and
    so is any other character Python does not call printable (an unassigned code point from
    the file quoted back)."""
    return "".join(
        c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) > 0xFF else f"\\x{ord(c):02x}"
        for c in printable(text)
    )


def _plugin_failures(lines: List[str]) -> List[Tuple[str, str, Optional[str]]]:
    """(plugin, reason, the source it names or None) for each plugin's failure."""
    found: List[Tuple[str, str, Optional[str]]] = []
    for i, line in enumerate(lines):
        match = next((m for m in (p.search(line) for p in _PLUGIN_FAILURES) if m), None)
        if match is None:
            continue
        origin = match.groupdict().get("origin")
        for following in lines[i + 1 : i + 12]:  # 2.19 names it in an `Origin:` line
            if origin is not None or following.startswith("[") or _ERROR.match(following):
                break
            named = _ORIGIN.match(following)
            if named and not named.group("origin").startswith("<"):
                origin = named.group("origin")
        reason = match.group("reason").strip()
        if reason.startswith(_INI_PREFIX):
            reason = reason[len(_INI_PREFIX) :].strip()
        found.append((match.group("plugin"), reason, origin))
    return found


def _pick_failure(
    failures: List[Tuple[str, str, Optional[str]]],
    specific_errors: List[str],
    failed_source: Optional[str],
    path: Path,
    kind: str,
) -> Tuple[Optional[str], Optional[str]]:
    """(reason, origin): an error Ansible raised itself, else the failure of the plugin that
    should have read the source (for a directory: the one for the kind of its failed file)."""
    if specific_errors:
        return specific_errors[0], None
    if not failures:
        return None, failed_source
    source = failed_source or (str(path) if kind != "directory" else None)
    if kind == "directory" and source is not None:
        kind = kind_of(Path(source))  # the one look at a file here
    wanted = _PLUGIN_OF_KIND.get(kind)
    chosen = next(
        (f for f in failures if f[0].rsplit(".", 1)[-1] == wanted and _same_file(f[2], source)),
        failures[0],
    )
    _, reason, origin = chosen
    if origin is None:  # another plugin may have named the line of the same failure
        origin = next((o for _, r, o in failures if r == reason and o is not None), source)
    return reason, origin


def _same_file(origin: Optional[str], source: Optional[str]) -> bool:
    """Whether a failure's origin (`path[:line]`, or None when Ansible names none) is the
    source; Ansible names sources by absolute path."""
    if origin is None or source is None:
        return True
    return os.path.abspath(re.sub(r":\d+$", "", origin)) == os.path.abspath(source)


# --- ansible-inventory's JSON -> Inventory (pure) -----------------------------------------


def inventory_from_ansible_json(doc: Any, source: str) -> inventory.Inventory:
    """The Inventory `ansible-inventory --list` printed (`doc`, parsed JSON) for `source`.

    Hosts in the order Ansible walks them (`_host_order`); each host's `groups` are every
    group it is in, through children, `all` first, then by depth and name; its `vars` are
    --list's merged hostvars (an `!unsafe` value as UnsafeText, a `!vault` value as a
    VaultValue, as the YAML reader makes them); their origin is `source` (`where`, as --list
    gives no lines). `all` and
    `ungrouped` are always among the groups, and so is every group --list names (it leaves
    out empty ones except where a parent lists them as children).
    """
    where = printable(source)
    if not isinstance(doc, Mapping):
        raise _bad_output(where, f"a JSON {type(doc).__name__}, not an object")
    hostvars = _hostvars(doc, where)
    hosts_of: _Listing = {}
    children_of: _Listing = {"all": [], "ungrouped": []}
    for name, body in doc.items():
        if name == "_meta":
            continue
        if not isinstance(body, Mapping):
            raise _bad_output(where, f"group {shown(name)} is not an object")
        hosts_of[name] = _names(body, "hosts", name, where)
        children_of[name] = _names(body, "children", name, where)
        for child in children_of[name]:
            children_of.setdefault(child, [])
    if "ungrouped" not in children_of["all"]:
        children_of["all"].insert(0, "ungrouped")
    depth, parents = _depths(children_of, where)
    order = _host_order(children_of, hosts_of)
    if len(order) > inventory.MAX_HOSTS:
        raise ConfigError(
            f"the inventory has {len(order):,} hosts; the limit is {inventory.MAX_HOSTS:,}",
            where=where,
            hint="split the fleet into several inventories",
        )
    direct: Dict[str, Dict[str, None]] = {name: {} for name in order}
    for group, names in hosts_of.items():
        for name in names:
            direct[name][group] = None
    resolved: Dict[FrozenSet[str], Tuple[str, ...]] = {}
    hosts: Dict[str, Host] = {}
    memberships = 0
    for name in order:
        key = frozenset(direct[name])
        if key not in resolved:
            resolved[key] = _groups_of(key, parents, depth)
        memberships += len(resolved[key])
        if memberships > inventory.MAX_MEMBERSHIPS:
            raise ConfigError(
                f"hosts are in groups more than {inventory.MAX_MEMBERSHIPS:,} times, counting "
                f"each group's ancestors (the limit), reached at host {shown(name)}",
                where=where,
            )
        inventory.check_host_name(name, where)  # printable: it reaches the terminal
        variables = {var: _value(value, where) for var, value in hostvars.get(name, {}).items()}
        hosts[name] = Host(name, variables, resolved[key], {}, where)
    groups: Dict[str, List[str]] = {g: [] for g in _group_order(children_of)}
    for name, host in hosts.items():
        for group in host.groups:
            groups[group].append(name)
    # Each group's own hosts and children as listed, for `group[0]` subscripts (`all`'s own
    # hosts are not in --list).
    tree = {g: (list(hosts_of.get(g, ())), list(children_of[g])) for g in groups}
    return inventory.Inventory(source=source, hosts=hosts, groups=groups, tree=tree)


def _hostvars(doc: Mapping[str, Any], where: str) -> Mapping[str, Mapping[str, Any]]:
    meta = doc.get("_meta", {})
    hostvars = meta.get("hostvars", {}) if isinstance(meta, Mapping) else None
    if not isinstance(hostvars, Mapping) or not all(
        isinstance(v, Mapping) for v in hostvars.values()
    ):
        raise _bad_output(where, "`_meta.hostvars` is not an object of objects")
    return hostvars


def _names(body: Mapping[str, Any], key: str, group: str, where: str) -> List[str]:
    names = body.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _bad_output(where, f"the {key} of group {shown(group)} are not a list of names")
    return names


def _bad_output(where: str, what: str) -> ConfigError:
    return ConfigError(
        f"ansible-inventory printed an inventory mlfleet cannot read: {what}",
        where=where,
        hint="check `ansible-inventory --version` (mlfleet reads ansible-core 2.16 and later)",
    )


def _depths(children_of: _Listing, where: str) -> Tuple[Dict[str, int], Dict[str, List[str]]]:
    """Each group's depth (its longest chain of children down from `all`, as Ansible's
    Group.depth) and parents; groups in topological order, without recursion."""
    parents: Dict[str, List[str]] = {g: [] for g in children_of}
    for group, children in children_of.items():
        for child in dict.fromkeys(children):
            parents[child].append(group)
    waiting = {g: len(p) for g, p in parents.items()}
    depth = {"all": 0}
    ready = ["all"]
    while ready:
        group = ready.pop()
        for child in dict.fromkeys(children_of[group]):
            depth[child] = max(depth.get(child, 0), depth[group] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    stuck = sorted(g for g, n in waiting.items() if n > 0 or g not in depth)
    if stuck:
        raise _bad_output(where, f"group {shown(stuck[0])} is not under `all` or in a loop")
    return depth, parents


def _host_order(children_of: _Listing, hosts_of: _Listing) -> List[str]:
    """Hosts in the order of Ansible's `Group.get_hosts()` for `all` (what `ansible all
    --list-hosts` prints): a group's own hosts, then its descendants' level by level (a
    level's groups in the order they were reached; Ansible walks a level as a set). `all`'s
    own hosts, which --list does not print, come where their other groups put them."""
    ordered: Dict[str, None] = dict.fromkeys(["all", *children_of["all"]])
    level = list(ordered)
    while level:
        reached: Dict[str, None] = {}
        for group in level:
            for child in children_of[group]:
                if child not in ordered:
                    reached[child] = None
        ordered.update(reached)
        level = list(reached)
    found: Dict[str, None] = {}
    for group in ordered:
        found.update(dict.fromkeys(hosts_of.get(group, ())))
    return list(found)


def _group_order(children_of: _Listing) -> List[str]:
    """Groups as Ansible walks them from `all` (depth first, children in listed order)."""
    seen: Dict[str, None] = {"all": None}
    stack = [iter(children_of["all"])]
    while stack:
        for child in stack[-1]:
            if child not in seen:
                seen[child] = None
                stack.append(iter(children_of[child]))
                break
        else:
            stack.pop()
    return list(seen)


def _groups_of(
    direct: FrozenSet[str], parents: Mapping[str, List[str]], depth: Mapping[str, int]
) -> Tuple[str, ...]:
    """`direct`, their ancestors and `all`, `all` first, then by depth and name."""
    found: Dict[str, None] = dict.fromkeys([*direct, "all"])
    todo = list(found)
    while todo:
        for parent in parents[todo.pop()]:
            if parent not in found:
                found[parent] = None
                todo.append(parent)
    return tuple(sorted(found, key=lambda g: (depth[g], g)))


def _value(value: Any, where: str) -> Any:
    """A --list value as mlfleet keeps it, at any depth: `{"__ansible_vault": envelope}` ->
    a VaultValue (still encrypted; `where` is the source, --list gives no line), and
    `{"__ansible_unsafe": text}` -> UnsafeText (never a template); the rest as it is."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("__ansible_vault"), str):
            return VaultValue(value["__ansible_vault"], where)
        if len(value) == 1 and isinstance(value.get("__ansible_unsafe"), str):
            return UnsafeText(value["__ansible_unsafe"])
        return {k: _value(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(v, where) for v in value]
    return value
