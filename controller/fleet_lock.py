"""The fleet lock, kept on the fleet itself: one deployment at a time on any host, whoever
runs it and from whichever machine (two operators on two laptops, two CI runners).

The controller's own state DB lock (controller/state.py) only stops a second deployment
from the same DB. This one lives on every host of the deployment, as Kamal keeps its lock
on a host: a directory `fleet-lock/` in the agent's directory, created with `mkdir` (atomic
on every filesystem) and holding `holder.json` (who, from where, since when, why, until
when). A deployment takes it on all its hosts before the canary, and gives it back when it
ends. When any host's lock is held by someone else, the deployment gives back what it took
and stops, naming the holder.

Stale-lock rule: a lock is a lease (`LEASE_S`, one hour); its holder renews it as waves go
by (at most every `RENEW_EVERY_S`), so a lock whose lease ran out belongs to a controller
that died or lost its fleet, and the next deployment takes it over and says so. A lock
whose controller ran on this same machine and is gone (killed mid-deployment) is stale at
once, as the state DB's own lock is.
`mlfleet lock status` reads it from the hosts; `mlfleet lock release` removes it.

The host side is three fixed `sh` scripts whose only inputs are positional arguments
(quoted by the transport): no shell line is built from a path, a name or a reason.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
)

from mlfleet.controller.errors import ExitCode, MlfleetError
from mlfleet.controller.host_failure import on_host
from mlfleet.controller.hosts import Host
from mlfleet.controller.state import pid_alive
from mlfleet.controller.transport import CommandResult, HostUnreachable

if TYPE_CHECKING:
    from mlfleet.controller.session import FleetSession

LEASE_S = 3600.0
RENEW_EVERY_S = 600.0
LOCK_DIR = "fleet-lock"

_TAKEN, _HELD, _MINE, _GONE = (
    "MLFLEET-LOCK-TAKEN",
    "MLFLEET-LOCK-HELD",
    "MLFLEET-LOCK-MINE",
    "MLFLEET-LOCK-GONE",
)

# $1 agent dir, $2 lock dir, $3 holder JSON. The directory is the lock; holder.json is
# written after it (a reader may see the directory alone for an instant: held, holder unknown).
_ACQUIRE = (
    'umask 077; mkdir -p "$1" || exit 1; '
    'if mkdir "$2" 2>/dev/null; then printf "%s\\n" "$3" > "$2/holder.json.$$" && '
    f'mv -f "$2/holder.json.$$" "$2/holder.json" && echo {_TAKEN}; '
    f'else echo {_HELD}; cat "$2/holder.json" 2>/dev/null; fi; true'
)
# $1 lock dir, $2 holder JSON to write, $3 the token that must hold it now (ours to renew,
# a stale holder's to take over), $4 our token: read back after the write, so of two
# controllers taking over one stale lock at once only the later writer goes on.
_REPLACE = (
    'umask 077; [ -d "$1" ] || { echo ' + _GONE + "; exit 0; }; "
    'if grep -q "\\"token\\": \\"$3\\"" "$1/holder.json" 2>/dev/null && '
    'printf "%s\\n" "$2" > "$1/holder.json.$$" && mv -f "$1/holder.json.$$" "$1/holder.json" && '
    'grep -q "\\"token\\": \\"$4\\"" "$1/holder.json"; then '
    f'echo {_MINE}; else echo {_HELD}; cat "$1/holder.json" 2>/dev/null; fi; true'
)
# $1 lock dir, $2 token ("" removes whoever holds it: `mlfleet lock release`).
_RELEASE = (
    'if [ -z "$2" ] || grep -q "\\"token\\": \\"$2\\"" "$1/holder.json" 2>/dev/null; then '
    f'rm -rf -- "$1" && echo {_GONE}; else echo {_HELD}; fi'
)
_SHOW = f'cat "$1/holder.json" 2>/dev/null || {{ [ -d "$1" ] && echo {_HELD}; }}; true'


class Runs(Protocol):
    """What the lock needs of a transport: running an argv on its host."""

    host: Host

    def run(self, argv: Sequence[str], *, stdin: Optional[bytes] = None, timeout: float = 600.0,
            on_stderr_line: Optional[Callable[[str], None]] = None) -> CommandResult: ...  # fmt: skip


class FleetLockHeld(MlfleetError):
    exit_code = ExitCode.LOCKED


@dataclass(frozen=True)
class Holder:
    """Who holds a host's lock: `token` is this acquisition's random id."""

    token: str
    user: str
    machine: str
    pid: int
    since: float
    expires: float
    reason: str

    @classmethod
    def mine(cls, reason: str, now: float, lease: float = LEASE_S) -> Holder:
        return cls(
            token=secrets.token_hex(16), user=getpass.getuser(), machine=socket.gethostname(),
            pid=os.getpid(), since=now, expires=now + lease, reason=reason,
        )  # fmt: skip

    def renewed(self, now: float, lease: float = LEASE_S) -> Holder:
        return Holder(**{**asdict(self), "expires": now + lease})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> Optional[Holder]:
        """The holder a host's `holder.json` names, or None when it is not one (being
        written, or damaged)."""
        try:
            data = json.loads(text)
            holder = cls(
                token=str(data["token"]), user=str(data["user"]), machine=str(data["machine"]),
                pid=int(data["pid"]), since=float(data["since"]), expires=float(data["expires"]),
                reason=str(data["reason"]),
            )  # fmt: skip
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return holder if all(c in "0123456789abcdef" for c in holder.token) else None

    def stale(self, now: float) -> bool:
        """Its lease ran out, or its controller ran on this machine and is gone (killed
        mid-deployment: the operator's next deployment finishes the job at once)."""
        if self.expires < now:
            return True
        return self.machine == socket.gethostname() and self.pid > 0 and not pid_alive(self.pid)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"{self.user}@{self.machine} (pid {self.pid}) since {since}: {self.reason}"

    def to_dict(self) -> Dict[str, object]:
        return {**asdict(self), "stale": self.stale(time.time())}


@dataclass(frozen=True)
class HostLock:
    """What a host said about its lock. `holder` None with `held`: being taken right now,
    or its holder.json is damaged."""

    held: bool
    holder: Optional[Holder]


def parse_answer(out: str) -> Tuple[str, HostLock]:
    """The first line of a script's output is its verdict; a holder's JSON may follow."""
    lines = out.strip().splitlines()
    verdict = lines[0].strip() if lines else ""
    holder = Holder.from_text("\n".join(lines[1:])) if len(lines) > 1 else None
    if verdict in (_TAKEN, _MINE):
        return verdict, HostLock(True, None)
    if verdict == _GONE:
        return verdict, HostLock(False, None)
    if verdict == _HELD:
        return verdict, HostLock(True, holder)
    raise ValueError(f"unexpected answer from the lock script: {out[:200]!r}")


def lock_dir(host: Host) -> str:
    return f"{host.agent_dir.rstrip('/')}/{LOCK_DIR}"


def _sh(script: str, *args: str) -> List[str]:
    return ["sh", "-c", script, "sh", *args]


def _run(conn: Runs, argv: Sequence[str]) -> str:
    result = conn.run(argv, timeout=60)
    if result.code != 0:
        raise HostUnreachable(
            f"could not reach the fleet lock in {lock_dir(conn.host)}: "
            f"{(result.stderr.strip() or f'exit {result.code}').splitlines()[-1]}",
            where=conn.host.name,
        )
    return result.stdout


# --- one host --------------------------------------------------------------------------------


def try_acquire(conn: Runs, me: Holder, now: float, again: bool = True,
                on_takeover: Optional[Callable[[Holder], None]] = None) -> Optional[Holder]:  # fmt: skip
    """Take the host's lock for `me`. Returns None when it is ours now (taken, or a stale
    one taken over), else who holds it (a Holder with an empty token when the host could
    not say)."""
    host = conn.host
    verdict, found = parse_answer(
        _run(conn, _sh(_ACQUIRE, host.agent_dir, lock_dir(host), me.to_json()))
    )
    if verdict == _TAKEN:
        return None
    other = found.holder
    if other is None:
        return Holder(
            "", "someone", "?", 0, now, now, f"a lock being taken or unreadable in {lock_dir(host)}"
        )
    if other.token == me.token:
        return None
    if not other.stale(now):
        return other
    verdict, found = parse_answer(
        _run(conn, _sh(_REPLACE, lock_dir(host), me.to_json(), other.token, me.token))
    )
    if verdict == _MINE:
        if on_takeover is not None:
            on_takeover(other)
        return None
    if verdict == _GONE and again:  # released meanwhile: once more from the start
        return try_acquire(conn, me, now, again=False, on_takeover=on_takeover)
    return found.holder or other


def renew(conn: Runs, me: Holder) -> bool:
    """Rewrite the host's lock with `me` (a later lease) if it is still ours."""
    verdict, _ = parse_answer(
        _run(conn, _sh(_REPLACE, lock_dir(conn.host), me.to_json(), me.token, me.token))
    )
    return verdict == _MINE


def release(conn: Runs, token: str) -> bool:
    """Remove the host's lock if `token` holds it (any holder's when token is "")."""
    verdict, _ = parse_answer(_run(conn, _sh(_RELEASE, lock_dir(conn.host), token)))
    return verdict == _GONE


def show(conn: Runs) -> Optional[HostLock]:
    """The host's lock (None when it is free)."""
    out = _run(conn, _sh(_SHOW, lock_dir(conn.host))).strip()
    if not out:
        return None
    if out.startswith(_HELD):
        return HostLock(True, None)
    return HostLock(True, Holder.from_text(out))


# --- the fleet -------------------------------------------------------------------------------

# FleetSession.each: fn on every host in parallel, results by host name.
Each = Callable[[Callable[[Host], Any], Sequence[Host]], Dict[str, Any]]


class FleetLock:
    """The lock on every host of a deployment, for the deployment's length."""

    def __init__(self, connect: Callable[[Host], Runs], each: Each, hosts: Sequence[Host],
                 reason: str, clock: Callable[[], float] = time.time):  # fmt: skip
        self._connect = connect
        self._each = each
        self._clock = clock
        self.hosts = list(hosts)
        self.me = Holder.mine(reason, clock())
        self.taken: List[str] = []
        self.unreachable: Dict[str, str] = {}
        self.took_over: Dict[str, Holder] = {}
        self._renewed_at = self.me.since

    def acquire(self) -> None:
        """Take the lock on every reachable host, or none: FleetLockHeld names a holder.
        Hosts that cannot be reached are noted (their own wave will fail them)."""
        now = self._clock()

        def one(host: Host) -> Tuple[str, Optional[Holder]]:
            def took(stale: Holder) -> None:
                self.took_over[host.name] = stale

            return on_host(  # any failure on one host is that host's, noted
                host.name,
                lambda: ("ok", try_acquire(self._connect(host), self.me, now, on_takeover=took)),
                lambda failure: (failure.reason, None),
            )

        answers: Dict[str, Tuple[str, Optional[Holder]]] = self._each(one, self.hosts)
        held: Dict[str, Holder] = {}
        for name, (said, other) in answers.items():
            if said != "ok":
                self.unreachable[name] = said
            elif other is None:
                self.taken.append(name)
            else:
                held[name] = other
        if held:
            self.release()
            name, other = sorted(held.items())[0]
            more = (
                f" (and on {len(held) - 1} more host{'s' if len(held) > 2 else ''})"
                if len(held) > 1
                else ""
            )
            raise FleetLockHeld(
                f"the fleet lock on {name}{more} is held by {other.describe()}",
                hint="wait for that deployment to end, or `mlfleet lock release` if you are sure it is gone",
            )

    def renew_if_due(self) -> None:
        """Renew the lease on the hosts it holds, at most every RENEW_EVERY_S."""
        now = self._clock()
        if now - self._renewed_at < RENEW_EVERY_S:
            return
        self.me = self.me.renewed(now)
        self._renewed_at = now
        hosts = [h for h in self.hosts if h.name in self.taken]
        self._each(lambda h: _quietly(lambda: renew(self._connect(h), self.me)), hosts)

    def release(self) -> None:
        hosts = [h for h in self.hosts if h.name in self.taken]
        self._each(lambda h: _quietly(lambda: release(self._connect(h), self.me.token)), hosts)
        self.taken = []


@contextmanager
def held(session: FleetSession, reason: str) -> Iterator[FleetLock]:
    """The fleet lock for a command that changes hosts (deploy, rollback): in the state DB
    (LockHeld names its holder), then on every host of the session (FleetLockHeld does); a
    stale lock taken over is said per host. Both are given back however the command ends."""
    session.state.acquire_lock(reason)
    lock = FleetLock(session.transport, session.each, session.hosts, reason)
    try:
        lock.acquire()
        for name, gone in sorted(lock.took_over.items()):
            session.progress(
                name, f"took over a stale fleet lock (its lease ran out): {gone.describe()}"
            )
        yield lock
    finally:
        lock.release()
        session.state.release_lock()


def _quietly(fn: Callable[[], object]) -> object:
    """A host that cannot be reached to renew or release keeps a lock that runs out."""
    try:
        return fn()
    except Exception:
        return None
