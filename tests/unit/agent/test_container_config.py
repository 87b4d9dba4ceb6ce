"""The Engine API body that creates a release's container (pure): mlfleet's safe defaults,
the spec's ports, mounts, user and limits, and each GPU vendor's wiring."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from mlfleet.agent.container_config import (
    PROBATION_RESTART,
    container_config,
    gpu_wiring,
    labels,
    parse_env_file,
    runs_as_root,
)
from mlfleet.agent.desired import ContainerSpec, Mount, Port
from mlfleet.agent.hardening import DEFAULT_PIDS_LIMIT
from mlfleet.agent.variants import Variant

IMAGE = "registry.test/sentiment:v1"


def config(spec: ContainerSpec, user: str = "app", **kw: Any) -> Dict[str, Any]:
    return container_config(
        spec,
        IMAGE,
        user,
        kw.get("env_file", {}),
        labels("sentiment", 7, "v1", "cpu", "deploy-1"),
        kw.get("gpu", {}),
    )


# --- safe defaults ------------------------------------------------------------------------


def test_defaults_every_container_gets() -> None:
    body = config(ContainerSpec())
    host = body["HostConfig"]
    assert body["Image"] == IMAGE and body["User"] == "app"
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["CapDrop"] == ["ALL"] and "CapAdd" not in host
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,exec,nosuid,nodev"}
    assert host["PidsLimit"] == DEFAULT_PIDS_LIMIT == 1024
    assert "Privileged" not in host and "NetworkMode" not in host and "PidMode" not in host
    # No restart behind the agent's back while it proves the release.
    assert host["RestartPolicy"] == PROBATION_RESTART == {"Name": "no"}
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }
    assert "Cmd" not in body and "Memory" not in host and "Runtime" not in host


def test_labels_name_the_release() -> None:
    assert config(ContainerSpec())["Labels"] == {
        "io.mlfleet.app": "sentiment",
        "io.mlfleet.release": "7",
        "io.mlfleet.tag": "v1",
        "io.mlfleet.variant": "cpu",
        "io.mlfleet.deployment": "deploy-1",
    }


def test_no_user_leaves_the_images_own() -> None:
    assert "User" not in config(ContainerSpec(), user="")


# --- what the playbook relaxes --------------------------------------------------------------

HARDENING_KEYS = ("CapDrop", "CapAdd", "ReadonlyRootfs", "Tmpfs", "PidsLimit", "SecurityOpt")


def hardening_of(spec: ContainerSpec) -> Dict[str, Any]:
    host = config(spec)["HostConfig"]
    return {k: host[k] for k in HARDENING_KEYS if k in host}


def test_capabilities_are_added_back_by_name_only() -> None:
    host = hardening_of(ContainerSpec(cap_add=["NET_BIND_SERVICE", "SYS_NICE"]))
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == ["NET_BIND_SERVICE", "SYS_NICE"]


def test_a_writable_root_filesystem_has_no_tmp_of_its_own() -> None:
    assert hardening_of(ContainerSpec(read_only=False)) == {
        "CapDrop": ["ALL"],
        "ReadonlyRootfs": False,
        "PidsLimit": DEFAULT_PIDS_LIMIT,
        "SecurityOpt": ["no-new-privileges"],
    }


def test_writable_paths_get_a_tmpfs_each_normalised() -> None:
    spec = ContainerSpec(writable=["/var/cache/model/", "//home/app/.cache"], pids_limit=64)
    host = hardening_of(spec)
    assert host["Tmpfs"] == {
        "/tmp": "rw,exec,nosuid,nodev",
        "/var/cache/model": "rw,exec,nosuid,nodev",
        "/home/app/.cache": "rw,exec,nosuid,nodev",
    }
    assert host["ReadonlyRootfs"] is True and host["PidsLimit"] == 64


# --- ports, mounts, env, limits -----------------------------------------------------------


def test_ports_are_published() -> None:
    spec = ContainerSpec(
        ports=[
            Port(8080, 18080),
            Port(8080, 28080, host_ip="127.0.0.1"),
            Port(5353, 15353, protocol="udp"),
        ]
    )
    body = config(spec)
    assert body["ExposedPorts"] == {"8080/tcp": {}, "5353/udp": {}}
    assert body["HostConfig"]["PortBindings"] == {
        "8080/tcp": [
            {"HostIp": "", "HostPort": "18080"},
            {"HostIp": "127.0.0.1", "HostPort": "28080"},
        ],
        "5353/udp": [{"HostIp": "", "HostPort": "15353"}],
    }


MOUNTS = [
    (Mount("/srv/models", "/models"), "/srv/models:/models:ro"),
    (Mount("/srv/cache", "/cache", read_only=False), "/srv/cache:/cache:rw"),
]


@pytest.mark.parametrize(("mount", "bind"), MOUNTS)
def test_mounts_are_read_only_unless_asked(mount: Mount, bind: str) -> None:
    assert config(ContainerSpec(mounts=[mount]))["HostConfig"]["Binds"] == [bind]


def test_env_file_values_win_over_the_spec() -> None:
    body = config(
        ContainerSpec(env={"MODE": "fast", "TOKEN": "none"}), env_file={"TOKEN": "s3cret"}
    )
    assert body["Env"] == ["MODE=fast", "TOKEN=s3cret"]


def test_limits_and_command() -> None:
    spec = ContainerSpec(memory_mib=512, cpus=1.5, shm_mib=64, command=["serve", "--port", "8080"])
    body = config(spec)
    host = body["HostConfig"]
    assert host["Memory"] == 512 * 1024 * 1024
    assert host["NanoCpus"] == 1_500_000_000
    assert host["ShmSize"] == 64 * 1024 * 1024
    assert body["Cmd"] == ["serve", "--port", "8080"]


def test_gpu_wiring_goes_into_the_host_config() -> None:
    body = config(ContainerSpec(), gpu={"Runtime": "nvidia"})
    assert body["HostConfig"]["Runtime"] == "nvidia"
    assert body["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]


# --- GPU wiring per vendor ----------------------------------------------------------------

NVIDIA = Variant("cuda12", gpu="nvidia", platform="dgpu", cuda="12.2", min_gpus=1)
JETSON = Variant("jetson", gpu="nvidia", platform="jetson", l4t="36.4", min_gpus=1)
AMD = Variant("rocm", gpu="amd", rocm="6.0", min_gpus=1)
INTEL = Variant("xpu", gpu="intel", min_gpus=1)
CPU = Variant("cpu")

WIRING = [
    ("nvidia through the toolkit", NVIDIA, ["nvidia"], [],
     {"DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]}),
    ("nvidia through CDI", NVIDIA, ["cdi"], [],
     {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]}),
    ("jetson", JETSON, ["nvidia-runtime"], [], {"Runtime": "nvidia"}),
    ("amd", AMD, ["amd"], [44, 109], {
        "Devices": [
            {"PathOnHost": "/lab/edge/dev/kfd", "PathInContainer": "/dev/kfd", "CgroupPermissions": "rwm"},
            {"PathOnHost": "/lab/edge/dev/dri", "PathInContainer": "/dev/dri", "CgroupPermissions": "rwm"},
        ],
        "GroupAdd": ["44", "109"],
    }),
    ("intel", INTEL, ["intel"], [44], {
        "Devices": [
            {"PathOnHost": "/lab/edge/dev/dri", "PathInContainer": "/dev/dri", "CgroupPermissions": "rwm"},
        ],
        "GroupAdd": ["44"],
    }),
    ("cpu", CPU, ["nvidia"], [44], {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "support", "gids", "wiring"), [w[1:] for w in WIRING], ids=[w[0] for w in WIRING]
)
def test_gpu_wiring(
    variant: Variant, support: List[str], gids: List[int], wiring: Dict[str, Any]
) -> None:
    # The device root's trailing slash does not double up in the paths.
    assert gpu_wiring(variant, support, "/lab/edge/", gids) == wiring


@pytest.mark.parametrize(
    ("variant", "support", "gids", "wiring"), [w[1:] for w in WIRING], ids=[w[0] for w in WIRING]
)
def test_a_gpu_container_is_hardened_like_any_other(
    variant: Variant, support: List[str], gids: List[int], wiring: Dict[str, Any]
) -> None:
    host = config(ContainerSpec(), gpu=gpu_wiring(variant, support, "/", gids))["HostConfig"]
    assert {k: host[k] for k in wiring} == gpu_wiring(variant, support, "/", gids)
    assert {k: host[k] for k in HARDENING_KEYS if k in host} == hardening_of(ContainerSpec())
    assert "Privileged" not in host and "CapAdd" not in host


def test_devices_under_the_real_root() -> None:
    devices = gpu_wiring(INTEL, ["intel"], "/", [])["Devices"]
    assert devices[0]["PathOnHost"] == "/dev/dri"


# --- user and env file --------------------------------------------------------------------

ROOT = [
    (None, True),
    ("", True),
    ("root", True),
    ("0", True),
    ("0:0", True),
    ("root:app", True),
    ("app", False),
    ("1000", False),
    ("1000:0", False),
    ("00", True),
    ("000:1000", True),
    ("00:00", True),
    ("10", False),
    ("0100", False),
    ("root0", False),
    ("0x0", False),  # a name to Docker (not a number): the image's passwd resolves it
]


@pytest.mark.parametrize(("user", "root"), ROOT)
def test_runs_as_root(user: Any, root: bool) -> None:
    assert runs_as_root(user) is root


def test_parse_env_file() -> None:
    text = """
# secrets for the model
TOKEN=s3cret
export REGION = eu-west-1
QUOTED="a b c"
SINGLE='x=y'
EMPTY=
not a line
AAAAB3Nza+C1yc2E/AAAAAw==
1BAD=x
NUL=a\x00b
"""
    assert parse_env_file(text) == {
        "TOKEN": "s3cret",
        "REGION": "eu-west-1",
        "QUOTED": "a b c",
        "SINGLE": "x=y",
        "EMPTY": "",
    }
