"""Variant parsing and selection against host facts built in memory (pure, no I/O)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from mlfleet.agent.facts import (
    SCHEMA,
    AmdFacts,
    DockerFacts,
    Gpu,
    HostFacts,
    JetsonFacts,
    NvidiaFacts,
    OsFacts,
)
from mlfleet.agent.selection import Selection, select_variant
from mlfleet.agent.variants import Variant, VariantError, parse_variants

# The example list from the issue, as a playbook's YAML would load it.
ISSUE_VARIANTS: List[Dict[str, Any]] = [
    {"name": "cuda12", "gpu": "nvidia", "cuda": "12.2", "min_compute_capability": "7.0", "arch": ["x86_64"]},
    {"name": "cuda11", "gpu": "nvidia", "cuda": "11.8"},
    {"name": "jetson6", "gpu": "nvidia", "platform": "jetson", "l4t": "36.4"},
    {"name": "rocm", "gpu": "amd", "rocm": "6.0", "gfx": ["gfx90a", "gfx942"]},
    {"name": "cpu"},
]  # fmt: skip

TOOLKIT_NOT_FOUND = (
    "no nvidia-container-runtime-hook on its PATH, no nvidia runtime, no CDI spec"
    " (install the NVIDIA container toolkit)"
)


# --- Host factories ------------------------------------------------------------------------


def docker(*gpu_support: str, runtimes: Optional[List[str]] = None) -> DockerFacts:
    return DockerFacts(
        reachable=True,
        host="unix:///var/run/docker.sock",
        version="20.10.24",
        runtimes=runtimes or ["runc"],
        gpu_support=list(gpu_support),
    )


def host(
    arch: str = "x86_64",
    gpus: Optional[List[Gpu]] = None,
    engine: Optional[DockerFacts] = None,
    **vendor: Any,
) -> HostFacts:
    """A host with the given GPUs and vendor facts (nvidia=, amd=, jetson=)."""
    return HostFacts(
        schema=SCHEMA,
        hostname="edge-1",
        arch=arch,
        os=OsFacts(id="debian", version_id="12", pretty_name="Debian 12", kernel="6.1.0"),
        cpus=8,
        memory_mib=32768,
        python="3.11.2",
        root="/",
        gpus=gpus or [],
        docker=engine if engine is not None else docker(),
        **vendor,
    )


def nvidia_gpu(model: str, cc: Optional[str], memory_mib: int = 16384) -> Gpu:
    return Gpu(vendor="nvidia", model=model, memory_mib=memory_mib, compute_capability=cc)


def nvidia_host(
    driver: Optional[str],
    gpus: List[Gpu],
    toolkit: bool = True,
    error: Optional[str] = None,
    arch: str = "x86_64",
) -> HostFacts:
    return host(
        arch=arch,
        gpus=gpus,
        engine=docker("nvidia") if toolkit else docker(),
        nvidia=NvidiaFacts(driver_version=driver, cuda_version=None, source="nvml", error=error),
    )


def a100_host() -> HostFacts:
    gpu = nvidia_gpu("NVIDIA A100-SXM4-80GB", "8.0", 81920)
    return nvidia_host("550.54.15", [gpu, gpu])


def t4_host(driver: str = "470.182.03") -> HostFacts:
    return nvidia_host(driver, [nvidia_gpu("Tesla T4", "7.5", 15360)])


def rtx4090_host(toolkit: bool) -> HostFacts:
    gpu = nvidia_gpu("NVIDIA GeForce RTX 4090", "8.9", 24564)
    return nvidia_host("535.183.01", [gpu], toolkit=toolkit)


def amd_host(gfx: str = "gfx90a", rocm: Optional[str] = "6.1.2", kfd: bool = True) -> HostFacts:
    gpu = Gpu(vendor="amd", model="AMD Instinct MI210", memory_mib=65520, gfx=gfx)
    return host(
        gpus=[gpu],
        engine=docker("amd"),
        amd=AmdFacts(rocm_version=rocm, kfd=kfd, render_nodes=["/dev/dri/renderD128"]),
    )


def jetson_host(l4t: str = "36.4.3", runtime: bool = True) -> HostFacts:
    return host(
        arch="aarch64",
        engine=docker("nvidia-runtime", runtimes=["runc", "nvidia"]) if runtime else docker(),
        jetson=JetsonFacts(
            l4t=l4t,
            jetpack="6.2",
            soc="tegra234",
            model="NVIDIA Jetson AGX Orin Developer Kit",
            source="nv_tegra_release",
        ),
    )


def cpu_host(arch: str = "x86_64") -> HostFacts:
    return host(arch=arch)


def select(items: List[Dict[str, Any]], facts: HostFacts) -> Selection:
    return select_variant(parse_variants(items), facts)


def reasons(selection: Selection) -> Dict[str, str]:
    return {r.variant: r.reason for r in selection.rejected}


def nvidia_variant(cuda: str, **extra: Any) -> Dict[str, Any]:
    return {"name": "img", "gpu": "nvidia", "cuda": cuda, **extra}


# --- The issue's example list --------------------------------------------------------------


def test_two_a100s_on_driver_550_take_cuda12():
    selection = select(ISSUE_VARIANTS, a100_host())
    assert selection.to_dict() == {"variant": "cuda12", "rejected": [], "warnings": [], "notes": []}


def test_t4_on_driver_470_takes_cuda11_and_says_why_not_cuda12():
    selection = select(ISSUE_VARIANTS, t4_host())
    assert selection.variant == "cuda11"
    assert reasons(selection) == {
        "cuda12": "driver 470.182.03 supports CUDA <= 11.4; variant cuda12 is built with CUDA 12.2"
        " (needs driver >= 525 with minor-version compatibility)"
    }
    # 11.8 on a 470 driver runs only thanks to minor-version compatibility: say so.
    assert selection.notes == [
        "driver 470.182.03 supports CUDA <= 11.4; variant cuda11 (CUDA 11.8) relies on"
        " minor-version compatibility (no JIT of newer PTX)"
    ]
    assert selection.warnings == []


def test_rtx4090_without_toolkit_falls_back_to_cpu_with_a_warning():
    selection = select(ISSUE_VARIANTS, rtx4090_host(toolkit=False))
    assert selection.variant == "cpu"
    not_usable = (
        "NVIDIA GeForce RTX 4090 is present but the Docker engine cannot use it: "
        + TOOLKIT_NOT_FOUND
    )
    assert reasons(selection) == {
        "cuda12": not_usable,
        "cuda11": not_usable,
        "jetson6": "host has a discrete NVIDIA GPU, not a Jetson; variant is an L4T 36.4 image",
        "rocm": "no AMD GPU on this host",
    }
    assert selection.warnings == [not_usable + "; NVIDIA GPU variants were skipped"]


def test_rtx4090_with_toolkit_takes_cuda12():
    assert select(ISSUE_VARIANTS, rtx4090_host(toolkit=True)).variant == "cuda12"


def test_mi210_with_rocm_takes_the_rocm_image():
    selection = select(ISSUE_VARIANTS, amd_host())
    assert selection.variant == "rocm"
    assert reasons(selection) == {
        "cuda12": "no NVIDIA GPU on this host",
        "cuda11": "no NVIDIA GPU on this host",
        "jetson6": "host is not a Jetson (no L4T release found); variant is built for L4T 36.4",
    }
    assert selection.notes == [] and selection.warnings == []


def test_cpu_host_takes_cpu():
    selection = select(ISSUE_VARIANTS, cpu_host())
    assert selection.variant == "cpu"
    assert [r.variant for r in selection.rejected] == ["cuda12", "cuda11", "jetson6", "rocm"]
    assert selection.warnings == []


def test_jetson_orin_on_l4t_36_4_3_takes_jetson6():
    selection = select(ISSUE_VARIANTS, jetson_host("36.4.3"))
    assert selection.variant == "jetson6"
    assert reasons(selection) == {
        "cuda12": "host is aarch64; variant is built for x86_64; host is a Jetson (L4T 36.4.3);"
        " variant is a discrete-GPU image",
        "cuda11": "host is a Jetson (L4T 36.4.3); variant is a discrete-GPU image",
    }


def test_jetson_below_36_4_does_not_take_a_36_4_image():
    selection = select(ISSUE_VARIANTS, jetson_host("36.3.0"))
    assert selection.variant == "cpu"
    assert reasons(selection)["jetson6"] == (
        "host runs L4T 36.3.0; variant's L4T 36.4 needs a host 36.4 or newer"
    )


def test_jetson_without_nvidia_runtime_warns():
    selection = select(ISSUE_VARIANTS, jetson_host(runtime=False))
    assert selection.variant == "cpu"
    assert reasons(selection)["jetson6"].startswith(
        "NVIDIA Jetson AGX Orin Developer Kit is present but the Docker engine cannot use it:"
        " no nvidia runtime"
    )
    assert len(selection.warnings) == 1


# --- CUDA driver boundaries ----------------------------------------------------------------


def test_driver_525_60_13_runs_12_2_only_with_minor_compat():
    facts = t4_host("525.60.13")
    assert select([nvidia_variant("12.2")], facts).variant == "img"
    selection = select([nvidia_variant("12.2", cuda_minor_compat=False)], facts)
    assert selection.variant is None
    assert reasons(selection) == {
        "img": "driver 525.60.13 supports CUDA <= 12.0; variant img is built with CUDA 12.2"
        " (needs driver >= 535.54.03; minor-version compatibility is off for this variant)"
    }


def test_driver_520_runs_11_8_but_no_12_x():
    facts = t4_host("520.61.05")
    selection = select([nvidia_variant("12.0"), {**nvidia_variant("11.8"), "name": "old"}], facts)
    assert selection.variant == "old"
    assert reasons(selection) == {
        "img": "driver 520.61.05 supports CUDA <= 11.8; variant img is built with CUDA 12.0"
        " (needs driver >= 525 with minor-version compatibility)"
    }
    assert selection.notes == []  # 11.8 is fully supported by 520.61.05


def test_driver_older_than_the_table():
    selection = select([nvidia_variant("11.0")], t4_host("440.33.01"))
    assert reasons(selection)["img"] == (
        "driver 440.33.01 is older than any CUDA 11 driver; variant img is built with CUDA 11.0"
        " (needs driver >= 450.80.02 with minor-version compatibility)"
    )


def test_driver_library_mismatch_rejects_nvidia_images():
    facts = nvidia_host(
        "535.183.01", [nvidia_gpu("Tesla T4", None)], error="driver/library version mismatch"
    )
    selection = select(ISSUE_VARIANTS, facts)
    assert selection.variant == "cpu"
    assert reasons(selection)["cuda11"] == (
        "the NVIDIA driver is not usable: driver/library version mismatch"
    )


def test_unknown_driver_version_rejects_nvidia_images():
    facts = nvidia_host(None, [nvidia_gpu("Tesla T4", "7.5")])
    selection = select([nvidia_variant("12.2")], facts)
    assert reasons(selection)["img"] == (
        "NVIDIA driver version unknown; cannot tell whether it runs CUDA 12.2"
    )


def test_gpu_without_a_loaded_driver():
    facts = host(gpus=[nvidia_gpu("Tesla T4", None)], engine=docker("nvidia"))
    selection = select([nvidia_variant("12.2")], facts)
    assert reasons(selection)["img"] == "Tesla T4 is present but no NVIDIA driver is loaded"


# --- Per-GPU requirements ------------------------------------------------------------------


def test_compute_capability_below_the_minimum():
    selection = select([nvidia_variant("12.2", min_compute_capability="8.0")], t4_host("550.54.15"))
    assert reasons(selection)["img"] == "Tesla T4 has compute capability 7.5; variant needs >= 8.0"


def test_compute_capability_compares_numerically():
    gpu = nvidia_gpu("NVIDIA H200", "10.0")
    facts = nvidia_host("570.133.07", [gpu])
    assert select([nvidia_variant("12.8", min_compute_capability="9.0")], facts).variant == "img"


def test_unknown_compute_capability_does_not_count():
    facts = nvidia_host("470.182.03", [nvidia_gpu("Tesla T4", None)])
    selection = select([nvidia_variant("11.4", min_compute_capability="7.0")], facts)
    assert reasons(selection)["img"] == (
        "compute capability of Tesla T4 is unknown; variant needs >= 7.0"
    )


def test_gpu_memory_below_the_minimum():
    selection = select([nvidia_variant("12.2", min_gpu_memory_mib=20000)], t4_host("550.54.15"))
    assert reasons(selection)["img"] == (
        "Tesla T4 has 15360 MiB of memory; variant needs >= 20000 MiB"
    )


def test_two_gpus_needed_on_a_one_gpu_host():
    selection = select([nvidia_variant("12.2", min_gpus=2)], t4_host("550.54.15"))
    assert reasons(selection)["img"] == "variant needs 2 NVIDIA GPUs; host has 1"
    assert select([nvidia_variant("12.2", min_gpus=2)], a100_host()).variant == "img"


def test_only_qualifying_gpus_count_towards_min_gpus():
    facts = nvidia_host(
        "550.54.15", [nvidia_gpu("NVIDIA A100-SXM4-80GB", "8.0"), nvidia_gpu("Tesla T4", "7.5")]
    )
    variant = nvidia_variant("12.2", min_compute_capability="8.0", min_gpus=2)
    assert reasons(select([variant], facts))["img"] == (
        "variant needs 2 NVIDIA GPUs that qualify; host has 1;"
        " Tesla T4 has compute capability 7.5; variant needs >= 8.0"
    )
    # With one GPU needed the mixed host fits, and the note says which GPU does not count.
    selection = select([{**variant, "min_gpus": 1}], facts)
    assert selection.variant == "img"
    assert selection.notes == [
        "1 NVIDIA GPU of 2 qualify for variant img: Tesla T4 has compute capability 7.5;"
        " variant needs >= 8.0"
    ]


def test_several_failed_checks_are_joined():
    facts = t4_host("470.182.03")
    variant = nvidia_variant("12.2", min_compute_capability="8.0", arch=["aarch64"])
    assert reasons(select([variant], facts))["img"] == (
        "host is x86_64; variant is built for aarch64;"
        " driver 470.182.03 supports CUDA <= 11.4; variant img is built with CUDA 12.2"
        " (needs driver >= 525 with minor-version compatibility)"
    )


def test_arch_mismatch_and_aliases():
    selection = select(
        [{"name": "x86", "arch": ["amd64"]}, {"name": "arm", "arch": ["arm64"]}],
        cpu_host("aarch64"),
    )
    assert selection.variant == "arm"
    assert reasons(selection) == {"x86": "host is aarch64; variant is built for x86_64"}


# --- AMD -----------------------------------------------------------------------------------


def test_gfx_not_in_the_list():
    selection = select(ISSUE_VARIANTS, amd_host(gfx="gfx1100"))
    assert selection.variant == "cpu"
    assert reasons(selection)["rocm"] == "host GPU is gfx1100; variant is built for gfx90a, gfx942"


def test_host_rocm_older_than_the_image():
    selection = select(ISSUE_VARIANTS, amd_host(rocm="5.7.1"))
    assert reasons(selection)["rocm"] == "host has ROCm 5.7.1; variant needs ROCm >= 6.0"
    assert select(ISSUE_VARIANTS, amd_host(rocm="6.0.2")).variant == "rocm"


def test_host_without_rocm_userspace_still_fits_with_a_note():
    selection = select(ISSUE_VARIANTS, amd_host(rocm=None))
    assert selection.variant == "rocm"
    assert selection.notes == [
        "host has no ROCm userspace; variant rocm brings its own ROCm 6.0 userspace"
    ]


def test_amd_without_kfd_or_engine_support():
    selection = select(ISSUE_VARIANTS, amd_host(kfd=False))
    assert reasons(selection)["rocm"] == (
        "AMD Instinct MI210 is present but /dev/kfd is missing (the amdgpu kernel driver is not loaded)"
    )
    facts = amd_host()
    facts.docker = docker()
    selection = select(ISSUE_VARIANTS, facts)
    assert reasons(selection)["rocm"] == (
        "AMD Instinct MI210 is present but the Docker engine cannot use it:"
        " the engine reports no way to pass /dev/kfd and /dev/dri into a container"
    )
    assert selection.warnings == [reasons(selection)["rocm"] + "; AMD GPU variants were skipped"]


# --- Engine state --------------------------------------------------------------------------


def test_unreachable_engine_rejects_gpu_images():
    facts = a100_host()
    facts.docker = DockerFacts(
        reachable=False, host="unix:///var/run/docker.sock", error="permission denied"
    )
    selection = select(ISSUE_VARIANTS, facts)
    assert selection.variant == "cpu"
    assert reasons(selection)["cuda12"] == (
        "the Docker engine at unix:///var/run/docker.sock could not be asked which GPUs it can"
        " use: permission denied"
    )


def test_missing_engine_facts_reject_gpu_images():
    facts = a100_host()
    facts.docker = None
    selection = select(ISSUE_VARIANTS[:1], facts)
    assert selection.variant is None
    assert (
        reasons(selection)["cuda12"] == "the Docker engine could not be asked which GPUs it can use"
    )


def test_nvidia_runtime_or_an_unusable_cdi_spec_is_not_enough_for_dgpu_images():
    facts = rtx4090_host(toolkit=False)
    facts.docker = docker("nvidia-runtime", runtimes=["nvidia", "runc"])
    facts.docker.gpu_evidence = [
        "cdi: spec /etc/cdi/nvidia.yaml present but Docker 20.10.24 has no CDI (25+)"
    ]
    assert reasons(select(ISSUE_VARIANTS[:1], facts))["cuda12"] == (
        "NVIDIA GeForce RTX 4090 is present but the Docker engine cannot use it:"
        " no nvidia-container-runtime-hook on its PATH, a CDI spec that Docker 20.10.24 cannot"
        " use (CDI needs 25 or newer) (the nvidia runtime alone does not serve GPU requests:"
        " put the toolkit's hook on dockerd's PATH)"
    )


def test_cdi_wires_nvidia_gpus():
    facts = rtx4090_host(toolkit=False)
    facts.docker = docker("cdi")
    assert select(ISSUE_VARIANTS, facts).variant == "cuda12"


# --- Nothing fits --------------------------------------------------------------------------


def test_no_variant_fits_lists_every_reason():
    selection = select(ISSUE_VARIANTS[:4], cpu_host("aarch64"))
    assert selection.to_dict() == {
        "variant": None,
        "rejected": [
            {"variant": "cuda12", "reason": "host is aarch64; variant is built for x86_64; no NVIDIA GPU on this host"},
            {"variant": "cuda11", "reason": "no NVIDIA GPU on this host"},
            {"variant": "jetson6", "reason": "host is not a Jetson (no L4T release found); variant is built for L4T 36.4"},
            {"variant": "rocm", "reason": "no AMD GPU on this host"},
        ],
        "warnings": [],
        "notes": [],
    }  # fmt: skip


def test_variants_after_the_winner_are_not_listed():
    selection = select(ISSUE_VARIANTS, a100_host())
    assert selection.rejected == []


# --- Variant validation --------------------------------------------------------------------


def test_parse_the_issue_list():
    variants = parse_variants(ISSUE_VARIANTS)
    assert variants[0] == Variant(
        name="cuda12", gpu="nvidia", platform="dgpu", cuda="12.2", min_compute_capability="7.0",
        min_gpus=1, arch=("x86_64",),
    )  # fmt: skip
    assert variants[2].is_jetson and variants[2].l4t == "36.4"
    assert variants[3].gfx == ("gfx90a", "gfx942")
    assert variants[4] == Variant(name="cpu")
    assert [Variant.from_dict(v.to_dict()) for v in variants] == variants


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"name": "cpu", "gpus": "nvidia"}], "variants[0] (cpu): unknown key 'gpus'"),
        ([{"name": "c", "gpu": "nvidia", "cuda": 12.2}], 'variants[0] (c): `cuda` must be a quoted string like "12.2"; got the number 12.2'),
        ([{"name": "c", "gpu": "nvidia", "cuda": "12"}], 'variants[0] (c): `cuda` must be a version like "12.2"'),
        ([{"name": "c", "gpu": "nvidia", "cuda": "10.2"}], "CUDA 10.2 is outside this agent's driver table"),
        ([{"name": "cpu"}, {"name": "c", "gpu": "nvidia"}], "variants[1] (c): `cuda` is required"),
        ([{"name": "cpu"}, {"name": "cpu", "arch": ["x86_64"]}], "variants[1] (cpu): name 'cpu' is already used by variants[0]"),
        ([{"name": "j", "gpu": "nvidia", "platform": "jetson"}], "variants[0] (j): `l4t` is required for platform jetson"),
        ([{"name": "j", "gpu": "nvidia", "platform": "jetson", "l4t": "36.4", "cuda": "12.6"}], "variants[0] (j): `cuda` and `cuda_minor_compat` apply to discrete-GPU images"),
        ([{"name": "c", "gpu": "cuda"}], "variants[0] (c): `gpu` must be one of nvidia, amd, intel, none; got 'cuda'"),
        ([{"name": "c", "arch": ["sparc"]}], "variants[0] (c): `arch`: unknown architecture 'sparc'"),
        ([{"name": "c", "arch": "x86_64"}], "variants[0] (c): `arch` must be a non-empty list"),
        ([{"name": "r", "gpu": "amd", "gfx": ["mi210"]}], "variants[0] (r): `gfx`: 'mi210' is not an AMD GPU target"),
        ([{"name": "r", "gpu": "amd", "cuda": "12.2"}], "variants[0] (r): `cuda` applies only to gpu nvidia variants"),
        ([{"name": "c", "min_gpus": 2}], "variants[0] (c): `min_gpus` applies only to GPU variants"),
        ([{"name": "c", "gpu": "nvidia", "cuda": "12.2", "min_gpus": 0}], "`min_gpus` must be a whole number >= 1; got 0"),
        ([{"name": "c", "gpu": "nvidia", "cuda": "12.2", "cuda_minor_compat": "no"}], "`cuda_minor_compat` must be true or false; got 'no'"),
        ([{"name": "Cuda 12"}], "variants[0]: `name` must be 1-63 lowercase letters"),
        ([{"gpu": "nvidia"}], "variants[0]: `name` is required"),
        (["cpu"], "variants[0]: expected a mapping"),
        ([], "variants: the list is empty"),
    ],
)  # fmt: skip
def test_invalid_variants_name_the_variant_and_the_key(items: List[Any], message: str):
    with pytest.raises(VariantError) as info:
        parse_variants(items)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
