"""What each profile puts under its host's root prefix, and the inventory the lab writes."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlfleet.controller.lab.hardware import (
    DRIVER_FILE,
    RootDevice,
    RootFile,
    driver_vendors,
    remove_root,
    render_root,
    unloaded_entries,
    write_root,
)
from mlfleet.controller.lab.inventory_file import render_inventory
from mlfleet.controller.lab.profiles import load_profiles, parse_profiles
from mlfleet.controller.yamlsource import load_yaml_text


def files(name: str) -> dict:
    host = {h.name: h for h in load_profiles().hosts}[name]
    return {e.path: e for e in render_root(host)}


def text(entry) -> str:
    assert isinstance(entry, RootFile)
    return entry.content if isinstance(entry.content, str) else entry.content.decode()


def test_nvidia_host_has_driver_files_devices_and_tools():
    t4 = files("edge-t4")
    assert text(t4["sys/module/nvidia/version"]) == "470.182.03\n"
    assert "Kernel Module  470.182.03  " in text(t4["proc/driver/nvidia/version"])
    assert isinstance(t4["dev/nvidia0"], RootDevice) and "dev/nvidia1" not in t4
    assert t4["usr/bin/nvidia-smi"].mode == 0o755
    assert '"470.182.03"' in text(t4["usr/bin/nvidia-container-runtime-hook"])
    assert text(t4["sys/class/drm/card0/device/vendor"]) == "0x10de\n"
    a100 = files("edge-a100")
    assert "dev/nvidia1" in a100 and "sys/class/drm/card1/device/vendor" in a100


def test_toolkit_hook_only_where_the_toolkit_is_installed():
    assert "usr/bin/nvidia-container-runtime-hook" not in files("edge-4090")
    assert "usr/bin/nvidia-smi" in files("edge-4090")


def test_amd_host_has_kfd_topology_rocm_and_render_nodes():
    mi = files("edge-mi210")
    assert isinstance(mi["dev/kfd"], RootDevice)
    assert "gfx_target_version 0\n" in text(mi["sys/class/kfd/kfd/topology/nodes/0/properties"])
    assert "gfx_target_version 90010\n" in text(mi["sys/class/kfd/kfd/topology/nodes/1/properties"])
    assert text(mi["opt/rocm/.info/version"]).startswith("6.1.2-")
    assert isinstance(mi["dev/dri/renderD128"], RootDevice)
    assert text(mi["sys/class/drm/card0/device/vendor"]) == "0x1002\n"
    assert not any(p.startswith(("sys/module/nvidia", "usr/bin/nvidia")) for p in mi)


def test_cpu_host_has_no_gpu_files():
    assert files("edge-cpu") == {}


def test_open_kernel_module_wording_and_jetson_files():
    spec = parse_profiles(load_yaml_text(
        "hosts:\n"
        "  big:\n"
        "    gpus: [{vendor: nvidia, model: H100, memory_mib: 81559, compute_capability: '9.0'}]\n"
        "    nvidia_driver: '565.57.01'\n"
        "    nvidia_kernel_module: open\n"
        "  orin:\n"
        "    jetson: {l4t: '35.3.1', soc: tegra234}\n"
        "    container_toolkit: true\n",
        "p.yml",
    ))  # fmt: skip
    big = {e.path: e for e in render_root(spec.hosts[0])}
    assert "Open Kernel Module for " in text(big["proc/driver/nvidia/version"])
    assert "  565.57.01  Release Build" in text(big["proc/driver/nvidia/version"])
    orin = {e.path: e for e in render_root(spec.hosts[1])}
    assert text(orin["etc/nv_tegra_release"]).startswith("# R35 (release), REVISION: 3.1,")
    assert text(orin["proc/device-tree/model"]) == "NVIDIA Jetson AGX Orin Developer Kit\0"
    assert text(orin["proc/device-tree/compatible"]).endswith("nvidia,tegra234\0")
    assert "Version: 35.3.1-" in text(orin["var/lib/dpkg/status"])
    assert "usr/bin/nvidia-container-runtime" in orin


# ----------------------------------------------------------------------------- driver not loaded


def lost(name: str) -> dict:
    host = {h.name: h for h in load_profiles().hosts}[name]
    return {e.path: e for e in render_root(host, driver_loaded=False)}


def test_nvidia_host_without_its_driver_keeps_the_user_space_only():
    a100 = lost("edge-a100")
    for gone in (
        "sys/module/nvidia/version",
        "proc/driver/nvidia/version",
        "dev/nvidiactl",
        "dev/nvidia-uvm",
        "dev/nvidia0",
        "dev/nvidia1",
        "sys/class/drm/card0/device/vendor",
        "sys/class/drm/renderD129/device/vendor",
    ):
        assert gone not in a100, gone  # fmt: skip
    assert '"mode": "no_driver"' in text(a100["usr/bin/nvidia-smi"])
    hook = text(a100["usr/bin/nvidia-container-runtime-hook"])
    assert '"driver_file": "proc/driver/nvidia/version"' in hook and '"550.54.15"' in hook
    assert set(a100) == {"usr/bin/nvidia-smi", "usr/bin/nvidia-container-runtime-hook"}


def test_the_hook_checks_the_file_the_loaded_module_has():
    a100 = files("edge-a100")
    assert DRIVER_FILE in a100
    assert f'"driver_file": "{DRIVER_FILE}"' in text(a100["usr/bin/nvidia-container-runtime-hook"])


def test_amd_host_without_its_driver_has_no_kfd_but_keeps_rocm():
    mi = lost("edge-mi210")
    assert "dev/kfd" not in mi and "dev/dri/renderD128" not in mi
    assert not any(p.startswith(("sys/class/kfd/", "sys/class/drm/")) for p in mi)
    assert set(mi) == {"opt/rocm/.info/version", "usr/bin/rocm-smi"}


def test_other_gpus_keep_their_cards_and_jetsons_stay_as_they_are():
    spec = parse_profiles(load_yaml_text(
        "hosts:\n"
        "  mixed:\n"
        "    gpus: [{vendor: nvidia, model: A100, memory_mib: 81920, compute_capability: '8.0'},\n"
        "           {vendor: intel, model: Intel Arc A770, memory_mib: 16384}]\n"
        "    nvidia_driver: '550.54.15'\n"
        "  orin:\n"
        "    jetson: {l4t: '36.4.3', soc: tegra234}\n"
        "    container_toolkit: true\n",
        "p.yml",
    ))  # fmt: skip
    mixed, orin = spec.hosts
    left = {e.path for e in render_root(mixed, driver_loaded=False)}
    assert "sys/class/drm/card0/device/vendor" not in left
    assert {"sys/class/drm/card1/device/vendor", "dev/dri/card1", "dev/dri/renderD129"} <= left
    assert driver_vendors(mixed) == ["nvidia"] and driver_vendors(orin) == []
    assert render_root(orin, driver_loaded=False) == render_root(orin)
    hook = text({e.path: e for e in render_root(orin)}["usr/bin/nvidia-container-runtime-hook"])
    assert '"driver_file"' not in hook.splitlines()[1]  # its PROFILE line


def on_disk(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_losing_the_driver_and_getting_it_back_on_disk(tmp_path):
    """What `lab gpu HOST lost|back` does to the root: no file and no empty directory of
    the module is left behind, and the way back restores the same tree."""
    host = {h.name: h for h in load_profiles().hosts}["edge-mi210"]
    root = tmp_path / "root"
    write_root(root, render_root(host))
    loaded = on_disk(root)
    remove_root(root, unloaded_entries(host))
    write_root(root, render_root(host, driver_loaded=False))
    assert on_disk(root) == {"opt", "opt/rocm", "opt/rocm/.info", "opt/rocm/.info/version",
                             "usr", "usr/bin", "usr/bin/rocm-smi"}  # fmt: skip
    write_root(root, render_root(host))
    write_root(root, render_root(host))  # device nodes already there are kept
    assert on_disk(root) == loaded


def test_the_agent_sees_no_usable_nvidia_driver_on_a_host_that_lost_it(tmp_path):
    from mlfleet.agent.detect import amd, nvidia
    from mlfleet.agent.hostroot import HostRoot

    hosts = {h.name: h for h in load_profiles().hosts}
    for name in ("edge-t4", "edge-mi210"):
        write_root(tmp_path / name, render_root(hosts[name], driver_loaded=False))
    found = nvidia.detect(HostRoot(str(tmp_path / "edge-t4")))
    assert found.facts is None and found.gpus == []
    assert found.warnings == [
        "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate "
        "with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
    ]
    found_amd = amd.detect(HostRoot(str(tmp_path / "edge-mi210")))
    assert found_amd.facts is None and found_amd.gpus == []


def test_inventory_is_plain_ansible_yaml_with_documented_host_variables():
    status = {
        "name": "lab",
        "profiles": "<built-in>",
        "registry": {"address": "10.77.0.1:5000"},
        "hosts": [
            {"name": "edge-cpu", "address": "10.77.0.6", "ssh_port": 22, "ssh_user": "root",
             "ssh_key": "/k", "known_hosts": "/kh", "docker_host": "unix:///d.sock",
             "root": "/r", "agent_dir": "/a", "cron_dir": "/c", "data_dir": "/data",
             "profile": {"gpus": [], "jetson": None}},
            {"name": "ssh1", "address": "10.77.0.7", "ssh_port": 22, "ssh_user": "root",
             "ssh_key": "/k", "known_hosts": "/kh", "docker_host": None,
             "root": "/r2", "agent_dir": "/a2", "cron_dir": "/c2", "data_dir": "/data2",
             "profile": {"gpus": [], "jetson": None}},
        ],
    }  # fmt: skip
    doc = yaml.safe_load(render_inventory(status))
    assert doc["all"]["vars"]["ansible_ssh_private_key_file"] == "/k"
    assert doc["all"]["vars"]["mlfleet_known_hosts"] == "/kh"
    cpu = doc["all"]["children"]["cpu"]["hosts"]
    assert cpu["edge-cpu"]["ansible_host"] == "10.77.0.6"
    assert cpu["edge-cpu"]["mlfleet_docker_host"] == "unix:///d.sock"
    assert "mlfleet_docker_host" not in cpu["ssh1"]
