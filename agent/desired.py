"""The desired state the controller sends to `mlfleet-agent apply`: the one definition of its
JSON format (versioned) and of its validation. agent/protocol.py lists it with the other
messages.

Validation lives here only: the controller's playbook reads YAML into this shape and lets
`DesiredState.from_dict` judge it, then maps the error's key path (`DesiredStateError.path`,
e.g. `("container", "ports", 0, "host")`) back to the playbook's file:line.

`from_dict` reads anything that arrives (any JSON value) and either returns a valid state
or raises DesiredStateError, one line; `from_record` reads what the agent stored with a
release, without the rules a release deployed before them may break (sensitive host paths,
root users: agent/hardening.py)."""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import reprlib
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from mlfleet.agent import hardening
from mlfleet.agent.imageref import ImageRef, ImageRefError, is_tag
from mlfleet.agent.variants import Variant, VariantError, parse_variants

# Schema 1 throughout: the hardening keys (cap_add, read_only, writable, pids_limit,
# allow_mounts) were added to it, and a state without them means the hardened defaults.
SCHEMA = 1
# Names are matched whole (re.fullmatch): `$` would let a trailing newline through.
_APP = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
_NUMERIC_ID = re.compile(r"[0-9]+")
_IP_TEXT = re.compile(r"[0-9A-Fa-f:.]+")  # no zone (`%eth0`), no spaces: what Docker takes
_WHITESPACE = re.compile(r"\s")
# Control characters (C0, DEL, C1): never in a path, a name or an argument that leaves here.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_VARIANT_INDEX = re.compile(r"variants\[(\d+)\]")
# Bounds beyond which a number is a mistake (and would overflow the engine's int64 or a
# float): a year for any duration, the CPUs and memory no host has.
MAX_SECONDS = 366 * 24 * 3600
MAX_CPUS = 65536
MAX_MIB = 2**40
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
# The strategies apply knows (protocol.Strategy holds their meaning).
STRATEGIES = ("auto", "stop-first", "start-first")

KeyPath = Tuple[Union[str, int], ...]
"""Where in the desired state: `("container", "ports", 0, "host")`."""


def dotted(path: KeyPath) -> str:
    """`("container", "ports", 0, "host")` -> `container.ports[0].host`; a key that is not a
    plain word is quoted (`container.env['A B']`), so the path stays one line."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        elif not _PLAIN_KEY.fullmatch(key):
            out += f"[{show(key)}]"
        else:
            out += f".{key}" if out else key
    return out


def show(value: Any) -> str:
    """A value quoted back in a message: its repr (control characters escaped, one line),
    cut short past 80 characters."""
    return _SHOW.repr(value)


def user_is_root(user: str) -> bool:
    """Whether a `user[:group]` runs as root: the name `root` or a numeric uid that is 0 in
    any spelling (`0`, `00`, `000:1000`); the group does not matter. Other names are the
    image's to resolve (the agent checks what it can see)."""
    name = user.split(":")[0]
    return name == "root" or (_NUMERIC_ID.fullmatch(name) is not None and int(name) == 0)


def host_ip_problem(value: Any) -> Optional[str]:
    """What is wrong with an address to publish ports on (`127.0.0.1`, `::1`, `0.0.0.0`), or
    None."""
    if not isinstance(value, str) or not _IP_TEXT.fullmatch(value):
        return f"host_ip {show(value)} is not an IP address"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"host_ip {show(value)} is not an IP address"
    return None


class DesiredStateError(ValueError):
    """The desired state is not valid. `path` is the key path of the bad value (empty when
    the whole message is at fault), `problem` what is wrong with it, in words; the message is
    both: "`container.ports[0].host`: host port 70000 is outside 1-65535"."""

    def __init__(self, problem: str, path: KeyPath = ()):
        super().__init__(f"`{dotted(path)}`: {problem}" if path else problem)
        self.problem = problem
        self.path = tuple(path)


@dataclass
class Port:
    container: int
    host: int
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass
class Mount:
    source: str  # a path on the host
    target: str  # a path in the container
    read_only: bool = True


@dataclass
class ContainerSpec:
    ports: List[Port] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    # A file on the host with KEY=value lines (secrets): read at start, never logged or stored.
    env_file: Optional[str] = None
    mounts: List[Mount] = field(default_factory=list)
    # None: the image's own user, which must not be root unless allow_root.
    user: Optional[str] = None
    allow_root: bool = False
    memory_mib: Optional[int] = None
    cpus: Optional[float] = None
    shm_mib: Optional[int] = None
    command: Optional[List[str]] = None
    # Hardening (agent/hardening.py): all capabilities are dropped but these (Docker's names,
    # NET_BIND_SERVICE); the root filesystem is read-only unless read_only is false, with an
    # empty tmpfs for /tmp and each `writable` path (in the container); at most
    # `pids_limit` processes and threads; sensitive host paths are mounted (or read as the
    # env file) only when `allow_mounts` names them.
    cap_add: List[str] = field(default_factory=list)
    read_only: bool = True
    writable: List[str] = field(default_factory=list)
    pids_limit: int = hardening.DEFAULT_PIDS_LIMIT
    allow_mounts: List[str] = field(default_factory=list)


@dataclass
class Timing:
    """How a check is retried: failures during start_period do not count; `retries`
    failures in a row after it fail the check; `deadline_s` bounds the whole wait."""

    start_period_s: float = 5.0
    interval_s: float = 1.0
    timeout_s: float = 3.0
    retries: int = 3
    deadline_s: float = 120.0


@dataclass
class HttpCheck:
    port: int  # the container port (reached through its published host port)
    path: str = "/health"
    status: int = 200
    body_contains: Optional[str] = None


@dataclass
class TcpCheck:
    port: int


@dataclass
class ExecCheck:
    command: List[str]


@dataclass
class InferenceCheck:
    """POST `request` as JSON; the answer must contain `expect` (numbers within tolerance)."""

    port: int
    path: str
    request: Any
    expect: Any
    tolerance: float = 1e-6


@dataclass
class HealthSpec:
    docker: bool = True  # wait for the image's own HEALTHCHECK when it has one
    http: List[HttpCheck] = field(default_factory=list)
    tcp: List[TcpCheck] = field(default_factory=list)
    exec: List[ExecCheck] = field(default_factory=list)
    inference: List[InferenceCheck] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)


@dataclass
class DesiredState:
    app: str
    deployment: str
    tag: str
    variants: List[Dict[str, Any]]  # Variant dicts, each with `image` (a full reference)
    container: ContainerSpec = field(default_factory=ContainerSpec)
    health: HealthSpec = field(default_factory=HealthSpec)
    monitor_s: float = 10.0  # a release that fails within this window after turning healthy fails
    retain: int = 3  # releases kept on the host (current and previous included)
    strategy: str = "auto"  # auto: stop-first when old and new bind the same host port
    # Tick: roll back automatically when the release turns unhealthy within this long.
    grace_s: float = 600.0
    schema: int = SCHEMA

    def parsed_variants(self) -> List[Variant]:
        return parse_variants(self.variants)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> DesiredState:
        """Validate and build from JSON-like data (any value: it comes from outside); a
        DesiredStateError (one line) names the first bad field, never another exception."""
        if not isinstance(data, dict):
            raise DesiredStateError(f"desired state must be a JSON object, got {_kind(data)}")
        schema = data.get("schema")
        if schema != SCHEMA or isinstance(schema, bool):
            raise DesiredStateError(f"schema {show(schema)}; this agent reads schema {SCHEMA}")
        state = _build(data)
        _validate(state, policy=True)
        return state

    @classmethod
    def from_record(cls, data: Any) -> DesiredState:
        """A desired state the agent stored with a release (its own, or an older agent's):
        read as `from_dict` reads one, except for the rules of where host paths may be and
        which users are root. A release deployed before those rules existed keeps running,
        self-healing and rolling back as it was deployed (hardened by the defaults); the
        rules judge every new deployment."""
        if not isinstance(data, dict):
            raise DesiredStateError(f"desired state must be a JSON object, got {_kind(data)}")
        state = _build(data)
        _validate(state, policy=False)
        return state


# --------------------------------------------------------------------------- building


def _build(data: Dict[str, Any]) -> DesiredState:
    """The records, each mapping checked for its keys (unknown and missing ones named with
    their path) before its values are judged by `_validate`."""

    def container(value: Any, path: KeyPath) -> ContainerSpec:
        return _record(ContainerSpec, _optional_mapping(value, path), path, {
            "ports": _list_of(Port), "mounts": _list_of(Mount),
        })  # fmt: skip

    def health(value: Any, path: KeyPath) -> HealthSpec:
        return _record(HealthSpec, _optional_mapping(value, path), path, {
            "http": _list_of(HttpCheck), "tcp": _list_of(TcpCheck),
            "exec": _list_of(ExecCheck), "inference": _list_of(InferenceCheck),
            "timing": lambda v, p: _record(Timing, _optional_mapping(v, p), p, {}),
        })  # fmt: skip

    return _record(DesiredState, data, (), {"container": container, "health": health})


Nested = Dict[str, Callable[[Any, KeyPath], Any]]


def _record(cls: Any, value: Any, path: KeyPath, nested: Nested) -> Any:
    if not isinstance(value, dict):
        raise DesiredStateError(f"expected a mapping, got {_kind(value)}", path)
    known = [f.name for f in fields(cls)]
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1) if isinstance(key, str) else []
            maybe = f" (did you mean {close[0]!r}?)" if close else ""
            raise DesiredStateError(
                f"unknown key {show(key)}{maybe}; known keys: {', '.join(known)}", path
            )
    for f in fields(cls):
        required = f.default is MISSING and f.default_factory is MISSING
        if required and f.name not in value:
            raise DesiredStateError("required", (*path, f.name))
    return cls(**{k: nested[k](v, (*path, k)) if k in nested else v for k, v in value.items()})


def _optional_mapping(value: Any, path: KeyPath) -> Dict[str, Any]:
    return {} if value is None else value


def _list_of(cls: Any) -> Callable[[Any, KeyPath], List[Any]]:
    def build(value: Any, path: KeyPath) -> List[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise DesiredStateError(f"expected a list, got {_kind(value)}", path)
        return [_record(cls, item, (*path, i), {}) for i, item in enumerate(value)]

    return build


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {show(value)}"
    if isinstance(value, str):
        return f"the string {show(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


# --------------------------------------------------------------------------- validation


def _validate(s: DesiredState, policy: bool) -> None:
    """Every rule of the desired state, each error with the key path of its value (without
    `policy`: not the rules of sensitive host paths and root users)."""
    if not isinstance(s.app, str) or not _APP.fullmatch(s.app):
        raise DesiredStateError(
            f"1-41 lowercase letters, digits and dashes; got {show(s.app)}", ("app",)
        )
    if not is_tag(s.tag):
        raise DesiredStateError(
            f"{show(s.tag)} is not a Docker tag: letters, digits, '_', '.', '-'", ("tag",)
        )
    if not s.deployment:
        raise DesiredStateError("required", ("deployment",))
    if not isinstance(s.deployment, str) or _CONTROL.search(s.deployment):
        raise DesiredStateError(
            f"expected a string without control characters; got {show(s.deployment)}",
            ("deployment",),
        )
    if not isinstance(s.strategy, str) or s.strategy not in STRATEGIES:
        raise DesiredStateError(
            f"one of {', '.join(STRATEGIES)}; got {show(s.strategy)}", ("strategy",)
        )
    if not _whole(s.retain, 2):
        raise DesiredStateError(
            "expected a whole number >= 2 (the current release and the previous one);"
            f" got {show(s.retain)}",
            ("retain",),
        )
    for key in ("monitor_s", "grace_s"):
        _seconds(getattr(s, key), (key,))
    _validate_variants(s)
    _validate_container(s.container, policy)
    _validate_health(s.health, s.container)


def _validate_variants(s: DesiredState) -> None:
    try:
        variants = s.parsed_variants()
    except VariantError as exc:
        match = _VARIANT_INDEX.match(str(exc))
        raise DesiredStateError(
            str(exc), ("variants", int(match.group(1))) if match else ("variants",)
        ) from None
    for index, v in enumerate(variants):
        where = ("variants", index, "image")
        if not v.image:
            raise DesiredStateError("the image reference is required", where)
        try:
            ImageRef.parse(v.image)
        except ImageRefError as exc:
            raise DesiredStateError(
                f"{show(v.image)} is not an image reference: {exc}", where
            ) from None


def _validate_container(c: ContainerSpec, policy: bool) -> None:
    if not isinstance(c.env, dict):
        raise DesiredStateError(f"expected a mapping, got {_kind(c.env)}", ("container", "env"))
    for key, value in c.env.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise DesiredStateError(
                "not a valid environment variable name (letters, digits, _)",
                ("container", "env", str(key)),
            )
        if not isinstance(value, str):
            raise DesiredStateError(f"{show(value)} is not a string", ("container", "env", key))
        if "\x00" in value:
            raise DesiredStateError(
                "contains a NUL character, which no environment can carry",
                ("container", "env", key),
            )
    for key in ("allow_root", "read_only"):
        if not isinstance(getattr(c, key), bool):
            raise DesiredStateError(
                f"expected true or false; got {show(getattr(c, key))}", ("container", key)
            )
    allow = _paths(c.allow_mounts, ("container", "allow_mounts"))
    if c.env_file is not None:
        where: KeyPath = ("container", "env_file")
        _host_path(c.env_file, where)
        problem = hardening.env_file_place_problem(c.env_file, allow) if policy else None
        if problem:
            raise DesiredStateError(f"{show(c.env_file)} {problem}", where)
    targets: Dict[str, int] = {}
    for i, m in enumerate(c.mounts):
        where = ("container", "mounts", i)
        _host_path(m.source, (*where, "source"))
        _host_path(m.target, (*where, "target"))
        if not isinstance(m.read_only, bool):
            raise DesiredStateError(
                f"expected true or false; got {show(m.read_only)}", (*where, "read_only")
            )
        problem = hardening.mount_place_problem(m.source, allow) if policy else None
        if problem:
            raise DesiredStateError(f"{show(m.source)} {problem}", (*where, "source"))
        target = hardening.normalise(m.target)
        if target in targets:
            raise DesiredStateError(
                f"{target} is already the target of container.mounts[{targets[target]}]",
                (*where, "target"),
            )
        targets[target] = i
    _validate_writable(c, targets)
    _validate_ports(c)
    if c.user is not None:
        if not isinstance(c.user, str) or not _USER.fullmatch(c.user):
            raise DesiredStateError(
                f'{show(c.user)} is not a user like "10001", "10001:10001" or "app"',
                ("container", "user"),
            )
        if policy and not c.allow_root and user_is_root(c.user):
            raise DesiredStateError(
                f"{show(c.user)} is root; set container.allow_root: true if the model really"
                " needs it",
                ("container", "user"),
            )
    for key in ("memory_mib", "shm_mib"):
        value = getattr(c, key)
        if value is not None and not _whole(value, 1, MAX_MIB):
            raise DesiredStateError(
                f"expected a whole number of MiB >= 1; got {show(value)}", ("container", key)
            )
    if c.cpus is not None and not (_number(c.cpus, 0, above=True) and c.cpus <= MAX_CPUS):
        raise DesiredStateError(
            f"expected a number above 0 (at most {MAX_CPUS}); got {show(c.cpus)}",
            ("container", "cpus"),
        )
    if c.command is not None:
        _command(c.command, ("container", "command"))
    _validate_capabilities(c.cap_add)
    if not _whole(c.pids_limit, 1, hardening.MAX_PIDS_LIMIT):
        raise DesiredStateError(
            f"expected a whole number 1-{hardening.MAX_PIDS_LIMIT} (processes and threads);"
            f" got {show(c.pids_limit)}",
            ("container", "pids_limit"),
        )


def _validate_ports(c: ContainerSpec) -> None:
    bound: Dict[Tuple[str, int, str], int] = {}
    for i, p in enumerate(c.ports):
        for key in ("container", "host"):
            if not _whole(getattr(p, key), 1, 65535):
                raise DesiredStateError(
                    f"{key} port {show(getattr(p, key))} is outside 1-65535",
                    ("container", "ports", i, key),
                )
        if not isinstance(p.protocol, str) or p.protocol not in ("tcp", "udp"):
            raise DesiredStateError(
                f"protocol {show(p.protocol)}: tcp or udp", ("container", "ports", i, "protocol")
            )
        if p.host_ip != "":
            problem = host_ip_problem(p.host_ip)
            if problem:
                raise DesiredStateError(problem, ("container", "ports", i, "host_ip"))
        binding = (p.host_ip, p.host, p.protocol)
        if binding in bound:
            raise DesiredStateError(
                f"host port {p.host}/{p.protocol} is already bound by"
                f" container.ports[{bound[binding]}]",
                ("container", "ports", i),
            )
        bound[binding] = i


def _validate_writable(c: ContainerSpec, targets: Dict[str, int]) -> None:
    """`writable`: container paths that get an empty tmpfs; not `/` or a kernel or device
    tree, not a mount's target."""
    seen: Dict[str, int] = {}
    for i, path in enumerate(_paths(c.writable, ("container", "writable"))):
        where: KeyPath = ("container", "writable", i)
        p = hardening.normalise(path)
        kernel = [t for t in ("/proc", "/sys", "/dev") if hardening.under(p, t)]
        if p == "/" or kernel:
            whole = "the root filesystem (set read_only: false)" if p == "/" else kernel[0]
            raise DesiredStateError(f"{show(path)} is {whole}; a tmpfs cannot go there", where)
        if p in targets:
            raise DesiredStateError(
                f"{p} is already the target of container.mounts[{targets[p]}]", where
            )
        if p in seen:
            raise DesiredStateError(f"{p} is already listed as writable[{seen[p]}]", where)
        seen[p] = i


def _validate_capabilities(caps: Any) -> None:
    where: KeyPath = ("container", "cap_add")
    if not isinstance(caps, list):
        raise DesiredStateError(f"expected a list of capabilities, got {_kind(caps)}", where)
    for i, cap in enumerate(caps):
        if cap == "ALL":
            raise DesiredStateError(
                "ALL would give back every capability; list the ones the model needs",
                (*where, i),
            )
        if not isinstance(cap, str) or cap not in hardening.CAPABILITIES:
            close = (
                difflib.get_close_matches(cap, hardening.CAPABILITIES, n=1)
                if isinstance(cap, str)
                else []
            )
            maybe = f"; did you mean {close[0]}?" if close else " (e.g. NET_BIND_SERVICE)"
            raise DesiredStateError(
                f"{show(cap)} is not a capability Docker knows{maybe}", (*where, i)
            )
        if caps.index(cap) != i:
            raise DesiredStateError(
                f"{cap} is already listed as cap_add[{caps.index(cap)}]", (*where, i)
            )


def _validate_health(h: HealthSpec, c: ContainerSpec) -> None:
    if not isinstance(h.docker, bool):
        raise DesiredStateError(
            f"expected true or false; got {show(h.docker)}", ("health", "docker")
        )
    t = h.timing
    _seconds(t.start_period_s, ("health", "timing", "start_period_s"))
    for key in ("interval_s", "timeout_s", "deadline_s"):
        value = getattr(t, key)
        if not _number(value, 0, above=True):
            raise DesiredStateError(f"{show(value)} must be above 0", ("health", "timing", key))
        _seconds(value, ("health", "timing", key))
    if not _whole(t.retries, 1, 10000):
        raise DesiredStateError(
            f"expected a whole number >= 1 (at most 10000); got {show(t.retries)}",
            ("health", "timing", "retries"),
        )
    published = sorted({p.container for p in c.ports})
    checks: List[Tuple[str, List[Any]]] = [
        ("http", h.http), ("tcp", h.tcp), ("inference", h.inference),
    ]  # fmt: skip
    for kind, items in checks:
        for i, check in enumerate(items):
            where: KeyPath = ("health", kind, i)
            if not _whole(check.port, 1, 65535):
                raise DesiredStateError(
                    f"port {show(check.port)} is outside 1-65535", (*where, "port")
                )
            if kind != "tcp" and (
                not isinstance(check.path, str)
                or not check.path.startswith("/")
                or _WHITESPACE.search(check.path)
                or _CONTROL.search(check.path)
            ):
                raise DesiredStateError(
                    f"{show(check.path)} must start with / and contain no whitespace",
                    (*where, "path"),
                )
            if check.port not in published:
                raise DesiredStateError(
                    f"{check.port} is not published by container.ports (published:"
                    f" {', '.join(map(str, published)) or 'none'})",
                    (*where, "port"),
                )
    for i, http in enumerate(h.http):
        if not _whole(http.status, 100, 599):
            raise DesiredStateError(
                f"expected an HTTP status 100-599; got {show(http.status)}",
                ("health", "http", i, "status"),
            )
        if http.body_contains is not None and not isinstance(http.body_contains, str):
            raise DesiredStateError(
                f"expected a string; got {_kind(http.body_contains)}",
                ("health", "http", i, "body_contains"),
            )
    for i, probe in enumerate(h.inference):
        if not _number(probe.tolerance, 0):
            raise DesiredStateError(
                f"expected a number >= 0; got {show(probe.tolerance)}",
                ("health", "inference", i, "tolerance"),
            )
    for i, ex in enumerate(h.exec):
        _command(ex.command, ("health", "exec", i, "command"))


def _whole(value: Any, low: int, high: Optional[int] = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def _number(value: Any, low: float, above: bool = False) -> bool:
    """A finite number (an int too large for a float is not one) >= `low` (> with above)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    if not math.isfinite(number):
        return False
    return number > low if above else number >= low


def _seconds(value: Any, where: KeyPath) -> None:
    if not _number(value, 0) or value > MAX_SECONDS:
        raise DesiredStateError(
            f"expected a number >= 0 (seconds, at most {MAX_SECONDS}: a year); got {show(value)}",
            where,
        )


def _host_path(path: Any, where: KeyPath) -> None:
    """An absolute path a bind (`source:target:mode`) can carry: no `:` or `,`, no
    whitespace or control characters."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise DesiredStateError(f"{show(path)} is not an absolute path", where)
    if _WHITESPACE.search(path) or _CONTROL.search(path) or ":" in path or "," in path:
        raise DesiredStateError(
            f"{show(path)} contains whitespace, a control character, ':' or ','", where
        )


def _paths(value: Any, where: KeyPath) -> List[str]:
    if not isinstance(value, list):
        raise DesiredStateError(f"expected a list of absolute paths, got {_kind(value)}", where)
    for i, path in enumerate(value):
        _host_path(path, (*where, i))
    return value


def _command(command: Any, where: KeyPath) -> None:
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise DesiredStateError("expected a list of strings (exec form)", where)
    if not command:
        raise DesiredStateError("the list is empty", where)
    for i, arg in enumerate(command):
        if "\x00" in arg:
            raise DesiredStateError(
                "contains a NUL character, which no argument can carry", (*where, i)
            )
