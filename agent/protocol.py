"""The contract between the controller and the agent: every message that crosses SSH.

One module owns them, so the two sides cannot drift: the agent writes only through these
records, the controller reads only through them. Each record has `to_dict` (what goes on the
wire, with the schema version) and `from_dict` (checks the version and the shape first).

| message | record | direction |
|---|---|---|
| host facts (`detect --json`) | `HostFacts` (defined in agent/facts.py) | agent -> controller |
| desired state (`apply` stdin) | `ApplyRequest`: a `DesiredState` (agent/desired.py) and the pull credential (agent/credential.py) | controller -> agent |
| variants to choose from (`select` stdin) | `SelectRequest` | controller -> agent |
| the choice (`select --json`) | `Selection` (defined in agent/selection.py) | agent -> controller |
| apply and rollback result | `ApplyResult` | agent -> controller |
| host status (`status --json`, `tick --json`) | `HostStatus` | agent -> controller |
| progress (`apply` stderr, JSON lines) | `Event` | agent -> controller |
| version (`version --json`) | `VersionInfo` | agent -> controller |
| the command line | `AgentPlace` + the `*_args` builders | controller -> agent |
| exit codes | `ExitCode` | agent -> controller |

Version skew: every message carries `schema`. A reader meeting a *newer* schema raises
`SchemaTooNew` and does not guess at its meaning (one line: upgrade the controller); an
older agent never answers for long, since the controller replaces it by hash before use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Dict, List, Mapping, Optional

from mlfleet.agent.credential import CredentialError, RegistryCredential
from mlfleet.agent.desired import DesiredState, DesiredStateError
from mlfleet.agent.facts import HostFacts
from mlfleet.agent.selection import Rejection, Selection

SCHEMA = 1
"""The schema of every message below (facts and desired state keep their own, also 1)."""


class ProtocolError(ValueError):
    """A message is not what the protocol says it is (the text names what is wrong)."""


class SchemaTooNew(ProtocolError):
    """A message of a schema newer than this side reads: a newer agent or controller."""

    def __init__(self, what: str, schema: int, readable: int = SCHEMA):
        super().__init__(
            f"{what} uses protocol schema {schema}; this mlfleet reads schema {readable}"
            " (upgrade mlfleet on the controller)"
        )
        self.schema = schema


def check_schema(data: Any, what: str, readable: int = SCHEMA) -> Mapping[str, Any]:
    """The message as a mapping, once its schema is known to be `readable`."""
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema")
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > readable:
        raise SchemaTooNew(what, schema, readable)
    if schema != readable:
        raise ProtocolError(f"{what}: schema {schema!r}; expected {readable}")
    return data


# --- enumerations ----------------------------------------------------------------------------


class ApplyStatus(str, Enum):
    """How an apply (or a rollback) ended on the host."""

    SUCCEEDED = "succeeded"  # the new release serves, proven healthy
    UNCHANGED = "unchanged"  # the same release already served, healthy
    ROLLED_BACK = "rolled_back"  # the new release failed; the previous one serves again
    FAILED = "failed"  # nothing changed (refused in preflight), or nothing served before
    ROLLBACK_FAILED = "rollback_failed"  # the previous release did not come back: an operator

    @property
    def ok(self) -> bool:
        return self in (ApplyStatus.SUCCEEDED, ApplyStatus.UNCHANGED)


class Phase(str, Enum):
    """Where an apply stopped."""

    SELECT = "select"
    PREFLIGHT = "preflight"
    START = "start"
    HEALTH = "health"
    MONITOR = "monitor"
    INTERNAL = "internal"


class EventKind(str, Enum):
    """Progress events the agent writes while it works (and records in its history)."""

    # apply's milestones (a controller shows these to the operator)
    PULL = "pull"
    PULL_RETRY = "pull_retry"
    STOP = "stop"
    STARTED = "started"
    RESTORE = "restore"
    SUCCEEDED = "succeeded"
    UNCHANGED = "unchanged"
    REFUSED = "refused"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    FAILED = "failed"
    # details (kept in the agent's history, too chatty for a fleet's progress)
    LAYER = "layer"
    HEALTH = "health"
    # the tick's
    REPAIRED = "repaired"  # brought back from its record (container recreated, image pulled)
    REPAIR_FAILED = "repair_failed"  # could not be brought back this time; tried again later
    WAITING = "waiting"  # waiting for something away (its registry): tried again later
    BLOCKED = "blocked"  # an operator's to fix stands in the way (a `Cause`): reported, not fought
    NEEDS_OPERATOR = "needs_operator"  # given up after bounded attempts: an operator must look
    MISSING = "missing"
    RESTARTED = "restarted"
    UNHEALTHY = "unhealthy"
    SECURED = "secured"  # what an older agent left open to others was made private

    @property
    def milestone(self) -> bool:
        """Worth a line in the controller's progress."""
        return self not in (EventKind.LAYER, EventKind.HEALTH)


class Cause(str, Enum):
    """What stands in the way of bringing a release back, when it is outside the agent's
    reach: an operator can act on it; the agent reports it and does not fight it."""

    GPU_LOST = "gpu_lost"  # its variant needs a GPU, driver or toolkit the host lost
    PORT_TAKEN = "port_taken"  # something that is not the app holds its host port
    MOUNT_MISSING = "mount_missing"  # a mount source (or env file) the operator placed is gone
    REGISTRY_AWAY = "registry_away"  # its image is gone and its registry does not answer
    ENGINE_DOWN = "engine_down"  # the host's Docker engine does not answer
    NEEDS_CREDENTIALS = "needs_credentials"  # its registry wants credentials the host lacks

    @classmethod
    def read(cls, value: Any) -> Optional[Cause]:
        """A cause from a message, or None for one this side does not know (a newer agent)."""
        try:
            return cls(value)
        except ValueError:
            return None


class TransferMode(str, Enum):
    """How an image reaches a host."""

    PULL = "pull"  # the host's engine pulls from the registry
    RELAY = "relay"  # through an SSH reverse tunnel from the controller's side
    AUTO = "auto"  # relay only where the host cannot reach the registry


class Strategy(str, Enum):
    """How the new release replaces the old one on a host."""

    AUTO = "auto"  # stop-first when old and new bind the same host port, else start-first
    STOP_FIRST = "stop-first"
    START_FIRST = "start-first"


class ReleaseStatus(str, Enum):
    """A release's place in the agent's record (agent/state.py keeps the transitions)."""

    STARTING = "starting"  # being applied (found by a tick: an apply died)
    CURRENT = "current"  # serving
    PREVIOUS = "previous"  # stopped, kept for rollback
    RETIRED = "retired"  # older, kept until collected
    FAILED = "failed"  # never became healthy
    ROLLED_BACK = "rolled_back"  # replaced by its predecessor after failing
    ROLLBACK_FAILED = "rollback_failed"  # its rollback failed too: left for an operator
    REMOVED = "removed"  # collected


class ExitCode(IntEnum):
    """`mlfleet-agent` exit codes."""

    OK = 0
    ERROR = 1  # the command ran and failed (an apply that did not succeed, ...)
    USAGE = 2  # bad arguments or input
    NO_VARIANT = 3  # `select`: no variant fits this host
    BUSY = 4  # another apply holds the host lock


# --- records ---------------------------------------------------------------------------------


def _opt_str(data: Mapping[str, Any], key: str, what: str) -> Optional[str]:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{what}: `{key}` must be a string, got {type(value).__name__}")
    return value


def _str(data: Mapping[str, Any], key: str, what: str) -> str:
    value = _opt_str(data, key, what)
    if value is None:
        raise ProtocolError(f"{what}: `{key}` is missing")
    return value


def _strs(data: Mapping[str, Any], key: str, what: str) -> List[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ProtocolError(f"{what}: `{key}` must be a list of strings")
    return list(value)


def _number(data: Mapping[str, Any], key: str, what: str) -> Optional[float]:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{what}: `{key}` must be a number")
    return float(value)


def _int(data: Mapping[str, Any], key: str, what: str, default: int = 0) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{what}: `{key}` must be a whole number")
    return value


def _enum(cls: Any, value: Any, what: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise ProtocolError(f"{what}: {value!r} is not one of {choices}") from None


def selection_to_dict(selection: Selection) -> Dict[str, Any]:
    """`select --json`: the chosen variant and why the others were passed over."""
    return {"schema": SCHEMA, **selection.to_dict()}


def selection_from_dict(data: Any) -> Selection:
    d = check_schema(data, "selection")
    rejected = d.get("rejected") or []
    if not isinstance(rejected, list):
        raise ProtocolError("selection: `rejected` must be a list")
    return Selection(
        variant=_opt_str(d, "variant", "selection"),
        rejected=[
            Rejection(_str(r, "variant", "selection"), _str(r, "reason", "selection"))
            for r in rejected
            if isinstance(r, Mapping)
        ],
        warnings=_strs(d, "warnings", "selection"),
        notes=_strs(d, "notes", "selection"),
    )


def facts_from_dict(data: Any) -> HostFacts:
    """`detect --json`, checked for its schema before its shape."""
    from mlfleet.agent.facts import SCHEMA as FACTS_SCHEMA

    check_schema(data, "facts", FACTS_SCHEMA)
    try:
        return HostFacts.from_dict(dict(data))
    except ValueError as exc:
        raise ProtocolError(f"facts: {exc}") from None


def desired_from_dict(data: Any) -> DesiredState:
    """The desired state an apply reads (validated by DesiredState itself)."""
    from mlfleet.agent.desired import SCHEMA as DESIRED_SCHEMA

    check_schema(data, "desired state", DESIRED_SCHEMA)
    try:
        return DesiredState.from_dict(dict(data))
    except DesiredStateError as exc:
        raise ProtocolError(f"desired state: {exc}") from None


@dataclass(frozen=True)
class ApplyRequest:
    """`apply -` stdin: the desired state, and the credential for its images' registry.

    The credential lives only in this message: the agent hands it to its engine for the
    pull and keeps it nowhere, unless `store_credential` (the operator's explicit opt-in,
    `mlfleet_store_pull_credentials`) asks it to keep it for self-healing re-pulls."""

    desired: DesiredState
    credential: Optional[RegistryCredential] = None
    store_credential: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "desired": self.desired.to_dict(),
            "credential": self.credential.to_dict() if self.credential else None,
            "store_credential": self.store_credential,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ApplyRequest:
        """Also reads a bare desired state (`mlfleet-agent apply desired.json` by hand)."""
        if isinstance(data, Mapping) and "desired" not in data:
            return cls(desired_from_dict(data))
        d = check_schema(data, "apply request")
        raw = d.get("credential")
        try:
            credential = RegistryCredential.from_dict(raw) if raw is not None else None
        except CredentialError as exc:
            raise ProtocolError(f"apply request: {exc}") from None
        store = d.get("store_credential", False)
        if not isinstance(store, bool):
            raise ProtocolError("apply request: `store_credential` must be true or false")
        return cls(desired_from_dict(d.get("desired")), credential, store)


@dataclass(frozen=True)
class SelectRequest:
    """`select --variants -` stdin: the playbook's variants, each with its image."""

    variants: List[Dict[str, Any]]

    def to_dict(self) -> Dict[str, Any]:
        return {"schema": SCHEMA, "variants": [dict(v) for v in self.variants]}


@dataclass(frozen=True)
class Event:
    """One line of progress: what happened, in words for an operator."""

    kind: EventKind
    message: str
    app: Optional[str] = None
    time: float = 0.0  # when it happened (seconds since the epoch); 0: not stamped yet
    ok: Optional[bool] = None  # health rounds: whether this one passed
    cause: Optional[Cause] = None  # what stands in the way, when an operator can act on it

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"schema": SCHEMA, "event": self.kind.value, "message": self.message}
        if self.app is not None:
            out["app"] = self.app
        if self.ok is not None:
            out["ok"] = self.ok
        if self.cause is not None:
            out["cause"] = self.cause.value
        out["time"] = round(self.time, 3)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Event:
        d = check_schema(data, "event")
        return cls(
            kind=_enum(EventKind, d.get("event"), "event"),
            message=_str(d, "message", "event"),
            app=_opt_str(d, "app", "event"),
            time=_number(d, "time", "event") or 0.0,
            ok=d.get("ok") if isinstance(d.get("ok"), bool) else None,
            cause=Cause.read(d.get("cause")),
        )


@dataclass
class ApplyResult:
    """What `apply` and `rollback` print: how it ended and the evidence."""

    status: ApplyStatus
    app: str
    tag: str
    deployment: str
    variant: Optional[str] = None
    image: Optional[str] = None
    digest: Optional[str] = None
    container: Optional[str] = None
    previous_tag: Optional[str] = None
    reason: Optional[str] = None
    phase: Optional[Phase] = None
    health_evidence: List[str] = field(default_factory=list)
    logs: List[str] = field(default_factory=list)  # the last lines of the new container's log
    timings: Dict[str, float] = field(default_factory=dict)
    bytes_pulled: int = 0
    selection: Optional[Selection] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "status": self.status.value,
            "app": self.app,
            "tag": self.tag,
            "deployment": self.deployment,
            "variant": self.variant,
            "image": self.image,
            "digest": self.digest,
            "container": self.container,
            "previous_tag": self.previous_tag,
            "reason": self.reason,
            "phase": self.phase.value if self.phase else None,
            "health_evidence": list(self.health_evidence),
            "logs": list(self.logs),
            "timings": dict(self.timings),
            "bytes_pulled": self.bytes_pulled,
            "selection": selection_to_dict(self.selection) if self.selection else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ApplyResult:
        what = "apply result"
        d = check_schema(data, what)
        timings = d.get("timings") or {}
        if not isinstance(timings, Mapping):
            raise ProtocolError(f"{what}: `timings` must be an object")
        phase = d.get("phase")
        return cls(
            status=_enum(ApplyStatus, d.get("status"), what),
            app=_str(d, "app", what),
            tag=_opt_str(d, "tag", what) or "",
            deployment=_opt_str(d, "deployment", what) or "",
            variant=_opt_str(d, "variant", what),
            image=_opt_str(d, "image", what),
            digest=_opt_str(d, "digest", what),
            container=_opt_str(d, "container", what),
            previous_tag=_opt_str(d, "previous_tag", what),
            reason=_opt_str(d, "reason", what),
            phase=_enum(Phase, phase, what) if phase is not None else None,
            health_evidence=_strs(d, "health_evidence", what),
            logs=_strs(d, "logs", what),
            timings={str(k): float(v) for k, v in timings.items()},
            bytes_pulled=_int(d, "bytes_pulled", what),
            selection=selection_from_dict(d["selection"]) if d.get("selection") else None,
        )


@dataclass(frozen=True)
class ReleaseView:
    """A release as the host reports it (not the agent's database row)."""

    id: int
    tag: str
    variant: Optional[str]
    image: Optional[str]
    digest: Optional[str]
    container: Optional[str]
    status: ReleaseStatus
    deployment: str
    created_at: float
    activated_at: Optional[float] = None
    reason: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "tag": self.tag,
            "variant": self.variant,
            "image": self.image,
            "digest": self.digest,
            "container": self.container,
            "status": self.status.value,
            "deployment": self.deployment,
            "created_at": self.created_at,
            "activated_at": self.activated_at,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReleaseView:
        what = "release"
        return cls(
            id=_int(d, "id", what),
            tag=_str(d, "tag", what),
            variant=_opt_str(d, "variant", what),
            image=_opt_str(d, "image", what),
            digest=_opt_str(d, "digest", what),
            container=_opt_str(d, "container", what),
            status=_enum(ReleaseStatus, d.get("status"), what),
            deployment=_opt_str(d, "deployment", what) or "",
            created_at=_number(d, "created_at", what) or 0.0,
            activated_at=_number(d, "activated_at", what),
            reason=_opt_str(d, "reason", what),
        )

    @property
    def since(self) -> float:
        return self.activated_at or self.created_at


@dataclass(frozen=True)
class HealthSample:
    at: float
    ok: bool
    detail: str

    def to_dict(self) -> Dict[str, Any]:
        return {"at": self.at, "ok": self.ok, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HealthSample:
        return cls(
            at=_number(d, "at", "health sample") or 0.0,
            ok=bool(d.get("ok")),
            detail=_opt_str(d, "detail", "health sample") or "",
        )


class Health(str, Enum):
    """One word for how an app serves on a host."""

    HEALTHY = "healthy"  # running and passed its last check
    RUNNING = "running"  # running, but its last check failed (or none ran yet)
    DOWN = "down"  # its container is not running
    NOTHING = "nothing deployed"


@dataclass(frozen=True)
class AppStatus:
    """One app on a host: what serves, whether it is well, what it would roll back to."""

    app: str
    current: Optional[ReleaseView] = None
    running: bool = False
    healthy: bool = False
    last_health: Optional[HealthSample] = None
    previous: Optional[str] = None  # the tag a rollback returns to
    last_event: Optional[Event] = None  # what the agent last did about the app, and when

    @property
    def health(self) -> Health:
        if self.current is None:
            return Health.NOTHING
        if self.healthy:
            return Health.HEALTHY
        return Health.RUNNING if self.running else Health.DOWN

    def to_dict(self) -> Dict[str, Any]:
        return {
            "app": self.app,
            "current": self.current.to_dict() if self.current else None,
            "running": self.running,
            "healthy": self.healthy,
            "last_health": self.last_health.to_dict() if self.last_health else None,
            "previous": self.previous,
            "last_event": self.last_event.to_dict() if self.last_event else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AppStatus:
        current = d.get("current")
        last = d.get("last_health")
        event = d.get("last_event")
        return cls(
            app=_str(d, "app", "app status"),
            current=ReleaseView.from_dict(current) if isinstance(current, Mapping) else None,
            running=bool(d.get("running")),
            healthy=bool(d.get("healthy")),
            last_health=HealthSample.from_dict(last) if isinstance(last, Mapping) else None,
            previous=_opt_str(d, "previous", "app status"),
            last_event=Event.from_dict(event) if isinstance(event, Mapping) else None,
        )


@dataclass(frozen=True)
class HostStatus:
    """`status --json` (and `tick --json`, with what the tick did in `actions`)."""

    time: float
    last_tick: Optional[float]
    apps: List[AppStatus] = field(default_factory=list)
    actions: List[str] = field(default_factory=list)
    # What is wrong with the agent's own place (its directory full, its record unwritable).
    problems: List[str] = field(default_factory=list)

    def app(self, name: Optional[str]) -> Optional[AppStatus]:
        """The named app's status (the only or first app when `name` is None)."""
        for entry in self.apps:
            if name is None or entry.app == name:
                return entry
        return None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "time": self.time,
            "last_tick": self.last_tick,
            "apps": [a.to_dict() for a in self.apps],
            "actions": list(self.actions),
            "problems": list(self.problems),
        }

    @classmethod
    def from_dict(cls, data: Any) -> HostStatus:
        d = check_schema(data, "host status")
        apps = d.get("apps") or []
        if not isinstance(apps, list) or not all(isinstance(a, Mapping) for a in apps):
            raise ProtocolError("host status: `apps` must be a list of objects")
        return cls(
            time=_number(d, "time", "host status") or 0.0,
            last_tick=_number(d, "last_tick", "host status"),
            apps=[AppStatus.from_dict(a) for a in apps],
            actions=_strs(d, "actions", "host status"),
            problems=_strs(d, "problems", "host status"),
        )


@dataclass(frozen=True)
class VersionInfo:
    """`version --json`: which agent, on which Python, running from where."""

    agent: str
    python: str
    code: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"schema": SCHEMA, "agent": self.agent, "python": self.python, "code": self.code}

    @classmethod
    def from_dict(cls, data: Any) -> VersionInfo:
        d = check_schema(data, "version")
        return cls(
            agent=_str(d, "agent", "version"),
            python=_str(d, "python", "version"),
            code=_opt_str(d, "code", "version") or "",
        )


# --- the command line ------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentPlace:
    """Where an agent command finds things on its host (each host variable's value)."""

    agent_dir: str
    root: str = "/"
    device_root: str = "/"
    docker_host: Optional[str] = None

    def engine_args(self) -> List[str]:
        """For commands that read the hardware and the engine only."""
        args = ["--root", self.root]
        return args + (["--docker-host", self.docker_host] if self.docker_host else [])

    def state_args(self) -> List[str]:
        """For commands that also keep state (releases, the host lock)."""
        args = ["--agent-dir", self.agent_dir, "--device-root", self.device_root]
        return args + self.engine_args()


def version_args() -> List[str]:
    return ["version", "--json"]


def detect_args(place: AgentPlace) -> List[str]:
    return ["detect", "--json", *place.engine_args()]


def select_args(place: AgentPlace) -> List[str]:
    """The variants go on stdin (a `SelectRequest`): nothing is written on the host."""
    return ["select", "--variants", "-", "--json", *place.engine_args()]


def apply_args(place: AgentPlace, pull_via: Optional[str] = None) -> List[str]:
    """The desired state goes on stdin. `pull_via`: a registry mirror (host:port) the host
    pulls from instead of the image's registry, e.g. the relay's end of an SSH tunnel."""
    args = ["apply", "-", *place.state_args()]
    return args + (["--pull-via", pull_via] if pull_via else [])


def rollback_args(place: AgentPlace, app: str, to: Optional[str] = None) -> List[str]:
    return ["rollback", "--app", app, *(["--to", to] if to else []), *place.state_args()]


def status_args(place: AgentPlace) -> List[str]:
    return ["status", "--json", *place.state_args()]


def tick_args(place: AgentPlace) -> List[str]:
    return ["tick", *place.state_args()]


def daemon_args(place: AgentPlace, interval_s: int, for_s: Optional[int] = None) -> List[str]:
    """The tick every `interval_s` seconds; for `for_s` seconds, or for good without it."""
    args = ["daemon", "--interval", str(interval_s), *place.state_args()]
    return args + (["--for", str(for_s)] if for_s else [])


__all__ = [
    "SCHEMA",
    "AgentPlace",
    "AppStatus",
    "ApplyRequest",
    "ApplyResult",
    "ApplyStatus",
    "Cause",
    "DesiredState",
    "Event",
    "EventKind",
    "ExitCode",
    "Health",
    "HealthSample",
    "HostFacts",
    "HostStatus",
    "Phase",
    "ProtocolError",
    "ReleaseStatus",
    "ReleaseView",
    "SchemaTooNew",
    "SelectRequest",
    "Selection",
    "Strategy",
    "TransferMode",
    "VersionInfo",
    "apply_args",
    "check_schema",
    "desired_from_dict",
    "detect_args",
    "facts_from_dict",
    "rollback_args",
    "select_args",
    "selection_from_dict",
    "selection_to_dict",
    "status_args",
    "tick_args",
    "version_args",
]
