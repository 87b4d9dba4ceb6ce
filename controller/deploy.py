"""Roll a release out over the fleet: images checked in the registry first, the fleet lock,
canary then batches (each host runs the agent's apply), a failure budget per wave and its
action, every host result recorded. Also the read-only and fleet-wide commands built on
the same pieces: facts, plan, status, rollback, agent install."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from mlfleet.agent.bundle import AgentBundle, build_zipapp
from mlfleet.agent.facts import HostFacts
from mlfleet.agent.registry_probe import split_reference
from mlfleet.agent.selection import select_variant
from mlfleet.agent.variants import VariantError, parse_variants
from mlfleet.controller import hostops
from mlfleet.controller.errors import ConfigError, MlfleetError
from mlfleet.controller.hosts import Host
from mlfleet.controller.playbook import Playbook
from mlfleet.controller.registry import Registry, RegistryError
from mlfleet.controller.relay import Relay
from mlfleet.controller.relay_cache import RelayCache
from mlfleet.controller.rollout import Action, Wave, decide, parse_budget, plan_waves
from mlfleet.controller.state import ControllerState
from mlfleet.controller.transport import Connection, HostUnreachable

T = TypeVar("T")
Progress = Callable[[str, str], None]  # (host, message)

# What the agent's apply status means for the rollout.
RESULT_OF = {
    "succeeded": "updated",
    "unchanged": "unchanged",
    "rolled_back": "rolled_back",
    "failed": "failed",
    "rollback_failed": "failed",
}
FAILURES = ("rolled_back", "failed", "unreachable")


@dataclass
class Fleet:
    hosts: List[Host]
    playbook: Optional[Playbook]
    state: ControllerState
    forks: int = 20
    accept_new_host_keys: bool = False
    transfer: Optional[str] = None  # pull | relay | auto; None: each host's mlfleet_transfer
    progress: Progress = field(default=lambda host, msg: None)
    _connections: Dict[str, Connection] = field(default_factory=dict)
    _bundle: Optional[AgentBundle] = None
    _build_dir: Optional[str] = None
    _caches: Dict[str, RelayCache] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def connection(self, host: Host) -> Connection:
        if host.name not in self._connections:
            self._connections[host.name] = Connection(
                host, accept_new_host_keys=self.accept_new_host_keys
            )
        return self._connections[host.name].connect()

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        for cache in self._caches.values():
            cache.stop()
        if self._build_dir:
            shutil.rmtree(self._build_dir, ignore_errors=True)

    def relay_source(self, host: Host, upstream: Tuple[str, int]) -> Tuple[str, int]:
        """Where the host's relay tunnel connects: the upstream registry, a registry the
        inventory names, or the pull-through cache mlfleet runs (one per upstream, shared by
        the deployment's hosts)."""
        choice = host.relay_registry
        if choice is None:
            return upstream
        if choice != "cache":
            name, _, port = choice.rpartition(":")
            return (name, int(port))
        key = f"{upstream[0]}:{upstream[1]}"
        with self._lock:
            if key not in self._caches:
                https = host.vars.get("mlfleet_registry_scheme", "https") == "https"
                self._caches[key] = RelayCache(key, https).start()
                self.progress("*", f"relay cache of {key} on {self._caches[key].address[0]}:"
                              f"{self._caches[key].address[1]} ({self._caches[key].dir})")  # fmt: skip
            return self._caches[key].address

    def bundle(self) -> AgentBundle:
        """The agent zipapp, built once (worker threads may ask for it at the same time)."""
        with self._lock:
            if self._bundle is None:
                # A directory of its own: beside the state DB it could land in a source tree.
                self._build_dir = tempfile.mkdtemp(prefix="mlfleet-agent-")
                self._bundle = build_zipapp(Path(self._build_dir))
            return self._bundle

    def each(self, fn: Callable[[Host], T], hosts: Optional[Sequence[Host]] = None) -> Dict[str, T]:
        """fn on every host in parallel (bounded by forks); one slow or dead host never
        stalls the others. Results in host order."""
        chosen = list(self.hosts if hosts is None else hosts)
        with ThreadPoolExecutor(max_workers=max(1, min(self.forks, len(chosen) or 1))) as pool:
            results = list(pool.map(fn, chosen))
        return {h.name: r for h, r in zip(chosen, results)}


def _playbook(fleet: Fleet) -> Playbook:
    if fleet.playbook is None:
        raise ConfigError("this command needs a playbook", hint="pass -p FILE")
    return fleet.playbook


# --- read-only and fleet-wide commands ------------------------------------------------------


def install_agents(fleet: Fleet) -> Dict[str, Dict[str, Any]]:
    bundle = fleet.bundle()

    def one(host: Host) -> Dict[str, Any]:
        try:
            info = hostops.install_agent(fleet.connection(host), bundle)
            fleet.progress(host.name, "agent " + ("copied" if info["copied"] else "up to date"))
            return {"result": "installed" if info["copied"] else "unchanged", **info}
        except HostUnreachable as exc:
            fleet.progress(host.name, str(exc))
            return {"result": "unreachable", "reason": str(exc)}

    return fleet.each(one)


def gather_facts(fleet: Fleet) -> Dict[str, Dict[str, Any]]:
    bundle = fleet.bundle()

    def one(host: Host) -> Dict[str, Any]:
        try:
            data = hostops.facts(fleet.connection(host), bundle)
        except HostUnreachable as exc:
            return {"error": str(exc)}
        fleet.state.save_facts(host.name, data)
        return data

    return fleet.each(one)


def plan(fleet: Fleet, tag: str) -> Dict[str, Dict[str, Any]]:
    """Per host: the variant and image, why, and what would change. Nothing is changed."""
    playbook = _playbook(fleet)
    bundle = fleet.bundle()

    def one(host: Host) -> Dict[str, Any]:
        try:
            desired = playbook.desired_state(host.vars, host.name, tag, "plan")
            conn = fleet.connection(host)
            selection = hostops.select(conn, bundle, desired["variants"])
            current = _current(hostops.status(conn), playbook.app)
        except HostUnreachable as exc:
            return {"result": "unreachable", "reason": str(exc)}
        variant = selection.get("variant")
        images = {v["name"]: v["image"] for v in desired["variants"]}
        if variant is None:
            change = "cannot deploy: no variant fits"
        elif current and current.get("tag") == tag and current.get("variant") == variant:
            change = "unchanged"
        elif current:
            change = f"update {current.get('tag')} ({current.get('variant')}) -> {tag} ({variant})"
        else:
            change = f"install {tag} ({variant})"
        return {
            "variant": variant,
            "image": images.get(variant or ""),
            "change": change,
            **selection,
        }

    return fleet.each(one)


def _current(status: Dict[str, Any], app: str) -> Optional[Dict[str, Any]]:
    for entry in status.get("apps", []):
        if entry["app"] == app and entry.get("current"):
            return dict(entry["current"], healthy=entry.get("healthy"), running=entry.get("running"),
                        last_tick=status.get("last_tick"))  # fmt: skip
    return None


def fleet_status(fleet: Fleet, app: Optional[str]) -> Dict[str, Dict[str, Any]]:
    def one(host: Host) -> Dict[str, Any]:
        try:
            status = hostops.status(fleet.connection(host))
        except HostUnreachable as exc:
            return {"health": "unreachable", "reason": str(exc)}
        apps = [a for a in status.get("apps", []) if app is None or a["app"] == app]
        if not apps or not apps[0].get("current"):
            return {"health": "nothing deployed", "last_tick": status.get("last_tick")}
        entry = apps[0]
        cur = entry["current"]
        health = (
            "healthy" if entry.get("healthy") else ("running" if entry.get("running") else "down")
        )
        return {"app": entry["app"], "tag": cur["tag"], "variant": cur["variant"], "health": health,
                "since": cur.get("activated_at"), "previous": entry.get("previous"),
                "last_tick": status.get("last_tick")}  # fmt: skip

    return fleet.each(one)


def rollback_fleet(fleet: Fleet, app: str, tag: Optional[str]) -> Dict[str, Dict[str, Any]]:
    def one(host: Host) -> Dict[str, Any]:
        try:
            result = hostops.rollback(fleet.connection(host), app, tag)
        except HostUnreachable as exc:
            return {"result": "unreachable", "reason": str(exc)}
        return {
            "result": result["status"],
            "tag": result.get("tag"),
            "reason": result.get("reason"),
        }

    return fleet.each(one)


# --- deploy -----------------------------------------------------------------------------------


@dataclass
class DeployOptions:
    tag: str
    canary: int
    batch: Any
    max_fail: Any
    on_failure: str


def expected_variant(
    playbook: Playbook, facts: Optional[Dict[str, Any]]
) -> Tuple[bool, Optional[str]]:
    """(known, variant): the variant the host's agent will select, from the facts stored by
    `mlfleet facts` (pure). known False: no usable facts, any variant may be chosen."""
    if not facts:
        return False, None
    try:
        variants = parse_variants([v.spec for v in playbook.variants])
        return True, select_variant(variants, HostFacts.from_dict(facts)).variant
    except (ValueError, KeyError, TypeError, VariantError):
        return False, None


def needed_images(
    playbook: Playbook, host: Host, tag: str, facts: Optional[Dict[str, Any]]
) -> Dict[str, bool]:
    """Image reference -> whether the host needs it: only its expected variant's when its
    stored facts tell (the others would not be pulled), every variant's when they do not."""
    images = playbook.images(host.vars, host.name, tag)
    known, chosen = expected_variant(playbook, facts)
    return {ref: (not known or name == chosen) for name, ref in images.items()}


def check_images(fleet: Fleet, tag: str) -> List[str]:
    """Every image the deployment needs must be in its registry: one missing stops the
    deployment before any host is touched. A host with stored facts needs only the variant
    it will select (hosts whose hardware changed since are still safe: their agent's pull
    fails in preflight, before anything running is touched). Returns the references checked."""
    playbook = _playbook(fleet)
    refs: Dict[str, List[str]] = {}
    for host in fleet.hosts:
        for ref, needed in needed_images(playbook, host, tag, fleet.state.facts(host.name)).items():
            users = refs.setdefault(ref, [])
            if needed:
                users.append(host.name)
    missing, unused = [], []
    https = (
        fleet.hosts[0].vars.get("mlfleet_registry_scheme", "https") == "https"
        if fleet.hosts
        else True
    )
    for ref, users in refs.items():
        registry, repo, reference = split_reference(ref)
        try:
            found = Registry(registry, https=https, timeout=10).get_manifest(repo, reference)
        except RegistryError as exc:
            raise MlfleetError(
                f"cannot check images: {exc}", hint="is the registry reachable from here?"
            ) from None
        if found is None and users:
            missing.append(
                f"{ref} (needed by {', '.join(users[:3])}{' ...' if len(users) > 3 else ''})"
            )
        elif found is None:
            unused.append(ref)
    if missing:
        raise ConfigError(
            "not in the registry: " + "; ".join(missing),
            hint=f"push tag {tag} for these variants, or run `mlfleet facts` so hosts need only the"
            " variant they select",
        )
    if unused:
        fleet.progress(
            "*", f"not in the registry, and no host's stored facts select them: {', '.join(unused)}"
        )
    return sorted(refs)


def deploy(
    fleet: Fleet, options: DeployOptions, playbook_path: str, inventory_path: str
) -> Dict[str, Any]:
    playbook = _playbook(fleet)
    tag = options.tag
    budget = parse_budget(options.max_fail)
    action = Action(options.on_failure)
    waves = plan_waves([h.name for h in fleet.hosts], options.canary, options.batch)
    check_images(fleet, tag)
    state = fleet.state
    for stale in state.mark_interrupted():
        state.event(
            "interrupted", f"deployment {stale} was interrupted; a new deploy finishes the job"
        )
    state.acquire_lock(f"deploy {playbook.app} {tag}")
    deployment_id = state.start_deployment(
        app=playbook.app, tag=tag, playbook=playbook_path, inventory=inventory_path, hosts=len(fleet.hosts),
        policy=repr(options.__dict__),
    )  # fmt: skip
    by_name = {h.name: h for h in fleet.hosts}
    results: Dict[str, Dict[str, Any]] = {}
    status, reason = "succeeded", ""
    try:
        for i, wave in enumerate(waves):
            fleet.progress("*", f"{wave.name}: {', '.join(wave.hosts)}")
            wave_results = fleet.each(lambda h, w=wave: _deploy_host(fleet, h, tag, deployment_id, w),
                                      [by_name[n] for n in wave.hosts])  # fmt: skip
            results.update(wave_results)
            failed = [n for n, r in wave_results.items() if r["result"] in FAILURES]
            remaining = sum(len(w.hosts) for w in waves[i + 1 :])
            decision = decide(wave, failed, budget, action, remaining)
            state.event("wave", decision.reason, deployment_id)
            fleet.progress("*", decision.reason)
            if failed:
                status, reason = "failed", decision.reason
            if decision.rollback:
                _roll_back_updated(fleet, results, playbook.app, deployment_id)
            if not decision.proceed:
                status = "halted" if remaining else status
                for w in waves[i + 1 :]:
                    for name in w.hosts:
                        results[name] = {"result": "skipped", "reason": "deployment halted"}
                        state.record_host(deployment_id, name, w.name, results[name])
                break
    except BaseException as exc:
        state.finish_deployment(deployment_id, "interrupted", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        state.release_lock()
    state.finish_deployment(deployment_id, status, reason)
    hosts = [
        dict(host=name, **results[name])
        for name in [h.name for h in fleet.hosts]
        if name in results
    ]
    return {
        "status": status,
        "deployment": deployment_id,
        "tag": tag,
        "reason": reason,
        "bytes": sum(h.get("bytes") or 0 for h in hosts),
        "hosts": hosts,
    }


def _deploy_host(
    fleet: Fleet, host: Host, tag: str, deployment_id: int, wave: Wave
) -> Dict[str, Any]:
    started = time.time()
    playbook = _playbook(fleet)
    try:
        conn = fleet.connection(host)
        desired = playbook.desired_state(host.vars, host.name, tag, str(deployment_id))

        shown = (
            "pull",
            "pull_retry",
            "started",
            "stop",
            "restore",
            "rolled_back",
            "succeeded",
            "refused",
        )

        def event(e: Dict[str, Any]) -> None:
            if e.get("event") in shown:
                fleet.progress(host.name, e.get("message") or e.get("event", ""))

        registry = _registry_of(desired)
        mode = fleet.transfer or host.transfer
        if mode == "auto":
            mode = "pull" if _reaches(conn, registry) else "relay"
        relay_bytes: Optional[int] = None
        if mode == "relay":
            with Relay(conn, fleet.relay_source(host, registry), host.bwlimit_kbit) as relay:
                desired["pull_via"] = relay.address
                fleet.progress(
                    host.name, f"relay: the host pulls through {relay.address} (SSH tunnel)"
                )
                outcome = hostops.apply(conn, fleet.bundle(), desired, on_event=event)
            relay_bytes = relay.bytes_to_host
        else:
            outcome = hostops.apply(conn, fleet.bundle(), desired, on_event=event)
        result = {
            "result": RESULT_OF.get(outcome["status"], "failed"),
            "variant": outcome.get("variant"),
            "image": outcome.get("image"),
            "digest": outcome.get("digest"),
            "previous_tag": outcome.get("previous_tag"),
            # Relay: what crossed the host's link, counted in the tunnel; pull: layer sizes.
            "bytes": relay_bytes if relay_bytes is not None else outcome.get("bytes_pulled", 0),
            "transfer": mode,
            "reason": outcome.get("reason"),
            "evidence": outcome.get("health_evidence", [])[-10:],
            "timings": outcome.get("timings", {}),
        }
    except MlfleetError as exc:  # the host is unreachable, or its settings or relay failed
        kind = (
            "unreachable"
            if isinstance(exc, HostUnreachable) and not isinstance(exc, hostops.AgentFailed)
            else "failed"
        )
        result = {"result": kind, "reason": str(exc)}
    result["duration_s"] = round(time.time() - started, 2)
    result["started"] = started
    fleet.state.record_host(deployment_id, host.name, wave.name, result)
    fleet.progress(
        host.name, f"{result['result']}" + (f": {result['reason']}" if result.get("reason") else "")
    )
    return result


_REACH = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"


def _registry_of(desired: Dict[str, Any]) -> tuple:
    """(host, port) of the registry the desired state's images live in."""
    registry = split_reference(desired["variants"][0]["image"])[0]
    name, _, port = registry.rpartition(":")
    return (name, int(port)) if name and port.isdigit() else (registry, 443)


def _reaches(conn: Connection, registry: tuple) -> bool:
    """Whether the host itself can open a connection to the registry (for --transfer auto)."""
    result = conn.run([conn.host.python, "-c", _REACH, registry[0], str(registry[1])], timeout=30)
    return result.code == 0


def _roll_back_updated(
    fleet: Fleet, results: Dict[str, Dict[str, Any]], app: str, deployment_id: int
) -> None:
    """Return the hosts this deployment updated to their previous release."""
    updated = [h for h in fleet.hosts if results.get(h.name, {}).get("result") == "updated"]

    def one(host: Host) -> Dict[str, Any]:
        try:
            outcome = hostops.rollback(fleet.connection(host), app)
        except HostUnreachable as exc:
            return {"result": "failed", "reason": f"rollback: {exc}"}
        ok = outcome["status"] == "rolled_back"
        return {
            "result": "rolled_back" if ok else "failed",
            "reason": outcome.get("reason") or "deployment rolled back",
        }

    for name, outcome in fleet.each(one, updated).items():
        results[name].update(outcome)
        fleet.state.event("rollback", f"{name}: {outcome['result']}", deployment_id, name)
        fleet.progress(name, f"rolled back ({outcome['result']})")
