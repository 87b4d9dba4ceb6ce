"""The agent's local record: releases, health samples, events (SQLite, standard library).

Every change is one committed transaction in WAL mode with synchronous=FULL, so a crash or
`kill -9` at any point loses no recorded history; a release row is written *before* its
container is created, so the next tick can see an apply that died half-way.

The record is private (the file 0600, SQLite's -wal and -shm follow its mode) and holds no
secret: a release's inline env values are kept only as keyed hashes (agent/sealed_env.py);
a record an older agent wrote with the values is sealed when it is opened, and rewritten so
no page keeps the old text (secure_delete, then VACUUM). Health samples are capped per app.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from mlfleet.agent import releases as release_states
from mlfleet.agent.protocol import HealthSample, ReleaseStatus, ReleaseView
from mlfleet.agent.sealed_env import inline_env, load_key, seal_spec

# Health samples kept per app (a tick's decisions read the last few; a minute's tick over a
# week is about 10,000): the oldest go as new ones come.
HEALTH_KEPT_PER_APP = 1000


def _status(value: Any) -> ReleaseStatus:
    try:
        return ReleaseStatus(value)
    except ValueError:
        raise ValueError(f"unknown status {value!r}") from None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    deployment TEXT NOT NULL,
    tag TEXT NOT NULL,
    variant TEXT,
    image TEXT,
    digest TEXT,
    container_id TEXT,
    container_name TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    activated_at REAL,
    activated_by TEXT,
    env_sealed INTEGER,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_app ON releases (app, status);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    release_id INTEGER NOT NULL,
    at REAL NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS health_release ON health (release_id, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    app TEXT,
    release_id INTEGER,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT
);
"""


@dataclass
class Release:
    id: int
    app: str
    deployment: str
    tag: str
    variant: Optional[str]
    image: Optional[str]
    digest: Optional[str]
    container_id: Optional[str]
    container_name: Optional[str]
    status: str
    reason: Optional[str]
    spec: Dict[str, Any]  # the desired state it was applied from, its env values sealed
    created_at: float
    activated_at: Optional[float]
    updated_at: float
    activated_by: Optional[str] = None  # "apply" or "rollback" (agent/releases.py)
    # Its spec's inline env values are keyed hashes (agent/sealed_env.py), not the values:
    # false only in a record an older agent wrote that could not be sealed (a full disk).
    env_sealed: Optional[int] = None

    @property
    def reinstated(self) -> bool:
        """It serves because a rollback brought it back (not because an apply promoted it)."""
        return self.activated_by == release_states.BY_ROLLBACK

    def to_dict(self) -> Dict[str, Any]:
        """The row for the agent's own `history` (its spec left out)."""
        d = dict(self.__dict__)
        d.pop("spec")
        return d

    def view(self) -> ReleaseView:
        """The release as the protocol reports it to a controller."""
        return ReleaseView(
            id=self.id,
            tag=self.tag,
            variant=self.variant,
            image=self.image,
            digest=self.digest,
            container=self.container_name,
            status=ReleaseStatus(self.status),
            deployment=self.deployment,
            created_at=self.created_at,
            activated_at=self.activated_at,
            reason=self.reason,
        )


class StateStore:
    def __init__(self, path: str):
        agent_dir = os.path.dirname(os.path.abspath(path))
        os.makedirs(agent_dir, mode=0o700, exist_ok=True)
        self.path = path
        self._agent_dir = agent_dir
        self._key: Optional[bytes] = None
        # Why the record can only be read (its filesystem is full), or None.
        self.unwritable: Optional[str] = None
        try:
            self.db = self._open(path)
        except sqlite3.OperationalError as exc:
            if not os.path.exists(path):
                raise
            # SQLite cannot open a WAL database without room for its -shm and -wal files;
            # the committed record is all in the main file after a clean close: read that.
            self.db = sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.unwritable = str(exc)
            return
        self._seal_old_records()

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        if not os.path.exists(path):
            # Made private before SQLite writes a byte (its -wal and -shm take its mode).
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(releases)")}
        if "activated_by" not in columns:  # a record from an agent before it existed
            db.execute("ALTER TABLE releases ADD COLUMN activated_by TEXT")
        if "env_sealed" not in columns:  # a record that may hold env values in plaintext
            db.execute("ALTER TABLE releases ADD COLUMN env_sealed INTEGER")
        return db

    def _seal_old_records(self) -> None:
        """Seal the env values an older agent recorded in plaintext, then rewrite the file
        so no page keeps the old text (once: sealed rows are marked)."""
        rows = self.db.execute("SELECT id, spec FROM releases WHERE env_sealed IS NULL").fetchall()
        if not rows:
            return
        try:
            self.db.execute("PRAGMA secure_delete=ON")  # the old text is overwritten, not freed
            with self._tx() as db:
                for row in rows:
                    spec = self.sealed_spec(json.loads(row["spec"]))
                    db.execute(
                        "UPDATE releases SET spec = ?, env_sealed = 1 WHERE id = ?",
                        (json.dumps(spec), row["id"]),
                    )
            # The checkpoint puts the rewritten pages over the main file's; VACUUM leaves no
            # free page (of an older agent's deletes) behind; the WAL is emptied after both.
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            pass  # no room to rewrite it now (a full disk): sealed when it is opened again
        finally:
            self.db.execute("PRAGMA secure_delete=OFF")

    def key(self) -> bytes:
        """This host's key for sealing env values (agent/sealed_env.py), made on first use."""
        if self._key is None:
            self._key = load_key(self._agent_dir)
        return self._key

    def sealed_spec(self, spec: Dict[str, Any]) -> Dict[str, Any]:
        """`spec` as the record keeps it: its inline env values as keyed hashes (the key
        is made only once there is a value to seal)."""
        return seal_spec(spec, self.key()) if inline_env(spec) else dict(spec)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.unwritable is not None:
            raise sqlite3.OperationalError(
                f"the record cannot be written ({self.unwritable}; is its disk full?)"
            )
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @staticmethod
    def _release(row: sqlite3.Row) -> Release:
        d = dict(row)
        d["spec"] = json.loads(d["spec"])
        return Release(**d)

    # --- releases --------------------------------------------------------------------------

    def new_release(self, app: str, deployment: str, tag: str, variant: Optional[str],
                    image: Optional[str], spec: Dict[str, Any]) -> Release:  # fmt: skip
        """Record a release `starting` from `spec`, the desired state as the controller sent
        it: its env values are sealed here, never written."""
        now = time.time()
        sealed = json.dumps(self.sealed_spec(spec))
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO releases (app, deployment, tag, variant, image, status, spec,"
                " env_sealed, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'starting', ?, 1, ?, ?)",
                (app, deployment, tag, variant, image, sealed, now, now),
            )
            assert cur.lastrowid is not None  # an INSERT always has one
            release_id = cur.lastrowid
        release = self.get(release_id)
        assert release is not None
        return release

    def get(self, release_id: int) -> Optional[Release]:
        row = self.db.execute("SELECT * FROM releases WHERE id = ?", (release_id,)).fetchone()
        return self._release(row) if row else None

    def update(self, release_id: int, **fields: Any) -> None:
        """Set columns of a release (status, reason, digest, container_id, ...); a status
        change must be one the state machine allows (agent/releases.py)."""
        allowed = {
            "status",
            "reason",
            "digest",
            "container_id",
            "container_name",
            "variant",
            "image",
            "activated_at",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if "status" in fields:
            fields["status"] = _status(fields["status"]).value
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            if "status" in fields:
                row = db.execute(
                    "SELECT status FROM releases WHERE id = ?", (release_id,)
                ).fetchone()
                if row is not None:
                    release_states.check_transition(
                        release_id, ReleaseStatus(row[0]), ReleaseStatus(fields["status"])
                    )
            db.execute(f"UPDATE releases SET {cols}, updated_at = ? WHERE id = ?",
                       (*fields.values(), time.time(), release_id))  # fmt: skip

    def promote(self, app: str, release_id: int) -> None:
        """Make a release current in one transaction: the current one becomes previous, the
        previous one retired."""
        with self._tx() as db:
            changes = release_states.promote(self._rows(db, app), release_id)
            self._apply(db, changes)

    def reinstate(self, app: str, release_id: int, failed_id: Optional[int], failed_status: str,
                  reason: str) -> None:  # fmt: skip
        """After a rollback: `release_id` (previous or retired) is current again, the failed
        release is marked, and the next newest kept release becomes previous."""
        with self._tx() as db:
            changes = release_states.reinstate(
                self._rows(db, app), release_id, failed_id, _status(failed_status), reason
            )
            self._apply(db, changes)

    @staticmethod
    def _rows(db: sqlite3.Connection, app: str) -> List[release_states.ReleaseRow]:
        rows = db.execute("SELECT id, status, activated_at FROM releases WHERE app = ?", (app,))
        return [release_states.ReleaseRow(r[0], ReleaseStatus(r[1]), r[2]) for r in rows]

    @staticmethod
    def _apply(db: sqlite3.Connection, changes: List[release_states.Change]) -> None:
        """Write computed changes (inside the caller's transaction)."""
        now = time.time()
        for change in changes:
            cols: Dict[str, Any] = {"status": change.status.value, "updated_at": now}
            if change.activate:
                cols["activated_at"] = now
                cols["activated_by"] = change.activated_by
            if change.reason is not None:
                cols["reason"] = change.reason
            sets = ", ".join(f"{k} = ?" for k in cols)
            db.execute(f"UPDATE releases SET {sets} WHERE id = ?", (*cols.values(), change.id))

    def with_status(self, app: str, status: str) -> Optional[Release]:
        row = self.db.execute(
            "SELECT * FROM releases WHERE app = ? AND status = ? ORDER BY id DESC LIMIT 1",
            (app, status),
        ).fetchone()
        return self._release(row) if row else None

    def current(self, app: str) -> Optional[Release]:
        return self.with_status(app, "current")

    def previous(self, app: str) -> Optional[Release]:
        return self.with_status(app, "previous")

    def releases(
        self, app: Optional[str] = None, statuses: Optional[List[str]] = None
    ) -> List[Release]:
        """Newest first."""
        sql, args = "SELECT * FROM releases WHERE 1=1", []
        if app:
            sql += " AND app = ?"
            args.append(app)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        return [self._release(r) for r in self.db.execute(sql + " ORDER BY id DESC", args)]

    def apps(self) -> List[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT app FROM releases ORDER BY app")]

    # --- health and events ---------------------------------------------------------------

    def record_health(self, release_id: int, ok: bool, detail: str) -> None:
        """Add a sample; the app's samples beyond the newest HEALTH_KEPT_PER_APP go."""
        with self._tx() as db:
            db.execute("INSERT INTO health (release_id, at, ok, detail) VALUES (?, ?, ?, ?)",
                       (release_id, time.time(), int(ok), detail))  # fmt: skip
            of_app = "SELECT id FROM releases WHERE app = (SELECT app FROM releases WHERE id = ?)"
            db.execute(
                f"DELETE FROM health WHERE release_id IN ({of_app}) AND id <= ("
                f"SELECT id FROM health WHERE release_id IN ({of_app})"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (release_id, release_id, HEALTH_KEPT_PER_APP),
            )

    def recent_health(self, release_id: int, n: int) -> List[HealthSample]:
        """The release's last `n` health samples, newest first."""
        rows = self.db.execute(
            "SELECT at, ok, detail FROM health WHERE release_id = ? ORDER BY id DESC LIMIT ?",
            (release_id, n),
        )
        return [HealthSample(r["at"], bool(r["ok"]), r["detail"]) for r in rows]

    def event(self, kind: str, message: str, app: Optional[str] = None, release_id: Optional[int] = None,
              data: Optional[Dict[str, Any]] = None) -> None:  # fmt: skip
        with self._tx() as db:
            db.execute(
                "INSERT INTO events (at, app, release_id, kind, message, data) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), app, release_id, kind, message, json.dumps(data) if data else None),
            )

    def event_stats(
        self, release_id: int, kinds: List[str], after: int = 0
    ) -> Tuple[int, Optional[float], int]:
        """Of the release's events of these kinds recorded after event id `after`: how
        many, when the newest was, and its id (0 when none)."""
        marks = ",".join("?" * len(kinds))
        row = self.db.execute(
            "SELECT COUNT(*), MAX(at), MAX(id) FROM events"
            f" WHERE release_id = ? AND id > ? AND kind IN ({marks})",
            (release_id, after, *kinds),
        ).fetchone()
        return int(row[0]), row[1], int(row[2] or 0)

    def has_event(self, release_id: int, kind: str) -> bool:
        """Whether an event of `kind` was recorded for the release."""
        row = self.db.execute(
            "SELECT 1 FROM events WHERE release_id = ? AND kind = ? LIMIT 1", (release_id, kind)
        ).fetchone()
        return row is not None

    def events(self, app: Optional[str] = None, limit: int = 100) -> List[Dict[str, Any]]:
        sql, args = "SELECT * FROM events", []
        if app:
            sql += " WHERE app = ?"
            args.append(app)
        rows = self.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [dict(r, data=json.loads(r["data"]) if r["data"] else None) for r in rows]
