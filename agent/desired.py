"""The desired state the controller sends to `mlfleet-agent apply`: the one definition of its
JSON format (versioned) and of its validation. agent/protocol.py lists it with the other
messages.

Validation lives here only: the controller's playbook reads YAML into this shape and lets
`DesiredState.from_dict` judge it, then maps the error's key path (`DesiredStateError.path`,
e.g. `("container", "ports", 0, "host")`) back to the playbook's file:line."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from mlfleet.agent.imageref import ImageRef, ImageRefError, is_tag
from mlfleet.agent.variants import Variant, VariantError, parse_variants

SCHEMA = 1
_APP = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
_ROOT_USERS = ("0", "root")
_WHITESPACE = re.compile(r"\s")
_VARIANT_INDEX = re.compile(r"^variants\[(\d+)\]")
# The strategies apply knows (protocol.Strategy holds their meaning).
STRATEGIES = ("auto", "stop-first", "start-first")

KeyPath = Tuple[Union[str, int], ...]
"""Where in the desired state: `("container", "ports", 0, "host")`."""


def dotted(path: KeyPath) -> str:
    """`("container", "ports", 0, "host")` -> `container.ports[0].host`."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


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
        """Validate and build; DesiredStateError names the first bad field."""
        if not isinstance(data, dict):
            raise DesiredStateError("desired state must be a JSON object")
        if data.get("schema") != SCHEMA:
            raise DesiredStateError(
                f"schema {data.get('schema')!r}; this agent reads schema {SCHEMA}"
            )
        try:
            state = _build(data)
        except (TypeError, KeyError) as exc:
            raise DesiredStateError(f"malformed desired state: {exc}") from None
        _validate(state)
        return state


def _build(data: Dict[str, Any]) -> DesiredState:
    c = dict(data.get("container") or {})
    container = ContainerSpec(
        **{k: v for k, v in c.items() if k not in ("ports", "mounts")},
        ports=[Port(**p) for p in c.get("ports") or []],
        mounts=[Mount(**m) for m in c.get("mounts") or []],
    )
    h = dict(data.get("health") or {})
    health = HealthSpec(
        docker=h.get("docker", True),
        http=[HttpCheck(**x) for x in h.get("http") or []],
        tcp=[TcpCheck(**x) for x in h.get("tcp") or []],
        exec=[ExecCheck(**x) for x in h.get("exec") or []],
        inference=[InferenceCheck(**x) for x in h.get("inference") or []],
        timing=Timing(**(h.get("timing") or {})),
    )
    rest = {k: v for k, v in data.items() if k not in ("container", "health")}
    return DesiredState(**rest, container=container, health=health)


def _validate(s: DesiredState) -> None:
    """Every rule of the desired state, each error with the key path of its value."""
    if not isinstance(s.app, str) or not _APP.match(s.app):
        raise DesiredStateError(
            f"1-41 lowercase letters, digits and dashes; got {s.app!r}", ("app",)
        )
    if not is_tag(s.tag):
        raise DesiredStateError(
            f"{s.tag!r} is not a Docker tag: letters, digits, '_', '.', '-'", ("tag",)
        )
    if not s.deployment:
        raise DesiredStateError("required", ("deployment",))
    if s.strategy not in STRATEGIES:
        raise DesiredStateError(
            f"one of {', '.join(STRATEGIES)}; got {s.strategy!r}", ("strategy",)
        )
    if not _whole(s.retain, 2):
        raise DesiredStateError(
            "expected a whole number >= 2 (the current release and the previous one);"
            f" got {s.retain!r}",
            ("retain",),
        )
    for key in ("monitor_s", "grace_s"):
        if not _number(getattr(s, key), 0):
            raise DesiredStateError(f"expected a number >= 0; got {getattr(s, key)!r}", (key,))
    _validate_variants(s)
    _validate_container(s.container)
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
                f"{v.image!r} is not an image reference: {exc}", where
            ) from None


def _validate_container(c: ContainerSpec) -> None:
    for key, value in c.env.items():
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            raise DesiredStateError(
                "not a valid environment variable name (letters, digits, _)",
                ("container", "env", str(key)),
            )
        if not isinstance(value, str):
            raise DesiredStateError(f"{value!r} is not a string", ("container", "env", key))
    if c.env_file is not None:
        _absolute(c.env_file, ("container", "env_file"))
    for i, m in enumerate(c.mounts):
        _absolute(m.source, ("container", "mounts", i, "source"))
        _absolute(m.target, ("container", "mounts", i, "target"))
    bound: Dict[Tuple[str, int, str], int] = {}
    for i, p in enumerate(c.ports):
        for key in ("container", "host"):
            if not _whole(getattr(p, key), 1, 65535):
                raise DesiredStateError(
                    f"{key} port {getattr(p, key)!r} is outside 1-65535",
                    ("container", "ports", i, key),
                )
        if p.protocol not in ("tcp", "udp"):
            raise DesiredStateError(
                f"protocol {p.protocol!r}: tcp or udp", ("container", "ports", i, "protocol")
            )
        if p.host_ip:
            try:
                ipaddress.ip_address(p.host_ip)
            except ValueError:
                raise DesiredStateError(
                    f"host_ip {p.host_ip!r} is not an IP address",
                    ("container", "ports", i, "host_ip"),
                ) from None
        binding = (p.host_ip, p.host, p.protocol)
        if binding in bound:
            raise DesiredStateError(
                f"host port {p.host}/{p.protocol} is already bound by"
                f" container.ports[{bound[binding]}]",
                ("container", "ports", i),
            )
        bound[binding] = i
    if c.user is not None:
        if not isinstance(c.user, str) or not _USER.match(c.user):
            raise DesiredStateError(
                f'{c.user!r} is not a user like "10001", "10001:10001" or "app"',
                ("container", "user"),
            )
        if not c.allow_root and c.user.split(":")[0] in _ROOT_USERS:
            raise DesiredStateError(
                f"{c.user!r} is root; set container.allow_root: true if the model really needs it",
                ("container", "user"),
            )
    for key in ("memory_mib", "shm_mib"):
        value = getattr(c, key)
        if value is not None and not _whole(value, 1):
            raise DesiredStateError(
                f"expected a whole number of MiB >= 1; got {value!r}", ("container", key)
            )
    if c.cpus is not None and not _number(c.cpus, 0, above=True):
        raise DesiredStateError(f"expected a number above 0; got {c.cpus!r}", ("container", "cpus"))
    if c.command is not None:
        _command(c.command, ("container", "command"))


def _validate_health(h: HealthSpec, c: ContainerSpec) -> None:
    t = h.timing
    if not _number(t.start_period_s, 0):
        raise DesiredStateError(
            f"expected a number >= 0; got {t.start_period_s!r}",
            ("health", "timing", "start_period_s"),
        )
    for key in ("interval_s", "timeout_s", "deadline_s"):
        if not _number(getattr(t, key), 0, above=True):
            raise DesiredStateError(
                f"{getattr(t, key)!r} must be above 0", ("health", "timing", key)
            )
    if not _whole(t.retries, 1):
        raise DesiredStateError(
            f"expected a whole number >= 1; got {t.retries!r}", ("health", "timing", "retries")
        )
    published = sorted({p.container for p in c.ports})
    checks: List[Tuple[str, List[Any]]] = [
        ("http", h.http), ("tcp", h.tcp), ("inference", h.inference),
    ]  # fmt: skip
    for kind, items in checks:
        for i, check in enumerate(items):
            where: KeyPath = ("health", kind, i)
            if not _whole(check.port, 1, 65535):
                raise DesiredStateError(f"port {check.port!r} is outside 1-65535", (*where, "port"))
            if kind != "tcp" and (
                not isinstance(check.path, str)
                or not check.path.startswith("/")
                or _WHITESPACE.search(check.path)
            ):
                raise DesiredStateError(
                    f"{check.path!r} must start with / and contain no whitespace", (*where, "path")
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
                f"expected an HTTP status 100-599; got {http.status!r}",
                ("health", "http", i, "status"),
            )
    for i, probe in enumerate(h.inference):
        if not _number(probe.tolerance, 0):
            raise DesiredStateError(
                f"expected a number >= 0; got {probe.tolerance!r}",
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > low if above else value >= low


def _absolute(path: Any, where: KeyPath) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        raise DesiredStateError(f"{path!r} is not an absolute path", where)


def _command(command: Any, where: KeyPath) -> None:
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise DesiredStateError("expected a list of strings (exec form)", where)
    if not command:
        raise DesiredStateError("the list is empty", where)
