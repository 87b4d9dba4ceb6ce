"""The lab's vendor-tool stand-ins, run the way hosts run them: as installed programs.

Each program is written with ``install_text(profile)`` to a temporary file and
executed, so the tests also cover the installed form (PROFILE line on top).
Expected strings are copied from output captured on real machines.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.paths import REPO

STANDINS = REPO / "controller" / "lab" / "standins"


def _load(name: str) -> ModuleType:
    """Import a stand-in by path: the package is not necessarily installed."""
    spec = importlib.util.spec_from_file_location("standin_" + name, STANDINS / (name + ".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nvidia_smi = _load("nvidia_smi")
rocm_smi = _load("rocm_smi")
nvidia_hook = _load("nvidia_hook")

A100 = {
    "name": "NVIDIA A100-SXM4-80GB",
    "memory_mib": 81920,
    "compute_capability": "8.0",
    "uuid": "GPU-3f0c9a1e-5b2d-4c7e-8f10-2a3b4c5d6e7f",
    "bus_id": "00000000:07:00.0",
}
L4 = {
    "name": "NVIDIA L4",
    "memory_mib": 23034,
    "compute_capability": "8.9",
    "uuid": "GPU-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
    "bus_id": "00000000:31:00.0",
}
MI210 = {"name": "AMD Instinct MI210", "gfx": "gfx90a", "memory_mib": 65520, "device_id": "0x740f"}


def nv_profile(driver: str = "550.54.15", cuda: str = "12.4", mode: str = "ok") -> dict:
    return {"driver": driver, "cuda": cuda, "mode": mode, "gpus": [A100, L4]}


def install(tmp_path: Path, module: ModuleType, profile: dict, name: str) -> Path:
    path = tmp_path / name
    path.write_text(module.install_text(profile), encoding="utf-8")
    path.chmod(0o755)
    return path


def run(
    path: Path, *args: str, stdin: str = "", timeout: float = 10
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def smi(tmp_path: Path):
    """Install nvidia-smi for a driver and return a runner."""

    def make(driver: str = "550.54.15", cuda: str = "12.4", mode: str = "ok") -> Path:
        return install(tmp_path, nvidia_smi, nv_profile(driver, cuda, mode), "nvidia-smi")

    return make


# ----------------------------------------------------------------------------- install_text


def test_install_text_puts_the_profile_under_a_shebang():
    text = nvidia_smi.install_text(nv_profile())
    first, second, rest = text.split("\n", 2)
    assert first == "#!/usr/bin/env python3"
    assert eval(second[len("PROFILE = ") :]) == nv_profile()
    assert rest.startswith('"""Stand-in for ``nvidia-smi``')


def test_install_text_of_an_installed_copy_is_not_doubled(tmp_path):
    path = install(tmp_path, nvidia_hook, {"driver": "550.54.15"}, "hook.py")
    module = _load_path(path)
    text = module.install_text({"driver": "1"})
    assert [line for line in text.splitlines() if line.startswith("PROFILE = ")] == [
        "PROFILE = __import__('json').loads('{\"driver\": \"1\"}')"
    ]


def _load_path(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("installed_copy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("value", [True, None])
def test_install_text_keeps_json_values_that_are_not_python_literals(tmp_path, value):
    path = install(
        tmp_path, rocm_smi, {"rocm": "6.1.2", "gpus": [dict(MI210, flag=value)]}, "smi.py"
    )
    assert _load_path(path).PROFILE["gpus"][0]["flag"] is value


# ----------------------------------------------------------------------------- nvidia-smi


QUERY = "index,name,uuid,driver_version,memory.total,compute_cap"


def test_query_with_header_and_units(smi):
    result = run(smi(), "--query-gpu=" + QUERY, "--format=csv")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "index, name, uuid, driver_version, memory.total [MiB], compute_cap"
    assert lines[1] == f"0, NVIDIA A100-SXM4-80GB, {A100['uuid']}, 550.54.15, 81920 MiB, 8.0"
    assert len(lines) == 3


def test_query_without_header_or_units_parses_back_to_the_profile(smi):
    result = run(smi(), "--query-gpu", QUERY, "--format", "csv,noheader,nounits")
    assert result.returncode == 0
    rows = [line.split(", ") for line in result.stdout.splitlines()]
    expected = [
        [str(i), g["name"], g["uuid"], "550.54.15", str(g["memory_mib"]), g["compute_capability"]]
        for i, g in enumerate([A100, L4])
    ]
    assert rows == expected


def test_query_other_fields(smi):
    fields = "count,pci.bus_id,serial,temperature.gpu,utilization.gpu,memory.used,memory.free"
    result = run(smi(), "--query-gpu=" + fields, "--format=csv,nounits")
    assert result.returncode == 0
    header, first, _ = result.stdout.splitlines()
    assert header == (
        "count, pci.bus_id, serial, temperature.gpu, utilization.gpu [%], "
        "memory.used [MiB], memory.free [MiB]"
    )
    count, bus, _serial, temp, util, used, free = first.split(", ")
    assert (count, bus, util) == ("2", A100["bus_id"], "0")
    assert int(temp) > 0 and int(used) + int(free) == A100["memory_mib"]


def test_470_refuses_compute_cap_like_the_real_tool(smi):
    path = smi("470.182.03", "11.4")
    result = run(path, "--query-gpu=" + QUERY, "--format=csv,noheader,nounits")
    assert result.returncode == 2
    assert result.stdout == 'Field "compute_cap" is not a valid field to query.\n\n'
    fallback = run(path, "--query-gpu=index,name,driver_version", "--format=csv,noheader")
    assert fallback.returncode == 0
    assert fallback.stdout.splitlines()[0] == "0, NVIDIA A100-SXM4-80GB, 470.182.03"


def test_unknown_field_is_refused_by_name(smi):
    result = run(smi(), "--query-gpu=index,id", "--format=csv")
    assert result.returncode == 2
    assert result.stdout == 'Field "id" is not a valid field to query.\n\n'


TIMESTAMP = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} {7}$")


@pytest.mark.parametrize(
    ("driver", "cuda", "width"),
    [("470.182.03", "11.4", 79), ("535.54.03", "12.2", 89), ("550.54.15", "12.4", 91)],
)
def test_banner_carries_driver_and_cuda_in_each_layout(smi, driver, cuda, width):
    result = run(smi(driver, cuda))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert TIMESTAMP.match(lines[0])
    assert re.search(rf"Driver Version: {driver}\s+CUDA Version: {cuda}\s+\|$", lines[2])
    assert {len(line) for line in lines[1:]} == {width}
    assert "|  No running processes found" in result.stdout
    assert "NVIDIA A100-SXM" in result.stdout and "81920MiB" in result.stdout


# Real captures (470.182.03 on a K80, 555.42.02 on an A100), dynamic values pinned below;
# "~" stands for the spacer line, which is all blanks, as wide as the table.
REAL_470 = """\
+-----------------------------------------------------------------------------+
| NVIDIA-SMI 470.182.03   Driver Version: 470.182.03   CUDA Version: 12.2     |
|-------------------------------+----------------------+----------------------+
| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |
| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | GPU-Util  Compute M. |
|                               |                      |               MIG M. |
|===============================+======================+======================|
|   0  Tesla K80           On   | 00000000:00:1E.0 Off |                    0 |
| N/A   31C    P8    27W / 149W |      0MiB / 11441MiB |      0%      Default |
|                               |                      |                  N/A |
+-------------------------------+----------------------+----------------------+
~
+-----------------------------------------------------------------------------+
| Processes:                                                                  |
|  GPU   GI   CI        PID   Type   Process name                  GPU Memory |
|        ID   ID                                                   Usage      |
|=============================================================================|
|  No running processes found                                                 |
+-----------------------------------------------------------------------------+
"""
REAL_555 = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 555.42.02              Driver Version: 555.42.02      CUDA Version: 12.5     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA A100-SXM4-80GB          On  |   00000000:68:00.0 Off |                    0 |
| N/A   25C    P0             59W /  500W |       1MiB /  81920MiB |      0%      Default |
|                                         |                        |             Disabled |
+-----------------------------------------+------------------------+----------------------+
~
+-----------------------------------------------------------------------------------------+
| Processes:                                                                              |
|  GPU   GI   CI        PID   Type   Process name                              GPU Memory |
|        ID   ID                                                               Usage      |
|=========================================================================================|
|  No running processes found                                                             |
+-----------------------------------------------------------------------------------------+
"""


@pytest.mark.parametrize(
    ("driver", "cuda", "gpu", "pinned", "real"),
    [
        (
            "470.182.03",
            "12.2",
            {
                "name": "Tesla K80",
                "memory_mib": 11441,
                "bus_id": "00000000:00:1E.0",
                "power_cap_w": 149,
            },
            {"temp": 31, "power": 27, "perf": "P8", "mig": "N/A", "used": 0},
            REAL_470,
        ),
        (
            "555.42.02",
            "12.5",
            {
                "name": "NVIDIA A100-SXM4-80GB",
                "memory_mib": 81920,
                "bus_id": "00000000:68:00.0",
                "power_cap_w": 500,
            },
            {"temp": 25, "power": 59, "used": 1},
            REAL_555,
        ),
    ],
)
def test_summary_matches_a_real_capture(monkeypatch, driver, cuda, gpu, pinned, real):
    view = nvidia_smi._gpu_view
    monkeypatch.setattr(nvidia_smi, "_gpu_view", lambda p, i: dict(view(p, i), **pinned))
    lines = nvidia_smi.render_summary({"driver": driver, "cuda": cuda, "gpus": [gpu]})
    width = len(real.splitlines()[0])
    assert "\n".join(lines[1:]) + "\n" == real.replace("~", " " * width)


def test_list_gpus(smi):
    result = run(smi(), "-L")
    assert result.stdout.splitlines() == [
        f"GPU 0: NVIDIA A100-SXM4-80GB (UUID: {A100['uuid']})",
        f"GPU 1: NVIDIA L4 (UUID: {L4['uuid']})",
    ]


def test_id_selects_one_gpu(smi):
    result = run(smi(), "-i", "1", "--query-gpu=index,name", "--format=csv,noheader")
    assert result.stdout == "1, NVIDIA L4\n"


def test_a_host_without_gpus_finds_no_devices(tmp_path):
    path = install(tmp_path, nvidia_smi, dict(nv_profile(), gpus=[]), "nvidia-smi")
    result = run(path, "--query-gpu=index", "--format=csv")
    assert (result.returncode, result.stdout) == (6, "No devices were found\n")


def test_version(smi):
    assert run(smi(), "--version").stdout.splitlines() == [
        "NVIDIA-SMI version  : 550.54.15",
        "NVML version        : 550.54",
        "DRIVER version      : 550.54.15",
        "CUDA Version        : 12.4",
    ]


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        (
            "550.54.15",
            [
                "Failed to initialize NVML: Driver/library version mismatch",
                "NVML library version: 550.54",
            ],
        ),
        ("470.182.03", ["Failed to initialize NVML: Driver/library version mismatch"]),
    ],
)
def test_mismatch_mode_fails_every_call_with_exit_18(smi, driver, expected):
    path = smi(driver, mode="mismatch")
    for args in ([], ["-L"], ["--query-gpu=index", "--format=csv"]):
        result = run(path, *args)
        assert (result.returncode, result.stdout.splitlines()) == (18, expected)


NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


def test_no_driver_mode_prints_the_real_message_and_exits_9(capsys):
    assert nvidia_smi.main([], nv_profile(mode="no_driver")) == 9
    assert capsys.readouterr() == (NO_DRIVER, "")


def test_no_driver_mode_fails_every_call_of_the_installed_program(smi):
    path = smi(mode="no_driver")
    for args in (["-L"], ["--query-gpu=index", "--format=csv,noheader,nounits"]):
        result = run(path, *args)
        assert (result.returncode, result.stdout, result.stderr) == (9, NO_DRIVER, "")


def test_hang_mode_never_returns(smi):
    with pytest.raises(subprocess.TimeoutExpired):
        run(smi(mode="hang"), "--query-gpu=index", "--format=csv", timeout=2)


@pytest.mark.parametrize(
    "args", [["-q"], ["--query-gpu=index"], ["--query-gpu=index", "--format=xml"]]
)
def test_unsupported_calls_exit_2_with_a_message_on_stderr(smi, args):
    result = run(smi(), *args)
    assert result.returncode == 2 and result.stderr.strip() and not result.stdout


# ----------------------------------------------------------------------------- rocm-smi


def rocm(tmp_path: Path, version: str) -> Path:
    return install(tmp_path, rocm_smi, {"rocm": version, "gpus": [MI210]}, "rocm-smi")


def test_rocm6_product_json_has_title_case_keys(tmp_path):
    result = run(rocm(tmp_path, "6.1.2"), "--showproductname", "--json")
    assert result.returncode == 0
    card = json.loads(result.stdout)["card0"]
    assert list(card) == [
        "Card Series",
        "Card Model",
        "Card Vendor",
        "Card SKU",
        "Subsystem ID",
        "Device Rev",
        "Node ID",
        "GUID",
        "GFX Version",
    ]
    assert (card["Card Series"], card["Card Model"], card["GFX Version"]) == (
        "AMD Instinct MI210",
        "0x740f",
        "gfx90a",
    )
    assert card["Card Vendor"] == "Advanced Micro Devices, Inc. [AMD/ATI]"


def test_rocm5_product_json_has_the_old_keys(tmp_path):
    result = run(rocm(tmp_path, "5.7.1"), "--showproductname", "--json")
    card = json.loads(result.stdout)["card0"]
    assert list(card) == ["Card series", "Card model", "Card vendor", "Card SKU"]
    assert card["Card series"] == "AMD Instinct MI210"


@pytest.mark.parametrize(
    ("gfx", "rocm_version", "label"),
    [
        ("gfx90a", (6, 0, 2), "gfx9010"),
        ("gfx1100", (6, 0, 2), "gfx11000"),
        ("gfx942", (6, 0, 0), "gfx9402"),
        ("gfx90a", (6, 1, 2), "gfx90a"),
        ("gfx1100", (6, 2), "gfx1100"),
    ],
)
def test_gfx_version_label_per_release(gfx, rocm_version, label):
    assert rocm_smi.gfx_label(gfx, rocm_version) == label


def test_rocm_product_text_layout(tmp_path):
    lines = run(rocm(tmp_path, "6.1.2"), "--showproductname").stdout.splitlines()
    assert lines[:4] == [
        "",
        "",
        "=" * 28 + " ROCm System Management Interface " + "=" * 28,
        "=" * 38 + " Product Info " + "=" * 38,
    ]
    assert lines[4] == "GPU[0]\t\t: Card Series: \t\tAMD Instinct MI210"
    assert "GPU[0]\t\t: Subsystem ID: \t0x0c34" in lines
    assert lines[12] == "GPU[0]\t\t: GFX Version: \t\tgfx90a"
    assert lines[-1] == "=" * 34 + " End of ROCm SMI Log " + "=" * 35


def test_rocm5_log_is_80_columns(tmp_path):
    lines = run(rocm(tmp_path, "5.4.3"), "--showproductname").stdout.splitlines()
    assert lines[2] == "=" * 23 + " ROCm System Management Interface " + "=" * 23
    assert lines[4] == "GPU[0]\t\t: Card series: \t\tAMD Instinct MI210"


def test_rocm_vram_in_bytes(tmp_path):
    path = rocm(tmp_path, "6.1.2")
    total = 65520 * 1024 * 1024
    card = json.loads(run(path, "--showmeminfo", "vram", "--json").stdout)["card0"]
    assert int(card["VRAM Total Memory (B)"]) == total
    assert 0 <= int(card["VRAM Total Used Memory (B)"]) < total
    text = run(path, "--showmeminfo", "vram").stdout
    assert f"GPU[0]\t\t: VRAM Total Memory (B): {total}\n" in text
    assert "Memory Usage (Bytes)" in text


def test_rocm_driver_version_and_summary(tmp_path):
    profile = {"rocm": "6.1.2", "driver_version": "6.7.0", "gpus": [MI210]}
    path = install(tmp_path, rocm_smi, profile, "rocm-smi")
    assert json.loads(run(path, "--showdriverversion", "--json").stdout) == {
        "system": {"Driver version": "6.7.0"}
    }
    assert "Driver version: 6.7.0" in run(path, "--showdriverversion").stdout
    summary = run(path).stdout
    assert "Concise Info" in summary and "AMD Instinct MI210" in summary


def test_rocm_unknown_argument_is_an_argparse_error(tmp_path):
    result = run(rocm(tmp_path, "6.1.2"), "--showbogus")
    assert result.returncode == 2
    assert "rocm-smi: error: unrecognized arguments: --showbogus" in result.stderr


# ----------------------------------------------------------------------------- the hook


def bundle(tmp_path: Path, env: list[str], root: str = "rootfs") -> Path:
    """A fake OCI bundle: config.json plus an empty rootfs."""
    path = tmp_path / "bundle"
    (path / "rootfs").mkdir(parents=True)
    config = {"root": {"path": root}, "process": {"env": ["PATH=/usr/bin", *env]}}
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def libdir(rootfs: Path) -> Path:
    return rootfs / "usr" / "lib" / (os.uname().machine + "-linux-gnu")


@pytest.fixture
def hook(tmp_path: Path) -> Path:
    return install(tmp_path, nvidia_hook, {"driver": "550.54.15"}, "nvidia-container-runtime-hook")


@pytest.mark.parametrize("relative", [True, False])
def test_hook_installs_libcuda_when_gpus_are_requested(tmp_path, hook, relative):
    rootfs = tmp_path / "bundle" / "rootfs"
    path = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"], "rootfs" if relative else str(rootfs))
    state = json.dumps({"ociVersion": "1.0.2", "id": "c1", "pid": 4242, "bundle": str(path)})
    result = run(hook, "prestart", stdin=state)
    assert result.returncode == 0, result.stderr
    lib = libdir(rootfs) / "libcuda.so.550.54.15"
    assert lib.read_text(encoding="utf-8").startswith("stand-in libcuda")
    assert os.readlink(libdir(rootfs) / "libcuda.so.1") == "libcuda.so.550.54.15"


@pytest.mark.parametrize(
    "env",
    [
        [],
        ["NVIDIA_VISIBLE_DEVICES=void"],
        ["NVIDIA_VISIBLE_DEVICES=none"],
        ["NVIDIA_VISIBLE_DEVICES="],
    ],
)
def test_hook_leaves_containers_without_gpus_alone(tmp_path, env):
    path = bundle(tmp_path, env)
    state = io.StringIO(json.dumps({"bundle": str(path)}))
    assert nvidia_hook.main(["prestart"], {"driver": "550.54.15"}, state) == 0
    assert list((path / "rootfs").iterdir()) == []


def test_hook_does_nothing_at_other_stages(tmp_path, hook):
    path = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"])
    result = run(hook, "poststart", stdin=json.dumps({"bundle": str(path)}))
    assert result.returncode == 0 and list((path / "rootfs").iterdir()) == []


@pytest.mark.parametrize("state", ["not json", "{}", '{"bundle": "/nonexistent/bundle"}'])
def test_hook_rejects_a_malformed_state(hook, state):
    result = run(hook, "prestart", stdin=state)
    assert result.returncode == 1 and "nvidia-container-runtime-hook" in result.stderr


def test_hook_reads_pre_1_0_bundle_path_and_skips_flags(tmp_path):
    path = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=0"])
    state = io.StringIO(json.dumps({"bundlePath": str(path)}))
    assert nvidia_hook.main(["-debug", "prestart"], {"driver": "470.182.03"}, state) == 0
    assert (libdir(path / "rootfs") / "libcuda.so.470.182.03").is_file()


DRIVER_NOT_LOADED = "nvidia-container-cli: initialization error: nvml error: driver not loaded\n"
HOOK_PROFILE = {"driver": "550.54.15", "driver_file": "proc/driver/nvidia/version"}


def gpu_state(tmp_path: Path) -> io.StringIO:
    return io.StringIO(
        json.dumps({"bundle": str(bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"]))})
    )


def test_hook_refuses_a_gpu_when_the_driver_is_not_loaded(tmp_path, capsys):
    root = tmp_path / "root"
    assert nvidia_hook.main(["prestart"], HOOK_PROFILE, gpu_state(tmp_path), str(root)) == 1
    assert capsys.readouterr().err == DRIVER_NOT_LOADED
    assert list((tmp_path / "bundle" / "rootfs").iterdir()) == []


def test_hook_gives_a_gpu_when_the_driver_file_is_there(tmp_path):
    root = tmp_path / "root"
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text("NVRM version: ...\n", encoding="utf-8")
    assert nvidia_hook.main(["prestart"], HOOK_PROFILE, gpu_state(tmp_path), str(root)) == 0
    assert (libdir(tmp_path / "bundle" / "rootfs") / "libcuda.so.550.54.15").is_file()


def test_hook_without_the_driver_leaves_containers_without_gpus_alone(tmp_path):
    state = io.StringIO(json.dumps({"bundle": str(bundle(tmp_path, []))}))
    assert nvidia_hook.main(["prestart"], HOOK_PROFILE, state, str(tmp_path / "root")) == 0


def test_installed_hook_finds_its_root_from_its_own_path(tmp_path):
    """Installed as <root>/usr/bin/nvidia-container-runtime-hook, as the lab does."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    hook = install(root / "usr/bin", nvidia_hook, HOOK_PROFILE, "nvidia-container-runtime-hook")
    path = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=0"])
    state = json.dumps({"bundle": str(path)})
    result = run(hook, "prestart", stdin=state)
    assert (result.returncode, result.stderr) == (1, DRIVER_NOT_LOADED)
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text("NVRM version: ...\n", encoding="utf-8")
    result = run(hook, "prestart", stdin=state)
    assert result.returncode == 0, result.stderr
    assert (libdir(path / "rootfs") / "libcuda.so.550.54.15").is_file()
