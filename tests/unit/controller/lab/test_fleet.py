"""Lab operations that only touch files: `lab gpu` on a lab state kept in a temporary
directory (no namespaces, no daemons, no root needed)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict

import pytest

from mlfleet.controller.errors import LabError
from mlfleet.controller.lab import fleet
from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.lab.profiles import HostProfile, JetsonSpec, load_profiles


@pytest.fixture
def layout(tmp_path: Path) -> LabLayout:
    """A lab state as `lab up` writes it, for the default hosts and a Jetson; no processes."""
    layout = LabLayout("unit", tmp_path / "state", tmp_path / "run", tmp_path / "cache")
    orin = HostProfile("edge-orin", jetson=JetsonSpec("36.4.3", "tegra234", "Orin"),
                       container_toolkit=True)  # fmt: skip
    hosts = [*load_profiles().hosts, orin]
    layout.base.mkdir(parents=True)
    state = {
        "name": layout.name, "subnet": "10.99.0.0/24", "profiles": "<built-in>",
        "created": "2026-12-05T00:00:00Z", "ssh_key": "/k", "known_hosts": "/kh",
        "registry": {"address": "10.99.0.1:5000", "pid": None, "images": []},
        "hosts": [_host(layout, h, i) for i, h in enumerate(hosts)],
    }  # fmt: skip
    layout.state_file.write_text(json.dumps(state))
    return layout


def _host(layout: LabLayout, profile: HostProfile, index: int) -> Dict[str, Any]:
    from mlfleet.controller.lab.hardware import render_root, write_root

    write_root(layout.root(profile.name), render_root(profile))
    return {"name": profile.name, "address": f"10.99.0.{index + 2}",
            "netns": layout.netns(profile.name), "veth": layout.veth(profile.name),
            "host_key": "", "profile": asdict(profile), "pids": {}}  # fmt: skip


def gpus(layout: LabLayout) -> Dict[str, Any]:
    return {h["name"]: h["gpu"] for h in fleet.status(layout)["hosts"]}


def test_gpu_lost_and_back(layout: LabLayout):
    root = layout.root("edge-t4")
    assert gpus(layout)["edge-t4"] == "ok"
    fleet.gpu(layout, "edge-t4", loaded=False)
    assert not (root / "proc/driver/nvidia").exists() and not (root / "dev/nvidia0").exists()
    assert not (root / "sys/module").exists() and not (root / "sys/class/drm").exists()
    assert '"mode": "no_driver"' in (root / "usr/bin/nvidia-smi").read_text()
    assert (root / "usr/bin/nvidia-container-runtime-hook").exists()
    assert gpus(layout)["edge-t4"] == "lost" and gpus(layout)["edge-a100"] == "ok"
    fleet.gpu(layout, "edge-t4", loaded=True)
    assert (root / "proc/driver/nvidia/version").exists() and (root / "dev/nvidia0").exists()
    assert '"mode": "ok"' in (root / "usr/bin/nvidia-smi").read_text()
    assert gpus(layout)["edge-t4"] == "ok"


def test_gpu_lost_on_an_amd_host(layout: LabLayout):
    fleet.gpu(layout, "edge-mi210", loaded=False)
    root = layout.root("edge-mi210")
    assert not (root / "dev/kfd").exists() and not (root / "sys/class/kfd").exists()
    assert (root / "usr/bin/rocm-smi").exists() and (root / "opt/rocm/.info/version").exists()


@pytest.mark.parametrize(("host", "words"), [
    ("edge-cpu", "has no NVIDIA driver and no AMD GPU"),
    ("edge-orin", "is a Jetson"),
])  # fmt: skip
def test_gpu_refuses_hosts_without_a_driver_to_take_away(layout: LabLayout, host, words):
    with pytest.raises(LabError) as caught:
        fleet.gpu(layout, host, loaded=False)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert "edge-a100, edge-t4, edge-4090, edge-mi210" in message
    assert gpus(layout)[host] is None


def test_profiles_come_back_from_the_state(layout: LabLayout):
    state = json.loads(layout.state_file.read_text())
    profiles = [HostProfile.from_dict(h["profile"]) for h in state["hosts"]]
    assert profiles[:5] == list(load_profiles().hosts)
    assert profiles[5].jetson == JetsonSpec("36.4.3", "tegra234", "Orin")


def test_reboot_stops_the_engine_then_kills_the_rest_then_boots(layout, monkeypatch):
    """The order of a reboot and the pids it records; the processes are stand-ins here
    (the lab tests reboot real hosts)."""
    steps: list = []
    monkeypatch.setattr(fleet, "stop_pid", lambda pid, expect: steps.append(("stop", expect)))
    monkeypatch.setattr(fleet.network, "netns_pids", lambda netns: [101, 102])
    monkeypatch.setattr(fleet, "terminate_all", lambda pids: steps.append(("kill", pids)))

    def boot(layout_, profile, address, netns):
        steps.append(("boot", profile.name, address))
        return {"dockerd": 201, "sshd": 202, "crond": 203}

    monkeypatch.setattr(fleet, "_boot", boot)
    assert fleet.reboot(layout, "edge-t4") >= 0
    assert steps == [("stop", "dockerd"), ("kill", [101, 102]), ("kill", [101, 102]),
                     ("boot", "edge-t4", "10.99.0.3")]  # fmt: skip
    state = json.loads(layout.state_file.read_text())
    assert state["hosts"][1]["pids"] == {"dockerd": 201, "sshd": 202, "crond": 203}
