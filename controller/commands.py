"""The fleet-wide commands other than deploy: agent install, facts, plan, status, rollback.
Each works on a session's hosts in parallel and returns typed results (controller/
outcomes.py); the CLI only renders them. Whatever goes wrong on one host is that host's
result (controller/host_failure.py), never the command's."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional

from mlfleet.agent.protocol import ApplyStatus, Health
from mlfleet.controller import fleet_lock, hostops
from mlfleet.controller.deploy import (
    RolloutOptions,
    expected_variants,
    plan_rollout,
    stored_facts_of,
)
from mlfleet.controller.host_failure import HostFailure, on_host
from mlfleet.controller.hosts import Host
from mlfleet.controller.outcomes import (
    FactsResult,
    HostPlan,
    HostResult,
    InstallResult,
    Outcome,
    PlanReport,
    StatusRow,
)
from mlfleet.controller.plaintext import printable
from mlfleet.controller.playbook import Playbook, hardening_lines
from mlfleet.controller.session import FleetSession


def install_agents(session: FleetSession) -> List[InstallResult]:
    """Copy the agent where missing or different, install its cron entry, check it runs."""
    bundle = session.bundle()

    def one(host: Host) -> InstallResult:
        def work() -> InstallResult:
            installed = hostops.install_agent(session.transport(host), bundle)
            session.progress(host.name, "agent " + ("copied" if installed.copied else "up to date"))
            outcome = Outcome.INSTALLED if installed.copied else Outcome.UNCHANGED
            return InstallResult(host.name, outcome, installed.version.python, installed.sha256)

        def failed(f: HostFailure) -> InstallResult:
            session.progress(host.name, f.reason)
            return InstallResult(host.name, f.outcome, reason=f.reason)

        return on_host(host.name, work, failed)

    return list(session.each(one).values())


def gather_facts(session: FleetSession) -> List[FactsResult]:
    """Detection on every host; stored for `plan`, `deploy`'s image check and its canary
    (in one transaction once every host answered: facts are read again at will, so a run
    cut short records none rather than paying one write per host)."""
    bundle = session.bundle()

    def one(host: Host) -> FactsResult:
        def work() -> FactsResult:
            return FactsResult(host.name, hostops.facts(session.transport(host), bundle))

        return on_host(
            host.name, work, lambda f: FactsResult(host.name, outcome=f.outcome, reason=f.reason)
        )

    results = list(session.each(one).values())
    session.state.save_facts_of({r.host: r.facts.to_dict() for r in results if r.facts})
    return results


def plan(
    session: FleetSession, playbook: Playbook, tag: str, options: RolloutOptions
) -> PlanReport:
    """Per host: the variant and image, why, and what would change; and the waves deploy
    would use, with the failure budget. Nothing is changed."""
    bundle = session.bundle()

    def one(host: Host) -> HostPlan:
        def work() -> HostPlan:
            desired = playbook.desired_state(host.vars, host.name, tag, "plan")
            transport = session.transport(host)
            selection = hostops.select(transport, bundle, desired.variants)
            status = hostops.status(transport).app(playbook.app)
            current = status.current if status else None
            chosen = selection.variant
            images = {v.name: v.image for v in desired.parsed_variants()}
            if chosen is None:
                change = "cannot deploy: no variant fits"
            elif current and current.tag == tag and current.variant == chosen:
                change = "unchanged"
            elif current:
                change = f"update {current.tag} ({current.variant}) -> {tag} ({chosen})"
            else:
                change = f"install {tag} ({chosen})"
            return HostPlan(host.name, chosen, images.get(chosen or ""), change, selection)

        return on_host(
            host.name, work, lambda f: HostPlan(host.name, outcome=f.outcome, reason=f.reason)
        )

    hosts = list(session.each(one).values())
    # The waves from what the agents chose now (hosts without an answer: from stored facts).
    variant_of = expected_variants(playbook, stored_facts_of(session))
    variant_of.update({h.host: h.variant for h in hosts if h.outcome is None})
    waves, canary_text = plan_rollout([h.name for h in session.hosts], options, variant_of)
    return PlanReport(tag, hosts, waves, options.budget, options.on_failure, canary_text,
                      hardening_lines(playbook))  # fmt: skip


def fleet_status(session: FleetSession, app: Optional[str]) -> List[StatusRow]:
    """Per host: what serves (of `app`, or the host's only app), how well, since when, and
    what the agent last did about it."""

    def one(host: Host) -> StatusRow:
        def work() -> StatusRow:
            status = hostops.status(session.transport(host))
            entry = status.app(app)
            if entry is None or entry.current is None:
                row = StatusRow(host.name, Health.NOTHING.value, last_tick=status.last_tick,
                                problems=status.problems)  # fmt: skip
            else:
                cur = entry.current
                row = StatusRow(
                    host.name,
                    entry.health.value,
                    app=entry.app,
                    tag=cur.tag,
                    variant=cur.variant,
                    since=cur.activated_at,
                    previous=entry.previous,
                    last_tick=status.last_tick,
                    problems=status.problems,
                )
            last = entry.last_event if entry else None
            if last is None:
                return row
            return replace(
                row,
                last_action=last.kind.value,
                last_action_message=last.message,
                last_action_at=last.time,
                last_action_cause=last.cause.value if last.cause else None,
            )

        return on_host(
            host.name, work, lambda f: StatusRow(host.name, f.outcome.value, reason=f.reason)
        )

    return list(session.each(one).values())


def rollback_fleet(
    session: FleetSession, app: str, tag: Optional[str], hosts: Optional[List[Host]] = None
) -> List[HostResult]:
    """Each host back to its previous release (or the kept release `tag`)."""

    def one(host: Host) -> HostResult:
        def work() -> HostResult:
            result = hostops.rollback(session.transport(host), app, tag)
            ok = result.status is ApplyStatus.ROLLED_BACK
            return HostResult(
                host.name,
                Outcome.ROLLED_BACK if ok else Outcome.FAILED,
                reason=result.reason,
                tag=result.tag or None,
                variant=result.variant,
                image=result.image,
                previous_tag=result.previous_tag,
            )

        return on_host(host.name, work, lambda f: HostResult(host.name, f.outcome, reason=f.reason))

    return list(session.each(one, hosts).values())


def rollback_under_lock(session: FleetSession, app: str, tag: Optional[str]) -> List[HostResult]:
    """`mlfleet rollback`: `rollback_fleet` holding the fleet lock, in the state DB and on
    every host, as a deployment holds it: a rollback and another controller's deployment
    never work on the same hosts at once (FleetLockHeld names the holder)."""
    with fleet_lock.held(session, f"rollback {app}" + (f" to {tag}" if tag else "")):
        return rollback_fleet(session, app, tag)


def fleet_lock_status(session: FleetSession) -> List[Dict[str, Any]]:
    """Each host's fleet lock: `holder` (None: free) or `error` (it could not be read)."""

    def read(host: Host) -> Dict[str, Any]:
        found = fleet_lock.show(session.transport(host))
        if found and not found.holder:
            return {
                "host": host.name,
                "holder": None,
                "error": "held, but its holder.json is unreadable",
            }
        holder = found.holder.to_dict() if found and found.holder else None
        return {"host": host.name, "holder": holder, "error": None}

    def one(host: Host) -> Dict[str, Any]:  # that host's answer, never the command's
        return on_host(host.name, lambda: read(host),
                       lambda f: {"host": host.name, "holder": None, "error": printable(f.reason)})  # fmt: skip

    return list(session.each(one).values())


def fleet_lock_release(session: FleetSession) -> List[str]:
    """Remove every host's fleet lock, whoever holds it. Returns the hosts where one was."""

    def release(host: Host) -> bool:
        conn = session.transport(host)
        return fleet_lock.show(conn) is not None and fleet_lock.release(conn, "")

    def one(host: Host) -> bool:
        return on_host(host.name, lambda: release(host), lambda _failure: False)

    return [name for name, gone in session.each(one).items() if gone]
