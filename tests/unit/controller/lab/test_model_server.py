"""The lab image's model server (controller/lab/image/server.py), run as a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy  # noqa: F401  -- the server needs it; fail loudly here rather than skip
import pytest

from tests.paths import REPO

ROOT = REPO
SERVER = ROOT / "controller" / "lab" / "image" / "server.py"


def _load_model_data() -> Any:
    # mlfleet.controller is not necessarily installed; load the module from its file.
    spec = importlib.util.spec_from_file_location(
        "mlfleet_lab_model_data", ROOT / "controller" / "lab" / "model_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model_data = _load_model_data()

CUDA_INSUFFICIENT = (
    "RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime version"
)
CUDA_NO_DEVICE = "RuntimeError: CUDA error: no CUDA-capable device is detected"
CUDA_ACCEL = {"kind": "cuda", "version": "12.2", "min_driver": "525.60.13"}
TEXTS = [
    "I love this, it is great and the best!",
    "Terrible. Broken, buggy and SLOW; the worst product.",
    "It's okay, not bad but not great",
    "",
    "Zebras run quickly",
    "excellent " * 500,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port: int, path: str, body: Any = None, raw: bytes | None = None) -> tuple:
    """(status, decoded JSON) for GET, or POST when a body is given."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, out: Path, err: Path) -> None:
        self.proc, self.port, self._out, self._err = proc, port, out, err

    @property
    def stdout(self) -> str:
        return self._out.read_text()

    @property
    def stderr(self) -> str:
        return self._err.read_text()

    def wait_health(self, timeout: float = 10.0) -> tuple:
        """Poll /health until it answers at all; returns that (status, body)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited {self.proc.returncode}: {self.stderr}")
            try:
                return _request(self.port, "/health")
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        pytest.fail(f"server did not answer /health within {timeout}s: {self.stdout}")

    def wait_exit(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def sysroot(tmp_path: Path) -> Path:
    root = tmp_path / "sysroot"
    (root / "usr" / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (root / "dev").mkdir()
    return root


def _libcuda(root: Path, driver: str) -> None:
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    (libdir / f"libcuda.so.{driver}").write_text("stand-in\n")
    # The real mount also has the soname symlink, which carries no driver version.
    (libdir / "libcuda.so.1").symlink_to(f"libcuda.so.{driver}")


@pytest.fixture
def start(tmp_path: Path, sysroot: Path) -> Iterator[Callable[..., Server]]:
    procs: list[subprocess.Popen] = []
    model_dir = tmp_path / "data"
    model_data.write_model(model_dir)

    def _start(
        behaviour: str = "healthy", accelerator: Any = None, env: dict | None = None
    ) -> Server:
        info = {"model": "sentiment", "tag": "v1", "variant": "cpu", "behaviour": behaviour}
        info["accelerator"] = accelerator
        n = len(procs)
        info_path = tmp_path / f"image{n}.json"
        info_path.write_text(json.dumps(info))
        port = _free_port()
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MLFLEET_") and k != "NVIDIA_VISIBLE_DEVICES"
        }
        full_env.update(
            PORT=str(port),
            MODEL_DATA=str(model_dir),
            MLFLEET_IMAGE_INFO=str(info_path),
            MLFLEET_SYSROOT=str(sysroot),
            MLFLEET_BIND="127.0.0.1",
        )
        full_env.update(env or {})
        out, err = tmp_path / f"out{n}.log", tmp_path / f"err{n}.log"
        with out.open("wb") as fout, err.open("wb") as ferr:
            proc = subprocess.Popen(
                [sys.executable, str(SERVER)], env=full_env, stdout=fout, stderr=ferr
            )
        procs.append(proc)
        return Server(proc, port, out, err)

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


# --- model_data --------------------------------------------------------------------------


def test_model_is_deterministic_and_well_formed() -> None:
    model = model_data.make_model()
    assert model == model_data.make_model()
    assert model["format"] == "mlfleet-lab-sentiment/1"
    assert 30 <= len(model["vocab"]) <= 50
    assert len(model["vocab"]) == len(model["weights"]) == len(set(model["vocab"]))
    assert all(isinstance(w, float) for w in model["weights"])


def test_write_model_modes(tmp_path: Path) -> None:
    path = model_data.write_model(tmp_path / "deep" / "data")
    assert path == tmp_path / "deep" / "data" / "model.json"
    assert json.loads(path.read_text()) == model_data.make_model()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert [p.name for p in path.parent.iterdir()] == ["model.json"]


def test_reference_score() -> None:
    model = model_data.make_model()
    assert model_data.score(model, "GREAT, great movie!!")["label"] == "positive"
    assert model_data.score(model, "awful; boring")["label"] == "negative"
    assert model_data.score(model, "") == {"label": "negative", "score": 0.475021}
    # Very one-sided texts must not overflow math.exp.
    assert model_data.score(model, "terrible " * 1000) == {"label": "negative", "score": 0.0}


# --- server: healthy CPU image -----------------------------------------------------------


def test_predict_matches_reference(start: Callable[..., Server]) -> None:
    server = start()
    assert server.wait_health() == (200, {"status": "ok"})
    model = model_data.make_model()
    identity = {"model": "sentiment", "tag": "v1", "variant": "cpu"}

    status, body = _request(server.port, "/predict", {"inputs": TEXTS})
    assert status == 200
    assert {k: body[k] for k in identity} == identity
    assert len(body["predictions"]) == len(TEXTS)
    for text, got in zip(TEXTS, body["predictions"]):
        want = model_data.score(model, text)
        assert got["label"] == want["label"], text
        assert abs(got["score"] - want["score"]) <= 1e-6, text

    status, body = _request(server.port, "/predict", {"text": TEXTS[0]})
    assert status == 200
    assert body == dict(identity, predictions=[model_data.score(model, TEXTS[0])])

    assert _request(server.port, "/version") == (200, dict(identity, accelerator="cpu"))
    assert "serving model=sentiment" in server.stdout


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"txt": "hello"}', b'{"inputs": []}', b'{"inputs": [1]}', b"[]"],
)
def test_bad_requests(start: Callable[..., Server], raw: bytes) -> None:
    server = start()
    server.wait_health()
    status, body = _request(server.port, "/predict", raw=raw)
    assert status == 400
    assert isinstance(body["error"], str)


def test_unknown_path_is_json_404(start: Callable[..., Server]) -> None:
    server = start()
    server.wait_health()
    assert _request(server.port, "/nope")[0] == 404
    assert _request(server.port, "/nope", {"text": "x"})[0] == 404


def test_sigterm_exits_zero_promptly(start: Callable[..., Server]) -> None:
    server = start()
    server.wait_health()
    began = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit(timeout=5) == 0
    assert time.monotonic() - began < 3


# --- server: behaviours ------------------------------------------------------------------


def test_never_stays_unhealthy(start: Callable[..., Server]) -> None:
    server = start(behaviour="never")
    unhealthy = (503, {"status": "unhealthy", "reason": "model failed to warm up"})
    assert server.wait_health() == unhealthy
    time.sleep(0.5)
    assert _request(server.port, "/health") == unhealthy
    assert server.proc.poll() is None


def test_dies_after_first_answer(start: Callable[..., Server]) -> None:
    server = start(behaviour="dies", env={"MLFLEET_DIES_AFTER": "1"})
    assert server.wait_health() == (200, {"status": "ok"})
    answered = time.monotonic()
    assert _request(server.port, "/predict", {"text": "good"})[0] == 200
    assert server.wait_exit(timeout=6) == 1
    assert 0.8 <= time.monotonic() - answered <= 6
    assert "fatal" in server.stdout


# --- server: accelerators ----------------------------------------------------------------


def _fails_with(server: Server, error: str) -> None:
    assert server.wait_exit() == 1
    assert error in server.stderr.splitlines()


def test_cuda_without_libcuda(start: Callable[..., Server], sysroot: Path) -> None:
    # A bare libcuda.so.1 (no driver version in the name) does not count as a driver.
    (sysroot / "usr" / "lib" / "x86_64-linux-gnu" / "libcuda.so.1").write_text("x")
    server = start(accelerator=CUDA_ACCEL, env={"NVIDIA_VISIBLE_DEVICES": "all"})
    _fails_with(server, CUDA_INSUFFICIENT)


@pytest.mark.parametrize("visible", [None, "", "void", "none"])
def test_cuda_without_visible_devices(
    start: Callable[..., Server], sysroot: Path, visible: str | None
) -> None:
    _libcuda(sysroot, "550.54.15")
    env = {} if visible is None else {"NVIDIA_VISIBLE_DEVICES": visible}
    _fails_with(start(accelerator=CUDA_ACCEL, env=env), CUDA_NO_DEVICE)


def test_cuda_driver_too_old(start: Callable[..., Server], sysroot: Path) -> None:
    _libcuda(sysroot, "470.182.03")
    server = start(accelerator=CUDA_ACCEL, env={"NVIDIA_VISIBLE_DEVICES": "all"})
    _fails_with(server, CUDA_INSUFFICIENT)


def test_cuda_starts_on_new_driver(start: Callable[..., Server], sysroot: Path) -> None:
    _libcuda(sysroot, "550.54.15")
    server = start(accelerator=CUDA_ACCEL, env={"NVIDIA_VISIBLE_DEVICES": "all"})
    assert server.wait_health() == (200, {"status": "ok"})
    status, body = _request(server.port, "/version")
    assert (status, body["accelerator"]) == (200, "cuda 12.2 on driver 550.54.15")


def test_rocm_needs_kfd(start: Callable[..., Server], sysroot: Path) -> None:
    rocm = {"kind": "rocm", "version": "6.0"}
    _fails_with(start(accelerator=rocm), "RuntimeError: No HIP GPUs are available")
    (sysroot / "dev" / "kfd").write_text("")
    server = start(accelerator=rocm)
    assert server.wait_health() == (200, {"status": "ok"})
    assert _request(server.port, "/version")[1]["accelerator"] == "rocm 6.0"
