"""What the engine can wire, from its own answers and the toolkit pieces on the host."""

from __future__ import annotations

from mlfleet.agent.detect.docker import engine_facts, gpu_wiring

VERSION = {"Version": "20.10.24+dfsg1", "ApiVersion": "1.41"}
INFO = {
    "Driver": "overlay2",
    "DockerRootDir": "/var/lib/docker",
    "Runtimes": {"io.containerd.runc.v2": {}, "io.containerd.runtime.v1.linux": {}, "runc": {}},
    "DefaultRuntime": "runc",
}


def facts(info=INFO, version=VERSION):
    return engine_facts(version, info, "unix:///var/run/docker.sock")


def test_engine_answers_become_facts():
    f = facts()
    assert (f.version, f.api_version, f.storage_driver, f.data_root) == (
        "20.10.24+dfsg1", "1.41", "overlay2", "/var/lib/docker",
    )  # fmt: skip
    assert f.runtimes == ["io.containerd.runc.v2", "io.containerd.runtime.v1.linux", "runc"]


def test_toolkit_hook_means_device_requests_work():
    f = facts()
    gpu_wiring(f, hook="/usr/bin/nvidia-container-runtime-hook", cdi_specs=[], kfd=False, dri=False,
               gpu_vendors={"nvidia"})  # fmt: skip
    assert f.gpu_support == ["nvidia"]


def test_gpu_without_toolkit_says_what_is_missing():
    f = facts()
    gpu_wiring(f, hook=None, cdi_specs=[], kfd=False, dri=False, gpu_vendors={"nvidia"})
    assert f.gpu_support == []
    assert any("no nvidia-container-runtime-hook" in e for e in f.gpu_evidence)


def test_nvidia_runtime_and_cdi_need_a_new_enough_engine():
    info = dict(INFO, Runtimes={"nvidia": {}, "runc": {}})
    old = facts(info)
    gpu_wiring(
        old,
        hook=None,
        cdi_specs=["/etc/cdi/nvidia.yaml"],
        kfd=False,
        dri=False,
        gpu_vendors={"nvidia"},
    )
    assert old.gpu_support == ["nvidia-runtime"]
    assert any("has no CDI" in e for e in old.gpu_evidence)
    new = facts(info, {"Version": "27.3.1", "ApiVersion": "1.47"})
    gpu_wiring(
        new,
        hook=None,
        cdi_specs=["/etc/cdi/nvidia.yaml"],
        kfd=False,
        dri=False,
        gpu_vendors={"nvidia"},
    )
    assert new.gpu_support == ["nvidia-runtime", "cdi"]


def test_amd_needs_kfd_and_dri_and_intel_needs_dri():
    amd = facts()
    gpu_wiring(amd, hook=None, cdi_specs=[], kfd=True, dri=True, gpu_vendors={"amd"})
    assert amd.gpu_support == ["amd"]
    no_kfd = facts()
    gpu_wiring(no_kfd, hook=None, cdi_specs=[], kfd=False, dri=True, gpu_vendors={"amd"})
    assert no_kfd.gpu_support == [] and any("/dev/kfd" in e for e in no_kfd.gpu_evidence)
    intel = facts()
    gpu_wiring(intel, hook=None, cdi_specs=[], kfd=False, dri=True, gpu_vendors={"intel"})
    assert intel.gpu_support == ["intel"]
