"""The Engine API body that creates a release's container (pure): the spec from the
playbook, the GPU wiring its variant needs, and mlfleet's hardened defaults (all
capabilities dropped, a read-only root filesystem, a PID limit, no-new-privileges: see
agent/hardening.py for what relaxes them)."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from mlfleet.agent import hardening
from mlfleet.agent.desired import ContainerSpec, user_is_root
from mlfleet.agent.variants import Variant

LABEL = "io.mlfleet"
# During health checks and the monitor window a release must not be restarted behind our
# back (that would hide a crash); at commit it gets the policy that survives reboots.
PROBATION_RESTART = {"Name": "no"}
SERVING_RESTART = {"Name": "unless-stopped"}
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def labels(app: str, release_id: int, tag: str, variant: str, deployment: str) -> Dict[str, str]:
    return {
        f"{LABEL}.app": app,
        f"{LABEL}.release": str(release_id),
        f"{LABEL}.tag": tag,
        f"{LABEL}.variant": variant,
        f"{LABEL}.deployment": deployment,
    }


def gpu_wiring(
    variant: Variant, gpu_support: List[str], device_root: str, device_gids: List[int]
) -> Dict[str, Any]:
    """HostConfig entries that give the container its GPUs."""
    host: Dict[str, Any] = {}
    root = device_root.rstrip("/")
    if variant.gpu == "nvidia" and variant.platform == "jetson":
        host["Runtime"] = "nvidia"
    elif variant.gpu == "nvidia":
        if "nvidia" in gpu_support:
            # count=-1: every GPU (the SDK's default of 0 would mean none at all).
            host["DeviceRequests"] = [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]
        else:
            host["DeviceRequests"] = [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]
    elif variant.gpu == "amd":
        host["Devices"] = [_device(root, "/dev/kfd"), _device(root, "/dev/dri")]
        host["GroupAdd"] = [str(g) for g in device_gids]
    elif variant.gpu == "intel":
        host["Devices"] = [_device(root, "/dev/dri")]
        host["GroupAdd"] = [str(g) for g in device_gids]
    return host


def _device(root: str, path: str) -> Dict[str, str]:
    return {"PathOnHost": root + path, "PathInContainer": path, "CgroupPermissions": "rwm"}


def container_config(
    spec: ContainerSpec,
    image: str,
    user: Optional[str],
    env_from_file: Dict[str, str],
    release_labels: Dict[str, str],
    gpu_host_config: Dict[str, Any],
) -> Dict[str, Any]:
    """The POST /containers/create body."""
    env = dict(spec.env)
    env.update(env_from_file)
    exposed: Dict[str, Dict[str, Any]] = {}
    bindings: Dict[str, List[Dict[str, str]]] = {}
    for port in spec.ports:
        key = f"{port.container}/{port.protocol}"
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": port.host_ip, "HostPort": str(port.host)})
    host: Dict[str, Any] = {
        "PortBindings": bindings,
        "Binds": [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts],
        "RestartPolicy": PROBATION_RESTART,
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
    }
    host.update(hardened(spec))
    if spec.memory_mib:
        host["Memory"] = spec.memory_mib * 1024 * 1024
    if spec.cpus:
        host["NanoCpus"] = int(spec.cpus * 1e9)
    if spec.shm_mib:
        host["ShmSize"] = spec.shm_mib * 1024 * 1024
    host.update(gpu_host_config)
    config: Dict[str, Any] = {
        "Image": image,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": release_labels,
        "ExposedPorts": exposed,
        "HostConfig": host,
    }
    if user:
        config["User"] = user
    if spec.command:
        config["Cmd"] = list(spec.command)
    return config


def hardened(spec: ContainerSpec) -> Dict[str, Any]:
    """The HostConfig entries of the hardening: every capability dropped but `cap_add`,
    the root filesystem read-only with a tmpfs for /tmp (unless `read_only` is false) and
    for each `writable` path, at most `pids_limit` processes, no-new-privileges. The
    engine's default seccomp and AppArmor profiles stay (no SecurityOpt disables them)."""
    tmpfs: Dict[str, str] = {}
    if spec.read_only:
        tmpfs[hardening.TMP] = hardening.TMPFS_OPTIONS
    for path in spec.writable:
        tmpfs[hardening.normalise(path)] = hardening.TMPFS_OPTIONS
    host: Dict[str, Any] = {
        "CapDrop": ["ALL"],
        "ReadonlyRootfs": spec.read_only,
        "PidsLimit": spec.pids_limit,
        "SecurityOpt": ["no-new-privileges"],
    }
    if spec.cap_add:
        host["CapAdd"] = list(spec.cap_add)
    if tmpfs:
        host["Tmpfs"] = tmpfs
    return host


def runs_as_root(user: Optional[str]) -> bool:
    """An empty user (the image's default: root unless its USER says otherwise), the name
    root or a numeric uid that is 0 in any spelling (`00`, `000:1000`) is root."""
    return not user or user_is_root(user)


def parse_env_file(text: str) -> Dict[str, str]:
    """KEY=value lines (comments and blank lines skipped; optional quotes removed). A line
    whose KEY is not a variable name (or whose value holds a NUL) is skipped: it was not
    meant as one (a line of base64, `a+b/c==`), and the engine could not carry it."""
    env: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        if not _ENV_KEY.fullmatch(key) or "\x00" in value:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env
