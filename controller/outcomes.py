"""What the controller's commands return: typed per-host results and reports (no I/O). The
CLI renders them as tables or JSON and maps them to an exit code with `exit_code`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Collection, Dict, Iterable, List, Optional

from mlfleet.agent.protocol import ApplyStatus, Health, HostFacts, Selection, TransferMode
from mlfleet.controller.errors import ExitCode
from mlfleet.controller.rollout import Action, FailureBudget, Wave


class Outcome(str, Enum):
    """How one host came out of a command."""

    UPDATED = "updated"  # the new release serves
    UNCHANGED = "unchanged"  # it served already (or the agent was up to date)
    INSTALLED = "installed"  # `agent install` copied the agent
    ROLLED_BACK = "rolled_back"  # back on the previous release
    FAILED = "failed"  # the agent said no, or its rollback failed
    SKIPPED = "skipped"  # not touched: the deployment halted before its wave
    UNREACHABLE = "unreachable"  # network, SSH, host key
    AGENT_FAILED = "agent_failed"  # the host answered; its agent could not run

    @property
    def counts_as_failure(self) -> bool:
        """Whether it counts against a wave's failure budget."""
        return self in (
            Outcome.ROLLED_BACK,
            Outcome.FAILED,
            Outcome.UNREACHABLE,
            Outcome.AGENT_FAILED,
        )


OUTCOME_OF_APPLY = {
    ApplyStatus.SUCCEEDED: Outcome.UPDATED,
    ApplyStatus.UNCHANGED: Outcome.UNCHANGED,
    ApplyStatus.ROLLED_BACK: Outcome.ROLLED_BACK,
    ApplyStatus.FAILED: Outcome.FAILED,
    ApplyStatus.ROLLBACK_FAILED: Outcome.FAILED,
}


def exit_code(outcomes: Iterable[Outcome], ok: Collection[Outcome]) -> ExitCode:
    """The exit code for a command whose hosts ended with `outcomes` (those in `ok` are
    fine): unreachable alone is 5, agent failures (with or without unreachable) 6, any
    other failure 1."""
    bad = {o for o in outcomes if o not in ok}
    if not bad:
        return ExitCode.OK
    if bad == {Outcome.UNREACHABLE}:
        return ExitCode.UNREACHABLE
    if bad <= {Outcome.UNREACHABLE, Outcome.AGENT_FAILED}:
        return ExitCode.AGENT_FAILED
    return ExitCode.FAILED


@dataclass
class HostResult:
    """One host's part of a deployment or a rollback."""

    host: str
    outcome: Outcome
    reason: Optional[str] = None
    wave: Optional[str] = None
    tag: Optional[str] = None
    variant: Optional[str] = None
    image: Optional[str] = None
    digest: Optional[str] = None
    previous_tag: Optional[str] = None
    bytes: int = 0  # image bytes that crossed the host's link
    transfer: Optional[TransferMode] = None
    evidence: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    duration_s: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "host": self.host,
            "result": self.outcome.value,
            "reason": self.reason,
            "wave": self.wave,
            "tag": self.tag,
            "variant": self.variant,
            "image": self.image,
            "digest": self.digest,
            "previous_tag": self.previous_tag,
            "bytes": self.bytes,
            "transfer": self.transfer.value if self.transfer else None,
            "evidence": list(self.evidence),
            "timings": dict(self.timings),
            "started": self.started,
            "duration_s": self.duration_s,
        }


@dataclass
class DeployReport:
    """A deployment: how it ended and every host's result, in inventory order."""

    status: str  # succeeded | failed | halted
    deployment: int
    tag: str
    reason: str
    hosts: List[HostResult]

    @property
    def bytes(self) -> int:
        return sum(h.bytes for h in self.hosts)

    def exit_code(self) -> ExitCode:
        if self.status == "succeeded":
            return ExitCode.OK
        return exit_code((h.outcome for h in self.hosts), (Outcome.UPDATED, Outcome.UNCHANGED))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "status": self.status,
            "deployment": self.deployment,
            "tag": self.tag,
            "reason": self.reason,
            "bytes": self.bytes,
            "hosts": [h.to_dict() for h in self.hosts],
        }


@dataclass(frozen=True)
class InstallResult:
    """`mlfleet agent install` on one host."""

    host: str
    outcome: Outcome  # installed | unchanged | unreachable | agent_failed
    python: Optional[str] = None
    sha256: Optional[str] = None
    reason: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "host": self.host,
            "result": self.outcome.value,
            "python": self.python,
            "sha256": self.sha256,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class FactsResult:
    """`mlfleet facts` on one host: its facts, or why there are none."""

    host: str
    facts: Optional[HostFacts] = None
    outcome: Optional[Outcome] = None  # unreachable | agent_failed when facts is None
    reason: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        if self.facts is not None:
            return self.facts.to_dict()
        return {"error": self.reason, "result": self.outcome.value if self.outcome else None}


@dataclass(frozen=True)
class HostPlan:
    """`mlfleet plan` on one host: the variant it will run, why, and what would change."""

    host: str
    variant: Optional[str] = None
    image: Optional[str] = None
    change: str = ""
    selection: Optional[Selection] = None
    outcome: Optional[Outcome] = None  # unreachable | agent_failed: no plan for this host
    reason: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = self.selection.to_dict() if self.selection else {}
        out.update(host=self.host, variant=self.variant, image=self.image, change=self.change)
        if self.outcome is not None:
            out.update(result=self.outcome.value, reason=self.reason)
        return out


@dataclass(frozen=True)
class PlanReport:
    """What `deploy` would do: per host, and the waves with their failure budget."""

    tag: str
    hosts: List[HostPlan]
    waves: List[Wave]
    budget: FailureBudget
    on_failure: Action
    canary: str  # how the canary was chosen, in words
    hardening: List[str] = field(default_factory=list)  # what the playbook relaxes, in words

    def to_dict(self) -> Dict[str, Any]:
        return {
            "hardening": list(self.hardening),
            "tag": self.tag,
            "hosts": [h.to_dict() for h in self.hosts],
            "waves": [{"name": w.name, "hosts": list(w.hosts)} for w in self.waves],
            "budget": str(self.budget),
            "max_fail": str(self.budget),
            "on_failure": self.on_failure.value,
            "canary": self.canary,
        }


@dataclass(frozen=True)
class StatusRow:
    """`mlfleet status` on one host."""

    host: str
    health: str  # a protocol Health value, or unreachable / agent_failed
    app: Optional[str] = None
    tag: Optional[str] = None
    variant: Optional[str] = None
    since: Optional[float] = None
    previous: Optional[str] = None
    last_tick: Optional[float] = None
    reason: Optional[str] = None
    last_action: Optional[str] = None  # what the agent last did (an event kind: repaired, ...)
    last_action_message: Optional[str] = None
    last_action_at: Optional[float] = None
    # What stands in the way, an operator's to fix (a protocol Cause: gpu_lost, ...).
    last_action_cause: Optional[str] = None
    problems: List[str] = field(default_factory=list)  # of the agent's own place (a full disk)

    @property
    def reached(self) -> bool:
        return self.health in {h.value for h in Health}

    def to_dict(self) -> Dict[str, Any]:
        return {
            "host": self.host,
            "app": self.app,
            "tag": self.tag,
            "variant": self.variant,
            "health": self.health,
            "since": self.since,
            "previous": self.previous,
            "last_tick": self.last_tick,
            "reason": self.reason,
            "last_action": self.last_action,
            "last_action_message": self.last_action_message,
            "last_action_at": self.last_action_at,
            "last_action_cause": self.last_action_cause,
            "problems": list(self.problems),
        }
