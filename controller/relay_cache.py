"""The relay's registry on the controller's side: a pull-through cache of the upstream
registry, run by mlfleet from the Distribution registry binary, bound to loopback.

With `mlfleet_relay_registry: cache`, the relay tunnels of one deployment connect to it
instead of to the upstream: a layer crosses the upstream link once, however many relay
hosts need it, and the cache (in ~/.cache/mlfleet/relay/) serves later deployments too.
The registry re-checks tags upstream on every manifest request, so a re-pushed tag is seen.

An upstream that wants credentials gets them from the cache (Distribution's `proxy.username`
and `proxy.password`): the hosts pull from the cache on their loopback with none. The
configuration, credential included, reaches the registry process on a pipe (its stdin), so
the secret is never in a file, its arguments or its environment; an upstream signed by a
private CA is trusted through SSL_CERT_FILE (a path, no secret).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Tuple

import yaml

from mlfleet.agent.credential import RegistryCredential
from mlfleet.controller.errors import ConfigError, MlfleetError

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


def config_text(upstream: str, https: bool, port: int, storage: Path,
                credential: Optional[RegistryCredential] = None) -> str:  # fmt: skip
    """The registry's configuration: loopback only, filesystem storage, proxy mode."""
    proxy = {"remoteurl": f"{'https' if https else 'http'}://{upstream}"}
    if credential is not None:
        proxy["username"] = credential.username or "<token>"
        proxy["password"] = credential.password or credential.identitytoken
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
        "proxy": proxy,
    }
    return yaml.safe_dump(config, sort_keys=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RelayCache:
    """One pull-through cache of one upstream registry, for the length of a deployment."""

    def __init__(self, upstream: str, https: bool, root: Optional[Path] = None,
                 credential: Optional[RegistryCredential] = None,
                 ca_file: Optional[str] = None):  # fmt: skip
        self.upstream = upstream
        self.https = https
        self.credential = credential
        self.ca_file = ca_file
        self.dir = (root or cache_root()) / upstream.replace(":", "_").replace("/", "_")
        self.port = 0
        self._proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> Tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> RelayCache:
        binary = registry_binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        (self.dir / "config.yml").unlink(missing_ok=True)  # older mlfleet kept it here
        config = config_text(
            self.upstream, self.https, self.port, self.dir / "data", self.credential
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        if self.ca_file:
            env["SSL_CERT_FILE"] = self.ca_file
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
                    f"the relay cache for {self.upstream} did not start",
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
