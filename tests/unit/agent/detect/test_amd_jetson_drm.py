"""AMD, Jetson and DRM detection: parsers on real captured formats, detectors on the fixture
roots (tests/fixtures/roots, sources in its README) and on the lab's simulated roots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List, Sequence

import pytest

from mlfleet.agent.detect import amd, drm, jetson
from mlfleet.agent.detect.drm import DrmCard
from mlfleet.agent.facts import AmdFacts, Gpu, JetsonFacts
from mlfleet.agent.hostroot import HostRoot, ProgramHung, ProgramResult
from tests.paths import FIXTURES

ROOTS = FIXTURES / "roots"
ALL_ROOTS = sorted(p.name for p in ROOTS.iterdir() if p.is_dir())
AMD_ROOTS = {"mi210", "mi300x", "amd-no-rocm"}
JETSON_ROOTS = {"jetson-nano", "jetson-xavier", "jetson-orin", "jetson-orin-no-release"}


def root(name: str) -> HostRoot:
    return HostRoot(str(ROOTS / name))


def copy_root(tmp_path: Path, name: str) -> Path:
    """A writable copy of a fixture root, to break one thing in it."""
    target = tmp_path / name
    shutil.copytree(ROOTS / name, target, symlinks=True)
    return target


def rocm_smi(path: Path, stdout: str, status: int = 0) -> None:
    """Replace a root's rocm-smi with one printing `stdout` for any arguments."""
    script = path / "usr/bin/rocm-smi"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {status}\n")
    script.chmod(0o755)


# A live MI300X host's KFD nodes (makodevai/gpuq tests/test_hip_runtime.py).
MI300X_GPU = """\
cpu_cores_count 0
simd_count 1216
mem_banks_count 1
caches_count 626
io_links_count 7
p2p_links_count 1
cpu_core_id_base 0
simd_id_base 2147487784
max_waves_per_simd 8
lds_size_in_kb 64
gds_size_in_kb 0
num_gws 64
wave_front_size 64
array_count 32
simd_arrays_per_engine 1
cu_per_simd_array 10
simd_per_cu 4
max_slots_scratch_cu 32
gfx_target_version 90402
vendor_id 4098
device_id 29857
location_id 18176
domain 0
drm_render_minor 128
hive_id 10631624818852212319
num_sdma_engines 2
num_sdma_xgmi_engines 14
num_sdma_queues_per_engine 8
num_cp_queues 24
max_engine_clk_fcompute 2100
local_mem_size 0
fw_version 166
capability 746037888
debug_prop 1511
sdma_fw_version 22
unique_id 4376936076086227261
num_xcc 8
max_engine_clk_ccompute 2400
"""
CPU_NODE = (
    "cpu_cores_count 96\nsimd_count 0\ngfx_target_version 0\nvendor_id 0\ndrm_render_minor 0\n"
)


# ----------------------------------------------------------------------------- AMD parsers


def test_kfd_properties_of_a_real_mi300x_node():
    props = amd.parse_kfd_properties(MI300X_GPU)
    assert props["hive_id"] == 10631624818852212319  # 64-bit values stay exact
    assert amd.kfd_gpu(2, props) == amd.KfdGpu(
        node=2, gfx="gfx942", device_id="0x74a1", render_minor=128, pci_bus_id="0000:47:00.0"
    )


def test_a_cpu_node_is_no_gpu():
    assert amd.kfd_gpu(0, amd.parse_kfd_properties(CPU_NODE)) is None


@pytest.mark.parametrize("text", ["simd_count 0\ngarbage\n", "gfx_target_version -1\n", "a b c\n"])
def test_malformed_kfd_properties_are_refused(text):
    with pytest.raises(ValueError, match="line"):
        amd.parse_kfd_properties(text)


def test_a_node_without_a_gfx_target_is_refused():
    with pytest.raises(ValueError, match="gfx_target_version"):
        amd.kfd_gpu(1, {"simd_count": 416})


@pytest.mark.parametrize(
    "target, gfx",
    [(90010, "gfx90a"), (90402, "gfx942"), (110000, "gfx1100"), (110501, "gfx1151"),
     (0, None), (110099, None)],
)  # fmt: skip
def test_gfx_from_target(target, gfx):
    assert amd.gfx_from_target(target) == gfx


def test_mem_banks_count_only_frame_buffer():
    mi210 = "heap_type 1\nsize_in_bytes 68702699520\nflags 0\nwidth 4096\nmem_clk_max 1600\n"
    assert amd.parse_mem_bank(mi210) == (1, 68702699520)
    assert amd.vram_mib([(1, 68702699520)]) == 65520
    assert amd.vram_mib([(1, 268435456), (2, 17179869184 - 268435456)]) == 16384  # small BAR
    assert amd.vram_mib([(0, 33554432000)]) is None  # an APU's node: system memory only
    with pytest.raises(ValueError, match="size_in_bytes"):
        amd.parse_mem_bank("heap_type 1\nflags 0\n")


@pytest.mark.parametrize(
    "text, version",
    [("6.1.2-119\n", "6.1.2"), ("6.2.4-139\n", "6.2.4"), ("6.4.1\n", "6.4.1"),
     ("5.7.1-98\n", "5.7.1"), ("", None), ("rocm\n", None), ("6\n", None)],
)  # fmt: skip
def test_rocm_version_file(text, version):
    assert amd.parse_rocm_version(text) == version


@pytest.mark.parametrize(
    "label, gfx",
    [
        ("gfx90a", "gfx90a"),
        ("gfx9010", "gfx90a"),  # ROCm 6.0.x prints decimal (ROCm/rocm_smi_lib#159)
        ("gfx11000", "gfx1100"),
        ("gfx9402", "gfx942"),
        ("gfx942", "gfx942"),
        ("gfx942:sramecc+:xnack-", "gfx942"),
        ("gfx1030", "gfx1030"),
        ("gfx908", "gfx908"),
        ("GFX1151", "gfx1151"),
        ("N/A", None),
        ("90a", None),
        ("", None),
    ],
)
def test_rocm_smi_gfx_labels(label, gfx):
    assert amd.parse_gfx_label(label) == gfx


def test_product_names_of_rocm_6_with_title_case_keys():
    # MI300A capture: newer rocm-smi adds "Device Name"/"Device ID" before the card keys.
    card = {"Device Name": "AMD Instinct MI300A", "Device ID": "0x74a0", "Device Rev": "0x00",
            "Subsystem ID": "0x74a0", "GUID": "46363", "Card Series": "AMD Instinct MI300A",
            "Card Model": "0x74a0", "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
            "Card SKU": "N/A", "Node ID": "4", "GFX Version": "gfx942"}  # fmt: skip
    text = json.dumps({"card0": card, "card1": dict(card, GUID="46186")})
    assert amd.parse_product_names(text) == [amd.ProductName("AMD Instinct MI300A", "gfx942")] * 2


def test_product_names_of_rocm_5_with_lower_case_keys_and_6_0_decimal_gfx():
    rocm5 = {"card0": {"Card series": "Arcturus GL-XL [AMD Instinct MI100]",
                       "Card model": "0x0c34", "Card SKU": "D34316"}}  # fmt: skip
    assert amd.parse_product_names(json.dumps(rocm5)) == [
        amd.ProductName("Arcturus GL-XL [AMD Instinct MI100]", None)
    ]
    rocm60 = {"card0": {"Card Series": "AMD INSTINCT MI250 (MCM) OAM AC MBA",
                        "Card Model": "0x740c", "GFX Version": "gfx9010"},
              "system": {"Driver version": "6.2.4"}}  # fmt: skip
    assert amd.parse_product_names(json.dumps(rocm60)) == [
        amd.ProductName("AMD INSTINCT MI250 (MCM) OAM AC MBA", "gfx90a")
    ]


def test_product_names_without_a_usable_series():
    # ROCm 4.0 printed the PCI id as the series; some hosts print N/A.
    text = json.dumps({"card0": {"Card series": "0x738c"},
                       "card1": {"Card series": "N/A", "Card model": "0x74a1"},
                       "card2": {"Card Series": "N/A", "Device Name": "AMD Instinct MI210"}})  # fmt: skip
    assert [p.model for p in amd.parse_product_names(text)] == [None, None, "AMD Instinct MI210"]


def test_product_names_in_card_number_order_and_around_warnings():
    cards = {f"card{i}": {"Card Series": f"GPU {i}"} for i in (10, 2, 9, 0, 1)}
    text = "WARNING: AMD GPU device(s) is/are in a low-power state.\n" + json.dumps(cards) + "\n\n"
    names = [p.model for p in amd.parse_product_names(text)]
    assert names == ["GPU 0", "GPU 1", "GPU 2", "GPU 9", "GPU 10"]
    with pytest.raises(ValueError):
        amd.parse_product_names("ERROR:root:Driver not initialized (amdgpu not found in modules)")
    with pytest.raises(ValueError):
        amd.parse_product_names('{"card0": ')


# ----------------------------------------------------------------------------- AMD detector


def test_amd_mi210():
    finding = amd.detect(root("mi210"))
    assert finding.gpus == [
        Gpu(vendor="amd", model="AMD Instinct MI210", memory_mib=65520, gfx="gfx90a",
            pci_bus_id="0000:43:00.0", device_id="0x740f", render_node="/dev/dri/renderD128")
    ]  # fmt: skip
    assert finding.facts == AmdFacts(
        rocm_version="6.1.2", kfd=True, render_nodes=["/dev/dri/renderD128"]
    )
    assert finding.warnings == []


def test_amd_mi300x():
    finding = amd.detect(root("mi300x"))
    renders = [f"/dev/dri/renderD{128 + 8 * i}" for i in range(8)]
    assert [g.model for g in finding.gpus] == ["AMD Instinct MI300X"] * 8
    assert {(g.gfx, g.memory_mib, g.device_id) for g in finding.gpus} == {
        ("gfx942", 196592, "0x74a1")
    }
    assert [g.render_node for g in finding.gpus] == renders
    assert [g.pci_bus_id for g in finding.gpus][:2] == ["0000:05:00.0", "0000:26:00.0"]
    assert finding.facts == AmdFacts(rocm_version="6.2.4", kfd=True, render_nodes=renders)
    assert finding.warnings == []


def test_amd_gpu_without_rocm_userspace():
    finding = amd.detect(root("amd-no-rocm"))
    assert finding.gpus == [
        Gpu(vendor="amd", model="AMD GPU gfx1100", memory_mib=24560, gfx="gfx1100",
            pci_bus_id="0000:03:00.0", device_id="0x744c", render_node="/dev/dri/renderD128")
    ]  # fmt: skip
    assert finding.facts == AmdFacts(
        rocm_version=None, kfd=True, render_nodes=["/dev/dri/renderD128"]
    )
    assert finding.warnings == []


@pytest.mark.parametrize("name", sorted(set(ALL_ROOTS) - AMD_ROOTS))
def test_amd_finds_nothing_elsewhere(name):
    finding = amd.detect(root(name))
    assert (finding.gpus, finding.facts, finding.warnings) == ([], None, [])


def test_amd_gpu_without_dev_kfd_warns(tmp_path):
    path = copy_root(tmp_path, "mi210")
    (path / "dev/kfd").unlink()
    finding = amd.detect(HostRoot(str(path)))
    assert finding.facts is not None and finding.facts.kfd is False
    assert len(finding.gpus) == 1
    assert len(finding.warnings) == 1
    assert "/dev/kfd is missing" in finding.warnings[0]


def test_amd_only_cpu_nodes_is_nothing(tmp_path):
    path = copy_root(tmp_path, "mi210")
    shutil.rmtree(path / "sys/class/kfd/kfd/topology/nodes/1")
    finding = amd.detect(HostRoot(str(path)))
    assert (finding.gpus, finding.facts, finding.warnings) == ([], None, [])


def test_amd_malformed_files_warn_and_go_on(tmp_path):
    path = copy_root(tmp_path, "mi300x")
    nodes = path / "sys/class/kfd/kfd/topology/nodes"
    (nodes / "3/properties").write_text("simd_count 1216\nthis is not a property\n")
    (nodes / "4/mem_banks/0/properties").write_text("heap_type 1\n")
    (path / "opt/rocm/.info/version").write_text("unknown\n")
    finding = amd.detect(HostRoot(str(path)))
    assert len(finding.gpus) == 7
    assert finding.gpus[1].memory_mib is None
    text = "\n".join(finding.warnings)
    assert "nodes/3/properties: line 2" in text and "skipped KFD node 3" in text
    assert "nodes/4/mem_banks/0/properties: it has no size_in_bytes line" in text
    assert "/opt/rocm/.info/version holds 'unknown'" in text
    # One GPU fewer in KFD than rocm-smi lists: names can no longer be matched by order.
    assert "lists 8 GPU(s) but the KFD topology has 7" in text
    assert {g.model for g in finding.gpus} == {"AMD GPU gfx942"}
    assert finding.facts is not None and finding.facts.rocm_version is None


def test_amd_rocm_6_0_decimal_gfx_matches_kfd(tmp_path):
    path = copy_root(tmp_path, "mi210")
    rocm_smi(
        path, json.dumps({"card0": {"Card Series": "AMD Instinct MI210", "GFX Version": "gfx9010"}})
    )
    finding = amd.detect(HostRoot(str(path)))
    assert [g.model for g in finding.gpus] == ["AMD Instinct MI210"]
    assert finding.warnings == []


def test_amd_name_with_another_gfx_is_not_used(tmp_path):
    path = copy_root(tmp_path, "mi210")
    rocm_smi(
        path, json.dumps({"card0": {"Card Series": "AMD Instinct MI300X", "GFX Version": "gfx942"}})
    )
    finding = amd.detect(HostRoot(str(path)))
    assert [g.model for g in finding.gpus] == ["AMD GPU gfx90a"]
    assert finding.warnings == [
        "rocm-smi --showproductname --json says card0 is gfx942 but KFD says gfx90a; "
        "not using its name"
    ]


def test_amd_rocm_smi_failing(tmp_path):
    path = copy_root(tmp_path, "mi210")
    rocm_smi(path, "ERROR:root:Driver not initialized (amdgpu not found in modules)", status=1)
    finding = amd.detect(HostRoot(str(path)))
    assert [g.model for g in finding.gpus] == ["AMD GPU gfx90a"]
    assert len(finding.warnings) == 1
    assert "exited with status 1" in finding.warnings[0]
    assert "Driver not initialized" in finding.warnings[0]


class HungRoot(HostRoot):
    def run(self, program: str, args: Sequence[str], timeout: float = 5.0) -> ProgramResult:
        raise ProgramHung(f"/usr/bin/{program} did not finish within 5s and was killed")


def test_amd_rocm_smi_hanging():
    finding = amd.detect(HungRoot(str(ROOTS / "mi210")))
    assert [g.model for g in finding.gpus] == ["AMD GPU gfx90a"]
    assert finding.warnings == [
        "/usr/bin/rocm-smi did not finish within 5s and was killed; "
        "AMD GPUs are named by their gfx target"
    ]
    assert finding.facts is not None and finding.facts.rocm_version == "6.1.2"


def test_amd_rocm_smi_without_opt_rocm(tmp_path):
    path = copy_root(tmp_path, "mi210")
    shutil.rmtree(path / "opt")
    finding = amd.detect(HostRoot(str(path)))
    assert finding.facts is not None and finding.facts.rocm_version is None
    assert finding.warnings == [
        "/usr/bin/rocm-smi is installed but /opt/rocm/.info/version is missing, so the ROCm "
        "version is unknown (a distribution's rocm-smi package?)"
    ]


# ----------------------------------------------------------------------------- Jetson parsers


@pytest.mark.parametrize(
    "text, l4t",
    [
        ("# R35 (release), REVISION: 3.1, GCID: 32790763, BOARD: t186ref, EABI: aarch64, "
         "DATE: Wed Mar 15 07:54:12 UTC 2023\n", "35.3.1"),
        ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
         "DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n"
         "TARGET_USERSPACE_LIB_DIR=nvidia\n", "36.4.3"),
        ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64\n", "32.7.1"),
        ("# R36 (release), REVISION: 4\n", "36.4.0"),
        ("R35.3.1\n", None),
        ("# KERNEL_VARIANT: oot\n# R36 (release), REVISION: 4.3\n", None),
        ("", None),
    ],
)  # fmt: skip
def test_nv_tegra_release(text, l4t):
    assert jetson.parse_nv_tegra_release(text) == l4t


STATUS = """\
Package: libc6
Status: install ok installed
Architecture: arm64
Version: 2.35-0ubuntu3.9
Description: GNU C Library: Shared libraries
 Version: 9.9.9 is a continuation line, not a field

Package: nvidia-l4t-core
Status: install ok installed
Architecture: arm64
Version: 36.4.3-20250107174145
Conffiles:
 /etc/ld.so.conf.d/nvidia-tegra.conf 0a3a3a84c1b2ac3ea7e5e3e7c3a2b61f
Description: NVIDIA Core Package
"""


def test_dpkg_status():
    assert jetson.parse_dpkg_version(STATUS) == "36.4.3-20250107174145"
    assert jetson.parse_dpkg_version(STATUS, "libc6") == "2.35-0ubuntu3.9"
    assert jetson.parse_dpkg_version(STATUS, "nvidia-l4t-cuda") is None
    removed = STATUS.replace("install ok installed\nArchitecture: arm64\nVersion: 36",
                             "deinstall ok config-files\nArchitecture: arm64\nVersion: 36")  # fmt: skip
    assert jetson.parse_dpkg_version(removed) is None
    assert jetson.parse_dpkg_version("") is None


@pytest.mark.parametrize(
    "version, l4t",
    [("36.4.3-20250107174145", "36.4.3"), ("32.7.1-20220219090432", "32.7.1"),
     ("1:35.4.1-20230801124926", "35.4.1"), ("36.4", "36.4"), ("r36.4.3", None), ("", None)],
)  # fmt: skip
def test_l4t_from_package_version(version, l4t):
    assert jetson.l4t_from_package_version(version) == l4t


def test_device_tree_strings():
    assert jetson.parse_dt_string(b"NVIDIA Jetson Nano Developer Kit\0") == (
        "NVIDIA Jetson Nano Developer Kit"
    )
    assert jetson.parse_dt_string(b"\0") is None
    orin = b"nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0nvidia,tegra23x\0"
    entries = jetson.parse_dt_string_list(orin)
    assert entries[-1] == "nvidia,tegra23x"
    assert jetson.soc_from_compatible(entries) == "tegra234"
    assert jetson.soc_from_compatible(["raspberrypi,4-model-b", "brcm,bcm2711"]) is None


def test_mem_total():
    meminfo = "MemTotal:        4059240 kB\nMemFree:          313692 kB\n"
    assert jetson.parse_mem_total_mib(meminfo) == 3964
    assert jetson.parse_mem_total_mib("MemFree: 1 kB\n") is None


# ----------------------------------------------------------------------------- Jetson detector


JETSONS = {
    "jetson-nano": (
        JetsonFacts("32.7.1", "4.6.1", "tegra210", "NVIDIA Jetson Nano Developer Kit",
                    "nv_tegra_release"),
        Gpu("nvidia", "NVIDIA Jetson Nano Developer Kit", memory_mib=3964, compute_capability="5.3"),
    ),
    "jetson-xavier": (
        JetsonFacts("35.4.1", "5.1.2", "tegra194", "Jetson-AGX", "nv_tegra_release"),
        Gpu("nvidia", "Jetson-AGX", memory_mib=15692, compute_capability="7.2"),
    ),
    "jetson-orin": (
        JetsonFacts("36.3.0", "6.0", "tegra234", "NVIDIA Jetson AGX Orin Developer Kit",
                    "nv_tegra_release"),
        Gpu("nvidia", "NVIDIA Jetson AGX Orin Developer Kit", memory_mib=62800,
            compute_capability="8.7"),
    ),
    "jetson-orin-no-release": (
        JetsonFacts("36.4.3", "6.2", "tegra234",
                    "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "dpkg"),
        Gpu("nvidia", "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
            memory_mib=7454, compute_capability="8.7"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(JETSONS))
def test_jetson(name):
    facts, gpu = JETSONS[name]
    finding = jetson.detect(root(name))
    assert (finding.facts, finding.gpus, finding.warnings) == (facts, [gpu], [])


@pytest.mark.parametrize("name", sorted(set(ALL_ROOTS) - JETSON_ROOTS))
def test_jetson_finds_nothing_elsewhere(name):
    finding = jetson.detect(root(name))
    assert (finding.gpus, finding.facts, finding.warnings) == ([], None, [])


def test_jetson_malformed_release_falls_back_to_dpkg(tmp_path):
    path = copy_root(tmp_path, "jetson-orin")
    (path / "etc/nv_tegra_release").write_text("R36.3.0\n")
    finding = jetson.detect(HostRoot(str(path)))
    assert finding.facts is not None
    assert (finding.facts.l4t, finding.facts.source) == ("36.3.0", "dpkg")
    assert len(finding.warnings) == 1
    assert finding.warnings[0].startswith("/etc/nv_tegra_release: the first line 'R36.3.0'")


def test_jetson_release_and_package_disagree(tmp_path):
    path = copy_root(tmp_path, "jetson-xavier")
    status = path / "var/lib/dpkg/status"
    status.write_text(status.read_text().replace("35.4.1-2023", "35.5.0-2024"))
    finding = jetson.detect(HostRoot(str(path)))
    assert finding.facts is not None and finding.facts.l4t == "35.4.1"
    assert finding.warnings == [
        "L4T releases disagree: /etc/nv_tegra_release says 35.4.1, the installed "
        "nvidia-l4t-core says 35.5.0 (an interrupted upgrade?); using 35.4.1"
    ]


def test_tegra_without_l4t_warns_and_reports_nothing(tmp_path):
    path = copy_root(tmp_path, "jetson-orin-no-release")
    (path / "var/lib/dpkg/status").unlink()
    finding = jetson.detect(HostRoot(str(path)))
    assert (finding.gpus, finding.facts) == ([], None)
    assert len(finding.warnings) == 1
    assert "looks like an NVIDIA Jetson (SoC tegra234) but no L4T release" in finding.warnings[0]


def test_jetson_unknown_soc_and_sysfs_device_tree(tmp_path):
    # A Thor (tegra264) whose device tree is only visible under /sys, without /proc/meminfo.
    path = tmp_path / "thor"
    (path / "etc").mkdir(parents=True)
    (path / "etc/nv_tegra_release").write_text("# R38 (release), REVISION: 2.0, GCID: 1\n")
    base = path / "sys/firmware/devicetree/base"
    base.mkdir(parents=True)
    (base / "compatible").write_bytes(
        b"nvidia,p4071-0000+p3834-0008\0nvidia,p3834-0008\0nvidia,tegra264\0"
    )
    finding = jetson.detect(HostRoot(str(path)))
    assert finding.facts == JetsonFacts("38.2.0", None, "tegra264", None, "nv_tegra_release")
    assert finding.gpus == [Gpu("nvidia", "NVIDIA Jetson")]
    assert finding.warnings == [
        "SoC tegra264 is not in the agent's Jetson table; its CUDA compute capability is unknown"
    ]


def test_jetson_meminfo_without_mem_total_warns(tmp_path):
    path = copy_root(tmp_path, "jetson-nano")
    (path / "proc/meminfo").write_text("MemFree: 1 kB\n")
    finding = jetson.detect(HostRoot(str(path)))
    assert finding.gpus[0].memory_mib is None
    assert finding.warnings == [
        "/proc/meminfo has no 'MemTotal: N kB' line; the Jetson's memory is unknown"
    ]


# ----------------------------------------------------------------------------- DRM


@pytest.mark.parametrize(
    "text, pci_id", [("0x8086\n", "0x8086"), ("0x10DE", "0x10de"), ("8086", None), ("", None)]
)
def test_pci_ids(text, pci_id):
    assert drm.parse_pci_id(text) == pci_id


def test_vendor_names():
    assert [drm.vendor_name(v) for v in ("0x10de", "0x1002", "0x8086", "0x1a03")] == [
        "nvidia", "amd", "intel", "other",
    ]  # fmt: skip


ASPEED = DrmCard("card0", "other", "0x1a03", "0x2000", None)
DRM_CARDS = {
    "mi210": [ASPEED, DrmCard("card1", "amd", "0x1002", "0x740f", "/dev/dri/renderD128")],
    "mi300x": [ASPEED]
    + [DrmCard(f"card{1 + i}", "amd", "0x1002", "0x74a1", f"/dev/dri/renderD{128 + 8 * i}")
       for i in range(8)],  # card9, a partition device without a PCI vendor, is left out
    "amd-no-rocm": [DrmCard("card1", "amd", "0x1002", "0x744c", "/dev/dri/renderD128")],
    "intel-arc": [
        DrmCard("card0", "intel", "0x8086", "0x4692", "/dev/dri/renderD128"),
        DrmCard("card1", "intel", "0x8086", "0x56a0", "/dev/dri/renderD129"),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", ALL_ROOTS)
def test_drm_cards(name):
    assert drm.detect(root(name)) == DRM_CARDS.get(name, [])


def test_other_gpus_intel():
    assert drm.other_gpus(drm.detect(root("intel-arc")), set()) == [
        Gpu("intel", "Intel GPU 0x4692", device_id="0x4692", render_node="/dev/dri/renderD128"),
        Gpu("intel", "Intel GPU 0x56a0", device_id="0x56a0", render_node="/dev/dri/renderD129"),
    ]


def test_other_gpus_skips_known_vendors_and_display_chips():
    cards = drm.detect(root("mi300x"))
    assert drm.other_gpus(cards, {"amd"}) == []
    # Without the AMD detector's answer (no KFD), the cards still count, the BMC chip never.
    unknown = drm.other_gpus(cards, set())
    assert len(unknown) == 8
    assert unknown[0] == Gpu("amd", "AMD GPU 0x74a1", device_id="0x74a1",
                             render_node="/dev/dri/renderD128")  # fmt: skip


def test_other_gpus_unknown_vendor():
    card = DrmCard("card0", "other", "0x1ed5", "0x0200", None)
    assert drm.other_gpus([card], {"nvidia"}) == [
        Gpu("other", "GPU 0x1ed5:0x0200", device_id="0x0200")
    ]


# ----------------------------------------------------------------------------- lab roots


def lab_root(tmp_path: Path, **profile) -> HostRoot:
    """The root the lab writes for a simulated host (controller/lab/hardware.py)."""
    from mlfleet.controller.lab.hardware import render_root, write_root
    from mlfleet.controller.lab.profiles import HostProfile

    path = tmp_path / profile["name"]
    write_root(path, render_root(HostProfile(**profile)))
    return HostRoot(str(path))


@pytest.mark.parametrize("rocm, quirk", [("6.1.2", "gfx90a"), ("6.0.2", "gfx9010")])
def test_lab_amd_host(tmp_path, rocm, quirk):
    from mlfleet.controller.lab.profiles import GpuSpec

    mi210 = GpuSpec(vendor="amd", model="AMD Instinct MI210", memory_mib=65520, gfx="gfx90a")
    host = lab_root(tmp_path, name="edge-mi210", gpus=(mi210,), rocm=rocm)
    smi = host.run("rocm-smi", amd.PRODUCT_ARGS)
    assert smi is not None and quirk in smi.stdout  # the stand-in prints this release's form
    finding = amd.detect(host)
    assert finding.gpus == [
        Gpu(vendor="amd", model="AMD Instinct MI210", memory_mib=65520, gfx="gfx90a",
            device_id="0x740f", render_node="/dev/dri/renderD128")
    ]  # fmt: skip
    assert finding.facts == AmdFacts(rocm, True, ["/dev/dri/renderD128"])
    assert finding.warnings == []
    cards = drm.detect(host)
    assert cards == [DrmCard("card0", "amd", "0x1002", "0x740f", "/dev/dri/renderD128")]
    assert drm.other_gpus(cards, {"amd"}) == []


@pytest.mark.parametrize("release_file, source", [(True, "nv_tegra_release"), (False, "dpkg")])
def test_lab_jetson_host(tmp_path, release_file, source):
    from mlfleet.controller.lab.profiles import JetsonSpec

    spec = JetsonSpec(l4t="36.4.3", soc="tegra234", model="NVIDIA Jetson AGX Orin Developer Kit",
                      release_file=release_file)  # fmt: skip
    finding = jetson.detect(lab_root(tmp_path, name="edge-orin", jetson=spec))
    assert finding.facts == JetsonFacts(
        "36.4.3", "6.2", "tegra234", "NVIDIA Jetson AGX Orin Developer Kit", source
    )
    assert [(g.model, g.compute_capability) for g in finding.gpus] == [
        ("NVIDIA Jetson AGX Orin Developer Kit", "8.7")
    ]
    assert finding.warnings == []


def test_lab_mixed_host_drm(tmp_path):
    from mlfleet.controller.lab.profiles import GpuSpec

    gpus = (
        GpuSpec(vendor="nvidia", model="NVIDIA A100-SXM4-80GB", memory_mib=81920,
                compute_capability="8.0"),
        GpuSpec(vendor="intel", model="Intel Arc A770", memory_mib=16384),
    )  # fmt: skip
    host = lab_root(tmp_path, name="edge-mixed", gpus=gpus)
    cards: List[DrmCard] = drm.detect(host)
    assert [(c.card, c.vendor, c.render_node) for c in cards] == [
        ("card0", "nvidia", "/dev/dri/renderD128"),
        ("card1", "intel", "/dev/dri/renderD129"),
    ]
    assert [g.model for g in drm.other_gpus(cards, {"nvidia"})] == ["Intel GPU 0x56a0"]
