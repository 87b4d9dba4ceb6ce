"""The release state machine (pure): allowed transitions, promote and reinstate."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlfleet.agent.protocol import ReleaseStatus
from mlfleet.agent.releases import (
    BY_APPLY,
    BY_ROLLBACK,
    FAILED_STATUSES,
    TRANSITIONS,
    Change,
    InvalidTransition,
    ReleaseRow,
    allowed,
    check_transition,
    promote,
    reinstate,
)

S = ReleaseStatus


def rows(*spec: tuple) -> List[ReleaseRow]:
    """(id, status, activated_at) triples."""
    return [ReleaseRow(i, status, at) for i, status, at in spec]


def after(releases: Sequence[ReleaseRow], changes: Sequence[Change]) -> Dict[int, S]:
    status = {r.id: r.status for r in releases}
    status.update({c.id: c.status for c in changes})
    return status


# --- transitions -------------------------------------------------------------------------

ALLOWED = [
    (S.STARTING, S.CURRENT),
    (S.STARTING, S.FAILED),
    (S.STARTING, S.ROLLED_BACK),
    (S.STARTING, S.ROLLBACK_FAILED),
    (S.CURRENT, S.PREVIOUS),
    (S.CURRENT, S.RETIRED),
    (S.CURRENT, S.ROLLED_BACK),
    (S.CURRENT, S.CURRENT),  # reinstated after a failed apply: current, activated again
    (S.PREVIOUS, S.CURRENT),
    (S.PREVIOUS, S.RETIRED),
    (S.RETIRED, S.CURRENT),
    (S.RETIRED, S.PREVIOUS),
    (S.RETIRED, S.REMOVED),
]
REFUSED = [
    (S.ROLLED_BACK, S.CURRENT),
    (S.ROLLED_BACK, S.PREVIOUS),
    (S.ROLLBACK_FAILED, S.CURRENT),
    (S.FAILED, S.PREVIOUS),
    (S.REMOVED, S.CURRENT),
    (S.REMOVED, S.RETIRED),
    (S.STARTING, S.PREVIOUS),
    (S.CURRENT, S.STARTING),
    (S.RETIRED, S.STARTING),
]


@pytest.mark.parametrize(("old", "new"), ALLOWED)
def test_allowed_transitions(old: S, new: S) -> None:
    assert allowed(old, new)
    check_transition(1, old, new)


@pytest.mark.parametrize(("old", "new"), REFUSED)
def test_refused_transitions(old: S, new: S) -> None:
    assert not allowed(old, new)
    with pytest.raises(InvalidTransition, match=f"release 7 cannot go from {old.value}"):
        check_transition(7, old, new)


def test_every_status_has_its_transitions() -> None:
    assert set(TRANSITIONS) == set(ReleaseStatus)


def test_a_release_that_failed_never_serves_again() -> None:
    """Why rollbacks cannot loop: failed statuses are final."""
    for status in FAILED_STATUSES:
        assert TRANSITIONS[status] == frozenset()
    for status in ReleaseStatus:
        if status in (S.CURRENT, S.PREVIOUS, S.RETIRED, S.STARTING):
            continue
        assert S.CURRENT not in TRANSITIONS[status] and S.PREVIOUS not in TRANSITIONS[status]


# --- promote -----------------------------------------------------------------------------


def test_promote_the_first_release() -> None:
    releases = rows((1, S.STARTING, None))
    assert promote(releases, 1) == [Change(1, S.CURRENT, activate=True, activated_by=BY_APPLY)]


def test_promote_shifts_current_to_previous_and_previous_to_retired() -> None:
    releases = rows(
        (1, S.RETIRED, 10.0), (2, S.PREVIOUS, 20.0), (3, S.CURRENT, 30.0), (4, S.STARTING, None)
    )
    changes = promote(releases, 4)
    assert after(releases, changes) == {1: S.RETIRED, 2: S.RETIRED, 3: S.PREVIOUS, 4: S.CURRENT}
    assert [c for c in changes if c.activate] == [
        Change(4, S.CURRENT, activate=True, activated_by=BY_APPLY)
    ]


def test_promote_leaves_failed_and_removed_releases_alone() -> None:
    releases = rows(
        (1, S.REMOVED, 1.0), (2, S.ROLLED_BACK, 2.0), (3, S.CURRENT, 3.0), (4, S.STARTING, None)
    )
    assert {c.id for c in promote(releases, 4)} == {3, 4}


def test_promote_an_unknown_release_is_refused() -> None:
    with pytest.raises(ValueError, match="release 9 is not one of this app's releases"):
        promote(rows((1, S.CURRENT, 1.0)), 9)


def test_promote_a_failed_release_is_refused() -> None:
    with pytest.raises(InvalidTransition):
        promote(rows((1, S.CURRENT, 1.0), (2, S.ROLLED_BACK, 2.0)), 2)


# --- reinstate ---------------------------------------------------------------------------


def test_tick_rollback_reinstates_previous_and_the_next_older_becomes_previous() -> None:
    releases = rows((1, S.RETIRED, 10.0), (2, S.PREVIOUS, 20.0), (3, S.CURRENT, 30.0))
    changes = reinstate(releases, 2, 3, S.ROLLED_BACK, "turned unhealthy")
    assert after(releases, changes) == {1: S.PREVIOUS, 2: S.CURRENT, 3: S.ROLLED_BACK}
    assert Change(3, S.ROLLED_BACK, reason="turned unhealthy") in changes
    # Brought back by a rollback: the tick never rolls it back again.
    assert Change(2, S.CURRENT, activate=True, activated_by=BY_ROLLBACK) in changes


def test_apply_rollback_reactivates_the_current_release() -> None:
    """A new release failed its health check: the one that served goes on serving."""
    releases = rows((1, S.PREVIOUS, 10.0), (2, S.CURRENT, 20.0), (3, S.STARTING, None))
    changes = reinstate(releases, 2, 3, S.ROLLED_BACK, "health: HTTP 503")
    assert after(releases, changes) == {1: S.PREVIOUS, 2: S.CURRENT, 3: S.ROLLED_BACK}


def test_rollback_by_request_keeps_the_release_rolled_away_from() -> None:
    """`rollback --to v1`: v3 is retired, not failed, and most recently active: previous."""
    releases = rows((1, S.RETIRED, 10.0), (2, S.PREVIOUS, 20.0), (3, S.CURRENT, 30.0))
    changes = reinstate(releases, 1, None, S.RETIRED, "")
    assert after(releases, changes) == {1: S.CURRENT, 2: S.RETIRED, 3: S.PREVIOUS}
    assert all(c.reason is None for c in changes)


def test_reinstate_orders_retired_by_activation_then_id() -> None:
    releases = rows(
        (1, S.RETIRED, None), (2, S.RETIRED, 50.0), (3, S.RETIRED, 50.0), (4, S.CURRENT, 60.0)
    )
    changes = reinstate(releases, 1, 4, S.ROLLED_BACK, "x")
    assert after(releases, changes)[3] is S.PREVIOUS
    # Never activated sorts last, as SQLite sorts NULL.
    releases = rows((1, S.RETIRED, None), (2, S.RETIRED, 5.0), (3, S.CURRENT, 60.0))
    assert after(releases, reinstate(releases, 3, None, S.RETIRED, ""))[2] is S.PREVIOUS


def test_reinstate_with_nothing_else_kept_leaves_no_previous() -> None:
    releases = rows((1, S.PREVIOUS, 10.0), (2, S.CURRENT, 20.0))
    changes = reinstate(releases, 1, 2, S.ROLLED_BACK, "crashed")
    assert after(releases, changes) == {1: S.CURRENT, 2: S.ROLLED_BACK}


def test_reinstate_a_failed_release_is_refused() -> None:
    releases = rows((1, S.ROLLED_BACK, 10.0), (2, S.CURRENT, 20.0))
    with pytest.raises(InvalidTransition, match="release 1 cannot go from rolled_back"):
        reinstate(releases, 1, None, S.RETIRED, "")


# --- properties --------------------------------------------------------------------------

STATUSES = st.sampled_from(list(ReleaseStatus))


@st.composite
def histories(draw: st.DrawFn) -> List[ReleaseRow]:
    """Any set of an app's releases with at most one current and one previous."""
    n = draw(st.integers(1, 8))
    out: List[ReleaseRow] = []
    have: Dict[S, int] = {}
    for i in range(1, n + 1):
        status = draw(STATUSES)
        if status in (S.CURRENT, S.PREVIOUS) and have.get(status):
            status = S.RETIRED
        have[status] = have.get(status, 0) + 1
        at: Optional[float] = draw(st.one_of(st.none(), st.floats(0, 1e6)))
        out.append(ReleaseRow(i, status, at))
    return out


@given(histories(), st.data())
def test_reinstating_a_kept_release_leaves_one_current_and_at_most_one_previous(
    releases: List[ReleaseRow], data: st.DataObject
) -> None:
    kept = [r for r in releases if r.status in (S.PREVIOUS, S.RETIRED)]
    if not kept:
        return
    target = data.draw(st.sampled_from(kept))
    live = [r for r in releases if r.status in (S.CURRENT, S.STARTING)]
    failed = data.draw(st.sampled_from(live)) if live else None
    changes = reinstate(releases, target.id, failed.id if failed else None, S.ROLLED_BACK, "failed")
    status = after(releases, changes)
    assert [i for i, s in status.items() if s is S.CURRENT] == [target.id]
    assert sum(s is S.PREVIOUS for s in status.values()) <= 1
    if failed:
        assert status[failed.id] is S.ROLLED_BACK
    # A release that had failed stays failed.
    for r in releases:
        if r.status in FAILED_STATUSES:
            assert status[r.id] is r.status


@given(histories(), st.data())
def test_promoting_a_new_release_leaves_one_current_and_at_most_one_previous(
    releases: List[ReleaseRow], data: st.DataObject
) -> None:
    new = ReleaseRow(len(releases) + 1, S.STARTING, None)
    status = after([*releases, new], promote([*releases, new], new.id))
    assert [i for i, s in status.items() if s is S.CURRENT] == [new.id]
    assert sum(s is S.PREVIOUS for s in status.values()) <= 1
    old_current = [r.id for r in releases if r.status is S.CURRENT]
    assert [i for i, s in status.items() if s is S.PREVIOUS] == old_current
