"""All detectors together on fixture roots, through the agent's CLI as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlfleet.agent.detect.host_facts import detect_host_facts
from mlfleet.agent.facts import HostFacts
from tests.paths import FIXTURES

ROOTS = FIXTURES / "roots"
NO_ENGINE = "unix:///nonexistent/docker.sock"


def facts_for(name: str) -> HostFacts:
    return detect_host_facts(str(ROOTS / name), NO_ENGINE)


@pytest.mark.parametrize(
    ("name", "vendors", "nvidia", "jetson", "amd"),
    [
        ("a100-550", ["nvidia", "nvidia"], "550.54.15", None, None),
        ("t4-470", ["nvidia"], "470.182.03", None, None),
        ("mi210", ["amd"], None, None, "6.1.2"),
        ("mi300x", ["amd"] * 8, None, None, "6.2.4"),
        ("jetson-orin-no-release", ["nvidia"], None, "36.4.3", None),
        ("jetson-nano", ["nvidia"], None, "32.7.1", None),
        ("intel-arc", ["intel", "intel"], None, None, None),
        ("cpu-only", [], None, None, None),
    ],
)
def test_fixture_hosts(name, vendors, nvidia, jetson, amd):
    facts = facts_for(name)
    assert [g.vendor for g in facts.gpus] == vendors
    assert (facts.nvidia.driver_version if facts.nvidia else None) == nvidia
    assert (facts.jetson.l4t if facts.jetson else None) == jetson
    assert (facts.amd.rocm_version if facts.amd else None) == amd
    assert facts.docker is not None and not facts.docker.reachable
    assert any("did not answer" in w for w in facts.warnings)


def test_facts_json_round_trips_and_refuses_another_schema():
    facts = facts_for("a100-550")
    again = HostFacts.from_dict(json.loads(json.dumps(facts.to_dict())))
    assert again == facts
    with pytest.raises(ValueError, match="schema"):
        HostFacts.from_dict(dict(facts.to_dict(), schema=99))


def agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlfleet.agent", *args], capture_output=True, text=True
    )


def test_cli_detect_then_select_from_the_facts_file(tmp_path: Path):
    result = agent("detect", "--json", "--root", str(ROOTS / "t4-470"), "--docker-host", NO_ENGINE)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["gpus"][0]["compute_capability"] == "7.5"
    # Pretend the engine has the toolkit, as a detect on the real host would report.
    facts["docker"].update(reachable=True, gpu_support=["nvidia"], error=None)
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(json.dumps(facts))
    variants = tmp_path / "variants.yml"
    variants.write_text(
        "variants:\n"
        "  - {name: cuda12, gpu: nvidia, cuda: '12.2'}\n"
        "  - {name: cuda11, gpu: nvidia, cuda: '11.8'}\n"
    )
    result = agent("select", "--variants", str(variants), "--facts", str(facts_file), "--json")
    assert result.returncode == 0, result.stderr
    selection = json.loads(result.stdout)
    assert selection["variant"] == "cuda11"
    assert "470.182.03" in selection["rejected"][0]["reason"]


def test_cli_select_with_no_fit_exits_3_and_lists_every_reason(tmp_path: Path):
    variants = tmp_path / "v.json"
    variants.write_text(json.dumps({"variants": [{"name": "rocm", "gpu": "amd", "rocm": "6.0"}]}))
    result = agent("select", "--variants", str(variants), "--root", str(ROOTS / "cpu-only"),
                   "--docker-host", NO_ENGINE)  # fmt: skip
    assert result.returncode == 3
    assert (
        "none fits" in result.stdout and "rejected  rocm: no AMD GPU on this host" in result.stdout
    )


def test_cli_bad_variants_file_is_one_line(tmp_path: Path):
    variants = tmp_path / "v.yml"
    variants.write_text("variants:\n  - {name: cuda12, gpu: nvidia, cuda: 12.2}\n")
    result = agent("select", "--variants", str(variants), "--root", str(ROOTS / "cpu-only"))
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1
        and "cuda" in result.stderr
        and str(variants) in result.stderr
    )
