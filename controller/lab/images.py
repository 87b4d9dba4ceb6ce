"""The lab's model images, built without a Docker daemon and without internet.

Layers: a Debian base made by debootstrap (python3 + numpy; cached between runs), an app
layer (the model server and its non-root user) shared by every tag and variant, and a
top layer of a few hundred bytes per tag and variant. So an update between tags ships
kilobytes, as the delivery benchmarks need. Manifests are Docker schema 2.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from mlfleet.agent.cuda import min_driver_for_cuda
from mlfleet.controller.errors import LabError
from mlfleet.controller.registry import (
    CONFIG_V1,
    LAYER_GZIP,
    MANIFEST_LIST,
    MANIFEST_V2,
    Registry,
    sha256_digest,
)

REPOSITORY = "mlfleet-lab/sentiment"
TAGS = ("v1", "v2", "v3", "v4", "v5")
# What each tag does once started (see image/server.py).
TAG_BEHAVIOUR = {"v1": "healthy", "v2": "healthy", "v3": "healthy", "v4": "never", "v5": "dies"}
VARIANTS: Dict[str, Optional[Dict[str, str]]] = {
    "cpu": None,
    "cuda12": {"kind": "cuda", "version": "12.2"},
    "cuda11": {"kind": "cuda", "version": "11.8"},
    "rocm": {"kind": "rocm", "version": "6.0"},
}
MODEL_UID = 10001
SERVER_PORT = 8080
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-numpy")
# Bump when the base recipe changes, so the cache is rebuilt.
_BASE_RECIPE = 2
_FIXED_MTIME = 1767225600  # 2026-01-01: layers are byte-for-byte reproducible

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Layer:
    path: Path  # the gzip-compressed tar
    digest: str  # sha256 of the compressed bytes
    diff_id: str  # sha256 of the uncompressed tar
    size: int


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (the only one reachable here)."""
    candidates: List[Path] = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        match = re.search(r"^URIs:\s*(\S+)", path.read_text(), re.M)
        if match and "security" not in match.group(1):
            return match.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        match = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+\s+main", legacy.read_text(), re.M)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def base_layer(cache: Path, progress: Progress) -> Layer:
    """The Debian base layer, from the cache or built with debootstrap (about a minute)."""
    key = hashlib.sha256(
        json.dumps([_BASE_RECIPE, BASE_SUITE, BASE_PACKAGES, platform.machine()]).encode()
    ).hexdigest()[:16]
    meta_path = cache / f"base-{key}.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        layer = Layer(Path(meta["path"]), meta["digest"], meta["diff_id"], meta["size"])
        if layer.path.exists() and layer.path.stat().st_size == layer.size:
            return layer
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        mirror = debian_mirror()
        progress(f"building the Debian base image with debootstrap from {mirror} (once)")
        cmd = [
            "debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
            BASE_SUITE, str(rootfs), mirror,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            raise LabError("debootstrap failed: " + " | ".join(tail), hint=f"mirror {mirror}")
        _slim(rootfs)
        out = cache / f"base-{key}.tar.gz"
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--sort=name", "--numeric-owner", "-cf", "-", "."],
            stdout=subprocess.PIPE,
        )
        stdout = tar.stdout  # a local: the narrowing below holds inside the lambda
        assert stdout is not None
        layer = _compress_stream(iter(lambda: stdout.read(1 << 20), b""), out)
        if tar.wait() != 0:
            raise LabError("tar of the Debian base failed")
    meta_path.write_text(json.dumps({**asdict(layer), "path": str(layer.path)}))
    return layer


def _slim(rootfs: Path) -> None:
    """Drop what a runtime image does not need (apt caches, docs, device nodes)."""
    for rel in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                "usr/share/info", "usr/share/locale", "dev"):  # fmt: skip
        target = rootfs / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()


def _compress_stream(chunks: Iterable[bytes], out: Path, level: int = 6) -> Layer:
    diff = hashlib.sha256()
    comp = hashlib.sha256()
    # wbits=31: gzip framing; mtime stays 0 so the bytes are reproducible.
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    size = 0
    with out.open("wb") as fh:
        for chunk in chunks:
            diff.update(chunk)
            data = compressor.compress(chunk)
            comp.update(data)
            size += len(data)
            fh.write(data)
        data = compressor.flush()
        comp.update(data)
        size += len(data)
        fh.write(data)
    return Layer(out, "sha256:" + comp.hexdigest(), "sha256:" + diff.hexdigest(), size)


def _tar_layer(files: Dict[str, Tuple[bytes, int]], out: Path) -> Layer:
    """A small layer from {path: (content, mode)}, parents included, reproducibly."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted(
            {str(Path(p).parents[i]) for p in files for i in range(len(Path(p).parents) - 1)}
        )
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _FIXED_MTIME
            tar.addfile(info)
        for path in sorted(files):
            content, mode = files[path]
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), mode, _FIXED_MTIME
            tar.addfile(info, io.BytesIO(content))
    return _compress_stream([buf.getvalue()], out)


def app_layer(cache: Path, base_rootfs_files: Dict[str, bytes]) -> Layer:
    """The model server and its user; identical for every tag and variant."""
    server = resources.files("mlfleet.controller.lab.image").joinpath("server.py").read_bytes()
    passwd = (
        base_rootfs_files["etc/passwd"]
        + f"model:x:{MODEL_UID}:{MODEL_UID}:model server:/nonexistent:/usr/sbin/nologin\n".encode()
    )
    group = base_rootfs_files["etc/group"] + f"model:x:{MODEL_UID}:\n".encode()
    files = {
        "opt/mlfleet/server.py": (server, 0o644),
        "etc/passwd": (passwd, 0o644),
        "etc/group": (group, 0o644),
    }
    return _tar_layer(files, cache / "app-layer.tar.gz")


def image_info(tag: str, variant: str) -> Dict[str, object]:
    """What the image knows about itself (/etc/mlfleet/image.json in the image). Tags other
    than TAGS (the payload images) behave like a healthy release."""
    accel = VARIANTS[variant]
    accelerator: Optional[Dict[str, str]] = None
    if accel and accel["kind"] == "cuda":
        major, minor = (int(p) for p in accel["version"].split("."))
        # Built with the CUDA runtime's minor-version compatibility, like NGC images.
        accelerator = {**accel, "min_driver": min_driver_for_cuda((major, minor), True) or ""}
    elif accel:
        accelerator = dict(accel)
    return {
        "model": "sentiment",
        "tag": tag,
        "variant": variant,
        "behaviour": TAG_BEHAVIOUR.get(tag, "healthy"),
        "accelerator": accelerator,
    }


def top_layer(cache: Path, tag: str, variant: str) -> Layer:
    info = json.dumps(image_info(tag, variant), indent=2, sort_keys=True).encode() + b"\n"
    return _tar_layer(
        {"etc/mlfleet/image.json": (info, 0o644)}, cache / f"top-{tag}-{variant}.tar.gz"
    )


_HEALTHCHECK = (
    "import os,urllib.request;"
    "urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT','8080'), timeout=2)"
)


def image_config(layers: List[Layer], tag: str, variant: str) -> bytes:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {
            "User": f"{MODEL_UID}:{MODEL_UID}",
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "PYTHONDONTWRITEBYTECODE=1",
                "PYTHONUNBUFFERED=1",
                "MODEL_DATA=/data",
                f"PORT={SERVER_PORT}",
            ],
            "Cmd": ["python3", "/opt/mlfleet/server.py"],
            "WorkingDir": "/opt/mlfleet",
            "ExposedPorts": {f"{SERVER_PORT}/tcp": {}},
            "Healthcheck": {
                "Test": ["CMD", "python3", "-c", _HEALTHCHECK],
                "Interval": 2_000_000_000,
                "Timeout": 3_000_000_000,
                "StartPeriod": 5_000_000_000,
                "Retries": 3,
            },
            "Labels": {
                "org.opencontainers.image.title": "mlfleet-lab sentiment",
                "org.opencontainers.image.version": tag,
                "io.mlfleet.variant": variant,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": "2026-01-01T00:00:00Z", "created_by": "mlfleet lab"} for _ in layers
        ],
    }
    return json.dumps(config, sort_keys=True).encode()


def manifest(config: bytes, layers: List[Layer]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": sha256_digest(config)},
        "layers": [
            {"mediaType": LAYER_GZIP, "size": layer.size, "digest": layer.digest}
            for layer in layers
        ],
    }
    return json.dumps(doc, indent=3).encode()


def _base_files(base: Layer, names: Tuple[str, ...]) -> Dict[str, bytes]:
    """Read a few files out of the base layer (for the app layer's /etc/passwd)."""
    wanted = {f"./{n}" for n in names} | set(names)
    found: Dict[str, bytes] = {}
    with gzip.open(base.path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                fh = tar.extractfile(member)
                assert fh is not None
                found[member.name.lstrip("./")] = fh.read()
                if len(found) == len(names):
                    break
    return found


def build_and_push(registry: Registry, cache: Path, progress: Progress) -> List[str]:
    """Build every tag x variant and push it; returns the references pushed."""
    base = base_layer(cache, progress)
    app = app_layer(cache, _base_files(base, ("etc/passwd", "etc/group")))
    registry.push_blob(REPOSITORY, base.digest, base.path)
    registry.push_blob(REPOSITORY, app.digest, app.path)
    refs = []
    for tag in TAGS:
        for variant in VARIANTS:
            top = top_layer(cache, tag, variant)
            layers = [base, app, top]
            config = image_config(layers, tag, variant)
            registry.push_blob(REPOSITORY, top.digest, top.path)
            registry.push_blob(REPOSITORY, sha256_digest(config), config)
            registry.put_manifest(
                REPOSITORY, f"{tag}-{variant}", manifest(config, layers), MANIFEST_V2
            )
            refs.append(f"{registry.address}/{REPOSITORY}:{tag}-{variant}")
    progress(f"pushed {len(refs)} images to {registry.address}/{REPOSITORY}")
    return refs


def payload_layer(cache: Path, tag: str, payload_mib: int) -> Layer:
    """A layer of incompressible bytes (seeded by the tag, so rebuilding gives the same
    layer): what a model's weights look like to gzip. Streamed, a MiB at a time: a 2 GiB
    layer is never held in memory."""
    out = cache / f"payload-{tag}.tar.gz"
    return _compress_stream(_payload_tar(f"{tag}/{payload_mib}", payload_mib), out, level=1)


def _payload_tar(seed: str, mib: int) -> Iterator[bytes]:
    """The tar stream of opt/mlfleet/payload.bin (`mib` MiB of seeded random bytes)."""
    for directory in ("opt", "opt/mlfleet"):
        info = tarfile.TarInfo(directory)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _FIXED_MTIME
        yield info.tobuf(tarfile.PAX_FORMAT)
    info = tarfile.TarInfo("opt/mlfleet/payload.bin")
    info.size, info.mode, info.mtime = mib << 20, 0o644, _FIXED_MTIME
    yield info.tobuf(tarfile.PAX_FORMAT)
    rng = random.Random(seed)
    for _ in range(mib):
        yield rng.randbytes(1 << 20)  # whole 512-byte blocks: no padding needed
    yield bytes(2 * tarfile.BLOCKSIZE)  # the end-of-archive marker


def push_payload_image(registry: Registry, cache: Path, tag: str, payload_mib: int) -> List[Layer]:
    """Push `{tag}-{variant}` for every variant: the lab's healthy release plus a layer of
    `payload_mib` MiB of incompressible bytes before its top layer. For the delivery tests
    and benchmarks: one large layer to cut a link in the middle of, or to meter. The base
    and app layers are the lab's (already on the registry after `lab up`). Returns the layers
    of the cpu variant."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,40}", tag) or tag in TAGS:
        raise LabError(f"payload image tag {tag!r}: lower-case letters, digits, . _ -; not {TAGS}")
    base = base_layer(cache, lambda _msg: None)
    app = app_layer(cache, _base_files(base, ("etc/passwd", "etc/group")))
    payload = payload_layer(cache, tag, payload_mib)
    for layer in (base, app, payload):
        registry.push_blob(REPOSITORY, layer.digest, layer.path)
    pushed: List[Layer] = []
    for variant in VARIANTS:
        layers = [base, app, payload, top_layer(cache, tag, variant)]
        config = image_config(layers, tag, variant)
        registry.push_blob(REPOSITORY, layers[-1].digest, layers[-1].path)
        registry.push_blob(REPOSITORY, sha256_digest(config), config)
        registry.put_manifest(REPOSITORY, f"{tag}-{variant}", manifest(config, layers), MANIFEST_V2)
        if variant == "cpu":
            pushed = layers
    return pushed


PLATFORMS = {"amd64": ("amd64", ""), "arm64": ("arm64", "v8")}


def push_index_image(registry: Registry, tag: str, platforms: Tuple[str, ...],
                     source_tag: str = "v1") -> List[str]:  # fmt: skip
    """Push `{tag}-{variant}` for every variant as a multi-platform image index, with an
    entry for each of `platforms` (`amd64`, `arm64`). Each entry is the lab's `source_tag`
    image with its config's architecture set: the amd64 one runs on the lab's hosts, the
    others only name their platform (the lab has no arm64 machine; nothing pulls them). For
    the tests of platform choice and of refusals naming the platforms an index has. Returns
    the index digests."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,40}", tag) or tag in TAGS:
        raise LabError(f"index image tag {tag!r}: lower-case letters, digits, . _ -; not {TAGS}")
    digests = []
    for variant in VARIANTS:
        found = registry.get_manifest(REPOSITORY, f"{source_tag}-{variant}")
        if found is None:
            raise LabError(f"the lab registry has no {source_tag}-{variant} to build {tag} from")
        source, _ = found
        config = json.loads(b"".join(registry.blob_chunks(REPOSITORY, source["config"]["digest"])))
        config.pop("variant", None)
        entries = []
        for name in platforms:
            arch, arm_variant = PLATFORMS[name]
            entry_config = dict(config, architecture=arch)
            if arm_variant:
                entry_config["variant"] = arm_variant
            blob = json.dumps(entry_config).encode()
            registry.push_blob(REPOSITORY, sha256_digest(blob), blob)
            raw = json.dumps(dict(source, config=dict(
                source["config"], digest=sha256_digest(blob), size=len(blob)))).encode()  # fmt: skip
            digest = registry.put_manifest(REPOSITORY, sha256_digest(raw), raw, MANIFEST_V2)
            platform_ = {"architecture": arch, "os": "linux"}
            if arm_variant:
                platform_["variant"] = arm_variant
            entries.append({"mediaType": MANIFEST_V2, "size": len(raw), "digest": digest,
                            "platform": platform_})  # fmt: skip
        index = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_LIST, "manifests": entries})
        digests.append(
            registry.put_manifest(REPOSITORY, f"{tag}-{variant}", index.encode(), MANIFEST_LIST)
        )
    return digests
