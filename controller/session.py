"""A fleet session: the resources one command holds while it works on hosts (one transport
per host, the agent zipapp built once, the relay's pull-through caches, the worker threads)
and gives back when it ends. Commands (controller/commands.py, controller/deploy.py) borrow
them; they own no connection themselves, so a fake transport can stand in for SSH."""

from __future__ import annotations

import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from mlfleet.agent.bundle import AgentBundle, build_zipapp
from mlfleet.controller.credentials import Credentials
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hosts import Host
from mlfleet.controller.registry import RegistryAccess, trusted_ca
from mlfleet.controller.relay_cache import RelayCache
from mlfleet.controller.state import ControllerState
from mlfleet.controller.transport import Connection, Transport

T = TypeVar("T")
Progress = Callable[[str, str], None]  # (host, message); host "*" for the fleet
Connector = Callable[[Host], Transport]


def ssh_connector(accept_new_host_keys: bool = False) -> Connector:
    """Transports over SSH (paramiko), host keys checked against known_hosts."""
    return lambda host: Connection(host, accept_new_host_keys=accept_new_host_keys)


def _no_progress(host: str, message: str) -> None:
    return None


class FleetSession:
    """Hosts, state and the resources a command works with; `close()` gives them back."""

    def __init__(
        self,
        hosts: Sequence[Host],
        state: ControllerState,
        *,
        connector: Connector,
        forks: int = 20,
        progress: Progress = _no_progress,
        bundle: Optional[AgentBundle] = None,
    ):
        self.hosts: List[Host] = list(hosts)
        self.state = state
        self.forks = forks
        self.progress = progress
        self._connector = connector
        self._transports: Dict[str, Transport] = {}
        self._bundle = bundle
        self._build_dir: Optional[str] = None
        self._caches: Dict[str, RelayCache] = {}
        self._credentials = Credentials()
        self._lock = threading.Lock()

    def __enter__(self) -> FleetSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transport(self, host: Host) -> Transport:
        """The host's transport, made on first use and kept for the session."""
        with self._lock:
            if host.name not in self._transports:
                self._transports[host.name] = self._connector(host)
            return self._transports[host.name]

    def bundle(self) -> AgentBundle:
        """The agent zipapp, built once (worker threads may ask for it at the same time)."""
        with self._lock:
            if self._bundle is None:
                # A directory of its own: beside the state DB it could land in a source tree.
                self._build_dir = tempfile.mkdtemp(prefix="mlfleet-agent-")
                self._bundle = build_zipapp(Path(self._build_dir))
            return self._bundle

    def registry_access(self, host: Host, address: str) -> RegistryAccess:
        """How this host's deployment reaches the registry at `address`: its scheme, the CA
        that verifies it and the credential for it (from the host's credentials file or the
        controller's Docker config)."""
        with self._lock:
            credential = self._credentials.for_registry(address, host.registry_auth_file)
        return RegistryAccess(
            address,
            https=host.registry_https,
            ca_file=trusted_ca(address, host.registry_ca) if host.registry_https else None,
            credential=credential,
        )

    def relay_source(self, host: Host, upstream: Tuple[str, int]) -> Tuple[str, int]:
        """Where the host's relay tunnel connects: the upstream registry (plain HTTP only), a
        registry the inventory names, or the relay cache mlfleet runs on the controller's
        loopback (one per upstream, shared by the session's hosts; the controller fills it
        with the upstream's TLS session and credential; the default for a TLS registry)."""
        choice = host.relay_registry or ("cache" if host.registry_https else "upstream")
        key = f"{upstream[0]}:{upstream[1]}"
        if choice == "upstream":
            if host.registry_https:
                # The host's engine speaks plain HTTP to its loopback end of the tunnel; a
                # TLS registry behind it would answer every request with 400.
                raise ConfigError(
                    f"host {host.name!r}: the relay cannot forward raw TCP to {key}, which speaks"
                    " TLS (its engine pulls plain HTTP over the tunnel)",
                    hint="set mlfleet_relay_registry: cache (a registry on the controller that it"
                    " fills with the TLS session and the credentials)",
                )
            return upstream
        if choice != "cache":
            name, _, port = choice.rpartition(":")
            return (name, int(port))
        access = self.registry_access(host, key)
        with self._lock:
            if key not in self._caches:
                cache = self._caches[key] = RelayCache(access.client(timeout=120)).start()
                self.progress(
                    "*",
                    f"relay cache of {key} on {cache.address[0]}:{cache.address[1]} ({cache.dir})",
                )
            return self._caches[key].address

    def relay_cache(self, upstream: Tuple[str, int]) -> Optional[RelayCache]:
        """The relay cache of `upstream`, when one runs (relay_source starts it)."""
        with self._lock:
            return self._caches.get(f"{upstream[0]}:{upstream[1]}")

    def each(self, fn: Callable[[Host], T], hosts: Optional[Sequence[Host]] = None) -> Dict[str, T]:
        """fn on every host in parallel (bounded by forks); one slow or dead host never
        stalls the others. Results in host order. `fn` turns whatever goes wrong on its host
        into that host's result (controller/host_failure.py: on_host, host_failed): an
        exception it lets through ends the whole command."""
        chosen = list(self.hosts if hosts is None else hosts)
        with ThreadPoolExecutor(max_workers=max(1, min(self.forks, len(chosen) or 1))) as pool:
            results = list(pool.map(fn, chosen))
        return {h.name: r for h, r in zip(chosen, results)}

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        for cache in self._caches.values():
            cache.stop()
        self._caches.clear()
        if self._build_dir:
            shutil.rmtree(self._build_dir, ignore_errors=True)
            self._build_dir = None
