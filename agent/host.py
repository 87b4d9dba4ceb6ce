"""What an operation on this host works with (`AgentHost`: the engine, the record, where
things are, where progress goes) and what every operation does with a release's container:
reach its checks, give it the serving restart policy, find the GPU devices' groups."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from mlfleet.agent import health
from mlfleet.agent.container_config import (
    SERVING_RESTART,
    container_config,
    gpu_wiring,
    labels,
    parse_env_file,
)
from mlfleet.agent.credential import CredentialError, RegistryCredential
from mlfleet.agent.desired import DesiredState
from mlfleet.agent.detect.host_facts import detect_host_facts
from mlfleet.agent.engine_api import EngineAPI
from mlfleet.agent.facts import HostFacts
from mlfleet.agent.host_credentials import host_credential
from mlfleet.agent.protocol import Cause, Event, EventKind
from mlfleet.agent.state import StateStore
from mlfleet.agent.variants import Variant

Emit = Callable[[Event], None]


@dataclass
class AgentHost:
    """Everything an operation on this host works with."""

    agent_dir: str
    root: str  # where hardware facts are read (the detectors' root prefix)
    device_root: str  # where device nodes are, as the engine sees them
    docker_host: str
    engine: EngineAPI
    store: StateStore
    emit: Emit = field(default=lambda e: None)

    def facts(self) -> HostFacts:
        return detect_host_facts(self.root, self.docker_host)

    def placed_credential(self, registry: str) -> Optional[RegistryCredential]:
        """The credential an operator placed on this host for `registry`: the agent's opt-in
        store, else the Docker config a `docker login` here left in the agent user's home
        (under `root`: a lab host's files live there). None when there is none or it cannot
        be read: the registry's refusal then says what is missing."""
        home = os.path.join(self.root, os.path.expanduser("~").lstrip("/"))
        try:
            return host_credential(registry, self.agent_dir, home=home)
        except CredentialError:
            return None

    def event(
        self,
        kind: EventKind,
        message: str,
        app: Optional[str] = None,
        release_id: Optional[int] = None,
        cause: Optional[Cause] = None,
    ) -> None:
        """Record an event in the host's history and report it as progress."""
        data = {"cause": cause.value} if cause else None
        self.store.event(kind.value, message, app=app, release_id=release_id, data=data)
        self.report(Event(kind, message, app, time.time(), cause=cause))

    def say(self, kind: EventKind, message: str, app: Optional[str] = None) -> None:
        """Progress only (not recorded), best effort: whoever listens (a controller over
        SSH) may be gone, and what the agent does must not depend on it."""
        self.report(Event(kind, message, app, time.time()))

    def report(self, event: Event) -> None:
        """Pass progress on to whoever listens, best effort (an `Emit` for health checks)."""
        try:
            self.emit(event)
        except Exception:  # a closed channel, a broken pipe: nobody listens any more
            pass


def serve_after_reboot(host: AgentHost, container_id: str) -> None:
    """Give a release the restart policy of a serving one (probation used `no`)."""
    host.engine.request(
        "POST", f"/containers/{container_id}/update", body={"RestartPolicy": SERVING_RESTART}
    )


def device_gids(device_root: str, variant: Variant) -> List[int]:
    """Numeric groups of the GPU device nodes (the group may not exist in the image)."""
    if variant.gpu not in ("amd", "intel"):
        return []
    gids = set()
    for path in ("/dev/kfd", "/dev/dri"):
        full = device_root.rstrip("/") + path
        targets = [full] + (
            [os.path.join(full, n) for n in os.listdir(full)] if os.path.isdir(full) else []
        )
        for t in targets:
            try:
                gid = os.stat(t).st_gid
            except OSError:
                continue
            if gid != 0:
                gids.add(gid)
    return sorted(gids)


def health_target(
    host: AgentHost, desired: DesiredState, container_id: str, info: Dict[str, Any]
) -> health.Target:
    """Where a release's checks reach it: its published ports on this host, and the image's
    own HEALTHCHECK when it has one and the desired state wants it."""
    has_healthcheck = bool(((info.get("Config") or {}).get("Healthcheck") or {}).get("Test"))
    ports = {p.container: p.host for p in desired.container.ports}
    return health.Target(
        host.engine, container_id, "127.0.0.1", ports, has_healthcheck and desired.health.docker
    )


class MissingInput(Exception):
    """The host lacks something the release reads: a mount source, its env file."""


def read_inputs(desired: DesiredState) -> Dict[str, str]:
    """Check that the host holds every mount source of the release and read its env file
    (secrets: never logged or stored); MissingInput names what is missing."""
    spec = desired.container
    for mount in spec.mounts:
        if not os.path.exists(mount.source):
            raise MissingInput(f"mount source {mount.source} does not exist on this host")
    if not spec.env_file:
        return {}
    try:
        with open(spec.env_file, encoding="utf-8") as fh:
            return parse_env_file(fh.read())
    except OSError as exc:
        raise MissingInput(f"env file {spec.env_file}: {exc.strerror}") from None


def create_container(host: AgentHost, desired: DesiredState, variant: Variant, release_id: int,
                     name: str, image: str, user: Optional[str], env_file: Dict[str, str],
                     gpu_support: List[str]) -> str:  # fmt: skip
    """Create the release's container (its labels, GPU wiring, mounts) and record it as the
    release's; returns its id. EngineError when the engine refuses."""
    gids = device_gids(host.device_root, variant)
    config = container_config(
        desired.container,
        image,
        user,
        env_file,
        labels(desired.app, release_id, desired.tag, variant.name, desired.deployment),
        gpu_wiring(variant, gpu_support, host.device_root, gids),
    )
    container_id = host.engine.container_create(name, config)
    host.store.update(release_id, container_id=container_id, container_name=name)
    return container_id
