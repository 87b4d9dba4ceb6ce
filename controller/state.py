"""The controller's record (SQLite through sqlite-utils): deployments, per-host results with
timings and evidence, facts snapshots, events, and the fleet lock.

Default location: $MLFLEET_STATE, else ~/.local/state/mlfleet/state.db. Every write is its
own transaction, so a controller killed mid-deployment leaves a record that says so."""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import sqlite_utils

from mlfleet.controller.errors import ExitCode, MlfleetError


class LockHeld(MlfleetError):
    exit_code = ExitCode.LOCKED


def default_state_path() -> Path:
    env = os.environ.get("MLFLEET_STATE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "mlfleet" / "state.db"


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is still there (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ControllerState:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        self.db = sqlite_utils.Database(conn)
        # One connection serves the worker threads too: sqlite-utils wraps each write in a
        # named savepoint, and two threads' savepoints interleaved on one connection fail
        # ("no such savepoint"). Writes from threads take this lock.
        self._writing = threading.Lock()
        self._schema()

    def _schema(self) -> None:
        db = self.db
        if "deployments" not in db.table_names():
            db.table("deployments").create(
                {"id": int, "app": str, "tag": str, "playbook": str, "inventory": str, "hosts": int,
                 "policy": str, "status": str, "reason": str, "operator": str, "started": float,
                 "finished": float, "pid": int},
                pk="id",
            )  # fmt: skip
        if "host_results" not in db.table_names():
            db.table("host_results").create(
                {"id": int, "deployment_id": int, "host": str, "wave": str, "result": str, "variant": str,
                 "image": str, "digest": str, "previous_tag": str, "duration_s": float, "bytes": int,
                 "transfer": str, "reason": str, "evidence": str, "timings": str, "started": float, "finished": float},
                pk="id",
            )  # fmt: skip
            db.table("host_results").create_index(["deployment_id"])
            db.table("host_results").create_index(["host"])
        if "facts" not in db.table_names():
            db.table("facts").create({"host": str, "at": float, "data": str}, pk="host")
        if "events" not in db.table_names():
            db.table("events").create(
                {
                    "id": int,
                    "at": float,
                    "deployment_id": int,
                    "host": str,
                    "kind": str,
                    "message": str,
                },
                pk="id",
            )
        if "lock" not in db.table_names():
            db.table("lock").create(
                {
                    "id": int,
                    "holder": str,
                    "pid": int,
                    "machine": str,
                    "since": float,
                    "reason": str,
                },
                pk="id",
            )

    # --- fleet lock ----------------------------------------------------------------------

    def lock_status(self) -> Optional[Dict[str, Any]]:
        rows = list(self.db.table("lock").rows_where("id = 1"))
        if not rows:
            return None
        row = rows[0]
        row["stale"] = row["machine"] == socket.gethostname() and not pid_alive(row["pid"])
        return row

    def acquire_lock(self, reason: str) -> None:
        """One deployment per fleet at a time. A lock whose process died on this machine is
        taken over (and said so); any other held lock stops us with who holds it."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            held = self.lock_status()
            if held and not held["stale"]:
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(held["since"]))
                raise LockHeld(
                    f"the fleet lock is held by {held['holder']} (pid {held['pid']} on {held['machine']}) "
                    f"since {since}: {held['reason']}",
                    hint="wait for it, or `mlfleet lock release` if you are sure it is gone",
                )
            conn.execute(
                "INSERT OR REPLACE INTO lock (id, holder, pid, machine, since, reason) VALUES (1, ?, ?, ?, ?, ?)",
                (getpass.getuser(), os.getpid(), socket.gethostname(), time.time(), reason),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def release_lock(self, only_mine: bool = True) -> bool:
        held = self.lock_status()
        if held is None:
            return False
        if only_mine and held["pid"] != os.getpid():
            return False
        self.db.conn.execute("DELETE FROM lock WHERE id = 1")
        return True

    # --- deployments ---------------------------------------------------------------------

    def start_deployment(self, **fields: Any) -> int:
        fields.setdefault("status", "running")
        fields.setdefault("started", time.time())
        fields.setdefault("pid", os.getpid())
        fields.setdefault("operator", getpass.getuser())
        pk = self.db.table("deployments").insert(fields).last_pk
        assert pk is not None  # an insert into a rowid table always has one
        return int(pk)

    def finish_deployment(self, deployment_id: int, status: str, reason: str = "") -> None:
        self.db.table("deployments").update(
            deployment_id, {"status": status, "reason": reason, "finished": time.time()}
        )

    def interrupted_deployments(self) -> List[Dict[str, Any]]:
        """Deployments still 'running' whose controller process is gone: killed mid-way."""
        rows = self.db.table("deployments").rows_where("status = 'running'")
        return [r for r in rows if r["pid"] != os.getpid() and not pid_alive(r["pid"])]

    def mark_interrupted(self) -> List[int]:
        ids = [r["id"] for r in self.interrupted_deployments()]
        for i in ids:
            self.finish_deployment(
                i, "interrupted", "the controller stopped before the deployment finished"
            )
        return ids

    def record_host(self, deployment_id: int, host: str, wave: str, result: Dict[str, Any]) -> None:
        row = {
            "deployment_id": deployment_id,
            "host": host,
            "wave": wave,
            "result": result.get("result"),
            "variant": result.get("variant"),
            "image": result.get("image"),
            "digest": result.get("digest"),
            "previous_tag": result.get("previous_tag"),
            "duration_s": result.get("duration_s"),
            "bytes": result.get("bytes") or 0,
            "transfer": result.get("transfer"),
            "reason": result.get("reason"),
            "evidence": json.dumps(result.get("evidence") or []),
            "timings": json.dumps(result.get("timings") or {}),
            "started": result.get("started"),
            "finished": time.time(),
        }
        with self._writing:
            self.db.table("host_results").insert(
                row, alter=True
            )  # `transfer` came later: older DBs gain it

    def deployments(self, limit: int = 20) -> List[Dict[str, Any]]:
        return list(self.db.table("deployments").rows_where(order_by="id desc", limit=limit))

    def host_results(self, deployment_id: Optional[int] = None, host: Optional[str] = None,
                     limit: int = 200) -> List[Dict[str, Any]]:  # fmt: skip
        where: List[str] = []
        args: List[Any] = []
        if deployment_id is not None:
            where.append("deployment_id = ?")
            args.append(deployment_id)
        if host is not None:
            where.append("host = ?")
            args.append(host)
        rows = self.db.table("host_results").rows_where(
            " AND ".join(where) or None, args, order_by="id desc", limit=limit
        )
        return [
            dict(
                r,
                evidence=json.loads(r["evidence"] or "[]"),
                timings=json.loads(r["timings"] or "{}"),
            )
            for r in rows
        ]

    # --- facts and events ------------------------------------------------------------------

    def save_facts(self, host: str, data: Dict[str, Any]) -> None:
        self.save_facts_of({host: data})

    def save_facts_of(self, hosts: Dict[str, Dict[str, Any]]) -> None:
        """Many hosts' facts in one transaction (one fsync for a fleet, not one per host)."""
        if not hosts:
            return
        now = time.time()
        rows = [{"host": h, "at": now, "data": json.dumps(d)} for h, d in hosts.items()]
        with self._writing:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                self.db.table("facts").upsert_all(rows, pk="host")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def facts(self, host: str) -> Optional[Dict[str, Any]]:
        rows = list(self.db.table("facts").rows_where("host = ?", [host]))
        return json.loads(rows[0]["data"]) if rows else None

    def event(
        self,
        kind: str,
        message: str,
        deployment_id: Optional[int] = None,
        host: Optional[str] = None,
    ) -> None:
        with self._writing:
            self.db.table("events").insert(
                {
                    "at": time.time(),
                    "deployment_id": deployment_id,
                    "host": host,
                    "kind": kind,
                    "message": message,
                }
            )
