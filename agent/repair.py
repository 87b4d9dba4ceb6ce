"""Bring a recorded release back when its container is gone (removed by hand, pruned, an
engine whose data root was lost): recreate the container from the release's own record (its
desired state, variant and image, pulled again by digest when the image is gone too), with
the GPU wiring the host's facts allow now, and prove it with the release's own checks. No
release row is invented: the release is the one the host was told to run. Its inline env
values are not in the record (only their keyed hashes): they are read back from a container
the engine still holds with those very values (`release_env`); when none does, only a
deployment can bring the release back, and the repair says so.

Before the tick starts or recreates anything it looks for what stands in the way and is an
operator's to fix (`find_obstacle`): the variant no longer fits the host (its GPU is gone: a
CUDA image is never started on a host without one; another variant of the release that fits
is used instead when the playbook has one), a mount source vanished, a container or process
that is not the app's holds its host port. Those are reported with their `Cause` and never
fought. What fails while repairing is refused with its cause (`RepairFailed`; `waiting` when
only something away, its registry, is missing: the next ticks try again)."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterator, Optional, Set

from mlfleet.agent import health
from mlfleet.agent.container_config import LABEL
from mlfleet.agent.desired import DesiredState
from mlfleet.agent.engine_api import EngineError, EngineUnreachable
from mlfleet.agent.facts import HostFacts
from mlfleet.agent.host import (
    AgentHost,
    MissingInput,
    create_container,
    health_target,
    read_inputs,
    serve_after_reboot,
)
from mlfleet.agent.imageref import ImageRef
from mlfleet.agent.protocol import Cause, EventKind
from mlfleet.agent.sealed_env import SealKeyError, recover_env
from mlfleet.agent.selection import select_variant
from mlfleet.agent.state import Release
from mlfleet.agent.variants import Variant

# Words in a failed pull that mean the registry was not reached (as opposed to refusing).
_UNREACHED = ("connection refused", "no such host", "i/o timeout", "timeout", "dial tcp",
              "network is unreachable", "no route to host", "tls handshake")  # fmt: skip


# Words in a failed pull that mean the registry wants credentials it did not get.
_UNAUTHORIZED = ("unauthorized", "authentication required", "no basic auth credentials",
                 "denied")  # fmt: skip


class RepairFailed(Exception):
    """The release cannot be brought back now. `waiting`: only because something outside
    the host is away (its registry, its engine), so trying again later may work."""

    def __init__(self, reason: str, waiting: bool = False, cause: Optional[Cause] = None):
        super().__init__(reason)
        self.reason = reason
        self.waiting = waiting
        self.cause = cause


@dataclass(frozen=True)
class Obstacle:
    """What keeps a release from running on this host now, an operator's to fix."""

    cause: Cause
    detail: str
    fallback: Optional[str] = None  # another variant of the release that fits the host now


def find_obstacle(host: AgentHost, release: Release) -> Optional[Obstacle]:
    """What stands in the way of (re)starting the release, or None. Reads the host's
    facts, its mount sources and who holds its host ports; changes nothing."""
    desired = DesiredState.from_record(release.spec)
    facts = host.facts()
    unfit = _unfit(_variant(desired, release), facts)
    if unfit is not None and unfit.cause is Cause.GPU_LOST:
        return replace(unfit, fallback=select_variant(desired.parsed_variants(), facts).variant)
    if unfit is not None:
        return unfit
    try:
        read_inputs(desired)
    except MissingInput as exc:
        return Obstacle(Cause.MOUNT_MISSING, str(exc))
    holder = port_holder(host, desired, release.app)
    return Obstacle(Cause.PORT_TAKEN, holder) if holder else None


def _unfit(variant: Variant, facts: HostFacts) -> Optional[Obstacle]:
    """Why the variant cannot run on a host with these facts now (its engine away, its GPU
    gone), or None."""
    if not facts.docker or not facts.docker.reachable:
        return Obstacle(Cause.ENGINE_DOWN, "the Docker engine does not answer")
    fits = select_variant([variant], facts)
    if fits.variant is None:
        reasons = "; ".join(r.reason for r in fits.rejected)
        return Obstacle(Cause.GPU_LOST, f"variant {variant.name} no longer fits this host: {reasons}")  # fmt: skip
    return None


def port_holder(host: AgentHost, desired: DesiredState, app: str) -> Optional[str]:
    """Who holds one of the release's host ports, when it is not the app itself: a
    container of someone else's (by the engine's own list), or a process on the host."""
    for port in desired.container.ports:
        published = host.engine.list_containers({"publish": [f"{port.host}/{port.protocol}"]})
        for other in published:
            if (other.get("Labels") or {}).get(f"{LABEL}.app") != app:
                name = (other.get("Names") or ["/?"])[0].lstrip("/")
                return f"host port {port.host} is held by container {name}, which is not {app}'s"
        if port.protocol == "tcp" and not published and _in_use(port.host_ip, port.host):
            return f"host port {port.host} is held by a process on this host"
    return None


def _in_use(address: str, port: int) -> bool:
    """Whether something listens on the port (a bind fails with EADDRINUSE)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address or "0.0.0.0", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def recreate(host: AgentHost, release: Release, on_variant: Optional[str] = None) -> health.Verdict:
    """Create and start the release's container again from its record and wait until it
    is healthy; the release's record then names the new container. `on_variant`: another
    of the release's variants, for a host that no longer fits its own (the record then
    names that variant and its image). RepairFailed when it cannot even be started."""
    desired = DesiredState.from_record(release.spec)
    if on_variant is not None and on_variant != release.variant:
        fallback = next((v for v in desired.parsed_variants() if v.name == on_variant), None)
        if fallback is None:
            raise RepairFailed(f"the record of {release.tag} names no variant {on_variant!r}")
        host.store.update(release.id, variant=fallback.name, image=fallback.image, digest=None)
        release.variant, release.image, release.digest = fallback.name, fallback.image, None
    variant = _variant(desired, release)
    facts = host.facts()
    unfit = _unfit(variant, facts)
    if unfit is not None:  # an engine away may come back: waited for; a lost GPU is not
        raise RepairFailed(unfit.detail, waiting=unfit.cause is Cause.ENGINE_DOWN, cause=unfit.cause)  # fmt: skip
    assert facts.docker is not None  # _unfit refuses a host without an engine
    try:
        env_file = read_inputs(desired)
    except MissingInput as exc:
        raise RepairFailed(str(exc), cause=Cause.MOUNT_MISSING) from None
    env = release_env(host, release, desired.container.env, env_file)
    desired = replace(desired, container=replace(desired.container, env=env))
    image = release.image or variant.image or ""
    ensure_image(host, image, release.digest)
    name = release.container_name or f"{release.app}.r{release.id}"
    host.engine.container_remove(name, force=True)  # a stale one of that name, if any
    try:
        container_id = create_container(host, desired, variant, release.id, name, image,
                                        desired.container.user, env_file, facts.docker.gpu_support)  # fmt: skip
        release.container_id, release.container_name = container_id, name
        host.engine.container_start(container_id)
    except EngineError as exc:
        taken = any(
            w in exc.message for w in ("port is already allocated", "address already in use")
        )
        raise RepairFailed(f"the engine refused to start {name}: {exc.message}",
                           cause=Cause.PORT_TAKEN if taken else None) from None  # fmt: skip
    host.say(EventKind.STARTED, f"recreated {name} ({release.tag})", release.app)
    info = host.engine.container_inspect(container_id) or {}
    verdict = health.wait_healthy(
        health_target(host, desired, container_id, info), desired.health, host.report
    )
    if verdict.ok:
        serve_after_reboot(host, container_id)
    return verdict


def release_env(host: AgentHost, release: Release, recorded: Dict[str, str],
                from_file: Dict[str, str]) -> Dict[str, str]:  # fmt: skip
    """The release's inline env values, to create its container again. The record keeps
    only their keyed hashes (agent/sealed_env.py): the values are read back from a container
    the engine still holds that carries every one of them (its own, stopped or renamed, else
    one of another release of the app, newest first). RepairFailed when none does: only a
    deployment can give them again."""
    if not recorded or not release.env_sealed:
        return dict(recorded)  # nothing inline, or a record an older agent left unsealed
    try:
        key = host.store.key()
    except SealKeyError as exc:
        raise RepairFailed(str(exc)) from None
    for info in _containers_of(host, release):
        env = recover_env(key, recorded, (info.get("Config") or {}).get("Env") or [], from_file)
        if env is not None:
            return env
    names = ", ".join(sorted(recorded))
    raise RepairFailed(
        f"the container of {release.tag} is gone, and with it the values of its inline env"
        f" ({names}): this host keeps only keyed hashes of them and no container of"
        f" {release.app} holds them; deploy {release.app} again (mlfleet deploy)"
    )


def _containers_of(host: AgentHost, release: Release) -> Iterator[Dict[str, Any]]:
    """What the engine holds of the release's own container, then of the containers of the
    app's other releases, newest first (each inspected only when it is needed)."""
    seen: Set[str] = set()
    others = [r.container_id for r in host.store.releases(release.app) if r.id != release.id]
    for ref in [release.container_id, release.container_name, *others]:
        info = host.engine.container_inspect(ref) if ref else None
        if info is not None and str(info.get("Id")) not in seen:
            seen.add(str(info.get("Id")))
            yield info


def _variant(desired: DesiredState, release: Release) -> Variant:
    for variant in desired.parsed_variants():
        if variant.name == release.variant:
            return variant
    raise RepairFailed(f"the record of {release.tag} names no variant {release.variant!r}")


def ensure_image(host: AgentHost, image: str, digest: Optional[str]) -> None:
    """The image is on the engine: it is there, or it is pulled again, by its digest when
    the record has one (the tag may have moved since), then tagged under its name."""
    if host.engine.image_inspect(image) is not None:
        return
    source = digest if digest and "@" in digest else image
    name, reference = ImageRef.parse(source).engine_name_and_tag()
    registry = ImageRef.parse(source).registry_address
    credential = host.placed_credential(registry)
    host.say(EventKind.PULL, f"pulling {source} again (the image was gone)")
    try:
        for _ in host.engine.pull(name, reference, auth=credential):
            pass
    except EngineUnreachable as exc:
        raise RepairFailed(str(exc), waiting=True, cause=Cause.ENGINE_DOWN) from None
    except EngineError as exc:
        said = exc.message.lower()
        if any(word in said for word in _UNAUTHORIZED):
            fix = (
                "the credential placed on this host was refused: log in again there"
                if credential
                else f"place one (docker login {registry} on this host) or opt in to keeping"
                " the deployment's (mlfleet_store_pull_credentials: true), then the next tick"
                " pulls it"
            )
            raise RepairFailed(
                f"{source} needs registry credentials to be pulled again ({exc.message}); {fix}",
                waiting=True,
                cause=Cause.NEEDS_CREDENTIALS,
            ) from None
        if any(word in said for word in _UNREACHED):
            raise RepairFailed(
                f"waiting for registry {registry} to pull {source} again ({exc.message}); a host"
                " that reaches no registry needs the controller: mlfleet deploy",
                waiting=True,
                cause=Cause.REGISTRY_AWAY,
            ) from None
        raise RepairFailed(f"{source} could not be pulled again: {exc.message}") from None
    if source != image:
        host.engine.image_tag(source, *ImageRef.parse(image).engine_name_and_tag())
