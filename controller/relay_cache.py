"""The relay's registry on the controller's side: a registry on the controller's loopback,
run by mlfleet from the Distribution registry binary, that the controller fills with the
images its relay hosts will pull.

With `mlfleet_relay_registry: cache` (the default for a TLS registry), before a relay host
applies, the controller copies the image it will pull from the upstream into this registry
(image_copy: by its pinned digest, only the blobs the cache lacks); the host's tunnel then
connects here. A layer crosses the upstream link once, however many relay hosts need it,
and the cache (in ~/.cache/mlfleet/relay/) serves later deployments too.

The upstream's TLS session and credential stay in the controller process: the registry
process has neither (Distribution's own pull-through mode answers only Bearer challenges,
distribution/distribution#3153, so an htpasswd or ECR registry could not be proxied, and
it would have to hold the secret). Hosts pull by digest, so what a local user might push to
the cache's loopback port cannot change what they run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Optional, Tuple

import yaml

from mlfleet.controller.errors import ConfigError, MlfleetError
from mlfleet.controller.image_copy import CopyStats, copy_image
from mlfleet.controller.registry import Registry

BINARIES = ("docker-registry", "registry")  # Debian's package name, upstream's binary name


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlfleet" / "relay"


def registry_binary() -> str:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        "mlfleet_relay_registry: cache needs the Distribution registry binary on the controller",
        hint="install it (Debian: apt-get install docker-registry) or name a registry instead",
    )


def config_text(port: int, storage: Path) -> str:
    """The registry's configuration: loopback only, filesystem storage, no proxy, no
    secret."""
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "cache": {"blobdescriptor": "inmemory"},
            "delete": {"enabled": False},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RelayCache:
    """The registry of one upstream's relay, for the length of a deployment; `fill` copies
    into it what a host will pull."""

    def __init__(self, upstream: Registry, root: Optional[Path] = None):
        self.upstream = upstream
        self.dir = (root or cache_root()) / upstream.address.replace(":", "_").replace("/", "_")
        self.port = 0
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        self._filling: Dict[str, threading.Lock] = {}
        self._filled: Dict[str, CopyStats] = {}

    @property
    def address(self) -> Tuple[str, int]:
        return ("127.0.0.1", self.port)

    def local(self) -> Registry:
        return Registry(f"127.0.0.1:{self.port}", timeout=120)

    def fill(self, repo: str, reference: str) -> Optional[CopyStats]:
        """Copy `repo` at `reference` (a digest or a tag) from the upstream, once per
        deployment; the stats of the copy that fetched it, None when an earlier call did."""
        key = f"{repo}@{reference}"
        with self._lock:
            lock = self._filling.setdefault(key, threading.Lock())
        with lock:
            if key in self._filled:
                return None
            stats = self._filled[key] = copy_image(self.upstream, self.local(), repo, reference)
            return stats

    def start(self) -> RelayCache:
        binary = registry_binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        (self.dir / "config.yml").unlink(missing_ok=True)  # older mlfleet kept it here
        config = config_text(self.port, self.dir / "data")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        log = (self.dir / "registry.log").open("ab")
        self._proc = subprocess.Popen([binary, "serve", "/dev/stdin"], stdout=log, stderr=log,
                                      stdin=subprocess.PIPE, env=env)  # fmt: skip
        log.close()
        assert self._proc.stdin is not None
        self._proc.stdin.write(config.encode())
        self._proc.stdin.close()
        deadline = time.monotonic() + 15
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise MlfleetError(
                    f"the relay cache for {self.upstream.address} did not start",
                    hint=f"see {self.dir / 'registry.log'}",
                )
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
