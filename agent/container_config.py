"""The Engine API body that creates a release's container (pure): the spec from the
playbook, the GPU wiring its variant needs, and mlfleet's safe defaults."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from mlfleet.agent.desired import ContainerSpec
from mlfleet.agent.variants import Variant

LABEL = "io.mlfleet"
# During health checks and the monitor window a release must not be restarted behind our
# back (that would hide a crash); at commit it gets the policy that survives reboots.
PROBATION_RESTART = {"Name": "no"}
SERVING_RESTART = {"Name": "unless-stopped"}


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
        "SecurityOpt": ["no-new-privileges"],
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
    }
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


def runs_as_root(user: Optional[str]) -> bool:
    """An empty user (the image default) or uid/name root is root."""
    name = (user or "").split(":")[0]
    return name in ("", "0", "root")


def parse_env_file(text: str) -> Dict[str, str]:
    """KEY=value lines (comments and blank lines skipped; optional quotes removed)."""
    env: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env
