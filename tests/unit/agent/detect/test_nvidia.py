"""NVIDIA detection on real output formats: parsers, then the detector on fixture roots."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlfleet.agent.detect import nvidia
from mlfleet.agent.detect.finding import Finding
from mlfleet.agent.facts import NvidiaFacts
from mlfleet.agent.hostroot import HostRoot
from tests.paths import FIXTURES

ROOTS = FIXTURES / "roots"


def root(name: str, timeout: float = 30.0) -> HostRoot:
    return HostRoot(str(ROOTS / name), program_timeout=timeout)


def nvidia_facts(found: Finding[NvidiaFacts]) -> NvidiaFacts:
    """The driver facts of a root that has an NVIDIA driver."""
    assert found.facts is not None, f"no NVIDIA facts found (warnings: {found.warnings})"
    return found.facts


def test_banner_versions_in_old_and_new_layouts():
    old = "| NVIDIA-SMI 470.182.03   Driver Version: 470.182.03   CUDA Version: 11.4     |"
    new = "| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |"
    newest = "| NVIDIA-SMI 610.43.03     KMD Version: 610.43.03     CUDA UMD Version: 13.2 |"
    assert nvidia.parse_smi_banner(old) == ("470.182.03", "11.4")
    assert nvidia.parse_smi_banner(new) == ("550.54.15", "12.4")
    assert nvidia.parse_smi_banner(newest) == ("610.43.03", "13.2")


def test_proc_version_both_kernel_module_wordings():
    proprietary = (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.146.02  Thu Dec 19 18:56:32 UTC 2023"
    )
    open_ = (
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  565.57.01  Release Build  "
        "(dvs-builder@U16-A24-9-2)  Thu Oct 10 12:15:00 UTC 2024"
    )
    assert nvidia.parse_proc_version(proprietary) == ("535.146.02", "proprietary")
    assert nvidia.parse_proc_version(open_) == ("565.57.01", "open")
    assert nvidia.parse_proc_version("garbage") == (None, None)
    assert nvidia.parse_sys_version("535.146.02\n") == "535.146.02"
    assert nvidia.parse_sys_version("") is None


def test_query_rows_and_a_wrong_field_count():
    fields = ["index", "name", "memory.total", "compute_cap"]
    rows = nvidia.parse_smi_query("0, Tesla T4, 15360, 7.5\n", fields)
    assert rows == [
        {"index": "0", "name": "Tesla T4", "memory.total": "15360", "compute_cap": "7.5"}
    ]
    with pytest.raises(ValueError):
        nvidia.parse_smi_query("0, Tesla T4\n", fields)


def test_nvml_cuda_version_encoding():
    assert nvidia.cuda_from_nvml(12040) == "12.4"
    assert nvidia.cuda_from_nvml(11040) == "11.4"


def test_a100_on_550():
    found = nvidia.detect(root("a100-550"))
    facts = nvidia_facts(found)
    assert facts.driver_version == "550.54.15"
    assert facts.cuda_version == "12.4"
    assert facts.source == "nvidia-smi" and facts.kernel_module == "proprietary"
    assert [(g.model, g.memory_mib, g.compute_capability) for g in found.gpus] == [
        ("NVIDIA A100-SXM4-80GB", 81920, "8.0"),
        ("NVIDIA A100-SXM4-80GB", 81920, "8.0"),
    ]
    assert found.gpus[1].pci_bus_id == "00000000:0F:00.0"
    assert found.warnings == []


def test_h100_with_the_open_kernel_module():
    found = nvidia.detect(root("h100-565-open"))
    facts = nvidia_facts(found)
    assert facts.kernel_module == "open"
    assert facts.cuda_version == "12.7"
    assert found.gpus[0].compute_capability == "9.0" and found.gpus[0].memory_mib == 81559


def test_t4_on_470_retries_without_compute_cap():
    found = nvidia.detect(root("t4-470"))
    facts = nvidia_facts(found)
    assert facts.driver_version == "470.182.03" and facts.cuda_version == "11.4"
    gpu = found.gpus[0]
    assert (gpu.model, gpu.memory_mib, gpu.compute_capability) == ("Tesla T4", 15109, "7.5")
    assert any("cannot report compute capability" in w for w in found.warnings)


def test_driver_library_mismatch_is_reported_as_exactly_that():
    found = nvidia.detect(root("nvidia-mismatch"))
    facts = nvidia_facts(found)
    assert "Failed to initialize NVML: Driver/library version mismatch" in found.warnings
    assert facts.error == "Failed to initialize NVML: Driver/library version mismatch"
    assert facts.driver_version == "550.54.15" and facts.source == "kernel-module"
    assert len(found.gpus) == 1


def test_a_hung_nvidia_smi_is_killed_and_the_version_files_answer():
    found = nvidia.detect(root("nvidia-hung", timeout=1.0))
    facts = nvidia_facts(found)
    assert any("did not finish within 1s and was killed" in w for w in found.warnings)
    assert facts.driver_version == "535.146.02" and facts.cuda_version == "12.2"
    assert facts.source == "kernel-module"


def test_version_files_only():
    found = nvidia.detect(root("nvidia-files-only"))
    facts = nvidia_facts(found)
    assert facts.driver_version == "535.146.02" and facts.cuda_version == "12.2"
    assert [g.model for g in found.gpus] == ["NVIDIA GPU (model unknown)"]


def test_no_nvidia_at_all(tmp_path: Path):
    found = nvidia.detect(HostRoot(str(tmp_path)))
    assert found.facts is None and found.gpus == [] and found.warnings == []


def test_model_table_for_compute_capability():
    assert nvidia.compute_capability_for_model("Tesla T4") == "7.5"
    assert nvidia.compute_capability_for_model("NVIDIA GeForce RTX 4090") == "8.9"
    assert nvidia.compute_capability_for_model("Mystery GPU") is None


def test_nvml_is_tried_only_where_an_nvidia_driver_shows(tmp_path):
    # A host without NVIDIA hardware does not pay for importing and loading NVML.
    bare = HostRoot(str(tmp_path))
    assert not nvidia._driver_present(bare, None)
    assert nvidia._driver_present(bare, "550.54.15")  # the kernel module's version file
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "dxg").touch()  # WSL2: the driver without module files
    assert nvidia._driver_present(bare, None)
