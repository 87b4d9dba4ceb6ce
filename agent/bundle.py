"""The agent as one self-contained zipapp (`mlfleet-agent.pyz`), built from the installed
packages: the agent itself plus its pure-Python helpers (PyYAML without its C extension,
NVML bindings). One file serves x86_64 and arm64 hosts alike; hosts need only python3."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Tuple


class BundleError(Exception):
    """The agent cannot be bundled (a package is missing)."""


_FIXED_TIME = (2026, 1, 1, 0, 0, 0)  # reproducible bytes: the same agent, the same hash
_SHEBANG = b"#!/usr/bin/env python3\n"


@dataclass(frozen=True)
class AgentBundle:
    path: Path
    sha256: str
    size: int


def _package_files(name: str) -> Iterator[Tuple[str, Path]]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BundleError(f"package {name} is not installed (pip install mlfleet)")
    top = Path(next(iter(spec.submodule_search_locations)))
    arc_root = name.replace(".", "/")
    for path in sorted(top.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield f"{arc_root}/{path.relative_to(top).as_posix()}", path


def _module_file(name: str) -> Iterator[Tuple[str, Path]]:
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.origin:
        yield f"{name}.py", Path(spec.origin)


def bundle_files() -> Dict[str, bytes]:
    main = (Path(__file__).parent / "zipmain.py").read_bytes()  # runs from its unpacked cache
    files: Dict[str, bytes] = {"__main__.py": main, "mlfleet/__init__.py": b""}
    for arcname, path in [
        *_package_files("mlfleet.agent"),
        *_package_files("yaml"),  # pure-Python PyYAML: its C extension is left out
        *_module_file("pynvml"),
    ]:
        files[arcname] = path.read_bytes()
    return files


def build_zipapp(out_dir: Path) -> AgentBundle:
    """Write `mlfleet-agent.pyz` into out_dir (reproducibly) and return its hash."""
    buf = io.BytesIO()
    buf.write(_SHEBANG)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in sorted(bundle_files().items()):
            info = zipfile.ZipInfo(arcname, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    data = buf.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "mlfleet-agent.pyz"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(path)
    return AgentBundle(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
