"""NVIDIA discrete GPUs: NVML, else `nvidia-smi`, else the kernel module's version files."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from mlfleet.agent.cuda import max_cuda_for_driver
from mlfleet.agent.detect.finding import Finding
from mlfleet.agent.facts import Gpu, NvidiaFacts
from mlfleet.agent.hostroot import HostRoot, ProgramHung

QUERY_FIELDS = [
    "index",
    "name",
    "uuid",
    "driver_version",
    "memory.total",
    "pci.bus_id",
    "compute_cap",
]
NVML_FAILED = "Failed to initialize NVML"

# Compute capability by model, for drivers whose nvidia-smi cannot report it (470 branch).
# From NVIDIA's CUDA GPUs list.
_CC_BY_MODEL: List[Tuple[str, str]] = [
    ("H100", "9.0"), ("H200", "9.0"), ("GH200", "9.0"),
    ("A100", "8.0"), ("A30", "8.0"), ("A10G", "8.6"), ("A10", "8.6"), ("A40", "8.6"),
    ("A2", "8.6"), ("L40", "8.9"), ("L4", "8.9"), ("RTX 40", "8.9"), ("RTX 30", "8.6"),
    ("RTX A", "8.6"), ("T4", "7.5"), ("RTX 20", "7.5"), ("Quadro RTX", "7.5"),
    ("TITAN RTX", "7.5"), ("V100", "7.0"), ("TITAN V", "7.0"), ("P100", "6.0"),
    ("P40", "6.1"), ("P4", "6.1"), ("GTX 10", "6.1"), ("K80", "3.7"),
]  # fmt: skip


def compute_capability_for_model(model: str) -> Optional[str]:
    for needle, cc in _CC_BY_MODEL:
        if needle in model:
            return cc
    return None


def parse_smi_query(text: str, fields: List[str]) -> List[Dict[str, str]]:
    """Rows of `nvidia-smi --query-gpu=... --format=csv,noheader,nounits`."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(", ")]
        if len(values) != len(fields):
            raise ValueError(
                f"nvidia-smi printed {len(values)} fields, expected {len(fields)}: {line!r}"
            )
        rows.append(dict(zip(fields, values)))
    return rows


def parse_smi_banner(text: str) -> Tuple[Optional[str], Optional[str]]:
    """(driver version, CUDA version) from the plain `nvidia-smi` banner (any spacing;
    610+ says "KMD Version" / "CUDA UMD Version")."""
    driver = re.search(r"(?:Driver|KMD) Version:\s*([0-9.]+)", text)
    cuda = re.search(r"CUDA (?:UMD )?Version:\s*([0-9.]+)", text)
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None)


def parse_sys_version(text: str) -> Optional[str]:
    """/sys/module/nvidia/version: the bare driver version."""
    value = text.strip()
    return value if re.match(r"^\d+\.\d+(\.\d+)?$", value) else None


def parse_proc_version(text: str) -> Tuple[Optional[str], Optional[str]]:
    """/proc/driver/nvidia/version -> (driver version, "open" | "proprietary"), both wordings:
    `... Kernel Module  535.146.02  Thu ...` and `... Open Kernel Module for x86_64  565.57.01  ...`."""
    first = text.splitlines()[0] if text.strip() else ""
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)\s", first + " ")
    if not match:
        return None, None
    return match.group(1), ("open" if "Open Kernel Module" in first else "proprietary")


def _cuda_text(cuda: Optional[Tuple[int, int]]) -> Optional[str]:
    return f"{cuda[0]}.{cuda[1]}" if cuda else None


def _mib(value: str) -> Optional[int]:
    try:
        return int(float(value))
    except ValueError:
        return None


def _optional(value: str) -> Optional[str]:
    return None if value in ("", "[N/A]", "N/A", "[Not Supported]") else value


def gpus_from_query(rows: List[Dict[str, str]]) -> List[Gpu]:
    gpus = []
    for row in rows:
        model = row["name"]
        cc = _optional(row.get("compute_cap", "")) or compute_capability_for_model(model)
        gpus.append(
            Gpu(
                vendor="nvidia",
                model=model,
                memory_mib=_mib(row.get("memory.total", "")),
                compute_capability=cc,
                uuid=_optional(row.get("uuid", "")),
                pci_bus_id=_optional(row.get("pci.bus_id", "")),
            )
        )
    return gpus


def detect(root: HostRoot) -> Finding[NvidiaFacts]:
    """NVML (only when reading the host itself), else nvidia-smi, else the version files."""
    finding: Finding[NvidiaFacts] = Finding()
    module_driver, kernel_module = _module_version(root)
    if root.prefix == "/" and _driver_present(root, module_driver):
        nvml = _nvml(finding)
        if nvml is not None:
            nvml.kernel_module = kernel_module
            finding.facts = nvml
            return finding
    smi = _smi(root, finding)
    if smi is not None:
        smi.kernel_module = kernel_module
        finding.facts = smi
        return finding
    if module_driver is None:
        return finding  # no NVIDIA driver: not an NVIDIA host (DRM may still show a card)
    error = next((w for w in finding.warnings if w.startswith(NVML_FAILED)), None)
    finding.facts = NvidiaFacts(
        driver_version=module_driver,
        cuda_version=_cuda_text(max_cuda_for_driver(module_driver)),
        source="kernel-module",
        error=error,
        kernel_module=kernel_module,
    )
    # Without a working nvidia-smi, the device nodes still tell how many GPUs there are.
    nodes = [p for p in root.glob("/dev/nvidia[0-9]*") if re.match(r"^/dev/nvidia\d+$", p)]
    finding.gpus = [Gpu(vendor="nvidia", model="NVIDIA GPU (model unknown)") for _ in nodes]
    return finding


def _driver_present(root: HostRoot, module_driver: Optional[str]) -> bool:
    """Whether NVML could answer at all: the kernel module is loaded, or the driver's
    device nodes are there (WSL2's /dev/dxg has no module files). Importing and loading
    NVML costs ~0.1 s of CPU, which hosts without NVIDIA hardware need not pay."""
    return module_driver is not None or root.exists("/dev/nvidiactl") or root.exists("/dev/dxg")


def _module_version(root: HostRoot) -> Tuple[Optional[str], Optional[str]]:
    proc = root.read_text("/proc/driver/nvidia/version")
    proc_driver, kernel_module = parse_proc_version(proc) if proc else (None, None)
    sys_text = root.read_text("/sys/module/nvidia/version")
    driver = (parse_sys_version(sys_text) if sys_text else None) or proc_driver
    return driver, kernel_module


def _smi(root: HostRoot, finding: Finding[NvidiaFacts]) -> Optional[NvidiaFacts]:
    fields = list(QUERY_FIELDS)
    try:
        result = root.run(
            "nvidia-smi", [f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]
        )
        if result is None:
            return None
        output = result.stdout + result.stderr
        if result.returncode != 0 and 'Field "compute_cap" is not a valid field' in output:
            # nvidia-smi of the 470 branch and older cannot report compute capability.
            fields.remove("compute_cap")
            result = root.run(
                "nvidia-smi", [f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]
            )
            assert result is not None
            output = result.stdout + result.stderr
        if NVML_FAILED in output:
            finding.warnings.append(
                next(line.strip() for line in output.splitlines() if NVML_FAILED in line)
            )
            return None
        if result.returncode != 0:
            finding.warnings.append(
                f"nvidia-smi failed (exit {result.returncode}): {output.strip()[:200]}"
            )
            return None
        rows = parse_smi_query(result.stdout, fields)
        banner = root.run("nvidia-smi", [])
    except ProgramHung as exc:
        finding.warnings.append(f"{exc} (a wedged GPU driver?)")
        return None
    except ValueError as exc:
        finding.warnings.append(str(exc))
        return None
    driver = rows[0]["driver_version"] if rows else None
    banner_driver, cuda = (
        parse_smi_banner(banner.stdout) if banner and banner.returncode == 0 else (None, None)
    )
    driver = driver or banner_driver
    if cuda is None and driver:
        cuda = _cuda_text(max_cuda_for_driver(driver))
    finding.gpus = gpus_from_query(rows)
    if "compute_cap" not in fields:
        finding.warnings.append(
            "this nvidia-smi cannot report compute capability; taken from the GPU model table"
        )
    return NvidiaFacts(driver_version=driver, cuda_version=cuda, source="nvidia-smi")


def _nvml(finding: Finding[NvidiaFacts]) -> Optional[NvidiaFacts]:
    """NVML through nvidia-ml-py, when the library loads (a real host with the driver)."""
    try:
        import pynvml  # untyped; see [tool.mypy] in pyproject.toml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        text = str(exc)
        if "mismatch" in text.lower():
            finding.warnings.append(f"{NVML_FAILED}: Driver/library version mismatch")
        return None  # library missing or driver not loaded: try the other sources
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda_int = pynvml.nvmlSystemGetCudaDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                Gpu(
                    vendor="nvidia",
                    model=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_mib=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)),
                    compute_capability=f"{major}.{minor}",
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    pci_bus_id=_text(pynvml.nvmlDeviceGetPciInfo(handle).busId),
                )
            )
    finally:
        pynvml.nvmlShutdown()
    finding.gpus = gpus
    return NvidiaFacts(driver_version=driver, cuda_version=cuda_from_nvml(cuda_int), source="nvml")


def cuda_from_nvml(value: int) -> str:
    """nvmlSystemGetCudaDriverVersion() -> "12.4" (12040: major = v // 1000, minor = v % 1000 // 10)."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
