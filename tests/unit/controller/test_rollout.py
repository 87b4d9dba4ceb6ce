"""Rollout planning, the failure budget and the decision after a wave (pure, no I/O)."""

from __future__ import annotations

from typing import List, Sequence

import pytest

from mlfleet.controller.rollout import (
    PER_VARIANT,
    Action,
    BatchSpec,
    Decision,
    FailureBudget,
    SpecError,
    Wave,
    canary_hosts,
    decide,
    describe_plan,
    parse_batch,
    parse_budget,
    parse_canary,
    plan_waves,
)

FLEET = ["edge-a100", "edge-t4", "edge-4090", "edge-orin", "edge-cpu"]


def hosts(n: int) -> List[str]:
    return [f"h{i:03d}" for i in range(n)]


def shape(waves: Sequence[Wave]) -> List[int]:
    return [len(w.hosts) for w in waves]


# --- plan_waves ------------------------------------------------------------------------------


def test_five_hosts_canary_one_half_batches():
    waves = plan_waves(FLEET, canary=1, batch="50%")
    assert waves == [
        Wave("canary", ("edge-a100",)),
        Wave("batch 1", ("edge-t4", "edge-4090")),
        Wave("batch 2", ("edge-orin", "edge-cpu")),
    ]


@pytest.mark.parametrize(
    ("n", "canary", "batch", "expected"),
    [
        # int batches; the final batch takes what is left
        (5, 0, 2, [2, 2, 1]),
        (5, 1, 2, [1, 2, 2]),
        (6, 1, 2, [1, 2, 2, 1]),
        (5, 0, 1, [1, 1, 1, 1, 1]),
        (5, 0, 5, [5]),
        (5, 0, 99, [5]),
        (5, 2, 99, [2, 3]),
        # string whole numbers, as YAML may hand them over
        (5, 0, "2", [2, 2, 1]),
        # lists: consumed in order, the last value repeats
        (10, 0, [1, 2], [1, 2, 2, 2, 2, 1]),
        (10, 1, [1, 2], [1, 1, 2, 2, 2, 2]),
        (7, 0, [1, 5, 3], [1, 5, 1]),
        (3, 0, [1, 5, 3], [1, 2]),
        (20, 0, [1, 5, "20%"], [1, 5, 4, 4, 4, 2]),
        (4, 0, [2], [2, 2]),
        # percentages of the hosts the batches cover (after the canary), rounded down, min 1
        (10, 0, "25%", [2, 2, 2, 2, 2]),
        (9, 1, "25%", [1, 2, 2, 2, 2]),
        (3, 0, "10%", [1, 1, 1]),
        (7, 0, "50%", [3, 3, 1]),
        (5, 0, "100%", [5]),
        (5, 1, "100%", [1, 4]),
        (8, 0, "12.5%", [1] * 8),
        (16, 0, "12.5%", [2] * 8),
        (3, 0, " 34 % ", [1, 1, 1]),
        (100, 0, "10%", [10] * 10),
        (100, 1, "10%", [1] + [9] * 11),
        (10, 0, ["10%", "50%"], [1, 5, 4]),
        # canary covers the fleet
        (3, 3, 2, [3]),
        (3, 10, "50%", [3]),
        # one host
        (1, 0, 1, [1]),
        (1, 1, 1, [1]),
        (1, 0, "10%", [1]),
        (1, 0, [1, 5], [1]),
        # no hosts: no waves
        (0, 0, 1, []),
        (0, 2, "50%", []),
    ],
)
def test_plan_shapes(n: int, canary: int, batch: BatchSpec, expected: List[int]):
    waves = plan_waves(hosts(n), canary, batch)
    assert shape(waves) == expected


def test_canary_zero_has_no_canary_wave():
    waves = plan_waves(FLEET, canary=0, batch=2)
    assert [w.name for w in waves] == ["batch 1", "batch 2", "batch 3"]
    assert waves[0].hosts == ("edge-a100", "edge-t4")


def test_canary_at_least_fleet_size_is_only_a_canary():
    for canary in (5, 6, 100):
        assert plan_waves(FLEET, canary=canary, batch=1) == [Wave("canary", tuple(FLEET))]


def test_batch_names_count_from_one_after_the_canary():
    waves = plan_waves(hosts(7), canary=2, batch=[1, 2])
    assert [w.name for w in waves] == ["canary", "batch 1", "batch 2", "batch 3"]
    assert shape(waves) == [2, 1, 2, 2]


def test_hundred_hosts_ten_percent_in_order():
    fleet = hosts(100)
    waves = plan_waves(fleet, canary=0, batch="10%")
    assert len(waves) == 10
    assert waves[3].hosts == tuple(fleet[30:40])
    assert waves[-1].name == "batch 10"


def test_wave_stores_a_tuple():
    wave = Wave("batch 1", ["a", "b"])  # type: ignore[arg-type]
    assert wave.hosts == ("a", "b")
    assert hash(wave) == hash(Wave("batch 1", ("a", "b")))
    assert len(wave) == 2


@pytest.mark.parametrize(
    "batch",
    [0, -1, "0", "-2", "0%", "0.0%", "-5%", "150%", "100.5%", "abc", "", "%", "x%", "1/2%",
     "2.5", 2.5, True, None, [], [1, 0], [1, "abc"], ["150%"], [[1]]],
)  # fmt: skip
def test_rejects_bad_batch_specs(batch: object):
    with pytest.raises(ValueError) as caught:
        plan_waves(FLEET, canary=1, batch=batch)  # type: ignore[arg-type]
    assert "batch" in str(caught.value)


def test_bad_batch_spec_rejected_even_when_unused():
    # The list's third entry is never reached on 2 hosts; the spec is still wrong.
    with pytest.raises(ValueError, match="'abc'"):
        plan_waves(hosts(2), canary=0, batch=[1, 1, "abc"])
    with pytest.raises(ValueError):
        plan_waves([], canary=0, batch=0)


@pytest.mark.parametrize("canary", [-1, 1.5, "1", True, None])
def test_rejects_bad_canary(canary: object):
    with pytest.raises(ValueError, match="canary"):
        plan_waves(FLEET, canary=canary, batch=1)  # type: ignore[arg-type]


def test_rejects_a_host_named_twice():
    with pytest.raises(ValueError, match="'edge-t4' is listed twice"):
        plan_waves(["edge-a100", "edge-t4", "edge-t4"], canary=1, batch=1)


def test_error_messages_are_plain():
    with pytest.raises(ValueError, match=r"'150%' must be more than 0% and at most 100%"):
        plan_waves(FLEET, canary=0, batch="150%")
    with pytest.raises(ValueError, match="batch list is empty"):
        plan_waves(FLEET, canary=0, batch=[])
    with pytest.raises(ValueError, match="at least 1 host"):
        plan_waves(FLEET, canary=0, batch=0)


SPECS: List[BatchSpec] = [1, 2, 3, 7, 50, "1%", "10%", "25%", "33%", "50%", "99%", "100%",
                          [1, 2], [1, 5, "20%"], ["10%", 3], [2, 1], ["50%", "1%"]]  # fmt: skip


def test_property_every_host_once_in_order():
    for n in range(0, 41):
        fleet = hosts(n)
        for canary in (0, 1, 2, 5, n, n + 1):
            for spec in SPECS:
                waves = plan_waves(fleet, canary, spec)
                flat = [h for w in waves for h in w.hosts]
                context = (n, canary, spec)
                assert flat == fleet, context
                assert all(w.hosts for w in waves), context
                has_canary = canary > 0 and n > 0
                assert bool(waves) == (n > 0), context
                if waves:
                    assert (waves[0].name == "canary") == has_canary, context
                if has_canary:
                    assert len(waves[0].hosts) == min(canary, n), context
                batches = waves[1:] if has_canary else waves
                assert [w.name for w in batches] == [
                    f"batch {i}" for i in range(1, len(batches) + 1)
                ]


def test_property_batches_follow_the_spec_except_the_last():
    # Every batch but the last has exactly the size the spec gives for its position; the
    # last is at most that size.
    for n in range(1, 61):
        for spec in SPECS:
            steps = [spec] if isinstance(spec, (int, str)) else list(spec)
            waves = plan_waves(hosts(n), 0, spec)
            for i, wave in enumerate(waves):
                step = steps[min(i, len(steps) - 1)]
                if isinstance(step, str):
                    want = max(1, int(float(step.rstrip("%")) * n) // 100)
                else:
                    want = step
                if i < len(waves) - 1:
                    assert len(wave.hosts) == want, (n, spec, i)
                else:
                    assert 1 <= len(wave.hosts) <= want, (n, spec, i)


# --- describe_plan ---------------------------------------------------------------------------


def test_describe_plan():
    waves = plan_waves(FLEET, canary=1, batch=[2, 3])
    assert describe_plan(waves) == [
        "canary: edge-a100",
        "batch 1 (2 hosts): edge-t4, edge-4090",
        "batch 2 (2 hosts): edge-orin, edge-cpu",
    ]


def test_describe_plan_counts_only_multi_host_waves():
    waves = plan_waves(FLEET, canary=2, batch=[2, 1])
    assert describe_plan(waves) == [
        "canary (2 hosts): edge-a100, edge-t4",
        "batch 1 (2 hosts): edge-4090, edge-orin",
        "batch 2: edge-cpu",
    ]
    assert describe_plan([]) == []


# --- parse_budget / FailureBudget ------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_fail", "expected"),
    [
        (0, FailureBudget(count=0)),
        (1, FailureBudget(count=1)),
        ("3", FailureBudget(count=3)),
        ("10%", FailureBudget(percent=10.0)),
        ("0%", FailureBudget(percent=0.0)),
        ("100%", FailureBudget(percent=100.0)),
        (" 12.5% ", FailureBudget(percent=12.5)),
    ],
)
def test_parse_budget(max_fail: object, expected: FailureBudget):
    assert parse_budget(max_fail) == expected


@pytest.mark.parametrize(
    "max_fail", [-1, "-1", "-5%", "150%", "abc", "", "%", 0.1, True, None, [1]]
)
def test_parse_budget_rejects(max_fail: object):
    with pytest.raises(ValueError, match="max_fail"):
        parse_budget(max_fail)


def test_budget_zero_fires_on_first_failure():
    budget = parse_budget(0)
    assert budget.allowed(5) == 0
    assert not budget.exceeded(0, 5)
    assert budget.exceeded(1, 5)
    assert budget.exceeded(1, 1)


def test_default_budget_is_zero():
    assert FailureBudget() == FailureBudget()
    assert FailureBudget().allowed(10) == 0
    assert FailureBudget().exceeded(1, 10)
    assert str(FailureBudget()) == "0"


def test_budget_count_is_strict():
    budget = parse_budget(1)
    assert budget.allowed(5) == 1
    assert not budget.exceeded(1, 5)
    assert budget.exceeded(2, 5)
    # Never more than the wave has.
    assert parse_budget(10).allowed(3) == 3
    assert not parse_budget(10).exceeded(3, 3)


@pytest.mark.parametrize(
    ("max_fail", "size", "allowed"),
    [
        ("10%", 10, 1),
        ("10%", 9, 0),
        ("10%", 20, 2),
        ("34%", 3, 1),
        ("33%", 3, 0),
        ("50%", 2, 1),
        ("50%", 3, 1),
        ("0%", 100, 0),
        ("100%", 7, 7),
        ("33.3%", 1000, 333),
        ("10%", 30, 3),
        ("10%", 0, 0),
    ],
)
def test_percent_budget_boundaries(max_fail: str, size: int, allowed: int):
    budget = parse_budget(max_fail)
    assert budget.allowed(size) == allowed
    assert not budget.exceeded(allowed, size)
    if allowed < size:
        assert budget.exceeded(allowed + 1, size)


def test_percent_budget_matches_ansible_rule_exactly():
    # exceeded <=> failures / size * 100 > percent, and allowed() is the largest count that
    # is not exceeded, for every size and failure count.
    for percent in ("0%", "1%", "10%", "12.5%", "25%", "33%", "34%", "50%", "66.6%", "99%", "100%"):
        budget = parse_budget(percent)
        p = float(percent.rstrip("%"))
        for size in range(1, 51):
            for failures in range(0, size + 1):
                ansible = failures * 100 > p * size  # integer-safe form of the rule
                assert budget.exceeded(failures, size) == ansible, (percent, size, failures)
                assert (failures > budget.allowed(size)) == ansible, (percent, size, failures)


def test_count_budget_consistent_with_allowed():
    for count in range(0, 6):
        budget = parse_budget(count)
        for size in range(1, 10):
            for failures in range(0, size + 1):
                assert budget.exceeded(failures, size) == (failures > budget.allowed(size))


def test_budget_rejects_impossible_inputs():
    budget = parse_budget(1)
    with pytest.raises(ValueError):
        budget.exceeded(3, 2)
    with pytest.raises(ValueError):
        budget.exceeded(-1, 2)
    with pytest.raises(ValueError):
        budget.allowed(-1)
    with pytest.raises(ValueError, match="not both"):
        FailureBudget(count=1, percent=10.0)
    with pytest.raises(ValueError):
        FailureBudget(percent=101.0)
    with pytest.raises(ValueError):
        FailureBudget(count=-1)


def test_budget_str():
    assert str(parse_budget(2)) == "2"
    assert str(parse_budget("10%")) == "10%"
    assert str(parse_budget("12.5%")) == "12.5%"


# --- decide ----------------------------------------------------------------------------------

CANARY = Wave("canary", ("edge-a100",))
BATCH = Wave("batch 1", ("edge-t4", "edge-4090", "edge-orin"))


def test_action_values():
    assert [a.value for a in Action] == ["continue", "pause", "rollback"]
    assert Action("pause") is Action.PAUSE


@pytest.mark.parametrize("action", list(Action))
def test_within_budget_proceeds_whatever_the_action(action: Action):
    decision = decide(BATCH, ["edge-t4"], parse_budget(1), action, remaining_hosts=2)
    assert decision == Decision(
        proceed=True,
        rollback=False,
        reason="batch 1: 1 of 3 hosts failed (edge-t4), budget 1 -> proceeding; 2 hosts to go",
    )


def test_no_failures_proceeds():
    decision = decide(CANARY, [], parse_budget(0), Action.PAUSE, remaining_hosts=4)
    assert decision.proceed and not decision.rollback
    assert decision.reason == "canary: 0 of 1 hosts failed, budget 0 -> proceeding; 4 hosts to go"


def test_over_budget_pause():
    decision = decide(CANARY, ["edge-a100"], parse_budget(0), Action.PAUSE, remaining_hosts=4)
    assert not decision.proceed and not decision.rollback
    assert decision.reason == (
        "canary: 1 of 1 hosts failed (edge-a100), budget 0 -> paused; 4 hosts not touched"
    )


def test_over_budget_rollback():
    decision = decide(BATCH, ["edge-t4", "edge-orin"], parse_budget(1), Action.ROLLBACK, 1)
    assert not decision.proceed and decision.rollback
    assert decision.reason == (
        "batch 1: 2 of 3 hosts failed (edge-t4, edge-orin), budget 1"
        " -> rolling back the hosts this deployment updated; 1 host not touched"
    )


def test_over_budget_continue():
    decision = decide(BATCH, ["edge-t4", "edge-orin"], parse_budget(1), Action.CONTINUE, 5)
    assert decision.proceed and not decision.rollback
    assert "over budget, continuing (failure action continue); 5 hosts to go" in decision.reason


def test_last_wave_says_no_hosts_left():
    ok = decide(BATCH, [], parse_budget(0), Action.PAUSE, remaining_hosts=0)
    assert ok.proceed
    assert ok.reason.endswith("-> proceeding; no hosts left")
    stopped = decide(BATCH, ["edge-t4"], parse_budget(0), Action.PAUSE, remaining_hosts=0)
    assert not stopped.proceed
    assert stopped.reason.endswith("-> paused; no hosts left")


def test_percent_budget_in_reason():
    wave = Wave("batch 2", tuple(hosts(10)))
    decision = decide(wave, ["h000", "h001"], parse_budget("10%"), Action.PAUSE, 0)
    assert not decision.proceed
    assert decision.reason.startswith(
        "batch 2: 2 of 10 hosts failed (h000, h001), budget 10% (1 host)"
    )
    within = decide(wave, ["h000"], parse_budget("10%"), Action.PAUSE, 0)
    assert within.proceed


def test_many_failed_hosts_are_abbreviated():
    wave = Wave("batch 1", tuple(hosts(10)))
    decision = decide(wave, hosts(6), parse_budget(0), Action.PAUSE, 0)
    assert "(h000, h001, h002 and 3 more)" in decision.reason


def test_failed_host_listed_twice_counts_once():
    # e.g. unreachable and failed its health check
    decision = decide(BATCH, ["edge-t4", "edge-t4"], parse_budget(1), Action.PAUSE, 0)
    assert decision.proceed
    assert "1 of 3 hosts failed" in decision.reason


def test_action_may_be_given_as_its_value():
    decision = decide(CANARY, ["edge-a100"], parse_budget(0), "rollback", 0)  # type: ignore[arg-type]
    assert decision.rollback


def test_decide_rejects_bad_inputs():
    with pytest.raises(ValueError, match="'edge-cpu' failed but is not in canary"):
        decide(CANARY, ["edge-cpu"], parse_budget(0), Action.PAUSE, 0)
    with pytest.raises(ValueError):
        decide(CANARY, [], parse_budget(0), Action.PAUSE, -1)
    with pytest.raises(ValueError):
        decide(CANARY, [], parse_budget(0), "abort", 0)  # type: ignore[arg-type]


def test_plan_then_decide_walkthrough():
    # The canary fails with a zero budget: pause, nothing else touched.
    waves = plan_waves(FLEET, canary=1, batch="50%")
    remaining = [sum(len(w.hosts) for w in waves[i + 1 :]) for i in range(len(waves))]
    assert remaining == [4, 2, 0]
    decision = decide(waves[0], ["edge-a100"], parse_budget(0), Action.PAUSE, remaining[0])
    assert decision == Decision(
        proceed=False,
        rollback=False,
        reason="canary: 1 of 1 hosts failed (edge-a100), budget 0 -> paused; 4 hosts not touched",
    )


# --- one grammar for the playbook and the command line ---------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5),
        ("5", 5),
        (" 25% ", "25%"),
        ("12.5%", "12.5%"),
        ("1,5,20%", [1, 5, "20%"]),
        ("1, 5 , 20 %", [1, 5, "20%"]),
        ([1, "5", "20%"], [1, 5, "20%"]),
        (["50%"], "50%"),
    ],
)
def test_parse_batch_takes_yaml_values_and_command_line_text(value: object, expected: object):
    assert parse_batch(value) == expected


@pytest.mark.parametrize(
    ("value", "index", "problem"),
    [
        ("1,0", 1, "0 must be at least 1 host"),
        ([1, "x%"], 1, "'x%' is not a percentage"),
        ("1,,2", 1, "'' must be a whole number"),
        ("0%", None, "'0%' must be more than 0% and at most 100%"),
        ([], None, "list is empty"),
        ({"a": 1}, None, "{'a': 1} must be a number, a percentage or a list"),
    ],
)
def test_parse_batch_errors_name_the_entry(value: object, index: object, problem: str):
    with pytest.raises(SpecError) as caught:
        parse_batch(value)
    assert caught.value.index == index and caught.value.problem.startswith(problem)
    assert str(caught.value).startswith("batch ")


def test_the_same_budget_from_a_playbook_and_the_command_line():
    assert parse_budget("33.3%") == FailureBudget(percent=33.3)
    assert parse_budget(" 2 ") == parse_budget(2) == FailureBudget(count=2)
    with pytest.raises(SpecError) as caught:
        parse_budget("101%")
    assert caught.value.problem == "'101%' must be between 0% and 100%"


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (2, 2), ("3", 3), ("per-variant", PER_VARIANT)]
)
def test_parse_canary(value: object, expected: object):
    assert parse_canary(value) == expected


@pytest.mark.parametrize("value", [-1, "-1", "some", 1.5, True, None, "per_variant"])
def test_parse_canary_rejects(value: object):
    with pytest.raises(SpecError, match="canary"):
        parse_canary(value)


# --- canary per variant ------------------------------------------------------------------------

MIXED = ["cpu1", "cpu2", "a100", "t4", "mi210", "cpu3", "a100b", "new"]
VARIANT_OF = {"cpu1": "cpu", "cpu2": "cpu", "a100": "cuda12", "t4": "cuda11",
              "mi210": "rocm", "cpu3": "cpu", "a100b": "cuda12", "new": None}  # fmt: skip


def test_per_variant_canary_holds_the_first_host_of_each_variant():
    waves = plan_waves(MIXED, PER_VARIANT, "50%", VARIANT_OF)
    assert waves == [
        Wave("canary", ("cpu1", "a100", "t4", "mi210")),
        Wave("batch 1", ("cpu2", "cpu3")),
        Wave("batch 2", ("a100b", "new")),
    ]


def test_per_variant_hosts_of_unknown_variant_are_no_canaries():
    # `new` has no facts yet, `gone` is not in the mapping: neither is a canary.
    variant_of = {"a": "cpu", "b": "cuda12", "new": None}
    assert canary_hosts(["new", "gone", "a", "b"], PER_VARIANT, variant_of) == ("a", "b")


def test_per_variant_without_any_known_variant_is_one_host():
    assert canary_hosts(["x", "y"], PER_VARIANT, {}) == ("x",)
    assert canary_hosts(["x", "y"], PER_VARIANT, {"x": None}) == ("x",)
    assert plan_waves(["x", "y", "z"], PER_VARIANT, 1) == [
        Wave("canary", ("x",)), Wave("batch 1", ("y",)), Wave("batch 2", ("z",)),
    ]  # fmt: skip
    assert plan_waves([], PER_VARIANT, 1, {}) == []


def test_property_per_variant_one_host_per_known_variant_every_host_once():
    variants = ["cuda12", "cuda11", "rocm", "cpu", None]
    for n in range(0, 30):
        fleet = hosts(n)
        for shift in range(len(variants)):
            variant_of = {h: variants[(i * 7 + shift) % len(variants)] for i, h in enumerate(fleet)}
            waves = plan_waves(fleet, PER_VARIANT, [1, "30%"], variant_of)
            assert sorted(h for w in waves for h in w.hosts) == fleet
            if not fleet:
                continue
            canary = waves[0]
            known = {v for v in variant_of.values() if v is not None}
            assert canary.name == "canary"
            if known:
                # key=str: variant_of's values may be None (which sorted() cannot order)
                assert sorted((variant_of[h] for h in canary.hosts), key=str) == sorted(known)
            else:
                assert canary.hosts == (fleet[0],)
