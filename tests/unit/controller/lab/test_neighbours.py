"""Room in the neighbour table for big labs: raised while they are up, given back after."""

from __future__ import annotations

from pathlib import Path

from mlfleet.controller.lab import neighbours

DEFAULTS = {"gc_thresh1": 128, "gc_thresh2": 512, "gc_thresh3": 1024}


def fake_sysctl(tmp_path: Path) -> Path:
    sysctl = tmp_path / "sysctl"
    sysctl.mkdir()
    for name, value in DEFAULTS.items():
        (sysctl / name).write_text(f"{value}\n")
    return sysctl


def test_a_small_lab_needs_nothing_and_a_thousand_hosts_do():
    assert neighbours.needed(8, DEFAULTS) is None
    assert neighbours.needed(256, DEFAULTS) is None
    assert neighbours.needed(1000, DEFAULTS) == {
        "gc_thresh1": 1256, "gc_thresh2": 1256, "gc_thresh3": 2512,
    }  # fmt: skip
    raised = neighbours.needed(1000, {**DEFAULTS, "gc_thresh3": 100_000})
    assert raised is not None and raised["gc_thresh3"] == 100_000  # never lowered


def test_raised_while_big_labs_are_up_and_given_back_after_the_last(tmp_path: Path):
    sysctl, record = fake_sysctl(tmp_path), tmp_path / "run" / "neighbours.json"
    assert neighbours.reserve("t", 8, record, sysctl) is None and not record.exists()
    assert neighbours.reserve("big", 1000, record, sysctl) is not None
    assert neighbours.read(sysctl)["gc_thresh3"] == 2512
    assert neighbours.reserve("fan", 2000, record, sysctl) is not None  # more: raised again
    assert neighbours.read(sysctl)["gc_thresh3"] == 4512
    assert neighbours.release("big", record, sysctl) is False  # fan still needs the room
    assert neighbours.read(sysctl)["gc_thresh3"] == 4512
    assert neighbours.release("fan", record, sysctl) is True
    assert neighbours.read(sysctl) == DEFAULTS and not record.exists()
    assert not record.parent.exists() or not any(record.parent.iterdir())  # nothing left
    assert neighbours.release("fan", record, sysctl) is False  # once only


def test_values_someone_changed_meanwhile_are_left_alone(tmp_path: Path):
    sysctl, record = fake_sysctl(tmp_path), tmp_path / "neighbours.json"
    neighbours.reserve("big", 1000, record, sysctl)
    (sysctl / "gc_thresh3").write_text("9999\n")  # an operator's own tuning
    assert neighbours.release("big", record, sysctl) is False
    assert neighbours.read(sysctl)["gc_thresh3"] == 9999 and not record.exists()


def test_a_second_big_lab_within_the_raised_values_still_keeps_them_up(tmp_path: Path):
    sysctl, record = fake_sysctl(tmp_path), tmp_path / "neighbours.json"
    neighbours.reserve("big", 2000, record, sysctl)
    assert neighbours.reserve("fan", 1000, record, sysctl) is None  # already enough
    neighbours.release("big", record, sysctl)
    assert neighbours.read(sysctl)["gc_thresh3"] == 4512  # fan is up
    neighbours.release("fan", record, sysctl)
    assert neighbours.read(sysctl) == DEFAULTS
