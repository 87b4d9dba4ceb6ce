"""A fake fleet for unit-testing the controller's orchestration without the lab: a transport
per host that speaks the same command lines as SSH would carry (the probe, then
`python3 -S mlfleet-agent.pyz ...`, parsed by the real agent's argument parser) and answers
with protocol records, as the real agent does. Each host holds a tiny model of an agent's
record (current and previous release) and a script of what goes wrong on it."""

from __future__ import annotations

import hashlib
import json
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set

from mlfleet.agent.bundle import AgentBundle
from mlfleet.agent.cli import build_parser
from mlfleet.agent.credential import RegistryCredential
from mlfleet.agent.desired import DesiredState
from mlfleet.agent.protocol import (
    ApplyRequest,
    ApplyResult,
    ApplyStatus,
    AppStatus,
    Event,
    EventKind,
    HostFacts,
    HostStatus,
    Phase,
    ReleaseStatus,
    ReleaseView,
    VersionInfo,
    selection_to_dict,
)
from mlfleet.agent.selection import select_variant
from mlfleet.controller import fleet_lock
from mlfleet.controller.hostops import _PROBE, MARK, agent_path
from mlfleet.controller.hosts import Host
from mlfleet.controller.transport import CommandResult, HostUnreachable, StreamHandler

_LOCK_SCRIPTS = {
    fleet_lock._ACQUIRE: "acquire",
    fleet_lock._REPLACE: "replace",
    fleet_lock._RELEASE: "release",
    fleet_lock._SHOW: "show",
}


@dataclass
class FakeRelease:
    tag: str
    variant: str
    image: str


@dataclass
class FakeHost:
    """One host's agent record and what goes wrong on it."""

    facts: HostFacts
    current: Optional[FakeRelease] = None
    previous: Optional[FakeRelease] = None
    reachable: bool = True
    python_ok: bool = True  # False: `python3` there is not 3.8+ (the agent cannot start)
    failing_tags: Set[str] = field(default_factory=set)  # these fail their health checks
    unreachable_after_apply: bool = False  # the link drops once an apply finished
    last_event: Optional[Event] = None  # what its agent last did (status reports it)
    newer_schema: bool = False  # a newer agent: its status speaks a schema this one cannot read
    applied: List[str] = field(default_factory=list)  # tags applied, in order
    files: Dict[str, bytes] = field(default_factory=dict)
    crontab: str = ""
    fleet_lock: Optional[str] = None  # the holder JSON of its fleet lock (None: free)
    # The pull credential each apply received on its stdin (None: none was sent).
    credentials: List[Optional[RegistryCredential]] = field(default_factory=list)

    def serving(self) -> Optional[str]:
        return f"{self.current.tag}/{self.current.variant}" if self.current else None


class FakeTransport:
    """`Transport` for one fake host."""

    def __init__(self, host: Host, fake: FakeHost, app: str):
        self.host = host
        self.fake = fake
        self.app = app
        self.closed = False
        self._lock = threading.Lock()

    # --- the Transport protocol -------------------------------------------------------------

    def run(self, argv: Sequence[str], *, stdin: Optional[bytes] = None, timeout: float = 600.0,
            on_stderr_line: Optional[Callable[[str], None]] = None) -> CommandResult:  # fmt: skip
        if not self.fake.reachable:
            raise HostUnreachable("cannot reach it: No route to host", where=self.host.name)
        argv = list(argv)
        if argv[:3] == ["sh", "-c", _PROBE]:
            return self._probe(argv[4:], stdin, on_stderr_line)
        if argv[0] == "crontab" or (argv[:2] == ["sh", "-c"] and "cron.update" in argv):
            self.fake.crontab = (stdin or b"").decode()
            return CommandResult(0, "", "")
        if argv[:2] == ["sh", "-c"] and argv[2] in _LOCK_SCRIPTS:
            return self._fleet_lock(_LOCK_SCRIPTS[argv[2]], argv[4:])
        if argv[:2] == [self.host.python, "-c"]:  # --transfer auto: can it reach the registry?
            return CommandResult(0, "", "")
        if argv[:3] == [self.host.python, "-S", agent_path(self.host)]:
            return self._agent(argv[3:], stdin, on_stderr_line)
        raise AssertionError(f"the fake host does not know {shlex.join(argv)}")

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        if not self.fake.reachable:
            raise HostUnreachable("cannot reach it: No route to host", where=self.host.name)
        self.fake.files[path] = data

    def forward_remote(self, handler: StreamHandler) -> int:
        return 40000

    def cancel_forward(self, port: int) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    # --- what the host does ---------------------------------------------------------------

    def _fleet_lock(self, script: str, args: List[str]) -> CommandResult:
        """What controller/fleet_lock.py's scripts do on a host (tested for real there)."""
        held = self.fake.fleet_lock
        if script == "acquire":
            if held is None:
                self.fake.fleet_lock = args[2]
                return CommandResult(0, "MLFLEET-LOCK-TAKEN\n", "")
            return CommandResult(0, f"MLFLEET-LOCK-HELD\n{held}\n", "")
        if script == "replace":
            if held is None:
                return CommandResult(0, "MLFLEET-LOCK-GONE\n", "")
            if f'"token": "{args[2]}"' in held:
                self.fake.fleet_lock = args[1]
                return CommandResult(0, "MLFLEET-LOCK-MINE\n", "")
            return CommandResult(0, f"MLFLEET-LOCK-HELD\n{held}\n", "")
        if script == "release":
            if not args[1] or (held is not None and f'"token": "{args[1]}"' in held):
                self.fake.fleet_lock = None
                return CommandResult(0, "MLFLEET-LOCK-GONE\n", "")
            return CommandResult(0, "MLFLEET-LOCK-HELD\n", "")
        return CommandResult(0, held or "", "")  # show

    def _probe(self, args: List[str], stdin: Optional[bytes],
               on_stderr_line: Optional[Callable[[str], None]]) -> CommandResult:  # fmt: skip
        path, _spool, expected, command = args[0], args[1], args[2], args[3:]
        data = self.fake.files.get(path)
        digest = hashlib.sha256(data).hexdigest() if data is not None else None
        head = f"{digest + '  ' + path if digest else ''}\n{MARK}\n{self.fake.crontab}{MARK}\n"
        if digest != expected:
            return CommandResult(0, head, "")
        ran = self.run(command, stdin=stdin, on_stderr_line=on_stderr_line)
        return CommandResult(ran.code, head + ran.stdout, ran.stderr)

    def _agent(self, args: List[str], stdin: Optional[bytes],
               on_stderr_line: Optional[Callable[[str], None]]) -> CommandResult:  # fmt: skip
        if not self.fake.python_ok:
            return CommandResult(1, "", '  File "<frozen>", line 1\nSyntaxError: invalid syntax\n')
        ns = build_parser().parse_args(args)  # the controller's argv must be the agent's
        say = on_stderr_line or (lambda line: None)
        with self._lock:
            if ns.command == "version":
                return _json(VersionInfo("0.1.0", "3.11.2", "/cache").to_dict())
            if ns.command == "detect":
                return _json(self.fake.facts.to_dict())
            if ns.command == "select":
                variants = json.loads(stdin or b"{}")["variants"]
                from mlfleet.agent.variants import parse_variants

                selection = select_variant(parse_variants(variants), self.fake.facts)
                return _json(selection_to_dict(selection), 0 if selection.variant else 3)
            if ns.command == "status":
                status = self._status().to_dict()
                return _json(dict(status, schema=2) if self.fake.newer_schema else status)
            if ns.command == "apply":
                request = ApplyRequest.from_dict(json.loads(stdin or b"{}"))
                self.fake.credentials.append(request.credential)
                result = self._apply(request.desired, say)
                if self.fake.unreachable_after_apply:
                    self.fake.reachable = False
                return _json(result.to_dict(), 0 if result.status.ok else 1)
            if ns.command == "rollback":
                result = self._rollback(ns.app)
                return _json(result.to_dict(), 0 if result.status is ApplyStatus.ROLLED_BACK else 1)
        raise AssertionError(f"the fake agent does not know {args}")

    def _status(self) -> HostStatus:
        cur = self.fake.current
        if cur is None:
            return HostStatus(time=1.0, last_tick=None, apps=[])
        view = ReleaseView(1, cur.tag, cur.variant, cur.image, None, f"{self.app}.r1",
                           ReleaseStatus.CURRENT, "d", 1.0, 2.0)  # fmt: skip
        previous = self.fake.previous.tag if self.fake.previous else None
        app = AppStatus(self.app, view, True, True, None, previous, self.fake.last_event)
        return HostStatus(1.0, 1.0, [app])

    def _apply(self, desired: DesiredState, say: Callable[[str], None]) -> ApplyResult:
        from mlfleet.agent.variants import parse_variants

        variants = parse_variants(desired.variants)
        chosen = select_variant(variants, self.fake.facts).variant
        result = ApplyResult(ApplyStatus.FAILED, desired.app, desired.tag, desired.deployment)
        if chosen is None:
            result.phase, result.reason = Phase.SELECT, "no variant fits this host"
            return result
        picked = next(v for v in variants if v.name == chosen)
        image = picked.image or ""
        result.variant, result.image = chosen, image
        # What a real agent pulls: the pinned digest (the tag may have moved since).
        result.digest = f"{image.rsplit(':', 1)[0]}@{picked.digest}" if picked.digest else None
        result.previous_tag = self.fake.current.tag if self.fake.current else None
        if self.fake.current and (self.fake.current.tag, self.fake.current.variant) == (
            desired.tag,
            chosen,
        ):
            result.status = ApplyStatus.UNCHANGED
            return result
        self.fake.applied.append(desired.tag)
        say(
            json.dumps(
                Event(EventKind.STARTED, f"started {desired.app}.r2", desired.app, 1.0).to_dict()
            )
        )
        if desired.tag in self.fake.failing_tags:
            result.phase, result.reason = Phase.HEALTH, "unhealthy after 3.0s: HTTP 503"
            result.status = ApplyStatus.ROLLED_BACK if self.fake.current else ApplyStatus.FAILED
            return result
        self.fake.previous, self.fake.current = (
            self.fake.current,
            FakeRelease(desired.tag, chosen, image),
        )
        result.status, result.bytes_pulled = ApplyStatus.SUCCEEDED, 238
        return result

    def _rollback(self, app: str) -> ApplyResult:
        result = ApplyResult(ApplyStatus.FAILED, app, "", "rollback")
        if self.fake.previous is None:
            result.reason = "no kept release to roll back to (kept: none)"
            return result
        back = self.fake.previous
        result.previous_tag = self.fake.current.tag if self.fake.current else None
        self.fake.current, self.fake.previous = back, self.fake.current
        result.status, result.tag, result.variant = ApplyStatus.ROLLED_BACK, back.tag, back.variant
        return result


def _json(data: Dict[str, object], code: int = 0) -> CommandResult:
    return CommandResult(code, json.dumps(data), "")


def tiny_bundle(tmp_path: Path) -> AgentBundle:
    """A stand-in for the agent zipapp: any bytes do, the probe compares hashes only."""
    path = tmp_path / "mlfleet-agent.pyz"
    path.write_bytes(b"#!/usr/bin/env python3\nthe agent\n")
    return AgentBundle(path, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)
