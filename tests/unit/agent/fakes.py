"""A small in-memory Docker engine and a host around it, for running the agent's apply,
rollback and tick in unit tests (no root, no Docker). Only the EngineAPI methods those use
are faked (the others fail loudly); a release's health is its container's `healthy` flag,
read by an exec check."""

from __future__ import annotations

import hashlib
import http.client
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set, Tuple

from mlfleet.agent.apply import apply
from mlfleet.agent.credential import RegistryCredential
from mlfleet.agent.desired import DesiredState
from mlfleet.agent.engine_api import EngineAPI, EngineError
from mlfleet.agent.facts import SCHEMA as FACTS_SCHEMA
from mlfleet.agent.facts import DockerFacts, Gpu, HostFacts, NvidiaFacts, OsFacts
from mlfleet.agent.host import AgentHost
from mlfleet.agent.protocol import ApplyResult, ApplyStatus, Event
from mlfleet.agent.state import Release, StateStore

IMAGE = "registry.test/sentiment"


def digest_of(tag: str) -> str:
    """The manifest digest the fake registry gives a tag's image."""
    return "sha256:" + hashlib.sha256(tag.encode()).hexdigest()


HEALTH_COMMAND = ["healthcheck"]


@dataclass
class FakeContainer:
    id: str
    name: str
    image: str
    config: Dict[str, Any]
    running: bool = False
    exit_code: int = 0
    restart_count: int = 0
    healthy: bool = True

    @property
    def tag(self) -> str:
        return str(self.config.get("Labels", {}).get("io.mlfleet.tag", ""))


@dataclass
class FakeEngine(EngineAPI):
    """Containers and images in memory, with the engine's answers for the calls the agent
    makes. Images are all present (nothing is pulled) unless removed.

    An EngineAPI, so the type checker holds its methods to the real signatures; the
    dataclass's own __init__ leaves EngineAPI's transport unset, and `_open` refuses."""

    containers: Dict[str, FakeContainer] = field(default_factory=dict)
    broken_images: Set[str] = field(default_factory=set)  # their containers exit at once
    removed_images: List[str] = field(default_factory=list)
    registry_down: bool = False  # pulls fail as they do when the registry is not reached
    registry_password: Optional[str] = None  # set: pulls need a credential with it
    pulled: List[str] = field(default_factory=list)  # what was pulled, `name:tag` or digest
    image_user: str = "app"
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # --- what a test does to the host ---------------------------------------------------

    def crash(self, container_id: Optional[str], restarts: int = 1) -> None:
        """The container exited and its restart policy brought it back."""
        c = self._get(container_id)
        c.running, c.restart_count = True, c.restart_count + restarts

    def stop(self, container_id: Optional[str], exit_code: int = 137) -> None:
        c = self._get(container_id)
        c.running, c.exit_code = False, exit_code

    def set_healthy(self, container_id: Optional[str], healthy: bool) -> None:
        self._get(container_id).healthy = healthy

    def break_image(self, image: str) -> None:
        self.broken_images.add(image)

    def running_tags(self) -> List[str]:
        return sorted(c.tag for c in self.containers.values() if c.running)

    def _get(self, container_id: Optional[str]) -> FakeContainer:
        for c in self.containers.values():
            if container_id in (c.id, c.name):
                return c
        raise EngineError(404, f"No such container: {container_id}")

    # --- EngineAPI ------------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        return {"DockerRootDir": "/var/lib/docker"}

    def image_inspect(self, reference: str) -> Optional[Dict[str, Any]]:
        if reference in self.removed_images:
            return None
        repository, _, tag = reference.rpartition(":")
        return {
            "Id": f"sha256:{tag}",
            "RepoDigests": [f"{repository}@{digest_of(tag)}"],
            "Config": {"User": self.image_user},
            "RootFS": {"Layers": []},
        }

    def images(self) -> List[Dict[str, Any]]:
        return []

    def pull(self, repository: str, tag: str, timeout: float = 900.0,
             auth: Optional[RegistryCredential] = None) -> Iterator[Dict[str, Any]]:  # fmt: skip
        if self.registry_password is not None and (
            auth is None or auth.password != self.registry_password
        ):
            said = (
                "no basic auth credentials"
                if auth is None
                else "unauthorized: authentication required"
            )
            raise EngineError(500, f"Head https://{repository.split('/')[0]}/v2/: {said}")
        if self.registry_down:
            raise EngineError(
                500, f"Get https://{repository.split('/')[0]}/v2/: dial tcp: connection refused"
            )
        reference = f"{repository}@{tag}" if tag.startswith("sha256:") else f"{repository}:{tag}"
        self.pulled.append(reference)
        if reference in self.removed_images:
            self.removed_images.remove(reference)
        yield {"status": f"Status: Downloaded newer image for {reference}"}

    def image_tag(self, image: str, repository: str, tag: str) -> None:
        if f"{repository}:{tag}" in self.removed_images:
            self.removed_images.remove(f"{repository}:{tag}")

    def image_remove(self, image: str) -> None:
        self.removed_images.append(image)

    def squat(self, host_port: int, name: str = "someones-test") -> str:
        """Someone runs a container of their own that publishes `host_port`."""
        cid = f"c{next(self._ids):04d}"
        bindings = {"8080/tcp": [{"HostIp": "", "HostPort": str(host_port)}]}
        config = {"Image": "busybox", "Labels": {}, "HostConfig": {"PortBindings": bindings}}
        self.containers[cid] = FakeContainer(cid, name, "busybox", config, running=True)
        return cid

    def list_containers(self, filters: Dict[str, List[str]]) -> List[Dict[str, Any]]:
        wanted = {p.split("/")[0] for p in filters.get("publish", [])}
        found = []
        for c in self.containers.values():
            bindings = c.config.get("HostConfig", {}).get("PortBindings") or {}
            ports = {b.get("HostPort") for bs in bindings.values() for b in bs or []}
            if c.running and (not wanted or wanted & ports):
                found.append(
                    {"Id": c.id, "Names": [f"/{c.name}"], "Labels": c.config.get("Labels") or {}}
                )
        return found

    def container_create(self, name: str, config: Dict[str, Any]) -> str:
        if any(c.name == name for c in self.containers.values()):
            raise EngineError(409, f'Conflict. The container name "/{name}" is already in use')
        cid = f"c{next(self._ids):04d}"
        self.containers[cid] = FakeContainer(cid, name, config["Image"], config)
        return cid

    def container_start(self, container: str) -> None:
        c = self._get(container)
        # A start by hand resets the engine's restart count, as Docker's does.
        c.restart_count = 0
        if c.image in self.broken_images:
            c.running, c.exit_code = False, 1
        else:
            c.running = True

    def container_stop(self, container: str, timeout_s: int = 10) -> None:
        c = self._get(container)
        if c.running:
            c.running, c.exit_code = False, 0

    def container_remove(self, container: str, force: bool = True) -> None:
        try:
            c = self._get(container)
        except EngineError:
            return
        del self.containers[c.id]

    def container_inspect(self, container: str) -> Optional[Dict[str, Any]]:
        try:
            c = self._get(container)
        except EngineError:
            return None
        return {
            "Id": c.id,
            "Name": "/" + c.name,
            "RestartCount": c.restart_count,
            "State": {
                "Status": "running" if c.running else "exited",
                "Running": c.running,
                "Restarting": False,
                "Paused": False,
                "ExitCode": 0 if c.running else c.exit_code,
            },
            "Config": {"Image": c.image, "Labels": c.config.get("Labels", {})},
            "HostConfig": c.config.get("HostConfig", {}),
        }

    def container_logs(self, container: str, tail: int = 50) -> str:
        return f"log of {container}\n"

    def exec_run(
        self, container: str, command: List[str], timeout: float = 10.0
    ) -> Tuple[int, str]:
        c = self._get(container)
        if not c.running:
            raise EngineError(409, f"container {container} is not running")
        return (0, "ok\n") if c.healthy else (1, "model not loaded\n")

    def request(
        self,
        method: str,
        path: str,
        params: Optional[Dict[str, Any]] = None,
        body: Any = None,
        timeout: Optional[float] = None,
        raw: bool = False,
    ) -> Any:
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 3 and parts[0] == "containers":
            c = self._get(parts[1])
            if parts[2] == "update":
                c.config.setdefault("HostConfig", {}).update(body or {})
                return {"Warnings": []}
            if parts[2] == "restart":
                c.running = c.image not in self.broken_images
                return None
        raise NotImplementedError(f"the fake engine does not answer {method} {path}")

    def _open(
        self,
        method: str,
        path: str,
        params: Optional[Dict[str, Any]],
        body: Any,
        timeout: Optional[float],
        headers: Optional[Mapping[str, str]] = None,
    ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        # What EngineAPI sends without `request` (a pull): there is no engine to send it to.
        raise NotImplementedError(f"the fake engine does not answer {method} {path}")


class FakeHost(AgentHost):
    """A host whose facts are fixed: a CPU host with a reachable engine, or, with
    `nvidia_gpu` set, one with an A100, its driver and the container toolkit (a test unsets
    it to lose the GPU)."""

    engine: FakeEngine  # what make_host gives it: tests reach the fake's own methods
    nvidia_gpu: bool = False

    @property
    def agent_path(self) -> Path:
        return Path(self.agent_dir)

    def facts(self) -> HostFacts:
        return HostFacts(
            schema=FACTS_SCHEMA,
            hostname="edge-test",
            arch="x86_64",
            os=OsFacts("debian", "12", "Debian GNU/Linux 12", "6.1.0"),
            cpus=4,
            memory_mib=8192,
            python="3.8.10",
            root=self.root,
            docker=DockerFacts(reachable=True, host=self.docker_host, free_disk_mib=10_000,
                               gpu_support=["nvidia"] if self.nvidia_gpu else []),
            gpus=[Gpu("nvidia", "NVIDIA A100-SXM4-80GB", 81920, "8.0")] if self.nvidia_gpu else [],
            nvidia=NvidiaFacts("550.54.15", "12.4", "nvml") if self.nvidia_gpu else None,
        )  # fmt: skip


def make_host(tmp_path: Path) -> FakeHost:
    """A fresh host: an empty engine and an empty SQLite record under `tmp_path`."""
    agent_dir = tmp_path / "agent"
    events: List[Event] = []  # progress, as a controller would have read it
    return FakeHost(
        agent_dir=str(agent_dir),
        root="/",
        device_root=str(tmp_path / "devices"),
        docker_host="unix:///fake/docker.sock",
        engine=FakeEngine(),
        store=StateStore(str(agent_dir / "state.db")),
        emit=events.append,
    )


def make_desired(tag: str, **overrides: Any) -> DesiredState:
    """The desired state of one CPU variant of `sentiment` at `tag`, publishing port 8080 on
    18080, checked by an exec in the container, with no waiting to speak of."""
    data: Dict[str, Any] = {
        "schema": 1,
        "app": "sentiment",
        "deployment": f"deploy-{tag}",
        "tag": tag,
        "variants": [{"name": "cpu", "image": f"{IMAGE}:{tag}"}],
        "container": {"ports": [{"container": 8080, "host": 18080}]},
        "health": {
            "docker": False,
            "exec": [{"command": HEALTH_COMMAND}],
            "timing": {
                "start_period_s": 0,
                "interval_s": 0.01,
                "timeout_s": 1,
                "retries": 1,
                "deadline_s": 2,
            },
        },
        "monitor_s": 0,
    }
    data.update(overrides)
    return DesiredState.from_dict(data)


def serving(host: FakeHost, app: str = "sentiment") -> Release:
    """The release of `app` that `host` serves (a test's setup: there must be one)."""
    current = host.store.current(app)
    assert current is not None, f"no current release of {app} on the fake host"
    return current


def serving_container(host: FakeHost, app: str = "sentiment") -> str:
    """The container of the release of `app` that `host` serves."""
    release = serving(host, app)
    assert release.container_id is not None, f"release {release.tag} of {app} has no container"
    return release.container_id


def deploy(host: FakeHost, desired: DesiredState) -> ApplyResult:
    """Apply `desired` and insist it succeeded (the setup of a test, not what it tests)."""
    result = apply(host, desired)
    assert result.status is ApplyStatus.SUCCEEDED, (result.phase, result.reason)
    return result
