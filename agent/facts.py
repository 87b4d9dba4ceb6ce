"""Host facts: the typed records `detect` produces and `select` reads.

The one definition of the facts JSON (`mlfleet-agent detect --json`); the controller
reads the same classes. Bump SCHEMA on any incompatible change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Type, TypeVar

SCHEMA = 1

T = TypeVar("T")


@dataclass
class Gpu:
    vendor: str  # nvidia | amd | intel | other
    model: str
    memory_mib: Optional[int] = None
    compute_capability: Optional[str] = None  # NVIDIA, e.g. "8.0"
    gfx: Optional[str] = None  # AMD, e.g. "gfx90a"
    uuid: Optional[str] = None
    pci_bus_id: Optional[str] = None
    device_id: Optional[str] = None  # PCI device id, e.g. "0x20b2"
    render_node: Optional[str] = None  # e.g. "/dev/dri/renderD128"


@dataclass
class NvidiaFacts:
    driver_version: Optional[str]
    cuda_version: Optional[str]  # the newest CUDA the driver supports, "12.4"
    source: str  # nvml | nvidia-smi | kernel-module
    # Set when the driver is loaded but unusable, e.g. "driver/library version mismatch".
    error: Optional[str] = None
    kernel_module: Optional[str] = None  # proprietary | open


@dataclass
class AmdFacts:
    rocm_version: Optional[str]  # ROCm userspace on the host, None when not installed
    kfd: bool  # /dev/kfd present: the kernel driver is loaded
    render_nodes: List[str] = field(default_factory=list)


@dataclass
class JetsonFacts:
    l4t: str  # "35.3.1"
    jetpack: Optional[str]  # "5.1.1"
    soc: Optional[str]  # "tegra234"
    model: Optional[str]  # "NVIDIA Jetson AGX Orin Developer Kit"
    source: str  # nv_tegra_release | dpkg


@dataclass
class DockerFacts:
    reachable: bool
    host: str  # the engine address asked, e.g. unix:///var/run/docker.sock
    version: Optional[str] = None
    api_version: Optional[str] = None
    storage_driver: Optional[str] = None
    data_root: Optional[str] = None
    runtimes: List[str] = field(default_factory=list)
    default_runtime: Optional[str] = None
    # What the engine can wire into a container: nvidia (device requests through the
    # toolkit's hook), nvidia-runtime (runtime="nvidia"), cdi, amd, intel.
    gpu_support: List[str] = field(default_factory=list)
    # Why each entry of gpu_support is there (or why nvidia is not), for operators.
    gpu_evidence: List[str] = field(default_factory=list)
    free_disk_mib: Optional[int] = None
    error: Optional[str] = None


@dataclass
class OsFacts:
    id: Optional[str]  # "debian"
    version_id: Optional[str]  # "12"
    pretty_name: Optional[str]
    kernel: str


@dataclass
class HostFacts:
    schema: int
    hostname: str
    arch: str  # x86_64 | aarch64 | ...
    os: OsFacts
    cpus: int
    memory_mib: Optional[int]
    python: str
    root: str  # the root prefix the facts were read under
    gpus: List[Gpu] = field(default_factory=list)
    nvidia: Optional[NvidiaFacts] = None
    amd: Optional[AmdFacts] = None
    jetson: Optional[JetsonFacts] = None
    docker: Optional[DockerFacts] = None
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> HostFacts:
        """Read facts JSON; raises ValueError on another schema version or a bad shape."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"facts schema {data.get('schema')!r}, this agent reads {SCHEMA}")
        try:
            return HostFacts(
                schema=SCHEMA,
                hostname=data["hostname"],
                arch=data["arch"],
                os=_build(OsFacts, data["os"]),
                cpus=data["cpus"],
                memory_mib=data.get("memory_mib"),
                python=data["python"],
                root=data.get("root", "/"),
                gpus=[_build(Gpu, g) for g in data.get("gpus") or []],
                nvidia=_build(NvidiaFacts, data["nvidia"]) if data.get("nvidia") else None,
                amd=_build(AmdFacts, data["amd"]) if data.get("amd") else None,
                jetson=_build(JetsonFacts, data["jetson"]) if data.get("jetson") else None,
                docker=_build(DockerFacts, data["docker"]) if data.get("docker") else None,
                warnings=list(data.get("warnings") or []),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"facts are missing or mistype a field: {exc}") from None

    def gpus_of(self, vendor: str) -> List[Gpu]:
        return [g for g in self.gpus if g.vendor == vendor]


def _build(cls: Type[T], data: Dict[str, Any]) -> T:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in known})
