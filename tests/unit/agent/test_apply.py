"""How a new release replaces the old one (start_order, pure), and apply / rollback_to end to
end against the in-memory fake engine and a real SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Set

import pytest

from mlfleet.agent.apply import apply, rollback_to, start_order
from mlfleet.agent.desired import DesiredState
from mlfleet.agent.protocol import ApplyStatus, Event, EventKind, Phase, Strategy
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

# --- start_order --------------------------------------------------------------------------

ORDERS = [
    # (strategy, new ports, old ports (None: nothing serves), stop first)
    (Strategy.AUTO, {18080}, None, False),
    (Strategy.AUTO, {18080}, {18080}, True),
    (Strategy.AUTO, {18080, 19090}, {19090}, True),
    (Strategy.AUTO, {18080}, {18081}, False),
    (Strategy.AUTO, set(), set(), False),
    (Strategy.AUTO, set(), {18080}, False),
    (Strategy.STOP_FIRST, {18080}, {18081}, True),
    (Strategy.STOP_FIRST, set(), None, True),
    (Strategy.START_FIRST, {18080}, {18080}, False),
    (Strategy.START_FIRST, {18080}, None, False),
]


@pytest.mark.parametrize(("strategy", "new", "old", "stop_first"), ORDERS)
def test_start_order(
    strategy: Strategy, new: Set[int], old: Optional[Set[int]], stop_first: bool
) -> None:
    order = start_order(strategy, new, old)
    assert order.stop_first is stop_first
    assert order.reason


def test_start_order_reasons_name_the_port() -> None:
    assert start_order(Strategy.AUTO, {18080, 19090}, {19090, 18080}).reason == (
        "old and new both bind host port 18080, 19090: the old one stops first"
    )
    assert "serves until the new one is proven" in start_order(Strategy.AUTO, {1}, {2}).reason
    assert start_order(Strategy.START_FIRST, {1}, {1}).reason == "strategy start-first"


# --- apply end to end ---------------------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return make_host(tmp_path)


def _current(host: FakeHost) -> Optional[str]:
    current = host.store.current("sentiment")
    return current.tag if current else None


def _statuses(host: FakeHost) -> List[tuple]:
    return [(r.tag, r.status) for r in reversed(host.store.releases("sentiment"))]


def _progress(host: FakeHost) -> List[str]:
    return [e["kind"] for e in reversed(host.store.events("sentiment"))]


def test_first_apply_serves_the_new_release(host: FakeHost) -> None:
    result = apply(host, make_desired("v1"))
    assert result.status is ApplyStatus.SUCCEEDED
    assert (result.variant, result.image, result.container) == (
        "cpu",
        f"{IMAGE}:v1",
        "sentiment.r1",
    )
    assert result.digest == f"{IMAGE}@{digest_of('v1')}"
    assert _current(host) == "v1" and host.engine.running_tags() == ["v1"]
    container = host.engine.containers[serving_container(host)]
    # Committed: it now survives reboots (probation ran with no restart policy).
    assert container.config["HostConfig"]["RestartPolicy"] == {"Name": "unless-stopped"}
    assert _progress(host) == [EventKind.SUCCEEDED.value]


def test_the_same_release_again_is_unchanged(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    result = apply(host, make_desired("v1"))
    assert result.status is ApplyStatus.UNCHANGED
    assert _statuses(host) == [("v1", "current")]


def test_an_update_keeps_the_old_release_for_rollback(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    result = deploy(host, make_desired("v2"))
    assert result.previous_tag == "v1"
    assert _statuses(host) == [("v1", "previous"), ("v2", "current")]
    assert host.engine.running_tags() == ["v2"]


def test_same_port_stops_the_old_release_first(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    events: List[Event] = []
    host.emit = events.append
    deploy(host, make_desired("v2"))
    kinds = [e.kind for e in events]
    assert kinds.index(EventKind.STOP) < kinds.index(EventKind.STARTED)


def test_an_old_release_someone_removed_does_not_block_the_update(host: FakeHost) -> None:
    """`docker rm -f` of the serving container: the update's stop-first finds nothing to
    stop (it holds no port) and goes on."""
    deploy(host, make_desired("v1"))
    host.engine.container_remove(serving_container(host))
    result = apply(host, make_desired("v2"))
    assert result.status is ApplyStatus.SUCCEEDED, result.reason
    assert host.engine.running_tags() == ["v2"] and _current(host) == "v2"


def test_other_port_starts_the_new_release_first(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    events: List[Event] = []
    host.emit = events.append
    other = {"ports": [{"container": 8080, "host": 18081}]}
    deploy(host, make_desired("v2", container=other))
    assert EventKind.STOP not in [e.kind for e in events]
    assert host.engine.running_tags() == ["v2"]  # the old one stopped at commit


def test_a_sick_release_is_rolled_back_and_the_old_one_serves(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    host.engine.break_image(f"{IMAGE}:v2")
    result = apply(host, make_desired("v2"))
    assert result.status is ApplyStatus.ROLLED_BACK and result.phase is Phase.HEALTH
    assert result.logs  # the failed container's log, for the operator
    assert _current(host) == "v1" and host.engine.running_tags() == ["v1"]
    assert _statuses(host) == [("v1", "current"), ("v2", "rolled_back")]
    assert "sentiment.r2" not in [c.name for c in host.engine.containers.values()]


def test_a_first_release_that_fails_leaves_nothing_and_says_so(host: FakeHost) -> None:
    host.engine.break_image(f"{IMAGE}:v1")
    result = apply(host, make_desired("v1"))
    assert result.status is ApplyStatus.FAILED
    assert _statuses(host) == [("v1", "failed")]
    assert _progress(host) == [EventKind.FAILED.value]


def test_a_failed_rollback_is_left_for_an_operator(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    host.engine.break_image(f"{IMAGE}:v1")  # v1 stopped (same port) and will not start again
    host.engine.break_image(f"{IMAGE}:v2")
    result = apply(host, make_desired("v2"))
    assert result.status is ApplyStatus.ROLLBACK_FAILED
    assert _statuses(host) == [("v1", "current"), ("v2", "rollback_failed")]
    assert _progress(host)[-1] == EventKind.ROLLBACK_FAILED.value


def test_an_image_running_as_root_is_refused_before_anything_changes(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    host.engine.image_user = ""
    result = apply(host, make_desired("v2"))
    assert result.status is ApplyStatus.FAILED and result.phase is Phase.PREFLIGHT
    assert "runs as root" in (result.reason or "")
    assert _statuses(host) == [("v1", "current")] and host.engine.running_tags() == ["v1"]


def test_a_missing_mount_source_is_refused(host: FakeHost, tmp_path: Path) -> None:
    mounts = {"ports": [], "mounts": [{"source": str(tmp_path / "nope"), "target": "/models"}]}
    result = apply(host, make_desired("v1", container=mounts, health={"docker": False}))
    assert result.status is ApplyStatus.FAILED and result.phase is Phase.PREFLIGHT
    assert "does not exist" in (result.reason or "")
    assert _statuses(host) == []


# --- rollback_to --------------------------------------------------------------------------


def test_rollback_by_request(host: FakeHost) -> None:
    for tag in ("v1", "v2", "v3"):
        deploy(host, make_desired(tag))
    result = rollback_to(host, "sentiment", "v1")
    assert result.status is ApplyStatus.ROLLED_BACK and result.previous_tag == "v3"
    assert _current(host) == "v1" and host.engine.running_tags() == ["v1"]
    assert _statuses(host) == [("v1", "current"), ("v2", "retired"), ("v3", "previous")]


def test_rollback_without_a_tag_goes_to_the_newest_kept(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    deploy(host, make_desired("v2"))
    assert rollback_to(host, "sentiment", None).status is ApplyStatus.ROLLED_BACK
    assert _current(host) == "v1"


def test_rollback_to_an_unknown_tag_changes_nothing(host: FakeHost) -> None:
    deploy(host, make_desired("v1"))
    deploy(host, make_desired("v2"))
    result = rollback_to(host, "sentiment", "v9")
    assert result.status is ApplyStatus.FAILED
    assert result.reason == "no kept release of v9 (kept: v1)"
    assert _current(host) == "v2" and host.engine.running_tags() == ["v2"]


def test_rollback_to_a_release_that_does_not_start_restores_the_current(
    host: FakeHost,
) -> None:
    deploy(host, make_desired("v1"))
    deploy(host, make_desired("v2"))
    host.engine.break_image(f"{IMAGE}:v1")
    result = rollback_to(host, "sentiment", "v1")
    assert result.status is ApplyStatus.FAILED
    assert result.reason == "v1 did not become healthy; v2 restored"
    assert _current(host) == "v2" and host.engine.running_tags() == ["v2"]


# --- an apply never depends on its audience ------------------------------------------------


def test_a_controller_that_went_away_changes_nothing(host: FakeHost) -> None:
    """The SSH channel closed mid-apply: every progress write fails; the apply goes on and
    the new release serves (its result stays in the host's history)."""
    deploy(host, make_desired("v1"))

    def gone(event: Event) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    host.emit = gone
    result = apply(host, make_desired("v2"))
    assert result.status is ApplyStatus.SUCCEEDED
    assert host.engine.running_tags() == ["v2"]
    current = host.store.current("sentiment")
    assert current is not None and current.tag == "v2"
    assert [e["kind"] for e in host.store.events(limit=1)] == [EventKind.SUCCEEDED.value]


def test_a_failure_after_the_promotion_never_rolls_the_release_back(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(host, make_desired("v1"))

    def broken_collection(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("mlfleet.agent.apply.collect_garbage", broken_collection)
    result = apply(host, make_desired("v2"))
    assert result.status is ApplyStatus.SUCCEEDED and "No space left" in (result.reason or "")
    assert host.engine.running_tags() == ["v2"]
    current = host.store.current("sentiment")
    assert current is not None and current.tag == "v2"


# --- a large layer's pull -------------------------------------------------------------------


def test_a_large_layers_pull_reports_progress_and_retries(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's own progress messages (the JSON lines of `POST /images/create`) for a
    2 GiB layer whose link broke once: the agent says how far it got and that the engine
    retries (the controller waits on such signs of life, not on a wall clock), and counts
    the layer's bytes once."""
    from mlfleet.agent import apply as apply_module

    monkeypatch.setattr(apply_module, "PULL_PROGRESS_EVERY_S", 0.0)
    events: List[Event] = []
    host.emit = events.append
    big, gib = "0123456789ab", 2 << 30

    def pull(
        repository: str, tag: str, timeout: float = 900.0, auth: object = None
    ) -> Iterator[dict]:
        yield {"status": "Pulling fs layer", "progressDetail": {}, "id": big}
        for current in (1 << 20, gib // 2):
            yield {"status": "Downloading", "progressDetail": {"current": current, "total": gib},
                   "id": big}  # fmt: skip
        yield {"status": "Retrying in 5 seconds", "progressDetail": {}, "id": big}
        yield {"status": "Downloading", "progressDetail": {"current": gib, "total": gib}, "id": big}
        yield {"status": "Download complete", "progressDetail": {}, "id": big}
        yield {"status": "Pull complete", "progressDetail": {}, "id": big}

    monkeypatch.setattr(host.engine, "pull", pull)
    fetched = apply_module._pull(host, f"{IMAGE}:v1", None)
    said = [e.message for e in events if e.kind is EventKind.LAYER]
    assert f"layer {big}: downloading 1024.0 of 2048.0 MiB" in said
    assert f"layer {big}: Retrying in 5 seconds" in said
    assert fetched == gib


# --- inline env values: to the engine, never to the record ---------------------------------

SECRET = "s3cret-from-the-inventory"


def _with_env(tag: str, token: str) -> DesiredState:
    return make_desired(tag, container={"ports": [{"container": 8080, "host": 18080}],
                                        "env": {"TOKEN": token}})  # fmt: skip


def test_env_values_reach_the_container_and_only_their_hashes_the_record(host: FakeHost) -> None:
    deploy(host, _with_env("v1", SECRET))
    assert host.engine.containers[serving_container(host)].config["Env"] == [f"TOKEN={SECRET}"]
    recorded = serving(host).spec["container"]["env"]["TOKEN"]
    assert recorded.startswith("hmac-sha256:") and SECRET not in recorded
    on_disk = b"".join(p.read_bytes() for p in host.agent_path.glob("state.db*"))
    assert SECRET.encode() not in on_disk


def test_the_same_env_again_is_unchanged_and_another_value_is_a_new_release(
    host: FakeHost,
) -> None:
    deploy(host, _with_env("v1", SECRET))
    assert apply(host, _with_env("v1", SECRET)).status is ApplyStatus.UNCHANGED
    assert apply(host, _with_env("v1", SECRET + "-rotated")).status is ApplyStatus.SUCCEEDED
    assert [r.tag for r in host.store.releases("sentiment")] == ["v1", "v1"]


def test_a_rollback_to_a_release_whose_container_is_gone_takes_its_env_from_the_engine(
    host: FakeHost,
) -> None:
    host.engine = EngineKeepingEnv()
    deploy(host, _with_env("v1", SECRET))
    deploy(host, _with_env("v2", SECRET))
    v1 = host.store.previous("sentiment")
    assert v1 is not None and v1.container_id
    host.engine.container_remove(v1.container_id)  # pruned by hand
    result = rollback_to(host, "sentiment", "v1")
    assert result.status is ApplyStatus.ROLLED_BACK, result.reason
    assert host.engine.containers[serving_container(host)].config["Env"] == [f"TOKEN={SECRET}"]


def test_a_rollback_whose_env_values_are_gone_is_refused_and_the_current_kept(
    host: FakeHost,
) -> None:
    host.engine = EngineKeepingEnv()
    deploy(host, _with_env("v1", "the-old-token"))
    deploy(host, _with_env("v2", SECRET))
    v1 = host.store.previous("sentiment")
    assert v1 is not None and v1.container_id
    host.engine.container_remove(v1.container_id)
    result = rollback_to(host, "sentiment", "v1")
    assert result.status is ApplyStatus.FAILED
    assert result.reason == "v1 did not become healthy; v2 restored"
    assert result.health_evidence == [
        "container of v1 is gone and was not recreated: the container of v1 is gone, and with it"
        " the values of its inline env (TOKEN): this host keeps only keyed hashes of them and no"
        " container of sentiment holds them; deploy sentiment again (mlfleet deploy)"
    ]
    assert host.engine.running_tags() == ["v2"]
