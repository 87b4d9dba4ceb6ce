"""The release state machine (pure): which status changes are allowed, and what promoting or
reinstating a release changes in an app's record. `StateStore` applies the changes in one
transaction; nothing here touches the database or the clock.

- an apply creates a release `starting`, then promotes it to `current`; the current one
  becomes `previous`, the previous one `retired`; garbage collection makes old ones `removed`;
- a rollback reinstates a kept release (previous or retired) as `current`;
- a release that fails ends `failed`, `rolled_back` or `rollback_failed`.

Why no rollback ever loops: a release that failed (`failed`, `rolled_back`,
`rollback_failed`) is final, it never becomes current or previous again. A rollback only
reinstates a kept release (previous or retired), so a chain of rollbacks moves to ever older
releases and ends when none is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence

from mlfleet.agent.protocol import ReleaseStatus

S = ReleaseStatus

# A release that failed stays failed: it is never a rollback target (see the module docstring).
FAILED_STATUSES: FrozenSet[ReleaseStatus] = frozenset({S.FAILED, S.ROLLED_BACK, S.ROLLBACK_FAILED})

TRANSITIONS: Dict[ReleaseStatus, FrozenSet[ReleaseStatus]] = {
    # An apply promotes it, or it fails (health, monitor, an interrupted apply).
    S.STARTING: frozenset({S.CURRENT} | FAILED_STATUSES),
    # Replaced by a newer release, by a reinstated older one, or it failed after its commit
    # (a tick's rollback; an apply that failed after promoting it).
    S.CURRENT: frozenset({S.PREVIOUS, S.RETIRED} | FAILED_STATUSES),
    S.PREVIOUS: frozenset({S.CURRENT, S.RETIRED, S.REMOVED}),
    S.RETIRED: frozenset({S.CURRENT, S.PREVIOUS, S.REMOVED}),
    S.FAILED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.ROLLBACK_FAILED: frozenset(),
    S.REMOVED: frozenset(),
}


class InvalidTransition(ValueError):
    """A status change the state machine does not allow (a bug in the agent, not the host)."""


def allowed(old: ReleaseStatus, new: ReleaseStatus) -> bool:
    """Whether a release may go from `old` to `new` (staying put is always allowed: a current
    release reinstated after a failed apply stays current, with a new activation time)."""
    return old == new or new in TRANSITIONS[old]


def check_transition(release_id: int, old: ReleaseStatus, new: ReleaseStatus) -> None:
    """Raise InvalidTransition when `old` -> `new` is not allowed."""
    if not allowed(old, new):
        raise InvalidTransition(
            f"release {release_id} cannot go from {old.value} to {new.value}"
            f" (allowed: {', '.join(sorted(s.value for s in TRANSITIONS[old])) or 'none, it is final'})"
        )


BY_APPLY = "apply"
BY_ROLLBACK = "rollback"


@dataclass(frozen=True)
class ReleaseRow:
    """What the state machine needs to know about one release of an app."""

    id: int
    status: ReleaseStatus
    activated_at: Optional[float] = None


@dataclass(frozen=True)
class Change:
    """One release's new status; `activate`: it starts serving now (its activation time is
    set); `reason`: recorded with the status when not None."""

    id: int
    status: ReleaseStatus
    activate: bool = False
    reason: Optional[str] = None
    # How an activated release came to serve: "apply" (promoted) or "rollback" (reinstated);
    # the tick never rolls back a release that a rollback brought back.
    activated_by: Optional[str] = None


def promote(releases: Sequence[ReleaseRow], release_id: int) -> List[Change]:
    """Make `release_id` current: the current release becomes previous, the previous one
    retired. `releases`: the app's releases (any order)."""
    _find(releases, release_id)
    changes = []
    for row in releases:
        if row.id == release_id:
            changes.append(Change(row.id, S.CURRENT, activate=True, activated_by=BY_APPLY))
        elif row.status is S.PREVIOUS:
            changes.append(Change(row.id, S.RETIRED))
        elif row.status is S.CURRENT:
            changes.append(Change(row.id, S.PREVIOUS))
    return _checked(releases, changes)


def reinstate(
    releases: Sequence[ReleaseRow],
    release_id: int,
    failed_id: Optional[int],
    failed_status: ReleaseStatus,
    reason: str,
) -> List[Change]:
    """After a rollback: `release_id` (previous or retired, or the current one an apply failed
    to replace) is current again; the failed release gets `failed_status` and `reason`; the
    other current or previous releases are retired, and the most recently active retired
    release becomes previous."""
    _find(releases, release_id)
    status = {row.id: row.status for row in releases}
    if failed_id is not None:
        _find(releases, failed_id)
        status[failed_id] = failed_status
    for row in releases:
        if row.id != release_id and status[row.id] in (S.CURRENT, S.PREVIOUS):
            status[row.id] = S.RETIRED
    status[release_id] = S.CURRENT
    retired = [r for r in releases if r.id != release_id and status[r.id] is S.RETIRED]
    if retired:
        # Most recently active first; never active (no time) last, as SQLite sorts NULL.
        newest = max(
            retired, key=lambda r: (r.activated_at is not None, r.activated_at or 0.0, r.id)
        )
        status[newest.id] = S.PREVIOUS
    changes = []
    for row in releases:
        if row.id == release_id:
            changes.append(Change(row.id, S.CURRENT, activate=True, activated_by=BY_ROLLBACK))
        elif row.id == failed_id:
            changes.append(Change(row.id, status[row.id], reason=reason))
        elif status[row.id] != row.status:
            changes.append(Change(row.id, status[row.id]))
    return _checked(releases, changes)


def _find(releases: Sequence[ReleaseRow], release_id: int) -> ReleaseRow:
    for row in releases:
        if row.id == release_id:
            return row
    raise ValueError(f"release {release_id} is not one of this app's releases")


def _checked(releases: Sequence[ReleaseRow], changes: List[Change]) -> List[Change]:
    old = {row.id: row.status for row in releases}
    for change in changes:
        check_transition(change.id, old[change.id], change.status)
    return changes
