"""Where a lab instance keeps everything, derived from its name (pure).

Everything a lab makes lives under these paths and names, which is what lets `lab down`
(and `lab up` after a crash) find and remove all of it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mlfleet.controller.errors import ConfigError

DEFAULT_NAME = "lab"
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")


@dataclass(frozen=True)
class LabLayout:
    name: str
    state_root: Path = Path("/var/lib/mlfleet-lab")
    run_root: Path = Path("/run/mlfleet-lab")
    cache: Path = Path("/var/cache/mlfleet-lab")

    @classmethod
    def named(cls, name: str | None = None) -> LabLayout:
        name = name or os.environ.get("MLFLEET_LAB") or DEFAULT_NAME
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"lab name {name!r} is not valid", hint="1-8 lowercase letters and digits"
            )
        return cls(name)

    @property
    def base(self) -> Path:
        return self.state_root / self.name

    @property
    def run(self) -> Path:
        return self.run_root / self.name

    @property
    def state_file(self) -> Path:
        return self.base / "state.json"

    @property
    def bridge(self) -> str:
        return f"mlf-{self.name}"  # <= 12 characters; interface names allow 15

    @property
    def netns_prefix(self) -> str:
        return f"mlf-{self.name}-"

    @property
    def cgroup_prefix(self) -> str:
        return f"mlf-{self.name}-"

    def netns(self, host: str) -> str:
        return self.netns_prefix + host

    @property
    def veth_prefix(self) -> str:
        return "mv" + hashlib.sha1(self.name.encode()).hexdigest()[:4]

    def veth(self, host: str) -> str:
        """The controller-side end of a host's link (interface names allow 15 characters)."""
        return self.veth_prefix + hashlib.sha1(host.encode()).hexdigest()[:8]

    @property
    def ssh_dir(self) -> Path:
        return self.base / "ssh"

    @property
    def ssh_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def registry_dir(self) -> Path:
        return self.base / "registry"

    def host_dir(self, host: str) -> Path:
        return self.base / "hosts" / host

    def host_run(self, host: str) -> Path:
        return self.run / host

    def root(self, host: str) -> Path:
        """The host's hardware root prefix (what `/` is to the agent's detectors)."""
        return self.host_dir(host) / "root"

    def docker_root(self, host: str) -> Path:
        return self.host_dir(host) / "docker"

    def docker_socket(self, host: str) -> Path:
        return self.host_run(host) / "docker.sock"

    def docker_host(self, host: str) -> str:
        return f"unix://{self.docker_socket(host)}"

    def agent_dir(self, host: str) -> Path:
        return self.host_dir(host) / "agent"

    def cron_dir(self, host: str) -> Path:
        return self.host_dir(host) / "crontabs"

    def data_dir(self, host: str) -> Path:
        """The host's model data (weights), mounted read-only into model containers."""
        return self.host_dir(host) / "data" / "sentiment"
