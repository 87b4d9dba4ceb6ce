"""Lab host profiles: parsed and validated from YAML into plain records (pure)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from mlfleet.agent.jetson import JETSON_SOCS
from mlfleet.agent.rocm import gfx_target_version
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hostrange import expand_host_pattern
from mlfleet.controller.yamlsource import LocatedDict, LocatedList, load_yaml_file, load_yaml_text

DEFAULT_SUBNET = "10.77.0.0/24"

DEFAULT_PROFILES_YAML = """\
hosts:
  edge-a100:
    gpus:
      - {vendor: nvidia, model: "NVIDIA A100-SXM4-80GB", memory_mib: 81920, compute_capability: "8.0"}
      - {vendor: nvidia, model: "NVIDIA A100-SXM4-80GB", memory_mib: 81920, compute_capability: "8.0"}
    nvidia_driver: "550.54.15"
    container_toolkit: true
  edge-t4:
    gpus: [{vendor: nvidia, model: "Tesla T4", memory_mib: 15360, compute_capability: "7.5"}]
    nvidia_driver: "470.182.03"
    container_toolkit: true
  edge-4090:
    gpus: [{vendor: nvidia, model: "NVIDIA GeForce RTX 4090", memory_mib: 24564, compute_capability: "8.9"}]
    nvidia_driver: "535.183.01"
    container_toolkit: false
  edge-mi210:
    gpus: [{vendor: amd, model: "AMD Instinct MI210", memory_mib: 65520, gfx: gfx90a}]
    rocm: "6.1.2"
  edge-cpu: {}
"""

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_CC = re.compile(r"^\d+\.\d$")


@dataclass(frozen=True)
class GpuSpec:
    vendor: str  # nvidia | amd | intel
    model: str
    memory_mib: int
    compute_capability: Optional[str] = None  # NVIDIA
    gfx: Optional[str] = None  # AMD


@dataclass(frozen=True)
class JetsonSpec:
    l4t: str
    soc: str
    model: str
    release_file: bool = True  # False: only the nvidia-l4t-core package tells the L4T version


@dataclass(frozen=True)
class HostProfile:
    """One simulated host: its hardware and what the lab does to its engine and link."""

    name: str
    gpus: Tuple[GpuSpec, ...] = ()
    nvidia_driver: Optional[str] = None
    container_toolkit: bool = False
    nvidia_kernel_module: str = "proprietary"  # or "open"
    nvidia_smi: str = "ok"  # ok | mismatch | hang
    rocm: Optional[str] = None
    jetson: Optional[JetsonSpec] = None
    docker_disk_mib: Optional[int] = None
    link_kbit: Optional[int] = None
    registry: bool = True
    engine: bool = True
    cron: bool = True  # False: no cron daemon (the agent's cron entry is written, never run)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> HostProfile:
        """The profile back from its `dataclasses.asdict` form (the lab's state keeps that)."""
        fields = dict(data)
        fields["gpus"] = tuple(GpuSpec(**g) for g in fields.get("gpus") or ())
        fields["jetson"] = JetsonSpec(**fields["jetson"]) if fields.get("jetson") else None
        return cls(**fields)

    def describe(self) -> str:
        """A short human summary, e.g. '2x NVIDIA A100-SXM4-80GB, driver 550.54.15, toolkit'."""
        parts: List[str] = []
        if self.jetson:
            parts.append(f"{self.jetson.model} (L4T {self.jetson.l4t})")
        models: Dict[str, int] = {}
        for gpu in self.gpus:
            models[gpu.model] = models.get(gpu.model, 0) + 1
        parts += [f"{n}x {m}" if n > 1 else m for m, n in models.items()]
        if self.nvidia_driver:
            parts.append(f"driver {self.nvidia_driver}")
        if self.container_toolkit:
            parts.append("toolkit")
        if self.rocm:
            parts.append(f"ROCm {self.rocm}")
        if not parts:
            parts.append("CPU only")
        if not self.engine:
            parts.append("no engine")
        if not self.cron:
            parts.append("no cron")
        if not self.registry:
            parts.append("no registry route")
        if self.link_kbit:
            parts.append(f"link {self.link_kbit} kbit/s")
        if self.docker_disk_mib:
            parts.append(f"disk {self.docker_disk_mib} MiB")
        return ", ".join(parts)


REGISTRY_KINDS = ("secure", "open")


@dataclass(frozen=True)
class LabSpec:
    subnet: ipaddress.IPv4Network
    hosts: Tuple[HostProfile, ...]
    source: str = "<built-in>"
    # secure: TLS with the lab's own CA and credentials required, like a real private
    # registry; open: plain HTTP, anonymous (for a test that needs one).
    registry: str = "secure"
    # host name -> file:line of its entry, for messages about a host
    where: Dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def controller_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def address(self, index: int) -> str:
        """The address of the index-th host (0-based): .2, .3, ... of the subnet."""
        return str(self.subnet.network_address + 2 + index)


_HOST_KEYS = {
    "gpus", "nvidia_driver", "container_toolkit", "nvidia_kernel_module", "nvidia_smi", "rocm",
    "jetson", "docker_disk_mib", "link_kbit", "registry", "engine", "cron",
}  # fmt: skip
_GPU_KEYS = {"vendor", "model", "memory_mib", "compute_capability", "gfx"}
_JETSON_KEYS = {"l4t", "soc", "model", "release_file"}


def load_profiles(path: Optional[Path] = None) -> LabSpec:
    """Read lab profiles from a YAML file, or the built-in default five hosts."""
    if path is None:
        return parse_profiles(load_yaml_text(DEFAULT_PROFILES_YAML, "<built-in profiles>"))
    return parse_profiles(load_yaml_file(path))


def parse_profiles(doc: Any) -> LabSpec:
    """Validate a parsed profiles document; every error names the file:line and the key."""
    if not isinstance(doc, LocatedDict):
        raise ConfigError("expected a mapping with a `hosts:` key", where=_where(doc))
    _no_unknown(doc, {"hosts", "subnet", "registry"}, "the top level")
    subnet = _subnet(doc)
    registry = str(doc.get("registry", "secure"))
    if registry not in REGISTRY_KINDS:
        raise ConfigError(
            f"`registry` must be secure or open, not {registry!r}", where=doc.where("registry")
        )
    hosts_doc = doc.get("hosts")
    if not isinstance(hosts_doc, LocatedDict) or not hosts_doc:
        raise ConfigError(
            "`hosts` must be a mapping of host names to profiles", where=doc.where("hosts")
        )
    hosts: List[HostProfile] = []
    where: Dict[str, str] = {}
    for pattern, body in hosts_doc.items():
        loc = hosts_doc.where(pattern)
        try:
            names = expand_host_pattern(str(pattern))
        except ValueError as exc:
            raise ConfigError(str(exc), where=loc) from None
        for name in names:
            if not _NAME.fullmatch(name):
                raise ConfigError(
                    f"host name {name!r} is not valid",
                    where=loc,
                    hint="use 1-32 lowercase letters, digits and dashes",
                )
            if name in where:
                raise ConfigError(f"duplicate host {name!r} (also at {where[name]})", where=loc)
            hosts.append(_host(name, body, loc))
            where[name] = loc
    capacity = subnet.num_addresses - 3  # network, broadcast, the controller side
    if len(hosts) > capacity:
        raise ConfigError(
            f"{len(hosts)} hosts do not fit in subnet {subnet} (room for {capacity})",
            where=doc.where("hosts"),
            hint="use a larger `subnet:`",
        )
    return LabSpec(
        subnet=subnet, hosts=tuple(hosts), source=doc.source, where=where, registry=registry
    )


def _subnet(doc: LocatedDict) -> ipaddress.IPv4Network:
    text = doc.get("subnet", DEFAULT_SUBNET)
    try:
        net = ipaddress.IPv4Network(str(text), strict=True)
    except ValueError as exc:
        raise ConfigError(
            f"`subnet` is not an IPv4 network: {exc}", where=doc.where("subnet")
        ) from None
    if net.prefixlen > 29 or not net.is_private:
        raise ConfigError(
            f"`subnet` {net} must be a private network of at least /29", where=doc.where("subnet")
        )
    return net


def _host(name: str, body: Any, loc: str) -> HostProfile:
    if body is None:
        return HostProfile(name=name)
    if not isinstance(body, LocatedDict):
        raise ConfigError(f"host {name!r}: expected a mapping of profile keys", where=loc)
    _no_unknown(body, _HOST_KEYS, f"host {name!r}")
    gpus = _gpus(name, body)
    jetson = _jetson(name, body)
    driver = _opt(body, "nvidia_driver", _version_text, f"host {name!r}")
    rocm = _opt(body, "rocm", _version_text, f"host {name!r}")
    toolkit = _opt(body, "container_toolkit", _bool, f"host {name!r}")
    has_nvidia = any(g.vendor == "nvidia" for g in gpus)
    if has_nvidia and not driver:
        raise ConfigError(
            f"host {name!r} has NVIDIA GPUs but no `nvidia_driver`", where=loc,
            hint='add e.g. nvidia_driver: "550.54.15"',
        )  # fmt: skip
    if driver and not has_nvidia:
        raise ConfigError(
            f"host {name!r}: `nvidia_driver` without an NVIDIA GPU in `gpus`",
            where=body.where("nvidia_driver"),
        )
    if toolkit and not (driver or jetson):
        raise ConfigError(
            f"host {name!r}: `container_toolkit` needs an NVIDIA driver or a Jetson",
            where=body.where("container_toolkit"),
        )
    if rocm and not any(g.vendor == "amd" for g in gpus):
        raise ConfigError(
            f"host {name!r}: `rocm` without an AMD GPU in `gpus`", where=body.where("rocm")
        )
    if jetson and gpus:
        raise ConfigError(
            f"host {name!r}: a Jetson's GPU is described by `jetson:`, not `gpus:`",
            where=body.where("gpus"),
        )
    return HostProfile(
        name=name,
        gpus=gpus,
        nvidia_driver=driver,
        container_toolkit=bool(toolkit),
        nvidia_kernel_module=_opt(
            body, "nvidia_kernel_module", _choice("proprietary", "open"), name
        ) or "proprietary",
        nvidia_smi=_opt(body, "nvidia_smi", _choice("ok", "mismatch", "hang"), name) or "ok",
        rocm=rocm,
        jetson=jetson,
        docker_disk_mib=_opt(body, "docker_disk_mib", _int_at_least(64), name),
        link_kbit=_opt(body, "link_kbit", _int_at_least(8), name),
        registry=_opt(body, "registry", _bool, name) is not False,
        engine=_opt(body, "engine", _bool, name) is not False,
        cron=_opt(body, "cron", _bool, name) is not False,
    )  # fmt: skip


def _gpus(name: str, body: LocatedDict) -> Tuple[GpuSpec, ...]:
    raw = body.get("gpus")
    if raw is None:
        return ()
    if not isinstance(raw, LocatedList):
        raise ConfigError(f"host {name!r}: `gpus` must be a list", where=body.where("gpus"))
    gpus = []
    for i, item in enumerate(raw):
        loc = raw.where(i)
        if not isinstance(item, LocatedDict):
            raise ConfigError(f"host {name!r}: each GPU must be a mapping", where=loc)
        _no_unknown(item, _GPU_KEYS, f"host {name!r} GPU {i}")
        vendor = _req(item, "vendor", _choice("nvidia", "amd", "intel"), name)
        model = _req(item, "model", _text, name)
        memory = _opt(item, "memory_mib", _int_at_least(1), name) or 0
        cc = _opt(item, "compute_capability", _compute_capability, name)
        gfx = _opt(item, "gfx", _gfx, name)
        if vendor == "nvidia" and not cc:
            raise ConfigError(
                f'host {name!r}: NVIDIA GPU needs `compute_capability` (e.g. "8.0")', where=loc
            )
        if vendor == "amd" and not gfx:
            raise ConfigError(f"host {name!r}: AMD GPU needs `gfx` (e.g. gfx90a)", where=loc)
        if vendor != "nvidia" and cc:
            raise ConfigError(f"host {name!r}: `compute_capability` is NVIDIA only", where=loc)
        if vendor != "amd" and gfx:
            raise ConfigError(f"host {name!r}: `gfx` is AMD only", where=loc)
        gpus.append(GpuSpec(vendor, model, memory, cc, gfx))
    return tuple(gpus)


def _jetson(name: str, body: LocatedDict) -> Optional[JetsonSpec]:
    raw = body.get("jetson")
    if raw is None:
        return None
    if not isinstance(raw, LocatedDict):
        raise ConfigError(f"host {name!r}: `jetson` must be a mapping", where=body.where("jetson"))
    _no_unknown(raw, _JETSON_KEYS, f"host {name!r} jetson")
    l4t = _req(raw, "l4t", _version_text, name)
    soc = _req(raw, "soc", _choice(*JETSON_SOCS), name)
    model = _opt(raw, "model", _text, name) or JETSON_SOCS[soc][1]
    release_file = _opt(raw, "release_file", _bool, name)
    return JetsonSpec(l4t=l4t, soc=soc, model=model, release_file=release_file is not False)


# --- small typed readers: each returns the value or raises ValueError(expected) ---------


def _no_unknown(mapping: LocatedDict, allowed: set, what: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r} in {what}",
                where=mapping.where(key),
                hint="expected one of: " + ", ".join(sorted(allowed)),
            )


def _req(mapping: LocatedDict, key: str, read: Callable[[Any], Any], host: str) -> Any:
    if key not in mapping or mapping[key] is None:
        raise ConfigError(f"host {host!r}: missing `{key}`", where=mapping.where())
    return _opt(mapping, key, read, host)


def _opt(mapping: LocatedDict, key: str, read: Callable[[Any], Any], host: str) -> Any:
    if mapping.get(key) is None:
        return None
    try:
        return read(mapping[key])
    except ValueError as exc:
        raise ConfigError(
            f"`{key}` of {host!r}: {exc} (got {mapping[key]!r})", where=mapping.where(key)
        ) from None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _version_text(value: Any) -> str:
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise ValueError('expected a quoted version like "550.54.15"')
    return value


def _compute_capability(value: Any) -> str:
    if not isinstance(value, str) or not _CC.fullmatch(value):
        raise ValueError('expected a quoted compute capability like "8.0"')
    return value


def _gfx(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an AMD target like gfx90a")
    gfx_target_version(value)  # raises ValueError on a bad name
    return value.lower()


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def read(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected a whole number of at least {minimum}")
        return value

    return read


def _choice(*allowed: str) -> Callable[[Any], str]:
    def read(value: Any) -> str:
        if value not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return str(value)

    return read


def _where(doc: Any) -> str:
    return doc.where() if isinstance(doc, (LocatedDict, LocatedList)) else "profiles"
