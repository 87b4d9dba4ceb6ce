"""The tick's decision (pure) over every rule, its invariants as properties, and the whole
tick against a fake engine and a real SQLite store."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlfleet.agent.protocol import Cause, EventKind, ReleaseStatus
from mlfleet.agent.state import StateStore
from mlfleet.agent.tick import (
    MAX_REPAIR_ATTEMPTS,
    REPAIR_BACKOFF_MAX_S,
    TICK_LOG,
    TICK_LOG_KEEP_BYTES,
    UNHEALTHY_TICKS_BEFORE_RESTART,
    UNHEALTHY_TICKS_BEFORE_ROLLBACK,
    Observation,
    RepairGate,
    TickActionKind,
    decide,
    repair_gate,
    tick,
    trim_log,
)
from tests.unit.agent.fake_env_engine import EngineKeepingEnv
from tests.unit.agent.fakes import (
    IMAGE,
    FakeHost,
    deploy,
    digest_of,
    make_desired,
    make_host,
    serving,
    serving_container,
)

K = TickActionKind


def seen(
    *,
    present: bool = True,
    running: bool = True,
    healthy: Optional[bool] = True,
    restart_count: int = 0,
    fresh: bool = False,
    previous: bool = True,
    restarted: bool = False,
    failed_before: int = 0,
) -> Observation:
    return Observation(
        tag="v2",
        container_present=present,
        running=running and present,
        restart_count=restart_count,
        exit_code=None if running else 137,
        fresh=fresh,
        has_previous=previous,
        healthy=healthy if present and (running or restarted) else None,
        restarted=restarted,
        failed_ticks_before=failed_before,
    )


# --- decide: every rule -------------------------------------------------------------------

CASES = [
    # (what, observation, action)
    ("container gone", seen(present=False), K.RECREATE),
    ("container gone while fresh", seen(present=False, fresh=True), K.RECREATE),
    ("container gone, repairs failed before, backoff over",
     replace(seen(present=False), repair_attempts=2), K.RECREATE),
    ("container gone, backoff not over",
     replace(seen(present=False), repair_attempts=2, repair_due=False), K.NOTHING),
    ("container gone, every repair failed",
     replace(seen(present=False), repair_attempts=MAX_REPAIR_ATTEMPTS), K.NEEDS_OPERATOR),
    ("container gone, an operator was told",
     replace(seen(present=False), repair_attempts=MAX_REPAIR_ATTEMPTS, needs_operator=True), K.REPORT_MISSING),
    ("healthy", seen(), K.NOTHING),
    ("healthy and fresh", seen(fresh=True), K.NOTHING),
    ("crashed while fresh", seen(restart_count=1, fresh=True), K.ROLL_BACK),
    ("crashed while fresh, answers now", seen(restart_count=3, fresh=True), K.ROLL_BACK),
    ("crashed while fresh, nothing kept", seen(restart_count=2, fresh=True, previous=False),
     K.NOTHING),
    ("crashed long ago, healthy", seen(restart_count=2), K.NOTHING),
    ("crashed while fresh and stopped", seen(restart_count=1, fresh=True, running=False),
     K.ROLL_BACK),
    ("stopped", seen(running=False), K.RESTART_STOPPED),
    ("stopped while fresh", seen(running=False, fresh=True), K.RESTART_STOPPED),
    ("stopped, came back", seen(running=False, restarted=True), K.NOTHING),
    ("stopped while fresh, came back", seen(running=False, fresh=True, restarted=True),
     K.NOTHING),
    ("stopped while fresh, did not come back",
     seen(running=False, fresh=True, restarted=True, healthy=False), K.ROLL_BACK),
    ("stopped while fresh, did not come back, nothing kept",
     seen(running=False, fresh=True, restarted=True, healthy=False, previous=False), K.NOTHING),
    ("stopped, did not come back, first failure",
     seen(running=False, restarted=True, healthy=False), K.NOTHING),
    # The restart was the attempt (a failed repair, counted and backed off): not restarted twice.
    ("stopped, did not come back, third failure",
     seen(running=False, restarted=True, healthy=False, failed_before=2), K.NOTHING),
    ("unhealthy once while fresh", seen(fresh=True, healthy=False), K.WAIT_FOR_CONFIRMATION),
    ("unhealthy twice while fresh", seen(fresh=True, healthy=False, failed_before=1),
     K.ROLL_BACK),
    ("unhealthy while fresh, nothing kept", seen(fresh=True, healthy=False, previous=False),
     K.NOTHING),
    ("unhealthy while fresh, nothing kept, third tick",
     seen(fresh=True, healthy=False, previous=False, failed_before=2), K.RESTART_UNHEALTHY),
    ("unhealthy once", seen(healthy=False), K.NOTHING),
    ("unhealthy twice", seen(healthy=False, failed_before=1), K.NOTHING),
    ("unhealthy three times", seen(healthy=False, failed_before=2), K.RESTART_UNHEALTHY),
    ("unhealthy again after more failures", seen(healthy=False, failed_before=7),
     K.RESTART_UNHEALTHY),
]  # fmt: skip


@pytest.mark.parametrize(("obs", "kind"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(obs: Observation, kind: TickActionKind) -> None:
    action = decide(obs)
    assert action.kind is kind, action.reason
    assert "v2" in action.reason


def test_the_thresholds_are_the_documented_ones() -> None:
    # A busy minute must not undo a fresh release; an older one gets three ticks.
    assert (UNHEALTHY_TICKS_BEFORE_ROLLBACK, UNHEALTHY_TICKS_BEFORE_RESTART) == (2, 3)


def test_reasons_say_why() -> None:
    assert decide(seen(restart_count=2, fresh=True)).reason == (
        "v2 crashed and was restarted 2 times within its grace period"
    )
    assert decide(seen(running=False)).reason == "v2 has stopped (exit 137)"
    assert decide(seen(fresh=True, healthy=False, failed_before=1)).reason == (
        "v2 failed its health check on 2 ticks in a row within its grace period"
    )
    assert decide(seen(healthy=False, failed_before=2)).reason == (
        "v2 unhealthy for 3 ticks (past its grace period)"
    )
    assert "no previous release" in decide(seen(healthy=False, previous=False)).reason


def test_a_crash_is_recorded_as_its_own_evidence() -> None:
    assert decide(seen(restart_count=2, fresh=True)).sample == "crashed and was restarted 2 times"
    assert decide(seen(fresh=True, healthy=False, failed_before=1)).sample is None


def test_a_stopped_release_is_judged_on_its_restart() -> None:
    """The two steps: restart it, then decide again with the restart's verdict."""
    first = seen(running=False, fresh=True)
    assert decide(first).kind is K.RESTART_STOPPED
    assert decide(replace(first, restarted=True, healthy=True)).kind is K.NOTHING
    assert decide(replace(first, restarted=True, healthy=False)).kind is K.ROLL_BACK


def test_inconsistent_observations_are_refused() -> None:
    with pytest.raises(ValueError):
        Observation(tag="v2", container_present=True, running=True, healthy=None)
    with pytest.raises(ValueError):
        Observation(tag="v2", container_present=False, restarted=True, healthy=False)


# --- decide: invariants ---------------------------------------------------------------------


@st.composite
def observations(draw: Any) -> Observation:
    present = draw(st.booleans())
    running = present and draw(st.booleans())
    restarted = present and not running and draw(st.booleans())
    return Observation(
        tag=draw(st.sampled_from(["v1", "v2", "2024.06-rc1"])),
        container_present=present,
        running=running,
        restart_count=draw(st.integers(0, 5)),
        exit_code=draw(st.one_of(st.none(), st.integers(0, 255))),
        fresh=draw(st.booleans()),
        has_previous=draw(st.booleans()),
        reinstated=draw(st.booleans()),
        rollback_failed=draw(st.booleans()),
        healthy=draw(st.booleans()) if running or restarted else None,
        restarted=restarted,
        failed_ticks_before=draw(st.integers(0, 10)),
        repair_attempts=draw(st.integers(0, MAX_REPAIR_ATTEMPTS + 2)),
        repair_due=draw(st.booleans()),
        needs_operator=draw(st.booleans()),
    )


@given(observations())
def test_every_observation_gets_one_action_with_a_reason(obs: Observation) -> None:
    action = decide(obs)
    assert isinstance(action.kind, TickActionKind)
    assert action.reason.strip()
    assert decide(obs) == action  # pure: the same facts, the same decision


@given(observations())
def test_only_a_fresh_release_with_a_kept_previous_is_rolled_back(obs: Observation) -> None:
    if decide(obs).kind is K.ROLL_BACK:
        assert obs.fresh and obs.has_previous and obs.container_present


@given(observations())
def test_a_rollback_is_never_rolled_back_and_a_failed_one_never_retried(obs: Observation) -> None:
    if obs.reinstated or obs.rollback_failed:
        assert decide(obs).kind is not K.ROLL_BACK


@given(observations())
def test_a_healthy_release_is_left_alone(obs: Observation) -> None:
    if obs.healthy and not (obs.restart_count and obs.fresh and obs.has_previous):
        assert decide(obs).kind is K.NOTHING


@given(observations())
def test_a_release_not_serving_is_always_acted_on(obs: Observation) -> None:
    """Nothing running and no verdict yet: restarted, rolled back, recreated or handed to an
    operator; only a repair's backoff waits."""
    kind = decide(obs).kind
    if not obs.container_present:
        assert kind in (K.RECREATE, K.NEEDS_OPERATOR, K.REPORT_MISSING, K.NOTHING)
        assert (kind is K.NOTHING) == (
            not obs.needs_operator
            and obs.repair_attempts < MAX_REPAIR_ATTEMPTS
            and not obs.repair_due
        )
        if obs.repair_attempts >= MAX_REPAIR_ATTEMPTS:
            assert kind in (K.NEEDS_OPERATOR, K.REPORT_MISSING)  # never a loop
    elif not obs.running and not obs.restarted:
        assert kind in (K.RESTART_STOPPED, K.ROLL_BACK, K.NEEDS_OPERATOR, K.NOTHING)
        if kind is K.NOTHING:  # only an operator told, or a restart's backoff
            assert obs.needs_operator or not obs.repair_due
        if obs.repair_attempts >= MAX_REPAIR_ATTEMPTS and kind is not K.ROLL_BACK:
            assert kind in (K.NEEDS_OPERATOR, K.NOTHING)  # never a loop


@given(observations())
def test_a_restarted_release_is_never_restarted_as_stopped_again(obs: Observation) -> None:
    if obs.restarted:
        assert decide(obs).kind is not K.RESTART_STOPPED


@given(observations())
def test_one_failed_tick_never_rolls_back_a_running_release(obs: Observation) -> None:
    if obs.running and obs.restart_count == 0 and obs.failed_ticks_before == 0:
        assert decide(obs).kind is not K.ROLL_BACK


# --- the whole tick -------------------------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return make_host(tmp_path)


def _events(host: FakeHost) -> List[str]:
    return [e["kind"] for e in reversed(host.store.events())]


def _current_tag(host: FakeHost) -> Optional[str]:
    current = host.store.current("sentiment")
    return current.tag if current else None


def _two_releases(host: FakeHost, v2: Optional[Dict[str, Any]] = None) -> None:
    deploy(host, make_desired("v1"))
    deploy(host, make_desired("v2", **(v2 or {})))
    assert _current_tag(host) == "v2"


def test_tick_leaves_a_healthy_release_alone(host: FakeHost) -> None:
    _two_releases(host)
    status = tick(host)
    assert status.actions == []
    assert _current_tag(host) == "v2" and status.apps[0].healthy


def test_tick_rolls_back_a_fresh_release_that_crashed(host: FakeHost) -> None:
    _two_releases(host)
    host.engine.crash(serving_container(host), restarts=2)
    status = tick(host)
    assert status.actions == ["sentiment: rolled back v2 -> v1"]
    assert _current_tag(host) == "v1"
    v2 = host.store.releases("sentiment", ["rolled_back"])[0]
    assert (v2.tag, v2.reason) == ("v2", "turned unhealthy within its grace period")
    assert host.store.recent_health(v2.id, 1)[0].detail == "crashed and was restarted 2 times"


def test_tick_waits_for_a_second_failed_tick_before_rolling_back(host: FakeHost) -> None:
    _two_releases(host)
    host.engine.set_healthy(serving_container(host), False)
    assert tick(host).actions == [
        "sentiment: v2 unhealthy; rolled back if the next tick confirms it"
    ]
    assert _current_tag(host) == "v2"
    assert tick(host).actions == ["sentiment: rolled back v2 -> v1"]
    assert _current_tag(host) == "v1"
    assert host.engine.running_tags() == ["v1"]


def test_tick_forgives_a_fresh_release_that_recovers(host: FakeHost) -> None:
    _two_releases(host)
    cid = serving_container(host)
    host.engine.set_healthy(cid, False)
    tick(host)
    host.engine.set_healthy(cid, True)
    assert tick(host).actions == []
    host.engine.set_healthy(cid, False)
    assert "confirms" in tick(host).actions[0]
    assert _current_tag(host) == "v2"


def test_tick_restarts_a_stopped_release(host: FakeHost) -> None:
    _two_releases(host)
    host.engine.stop(serving_container(host))
    status = tick(host)
    assert status.actions == ["sentiment: restarted v2"]
    assert _current_tag(host) == "v2" and host.engine.running_tags() == ["v2"]


def test_tick_rolls_back_a_fresh_release_that_does_not_come_back(host: FakeHost) -> None:
    _two_releases(host)
    cid = serving_container(host)
    host.engine.stop(cid)
    host.engine.set_healthy(cid, False)
    status = tick(host)
    assert status.actions == [
        "sentiment: restarted v2, not healthy",
        "sentiment: rolled back v2 -> v1",
    ]
    assert _current_tag(host) == "v1" and host.engine.running_tags() == ["v1"]


def test_tick_restarts_an_old_release_after_three_failed_ticks(host: FakeHost) -> None:
    _two_releases(host, {"grace_s": 0})
    host.engine.set_healthy(serving_container(host), False)
    assert tick(host).actions == []
    assert tick(host).actions == []
    assert tick(host).actions == ["sentiment: restarted unhealthy v2"]
    assert _current_tag(host) == "v2"


def test_tick_recreates_a_removed_container_from_its_record(host: FakeHost) -> None:
    _two_releases(host)
    rows = len(host.store.releases("sentiment"))
    host.engine.container_remove(serving_container(host))  # docker rm -f
    assert tick(host).actions == ["sentiment: recreated v2"]
    assert _events(host)[-1] == EventKind.REPAIRED.value
    assert _current_tag(host) == "v2" and host.engine.running_tags() == ["v2"]
    assert len(host.store.releases("sentiment")) == rows  # no release invented
    status = tick(host)
    assert status.actions == [] and status.apps[0].healthy
    assert (
        status.apps[0].last_event is not None
        and status.apps[0].last_event.kind is EventKind.REPAIRED
    )


def test_tick_pulls_a_removed_image_again_by_its_digest(host: FakeHost) -> None:
    _two_releases(host)
    host.engine.container_remove(serving_container(host))
    host.engine.removed_images.append(f"{IMAGE}:v2")  # docker rmi, docker system prune -a
    assert tick(host).actions == ["sentiment: recreated v2"]
    assert host.engine.pulled == [
        f"{IMAGE}@{digest_of('v2')}"
    ]  # the bits deployed, not the tag now
    assert host.engine.running_tags() == ["v2"]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    """time.time() as the test sets it: clock[0] (the store's events use it too)."""
    now = [time.time()]
    monkeypatch.setattr(time, "time", lambda: now[0])
    return now


def test_a_registry_away_is_waited_for_with_backoff_and_nothing_else_touched(
    host: FakeHost, clock: List[float]
) -> None:
    _two_releases(host)
    host.engine.container_remove(serving_container(host))
    host.engine.removed_images.append(f"{IMAGE}:v2")
    host.engine.registry_down = True
    actions = tick(host).actions
    assert len(actions) == 1 and "waiting for registry registry.test" in actions[0]
    assert _events(host)[-1] == EventKind.WAITING.value
    clock[0] += 30
    assert tick(host).actions == []  # within its backoff: not tried again yet
    clock[0] += 60
    assert "waiting for registry" in tick(host).actions[0]
    for _ in range(10):  # a registry away for hours is waited for, never given up on
        clock[0] += REPAIR_BACKOFF_MAX_S
        tick(host)
    assert EventKind.NEEDS_OPERATOR.value not in _events(host)
    host.engine.registry_down = False
    clock[0] += REPAIR_BACKOFF_MAX_S
    assert tick(host).actions == ["sentiment: recreated v2"]
    assert host.engine.running_tags() == ["v2"] and _current_tag(host) == "v2"


def test_a_container_that_cannot_come_back_is_handed_to_an_operator_and_the_previous_serves(
    host: FakeHost, clock: List[float]
) -> None:
    _two_releases(host)
    host.engine.container_remove(serving_container(host))
    host.engine.break_image(f"{IMAGE}:v2")  # its recreated container exits at once
    for _ in range(MAX_REPAIR_ATTEMPTS):
        tick(host)
        clock[0] += REPAIR_BACKOFF_MAX_S
    assert _events(host).count(EventKind.REPAIR_FAILED.value) == MAX_REPAIR_ATTEMPTS
    actions = tick(host).actions
    assert actions == ["sentiment: v2 needs an operator", "sentiment: v1 serves instead of v2"]
    assert _current_tag(host) == "v1" and host.engine.running_tags() == ["v1"]
    before = len(_events(host))
    for _ in range(3):  # no loop: nothing more is tried
        clock[0] += REPAIR_BACKOFF_MAX_S
        tick(host)
    assert _current_tag(host) == "v1" and len(_events(host)) == before


def test_an_app_that_serves_nothing_gets_its_last_good_release_back(host: FakeHost) -> None:
    _two_releases(host)
    # An apply that stopped v2 and died before it promoted anything (or a controller's
    # reporting error that once rolled back after the promotion): no current release.
    current = serving(host)
    host.engine.container_stop(serving_container(host))
    host.store.update(current.id, status="rolled_back")
    assert host.store.current("sentiment") is None
    assert tick(host).actions == ["sentiment: brought back v1"]
    assert _current_tag(host) == "v1" and host.engine.running_tags() == ["v1"]
    assert _events(host)[-1] == EventKind.REPAIRED.value


def test_a_failed_rollback_keeps_the_newer_release_and_alerts(host: FakeHost) -> None:
    """Never rolled back twice: the newer release serves again and an operator is told."""
    _two_releases(host)
    host.engine.break_image("registry.test/sentiment:v1")  # v1 no longer starts
    host.engine.crash(serving_container(host), restarts=1)
    status = tick(host)
    assert status.actions == ["sentiment: rollback to v1 failed; kept v2"]
    assert _events(host)[-1] == EventKind.ROLLBACK_FAILED.value
    assert _current_tag(host) == "v2" and host.engine.running_tags() == ["v2"]
    previous = host.store.previous("sentiment")
    assert previous is not None and previous.tag == "v1"


def test_a_failed_rollback_is_not_tried_again_every_minute(host: FakeHost) -> None:
    _two_releases(host)
    host.engine.break_image("registry.test/sentiment:v1")
    host.engine.crash(serving_container(host), restarts=1)
    tick(host)
    tick(host)  # v2 still counts a crash; the rollback that failed is not tried again
    assert _events(host).count(EventKind.ROLLBACK_FAILED.value) == 1
    assert _current_tag(host) == "v2" and host.engine.running_tags() == ["v2"]


def test_a_release_a_rollback_brought_back_is_never_rolled_back_again(
    host: FakeHost,
) -> None:
    deploy(host, make_desired("v1"))
    deploy(host, make_desired("v2"))
    deploy(host, make_desired("v3"))
    host.engine.crash(serving_container(host), restarts=1)
    tick(host)
    assert _current_tag(host) == "v2"  # brought back by a rollback
    host.engine.crash(serving_container(host), restarts=1)
    tick(host)
    assert _current_tag(host) == "v2"  # never rolled back again: no chain down to v1
    statuses = {r.tag: r.status for r in host.store.releases("sentiment")}
    assert statuses == {
        "v1": ReleaseStatus.PREVIOUS.value,
        "v2": ReleaseStatus.CURRENT.value,
        "v3": ReleaseStatus.ROLLED_BACK.value,
    }


def test_tick_writes_its_reports(host: FakeHost) -> None:
    _two_releases(host)
    tick(host)
    before = time.time()
    status = tick(host)
    assert status.last_tick is not None and status.last_tick <= before
    prom = (host.agent_path / "metrics" / "mlfleet.prom").read_text()
    assert 'mlfleet_release_info{app="sentiment",tag="v2"' in prom
    assert 'mlfleet_release_healthy{app="sentiment"} 1' in prom


SICKNESS = ["healthy", "unhealthy", "stopped", "crashed", "gone"]


@pytest.mark.parametrize("sickness", SICKNESS)
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "old"])
@pytest.mark.parametrize("kept", [True, False], ids=["previous", "no-previous"])
@pytest.mark.parametrize("starts", [True, False], ids=["v2-starts", "v2-broken"])
@pytest.mark.parametrize("v1_starts", [True, False], ids=["v1-starts", "v1-broken"])
def test_every_tick_ends_serving_or_with_an_operator_alert(
    tmp_path: Path, sickness: str, fresh: bool, kept: bool, starts: bool, v1_starts: bool
) -> None:
    """Over every combination: after each of three ticks a container of the app runs, or an
    operator has been alerted (rollback_failed, repair_failed, needs_operator)."""
    host = make_host(tmp_path)
    if kept:
        deploy(host, make_desired("v1"))
    deploy(host, make_desired("v2", grace_s=600 if fresh else 0))
    cid = serving_container(host)
    {
        "healthy": lambda: None,
        "unhealthy": lambda: host.engine.set_healthy(cid, False),
        "stopped": lambda: host.engine.stop(cid),
        "crashed": lambda: host.engine.crash(cid),
        "gone": lambda: host.engine.container_remove(cid),
    }[sickness]()
    if not starts:
        host.engine.break_image("registry.test/sentiment:v2")
    if not v1_starts:
        host.engine.break_image("registry.test/sentiment:v1")
    for _ in range(3):
        tick(host)
        # An alert stands once raised: a failed rollback is not retried (and re-alerted)
        # every minute, since each try stops what serves.
        alerted = {e["kind"] for e in host.store.events(limit=1000)} & {
            "missing",
            "rollback_failed",
            "repair_failed",
            "needs_operator",
        }
        assert host.engine.running_tags() or alerted
        assert host.store.current("sentiment") is not None


def test_a_repair_that_worked_starts_the_count_afresh(host: FakeHost, clock: List[float]) -> None:
    _two_releases(host)
    host.engine.container_remove(serving_container(host))
    host.engine.break_image(f"{IMAGE}:v2")
    for _ in range(MAX_REPAIR_ATTEMPTS - 1):  # one short of handing it to an operator
        tick(host)
        clock[0] += REPAIR_BACKOFF_MAX_S
    host.engine.broken_images.clear()
    tick(host)
    assert host.engine.running_tags() == ["v2"] and _events(host)[-1] == EventKind.RESTARTED.value
    clock[0] += 5  # removed again a moment later: repaired at once, no backoff, no operator
    host.engine.container_remove(serving_container(host))
    assert tick(host).actions == ["sentiment: recreated v2"]
    assert EventKind.NEEDS_OPERATOR.value not in _events(host)


@pytest.mark.parametrize(
    ("attempts", "due", "given_up", "gate"),
    [
        (0, True, False, RepairGate.GO),
        (MAX_REPAIR_ATTEMPTS - 1, True, False, RepairGate.GO),
        (2, False, False, RepairGate.WAIT),
        (MAX_REPAIR_ATTEMPTS, True, False, RepairGate.GIVE_UP),
        (MAX_REPAIR_ATTEMPTS, False, False, RepairGate.GIVE_UP),
        (MAX_REPAIR_ATTEMPTS, True, True, RepairGate.GIVEN_UP),
        (0, True, True, RepairGate.GIVEN_UP),
    ],
)
def test_the_one_bound_on_repairs(
    attempts: int, due: bool, given_up: bool, gate: RepairGate
) -> None:
    assert repair_gate(attempts, due, given_up) is gate


# --- what an operator must fix: reported with its cause, never fought -------------------

CUDA12 = {"name": "cuda12", "image": f"{IMAGE}:v1-cuda12", "gpu": "nvidia", "cuda": "12.2"}
CPU = {"name": "cpu", "image": f"{IMAGE}:v1"}


def _last(host: FakeHost) -> Any:
    last = tick(host).apps[0].last_event
    assert last is not None
    return last


def test_a_host_that_lost_its_gpu_serves_on_the_cpu_variant_its_playbook_allows(
    host: FakeHost,
) -> None:
    host.nvidia_gpu = True
    deploy(host, make_desired("v1", variants=[CUDA12, CPU]))
    assert serving(host).variant == "cuda12"
    host.nvidia_gpu = False  # the driver did not come back after a kernel update
    host.engine.stop(serving_container(host))  # and the engine could not start it at boot
    status = tick(host)
    assert status.actions == ["sentiment: recreated v1 on variant cpu instead of cuda12"]
    assert serving(host).variant == "cpu" and host.engine.running_tags() == ["v1"]
    config = host.engine.containers[serving_container(host)].config
    assert config["Image"] == f"{IMAGE}:v1" and not config["HostConfig"].get("DeviceRequests")
    last = status.apps[0].last_event
    assert last is not None and last.kind is EventKind.REPAIRED and last.cause is Cause.GPU_LOST
    assert "no longer fits" in last.message
    prom = (host.agent_path / "metrics" / "mlfleet.prom").read_text()
    assert 'mlfleet_app_problem{app="sentiment",cause="gpu_lost"} 1' in prom


def test_a_cuda_release_is_never_started_on_a_host_without_its_gpu(host: FakeHost) -> None:
    host.nvidia_gpu = True
    deploy(host, make_desired("v1", variants=[CUDA12]))
    host.nvidia_gpu = False
    host.engine.stop(serving_container(host))
    status = tick(host)
    assert host.engine.running_tags() == []  # not started without its GPU
    last = status.apps[0].last_event
    assert last is not None and (last.kind, last.cause) == (EventKind.BLOCKED, Cause.GPU_LOST)
    assert len(status.actions) == 1 and "waiting for an operator" in status.actions[0]
    events = len(_events(host))
    assert tick(host).actions == [] and len(_events(host)) == events  # told once, not each tick
    host.nvidia_gpu = True  # the driver is back
    assert tick(host).actions == ["sentiment: restarted v1"]
    assert host.engine.running_tags() == ["v1"] and serving(host).variant == "cuda12"


def test_a_container_of_someone_elses_on_the_port_is_reported_and_left_alone(
    host: FakeHost,
) -> None:
    _two_releases(host)
    host.engine.container_remove(serving_container(host))
    theirs = host.engine.squat(18080, "debug-server")
    last = _last(host)
    assert (last.kind, last.cause) == (EventKind.BLOCKED, Cause.PORT_TAKEN)
    assert "host port 18080 is held by container debug-server" in last.message
    assert host.engine.containers[theirs].running  # theirs, left alone
    assert host.engine.running_tags() == [""]  # and nothing of ours started beside it
    host.engine.container_remove(theirs)  # the operator is done with it
    assert tick(host).actions == ["sentiment: recreated v2"]  # at once, no backoff to wait
    assert host.engine.running_tags() == ["v2"]


def test_a_vanished_mount_source_is_reported_and_the_release_comes_back_with_it(
    host: FakeHost, tmp_path: Path
) -> None:
    data = tmp_path / "weights"
    data.mkdir()
    deploy(host, make_desired("v1", container={
        "ports": [{"container": 8080, "host": 18080}],
        "mounts": [{"source": str(data), "target": "/data"}],
    }))  # fmt: skip
    host.engine.container_remove(serving_container(host))
    data.rmdir()
    last = _last(host)
    assert (last.kind, last.cause) == (EventKind.BLOCKED, Cause.MOUNT_MISSING)
    assert str(data) in last.message and host.engine.running_tags() == []
    data.mkdir()
    assert tick(host).actions == ["sentiment: recreated v1"]


def test_a_login_placed_after_a_wait_for_credentials_is_used_by_the_next_tick(
    host: FakeHost, clock: List[float]
) -> None:
    """No credential on the host: the tick waits (needs_credentials). An operator then
    places one: the next tick pulls with it, not after the backoff."""
    from mlfleet.agent.credential import RegistryCredential
    from mlfleet.agent.host_credentials import store_credential

    _two_releases(host)
    host.engine.container_remove(serving_container(host))
    host.engine.removed_images.append(f"{IMAGE}:v2")
    host.engine.registry_password = "s3cret-9"
    assert "needs registry credentials" in tick(host).actions[0]
    clock[0] += 5
    assert tick(host).actions == []  # nothing changed on the host: within its backoff
    store_credential(host.agent_dir, RegistryCredential("registry.test", "robot", "s3cret-9"))
    clock[0] += 5
    assert tick(host).actions == ["sentiment: recreated v2"]
    assert host.engine.running_tags() == ["v2"]


# --- inline env values, kept only as keyed hashes ----------------------------------------

SECRET = "s3cret-from-the-inventory"


def _with_env(tag: str, token: str, **overrides: Any) -> Any:
    return make_desired(tag, container={"ports": [{"container": 8080, "host": 18080}],
                                        "env": {"TOKEN": token, "MODE": "fast"}}, **overrides)  # fmt: skip


def _on_disk(host: FakeHost) -> bytes:
    return b"".join(p.read_bytes() for p in host.agent_path.glob("state.db*"))


def test_a_removed_container_gets_its_env_back_from_one_the_engine_holds(host: FakeHost) -> None:
    host.engine = EngineKeepingEnv()
    deploy(host, _with_env("v1", SECRET))
    deploy(host, _with_env("v2", SECRET))  # v1's container stays, stopped, with the same env
    host.engine.container_remove(serving_container(host))
    assert tick(host).actions == ["sentiment: recreated v2"]
    env = host.engine.containers[serving_container(host)].config["Env"]
    assert sorted(env) == ["MODE=fast", f"TOKEN={SECRET}"]
    assert SECRET.encode() not in _on_disk(host)


def test_a_stopped_container_on_a_lost_gpu_gives_its_env_to_the_fallback(host: FakeHost) -> None:
    host.engine = EngineKeepingEnv()
    host.nvidia_gpu = True
    deploy(host, _with_env("v1", SECRET, variants=[CUDA12, CPU]))
    host.nvidia_gpu = False
    host.engine.stop(serving_container(host))
    assert tick(host).actions == ["sentiment: recreated v1 on variant cpu instead of cuda12"]
    env = host.engine.containers[serving_container(host)].config["Env"]
    assert sorted(env) == ["MODE=fast", f"TOKEN={SECRET}"]


def test_env_values_no_container_holds_are_not_guessed_a_deployment_is_asked_for(
    host: FakeHost,
) -> None:
    host.engine = EngineKeepingEnv()
    deploy(host, _with_env("v1", "the-old-token"))
    deploy(host, _with_env("v2", SECRET))  # v1's container holds another TOKEN
    host.engine.container_remove(serving_container(host))
    actions = tick(host).actions
    assert actions == [
        "sentiment: v2 could not be brought back: the container of v2 is gone, and with it the"
        " values of its inline env (MODE, TOKEN): this host keeps only keyed hashes of them and"
        " no container of sentiment holds them; deploy sentiment again (mlfleet deploy)"
    ]
    assert host.engine.running_tags() == []  # nothing started with values it does not have
    assert _events(host)[-1] == EventKind.REPAIR_FAILED.value
    deploy(host, _with_env("v2", SECRET))  # what the message asks for
    assert host.engine.running_tags() == ["v2"]


# --- what the tick writes, and its log ------------------------------------------------------


def test_the_tick_writes_its_reports_private(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    old = os.umask(0o022)
    try:
        tick(host)
    finally:
        os.umask(old)
    assert oct((host.agent_path / "status.json").stat().st_mode & 0o777) == "0o600"
    assert oct((host.agent_path / "metrics").stat().st_mode & 0o777) == "0o700"
    assert oct((host.agent_path / "metrics" / "mlfleet.prom").stat().st_mode & 0o777) == "0o600"


def _log_lines(n: int) -> bytes:
    return b"".join(b"tick %06d: sentiment: nothing to do\n" % i for i in range(n))


def test_a_log_under_its_bound_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "tick.log"
    log.write_bytes(_log_lines(100))
    assert not trim_log(str(log), max_bytes=4096, keep_bytes=1024)
    assert log.read_bytes() == _log_lines(100)
    assert not trim_log(str(tmp_path / "none.log"))


def test_a_log_over_its_bound_keeps_its_last_whole_lines_for_whoever_appends(
    tmp_path: Path,
) -> None:
    log = tmp_path / "tick.log"
    log.write_bytes(_log_lines(200))  # 200 lines of 38 bytes
    appending = os.open(log, os.O_WRONLY | os.O_APPEND)  # cron's `>> tick.log`
    try:
        assert trim_log(str(log), max_bytes=4096, keep_bytes=1024)
        os.write(appending, b"tick 000200: the line after the cut\n")
    finally:
        os.close(appending)
    lines = log.read_bytes().splitlines()
    assert lines[0] == b"(tick.log over 4096 bytes: earlier lines cut)"
    assert lines[1:-1] == _log_lines(200).splitlines()[-len(lines) + 2 :]
    assert len(lines) - 2 == 1024 // 38  # whole lines only: the first partial one dropped
    assert lines[-1] == b"tick 000200: the line after the cut"


def test_each_tick_keeps_the_cron_log_bounded(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    log = host.agent_path / TICK_LOG
    log.write_bytes(_log_lines(40_000))  # about 1.4 MiB
    tick(host)
    assert TICK_LOG_KEEP_BYTES - 40 < log.stat().st_size <= TICK_LOG_KEEP_BYTES + 50


def test_a_key_that_is_not_one_is_a_repair_that_says_so(host: FakeHost) -> None:
    host.engine = EngineKeepingEnv()
    deploy(host, _with_env("v1", SECRET))
    host.engine.container_remove(serving_container(host))
    (host.agent_path / "env.key").write_text("overwritten\n")
    host.store = StateStore(host.store.path)  # the next tick's own process reads it
    assert tick(host).actions == [
        f"sentiment: v1 could not be brought back: {host.agent_path}/env.key: not the agent's"
        " key for env values (a file of 32 bytes); move it away and the agent makes a new one"
        " (releases recorded before then cannot be recreated without a deployment)"
    ]


def test_a_release_recorded_before_the_mount_rules_still_heals(host: FakeHost) -> None:
    """A release an older agent recorded mounting what a deployment may no longer mount
    (/etc/ssl) is read as it was recorded: the tick brings it back, as it was deployed."""
    deploy(host, make_desired("v1"))
    spec = serving(host).spec
    spec["container"]["mounts"] = [{"source": "/etc/ssl", "target": "/certs", "read_only": True}]
    host.store.db.execute(
        "UPDATE releases SET spec = ? WHERE id = ?", (json.dumps(spec), serving(host).id)
    )
    host.engine.stop(serving_container(host))
    assert tick(host).actions == ["sentiment: restarted v1"]
