"""Stand-in for ``nvidia-container-runtime-hook``, the OCI prestart hook.

dockerd offers ``--gpus`` only when this program is on its PATH; runc then runs it
as ``nvidia-container-runtime-hook prestart`` with the OCI container state on
stdin. Like the NVIDIA toolkit it leaves containers that asked for no GPU alone
and otherwise makes the driver's user-space library visible in the rootfs, here
as a marker file named like the real ``libcuda.so.<driver>`` plus its soname link.
When the profile names a ``driver_file`` (relative to the host's root, where this
program sits as ``<root>/usr/bin/nvidia-container-runtime-hook``) and that file is
gone, the kernel module is not loaded: a container that asks for a GPU fails as
with the real toolkit.

Standalone on purpose: standard library only, Python 3.8, and no
``from __future__`` import, because the installer puts ``PROFILE = ...`` above
this source.
"""

import json
import os
import platform
import sys
from typing import Any, Dict, Optional, Sequence, TextIO

# Values of NVIDIA_VISIBLE_DEVICES that mean "no GPU" to the NVIDIA toolkit.
NO_DEVICES = ("", "void", "none")
# nvidia-container-cli's words when the kernel module is not loaded (NVIDIA/nvidia-docker#1393,
# NVIDIA/nvidia-container-toolkit#1269); the engine's error adds ": unknown" (the gRPC code)
# after the hook's stderr, as in "stderr: nvidia-container-cli: ... driver not loaded: unknown".
DRIVER_NOT_LOADED = "nvidia-container-cli: initialization error: nvml error: driver not loaded"


class StateError(Exception):
    """The container state or bundle config cannot be used (exit 1)."""


class DriverNotLoaded(Exception):
    """A container asks for a GPU and the kernel module is not loaded (exit 1)."""


# ----------------------------------------------------------------------------- install


def install_text(profile: Dict[str, Any]) -> str:
    """Return the program text the lab writes to a host for ``profile``."""
    from mlfleet.controller.lab.standins import program_text

    return program_text(__file__, profile)


# ----------------------------------------------------------------------------- the hook


def read_state(stream: TextIO) -> str:
    """Bundle directory named by the OCI state ("bundlePath" in pre-1.0 runtimes)."""
    try:
        state = json.load(stream)
    except ValueError as error:
        raise StateError(f"invalid container state on stdin: {error}") from error
    bundle = None
    if isinstance(state, dict):
        bundle = state.get("bundle") or state.get("bundlePath")
    if not isinstance(bundle, str) or not bundle:
        raise StateError("container state has no bundle")
    return bundle


def read_config(bundle: str) -> Dict[str, Any]:
    """The bundle's config.json."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as error:
        raise StateError(f"cannot read {path}: {error}") from error
    if not isinstance(config, dict):
        raise StateError(f"{path} is not a JSON object")
    return config


def rootfs_of(bundle: str, config: Dict[str, Any]) -> str:
    """root.path, resolved against the bundle when relative (OCI runtime spec)."""
    root = config.get("root")
    path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        raise StateError("config.json has no root.path")
    return path if os.path.isabs(path) else os.path.join(bundle, path)


def visible_devices(config: Dict[str, Any]) -> Optional[str]:
    """NVIDIA_VISIBLE_DEVICES from process.env (the last one wins), None if unset."""
    process = config.get("process")
    env = process.get("env") if isinstance(process, dict) else None
    value = None
    for item in env if isinstance(env, list) else []:
        if isinstance(item, str) and item.startswith("NVIDIA_VISIBLE_DEVICES="):
            value = item.split("=", 1)[1]
    return value


def wants_gpu(devices: Optional[str]) -> bool:
    """False when unset, empty, "void" or "none", as in the NVIDIA toolkit."""
    return devices is not None and devices.strip().lower() not in NO_DEVICES


def install_driver_library(rootfs: str, driver: str, machine: Optional[str] = None) -> str:
    """Create <rootfs>/usr/lib/<machine>-linux-gnu/libcuda.so.<driver> and its .so.1 link."""
    libdir = os.path.join(rootfs, "usr", "lib", "%s-linux-gnu" % (machine or platform.machine()))
    os.makedirs(libdir, exist_ok=True)
    name = f"libcuda.so.{driver}"
    target = os.path.join(libdir, name)
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(f"stand-in libcuda for driver {driver}\n")
    link = os.path.join(libdir, "libcuda.so.1")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(name, link)
    return target


def host_root() -> str:
    """The hardware root this program is installed in (<root>/usr/bin/<this program>)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def prestart(stream: TextIO, driver: str, driver_file: Optional[str] = None) -> None:
    """The prestart hook: act on the container described on ``stream``; ``driver_file``
    (a path) must exist for a container that asks for a GPU, when given."""
    bundle = read_state(stream)
    config = read_config(bundle)
    if not wants_gpu(visible_devices(config)):
        return
    if driver_file is not None and not os.path.exists(driver_file):
        raise DriverNotLoaded(DRIVER_NOT_LOADED)
    install_driver_library(rootfs_of(bundle, config), driver)


def main(
    argv: Sequence[str],
    profile: Optional[Dict[str, Any]] = None,
    stdin: Optional[TextIO] = None,
    root: Optional[str] = None,
) -> int:
    """Entry point: ``prestart`` does the work, every other stage is a no-op. ``root`` is the
    hardware root (default: the one this program is installed in)."""
    commands = [arg for arg in argv if not arg.startswith("-")]  # flags such as -debug
    if commands[:1] != ["prestart"]:
        return 0
    profile = profile if profile is not None else globals().get("PROFILE")
    if not isinstance(profile, dict) or not profile.get("driver"):
        sys.stderr.write("nvidia-container-runtime-hook (lab stand-in): no driver in PROFILE\n")
        return 1
    relative = profile.get("driver_file")
    driver_file = os.path.join(root or host_root(), relative) if relative else None
    try:
        prestart(stdin if stdin is not None else sys.stdin, str(profile["driver"]), driver_file)
    except DriverNotLoaded as error:
        sys.stderr.write(f"{error}\n")
        return 1
    except (StateError, OSError) as error:
        sys.stderr.write(f"nvidia-container-runtime-hook: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
