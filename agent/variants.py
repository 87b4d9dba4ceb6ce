"""Image variants: what each image of a model was built for, parsed from a playbook's
`variants:` list and validated key by key (pure).

A variant is a description of an image (GPU vendor, CUDA/L4T/ROCm release, architectures,
what it needs of the GPUs), not a filter expression; `selection` decides where it runs.

Keys (a YAML/JSON mapping per list item):

- `name` (required): `[a-z0-9][a-z0-9._-]{0,62}` (the whole name), unique within the list.
- `image`: the image reference or tag suffix; carried along, not interpreted here.
- `digest`: the manifest digest (`sha256:` and 64 hex digits) the image's tag named when the
  deployment started: the controller pins it, and hosts pull these bits whatever the tag
  names later (a playbook may pin one itself).
- `gpu`: `nvidia` | `amd` | `intel` | `none` (absent: `none`, a CPU image that runs anywhere).
- `platform` (gpu nvidia): `dgpu` (absent: a discrete-GPU/server image) or `jetson` (an L4T
  image). A dGPU image never fits a Jetson and vice versa.
- `cuda` (required for gpu nvidia dgpu): the CUDA toolkit the image is built with, a quoted
  `"major.minor"` string.
- `cuda_minor_compat` (gpu nvidia dgpu, default true): the image may rely on NVIDIA's
  minor-version compatibility (any 12.x runs on a driver >= 525); false applies the full
  driver table (12.2 needs >= 535.54.03).
- `min_compute_capability` (gpu nvidia): a quoted `"major.minor"`, e.g. `"7.0"`.
- `min_gpu_memory_mib` (GPU variants): the memory each counted GPU must have.
- `min_gpus` (GPU variants, default 1): how many host GPUs must meet every per-GPU
  requirement (compute capability, memory, gfx).
- `arch`: a list of CPU architectures (`x86_64`, `aarch64`; `amd64` and `arm64` are
  accepted as aliases); absent: any.
- `l4t` (required for platform jetson): the L4T release, e.g. `"36.4"`.
- `rocm` (gpu amd): the ROCm release the image is built with, e.g. `"6.0"`.
- `gfx` (gpu amd): a list of AMD GPU targets, e.g. `[gfx90a, gfx942]`; absent: any.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mlfleet.agent.cuda import min_driver_for_cuda
from mlfleet.agent.rocm import gfx_target_version

GPU_VENDORS = ("nvidia", "amd", "intel", "none")
NVIDIA_PLATFORMS = ("dgpu", "jetson")

# Alias -> the name `uname -m` (and HostFacts.arch) uses.
ARCH_ALIASES: Dict[str, str] = {"amd64": "x86_64", "arm64": "aarch64"}
KNOWN_ARCHES = ("x86_64", "aarch64", "ppc64le", "s390x", "armv7l", "riscv64")

# Matched whole (re.fullmatch: `$` would let a trailing newline through), ASCII digits only.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_MAJOR_MINOR = re.compile(r"[0-9]+\.[0-9]+")
_RELEASE = re.compile(r"[0-9]+\.[0-9]+(\.[0-9]+)?")
_CC = re.compile(r"[0-9]+\.[0-9]")

_KEYS = (
    "name", "image", "gpu", "platform", "cuda", "cuda_minor_compat", "min_compute_capability",
    "min_gpu_memory_mib", "min_gpus", "arch", "l4t", "rocm", "gfx", "digest",
)  # fmt: skip
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class VariantError(ValueError):
    """A variant in a playbook is malformed; the message names the variant and the key."""


@dataclass(frozen=True)
class Variant:
    """One image of a model and what it was built for."""

    name: str
    image: Optional[str] = None
    gpu: str = "none"  # nvidia | amd | intel | none
    platform: Optional[str] = None  # nvidia only: dgpu | jetson
    cuda: Optional[str] = None  # nvidia dgpu: "12.2"
    cuda_minor_compat: bool = True
    min_compute_capability: Optional[str] = None  # nvidia: "7.0"
    min_gpu_memory_mib: Optional[int] = None
    min_gpus: int = 0  # 1 by default for GPU variants, 0 for CPU variants
    arch: Tuple[str, ...] = ()  # empty: any architecture
    l4t: Optional[str] = None  # nvidia jetson: "36.4"
    rocm: Optional[str] = None  # amd: "6.0"
    gfx: Tuple[str, ...] = ()  # amd; empty: any target
    digest: Optional[str] = None  # the pinned manifest digest of `image`

    @property
    def is_gpu(self) -> bool:
        return self.gpu != "none"

    @property
    def is_jetson(self) -> bool:
        return self.gpu == "nvidia" and self.platform == "jetson"

    @classmethod
    def from_dict(cls, data: Any, index: Optional[int] = None) -> Variant:
        """Parse one `variants:` item; raises VariantError naming the variant and the key."""
        return _parse(data, index)

    def to_dict(self) -> Dict[str, Any]:
        """The playbook form (keys left at their defaults are omitted); from_dict reads it."""
        out: Dict[str, Any] = {"name": self.name}
        if self.image is not None:
            out["image"] = self.image
        if self.is_gpu:
            out["gpu"] = self.gpu
        if self.gpu == "nvidia":
            out["platform"] = self.platform
        for key in ("cuda", "min_compute_capability", "min_gpu_memory_mib", "l4t", "rocm"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.gpu == "nvidia" and not self.is_jetson and not self.cuda_minor_compat:
            out["cuda_minor_compat"] = False
        if self.is_gpu and self.min_gpus != 1:
            out["min_gpus"] = self.min_gpus
        if self.arch:
            out["arch"] = list(self.arch)
        if self.gfx:
            out["gfx"] = list(self.gfx)
        if self.digest is not None:
            out["digest"] = self.digest
        return out


def parse_variants(items: Any) -> List[Variant]:
    """Parse a playbook's `variants:` list, in order; duplicate names are an error."""
    if not isinstance(items, list):
        raise VariantError(f"variants: expected a list of mappings, got {type(items).__name__}")
    if not items:
        raise VariantError("variants: the list is empty; list at least one variant")
    variants: List[Variant] = []
    seen: Dict[str, int] = {}
    for index, item in enumerate(items):
        variant = _parse(item, index)
        if variant.name in seen:
            raise VariantError(
                f"variants[{index}] ({variant.name}): name {variant.name!r} is already used by"
                f" variants[{seen[variant.name]}]; every variant needs its own name"
            )
        seen[variant.name] = index
        variants.append(variant)
    return variants


def _parse(data: Any, index: Optional[int]) -> Variant:
    where = f"variants[{index}]" if index is not None else "variant"
    if not isinstance(data, dict):
        raise VariantError(
            f"{where}: expected a mapping like {{name: cpu}}, got {type(data).__name__}"
        )
    name = data.get("name")
    if name is None:
        raise VariantError(f"{where}: `name` is required")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise VariantError(
            f"{where}: `name` must be 1-63 lowercase letters, digits, '.', '_' or '-',"
            f" starting with a letter or digit; got {name!r}"
        )
    where = f"{where} ({name})" if index is not None else f"variant {name}"

    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise VariantError(
            f"{where}: unknown key {', '.join(repr(k) for k in unknown)};"
            f" known keys: {', '.join(_KEYS)}"
        )

    def get(key: str, check: Callable[[Any, str], Any]) -> Any:
        value = data.get(key)
        return None if value is None else check(value, f"{where}: `{key}`")

    gpu = get("gpu", _choice(GPU_VENDORS)) or "none"
    platform = get("platform", _choice(NVIDIA_PLATFORMS))
    if gpu == "nvidia":
        platform = platform or "dgpu"
    jetson, dgpu = platform == "jetson", platform == "dgpu"

    def only_for(key: str, allowed: bool, what: str) -> None:
        if key in data and not allowed:
            raise VariantError(
                f"{where}: `{key}` applies only to {what} (this variant has gpu {gpu})"
            )

    only_for("platform", gpu == "nvidia", "gpu nvidia variants")
    only_for("min_compute_capability", gpu == "nvidia", "gpu nvidia variants")
    only_for("min_gpu_memory_mib", gpu != "none", "GPU variants")
    only_for("min_gpus", gpu != "none", "GPU variants")
    only_for("rocm", gpu == "amd", "gpu amd variants")
    only_for("gfx", gpu == "amd", "gpu amd variants")
    if jetson and ("cuda" in data or "cuda_minor_compat" in data):
        raise VariantError(
            f"{where}: `cuda` and `cuda_minor_compat` apply to discrete-GPU images; a Jetson"
            " image's CUDA comes with its L4T release (set `l4t`)"
        )
    only_for("cuda", dgpu, "gpu nvidia variants")
    only_for("cuda_minor_compat", dgpu, "gpu nvidia variants")
    only_for("l4t", jetson, "gpu nvidia variants with platform jetson")

    cuda = get("cuda", _cuda)
    if dgpu and cuda is None:
        raise VariantError(
            f"{where}: `cuda` is required for a gpu nvidia image: the CUDA toolkit it is built"
            f' with, e.g. cuda: "12.2"'
        )
    l4t = get("l4t", _version_string(_RELEASE, '"36.4" or "35.3.1"'))
    if jetson and l4t is None:
        raise VariantError(
            f"{where}: `l4t` is required for platform jetson: the L4T release the image is"
            f' built for, e.g. l4t: "36.4"'
        )
    minor_compat = get("cuda_minor_compat", _bool)
    min_gpus = get("min_gpus", _positive_int)
    return Variant(
        name=name,
        image=get("image", _text),
        gpu=gpu,
        platform=platform,
        cuda=cuda,
        cuda_minor_compat=True if minor_compat is None else minor_compat,
        min_compute_capability=get("min_compute_capability", _version_string(_CC, '"7.0"')),
        min_gpu_memory_mib=get("min_gpu_memory_mib", _positive_int),
        min_gpus=(min_gpus or 1) if gpu != "none" else 0,
        arch=get("arch", _arch_list) or (),
        l4t=l4t,
        rocm=get("rocm", _version_string(_RELEASE, '"6.0"')),
        gfx=get("gfx", _gfx_list) or (),
        digest=get("digest", _digest),
    )


def _digest(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise VariantError(f"{what} must be sha256: and 64 lowercase hex digits; got {value!r}")
    return value


def _choice(options: Sequence[str]) -> Callable[[Any, str], str]:
    def check(value: Any, what: str) -> str:
        if value not in options:
            raise VariantError(f"{what} must be one of {', '.join(options)}; got {value!r}")
        return value

    return check


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise VariantError(f"{what} must be a non-empty string; got {value!r}")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise VariantError(f"{what} must be true or false; got {value!r}")
    return value


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VariantError(f"{what} must be a whole number >= 1; got {value!r}")
    return value


def _version_string(pattern: re.Pattern, example: str) -> Callable[[Any, str], str]:
    def check(value: Any, what: str) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # YAML reads 12.10 as the number 12.1: versions must be quoted.
            raise VariantError(
                f"{what} must be a quoted string like {example}; got the number {value!r}"
            )
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise VariantError(f"{what} must be a version like {example}; got {value!r}")
        return value

    return check


def _cuda(value: Any, what: str) -> str:
    text = _version_string(_MAJOR_MINOR, '"12.2"')(value, what)
    major, minor = (int(p) for p in text.split("."))
    # Catch a release the driver table cannot place here rather than on every host.
    if min_driver_for_cuda((major, minor), minor_compat=False) is None:
        raise VariantError(
            f"{what}: CUDA {text} is outside this agent's driver table (CUDA 11.0 to 13.x)"
        )
    return text


def _arch_list(value: Any, what: str) -> Tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise VariantError(f"{what} must be a non-empty list like [x86_64]; got {value!r}")
    out: List[str] = []
    for item in value:
        arch = ARCH_ALIASES.get(item, item) if isinstance(item, str) else item
        if arch not in KNOWN_ARCHES:
            raise VariantError(
                f"{what}: unknown architecture {item!r}; expected one of"
                f" {', '.join(KNOWN_ARCHES)} (or amd64, arm64)"
            )
        if arch not in out:
            out.append(arch)
    return tuple(out)


def _gfx_list(value: Any, what: str) -> Tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise VariantError(f"{what} must be a non-empty list like [gfx90a, gfx942]; got {value!r}")
    out: List[str] = []
    for item in value:
        if not isinstance(item, str) or item != item.strip():
            raise VariantError(f"{what}: expected AMD GPU targets like gfx90a; got {item!r}")
        try:
            gfx_target_version(item)
        except ValueError:
            raise VariantError(
                f"{what}: {item!r} is not an AMD GPU target; expected names like gfx90a, gfx1100"
            ) from None
        if item.lower() not in out:
            out.append(item.lower())
    return tuple(out)


def normalize_arch(arch: str) -> str:
    """'amd64' -> 'x86_64', 'arm64' -> 'aarch64'; other names unchanged."""
    return ARCH_ALIASES.get(arch, arch)
