"""Rollout planning and the failure budget: pure functions over plain records, no I/O.

The plan for N hosts is data (a list of `Wave`s) that can be printed, tested and diffed before
anything runs. Semantics follow what operators already know:

- batches are Ansible `serial`: an int, a percentage of the hosts the batches cover (rounded
  down, at least 1), or a list consumed in order whose last value repeats; the final batch
  takes what is left;
- the failure budget is Ansible `max_fail_percentage` / Swarm `max_failure_ratio`: the failure
  action fires when failures *strictly* exceed the budget, so a budget of 0 fires on the first
  failure;
- the failure action is Swarm `failure_action`: continue, pause or rollback;
- the canary is a number of hosts taken first, or `per-variant`: one host of each variant the
  plan selects (see `canary_hosts`).

One grammar for these settings, whoever writes them: `parse_batch`, `parse_budget` and
`parse_canary` take the playbook's YAML values and the command line's text alike (`"1,5,20%"`,
`"33.3%"`, `"per-variant"`) and raise `SpecError` (a ValueError) with a plain message; the
caller adds where the value came from (a file:line, an option's name).

Running a wave, checking health and rolling back are the caller's job; a failure while rolling
back is handled there too (it pauses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

BatchSpec = Union[int, str, Sequence[Union[int, str]]]
"""A batch size as Ansible `serial` takes it: `2`, `"25%"` or `[1, 5, "20%"]`."""

PER_VARIANT = "per-variant"
Canary = Union[int, str]
"""A canary: a number of hosts (0: none), or `PER_VARIANT`."""

# How many failed host names a decision's reason lists before it says "and N more".
_NAMES_IN_REASON = 3

_PERCENT = re.compile(r"-?\d+(\.\d+)?")
_INT = re.compile(r"-?\d+")


class SpecError(ValueError):
    """A batch, budget or canary setting that is not valid. `setting` names it (`batch`,
    `max_fail`, `canary`), `problem` says what is wrong with the value (starting with the value
    itself, so a caller can put its own name for the setting in front), `index` is the list
    entry at fault, if any."""

    def __init__(self, setting: str, problem: str, index: Optional[int] = None):
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem
        self.index = index


@dataclass(frozen=True)
class Wave:
    """One step of a rollout: the canary, or a numbered batch, and its hosts in order."""

    name: str
    hosts: Tuple[str, ...]

    def __post_init__(self) -> None:
        # Accept any sequence but store a tuple, so waves compare and hash as values.
        object.__setattr__(self, "hosts", tuple(self.hosts))

    def __len__(self) -> int:
        return len(self.hosts)


# --- Plan ------------------------------------------------------------------------------------


def _parse_percent(text: str, what: str) -> Optional[Fraction]:
    """`"25%"` -> Fraction(25); None when `text` is not a percentage. Exact, so no float drift.
    Whitespace around the number and the sign is ignored (`" 34 % "`)."""
    stripped = text.strip()
    if not stripped.endswith("%"):
        return None
    number = stripped[:-1].strip()
    if not _PERCENT.fullmatch(number):
        raise SpecError(what, f"{text!r} is not a percentage (expected e.g. '25%')")
    return Fraction(number)


def _parse_int(text: str) -> Optional[int]:
    """`" 3 "` -> 3; None when `text` is not a whole number."""
    stripped = text.strip()
    return int(stripped) if _INT.fullmatch(stripped) else None


def _batch_entry(step: Any, index: Optional[int] = None) -> Union[int, str]:
    """One entry of a batch spec, checked: an int >= 1, or `"N%"` above 0 and at most 100."""
    what = "batch"
    if isinstance(step, bool) or not isinstance(step, (int, str)):
        raise SpecError(what, f"{step!r} must be a whole number or a percentage like '25%'", index)
    if isinstance(step, str):
        try:
            percent = _parse_percent(step, what)
        except SpecError as exc:
            raise SpecError(what, exc.problem, index) from None
        if percent is None:
            step_int = _parse_int(step)
            if step_int is None:
                raise SpecError(
                    what, f"{step!r} must be a whole number or a percentage like '25%'", index
                )
            return _batch_entry(step_int, index)
        if not 0 < percent <= 100:
            raise SpecError(what, f"{step!r} must be more than 0% and at most 100%", index)
        return f"{step.strip()[:-1].strip()}%"
    if step < 1:
        raise SpecError(what, f"{step} must be at least 1 host", index)
    return step


def parse_batch(value: Any) -> BatchSpec:
    """The batch spec, checked and normalised: `5` or `"5"` -> 5, `"25%"`, a list such as
    `[1, 5, "20%"]`, or the command line's `"1,5,20%"` -> [1, 5, "20%"] (a list of one entry
    is that entry). SpecError names the entry at fault (`index`) in a list."""
    if isinstance(value, str) and "," in value:
        value = [part for part in value.split(",")]
    if isinstance(value, (int, str)):
        return _batch_entry(value)
    if isinstance(value, Mapping) or not isinstance(value, Sequence):
        raise SpecError(
            "batch",
            f"{value!r} must be a number, a percentage or a list of them (e.g. [1, '20%'])",
        )
    if not value:
        raise SpecError("batch", "list is empty (give at least one size, e.g. [1, '20%'])")
    entries = [_batch_entry(step, i) for i, step in enumerate(value)]
    return entries if len(entries) > 1 else entries[0]


def _batch_size(step: Union[int, str], covered: int) -> int:
    """One checked entry of a batch spec as a host count for batches covering `covered` hosts."""
    if isinstance(step, str):
        percent = _parse_percent(step, "batch")
        if percent is None:
            return int(step)
        # Ansible rounds a percentage down and never makes a batch smaller than one host.
        return max(1, int(percent * covered / 100))
    return step


def parse_canary(value: Any) -> Canary:
    """The canary: a number of hosts (`2`, `"2"`; 0 for none) or `"per-variant"`."""
    if isinstance(value, str):
        if value.strip() == PER_VARIANT:
            return PER_VARIANT
        number = _parse_int(value)
        if number is None:
            raise SpecError(
                "canary", f"{value!r} must be a number of hosts (0 for none) or {PER_VARIANT}"
            )
        value = number
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(
            "canary", f"{value!r} must be a number of hosts (0 for none) or {PER_VARIANT}"
        )
    if value < 0:
        raise SpecError("canary", f"{value} must be 0 (no canary) or more hosts")
    return value


def canary_hosts(
    hosts: Sequence[str], canary: Canary, variant_of: Mapping[str, Optional[str]]
) -> Tuple[str, ...]:
    """The hosts of the canary wave, in `hosts` order.

    A number takes the first hosts. `per-variant` takes the first host of each variant the
    plan selects (`variant_of`: host -> its expected variant, e.g. from stored facts), so a
    release that breaks on one class of hardware fails in the canary, before any batch. A host
    whose variant is unknown (None, or not in `variant_of`) is no canary, since nothing says
    which class it stands for; when no host's variant is known the canary is the first host,
    as `canary: 1` (a fleet never goes without a canary for want of facts).
    """
    if canary != PER_VARIANT:
        return tuple(hosts[: int(canary)])
    first: dict = {}
    for host in hosts:
        variant = variant_of.get(host)
        if variant is not None and variant not in first:
            first[variant] = host
    picked = set(first.values())
    return tuple(h for h in hosts if h in picked) or tuple(hosts[:1])


def plan_waves(
    hosts: Sequence[str],
    canary: Canary,
    batch: BatchSpec,
    variant_of: Optional[Mapping[str, Optional[str]]] = None,
) -> List[Wave]:
    """Split `hosts` into waves: a canary (see `canary_hosts`), then batches.

    `canary` 0 means no canary wave; a canary at least as large as the fleet takes every host;
    `per-variant` takes one host of each variant in `variant_of` (host -> expected variant).
    `batch` follows Ansible `serial` (see `parse_batch`): an int, a percentage of the hosts the
    batches cover (the hosts after the canary; rounded down, at least 1), or a list consumed
    in order with its last value repeated. The final batch takes what is left. Waves are never
    empty and the hosts after the canary keep their order, so every host appears exactly once.

    Raises ValueError (SpecError) with a plain message on a bad canary or batch spec, or a
    host named twice. The spec is checked even when there are too few hosts to use all of it.
    """
    if canary != PER_VARIANT and (
        isinstance(canary, bool) or not isinstance(canary, int) or canary < 0
    ):
        raise SpecError(
            "canary", f"{canary!r} must be a whole number of hosts (0 for none) or {PER_VARIANT}"
        )
    seen = set()
    for host in hosts:
        if host in seen:
            raise ValueError(f"host {host!r} is listed twice; a rollout updates each host once")
        seen.add(host)

    first = canary_hosts(hosts, canary, variant_of or {})
    rest = tuple(h for h in hosts if h not in first)
    covered = len(rest)
    # Resolve every entry up front: a bad spec fails the same way on any fleet size.
    spec = parse_batch(batch)
    steps: List[Union[int, str]] = [spec] if isinstance(spec, (int, str)) else list(spec)
    sizes = [_batch_size(step, covered) for step in steps]

    waves: List[Wave] = []
    if first:
        waves.append(Wave("canary", first))
    start = 0
    while start < covered:
        index = len(waves) - (1 if first else 0)
        size = sizes[min(index, len(sizes) - 1)]
        waves.append(Wave(f"batch {index + 1}", rest[start : start + size]))
        start += size
    return waves


def describe_plan(waves: Sequence[Wave]) -> List[str]:
    """One human line per wave, e.g. `canary: edge-a100`, `batch 1 (2 hosts): edge-t4, edge-4090`.

    The host count is shown when a wave has more than one host.
    """
    lines = []
    for wave in waves:
        count = f" ({len(wave.hosts)} hosts)" if len(wave.hosts) > 1 else ""
        lines.append(f"{wave.name}{count}: {', '.join(wave.hosts)}")
    return lines


# --- Failure budget --------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureBudget:
    """How many failed hosts a wave may have before the failure action fires.

    Either an absolute `count` or a `percent` of the wave size, never both. With neither set
    the budget is 0 (Swarm's default): the first failure fires the action.
    """

    count: Optional[int] = None
    percent: Optional[float] = None

    def __post_init__(self) -> None:
        if self.count is not None and self.percent is not None:
            raise ValueError("failure budget takes a count or a percentage, not both")
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0
        ):
            raise ValueError(f"failure budget {self.count!r} must be 0 or more hosts")
        if self.percent is not None and (
            isinstance(self.percent, bool)
            or not isinstance(self.percent, (int, float))
            or not 0 <= self.percent <= 100
        ):
            raise ValueError(f"failure budget {self.percent!r}% must be between 0% and 100%")

    def _percent_exact(self) -> Fraction:
        # repr() gives back the decimal the user wrote (33.3, not 33.29999...), so boundaries
        # such as 333 of 1000 against 33.3% come out exact.
        assert self.percent is not None
        return Fraction(repr(float(self.percent)))

    def allowed(self, wave_size: int) -> int:
        """The most failures a wave of `wave_size` hosts may have without exceeding the budget."""
        _check_size(wave_size)
        if self.percent is not None:
            return int(self._percent_exact() * wave_size / 100)
        return min(self.count or 0, wave_size)

    def exceeded(self, failures: int, wave_size: int) -> bool:
        """True when `failures` strictly exceed the budget for a wave of `wave_size` hosts.

        A percentage works like Ansible `max_fail_percentage`: exceeded when
        failures / wave_size * 100 > percent (compared exactly, without float rounding).
        """
        _check_size(wave_size)
        if not 0 <= failures <= wave_size:
            raise ValueError(f"{failures} failures is not possible in a wave of {wave_size} hosts")
        if self.percent is not None:
            return failures * 100 > self._percent_exact() * wave_size
        return failures > (self.count or 0)

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{float(self.percent):g}%"
        return str(self.count or 0)


def _check_size(wave_size: int) -> None:
    if wave_size < 0:
        raise ValueError(f"wave size {wave_size} cannot be negative")


def parse_budget(max_fail: Any) -> FailureBudget:
    """A failure budget: `0`, `2`, `"2"` (hosts) or `"10%"`, `"33.3%"` (of each wave), from
    a playbook or the command line alike.

    Raises SpecError (a ValueError) with a plain message on negative counts, percentages
    outside 0-100%, fractions such as 0.1 (ambiguous: write "10%") and anything else.
    """
    what = "max_fail"
    if isinstance(max_fail, bool) or not isinstance(max_fail, (int, str)):
        raise SpecError(what, f"{max_fail!r} must be a number of hosts or a percentage like '10%'")
    if isinstance(max_fail, str):
        percent = _parse_percent(max_fail, what)
        if percent is not None:
            if not 0 <= percent <= 100:
                raise SpecError(what, f"{max_fail!r} must be between 0% and 100%")
            return FailureBudget(percent=float(percent))
        count = _parse_int(max_fail)
        if count is None:
            raise SpecError(
                what, f"{max_fail!r} must be a number of hosts or a percentage like '10%'"
            )
        max_fail = count
    if max_fail < 0:
        raise SpecError(what, f"{max_fail} must be 0 or more hosts")
    return FailureBudget(count=max_fail)


# --- Decision after a wave -------------------------------------------------------------------


class Action(str, Enum):
    """What to do when a wave exceeds its failure budget (Swarm `failure_action`)."""

    CONTINUE = "continue"
    PAUSE = "pause"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Decision:
    """What the controller does after a wave.

    `proceed`: go on with the next wave. `rollback`: return the hosts this deployment already
    updated to their previous release. `reason`: plain words for the operator.
    """

    proceed: bool
    rollback: bool
    reason: str


def _hosts(n: int) -> str:
    return f"{n} host" if n == 1 else f"{n} hosts"


def _failed_names(failed: Sequence[str]) -> str:
    shown = ", ".join(failed[:_NAMES_IN_REASON])
    more = len(failed) - _NAMES_IN_REASON
    return f"{shown} and {more} more" if more > 0 else shown


def decide(
    wave: Wave,
    failed: Sequence[str],
    budget: FailureBudget,
    action: Action,
    remaining_hosts: int,
) -> Decision:
    """Decide what happens after `wave` finished with the hosts in `failed` failing.

    Within budget the rollout proceeds. Over budget the action decides: `continue` proceeds
    (and says so), `pause` stops and leaves hosts as they are, `rollback` stops and asks the
    caller to roll back the hosts this deployment updated. `remaining_hosts` is the number of
    hosts in the waves after this one (for the reason). Unreachable hosts count as failures:
    the caller passes them in `failed`; a host listed twice counts once.

    Raises ValueError when `failed` names a host outside the wave or `remaining_hosts` < 0.
    """
    action = Action(action)
    if remaining_hosts < 0:
        raise ValueError(f"remaining hosts {remaining_hosts} cannot be negative")
    in_wave = set(wave.hosts)
    unique_failed: List[str] = []
    for host in failed:
        if host not in in_wave:
            raise ValueError(f"host {host!r} failed but is not in {wave.name}")
        if host not in unique_failed:
            unique_failed.append(host)

    size = len(wave.hosts)
    count = len(unique_failed)
    names = f" ({_failed_names(unique_failed)})" if unique_failed else ""
    budget_text = str(budget)
    if budget.percent is not None:
        budget_text += f" ({_hosts(budget.allowed(size))})"
    head = f"{wave.name}: {count} of {size} hosts failed{names}, budget {budget_text}"
    to_go = f"{_hosts(remaining_hosts)} to go" if remaining_hosts else "no hosts left"
    untouched = f"{_hosts(remaining_hosts)} not touched" if remaining_hosts else "no hosts left"

    if not budget.exceeded(count, size):
        return Decision(proceed=True, rollback=False, reason=f"{head} -> proceeding; {to_go}")
    if action is Action.CONTINUE:
        reason = f"{head} -> over budget, continuing (failure action continue); {to_go}"
        return Decision(proceed=True, rollback=False, reason=reason)
    if action is Action.PAUSE:
        return Decision(proceed=False, rollback=False, reason=f"{head} -> paused; {untouched}")
    reason = f"{head} -> rolling back the hosts this deployment updated; {untouched}"
    return Decision(proceed=False, rollback=True, reason=reason)
