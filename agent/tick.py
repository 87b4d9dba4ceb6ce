"""`mlfleet-agent tick`: what cron runs every minute. Restart what died, repair an apply
that was killed half-way, roll back a fresh release that turned sick, restart one that
stays sick, collect old images, and report (status JSON, Prometheus textfile)."""

from __future__ import annotations

import json
import os
import time
from typing import List, Optional

from mlfleet.agent import health
from mlfleet.agent.apply import (
    AgentHost,
    collect_garbage,
    health_target,
    repair_interrupted,
    restore,
    serve_after_reboot,
)
from mlfleet.agent.desired import DesiredState
from mlfleet.agent.engine_api import EngineError
from mlfleet.agent.protocol import AppStatus, EventKind, HostStatus
from mlfleet.agent.state import Release

# A release that answers but fails a tick's probes may only be slow for a moment (a busy
# host makes even Docker's own HEALTHCHECK time out): a fresh one is rolled back when the
# next tick, a minute later, confirms it; an older one is restarted after three. A crash
# needs no confirmation.
UNHEALTHY_TICKS_BEFORE_ROLLBACK = 2
UNHEALTHY_TICKS_BEFORE_RESTART = 3


def tick(host: AgentHost) -> HostStatus:
    """One pass over every app on the host; returns the status written to status.json."""
    actions: List[str] = []
    actions += [f"{app}: {msg}" for app, msg in repair_interrupted(host)]
    for app in host.store.apps():
        current = host.store.current(app)
        if current is not None:
            _keep_serving(host, current, actions)
            collect_garbage(host, app, DesiredState.from_dict(current.spec).retain)
    status = host_status(host, actions)
    write_reports(host.agent_dir, status)
    return status


def _keep_serving(host: AgentHost, current: Release, actions: List[str]) -> None:
    app = current.app
    desired = DesiredState.from_dict(current.spec)
    info = host.engine.container_inspect(current.container_id) if current.container_id else None
    if info is None:
        host.event(
            EventKind.MISSING,
            f"container of {current.tag} is gone; an operator must redeploy",
            app,
            current.id,
        )
        actions.append(f"{app}: container of {current.tag} is gone")
        return
    fresh = (
        current.activated_at is not None and time.time() - current.activated_at < desired.grace_s
    )
    previous = host.store.previous(app)
    # The engine restarted it after a crash (its restart policy): sick, even if it answers now.
    crashed = int(info.get("RestartCount") or 0) > 0
    if crashed and fresh and previous is not None:
        host.store.record_health(
            current.id, False, f"crashed and was restarted {info['RestartCount']} times"
        )
        _auto_rollback(host, current, previous, actions)
        return
    if not info["State"]["Running"]:
        verdict = restore(host, current)
        host.store.record_health(
            current.id, verdict.ok, "restarted: " + "; ".join(verdict.evidence[-2:])
        )
        host.event(EventKind.RESTARTED, f"{current.tag} had stopped (exit {info['State'].get('ExitCode')}); restarted",
                   app, current.id)  # fmt: skip
        actions.append(f"{app}: restarted {current.tag}")
        if verdict.ok:
            return
    else:
        probes = health.probe_once(
            health_target(host, desired, current.container_id or "", info), desired.health
        )
        ok = all(p.ok for p in probes)
        host.store.record_health(
            current.id, ok, "; ".join(f"{p.check}: {p.detail}" for p in probes)
        )
        if ok:
            return
        if fresh and previous is not None:
            if _failed_ticks(host, current, UNHEALTHY_TICKS_BEFORE_ROLLBACK):
                _auto_rollback(host, current, previous, actions)
            else:
                host.event(EventKind.UNHEALTHY, f"{current.tag} failed its health check; rolled back if the next tick confirms it",
                           app, current.id)  # fmt: skip
                actions.append(f"{app}: {current.tag} unhealthy; rolled back if the next tick confirms it")  # fmt: skip
            return
    if fresh and previous is not None:  # it had stopped and did not come back healthy
        _auto_rollback(host, current, previous, actions)
        return
    if _failed_ticks(host, current, UNHEALTHY_TICKS_BEFORE_RESTART):
        try:
            host.engine.request(
                "POST", f"/containers/{current.container_id}/restart", {"t": 10}, timeout=60
            )
        except EngineError as exc:
            actions.append(f"{app}: restart of {current.tag} failed: {exc.message}")
            return
        host.event(
            EventKind.RESTARTED,
            f"{current.tag} unhealthy for {UNHEALTHY_TICKS_BEFORE_RESTART} ticks; restarted",
            app,
            current.id,
        )
        actions.append(f"{app}: restarted unhealthy {current.tag}")


def _failed_ticks(host: AgentHost, current: Release, n: int) -> bool:
    """Whether the release's last n health samples all failed (the apply's own verdict is
    the first sample, so a release's first failing tick never counts n of them alone)."""
    recent = host.store.recent_health(current.id, n)
    return len(recent) >= n and not any(s.ok for s in recent)


def _auto_rollback(
    host: AgentHost, current: Release, previous: Release, actions: List[str]
) -> None:
    app = current.app
    if current.container_id:
        host.engine.container_stop(current.container_id)
    verdict = restore(host, previous)
    if verdict.ok:
        host.store.reinstate(
            app, previous.id, current.id, "rolled_back", "turned unhealthy within its grace period"
        )
        serve_after_reboot(host, previous.container_id or "")
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
        if current is None:
            apps.append(AppStatus(app))
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
            )
        )
    return HostStatus(
        time=time.time(), last_tick=_last_tick(host.agent_dir), apps=apps, actions=actions or []
    )


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
    lines += ["# HELP mlfleet_agent_last_tick_timestamp_seconds When the agent last ran its tick.",
              "# TYPE mlfleet_agent_last_tick_timestamp_seconds gauge",
              f"mlfleet_agent_last_tick_timestamp_seconds {status.time:.3f}"]  # fmt: skip
    _atomic_write(os.path.join(agent_dir, "metrics", "mlfleet.prom"), "\n".join(lines) + "\n")


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
