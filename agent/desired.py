"""The desired state the controller sends to `mlfleet-agent apply`: the one definition of its
JSON format (versioned) and of its validation. agent/protocol.py lists it with the other
messages."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from mlfleet.agent.variants import Variant, VariantError, parse_variants

SCHEMA = 1
_APP = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The strategies apply knows (protocol.Strategy holds their meaning).
STRATEGIES = ("auto", "stop-first", "start-first")


class DesiredStateError(ValueError):
    """The desired state is malformed; the message names the field."""


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
    def bad(where: str, what: str) -> DesiredStateError:
        return DesiredStateError(f"`{where}`: {what}")

    if not _APP.match(s.app or ""):
        raise bad("app", "1-41 lowercase letters, digits and dashes")
    if not _TAG.match(s.tag or ""):
        raise bad("tag", "a Docker tag: letters, digits, '_', '.', '-'")
    if not s.deployment:
        raise bad("deployment", "required")
    if s.strategy not in STRATEGIES:
        raise bad("strategy", "one of " + ", ".join(STRATEGIES))
    if s.retain < 2:
        raise bad("retain", "at least 2 (the current release and the previous one)")
    try:
        variants = s.parsed_variants()
    except VariantError as exc:
        raise DesiredStateError(str(exc)) from None
    for v in variants:
        if not v.image:
            raise bad(f"variants[{v.name}].image", "the image reference is required")
    for key in s.container.env:
        if not _ENV_KEY.match(key):
            raise bad(f"container.env.{key}", "not a valid environment variable name")
    for m in s.container.mounts:
        if not m.source.startswith("/") or not m.target.startswith("/"):
            raise bad("container.mounts", f"{m.source}:{m.target}: both must be absolute paths")
    for p in s.container.ports:
        if not (0 < p.container < 65536 and 0 < p.host < 65536) or p.protocol not in ("tcp", "udp"):
            raise bad("container.ports", f"{p}: ports 1-65535, protocol tcp or udp")
    t = s.health.timing
    if min(t.interval_s, t.timeout_s, t.deadline_s) <= 0 or t.retries < 1 or t.start_period_s < 0:
        raise bad("health.timing", "interval, timeout and deadline above 0, retries at least 1")
    published = {p.container for p in s.container.ports}
    checks = [*s.health.http, *s.health.tcp, *s.health.inference]
    for check in checks:
        if check.port not in published:
            raise bad("health", f"checks port {check.port}, which the container does not publish")
    for check in [*s.health.http, *s.health.inference]:
        if not check.path.startswith("/"):
            raise bad("health", f"path {check.path!r} must start with /")
