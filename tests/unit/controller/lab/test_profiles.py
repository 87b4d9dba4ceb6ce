"""Lab profiles: the default fleet, ranges, and one clear error per kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlfleet.controller.errors import ConfigError
from mlfleet.controller.lab.profiles import load_profiles, parse_profiles
from mlfleet.controller.yamlsource import load_yaml_text


def parse(text: str):
    return parse_profiles(load_yaml_text(text, "p.yml"))


def test_default_profiles_are_the_five_hosts_of_the_issue():
    spec = load_profiles()
    assert [h.name for h in spec.hosts] == [
        "edge-a100", "edge-t4", "edge-4090", "edge-mi210", "edge-cpu",
    ]  # fmt: skip
    a100, t4, rtx, mi210, cpu = spec.hosts
    assert len(a100.gpus) == 2 and a100.container_toolkit and a100.nvidia_driver == "550.54.15"
    assert t4.nvidia_driver == "470.182.03" and t4.gpus[0].compute_capability == "7.5"
    assert not rtx.container_toolkit
    assert mi210.rocm == "6.1.2" and mi210.gpus[0].gfx == "gfx90a"
    assert cpu.gpus == () and cpu.engine and cpu.registry
    assert spec.address(0) == "10.77.0.2" and spec.controller_address == "10.77.0.1"


def test_ranges_make_many_hosts_with_options():
    spec = parse(
        "subnet: 10.88.0.0/16\n"
        "hosts:\n"
        "  cpu[001:100]: {engine: false, cron: false}\n"
        "  air: {registry: false, docker_disk_mib: 300, link_kbit: 512}\n"
    )
    assert len(spec.hosts) == 101
    assert spec.hosts[0].name == "cpu001" and spec.hosts[99].name == "cpu100"
    assert not spec.hosts[0].engine and not spec.hosts[0].cron
    assert spec.hosts[0].describe() == "CPU only, no engine, no cron"
    air = spec.hosts[100]
    assert (air.registry, air.docker_disk_mib, air.link_kbit) == (False, 300, 512)


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("hosts:\n  a:\n    gpu: []\n", "p.yml:3", "unknown key 'gpu'"),
        ("hosts:\n  a: {}\n  a: {}\n", "p.yml:3", "duplicate key 'a'"),
        ("hosts:\n  a[1:2]: {}\n  a1: {}\n", "p.yml:3", "duplicate host 'a1'"),
        (
            "hosts:\n  a:\n    gpus: [{vendor: nvidia, model: T4, compute_capability: '7.5'}]\n"
            "    nvidia_driver: 470.1x\n",
            "p.yml:4",
            "`nvidia_driver`",
        ),
        (
            "hosts:\n  a:\n    gpus: [{vendor: nvidia, model: T4, compute_capability: '7.5'}]\n",
            "p.yml:2",
            "no `nvidia_driver`",
        ),
        ("hosts:\n  a:\n    gpus: [{vendor: amd, model: X, gfx: gpu9}]\n", "p.yml:3", "`gfx`"),
        ("hosts:\n  a: {docker_disk_mib: 10}\n", "p.yml:2", "at least 64"),
        ("subnet: 10.9.0.0/29\nhosts:\n  h[1:6]: {}\n", "p.yml:2", "do not fit"),
        ("hosts:\n  Bad_Name: {}\n", "p.yml:2", "not valid"),
        ("hosts: [a, b]\n", "p.yml:1", "mapping of host names"),
        ("hosts:\n  a: {rocm: '6.1'}\n", "p.yml:2", "without an AMD GPU"),
        ("hosts:\n  a: {registry: maybe}\n", "p.yml:2", "true or false"),
        ("hosts:\n  a: {\n", "p.yml:", "not valid YAML"),
    ],
)
def test_bad_profiles_name_file_line_and_key(text: str, where: str, words: str):
    with pytest.raises(ConfigError) as err:
        parse(text)
    message = str(err.value)
    assert message.startswith(where), message
    assert words in message


def test_cli_reports_bad_profiles_in_one_line_without_traceback(tmp_path: Path):
    bad = tmp_path / "profiles.yml"
    bad.write_text("hosts:\n  edge:\n    gpus: [{vendor: nvidia, model: T4}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "mlfleet.controller", "lab", "--name", "nope", "up",
         "--profiles", str(bad), "--inventory", str(tmp_path / "inv.yml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"{bad}:3" in lines[0] and "compute_capability" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "inv.yml").exists()
    assert not Path("/var/lib/mlfleet-lab/nope").exists()
