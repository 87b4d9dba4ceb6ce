"""The shared lab behaves like a fleet of real, different hosts."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
import pytest

from mlfleet.controller.lab import lab_registry
from mlfleet.controller.lab.images import REPOSITORY, TAGS, VARIANTS
from mlfleet.controller.lab.model_data import score
from tests.conftest import TEST_LAB, mlfleet
from tests.lab.conftest import engine_pull
from tests.lab.sshrun import connect, ssh

DEFAULT_HOSTS = ["edge-a100", "edge-t4", "edge-4090", "edge-mi210", "edge-cpu"]
ENGINE_HOSTS = [*DEFAULT_HOSTS, "edge-air"]
# Containers these tests run by hand publish here, clear of the agent's releases on 8080.
BY_HAND_PORT = 18080


def image(lab, tag: str, variant: str) -> str:
    return f"{lab['registry']['address']}/{REPOSITORY}:{tag}-{variant}"


def http_json(url: str, body: dict | None = None, timeout: float = 5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


def wait_http(url: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return http_json(url)
        except Exception as exc:
            last = exc
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout}s: {last}")


@pytest.fixture(scope="module")
def pulled(lab):
    """v1-cpu pulled on every host with an engine that reaches the registry."""

    def pull(name: str) -> None:
        engine_pull(lab, lab["hosts_by_name"][name], image(lab, "v1", "cpu"))

    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(pull, DEFAULT_HOSTS))
    return lab


def test_the_registry_is_tls_and_refuses_anonymous_pulls(lab):
    """Like a real private registry: its CA trusted by the engines through certs.d (no
    insecure-registries), and a pull without credentials refused."""
    host = lab["hosts_by_name"]["edge-cpu"]
    code, out, _ = ssh(host, "docker info -f '{{json .RegistryConfig.IndexConfigs}}'")
    assert lab["registry"]["address"] not in out  # not listed as insecure
    code, _, err = ssh(host, f"docker pull -q {image(lab, 'v1', 'cpu')}")
    assert code != 0 and "no basic auth credentials" in err, err
    engine_pull(lab, host, image(lab, "v1", "cpu"))  # with the lab's login it pulls
    assert (
        Path(f"/etc/docker/certs.d/{lab['registry']['address']}/ca.crt").read_bytes()
        == Path(lab["registry"]["ca"]).read_bytes()
    )


def test_every_host_answers_ssh_with_strict_host_key_checking(lab):
    for host in lab["hosts"]:
        code, out, _ = ssh(host, "hostname; echo $MLFLEET_ROOT; echo ${DOCKER_HOST:-none}")
        hostname, root, docker_host = out.split()
        assert code == 0
        assert hostname == host["name"]
        assert root == host["root"] and Path(root).is_dir()
        assert docker_host == (host["docker_host"] or "none")


def test_a_host_key_not_in_known_hosts_is_refused(lab, tmp_path: Path):
    a100, cpu = lab["hosts_by_name"]["edge-a100"], lab["hosts_by_name"]["edge-cpu"]
    # edge-cpu's address paired with edge-a100's key: exactly what a spoofed host looks like.
    key_line = next(line for line in Path(lab["hosts"][0]["known_hosts"]).read_text().splitlines()
                    if line.startswith(a100["address"] + " "))  # fmt: skip
    wrong = tmp_path / "known_hosts"
    wrong.write_text(cpu["address"] + " " + key_line.split(" ", 1)[1] + "\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(cpu, known_hosts=str(wrong))
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException):
        connect(cpu, known_hosts=str(empty))


def test_each_host_runs_its_own_docker_engine(lab):
    seen = {}
    for name in ENGINE_HOSTS:
        host = lab["hosts_by_name"][name]
        code, out, err = ssh(host, "docker info --format '{{.ID}} {{.Name}} {{.DockerRootDir}}'")
        assert code == 0, err
        engine_id, engine_name, root_dir = out.split()
        assert engine_name == name
        assert root_dir.startswith(str(Path(host["root"]).parent))
        seen[engine_id] = name
    assert len(seen) == len(ENGINE_HOSTS), "engine IDs must differ between hosts"
    for name in ("ssh1", "ssh2"):
        code, _, _ = ssh(lab["hosts_by_name"][name], 'test -z "$DOCKER_HOST"')
        assert code == 0


def test_lab_images_are_in_the_registry(lab):
    registry = lab_registry.client(lab["registry"])
    expected = {f"{t}-{v}" for t in TAGS for v in VARIANTS}
    # Every tag x variant the lab builds (tests of delivery push tags of their own as well).
    missing = expected - set(registry.tags(REPOSITORY))
    assert not missing, sorted(missing)
    found_v1 = registry.get_manifest(REPOSITORY, "v1-cpu")
    found_v3 = registry.get_manifest(REPOSITORY, "v3-cpu")
    assert found_v1 is not None and found_v3 is not None  # the tags were listed just above
    v1, _ = found_v1
    v3, _ = found_v3
    # Tags share their base and app layers; an update ships only the small top layer.
    assert [layer["digest"] for layer in v1["layers"][:2]] == [
        layer["digest"] for layer in v3["layers"][:2]
    ]
    assert v1["layers"][2]["digest"] != v3["layers"][2]["digest"]
    assert v3["layers"][2]["size"] < 4096


@pytest.mark.parametrize("name", DEFAULT_HOSTS)
def test_gpus_all_works_exactly_on_nvidia_hosts_with_the_toolkit(pulled, name):
    host = pulled["hosts_by_name"][name]
    probe = "import glob,os; print(os.environ.get('NVIDIA_VISIBLE_DEVICES'), sorted(glob.glob('/usr/lib/*/libcuda.so.*')))"
    code, out, err = ssh(
        host,
        f"docker run --rm --gpus all {image(pulled, 'v1', 'cpu')} python3 -c {shlex.quote(probe)}",
    )
    driver = host["profile"]["nvidia_driver"]
    if host["profile"]["container_toolkit"]:
        assert code == 0, err
        assert out.startswith("all ")
        assert f"libcuda.so.{driver}" in out
    else:
        assert code != 0
        assert 'could not select device driver "" with capabilities: [[gpu]]' in err


def test_standin_tools_print_each_hosts_profile(lab):
    query = "nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv,noheader,nounits"
    for name in ("edge-a100", "edge-4090"):
        host = lab["hosts_by_name"][name]
        code, out, err = ssh(host, f"$MLFLEET_ROOT/usr/bin/{query}")
        assert code == 0, err
        rows = [line.split(", ") for line in out.strip().splitlines()]
        gpus = host["profile"]["gpus"]
        assert len(rows) == len(gpus)
        for i, (row, gpu) in enumerate(zip(rows, gpus)):
            assert row == [str(i), gpu["model"], host["profile"]["nvidia_driver"],
                           str(gpu["memory_mib"]), gpu["compute_capability"]]  # fmt: skip
    t4 = lab["hosts_by_name"]["edge-t4"]
    code, out, _ = ssh(t4, f"$MLFLEET_ROOT/usr/bin/{query}")
    assert code == 2 and 'Field "compute_cap" is not a valid field to query.' in out
    code, out, _ = ssh(t4, "$MLFLEET_ROOT/usr/bin/nvidia-smi")
    assert code == 0 and "Driver Version: 470.182.03" in out and "CUDA Version: 11.4" in out
    code, out, err = ssh(
        lab["hosts_by_name"]["edge-mi210"],
        "$MLFLEET_ROOT/usr/bin/rocm-smi --showproductname --json",
    )
    assert code == 0, err
    card = json.loads(out)["card0"]
    assert "AMD Instinct MI210" in card.values() and "gfx90a" in card.values()
    code, _, _ = ssh(lab["hosts_by_name"]["edge-cpu"], "test -e $MLFLEET_ROOT/usr/bin/nvidia-smi")
    assert code == 1


def _run_model(host, lab, tag: str, variant: str, data_dir: str, extra: str = "") -> str:
    code, out, err = ssh(
        host,
        f"docker rm -f model-{tag} >/dev/null 2>&1; docker run -d --name model-{tag} -p {BY_HAND_PORT}:8080 "
        f"-v {shlex.quote(data_dir)}:/data:ro --security-opt no-new-privileges {extra} "
        f"{image(lab, tag, variant)}",
    )
    assert code == 0, err
    return out.strip()


def test_v1_cpu_image_serves_predict_from_the_mounted_weights(pulled, tmp_path: Path):
    lab = pulled
    host = lab["hosts_by_name"]["edge-cpu"]
    model = json.loads((Path(host["data_dir"]) / "model.json").read_text())
    _run_model(host, lab, "v1", "cpu", host["data_dir"])
    url = f"http://{host['address']}:{BY_HAND_PORT}"
    try:
        assert wait_http(url + "/health") == (200, {"status": "ok"})
        text = "a great and wonderful model, not bad at all"
        status, answer = http_json(url + "/predict", {"text": text})
        assert status == 200
        assert (answer["tag"], answer["variant"]) == ("v1", "cpu")
        expected = score(model, text)
        assert answer["predictions"][0]["label"] == expected["label"]
        assert answer["predictions"][0]["score"] == pytest.approx(expected["score"], abs=1e-6)
        _code, out, _ = ssh(
            host, "docker inspect -f '{{.Config.User}} {{.State.Health.Status}}' model-v1"
        )
        assert out.split()[0] == "10001:10001"
    finally:
        ssh(host, "docker rm -f model-v1")
    # Other weights in the mounted directory give other answers: the model reads the mount.
    other = tmp_path / "weights"
    other.mkdir(mode=0o755)
    other.chmod(0o755)
    tmp_path.chmod(0o755)
    flipped = dict(model, weights=[-w for w in model["weights"]], bias=-model["bias"])
    (other / "model.json").write_text(json.dumps(flipped))
    (other / "model.json").chmod(0o644)
    _run_model(host, lab, "v1", "cpu", str(other))
    try:
        wait_http(url + "/health")
        _, answer = http_json(url + "/predict", {"text": text})
        assert answer["predictions"][0] == {"label": score(flipped, text)["label"],
                                            "score": pytest.approx(score(flipped, text)["score"], abs=1e-6)}  # fmt: skip
        assert answer["predictions"][0]["label"] != expected["label"]
    finally:
        ssh(host, "docker rm -f model-v1")


def test_cuda_images_need_a_gpu_and_a_new_enough_driver(pulled):
    lab = pulled
    a100, t4 = lab["hosts_by_name"]["edge-a100"], lab["hosts_by_name"]["edge-t4"]
    for host in (a100, t4):
        engine_pull(lab, host, image(lab, "v1", "cuda12"))
    # Built for CUDA 12.2: runs on 550 with the GPU wired in ...
    _run_model(a100, lab, "v1", "cuda12", a100["data_dir"], extra="--gpus all")
    try:
        _, version = wait_http(f"http://{a100['address']}:{BY_HAND_PORT}/version")
        assert version["accelerator"] == "cuda 12.2 on driver 550.54.15"
    finally:
        ssh(a100, "docker rm -f model-v1")
    # ... and dies with the real CUDA error on a 470 driver, or with no GPU at all.
    for host, extra, message in (
        (t4, "--gpus all", "CUDA driver version is insufficient for CUDA runtime version"),
        (a100, "", "CUDA driver version is insufficient for CUDA runtime version"),
    ):
        _run_model(host, lab, "v1", "cuda12", host["data_dir"], extra=extra)
        try:
            _, out, _ = ssh(host, "docker wait model-v1; docker logs model-v1 2>&1")
            assert out.splitlines()[0] == "1"
            assert message in out
        finally:
            ssh(host, "docker rm -f model-v1")


def test_per_host_options_registry_disk_and_link(lab):
    air = lab["hosts_by_name"]["edge-air"]
    code, _, err = ssh(air, f"timeout 20 docker pull {image(lab, 'v1', 'cpu')}")
    assert code != 0 and ("connection refused" in err or "connection reset" in err), err
    code, out, _ = ssh(
        air, "df -m --output=size \"$(docker info -f '{{.DockerRootDir}}')\" | tail -1"
    )
    assert code == 0 and 300 < int(out) <= 400
    qdisc = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout
    assert "rate 40Mbit" in qdisc


def test_engine_and_link_fault_injection(lab):
    cpu = lab["hosts_by_name"]["edge-cpu"]
    mlfleet("lab", "--name", TEST_LAB, "engine", "edge-cpu", "stop")
    code, _, _ = ssh(cpu, "docker info >/dev/null 2>&1")
    assert code != 0
    mlfleet("lab", "--name", TEST_LAB, "engine", "edge-cpu", "start")
    code, _, _ = ssh(cpu, "docker info >/dev/null 2>&1")
    assert code == 0
    mlfleet("lab", "--name", TEST_LAB, "link", "edge-cpu", "down")
    try:
        with pytest.raises(OSError):
            connect(cpu).close()
    finally:
        mlfleet("lab", "--name", TEST_LAB, "link", "edge-cpu", "up")
    code, out, _ = ssh(cpu, "hostname")
    assert code == 0 and out.strip() == "edge-cpu"


def test_status_json_describes_every_host(lab):
    assert lab["registry"]["running"]
    for host in lab["hosts"]:
        for key in (
            "name",
            "address",
            "ssh_user",
            "ssh_key",
            "known_hosts",
            "docker_host",
            "root",
            "profile",
        ):
            assert key in host
        assert all(host["running"].values()), host


def test_each_hosts_cron_daemon_runs_its_own_crontab(lab):
    # Each host's crond reads only its own crontab directory (the lab's mlfleet_cron_dir);
    # `cron.update` is how `crontab` tells a running busybox crond to reload.
    hosts = [lab["hosts_by_name"][n] for n in ("edge-cpu", "ssh1")]
    for host in hosts:
        marker = Path(host["agent_dir"]) / "cron-ran"
        marker.unlink(missing_ok=True)
        (Path(host["cron_dir"]) / "root").write_text(f"* * * * * hostname > {marker}\n")
        (Path(host["cron_dir"]) / "cron.update").write_text("root\n")
    deadline = time.monotonic() + 75
    for host in hosts:
        marker = Path(host["agent_dir"]) / "cron-ran"
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(1)
        assert marker.exists(), f"cron job did not run on {host['name']}"
        assert marker.read_text().strip() == host["name"]
