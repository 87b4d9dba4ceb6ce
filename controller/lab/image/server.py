"""mlfleet lab model server: a tiny numpy sentiment classifier behind http.server.

Runs inside the lab images as `python3 /opt/mlfleet/server.py` (Python 3.8+, stdlib + numpy).
It behaves like a real GPU model server where it matters to mlfleet: it crashes at start-up
when the CUDA/ROCm stack it was built for is not usable, and the image's `behaviour` can make
it never become healthy ("never") or die shortly after it starts serving ("dies").
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import numpy as np

MODEL_FORMAT = "mlfleet-lab-sentiment/1"
MAX_BODY = 1 << 20
_WORD = re.compile(r"[a-z]+")  # must match model_data.tokenize
_CUDA_INSUFFICIENT = "CUDA driver version is insufficient for CUDA runtime version"
_CUDA_NO_DEVICE = "no CUDA-capable device is detected"


def log(message: str) -> None:
    # One line per event on stdout, flushed so `docker logs` shows it at once.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} mlfleet-server {message}", flush=True)


def fail(error: str) -> NoReturn:
    """Crash at start-up the way PyTorch and friends do: the exception on stderr, exit 1."""
    print(error, file=sys.stderr, flush=True)
    sys.exit(1)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _older(have: str, need: str) -> bool:
    a, b = _version(have), _version(need)
    width = max(len(a), len(b))  # "525.60" and "525.60.0" are the same driver
    return a + (0,) * (width - len(a)) < b + (0,) * (width - len(b))


def check_accelerator(accel: dict[str, Any] | None, root: Path) -> str:
    """Describe the accelerator, or fail() with the error a real framework would raise."""
    if not accel:
        return "cpu"
    kind = accel.get("kind")
    if kind == "cuda":
        # The NVIDIA container toolkit mounts the host's libcuda.so.<driver version>; the
        # libcuda.so.1 symlink names carry no version, so only full dotted names count.
        drivers = []
        for lib in root.glob("usr/lib/*/libcuda.so.*"):
            version = lib.name[len("libcuda.so.") :]
            if re.fullmatch(r"\d+(\.\d+)+", version):
                drivers.append(version)
        if not drivers:
            fail(f"RuntimeError: CUDA error: {_CUDA_INSUFFICIENT}")
        driver = max(drivers, key=_version)
        visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip().lower()
        if visible in ("", "void", "none"):
            fail(f"RuntimeError: CUDA error: {_CUDA_NO_DEVICE}")
        if accel.get("min_driver") and _older(driver, str(accel["min_driver"])):
            fail(f"RuntimeError: CUDA error: {_CUDA_INSUFFICIENT}")
        return f"cuda {accel.get('version')} on driver {driver}"
    if kind == "rocm":
        if not (root / "dev" / "kfd").exists():
            fail("RuntimeError: No HIP GPUs are available")
        return f"rocm {accel.get('version')}"
    fail(f"RuntimeError: unknown accelerator kind {kind!r}")


class Model:
    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != MODEL_FORMAT or len(data["vocab"]) != len(data["weights"]):
            raise ValueError(f"{path}: not a {MODEL_FORMAT} model")
        self.index = {word: i for i, word in enumerate(data["vocab"])}
        self.weights = np.asarray(data["weights"], dtype=np.float64)
        self.bias = float(data["bias"])

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        counts = np.zeros((len(texts), len(self.index)), dtype=np.float64)
        for row, text in enumerate(texts):
            for token in _WORD.findall(text.lower()):
                if token in self.index:
                    counts[row, self.index[token]] += 1.0
        z = counts @ self.weights + self.bias
        # sigmoid(z) = exp(-log(1 + exp(-z))): logaddexp never overflows on one-sided texts.
        scores = np.exp(-np.logaddexp(0.0, -z))
        return [
            {"label": "positive" if p >= 0.5 else "negative", "score": round(float(p), 6)}
            for p in scores
        ]


_death_lock = threading.Lock()
_death_armed = False


def arm_death() -> None:
    """Behaviour "dies": like a server that leaks memory once it takes traffic and is killed."""
    global _death_armed
    with _death_lock:
        if _death_armed:
            return
        _death_armed = True
    delay = float(os.environ.get("MLFLEET_DIES_AFTER", "8"))

    def die() -> None:
        log(f"fatal: worker ran out of memory {delay:g}s after serving its first request")
        os._exit(1)  # the whole process, from a thread, with no clean-up: like a kill

    timer = threading.Timer(delay, die)
    timer.daemon = True
    timer.start()


class Handler(BaseHTTPRequestHandler):
    server_version = "mlfleet-lab-server/1"
    # Set by main() before serving.
    info: dict[str, Any] = {}
    model: Model
    accelerator = "cpu"

    def log_message(self, format: str, *args: Any) -> None:
        log("http " + (format % args))

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if status < 400 and self.info.get("behaviour") == "dies":
            arm_death()

    def _identity(self) -> dict[str, Any]:
        return {k: self.info.get(k) for k in ("model", "tag", "variant")}

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            if self.info.get("behaviour") == "never":
                self._send(503, {"status": "unhealthy", "reason": "model failed to warm up"})
            else:
                self._send(200, {"status": "ok"})
        elif path == "/version":
            self._send(200, dict(self._identity(), accelerator=self.accelerator))
        elif path == "/predict":
            self._send(405, {"error": "use POST for /predict"})
        else:
            self._send(404, {"error": f"no such endpoint: {path}"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path != "/predict":
            self._send(404, {"error": f"no such endpoint: {path}"})
            return
        if self.info.get("behaviour") == "never":
            self._send(503, {"error": "model failed to warm up"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._send(400, {"error": "bad Content-Length"})
            return
        if not 0 <= length <= MAX_BODY:
            self._send(413, {"error": f"Content-Length must be 0..{MAX_BODY}"})
            return
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except ValueError as exc:
            self._send(400, {"error": f"invalid JSON: {exc}"})
            return
        texts = None
        if isinstance(request, dict) and isinstance(request.get("text"), str):
            texts = [request["text"]]
        elif isinstance(request, dict) and isinstance(request.get("inputs"), list):
            texts = request["inputs"]
        if not texts or not all(isinstance(t, str) for t in texts):
            self._send(400, {"error": 'expected {"text": str} or {"inputs": [str, ...]}'})
            return
        self._send(200, dict(self._identity(), predictions=self.model.predict(texts)))


def _on_sigterm(signum: int, _frame: Any) -> None:
    # PID 1 in a container ignores SIGTERM unless it handles it; exit now so `docker stop`
    # does not wait out its 10 s grace period and SIGKILL us.
    log(f"received signal {signum}, shutting down")
    sys.exit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigterm)
    info_path = Path(os.environ.get("MLFLEET_IMAGE_INFO", "/etc/mlfleet/image.json"))
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info.get("behaviour", "healthy") not in ("healthy", "never", "dies"):
        fail(f"ValueError: unknown behaviour {info.get('behaviour')!r} in {info_path}")
    root = Path(os.environ.get("MLFLEET_SYSROOT", "/"))
    Handler.accelerator = check_accelerator(info.get("accelerator"), root)
    Handler.info = info
    try:
        Handler.model = Model(Path(os.environ.get("MODEL_DATA", "/data")) / "model.json")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f"RuntimeError: cannot load model: {exc}")

    # MLFLEET_BIND exists only so tests can stay on loopback; images always use 0.0.0.0.
    host = os.environ.get("MLFLEET_BIND", "0.0.0.0")
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer((host, port), Handler)
    log(
        f"serving model={info.get('model')} tag={info.get('tag')} variant={info.get('variant')}"
        f" accelerator={Handler.accelerator!r} behaviour={info.get('behaviour', 'healthy')}"
        f" on {host}:{port}"
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
