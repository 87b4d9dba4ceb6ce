"""The agent's record (StateStore) against a real SQLite file: releases through promote and
reinstate, status changes checked against the state machine, health samples and events."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlfleet.agent import state
from mlfleet.agent.protocol import ReleaseStatus
from mlfleet.agent.releases import InvalidTransition
from mlfleet.agent.sealed_env import load_key, seal
from mlfleet.agent.state import StateStore

APP = "sentiment"


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(str(tmp_path / "agent" / "state.db"))


def new(store: StateStore, tag: str, app: str = APP) -> int:
    return store.new_release(app, f"deploy-{tag}", tag, "cpu", f"reg/m:{tag}", {"tag": tag}).id


def applied(store: StateStore, tag: str, app: str = APP) -> int:
    release_id = new(store, tag, app)
    store.promote(app, release_id)
    return release_id


def statuses(store: StateStore, app: str = APP) -> Dict[str, str]:
    return {r.tag: r.status for r in store.releases(app)}


def test_a_new_release_is_starting_and_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    first = StateStore(path)
    release_id = new(first, "v1")
    first.close()
    again = StateStore(path).get(release_id)
    assert again is not None and (again.tag, again.status) == ("v1", "starting")
    assert again.spec == {"tag": "v1"} and again.activated_at is None


def test_promote_moves_current_to_previous_and_previous_to_retired(store: StateStore) -> None:
    applied(store, "v1")
    assert statuses(store) == {"v1": "current"}
    applied(store, "v2")
    applied(store, "v3")
    assert statuses(store) == {"v3": "current", "v2": "previous", "v1": "retired"}
    current = store.current(APP)
    assert current is not None and current.tag == "v3" and current.activated_at is not None
    assert store.previous(APP).tag == "v2"  # type: ignore[union-attr]


def test_promote_touches_only_its_app(store: StateStore) -> None:
    applied(store, "v1", app="other")
    applied(store, "v1")
    applied(store, "v2")
    assert statuses(store, "other") == {"v1": "current"}


def test_a_tick_rollback_reinstates_previous(store: StateStore) -> None:
    applied(store, "v1")
    v2 = applied(store, "v2")
    v3 = applied(store, "v3")
    store.reinstate(APP, v2, v3, "rolled_back", "turned unhealthy within its grace period")
    assert statuses(store) == {"v3": "rolled_back", "v2": "current", "v1": "previous"}
    failed = store.get(v3)
    assert failed is not None and failed.reason == "turned unhealthy within its grace period"


def test_a_failed_apply_leaves_the_serving_release_current(store: StateStore) -> None:
    applied(store, "v1")
    v2 = applied(store, "v2")
    v3 = new(store, "v3")
    before = store.get(v2).activated_at  # type: ignore[union-attr]
    store.reinstate(APP, v2, v3, "rolled_back", "health: HTTP 503 (wanted 200)")
    assert statuses(store) == {"v3": "rolled_back", "v2": "current", "v1": "previous"}
    assert store.get(v2).activated_at >= before  # type: ignore[union-attr,operator]


def test_a_rollback_by_request_keeps_the_newer_release_as_previous(store: StateStore) -> None:
    v1 = applied(store, "v1")
    applied(store, "v2")
    applied(store, "v3")
    store.reinstate(APP, v1, None, "retired", "")
    assert statuses(store) == {"v3": "previous", "v2": "retired", "v1": "current"}


def test_a_rolled_back_release_cannot_be_reinstated(store: StateStore) -> None:
    v1 = applied(store, "v1")
    v2 = applied(store, "v2")
    store.reinstate(APP, v1, v2, "rolled_back", "crashed")
    with pytest.raises(InvalidTransition, match="cannot go from rolled_back to current"):
        store.reinstate(APP, v2, None, "retired", "")
    assert statuses(store) == {"v2": "rolled_back", "v1": "current"}  # nothing written


def test_update_checks_status_changes(store: StateStore) -> None:
    v1 = new(store, "v1")
    store.update(v1, status="failed", reason="apply was interrupted")
    with pytest.raises(InvalidTransition):
        store.update(v1, status="current")
    with pytest.raises(ValueError, match="unknown status 'serving'"):
        store.update(v1, status="serving")
    with pytest.raises(ValueError, match="not updatable"):
        store.update(v1, tag="v9")
    release = store.get(v1)
    assert release is not None and (release.status, release.reason) == (
        "failed",
        "apply was interrupted",
    )


def test_update_sets_other_columns(store: StateStore) -> None:
    v1 = new(store, "v1")
    store.update(v1, container_id="c1", container_name="sentiment.r1", digest="reg/m@sha256:1")
    release = store.get(v1)
    assert release is not None
    assert (release.container_id, release.container_name) == ("c1", "sentiment.r1")
    assert release.view().container == "sentiment.r1"


def test_garbage_collection_removes_retired(store: StateStore) -> None:
    v1 = applied(store, "v1")
    applied(store, "v2")
    applied(store, "v3")
    store.update(v1, status=ReleaseStatus.REMOVED)
    assert statuses(store)["v1"] == "removed"


def test_health_samples_newest_first(store: StateStore) -> None:
    v1 = applied(store, "v1")
    for ok in (True, False, False):
        store.record_health(v1, ok, f"ok={ok}")
    assert [s.ok for s in store.recent_health(v1, 2)] == [False, False]
    assert len(store.recent_health(v1, 10)) == 3


def test_health_samples_are_capped_per_app(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "HEALTH_KEPT_PER_APP", 4)
    v1 = applied(store, "v1")
    other = applied(store, "v1", app="other")
    store.record_health(other, True, "other app")
    for n in range(3):
        store.record_health(v1, True, f"v1 #{n}")
    v2 = applied(store, "v2")
    for n in range(3):
        store.record_health(v2, n != 2, f"v2 #{n}")
    kept = [s.detail for s in store.recent_health(v2, 10) + store.recent_health(v1, 10)]
    assert kept == ["v2 #2", "v2 #1", "v2 #0", "v1 #2"]  # the app's newest 4
    assert [s.detail for s in store.recent_health(other, 10)] == ["other app"]


def test_events_newest_first_per_app(store: StateStore) -> None:
    store.event("succeeded", "v1 is serving", app=APP)
    store.event("missing", "gone", app="other", data={"why": "removed"})
    assert [e["kind"] for e in store.events()] == ["missing", "succeeded"]
    assert [e["message"] for e in store.events(APP)] == ["v1 is serving"]
    assert store.events("other")[0]["data"] == {"why": "removed"}


# --- property: any sequence of applies and rollbacks ------------------------------------

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("apply"), st.booleans()),  # promoted, or failed and rolled back
        st.tuples(st.just("rollback"), st.integers(0, 5)),  # to the n-th kept release
        st.tuples(st.just("tick_rollback"), st.booleans()),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_any_history_has_at_most_one_current_and_one_previous(steps: List[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(str(Path(tmp) / "state.db"))
        tags = iter(range(1, 1000))
        rolled_back = set()
        for step, arg in steps:
            current = store.current(APP)
            if step == "apply":
                release_id = new(store, f"v{next(tags)}")
                if arg or current is None:
                    store.promote(APP, release_id)
                else:
                    store.reinstate(APP, current.id, release_id, "rolled_back", "health")
                    rolled_back.add(release_id)
            elif step == "rollback":
                kept = store.releases(APP, ["previous", "retired"])
                if kept:
                    store.reinstate(APP, kept[arg % len(kept)].id, None, "retired", "")
            else:
                previous = store.previous(APP)
                if current is not None and previous is not None:
                    store.reinstate(APP, previous.id, current.id, "rolled_back", "crashed")
                    rolled_back.add(current.id)
            releases = store.releases(APP)
            assert sum(r.status == "current" for r in releases) <= 1
            assert sum(r.status == "previous" for r in releases) <= 1
            if releases and any(r.status in ("previous", "retired") for r in releases):
                assert store.current(APP) is not None
            # A release that was rolled back is never brought back.
            assert all(r.status == "rolled_back" for r in releases if r.id in rolled_back)
        store.close()


def test_a_record_that_cannot_be_opened_for_writing_is_still_read(tmp_path) -> None:
    """On a full disk SQLite cannot make a WAL database's -shm and -wal files: the record
    is read from its main file, and a write says why it cannot be made. The full disk is a
    process whose files may not grow (RLIMIT_FSIZE 0: every write past the end fails)."""
    path = tmp_path / "state.db"
    store = StateStore(str(path))
    store.event("succeeded", "v1 is serving", app="sentiment")
    store.close()
    script = f"""
import resource, signal, sqlite3
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
from mlfleet.agent.state import StateStore
store = StateStore({str(path)!r})
print(store.unwritable is not None, [e["message"] for e in store.events("sentiment")])
try:
    store.event("repaired", "x", app="sentiment")
except sqlite3.OperationalError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "True ['v1 is serving']"
    assert "cannot be written" in done.stdout.splitlines()[1]


# --- private, and no secret at rest -------------------------------------------------------

SECRET = "s3cret-token-from-the-inventory"


def _spec(tag: str, env: Dict[str, str]) -> Dict[str, Any]:
    return {"tag": tag, "container": {"env": env, "ports": []}}


def _on_disk(path: Path) -> bytes:
    """Everything SQLite keeps of the record: the file, its -wal and -shm."""
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def test_the_record_and_its_wal_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = StateStore(str(tmp_path / "agent" / "state.db"))
        new(store, "v1")
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "agent").iterdir()}
    assert modes == {"state.db": "0o600", "state.db-wal": "0o600", "state.db-shm": "0o600"}
    assert oct((tmp_path / "agent").stat().st_mode & 0o777) == "0o700"


def test_env_values_are_recorded_as_keyed_hashes_only(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "state.db"
    store = StateStore(str(path))
    release = store.new_release(APP, "d1", "v1", "cpu", "reg/m:v1", _spec("v1", {"TOKEN": SECRET}))
    key = load_key(str(tmp_path / "agent"))
    assert release.spec["container"]["env"] == {"TOKEN": seal(key, "TOKEN", SECRET)}
    assert release.env_sealed
    assert SECRET.encode() not in _on_disk(path)
    assert store.sealed_spec(_spec("v1", {"TOKEN": SECRET})) == release.spec
    assert oct((tmp_path / "agent" / "env.key").stat().st_mode & 0o777) == "0o600"


def test_a_release_without_inline_env_makes_no_key(store: StateStore) -> None:
    new(store, "v1")
    assert not (Path(store.path).parent / "env.key").exists()


def _older_agents_record(path: Path, specs: List[Dict[str, Any]]) -> None:
    """A record as the agent before sealing wrote it: env values in plaintext, no
    env_sealed column, the old text also in a page that was freed since."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(state._SCHEMA.replace("    env_sealed INTEGER,\n", ""))
    for n, spec in enumerate(specs, 1):
        db.execute(
            "INSERT INTO releases (app, deployment, tag, status, spec, created_at, updated_at)"
            " VALUES (?, ?, ?, 'retired', ?, 0, 0)",
            (APP, f"d{n}", spec["tag"], json.dumps(spec)),
        )
    db.execute("INSERT INTO events (at, kind, message) VALUES (0, 'x', ?)", ("y" * 5000 + SECRET,))
    db.execute("DELETE FROM events")
    db.close()


def test_an_older_agents_record_is_sealed_when_opened_and_keeps_no_old_text(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    _older_agents_record(path, [_spec("v1", {"TOKEN": SECRET}), _spec("v2", {})])
    assert SECRET.encode() in _on_disk(path)
    store = StateStore(str(path))
    key = load_key(str(tmp_path))
    v1, v2 = store.releases(APP)[::-1]
    assert v1.spec["container"]["env"] == {"TOKEN": seal(key, "TOKEN", SECRET)}
    assert v2.spec == _spec("v2", {})
    assert v1.env_sealed and v2.env_sealed
    assert SECRET.encode() not in _on_disk(path)
    store.close()
    again = StateStore(str(path))  # sealed once: not sealed again
    assert again.releases(APP)[-1].spec == v1.spec
