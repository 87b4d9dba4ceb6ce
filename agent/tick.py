"""`mlfleet-agent tick`: what cron runs every minute. Restart what died, recreate from its
record a release whose container (or image) is gone, bring back the last good release of an
app that serves nothing, repair an apply that was killed half-way, roll back a fresh release
that turned sick, restart one that stays sick, collect old images, and report (status JSON,
Prometheus textfile, both 0600), keeping cron's tick.log under a bound. A repair that fails is tried again with backoff, and after
MAX_REPAIR_ATTEMPTS the release is handed to an operator (`needs_operator`).

Per app: `_observe` reads the engine and the record (and probes once), `decide` is pure and
returns a `TickAction` with its reason, `_carry_out` does it. Tested in
tests/unit/agent/test_tick.py; the wiring on real Docker in the lab tests."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from enum import Enum
from typing import List, Optional, Tuple

from mlfleet.agent import health
from mlfleet.agent.apply import collect_garbage, repair_interrupted, restore
from mlfleet.agent.desired import DesiredState
from mlfleet.agent.engine_api import EngineError
from mlfleet.agent.host import AgentHost, health_target, serve_after_reboot
from mlfleet.agent.imageref import ImageRef
from mlfleet.agent.protocol import AppStatus, Cause, Event, EventKind, HostStatus
from mlfleet.agent.repair import Obstacle, RepairFailed, find_obstacle, recreate
from mlfleet.agent.state import Release

# A release that answers but fails a tick's probes may only be slow for a moment (a busy
# host makes even Docker's own HEALTHCHECK time out): a fresh one is rolled back when the
# next tick, a minute later, confirms it; an older one is restarted after three. A crash
# needs no confirmation.
UNHEALTHY_TICKS_BEFORE_ROLLBACK = 2
UNHEALTHY_TICKS_BEFORE_RESTART = 3
# A release that cannot be brought back is tried again after 1, 2, 4, 8 minutes (at most
# REPAIR_BACKOFF_MAX_S apart), then handed to an operator; waiting for a registry that is
# away backs off the same way but never gives up.
MAX_REPAIR_ATTEMPTS = 5
REPAIR_BACKOFF_MAX_S = 1800.0
_TICK_SLACK_S = 10.0  # cron starts ticks a little early or late


def repair_due(attempts: int, last_try_at: Optional[float], now: float) -> bool:
    """Whether a repair that failed `attempts` times, last at `last_try_at`, is tried again
    now (pure): every tick at first, then after a backoff doubling from a minute."""
    if attempts == 0 or last_try_at is None:
        return True
    wait = min(60.0 * 2 ** (attempts - 1), REPAIR_BACKOFF_MAX_S) - _TICK_SLACK_S
    return now - last_try_at >= wait


class RepairGate(str, Enum):
    """Whether a release that needs bringing back may be tried now (`repair_gate`)."""

    GO = "go"
    WAIT = "wait"  # its backoff has not passed
    GIVE_UP = "give_up"  # MAX_REPAIR_ATTEMPTS failed: hand it to an operator now
    GIVEN_UP = "given_up"  # an operator was told already: nothing more is tried


def repair_gate(attempts: int, due: bool, given_up: bool) -> RepairGate:
    """The one bound on repairs (pure): never a loop, and backed off while it lasts."""
    if given_up:
        return RepairGate.GIVEN_UP
    if attempts >= MAX_REPAIR_ATTEMPTS:
        return RepairGate.GIVE_UP
    return RepairGate.GO if due else RepairGate.WAIT


# The cron entry appends the tick's output to this file in the agent's directory
# (controller/hostops.py, cron_line); each tick keeps it bounded.
TICK_LOG = "tick.log"
TICK_LOG_MAX_BYTES = 1 << 20
TICK_LOG_KEEP_BYTES = 256 << 10


def trim_log(path: str, max_bytes: int = TICK_LOG_MAX_BYTES,
             keep_bytes: int = TICK_LOG_KEEP_BYTES) -> bool:  # fmt: skip
    """When the file is over `max_bytes`, keep its last `keep_bytes` (from a line's start),
    in place: cron's shell holds it open for appending, and so may this very tick, whose
    lines then follow the kept ones. True when it was cut."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False  # none yet (no cron), or not ours to touch
    try:
        size = os.fstat(fd).st_size
        if size <= max_bytes:
            return False
        os.lseek(fd, size - keep_bytes, os.SEEK_SET)
        tail = os.read(fd, keep_bytes)
        start = tail.find(b"\n") + 1  # the first whole line (0: no newline, keep it all)
        kept = f"(tick.log over {max_bytes} bytes: earlier lines cut)\n".encode() + tail[start:]
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, kept)
        os.ftruncate(fd, len(kept))
        return True
    except OSError:
        return False  # best effort: a full log never stops a tick
    finally:
        os.close(fd)


def tick(host: AgentHost) -> HostStatus:
    """One pass over every app on the host; returns the status written to status.json."""
    trim_log(os.path.join(host.agent_dir, TICK_LOG))
    actions: List[str] = []
    actions += [f"{app}: {msg}" for app, msg in repair_interrupted(host)]
    for app in host.store.apps():
        current = host.store.current(app)
        if current is not None:
            _keep_serving(host, current, actions)
            collect_garbage(host, app, DesiredState.from_record(current.spec).retain)
        else:
            _revive(host, app, actions)
    status = host_status(host, actions)
    write_reports(host.agent_dir, status)
    return status


# --- observe -> decide -> carry out -----------------------------------------------------


class TickActionKind(str, Enum):
    """What a tick does about one app's current release."""

    NOTHING = "nothing"  # it serves healthy, or it has not failed long enough to act
    REPORT_MISSING = "report_missing"  # its container is gone and will not be recreated now
    RECREATE = "recreate"  # its container is gone: create it again from the record
    NEEDS_OPERATOR = "needs_operator"  # it could not be brought back: hand it to an operator
    ROLL_BACK = "roll_back"  # bring the previous release back (an alert when that fails)
    RESTART_STOPPED = "restart_stopped"  # start it again, then decide on its verdict
    WAIT_FOR_CONFIRMATION = "wait_for_confirmation"  # fresh and unhealthy once: next tick
    RESTART_UNHEALTHY = "restart_unhealthy"  # old and unhealthy for a while: restart it
    BLOCKED = "blocked"  # it cannot run here now, an operator's to fix: report the cause
    FALL_BACK = "fall_back"  # its variant no longer fits: recreate it on one that does


@dataclass(frozen=True)
class Observation:
    """What a tick knows about an app's current release when it decides.

    `healthy` is this tick's verdict: the probe of a running container, or, once `restarted`,
    the verdict of bringing a stopped one back; None while there is none (it has stopped and
    has not been restarted yet). `failed_ticks_before`: how many health samples in a row
    failed before this tick's (newest first; the apply's own verdict is the first sample).
    """

    tag: str
    container_present: bool
    running: bool = False
    restart_count: int = 0
    exit_code: Optional[int] = None
    fresh: bool = False  # activated within its grace period
    has_previous: bool = False  # a kept release a rollback can bring back
    # It serves because a rollback brought it back: never rolled back again (a chain of
    # rollbacks would walk the host down its kept releases).
    reinstated: bool = False
    # The tick tried to roll it back and the previous release did not come back: not again
    # every minute (each try stops what serves); the operator was alerted.
    rollback_failed: bool = False
    healthy: Optional[bool] = None
    restarted: bool = False
    failed_ticks_before: int = 0
    repair_attempts: int = 0  # recreations that failed (waits for a registry not counted)
    repair_due: bool = True  # the backoff after the last failed repair has passed
    needs_operator: bool = False  # already handed to an operator
    # What keeps it from running here now (looked for when it has stopped or is gone), and
    # whether the newest event of the app reports just that already.
    obstacle: Optional[Obstacle] = None
    obstacle_reported: bool = False

    def __post_init__(self) -> None:
        if (self.running or self.restarted) and self.healthy is None:
            raise ValueError("a running or restarted release needs this tick's verdict")
        if not self.container_present and (self.running or self.restarted):
            raise ValueError("a release whose container is gone cannot run")

    @property
    def failed_ticks(self) -> int:
        """Failed samples in a row, this tick's verdict included."""
        return 0 if self.healthy else self.failed_ticks_before + (self.healthy is False)


@dataclass(frozen=True)
class TickAction:
    """The decision for one release, and why, in words for an operator."""

    kind: TickActionKind
    reason: str
    # The health sample the tick records instead of its probe's: a crash is its own evidence.
    sample: Optional[str] = None


def decide(obs: Observation) -> TickAction:
    """What to do about the current release (pure). The rules, in order:

    - its container is gone: report it (an operator must redeploy);
    - it crashed (the engine restarted it) while fresh and a previous release is kept: roll
      back at once, a crash needs no confirmation;
    - it has stopped: restart it; decide is then asked again with the restart's verdict;
    - it is healthy: nothing;
    - fresh, with a previous release: a stopped release that did not come back healthy is
      rolled back; an unhealthy one only when the next tick confirms it
      (UNHEALTHY_TICKS_BEFORE_ROLLBACK failed ticks in a row): one busy minute must not undo
      a release;
    - otherwise restart it after UNHEALTHY_TICKS_BEFORE_RESTART failed ticks in a row.

    A release that a rollback brought back is never rolled back (`reinstated`), a rollback that
    failed is not tried again (`rollback_failed`), and a rollback only ever brings back a kept
    release, never one that failed (agent/releases.py): rollbacks cannot loop.
    """
    tag = obs.tag
    if obs.obstacle is not None and not (obs.running or obs.restarted):
        return _blocked(obs, obs.obstacle)
    if not obs.container_present:
        return _bounded(
            obs,
            f"the container of {tag} is gone",
            TickActionKind.REPORT_MISSING,
            TickAction(
                TickActionKind.RECREATE,
                f"the container of {tag} is gone: recreating it from its record",
            ),
        )
    can_roll_back = obs.fresh and obs.has_previous and not obs.reinstated
    can_roll_back = can_roll_back and not obs.rollback_failed
    if obs.restart_count > 0 and can_roll_back and not obs.restarted:
        crash = f"crashed and was restarted {obs.restart_count} times"
        return TickAction(
            TickActionKind.ROLL_BACK, f"{tag} {crash} within its grace period", sample=crash
        )
    if not obs.running and not obs.restarted:
        return _bounded(
            obs,
            f"{tag} has stopped",
            TickActionKind.NOTHING,
            TickAction(TickActionKind.RESTART_STOPPED, f"{tag} has stopped (exit {obs.exit_code})"),
        )
    if obs.healthy:
        return TickAction(TickActionKind.NOTHING, f"{tag} is healthy")
    failed = obs.failed_ticks
    if can_roll_back and obs.restarted:
        return TickAction(
            TickActionKind.ROLL_BACK,
            f"{tag} had stopped and did not come back healthy within its grace period",
        )
    if obs.restarted:  # the restart was this tick's attempt (counted): nothing more now
        return TickAction(
            TickActionKind.NOTHING, f"{tag} was restarted and is not healthy; tried again later"
        )
    if can_roll_back and failed >= UNHEALTHY_TICKS_BEFORE_ROLLBACK:
        return TickAction(
            TickActionKind.ROLL_BACK,
            f"{tag} failed its health check on {failed} ticks in a row within its grace period",
        )
    if can_roll_back:
        return TickAction(
            TickActionKind.WAIT_FOR_CONFIRMATION,
            f"{tag} failed its health check once within its grace period;"
            " the next tick confirms it or not",
        )
    if obs.reinstated:
        why = "it serves by a rollback, never rolled back again"
    elif obs.rollback_failed:
        why = "its rollback failed once, not tried again"
    elif obs.has_previous:
        why = "past its grace period"
    else:
        why = "no previous release to roll back to"
    if failed >= UNHEALTHY_TICKS_BEFORE_RESTART:
        return TickAction(
            TickActionKind.RESTART_UNHEALTHY,
            f"{tag} unhealthy for {failed} ticks ({why})",
        )
    return TickAction(
        TickActionKind.NOTHING,
        f"{tag} unhealthy for {failed} of the {UNHEALTHY_TICKS_BEFORE_RESTART} ticks"
        f" before a restart ({why})",
    )


def _blocked(obs: Observation, obstacle: Obstacle) -> TickAction:
    """A release that cannot run here now: on another of its variants when one fits (its
    GPU is gone, the playbook has a CPU variant), otherwise reported, once, and waited for:
    the tick looks again each time and does not fight what an operator did."""
    trouble = f"{obs.tag} cannot run here now: {obstacle.detail}"
    if obstacle.fallback:
        return _bounded(
            obs, trouble, TickActionKind.NOTHING,
            TickAction(TickActionKind.FALL_BACK,
                       f"{trouble}; serving it on variant {obstacle.fallback}, which its playbook allows"),
        )  # fmt: skip
    if obs.obstacle_reported:
        return TickAction(TickActionKind.NOTHING, f"{trouble}; waiting for an operator")
    return TickAction(TickActionKind.BLOCKED, f"{trouble}; waiting for an operator")


def _bounded(obs: Observation, trouble: str, held: TickActionKind, go: TickAction) -> TickAction:
    """`go` (a repair), unless the bound on repairs says otherwise (`repair_gate`); `held`
    once an operator was told."""
    gate = repair_gate(obs.repair_attempts, obs.repair_due, obs.needs_operator)
    if gate is RepairGate.GIVEN_UP:
        return TickAction(held, f"{trouble}; an operator was told it cannot be brought back")
    if gate is RepairGate.GIVE_UP:
        return TickAction(
            TickActionKind.NEEDS_OPERATOR,
            f"{trouble}, and it did not come back after {obs.repair_attempts} attempts",
        )
    if gate is RepairGate.WAIT:
        return TickAction(TickActionKind.NOTHING, f"{trouble}; the next attempt waits its backoff")
    return go


def _keep_serving(host: AgentHost, current: Release, actions: List[str]) -> None:
    """Observe the current release, decide, carry out (twice when a stopped one was
    restarted: the second decision judges the restart's verdict)."""
    obs, probe_detail = _observe(host, current)
    action = decide(obs)
    if action.kind is TickActionKind.RESTART_STOPPED:
        verdict = restore(host, current)
        host.store.record_health(
            current.id, verdict.ok, "restarted: " + "; ".join(verdict.evidence[-2:])
        )
        if verdict.ok:
            host.event(EventKind.RESTARTED, f"{current.tag} had stopped (exit {obs.exit_code}); restarted",
                       current.app, current.id)  # fmt: skip
            actions.append(f"{current.app}: restarted {current.tag}")
        else:  # an attempt at bringing it back that failed: counted, backed off, bounded
            why = verdict.evidence[-1] if verdict.evidence else "not healthy"
            host.event(EventKind.REPAIR_FAILED, f"{current.tag} had stopped (exit {obs.exit_code}); a restart did"
                       f" not bring it back: {why}", current.app, current.id)  # fmt: skip
            actions.append(f"{current.app}: restarted {current.tag}, not healthy")
        obs = replace(obs, restarted=True, healthy=verdict.ok)
        action = decide(obs)
    _carry_out(host, current, obs, action, probe_detail, actions)


def _observe(host: AgentHost, current: Release) -> Tuple[Observation, str]:
    """The facts `decide` needs (reads the engine and the store, probes a running
    container once; writes nothing), with the probe's detail for the health record."""
    desired = DesiredState.from_record(current.spec)
    info = host.engine.container_inspect(current.container_id) if current.container_id else None
    repair = _repair_record(host, current)
    obstacle = None if info and info["State"]["Running"] else _obstacle(host, current)
    last = _last_event(host, current.app) if obstacle else None  # only then: each tick reads it
    reported = bool(
        obstacle and last and last.kind is EventKind.BLOCKED and last.cause is obstacle.cause
    )
    if info is None:
        return Observation(
            tag=current.tag,
            container_present=False,
            has_previous=host.store.previous(current.app) is not None,
            repair_attempts=repair.attempts,
            repair_due=repair.due,
            needs_operator=repair.given_up,
            obstacle=obstacle,
            obstacle_reported=reported,
        ), ""
    fresh = (
        current.activated_at is not None and time.time() - current.activated_at < desired.grace_s
    )
    running = bool(info["State"]["Running"])
    healthy: Optional[bool] = None
    detail = ""
    if running:
        probes = health.probe_once(
            health_target(host, desired, current.container_id or "", info), desired.health
        )
        healthy = all(p.ok for p in probes)
        detail = "; ".join(f"{p.check}: {p.detail}" for p in probes)
    obs = Observation(
        tag=current.tag,
        container_present=True,
        repair_attempts=repair.attempts,
        repair_due=repair.due,
        needs_operator=repair.given_up,
        running=running,
        restart_count=int(info.get("RestartCount") or 0),
        exit_code=info["State"].get("ExitCode"),
        fresh=fresh,
        has_previous=host.store.previous(current.app) is not None,
        reinstated=current.reinstated,
        rollback_failed=host.store.has_event(current.id, EventKind.ROLLBACK_FAILED.value),
        healthy=healthy,
        failed_ticks_before=_failed_in_a_row(host, current),
        obstacle=obstacle,
        obstacle_reported=reported,
    )
    return obs, detail


def _obstacle(host: AgentHost, release: Release) -> Optional[Obstacle]:
    try:
        return find_obstacle(host, release)
    except (RepairFailed, EngineError):  # a record or an engine the repair itself reports
        return None


@dataclass(frozen=True)
class RepairRecord:
    """What the record says of a release's repairs since it last served well."""

    attempts: int  # repairs that failed (waits for a registry not counted)
    due: bool  # the backoff after the last failure or wait has passed
    given_up: bool  # an operator was told (needs_operator)


def _repair_record(host: AgentHost, release: Release) -> RepairRecord:
    """A release's repairs since it last served well (a repair that worked starts the
    count afresh)."""
    well = [EventKind.SUCCEEDED.value, EventKind.REPAIRED.value, EventKind.RESTARTED.value]
    since = host.store.event_stats(release.id, well)[2]
    failed, last_failed, _ = host.store.event_stats(
        release.id, [EventKind.REPAIR_FAILED.value], since
    )
    waits, last_wait, _ = host.store.event_stats(release.id, [EventKind.WAITING.value], since)
    times = [t for t in (last_failed, last_wait) if t is not None]
    return RepairRecord(
        attempts=failed,
        due=repair_due(failed + waits, max(times) if times else None, time.time())
        or _login_arrived(host, release),
        given_up=host.store.has_event(release.id, EventKind.NEEDS_OPERATOR.value),
    )


def _login_arrived(host: AgentHost, release: Release) -> bool:
    """The last tick waited for registry credentials the host did not have, and an operator
    has placed some since (`docker login`): try now, not after the backoff."""
    last = _last_event(host, release.app)
    if last is None or last.kind is not EventKind.WAITING:
        return False
    if last.cause is not Cause.NEEDS_CREDENTIALS or "refused" in last.message:
        return False  # a placed credential that was refused waits its backoff
    try:
        registry = ImageRef.parse(release.image or "").registry_address
    except ValueError:
        return False
    return host.placed_credential(registry) is not None


def _recreate(host: AgentHost, release: Release, actions: List[str],
              fallback: Optional[Obstacle] = None) -> bool:  # fmt: skip
    """Bring the release's container back from its record (on `fallback`'s variant, when
    its own no longer fits); True when it serves healthy. A failure is recorded
    (repair_failed, or waiting when only its registry is away)."""
    app = release.app
    own = release.variant
    try:
        verdict = recreate(host, release, fallback.fallback if fallback else None)
    except RepairFailed as exc:
        kind = EventKind.WAITING if exc.waiting else EventKind.REPAIR_FAILED
        host.event(kind, f"{release.tag} could not be brought back: {exc.reason}", app, release.id,
                   exc.cause)  # fmt: skip
        actions.append(f"{app}: {release.tag} could not be brought back: {exc.reason}")
        return False
    host.store.record_health(
        release.id, verdict.ok, "recreated: " + "; ".join(verdict.evidence[-2:])
    )
    if not verdict.ok:
        why = verdict.evidence[-1] if verdict.evidence else "not healthy"
        host.event(EventKind.REPAIR_FAILED, f"{release.tag} was recreated but is not healthy: {why}",
                   app, release.id)  # fmt: skip
        actions.append(f"{app}: recreated {release.tag}, not healthy")
        return False
    if fallback is not None:
        host.event(EventKind.REPAIRED, f"{release.tag} serves on variant {release.variant} instead of {own}:"
                   f" {fallback.detail}", app, release.id, fallback.cause)  # fmt: skip
        actions.append(
            f"{app}: recreated {release.tag} on variant {release.variant} instead of {own}"
        )
        return True
    host.event(EventKind.REPAIRED, f"the container of {release.tag} was gone; recreated from its record, healthy again",
               app, release.id)  # fmt: skip
    actions.append(f"{app}: recreated {release.tag}")
    return True


def _hand_to_operator(host: AgentHost, current: Release, reason: str, actions: List[str]) -> None:
    """Give up on the current release (an operator must look) and try its previous
    release once, so the host serves something meanwhile."""
    app = current.app
    host.event(EventKind.NEEDS_OPERATOR, f"{reason}; an operator must look", app, current.id)
    actions.append(f"{app}: {current.tag} needs an operator")
    previous = host.store.previous(app)
    if previous is None:
        return
    if _serve_again(host, previous, current.id, reason).ok:
        host.event(EventKind.ROLLED_BACK, f"{current.tag} could not be brought back; {previous.tag} serves meanwhile",
                   app, current.id)  # fmt: skip
        actions.append(f"{app}: {previous.tag} serves instead of {current.tag}")


def _revive(host: AgentHost, app: str, actions: List[str]) -> None:
    """An app with no current release (an apply died between stopping the old release and
    promoting the new one, a record from before this agent): bring back its last good
    release, with the same bounded attempts and backoff as any repair."""
    kept = host.store.releases(app, ["previous", "retired"])
    if not kept:
        return
    best = max(kept, key=lambda r: (r.activated_at or 0.0, r.id))
    repair = _repair_record(host, best)
    gate = repair_gate(repair.attempts, repair.due, repair.given_up)
    if gate is RepairGate.GIVE_UP:
        host.event(EventKind.NEEDS_OPERATOR, f"{app} serves nothing and {best.tag} could not be brought back"
                   f" after {repair.attempts} attempts; an operator must look", app, best.id)  # fmt: skip
        actions.append(f"{app}: serves nothing; needs an operator")
    if gate is not RepairGate.GO:
        return
    verdict = _serve_again(host, best, None, "")
    if not verdict.ok:
        why = verdict.evidence[-1] if verdict.evidence else "not healthy"
        host.event(EventKind.REPAIR_FAILED, f"{app} serves nothing; {best.tag} did not come back: {why}",
                   app, best.id)  # fmt: skip
        actions.append(f"{app}: serves nothing; {best.tag} did not come back")
        return
    host.event(EventKind.REPAIRED, f"{app} served nothing; its last good release {best.tag} serves again",
               app, best.id)  # fmt: skip
    actions.append(f"{app}: brought back {best.tag}")


def _failed_in_a_row(host: AgentHost, current: Release) -> int:
    """How many of the release's latest health samples failed in a row (as many as any rule
    needs)."""
    recent = host.store.recent_health(current.id, UNHEALTHY_TICKS_BEFORE_RESTART - 1)
    count = 0
    for sample in recent:
        if sample.ok:
            break
        count += 1
    return count


def _carry_out(host: AgentHost, current: Release, obs: Observation, action: TickAction,
               probe_detail: str, actions: List[str]) -> None:  # fmt: skip
    """Record this tick's health sample, then do what `action` says."""
    app, kind = current.app, action.kind
    if kind is TickActionKind.REPORT_MISSING:  # the operator was told once (needs_operator)
        actions.append(f"{app}: container of {current.tag} is gone; waiting for an operator")
        return
    if kind is TickActionKind.RECREATE:
        _recreate(host, current, actions)
        return
    if kind is TickActionKind.FALL_BACK:
        _recreate(host, current, actions, obs.obstacle)
        return
    if kind is TickActionKind.BLOCKED:
        assert obs.obstacle is not None  # decide blocks only on an obstacle
        host.event(EventKind.BLOCKED, action.reason, app, current.id, obs.obstacle.cause)
        actions.append(f"{app}: {action.reason}")
        return
    if kind is TickActionKind.NEEDS_OPERATOR:
        _hand_to_operator(host, current, action.reason, actions)
        return
    if action.sample is not None:
        host.store.record_health(current.id, False, action.sample)
    elif not obs.restarted and obs.healthy is not None:  # a restart recorded its own verdict
        host.store.record_health(current.id, obs.healthy, probe_detail)
    if kind is TickActionKind.ROLL_BACK:
        previous = host.store.previous(app)
        assert previous is not None  # decide rolls back only when a previous release is kept
        _auto_rollback(host, current, previous, actions)
    elif kind is TickActionKind.WAIT_FOR_CONFIRMATION:
        host.event(EventKind.UNHEALTHY, f"{current.tag} failed its health check; rolled back if the next tick confirms it",
                   app, current.id)  # fmt: skip
        actions.append(f"{app}: {current.tag} unhealthy; rolled back if the next tick confirms it")  # fmt: skip
    elif kind is TickActionKind.RESTART_UNHEALTHY:
        try:
            host.engine.request(
                "POST", f"/containers/{current.container_id}/restart", {"t": 10}, timeout=60
            )
        except EngineError as exc:
            host.event(EventKind.REPAIR_FAILED, f"restart of unhealthy {current.tag} failed: {exc.message}",
                       app, current.id)  # fmt: skip
            actions.append(f"{app}: restart of {current.tag} failed: {exc.message}")
            return
        info = host.engine.container_inspect(current.container_id or "")
        if not (info and info["State"]["Running"]):  # it died on its restart: counted, bounded
            host.event(EventKind.REPAIR_FAILED, f"{current.tag} unhealthy for {UNHEALTHY_TICKS_BEFORE_RESTART}"
                       " ticks; restarted, and it stopped", app, current.id)  # fmt: skip
            actions.append(f"{app}: restarted unhealthy {current.tag}, and it stopped")
            return
        host.event(
            EventKind.RESTARTED,
            f"{current.tag} unhealthy for {UNHEALTHY_TICKS_BEFORE_RESTART} ticks; restarted",
            app,
            current.id,
        )
        actions.append(f"{app}: restarted unhealthy {current.tag}")


def _serve_again(
    host: AgentHost, release: Release, failed_id: Optional[int], reason: str
) -> health.Verdict:
    """Bring a kept release back (recreated if its container is gone) and, once healthy,
    make it current again with the serving restart policy; the failed release, if any, is
    marked rolled back with `reason`."""
    verdict = restore(host, release)
    if verdict.ok:
        host.store.reinstate(release.app, release.id, failed_id, "rolled_back", reason)
        serve_after_reboot(host, release.container_id or "")
    return verdict


def _auto_rollback(
    host: AgentHost, current: Release, previous: Release, actions: List[str]
) -> None:
    app = current.app
    if current.container_id:
        host.engine.container_stop(current.container_id)
    reason = "turned unhealthy within its grace period"
    if _serve_again(host, previous, current.id, reason).ok:
        host.event(EventKind.ROLLED_BACK, f"{current.tag} turned unhealthy soon after deployment; {previous.tag} serves again",
                   app, current.id)  # fmt: skip
        actions.append(f"{app}: rolled back {current.tag} -> {previous.tag}")
    else:
        # Bring the newer one back rather than leave nothing running; never roll back twice.
        if previous.container_id:
            host.engine.container_stop(previous.container_id)
        restore(host, current)
        host.event(
            EventKind.ROLLBACK_FAILED,
            f"{previous.tag} did not become healthy; {current.tag} kept",
            app,
            current.id,
        )
        actions.append(f"{app}: rollback to {previous.tag} failed; kept {current.tag}")


def host_status(host: AgentHost, actions: Optional[List[str]] = None) -> HostStatus:
    """What serves on this host, per app (`status --json`; the tick adds its actions)."""
    apps = []
    for app in host.store.apps():
        current = host.store.current(app)
        last = _last_event(host, app)
        if current is None:
            apps.append(AppStatus(app, last_event=last))
            continue
        info = host.engine.container_inspect(current.container_id) if current.container_id else None
        samples = host.store.recent_health(current.id, 1)
        previous = host.store.previous(app)
        apps.append(
            AppStatus(
                app=app,
                current=current.view(),
                running=bool(info and info["State"]["Running"]),
                healthy=bool(samples and samples[0].ok),
                last_health=samples[0] if samples else None,
                previous=previous.tag if previous else None,
                last_event=last,
            )
        )
    return HostStatus(
        time=time.time(),
        last_tick=_last_tick(host.agent_dir),
        apps=apps,
        actions=actions or [],
        problems=place_problems(host.agent_dir),
    )


# Below this much free space in the agent's directory its record may not be written.
AGENT_DIR_MIN_FREE_BYTES = 1 << 20


def place_problems(agent_dir: str) -> List[str]:
    """What keeps the agent from keeping its record: a full filesystem under its directory
    (SQLite cannot commit; the reports cannot be replaced)."""
    try:
        fs = os.statvfs(agent_dir)
    except OSError as exc:
        return [f"the agent's directory {agent_dir} cannot be read: {exc.strerror}"]
    free = fs.f_bavail * fs.f_frsize
    if free < AGENT_DIR_MIN_FREE_BYTES:
        return [f"the filesystem of the agent's directory {agent_dir} is full ({free // 1024} KiB free):"
                " its record cannot be written; free space there"]  # fmt: skip
    return []


def _last_event(host: AgentHost, app: str) -> Optional[Event]:
    """What the agent last did about the app (its newest recorded event)."""
    for row in host.store.events(app, limit=1):
        cause = Cause.read((row.get("data") or {}).get("cause"))
        try:
            return Event(EventKind(row["kind"]), row["message"], app, row["at"], cause=cause)
        except ValueError:  # a kind this agent no longer records
            return None
    return None


def _last_tick(agent_dir: str) -> Optional[float]:
    """When the previous tick wrote its report (before this one replaces it)."""
    try:
        with open(os.path.join(agent_dir, "status.json")) as fh:
            return float(json.load(fh)["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_reports(agent_dir: str, status: HostStatus) -> None:
    """status.json and a Prometheus textfile, each replaced atomically."""
    _atomic_write(os.path.join(agent_dir, "status.json"), json.dumps(status.to_dict(), indent=2))
    lines = [
        "# HELP mlfleet_release_info The release serving on this host.",
        "# TYPE mlfleet_release_info gauge",
    ]
    for app in status.apps:
        cur = app.current
        if cur:
            lines.append(
                f'mlfleet_release_info{{app="{app.app}",tag="{cur.tag}",variant="{cur.variant}",'
                f'release="{cur.id}"}} 1'
            )
    lines += ["# HELP mlfleet_release_healthy 1 when the serving release passed its last check.",
              "# TYPE mlfleet_release_healthy gauge"]  # fmt: skip
    lines += [f'mlfleet_release_healthy{{app="{a.app}"}} {int(a.healthy)}' for a in status.apps]
    lines += ["# HELP mlfleet_app_problem 1 while what the agent last did about the app names a cause"
              " an operator can act on (gpu_lost, port_taken, mount_missing, ...).",
              "# TYPE mlfleet_app_problem gauge"]  # fmt: skip
    lines += [f'mlfleet_app_problem{{app="{a.app}",cause="{a.last_event.cause.value}"}} 1'
              for a in status.apps if a.last_event and a.last_event.cause]  # fmt: skip
    lines += ["# HELP mlfleet_agent_last_tick_timestamp_seconds When the agent last ran its tick.",
              "# TYPE mlfleet_agent_last_tick_timestamp_seconds gauge",
              f"mlfleet_agent_last_tick_timestamp_seconds {status.time:.3f}"]  # fmt: skip
    _atomic_write(os.path.join(agent_dir, "metrics", "mlfleet.prom"), "\n".join(lines) + "\n")


def _atomic_write(path: str, text: str) -> None:
    """Replace `path` whole with `text`, private (0600, its directory 0700)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # a leftover .tmp of an older agent keeps its mode otherwise
    with open(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
