"""The agent, shipped as its zipapp over SSH, detects each lab host as its profile says and
selects the variant that really runs there."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from mlfleet.agent.cuda import max_cuda_for_driver
from tests.lab.conftest import agent, put
from tests.lab.sshrun import ssh

DEFAULT_HOSTS = ["edge-a100", "edge-t4", "edge-4090", "edge-mi210", "edge-cpu"]
VARIANTS = """\
variants:
  - {name: cuda12, gpu: nvidia, cuda: "12.2", min_compute_capability: "7.0", arch: [x86_64]}
  - {name: cuda11, gpu: nvidia, cuda: "11.8"}
  - {name: jetson6, gpu: nvidia, platform: jetson, l4t: "36.4"}
  - {name: rocm, gpu: amd, rocm: "6.0", gfx: [gfx90a, gfx942]}
  - {name: cpu}
"""
EXPECTED = {
    "edge-a100": "cuda12",
    "edge-t4": "cuda11",
    "edge-4090": "cpu",
    "edge-mi210": "rocm",
    "edge-cpu": "cpu",
}


@pytest.fixture(scope="module")
def agents(agent_hosts):
    """A variants file beside the agent on every default host."""
    for name in DEFAULT_HOSTS:
        put(agent_hosts["hosts_by_name"][name], VARIANTS.encode(), "variants.yml")
    return agent_hosts


@pytest.mark.parametrize("name", DEFAULT_HOSTS)
def test_detect_reports_each_hosts_profile(agents, name):
    host = agents["hosts_by_name"][name]
    profile = host["profile"]
    code, out, err = agent(host, "detect --json")
    assert code == 0, err
    facts = json.loads(out)
    assert facts["hostname"] == name
    assert facts["root"] == host["root"]
    got = [
        (g["vendor"], g["model"], g["memory_mib"], g["compute_capability"], g["gfx"])
        for g in facts["gpus"]
    ]
    want = [
        (g["vendor"], g["model"], g["memory_mib"], g["compute_capability"], g["gfx"])
        for g in profile["gpus"]
    ]
    assert got == want
    driver = profile["nvidia_driver"]
    if driver:
        cuda = max_cuda_for_driver(driver)
        assert cuda is not None, f"no CUDA version known for driver {driver}"
        assert facts["nvidia"]["driver_version"] == driver
        assert facts["nvidia"]["cuda_version"] == f"{cuda[0]}.{cuda[1]}"
    else:
        assert facts["nvidia"] is None
    assert (facts["amd"] or {}).get("rocm_version") == profile["rocm"]
    docker = facts["docker"]
    assert docker["reachable"] and docker["data_root"].startswith(str(Path(host["root"]).parent))
    assert ("nvidia" in docker["gpu_support"]) == bool(profile["container_toolkit"])
    assert ("amd" in docker["gpu_support"]) == (name == "edge-mi210")
    assert facts["jetson"] is None


@pytest.mark.parametrize("name", DEFAULT_HOSTS)
def test_select_picks_the_variant_that_runs_there(agents, name):
    host = agents["hosts_by_name"][name]
    code, out, err = agent(
        host, f"select --variants {shlex.quote(host['agent_dir'] + '/variants.yml')} --json"
    )
    assert code == 0, err
    selection = json.loads(out)
    assert selection["variant"] == EXPECTED[name]
    rejected = {r["variant"]: r["reason"] for r in selection["rejected"]}
    if name == "edge-t4":
        assert "470.182.03" in rejected["cuda12"] and "12.2" in rejected["cuda12"]
    if name == "edge-4090":
        # A GPU the engine cannot wire does not count, and the operator is told why.
        assert "RTX 4090" in rejected["cuda12"] and "toolkit" in rejected["cuda12"]
        assert any("RTX 4090" in w for w in selection["warnings"])


def test_select_fails_a_host_no_variant_fits(agents):
    host = agents["hosts_by_name"]["edge-cpu"]
    path = f"{host['agent_dir']}/gpu-only.yml"
    ssh(
        host,
        f"printf '%s\\n' 'variants:' '  - {{name: cuda12, gpu: nvidia, cuda: \"12.2\"}}' > {path}",
    )
    code, out, _err = agent(host, f"select --variants {path} --json")
    assert code == 3
    selection = json.loads(out)
    assert selection["variant"] is None
    assert selection["rejected"][0]["variant"] == "cuda12"
